#!/usr/bin/env bash
# `make bench`, sidecar half: nginx on loopback under wrk, with and without the sidecar, in
# interleaved rounds so drift of the machine hits both sides alike. Prints throughput and p99
# ratios, sidecar CPU per request and peak RSS, then a paced 5k req/s run checking no span is lost.
# Each round also runs the sidecar with nothing selected (OPEN_PORT matching no process): the
# cost its hooks put on every task of the machine, wrk included, before any capture; and the
# sidecar exporting spans and metrics over OTLP/HTTP to a collector stand-in: a second nginx, in
# a namespace of its own, that answers every POST with 200 and discards the body. Every span is
# built, batched, encoded and sent as to a collector, for about the cheapest receiver there is
# (its CPU is on these two cores too).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}

# shellcheck source=lib.sh
. "$here/lib.sh"
needs_release_sidecar

read -r port collector_port < <(free_ports 2)
new_namespace; pod=$ns_init
start_nginx "$pod" nginx "$port"
url="http://127.0.0.1:$port/status/200"
new_namespace
start_nginx "$ns_init" collector "$collector_port"
collector="http://127.0.0.1:$collector_port"

printf '%-6s %-10s %12s %10s\n' round sidecar req/s p99_ms
base_rps=(); with_rps=(); idle_rps=(); base_p99=(); with_p99=(); cpu_per_req=()
export_rps=(); export_cpu=()
run_off() {
  read -r rps p99 _ < <(run_wrk)
  base_rps+=("$rps"); base_p99+=("$p99")
}
run_idle() {
  start_sidecar OTEL_EBPF_OPEN_PORT=1
  read -r rps p99 _ < <(run_wrk)
  stop_sidecar
  idle_rps+=("$rps")
}
run_on() {
  measure_sidecar
  with_rps+=("$rps"); with_p99+=("$p99"); cpu_per_req+=("$cpu")
}
run_exporting() {
  measure_sidecar OTEL_EXPORTER_OTLP_ENDPOINT="$collector"
  export_rps+=("$rps"); export_cpu+=("$cpu")
}
rotate_rounds 10 off idle on exporting

# Paced run: 50 connections, each waiting 10 ms between requests (about 5k req/s); every
# completed request must have become a span.
cat > "$work/pace.lua" <<'LUA'
function delay() return 10 end
LUA
start_sidecar OTEL_EBPF_TRACE_PRINTER=json
read -r paced_rps _ paced_total < <(run_wrk -s "$work/pace.lua")
sleep 2
stop_sidecar
spans=$(grep -c '"kind"' "$work/sidecar.out" || true)

python3 - "$peak_rss" "$paced_rps" "$paced_total" "$spans" "${base_rps[*]}" "${with_rps[*]}" \
  "${base_p99[*]}" "${with_p99[*]}" "${cpu_per_req[*]}" "${idle_rps[*]}" "$load_rss" \
  "${export_rps[*]}" "${export_cpu[*]}" <<'PY'
import statistics as st, sys
peak_kib, paced_rps, paced_total, spans = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base, with_, bp99, wp99, cpu, idle = ([float(x) for x in a.split()] for a in sys.argv[5:11])
load_kib = int(sys.argv[11])
export_rps, export_cpu = ([float(x) for x in a.split()] for a in sys.argv[12:14])
# Each round's runs are minutes apart at most: the ratio within a round cancels the machine's
# slower drift, and the median over rounds its outliers.
def paired(runs, baseline):
    """The median of the per-round ratios, and its table cell: the lowest and highest round first."""
    ratios = [r / b for r, b in zip(runs, baseline)]
    median = st.median(ratios)
    return median, f"({min(ratios):.2f}-{max(ratios):.2f}) {median:.3f}"
tp, tp_cell = paired(with_, base)
lat, lat_cell = paired(wp99, bp99)
# Exporting against capturing only, both over the same run without the sidecar, per round.
gaps = [e / b - w / b for e, w, b in zip(export_rps, with_, base)]
gap = st.median(gaps)
export_cpu_median = st.median(export_cpu)
rows = [
    ("throughput, hook only (nothing selected)", paired(idle, base)[1], "-", True),
    ("throughput with/without (median per round)", tp_cell, ">= 0.97", tp >= 0.97),
    ("p99 latency with/without (median per round)", lat_cell, "<= 1.05", lat <= 1.05),
    ("sidecar CPU per request", f"{st.median(cpu):.2f} us", "-", True),
    ("throughput exporting OTLP / without", paired(export_rps, base)[1], "-", True),
    ("  minus with/without (median per round)", f"({min(gaps):+.3f}-{max(gaps):+.3f}) {gap:+.3f}", ">= -0.02", gap >= -0.02),
    ("sidecar CPU per request, exporting OTLP", f"{export_cpu_median:.2f} us", "<= 1.0 us", export_cpu_median <= 1.0),
    ("sidecar peak RSS (VmHWM)", f"{peak_kib / 1024:.1f} MiB", "< 25 MiB", peak_kib < 25 * 1024),
    ("sidecar RSS after a run (VmRSS, max)", f"{load_kib / 1024:.1f} MiB", "-", True),
    (f"paced run ({paced_rps:.0f} req/s): spans / requests", f"{spans} / {paced_total}", "no loss", spans >= paced_total),
]
print()
print("ratios: median over rounds, (lowest-highest round) before it")
print(f"{'metric':<44} {'measured':>22} {'target':>10}  ok")
for name, value, target, ok in rows:
    print(f"{name:<44} {value:>22} {target:>10}  {'yes' if ok else 'NO'}")
PY
