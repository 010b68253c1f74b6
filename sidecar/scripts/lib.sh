# shellcheck shell=bash
# Shell helpers shared by demo.sh, bench.sh and ab.sh (sourced, not run): a work dir cleaned up on exit,
# PID namespaces standing in for pods, nginx and the sidecar started inside them.
# Expects $root (the repository) to be set by the caller.
: "${root:?lib.sh needs \$root}"

# needs_release_sidecar: what every benchmark starts with. Sets $sidecar to the release build
# (or $OBI_SIDECAR_BIN) and exits unless it is built and this runs as root.
needs_release_sidecar() {
  local name
  name=$(basename "$0" .sh)
  sidecar="${OBI_SIDECAR_BIN:-$root/target/release/obi-sidecar}"
  [ -x "$sidecar" ] || { echo "$name: build first (make build)" >&2; exit 1; }
  [ "$(id -u)" -eq 0 ] || { echo "$name: run as root (eBPF needs it)" >&2; exit 1; }
}

work=$(mktemp -d)
pids=()
# Cgroup directories made by new_pod and in_container, parents first.
cgroups=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  local i
  for (( i = ${#cgroups[@]} - 1; i >= 0; i-- )); do
    echo 1 > "${cgroups[$i]}/cgroup.kill" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  for (( i = ${#cgroups[@]} - 1; i >= 0; i-- )); do
    for _ in $(seq 50); do rmdir "${cgroups[$i]}" 2>/dev/null && break; sleep 0.05; done
  done
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

# --- Realistic pods, as tests/support/pod.rs makes them: a PID namespace whose init is a
# `pause` container, and containers that each have a cgroup v2 directory of their own, a cgroup
# namespace rooted there and cgroup2 mounted at /sys/fs/cgroup in their mount namespace.

cgroup2_root=$(awk '$9 == "cgroup2" {print $5; exit}' FS=' ' /proc/self/mountinfo)

# new_pod NAME: sets $pod_init (the pause process, pid 1 inside) and $pod_cgroup.
new_pod() {
  pod_cgroup="$cgroup2_root/obi-bench-$$-$1"
  mkdir "$pod_cgroup" "$pod_cgroup/pause"
  cgroups+=("$pod_cgroup" "$pod_cgroup/pause")
  sh -c "echo \$\$ > $pod_cgroup/pause/cgroup.procs && exec unshare --pid --fork --mount-proc \
    --cgroup --propagation private -- sh -c 'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec sleep 3600'" \
    </dev/null >/dev/null 2>&1 &
  local outer=$!
  pids+=("$outer")
  pod_init=
  for _ in $(seq 100); do
    pod_init=$(awk '{print $1}' "/proc/$outer/task/$outer/children" 2>/dev/null || true)
    if [ -n "$pod_init" ] && [ "$(cat "/proc/$pod_init/comm" 2>/dev/null)" = sleep ]; then
      pids+=("$pod_init"); return 0
    fi
    sleep 0.05
  done
  echo "a pod did not start" >&2; return 1
}

# in_container POD_INIT POD_CGROUP NAME LOG COMMAND...: COMMAND as the process of a new container
# NAME of the pod, in the background, its output in LOG(.out|.err); sets $container_nsenter,
# whose child is COMMAND.
in_container() {
  local init=$1 cg="$2/$3" log=$4
  shift 4
  mkdir "$cg"
  cgroups+=("$cg")
  sh -c "echo \$\$ > $cg/cgroup.procs && exec nsenter --target=$init --pid --mount -- \
    unshare --cgroup --mount --propagation private -- \
    sh -c 'umount /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"\$@\"' sh \"\$@\"" \
    sh "$@" </dev/null >"$log.out" 2>"$log.err" &
  container_nsenter=$!
  pids+=("$container_nsenter")
}

# start_container_sidecar POD_INIT POD_CGROUP LOG [ENV=VALUE...]: the sidecar as a container of
# its own in that pod, with that env; waits until it captures and sets $sidecar_pid (its pid
# here). Stop it with kill and a wait on its pid (nsenter does not forward signals).
sidecar_seq=0
start_container_sidecar() {
  local init=$1 cg=$2 log=$3
  shift 3
  sidecar_seq=$((sidecar_seq + 1))
  # Emptied first: a previous run's "capturing" line in a reused log must not pass for this one's.
  : > "$log.err"
  in_container "$init" "$cg" "sidecar-$sidecar_seq" "$log" env OTEL_EBPF_PROMETHEUS_PORT= "$@" "$sidecar"
  local nsenter=$container_nsenter
  wait_capturing "$log.err"
  # nsenter's child is env, which became the sidecar.
  sidecar_pid=$(awk '{print $1}' "/proc/$nsenter/task/$nsenter/children")
}

# nginx_conf NAME PORT [LISTEN OPTION]: writes nginx.conf for PORT under $work/NAME and prints
# its path; `http2` as the option serves cleartext HTTP/2 with prior knowledge.
nginx_conf() {
  mkdir -p "$work/$1"
  sed -e "s#PORT;#PORT${3:+ $3};#" -e "s#PORT#$2#g" -e "s#DIR#$work/$1#g" \
    "$root/sidecar/tests/servers/nginx.conf.in" > "$work/$1/nginx.conf"
  echo "$work/$1/nginx.conf"
}

# start_nginx NAMESPACE_INIT NAME PORT [LISTEN OPTION]: nginx from tests/servers/nginx.conf.in,
# inside the namespace (the option as for nginx_conf).
start_nginx() {
  local conf
  conf=$(nginx_conf "$2" "$3" "${4:-}")
  nsenter --target="$1" --pid --mount -- nginx -c "$conf" 2>"$work/$2.err" &
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

# rotate_rounds WIDTH VARIANT...: $ROUNDS rounds, each calling run_VARIANT for every variant and
# printing its $rps and $p99 (the variant in a column WIDTH wide). The order rotates from round
# to round: with a fixed order, a drift within rounds (the machine warming up, or the sidecar
# run before leaving work behind) would always favour the same side.
rotate_rounds() {
  local width=$1 round i variant
  shift
  local variants=("$@")
  for round in $(seq "$ROUNDS"); do
    for i in "${!variants[@]}"; do
      variant=${variants[$(( (i + round - 1) % ${#variants[@]} ))]}
      "run_$variant"
      printf "%-6s %-${width}s %12s %10s\n" "$round" "$variant" "$rps" "$p99"
    done
  done
}

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
