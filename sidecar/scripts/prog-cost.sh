#!/usr/bin/env bash
# Where a capture mode's cost per request goes: nginx in a realistic pod (lib.sh: new_pod,
# in_container) under wrk, its sidecar started in each of MODES in turn, and per request after
# start-up: the sidecar's user and system CPU, its wakeups, and each BPF program's runs and time
# (the kernel's bpf_stats, `run_cnt` and `run_time_ns` in the fdinfo of the sidecar's program
# descriptors; switched on for the run, off after). PERF=1 also records the sidecar with
# `perf record -g` into $PERF_DIR/perf-<mode>.data; SIDECAR_ENV adds ENV=VALUE words to the
# sidecar's environment (e.g. OTEL_EBPF_TLS_CAPTURE=false). A diagnostic, not part of `make bench`: the
# figures of one run move with the machine; compare modes within a run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}
MODES=(${MODES:-tracepoints pod})
PERF_DIR=${PERF_DIR:-$PWD}

# shellcheck source=lib.sh
. "$here/lib.sh"
needs_release_sidecar

new_pod app
read -r port < <(free_ports 1)
in_container "$pod_init" "$pod_cgroup" app "$work/app" nginx -c "$(nginx_conf app "$port")"
wait_port "$port"
url="http://127.0.0.1:$port/status/200"

stats_before=$(cat /proc/sys/kernel/bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1
trap 'sysctl -qw kernel.bpf_stats_enabled="$stats_before"; cleanup' EXIT

# programs PID: "id runs ns" per BPF program the process holds.
programs() {
  python3 - "$1" <<'PY'
import glob, sys
found = {}
for path in glob.glob(f"/proc/{sys.argv[1]}/fdinfo/*"):
    try:
        fields = dict(l.split(":", 1) for l in open(path).read().splitlines() if ":" in l)
    except OSError:
        continue
    # Links name their program too (`prog_id`); only program descriptors carry its stats.
    if "prog_id" in fields and "run_time_ns" in fields:
        found[fields["prog_id"].strip()] = (fields.get("run_cnt", "0").strip(), fields.get("run_time_ns", "0").strip())
for prog, (runs, ns) in sorted(found.items()):
    print(prog, runs, ns)
PY
}
# snapshot PID FILE: CPU ticks (user, system), voluntary context switches, then the programs.
snapshot() {
  {
    awk '{print "cpu", $14, $15}' "/proc/$1/stat"
    awk '/^voluntary_ctxt_switches/ {print "wakeups", $2}' "/proc/$1/status"
    programs "$1"
  } > "$2"
}

for round in $(seq "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    start_container_sidecar "$pod_init" "$pod_cgroup" "$work/sidecar" \
      OTEL_EBPF_OPEN_PORT="$port" OTEL_EBPF_CAPTURE_MODE="$mode" ${SIDECAR_ENV:-}
    snapshot "$sidecar_pid" "$work/before"
    if [ -n "${PERF:-}" ]; then
      perf record -q -F 2000 -g -o "$PERF_DIR/perf-$mode.data" -p "$sidecar_pid" \
        -- sleep "${DURATION%s}" >/dev/null 2>&1 &
      perf_pid=$!
    fi
    read -r rps p99 total < <(run_wrk)
    [ -n "${PERF:-}" ] && wait "$perf_pid"
    snapshot "$sidecar_pid" "$work/after"
    kill -TERM "$sidecar_pid"
    while kill -0 "$sidecar_pid" 2>/dev/null; do sleep 0.02; done
    python3 - "$work/before" "$work/after" "$total" "$(getconf CLK_TCK)" "$round" "$mode" "$rps" "$p99" <<'PY'
import sys
def load(path):
    out = {}
    for line in open(path):
        key, *values = line.split()
        out[key] = [int(v) for v in values]
    return out
before, after = load(sys.argv[1]), load(sys.argv[2])
total, tck, rnd, mode, rps, p99 = int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:]
user, system = ((after["cpu"][i] - before["cpu"][i]) * 1e6 / tck / total for i in (0, 1))
wakeups = (after["wakeups"][0] - before["wakeups"][0]) * 1000 / total
print(f"{rnd} {mode}: {rps} req/s, p99 {p99} ms; sidecar per request: user {user:.2f} us, "
      f"system {system:.2f} us, {wakeups:.1f} wakeups per 1000")
bpf_ns = 0
for prog, values in after.items():
    if prog in ("cpu", "wakeups") or prog not in before:
        continue
    runs, ns = values[0] - before[prog][0], values[1] - before[prog][1]
    if runs:
        bpf_ns += ns
        print(f"    program {prog}: {runs / total:.2f} runs per request, {ns / runs:.0f} ns per run")
print(f"    BPF time per request: {bpf_ns / total:.0f} ns")
PY
  done
done
