#!/usr/bin/env bash
# The sidecar half of `make demo`: a sample service and its peers in a realistic pod (lib.sh:
# new_pod; a PID namespace shared as with shareProcessNamespace, each process a container with a
# cgroup of its own), the sidecar as one more container printing spans in the default capture
# mode (pod-scoped hooks on the app containers' cgroups), and a decoy in another namespace whose
# traffic must not show up. Stops by itself and cleans up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
sidecar="${OBI_SIDECAR_BIN:-$root/target/release/obi-sidecar}"
[ -x "$sidecar" ] || { echo "demo: build first (make build): $sidecar missing" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (eBPF and PID namespaces need it)" >&2; exit 1; }

# shellcheck source=lib.sh
. "$here/lib.sh"

read -r app_port backend_port decoy_port h2_port grpc_port front_port tls_port < <(free_ports 7)
new_pod demo; pod=$pod_init
new_namespace; decoy=$ns_init
# container NAME COMMAND...: COMMAND as a container NAME of the pod, output discarded.
container() {
  local name=$1
  shift
  in_container "$pod" "$pod_cgroup" "$name" "$work/$name" "$@"
}

# PostgreSQL and Redis beside the pod, started now as they take a few seconds to initialize;
# PostgreSQL runs as `postgres`, which must reach its data directory.
read -r pg_port redis_port < <(free_ports 2)
chmod 755 "$work"
"$here/db-server.sh" postgres "$work/pg" "$pg_port" >"$work/pg.log" 2>&1 &
pg_pid=$!; pids+=("$pg_pid")
"$here/db-server.sh" redis "$work/redis" "$redis_port" >"$work/redis.log" 2>&1 &
pids+=("$!")

echo "== pod: app.py on :$app_port calling nginx on :$backend_port; decoy nginx on :$decoy_port in another namespace"
container app python3 "$root/sidecar/tests/servers/app.py" "$app_port"
wait_port "$app_port"
container backend nginx -c "$(nginx_conf backend "$backend_port")"
wait_port "$backend_port"
start_nginx "$decoy" decoy "$decoy_port"
echo "== pod: nginx h2c on :$h2_port; a grpcio server on :$grpc_port and an HTTP frontend on :$front_port calling it"
container h2c nginx -c "$(nginx_conf h2c "$h2_port" http2)"
peer="$root/sidecar/tests/servers/grpc_peer.py"
container grpc python3 "$peer" serve "$grpc_port"
container front python3 "$peer" http "$front_port" "$grpc_port"
wait_port "$h2_port"; wait_port "$grpc_port"; wait_port "$front_port"

echo "== pod: tls_app.py serving HTTPS on :$tls_port (Python's ssl module: TLS plaintext through the uprobes)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
container tls python3 "$root/sidecar/tests/servers/tls_app.py" "$tls_port" "$work/cert.pem" "$work/key.pem"
wait_port "$tls_port"

ports="$app_port,$backend_port,$h2_port,$grpc_port,$front_port,$tls_port"
echo "== sidecar: OTEL_EBPF_OPEN_PORT=$ports OTEL_EBPF_TRACE_PRINTER=text"
container sidecar env OTEL_EBPF_OPEN_PORT="$ports" OTEL_EBPF_TRACE_PRINTER=text \
  OTEL_EBPF_ROUTES_PATTERNS="/users/{id}" "$sidecar"
wait_capturing "$work/sidecar.err"
grep -o 'capturing with [^;]*' "$work/sidecar.err" | sed 's/^/== sidecar: /'
tail -n +1 -f "$work/sidecar.out" | sed -u 's/^/  span: /' &
pids+=("$!")
for _ in $(seq 100); do grep -q "TLS hooks attached" "$work/sidecar.err" && break; sleep 0.05; done

request() { echo "-- curl $*"; curl -sS -o /dev/null -w '   -> %{http_code}\n' "$@"; sleep 0.3; }
request "http://127.0.0.1:$app_port/users/42"
request -X POST --data-binary 'hello sidecar' "http://127.0.0.1:$app_port/echo"
request -I "http://127.0.0.1:$app_port/status/204"
request -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
  "http://127.0.0.1:$app_port/call/$backend_port/status/500"
request "http://127.0.0.1:$backend_port/status/404"
echo "-- HTTPS: the handler calls https://127.0.0.1:$tls_port/status/200 (server and client spans over TLS, one trace)"
request -k "https://127.0.0.1:$tls_port/call/$tls_port/status/200"
wait_port "$pg_port"; wait_port "$redis_port"
echo "-- the handler queries PostgreSQL (:$pg_port) and Redis (:$redis_port): client spans in the request's trace"
request "http://127.0.0.1:$app_port/db/$pg_port/$redis_port"
echo "-- HTTP/2 with prior knowledge to nginx h2c (network.protocol.version=2)"
request --http2-prior-knowledge "http://127.0.0.1:$h2_port/status/200"
echo "-- gRPC from an unselected client: server spans, OK then NOT_FOUND (not a server fault: no error)"
container caller python3 "$peer" call "$grpc_port" SayHello:demo SayHello:status:5
wait "$container_nsenter" || true
sed 's/^/   -> /' "$work/caller.out"
sleep 0.3
echo "-- the frontend's handler calls shop.Greeter/SayHello: server and client gRPC spans; the"
echo "   channel's first call is written by grpcio's threads (a root), the next joins the request's trace"
request "http://127.0.0.1:$front_port/hello/first"
request "http://127.0.0.1:$front_port/hello/demo"
echo "-- curl http://127.0.0.1:$decoy_port/ (decoy: no span expected)"
curl -sS -o /dev/null "http://127.0.0.1:$decoy_port/"
sleep 1
# A graceful stop: the sidecar flushes what it holds and exits on SIGTERM.
pkill -TERM --ns "$pod" --nslist pid -x obi-sidecar || true
for _ in $(seq 50); do pgrep --ns "$pod" --nslist pid -x obi-sidecar >/dev/null || break; sleep 0.1; done
# PostgreSQL stops cleanly (its backends end with it) before the cleanup kills the rest.
kill -INT "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true
echo "== done; sidecar log:"
sed 's/^/  /' "$work/sidecar.err" | tail -n 5
