#!/usr/bin/env bash
# Counts the spans of an h2load run against nginx h2c in a realistic pod (lib.sh: new_pod,
# in_container), the sidecar in MODE (default pod; tracepoints too) beside it, printing every
# span as a JSON line: "spans / requests". Usage: h2-spans.sh [H2LOAD ARGS...], e.g.
# `h2-spans.sh -n 2000 -c 1 -m 100` (those are the defaults).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
sidecar="${OBI_SIDECAR_BIN:-$root/target/release/obi-sidecar}"
[ -x "$sidecar" ] || { echo "h2-spans: build first (make build)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "h2-spans: run as root (eBPF needs it)" >&2; exit 1; }
MODE=${MODE:-pod}
[ $# -gt 0 ] || set -- -n 2000 -c 1 -m 100

# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

read -r port < <(free_ports 1)
new_pod h2
in_container "$pod_init" "$pod_cgroup" nginx "$work/nginx" nginx -c "$(nginx_conf nginx "$port" http2)"
wait_port "$port"
in_container "$pod_init" "$pod_cgroup" sidecar "$work/sidecar" \
  env OTEL_EBPF_OPEN_PORT="$port" OTEL_EBPF_CAPTURE_MODE="$MODE" OTEL_EBPF_PROMETHEUS_PORT= \
  OTEL_EBPF_TRACE_PRINTER=json OTEL_EBPF_BPF_RINGBUF_SIZE=$((16 << 20)) "$sidecar"
sidecar_nsenter=$container_nsenter
wait_capturing "$work/sidecar.err"
for _ in $(seq 100); do grep -q "instrumenting process" "$work/sidecar.err" && break; sleep 0.05; done

h2load "$@" "http://127.0.0.1:$port/status/200" >"$work/h2load.out"
requests=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$work/h2load.out")
# Spans come out within the drain interval; then the count stops growing.
spans=-1
while [ "$spans" != "$(grep -c '"kind"' "$work/sidecar.out" || true)" ]; do
  spans=$(grep -c '"kind"' "$work/sidecar.out" || true)
  sleep 1
done
# nsenter does not forward signals: stop the sidecar (nsenter's child, env turned sidecar).
kill -TERM "$(awk '{print $1}' "/proc/$sidecar_nsenter/task/$sidecar_nsenter/children")"
wait "$sidecar_nsenter" 2>/dev/null || true
grep -i "dropped\|lost" "$work/sidecar.err" | tail -3 || true
echo "mode $MODE, h2load $*: $spans spans / $requests requests"
