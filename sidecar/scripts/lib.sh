# shellcheck shell=bash
# Shell helpers shared by demo.sh and bench.sh (sourced, not run): a work dir cleaned up on exit,
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
