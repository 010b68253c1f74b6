# shellcheck shell=bash
# Shared by demo.sh and bench.sh (sourced): certificates, and the release binary on loopback
# ports with its lifecycle. Expects `die` and `$root` (the repository) from the caller.
: "${root:?common.sh needs \$root}"

webhook_namespace=obi-system
webhook_service=obi-webhook
webhook_host=$webhook_service.$webhook_namespace.svc
webhook_pid=""

# make_certs DIR: ca.crt, tls.crt and tls.key for $webhook_host, with certs/gen.sh if present.
make_certs() {
  local dir=$1
  if [ -x "$root/certs/gen.sh" ]; then
    "$root/certs/gen.sh" --out "$dir" --namespace "$webhook_namespace" --service "$webhook_service" >/dev/null \
      || die "certs/gen.sh failed"
    echo "generated with certs/gen.sh"
    return
  fi
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=webhook test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null || die "openssl: CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$webhook_host" \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null || die "openssl: key"
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$webhook_host" >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 1 \
    -extfile "$dir/ext.cnf" -out "$dir/tls.crt" 2>/dev/null || die "openssl: certificate"
  echo "generated with openssl (certs/gen.sh not found)"
}

# free_ports [N]: N distinct free loopback ports on one line, all bound at once while choosing
# (one at a time, a released port can come straight back).
free_ports() {
  python3 -c 'import socket, sys; s = [socket.socket() for _ in range(int(sys.argv[1]))]; [x.bind(("127.0.0.1", 0)) for x in s]; print(*(x.getsockname()[1] for x in s))' "${1:-1}"
}

# start_webhook BINARY CERT_DIR LOG [NAME=VALUE...]: starts the webhook on free loopback ports
# (sets webhook_pid, tls_port, health_port) and waits until /readyz answers. A port taken by
# someone else between choosing and binding it gets a second and third chance.
start_webhook() {
  local binary=$1 certs=$2 log=$3 attempt _
  shift 3
  for attempt in 1 2 3; do
    read -r tls_port health_port < <(free_ports 2)
    env OBI_WEBHOOK_LISTEN_ADDR="127.0.0.1:$tls_port" OBI_WEBHOOK_HEALTH_ADDR="127.0.0.1:$health_port" \
      OBI_WEBHOOK_TLS_CERT_FILE="$certs/tls.crt" OBI_WEBHOOK_TLS_KEY_FILE="$certs/tls.key" "$@" \
      "$binary" 2>"$log" &
    webhook_pid=$!
    for _ in $(seq 100); do
      curl -fsS --max-time 1 "http://127.0.0.1:$health_port/readyz" >/dev/null 2>&1 && return 0
      kill -0 "$webhook_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$webhook_pid" 2>/dev/null; then
      die "the webhook is not ready after 10 s"
    fi
    wait "$webhook_pid" 2>/dev/null || true
    webhook_pid=""
    grep -q "cannot listen on" "$log" && [ "$attempt" -lt 3 ] && continue
    cat "$log" >&2
    die "the webhook exited during startup"
  done
}

# stop_webhook LOG: SIGTERM, wait, and fail (showing LOG) unless it exits cleanly.
stop_webhook() {
  [ -n "$webhook_pid" ] || return 0
  local status=0
  kill -TERM "$webhook_pid" 2>/dev/null || true
  wait "$webhook_pid" || status=$?
  webhook_pid=""
  [ "$status" -eq 0 ] || { cat "$1" >&2; die "the webhook exited with status $status"; }
}

# kill_webhook: for EXIT traps; never fails.
kill_webhook() {
  if [ -n "$webhook_pid" ] && kill -0 "$webhook_pid" 2>/dev/null; then
    kill -TERM "$webhook_pid" 2>/dev/null || true
    wait "$webhook_pid" 2>/dev/null || true
  fi
  webhook_pid=""
}
