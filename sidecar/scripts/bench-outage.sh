#!/usr/bin/env bash
# The collector goes away under load and comes back (outside CI: it takes ~15 minutes). nginx in
# a PID namespace under wrk paced to ~5k req/s, the sidecar exporting spans and metrics over
# OTLP/HTTP to a collector stand-in (a second nginx answering every POST with 200). After a
# steady phase the collector stops for OUTAGE_DOWN seconds (OUTAGE_MODE=refuse: nothing listens,
# connections are refused; hang: a listener accepts and never answers, so every export runs into
# its timeout), then starts again on the same port. Every 10 s the sidecar's RSS and its span
# counters (from its Prometheus endpoint) are sampled; the report gives the memory of the outage
# against the steady state, the spans dropped, and whether export resumed without a restart.
#
# Usage: sidecar/scripts/bench-outage.sh   (as root; OUTAGE_STEADY=120 OUTAGE_DOWN=600
# OUTAGE_UP=120 seconds, OUTAGE_MODE=refuse|hang)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
STEADY=${OUTAGE_STEADY:-120}
DOWN=${OUTAGE_DOWN:-600}
UP=${OUTAGE_UP:-120}
MODE=${OUTAGE_MODE:-refuse}
case $MODE in refuse|hang) ;; *) echo "OUTAGE_MODE is refuse or hang" >&2; exit 2 ;; esac
CONNECTIONS=50

# shellcheck source=lib.sh
. "$here/lib.sh"
needs_release_sidecar

read -r port collector_port metrics_port < <(free_ports 3)
new_namespace; pod=$ns_init
start_nginx "$pod" nginx "$port"
url="http://127.0.0.1:$port/status/200"
new_namespace; collector_ns=$ns_init
start_nginx "$collector_ns" collector "$collector_port"
# nginx's pid file holds its pid inside its namespace: signal it from in there.
stop_collector() {
  nsenter --target="$collector_ns" --pid --mount -- sh -c 'kill -TERM "$(cat "$1")"' _ "$work/collector/nginx.pid"
}

start_sidecar OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$collector_port" \
  OTEL_EBPF_PROMETHEUS_PORT="$metrics_port"

# 50 connections, each waiting 10 ms between requests: about 5k req/s, for the whole run.
cat > "$work/pace.lua" <<'LUA'
function delay() return 10 end
LUA
total=$((STEADY + DOWN + UP + 5))
wrk -t2 -c"$CONNECTIONS" -d"${total}s" -s "$work/pace.lua" "$url" > "$work/wrk.out" &
pids+=("$!")

samples="$work/samples"
: > "$samples"
sample() { # phase
  local rss exported dropped
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$sidecar_pid/status")
  read -r exported dropped < <(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '
    /^obi_sidecar_spans_exported_total / {e=$2} /^obi_sidecar_spans_dropped_total / {d=$2}
    END {print e+0, d+0}')
  echo "$1 $SECONDS $rss $exported $dropped" >> "$samples"
  printf '%-8s %5ss  rss %6s KiB  exported %9s  dropped %9s\n' "$1" "$SECONDS" "$rss" "$exported" "$dropped"
}
phase() { # name seconds
  local end=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$end" ]; do sleep 10; sample "$1"; done
}

SECONDS=0
phase steady "$STEADY"
stop_collector
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$collector_port") 2>/dev/null || break; sleep 0.1; done
if [ "$MODE" = hang ]; then
  python3 -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(128); held = []
while True: held.append(s.accept()[0])' "$collector_port" &
  hole=$!; pids+=("$hole")
fi
phase down "$DOWN"
if [ "$MODE" = hang ]; then kill -KILL "$hole"; wait "$hole" 2>/dev/null || true; fi
nsenter --target="$collector_ns" --pid --mount -- nginx -c "$work/collector/nginx.conf" 2>>"$work/collector.err" &
pids+=("$!")
wait_port "$collector_port"
phase up "$UP"
stop_sidecar

python3 - "$samples" "$MODE" "$DOWN" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
by = {}
for phase, t, rss, exported, dropped in rows:
    by.setdefault(phase, []).append((int(t), int(rss), int(exported), int(dropped)))
steady, down, up = by["steady"], by["down"], by["up"]
# The first half minute warms up (connections, series, buffers): the steady state is after it.
settled = [r for r in steady if r[0] > 30] or steady
steady_rss = max(r[1] for r in settled)
down_rss = max(r[1] for r in down)
up_rss = max(r[1] for r in up)
dropped = down[-1][3] - steady[-1][3]
exported_down = down[-1][2] - steady[-1][2]
resumed = up[-1][2] - down[-1][2]
print()
print(f"collector {sys.argv[2]} for {sys.argv[3]} s")
print(f"{'steady RSS (max after 30 s)':<36} {steady_rss / 1024:8.1f} MiB")
print(f"{'RSS during the outage (max)':<36} {down_rss / 1024:8.1f} MiB  ({down_rss / steady_rss:.2f}x, target <= 2x)")
print(f"{'RSS after it (max)':<36} {up_rss / 1024:8.1f} MiB")
print(f"{'spans dropped during the outage':<36} {dropped:8d}")
print(f"{'spans exported during the outage':<36} {exported_down:8d}")
print(f"{'spans exported after it':<36} {resumed:8d}  ({'resumed' if resumed > 0 else 'NOT RESUMED'})")
ok = down_rss <= 2 * steady_rss and dropped > 0 and resumed > 0
print("ok" if ok else "NOT OK")
sys.exit(0 if ok else 1)
PY
