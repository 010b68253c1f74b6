#!/usr/bin/env bash
# `make bench`, HTTP/2 half: nginx serving cleartext HTTP/2 on loopback under h2load (10
# connections, 100 streams in flight on each), with and without the sidecar, in interleaved
# rounds whose order rotates. Prints the throughput and p99 ratios (median of the per-round
# ratios, lowest and highest round before it), the sidecar's CPU per request, then a paced run
# (h2load --rps) checking that every request became a span.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ROUNDS=${ROUNDS:-8}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
# Paced run: PACED_RPS per connection over 10 connections, for PACED_REQUESTS requests.
PACED_RPS=${PACED_RPS:-400}
PACED_REQUESTS=${PACED_REQUESTS:-20000}

# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
needs_release_sidecar

read -r port < <(free_ports 1)
new_namespace; pod=$ns_init
start_nginx "$pod" nginx "$port" http2
url="http://127.0.0.1:$port/status/200"

# run_h2load [H2LOAD ARGS...]: prints "req/s p99_ms succeeded" (p99 from h2load's per-request log).
run_h2load() {
  h2load -c 10 -m 100 -t 1 --log-file="$work/h2load.log" "$@" "$url" >"$work/h2load.out" 2>&1
  python3 - "$work/h2load.out" "$work/h2load.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
ok = int(re.search(r"requests: .* (\d+) succeeded", text).group(1))
durations = sorted(int(line.split("\t")[2]) for line in open(sys.argv[2]) if line.strip())
p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))] / 1000
print(f"{rps:.0f} {p99:.3f} {ok}")
PY
}

base_rps=(); with_rps=(); base_p99=(); with_p99=(); cpu_per_req=()
run_off() {
  read -r rps p99 _ < <(run_h2load -D "$SECONDS_PER_RUN")
  base_rps+=("$rps"); base_p99+=("$p99")
}
run_on() {
  start_sidecar
  local before after total
  before=$(cpu_ticks "$sidecar_pid")
  read -r rps p99 total < <(run_h2load -D "$SECONDS_PER_RUN")
  after=$(cpu_ticks "$sidecar_pid")
  cpu=$(python3 -c "print(($after-$before)*1e6/$(getconf CLK_TCK)/$total)")
  stop_sidecar
  with_rps+=("$rps"); with_p99+=("$p99"); cpu_per_req+=("$cpu")
}

printf '%-6s %-8s %12s %10s\n' round sidecar req/s p99_ms
rotate_rounds 8 off on

# Paced: every request must have become a span (printed as JSON lines; only nginx is selected).
start_sidecar OTEL_EBPF_TRACE_PRINTER=json
read -r paced_rps _ paced_ok < <(run_h2load -n "$PACED_REQUESTS" --rps="$PACED_RPS")
sleep 2
stop_sidecar
spans=$(grep -c '"kind"' "$work/sidecar.out" || true)

python3 - "${base_rps[*]}" "${with_rps[*]}" "${base_p99[*]}" "${with_p99[*]}" "${cpu_per_req[*]}" \
  "$paced_rps" "$paced_ok" "$spans" <<'PY'
import statistics as st, sys
base, with_, bp99, wp99, cpu = ([float(x) for x in a.split()] for a in sys.argv[1:6])
paced_rps, paced_ok, spans = float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
def paired(runs, baseline):
    """The median of the per-round ratios, and its cell with the lowest and highest round."""
    ratios = [r / b for r, b in zip(runs, baseline)]
    return f"({min(ratios):.2f}-{max(ratios):.2f}) {st.median(ratios):.3f}"
rows = [
    ("h2load -m 100 throughput with/without", paired(with_, base)),
    ("h2load without sidecar (median req/s)", f"{st.median(base):.0f}"),
    ("h2load p99 latency with/without", paired(wp99, bp99)),
    ("sidecar CPU per request", f"({min(cpu):.2f}-{max(cpu):.2f}) {st.median(cpu):.2f} us"),
    (f"paced run ({paced_rps:.0f} req/s): spans / requests", f"{spans} / {paced_ok}"),
]
print()
print("ratios: median over rounds, (lowest-highest round) before it")
for name, value in rows:
    print(f"{name:<48} {value:>22}")
lost = spans < paced_ok
print("no span lost in the paced run:", "NO" if lost else "yes")
sys.exit(1 if lost else 0)
PY
