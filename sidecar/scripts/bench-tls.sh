#!/usr/bin/env bash
# `make bench`, TLS half: nginx serving HTTPS on loopback under wrk (keep-alive, HTTP/1.1 over
# TLS) in a realistic pod, without the sidecar and with it capturing the plaintext through the
# uprobes in each capture mode (pod-scoped, tracepoints), in interleaved rounds (the order
# rotates) so drift of the machine hits every variant alike. Prints the throughput and p99
# ratios (median of the per-round ratios, lowest and highest round) and the sidecar's CPU per
# request, then checks that a paced run lost no span. One more variant runs the sidecar with
# TLS capture off (OTEL_EBPF_TLS_CAPTURE=false: the socket programs only, the ciphertext
# recognized and dropped): the difference is what the uprobes cost.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}

# shellcheck source=lib.sh
. "$here/lib.sh"
needs_release_sidecar

read -r port < <(free_ports 1)
# A realistic pod (lib.sh: new_pod): nginx and each sidecar run as containers of their own, so
# the pod-scoped mode attaches to nginx's cgroup as in Kubernetes.
new_pod tls
mkdir -p "$work/nginx"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=127.0.0.1 -keyout "$work/nginx/key.pem" -out "$work/nginx/cert.pem" 2>/dev/null
sed -e "s#PORT;#PORT ssl;\n        ssl_certificate $work/nginx/cert.pem;\n        ssl_certificate_key $work/nginx/key.pem;#" \
  -e "s#PORT#$port#g" -e "s#DIR#$work/nginx#g" "$root/sidecar/tests/servers/nginx.conf.in" > "$work/nginx/nginx.conf"
in_container "$pod_init" "$pod_cgroup" nginx "$work/nginx" nginx -c "$work/nginx/nginx.conf"
wait_port "$port"
url="https://127.0.0.1:$port/status/200"

log="$work/sidecar"
wait_hooked() {
  for _ in $(seq 100); do grep -q "TLS hooks attached" "$log.err" && return 0; sleep 0.05; done
  cat "$log.err" >&2; return 1
}
# sidecar_in MODE [ENV=VALUE...]: the pod's sidecar in capture mode MODE, selecting nginx.
sidecar_in() {
  local mode=$1
  shift
  start_container_sidecar "$pod_init" "$pod_cgroup" "$log" OTEL_EBPF_OPEN_PORT="$port" \
    OTEL_EBPF_CAPTURE_MODE="$mode" "$@"
}
stop_it() {
  kill -TERM "$sidecar_pid"
  while kill -0 "$sidecar_pid" 2>/dev/null; do sleep 0.02; done
}

printf '%-6s %-12s %12s %10s\n' round sidecar req/s p99_ms
# One line per run: variant rps p99 cpu; the report reads them back.
: > "$work/runs.txt"
# hooked MODE: wrk with the sidecar capturing TLS plaintext in MODE.
hooked() {
  sidecar_in "$1"
  wait_hooked
  local before after total
  before=$(cpu_ticks "$sidecar_pid")
  read -r rps p99 total < <(run_wrk)
  after=$(cpu_ticks "$sidecar_pid")
  cpu=$(python3 -c "print(($after-$before)*1e6/$(getconf CLK_TCK)/$total)")
  stop_it
  echo "$1 $rps $p99 $cpu" >> "$work/runs.txt"
}
run_off() {
  read -r rps p99 _ < <(run_wrk)
  echo "off $rps $p99 0" >> "$work/runs.txt"
}
run_pod() { hooked pod; }
run_tracepoints() { hooked tracepoints; }
run_notls() {
  sidecar_in pod OTEL_EBPF_TLS_CAPTURE=false
  read -r rps p99 _ < <(run_wrk)
  stop_it
  echo "notls $rps $p99 0" >> "$work/runs.txt"
}
rotate_rounds 12 off pod tracepoints notls

# Paced run (the pod-scoped mode): 50 connections, each waiting 10 ms between requests; every
# completed request must have become a span.
cat > "$work/pace.lua" <<'LUA'
function delay() return 10 end
LUA
sidecar_in pod OTEL_EBPF_TRACE_PRINTER=json
wait_hooked
read -r paced_rps _ paced_total < <(run_wrk -s "$work/pace.lua")
sleep 2
stop_it
spans=$(grep -c '"url.scheme":"https"' "$log.out" || true)

# What one uprobe hit costs here: a Python loop calling SSL_free(NULL) (hooked at entry; the
# program returns at once for a NULL session), in a container of the pod, without and with the
# sidecar.
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
  in_container "$pod_init" "$pod_cgroup" "trap-$1" "$work/trap-$1" python3 "$work/trap.py" "$work/go"
  local trap_pid=$container_nsenter
  if [ "$1" = hooked ]; then
    start_container_sidecar "$pod_init" "$pod_cgroup" "$log" "OTEL_EBPF_AUTO_TARGET_EXE=*python3*"
    wait_hooked
  fi
  touch "$work/go"; wait "$trap_pid"
  if [ "$1" = hooked ]; then stop_it; fi
  cat "$work/trap-$1.out"
}
call_plain=$(trap_ns plain)
call_hooked=$(trap_ns hooked)

python3 - "$work/runs.txt" "$paced_rps" "$paced_total" "$spans" "$call_plain" "$call_hooked" <<'PY'
import collections, statistics as st, sys
runs = collections.defaultdict(list)  # variant -> [(rps, p99, cpu)], in round order
for line in open(sys.argv[1]):
    variant, rps, p99, cpu = line.split()
    runs[variant].append((float(rps), float(p99), float(cpu)))
paced_rps, paced_total, spans = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
call_plain, call_hooked = float(sys.argv[5]), float(sys.argv[6])
def paired(variant, field):
    ratios = [r[field] / b[field] for r, b in zip(runs[variant], runs["off"])]
    return f"({min(ratios):.2f}-{max(ratios):.2f}) {st.median(ratios):.3f}"
def cpu(variant):
    values = [r[2] for r in runs[variant]]
    return f"{st.median(values):.2f} us ({min(values):.2f}-{max(values):.2f})"
rows = [
    ("HTTPS throughput with/without, pod-scoped", paired("pod", 0)),
    ("HTTPS throughput with/without, tracepoints", paired("tracepoints", 0)),
    ("HTTPS p99 latency with/without, pod-scoped", paired("pod", 1)),
    ("HTTPS p99 latency with/without, tracepoints", paired("tracepoints", 1)),
    ("HTTPS throughput, TLS capture off/without", paired("notls", 0)),
    ("sidecar CPU per HTTPS request, pod-scoped", cpu("pod")),
    ("sidecar CPU per HTTPS request, tracepoints", cpu("tracepoints")),
    (f"paced run ({paced_rps:.0f} req/s): spans / requests", f"{spans} / {paced_total}"),
    ("one uprobe hit (SSL_free(NULL) hooked - plain)", f"{(call_hooked - call_plain) / 1000:.1f} us"),
]
print()
print("ratios: median over rounds, (lowest-highest round) before it")
for name, value in rows:
    print(f"{name:<46} {value:>26}")
PY
