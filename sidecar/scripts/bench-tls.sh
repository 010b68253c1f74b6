#!/usr/bin/env bash
# `make bench`, TLS half: nginx serving HTTPS on loopback under wrk (keep-alive, HTTP/1.1 over
# TLS), with and without the sidecar capturing its plaintext through the uprobes, in interleaved
# rounds (the order rotates) so drift of the machine hits both sides alike. Prints the
# throughput and p99 ratios (median of the per-round ratios, lowest and highest round) and the
# sidecar's CPU per request, then checks that a paced run lost no span. A third variant runs
# the sidecar with TLS capture off (OTEL_EBPF_TLS_CAPTURE=false: the socket programs only, the
# ciphertext recognized and dropped): the difference is what the uprobes cost.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
sidecar="${OBI_SIDECAR_BIN:-$root/target/release/obi-sidecar}"
[ -x "$sidecar" ] || { echo "bench-tls: build first (make build)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench-tls: run as root (eBPF needs it)" >&2; exit 1; }
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}

# shellcheck source=lib.sh
. "$here/lib.sh"

read -r port < <(free_ports 1)
new_namespace; pod=$ns_init
mkdir -p "$work/nginx"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=127.0.0.1 -keyout "$work/nginx/key.pem" -out "$work/nginx/cert.pem" 2>/dev/null
sed -e "s#PORT;#PORT ssl;\n        ssl_certificate $work/nginx/cert.pem;\n        ssl_certificate_key $work/nginx/key.pem;#" \
  -e "s#PORT#$port#g" -e "s#DIR#$work/nginx#g" "$root/sidecar/tests/servers/nginx.conf.in" > "$work/nginx/nginx.conf"
nsenter --target="$pod" --pid --mount -- nginx -c "$work/nginx/nginx.conf" 2>"$work/nginx.err" &
wait_port "$port"
url="https://127.0.0.1:$port/status/200"

wait_hooked() {
  for _ in $(seq 100); do grep -q "TLS hooks attached" "$work/sidecar.err" && return 0; sleep 0.05; done
  cat "$work/sidecar.err" >&2; return 1
}

printf '%-6s %-8s %12s %10s\n' round sidecar req/s p99_ms
base_rps=(); with_rps=(); base_p99=(); with_p99=(); cpu_per_req=(); notls_rps=()
run_off() {
  read -r rps p99 _ < <(run_wrk)
  base_rps+=("$rps"); base_p99+=("$p99")
}
run_on() {
  start_sidecar
  wait_hooked
  local before after total
  before=$(cpu_ticks "$sidecar_pid")
  read -r rps p99 total < <(run_wrk)
  after=$(cpu_ticks "$sidecar_pid")
  cpu=$(python3 -c "print(($after-$before)*1e6/$(getconf CLK_TCK)/$total)")
  stop_sidecar
  with_rps+=("$rps"); with_p99+=("$p99"); cpu_per_req+=("$cpu")
}
run_notls() {
  start_sidecar OTEL_EBPF_TLS_CAPTURE=false
  read -r rps p99 _ < <(run_wrk)
  stop_sidecar
  notls_rps+=("$rps")
}
rotate_rounds 8 off on notls

# Paced run: 50 connections, each waiting 10 ms between requests; every completed request must
# have become a span.
cat > "$work/pace.lua" <<'LUA'
function delay() return 10 end
LUA
start_sidecar OTEL_EBPF_TRACE_PRINTER=json
wait_hooked
read -r paced_rps _ paced_total < <(run_wrk -s "$work/pace.lua")
sleep 2
stop_sidecar
spans=$(grep -c '"url.scheme":"https"' "$work/sidecar.out" || true)

# What one uprobe hit costs here: a Python loop calling SSL_free(NULL) (hooked at entry; the
# program returns at once for a NULL session), in the pod, without and with the sidecar.
cat > "$work/trap.py" <<'PY'
import ctypes, os, sys, time
ssl = ctypes.CDLL("libssl.so.3")
ssl.SSL_free.argtypes = [ctypes.c_void_p]
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
n = 100000
start = time.perf_counter()
for _ in range(n):
    ssl.SSL_free(None)
print(f"{(time.perf_counter() - start) / n * 1e9:.0f}")
PY
trap_ns() {
  rm -f "$work/go"
  nsenter --target="$pod" --pid --mount -- python3 "$work/trap.py" "$work/go" > "$work/trap.out" &
  local trap_pid=$!
  if [ "$1" = hooked ]; then
    start_sidecar OTEL_EBPF_OPEN_PORT= "OTEL_EBPF_AUTO_TARGET_EXE=*python3*"
    wait_hooked
  fi
  touch "$work/go"; wait "$trap_pid"
  [ "$1" = hooked ] && stop_sidecar
  cat "$work/trap.out"
}
call_plain=$(trap_ns plain)
call_hooked=$(trap_ns hooked)

python3 - "$paced_rps" "$paced_total" "$spans" "${base_rps[*]}" "${with_rps[*]}" \
  "${base_p99[*]}" "${with_p99[*]}" "${cpu_per_req[*]}" "${notls_rps[*]}" "$call_plain" "$call_hooked" <<'PY'
import statistics as st, sys
paced_rps, paced_total, spans = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
base, with_, bp99, wp99, cpu, notls = ([float(x) for x in a.split()] for a in sys.argv[4:10])
call_plain, call_hooked = float(sys.argv[10]), float(sys.argv[11])
def paired(runs, baseline):
    ratios = [r / b for r, b in zip(runs, baseline)]
    return f"({min(ratios):.2f}-{max(ratios):.2f}) {st.median(ratios):.3f}"
rows = [
    ("HTTPS throughput with/without", paired(with_, base)),
    ("HTTPS p99 latency with/without", paired(wp99, bp99)),
    ("HTTPS throughput, TLS capture off/without", paired(notls, base)),
    ("sidecar CPU per HTTPS request", f"{st.median(cpu):.2f} us ({min(cpu):.2f}-{max(cpu):.2f})"),
    (f"paced run ({paced_rps:.0f} req/s): spans / requests", f"{spans} / {paced_total}"),
    ("one uprobe hit (SSL_free(NULL) hooked - plain)", f"{(call_hooked - call_plain) / 1000:.1f} us"),
]
print()
print("ratios: median over rounds, (lowest-highest round) before it")
for name, value in rows:
    print(f"{name:<46} {value:>26}")
PY
