#!/usr/bin/env bash
# `make bench`, what a sidecar costs the pods beside it, in both capture modes. N = 1, 4, 8, 16
# realistic pods (lib.sh: new_pod, in_container), each an nginx that its sidecar instruments (one
# worker, idle) and that sidecar in a container of its own, beside an uninstrumented nginx under
# wrk: its throughput with the N sidecars over its throughput without them (N = 0), per mode; at
# each level the three runs come one after another in an order that rotates. Then an instrumented pod's own cost: its nginx under wrk
# without its sidecar, with it in tracepoint mode, with it in pod-scoped mode (rotated per
# round), with the sidecar's CPU per request and peak RSS (VmHWM) in each mode.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ROUNDS=${ROUNDS:-3}
# The own-pod comparison is a few percent between modes on a VM whose runs move by ±7%: it takes
# more rounds than the neighbour table.
OWN_ROUNDS=${OWN_ROUNDS:-$((3 * ROUNDS))}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-50}
LEVELS=(${LEVELS:-0 1 4 8 16})
max_pods=${LEVELS[-1]}

# shellcheck source=lib.sh
. "$here/lib.sh"
needs_release_sidecar

# The neighbour: nginx in a namespace of its own, nobody instruments it.
read -r port < <(free_ports 1)
new_namespace
start_nginx "$ns_init" neighbour "$port"
url="http://127.0.0.1:$port/status/200"

# The instrumented pods, their nginx running throughout; their sidecars come and go.
pod_inits=(); pod_cgroups=(); pod_ports=()
for i in $(seq "$max_pods"); do
  new_pod "p$i"
  read -r app_port < <(free_ports 1)
  in_container "$pod_init" "$pod_cgroup" app "$work/p$i-app" nginx -c "$(nginx_conf "p$i" "$app_port")"
  wait_port "$app_port"
  pod_inits+=("$pod_init"); pod_cgroups+=("$pod_cgroup"); pod_ports+=("$app_port")
done

# start_pod_sidecar I MODE: the sidecar of pod I (0-based) in MODE, selecting its nginx; appends
# to $sidecar_pids.
sidecar_pids=()
start_pod_sidecar() {
  local i=$1 mode=$2 log="$work/sidecar-$1-$((sidecar_seq + 1))"
  start_container_sidecar "${pod_inits[$i]}" "${pod_cgroups[$i]}" "$log" \
    OTEL_EBPF_OPEN_PORT="${pod_ports[$i]}" OTEL_EBPF_CAPTURE_MODE="$mode"
  grep -q "instrumenting process" "$log.err" || { cat "$log.err" >&2; echo "pod $i: nothing instrumented" >&2; exit 1; }
  sidecar_pids+=("$sidecar_pid")
}
stop_pod_sidecars() {
  local pid
  for pid in "${sidecar_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${sidecar_pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
  done
  sidecar_pids=()
}

# The neighbour's rps by variant and level: lines "variant round level rps" in
# $work/neighbour.txt. At each level, without instrumented pods' sidecars ("base"), with N in
# tracepoint mode and with N in pod-scoped mode, in an order that rotates, so each ratio pairs
# runs a few seconds apart.
: > "$work/neighbour.txt"
measure_level() {
  local variant=$1 round=$2 level=$3 i
  if [ "$variant" != base ]; then
    for (( i = 0; i < level; i++ )); do start_pod_sidecar "$i" "$variant"; done
  fi
  read -r rps _ _ < <(run_wrk)
  stop_pod_sidecars
  echo "$variant $round $level $rps" >> "$work/neighbour.txt"
  printf '%-6s %-12s %4s pods %10s req/s\n' "$round" "$variant" "$level" "$rps"
}
variants=(base tracepoints pod)
turn=0
for round in $(seq "$ROUNDS"); do
  for level in "${LEVELS[@]}"; do
    [ "$level" -eq 0 ] && continue
    turn=$((turn + 1))
    for i in 0 1 2; do measure_level "${variants[$(( (i + turn) % 3 ))]}" "$round" "$level"; done
  done
done

# The instrumented pod's own cost: pod 0's nginx under wrk.
url="http://127.0.0.1:${pod_ports[0]}/status/200"
: > "$work/own.txt"
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
own_run() {
  local variant=$1 round=$2 before after total pid cpu=0 peak=0
  if [ "$variant" != off ]; then
    start_pod_sidecar 0 "$variant"
    pid=${sidecar_pids[0]}
    before=$(cpu_ticks "$pid")
  fi
  read -r rps _ total < <(run_wrk)
  if [ "$variant" != off ]; then
    after=$(cpu_ticks "$pid")
    cpu=$(python3 -c "print(($after-$before)*1e6/$(getconf CLK_TCK)/$total)")
    peak=$(hwm "$pid")
    stop_pod_sidecars
  fi
  echo "$variant $round $rps $cpu $peak" >> "$work/own.txt"
  printf '%-6s %-12s own pod %10s req/s\n' "$round" "$variant" "$rps"
}
variants=(off tracepoints pod)
for round in $(seq "$OWN_ROUNDS"); do
  for i in 0 1 2; do own_run "${variants[$(( (i + round) % 3 ))]}" "$round"; done
