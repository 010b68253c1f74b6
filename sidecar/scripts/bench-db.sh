#!/usr/bin/env bash
# `make bench`, database half: pgbench -S and redis-benchmark -P 16 run in the pod against their
# own PostgreSQL and Redis on loopback, with and without the sidecar tracing the clients, in
# interleaved rounds whose order rotates. Prints the throughput ratios (median of the per-round
# ratios), the sidecar's CPU per operation, then paced runs checking that no span is lost.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ROUNDS=${ROUNDS:-6}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
REDIS_REQUESTS=${REDIS_REQUESTS:-300000}

# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
needs_release_sidecar

read -r pg_port redis_port < <(free_ports 2)
# PostgreSQL runs as `postgres`, which must reach its data directory.
chmod 755 "$work"
"$here/db-server.sh" postgres "$work/pg" "$pg_port" >"$work/pg.log" 2>&1 &
pg_pid=$!; pids+=("$pg_pid")
"$here/db-server.sh" redis "$work/redis" "$redis_port" >"$work/redis.log" 2>&1 &
pids+=("$!")
wait_port "$pg_port"
wait_port "$redis_port"
export PGPASSWORD=test
pgbench -i -q -s 2 -h 127.0.0.1 -p "$pg_port" -U test shop >/dev/null 2>&1
# Stop PostgreSQL cleanly (its backends end with it) before lib.sh's cleanup kills the rest.
trap 'kill -INT "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; cleanup' EXIT

new_namespace; pod=$ns_init
# The sidecar selects the clients by executable (and by no port: empty is unset); they start
# after a pause in a shell that then becomes the client (same pid), so that discovery has
# selected it before it connects.
# lib.sh's start_sidecar selects $port first; the empty value given after it wins.
port=
select_clients=(OTEL_EBPF_OPEN_PORT= "OTEL_EBPF_AUTO_TARGET_EXE=*/{bash,pgbench,redis-benchmark,redis-cli}")
in_pod() { nsenter --target="$pod" --pid --mount -- bash -c "sleep 1; exec $*"; }

# run_pgbench: prints "tps transactions".
run_pgbench() {
  in_pod pgbench -h 127.0.0.1 -p "$pg_port" -U test -n -S -M prepared -c 4 -j 2 \
    -T "$SECONDS_PER_RUN" "$@" shop >"$work/pgbench.out" 2>&1
  awk '/^tps/ {tps=$3} /actually processed/ {n=$NF} END {print tps, n}' "$work/pgbench.out"
}
# run_redis: prints "requests/s requests".
run_redis() {
  in_pod redis-benchmark -p "$redis_port" -P 16 -c 8 -t get -n "$REDIS_REQUESTS" -q \
    >"$work/redis.out" 2>&1
  # Progress lines end in a carriage return; the last line has the total.
  tr '\r' '\n' <"$work/redis.out" |
    awk -v n="$REDIS_REQUESTS" '/requests per second/ {rps=$2} END {print rps, n}'
}

# start: the sidecar selecting the clients, with extra ENV=VALUE; the last run's log goes first,
# or lib.sh's wait for "capturing" could read it before the new sidecar truncates it.
start() {
  rm -f "$work/sidecar.err"
  start_sidecar "${select_clients[@]}" "$@"
}

# measure BENCH [sidecar|none]: sets $ops (per second) and, with the sidecar, $cpu (sidecar us
# per operation).
measure() {
  local before after total
  if [ "$2" = sidecar ]; then
    start
    before=$(cpu_ticks "$sidecar_pid")
  fi
  read -r ops total < <("run_$1")
  if [ "$2" = sidecar ]; then
    after=$(cpu_ticks "$sidecar_pid")
    cpu=$(python3 -c "print(($after-$before)*1e6/$(getconf CLK_TCK)/$total)")
    stop_sidecar
  fi
}

printf '%-6s %-9s %-8s %14s\n' round bench sidecar ops/s
declare -A results
variants=("pgbench none" "pgbench sidecar" "redis none" "redis sidecar")
for round in $(seq "$ROUNDS"); do
  for i in "${!variants[@]}"; do
    read -r bench mode <<<"${variants[$(( (i + round - 1) % ${#variants[@]} ))]}"
    cpu=
    measure "$bench" "$mode"
    results["$bench $mode"]+="$ops "
    [ -n "$cpu" ] && results["$bench cpu"]+="$cpu "
    printf '%-6s %-9s %-8s %14s\n' "$round" "$bench" "$mode" "$ops"
  done
done

# Paced runs, printing every span: each statement or command must be one span.
start OTEL_EBPF_TRACE_PRINTER=json
read -r _ paced_pg < <(run_pgbench -R 2000)
in_pod redis-cli -p "$redis_port" -r 5000 -i 0.0002 INCR paced >/dev/null
sleep 2
stop_sidecar
pg_spans=$(grep -c '"name":"SELECT pgbench_accounts"' "$work/sidecar.out" || true)
redis_spans=$(grep -c '"name":"INCR"' "$work/sidecar.out" || true)

python3 - "${results[pgbench none]}" "${results[pgbench sidecar]}" "${results[pgbench cpu]}" \
  "${results[redis none]}" "${results[redis sidecar]}" "${results[redis cpu]}" \
  "$paced_pg" "$pg_spans" "$redis_spans" <<'PY'
import statistics as st, sys
pg_off, pg_on, pg_cpu, rd_off, rd_on, rd_cpu = ([float(x) for x in a.split()] for a in sys.argv[1:7])
paced_pg, pg_spans, redis_spans = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
def paired(runs, baseline):
    """The median of the per-round ratios, and its cell with the lowest and highest round."""
    ratios = [r / b for r, b in zip(runs, baseline)]
    return f"({min(ratios):.2f}-{max(ratios):.2f}) {st.median(ratios):.3f}"
rows = [
    ("pgbench -S throughput with/without", paired(pg_on, pg_off)),
    ("pgbench without sidecar (median tps)", f"{st.median(pg_off):.0f}"),
    ("sidecar CPU per statement (pgbench)", f"{st.median(pg_cpu):.2f} us"),
    ("redis-benchmark -P 16 throughput with/without", paired(rd_on, rd_off)),
    ("redis-benchmark without sidecar (median req/s)", f"{st.median(rd_off):.0f}"),
    ("sidecar CPU per command (redis-benchmark)", f"{st.median(rd_cpu):.2f} us"),
    ("paced pgbench -R 2000: spans / statements", f"{pg_spans} / {paced_pg}"),
    ("paced redis-cli INCR: spans / commands", f"{redis_spans} / 5000"),
]
print()
print("ratios: median over rounds, (lowest-highest round) before it")
for name, value in rows:
    print(f"{name:<48} {value:>22}")
lost = pg_spans < paced_pg or redis_spans < 5000
print("no span lost in the paced runs:", "NO" if lost else "yes")
sys.exit(1 if lost else 0)
PY
