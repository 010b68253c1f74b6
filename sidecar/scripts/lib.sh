# shellcheck shell=bash
# Shell helpers shared by demo.sh, bench.sh and ab.sh (sourced, not run): a work dir cleaned up on exit,
# PID namespaces standing in for pods, nginx and the sidecar started inside them.
# Expects $root (the repository) to be set by the caller.
: "${root:?lib.sh needs \$root}"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# free_ports [N]: N distinct free loopback ports on one line, all bound at once while choosing
# (one at a time, a released port can come straight back).
free_ports() {
  python3 -c 'import socket, sys; s = [socket.socket() for _ in range(int(sys.argv[1]))]; [x.bind(("127.0.0.1", 0)) for x in s]; print(*(x.getsockname()[1] for x in s))' "${1:-1}"
}

wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on $1" >&2; return 1
}

# A fresh PID namespace with its own /proc; sets $ns_init to its init's pid (pid 1 inside).
new_namespace() {
  unshare --pid --fork --mount-proc sleep 3600 </dev/null >/dev/null 2>&1 &
  local outer=$!
  pids+=("$outer")
  ns_init=
  for _ in $(seq 100); do
    ns_init=$(awk '{print $1}' "/proc/$outer/task/$outer/children" 2>/dev/null || true)
    if [ -n "$ns_init" ]; then pids+=("$ns_init"); return 0; fi
    sleep 0.05
  done
  echo "a PID namespace did not start" >&2; return 1
}

# start_nginx NAMESPACE_INIT NAME PORT: nginx from tests/servers/nginx.conf.in, inside the namespace.
start_nginx() {
  mkdir -p "$work/$2"
  sed -e "s#PORT#$3#g" -e "s#DIR#$work/$2#g" "$root/sidecar/tests/servers/nginx.conf.in" > "$work/$2/nginx.conf"
  nsenter --target="$1" --pid --mount -- nginx -c "$work/$2/nginx.conf" 2>"$work/$2.err" &
  wait_port "$3"
}

# wait_capturing LOG: until the sidecar logging to LOG is attached, or fail showing the log.
wait_capturing() {
  for _ in $(seq 200); do grep -q capturing "$1" 2>/dev/null && return 0; sleep 0.05; done
  cat "$1" >&2; return 1
}

# --- Benchmark helpers (bench.sh, ab.sh). They use $sidecar (the binary), $pod (the namespace
# init the sidecar joins), $port (what it selects), $url (what wrk loads) and $CONNECTIONS and
# $DURATION.

# start_sidecar [ENV=VALUE...]: the sidecar in the pod; sets $sidecar_pid (its pid here) and
# $sidecar_nsenter. nsenter does not forward signals: stop_sidecar signals the sidecar itself.
start_sidecar() {
  # Emptied first: the previous run's "capturing" line must not pass for this one's.
  : > "$work/sidecar.err"
  env OTEL_EBPF_OPEN_PORT="$port" OTEL_EBPF_PROMETHEUS_PORT= "$@" nsenter --target="$pod" --pid --mount -- "$sidecar" \
    >"$work/sidecar.out" 2>"$work/sidecar.err" &
  sidecar_nsenter=$!
  wait_capturing "$work/sidecar.err"
  sidecar_pid=$(awk '{print $1}' "/proc/$sidecar_nsenter/task/$sidecar_nsenter/children")
}
stop_sidecar() {
  kill -TERM "$sidecar_pid"; wait "$sidecar_nsenter" 2>/dev/null || true
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_wrk [WRK ARGS...]: wrk against $url; prints "rps p99_ms requests" (from "Requests/sec: N"
# and, with --latency, the 99% percentile).
run_wrk() {
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" > "$work/wrk.out"
  python3 - "$work/wrk.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
total = int(re.search(r"(\d+) requests in", text).group(1))
print(f"{rps:.0f} {ms(*p99.groups()):.3f} {total}")
PY
}

peak_rss=0; load_rss=0
# measure_sidecar [ENV=VALUE...]: wrk with the sidecar started with that env, then stops it;
# sets $rps $p99 and $cpu (sidecar us/request) and raises $peak_rss and $load_rss (KiB).
measure_sidecar() {
  start_sidecar "$@"
  local before after total rss
  before=$(cpu_ticks "$sidecar_pid")
  read -r rps p99 total < <(run_wrk)
  after=$(cpu_ticks "$sidecar_pid")
  cpu=$(python3 -c "print(($after-$before)*1e6/$(getconf CLK_TCK)/$total)")
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$sidecar_pid/status")
  [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
  # The peak is set at startup (parsing kernel BTF); this is what the sidecar holds under load.
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$sidecar_pid/status")
  [ "$rss" -gt "$load_rss" ] && load_rss=$rss
  stop_sidecar
}