done

python3 - "$work/neighbour.txt" "$work/own.txt" "$max_pods" <<'PY'
import collections, math, statistics as st, sys
neighbour = collections.defaultdict(dict)  # (mode, level) -> round -> rps
for line in open(sys.argv[1]):
    mode, rnd, level, rps = line.split()
    neighbour[(mode, int(level))][rnd] = float(rps)
own = collections.defaultdict(dict)  # variant -> round -> (rps, cpu, peak)
for line in open(sys.argv[2]):
    variant, rnd, rps, cpu, peak = line.split()
    own[variant][rnd] = (float(rps), float(cpu), int(peak))
max_pods = int(sys.argv[3])
levels = sorted({level for _, level in neighbour})

def cell(ratios):
    return f"({min(ratios):.2f}-{max(ratios):.2f}) {st.median(ratios):.3f}"

print()
print("neighbour nginx throughput with N instrumented pods' sidecars / without, paired within each round")
print("(median over rounds, lowest-highest round before it)")
print(f"{'pods':<6}" + "".join(f"{m:>26}" for m in ("tracepoints", "pod")))
ratio_at = {}
for level in levels:
    if level == 0:
        continue
    row = f"{level:<6}"
    for mode in ("tracepoints", "pod"):
        base, runs = neighbour[("base", level)], neighbour[(mode, level)]
        ratios = [runs[r] / base[r] for r in runs]
        ratio_at[(mode, level)] = st.median(ratios)
        row += f"{cell(ratios):>26}"
    print(row)

off = own["off"]
def own_ratios(variant):
    return [own[variant][r][0] / off[r][0] for r in own[variant]]
print()
print("the instrumented pod's own nginx, with its sidecar / without")
rows = []
for variant in ("tracepoints", "pod"):
    ratios = own_ratios(variant)
    cpu = st.median(v[1] for v in own[variant].values())
    peak = max(v[2] for v in own[variant].values())
    rows.append((variant, cell(ratios), f"{cpu:.2f} us", f"{peak / 1024:.1f} MiB"))
print(f"{'mode':<12} {'with/without':>22} {'CPU/request':>12} {'peak RSS':>10}")
for r in rows:
    print(f"{r[0]:<12} {r[1]:>22} {r[2]:>12} {r[3]:>10}")
# The modes compared round by round (runs seconds apart), with a distribution-free 95% interval
# of the median from order statistics.
rounds = sorted(set(own["pod"]) & set(own["tracepoints"]) & set(off))
diffs = sorted((own["pod"][r][0] - own["tracepoints"][r][0]) / off[r][0] for r in rounds)
n, low = len(diffs), 0
while low + 1 < n / 2 and sum(math.comb(n, i) for i in range(low + 2)) / 2**n <= 0.025:
    low += 1
paired = st.median(diffs)
ahead = sum(d >= 0 for d in diffs)
print()
print(f"pod-scoped - tracepoints own ratio, paired by round: median {paired:+.3f}, "
      f"95% interval {diffs[low]:+.3f} to {diffs[n - 1 - low]:+.3f}, pod-scoped ahead in {ahead} of {n} rounds")
pod_peak = max(v[2] for v in own["pod"].values())
print()
checks = [
    (f"pod-scoped, neighbour at N={max_pods}", f"{ratio_at[('pod', max_pods)]:.3f}", ">= 0.98", ratio_at[("pod", max_pods)] >= 0.98),
    ("pod-scoped own ratio - tracepoints'", f"{paired:+.3f}", ">= 0", paired >= 0),
    # "No worse" as a test can decide it on a noisy machine: worse would put the whole interval
    # below 0.
    ("  its 95% interval's upper end", f"{diffs[n - 1 - low]:+.3f}", ">= 0", diffs[n - 1 - low] >= 0),
    ("pod-scoped peak RSS (VmHWM)", f"{pod_peak / 1024:.1f} MiB", "< 16 MiB", pod_peak < 16 * 1024),
]
for name, value, target, ok in checks:
    print(f"{name:<40} {value:>10} {target:>10}  {'yes' if ok else 'NO'}")
PY
