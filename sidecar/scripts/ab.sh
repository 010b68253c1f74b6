#!/usr/bin/env bash
# A/B of two sidecar builds on bench.sh's workload: nginx in a PID namespace under wrk
# (keep-alive), runs without the sidecar, and with each build capturing and exporting over
# OTLP/HTTP to a collector stand-in, interleaved in an order that rotates from round to round.
# Prints, per build, the median of the per-round throughput and p99 ratios against the run
# without the sidecar, and the sidecar's CPU per request.
#
# Usage: sidecar/scripts/ab.sh BUILD_A BUILD_B   (as root; ROUNDS, DURATION, CONNECTIONS as for
# bench.sh). Keep the builds outside the repository, e.g. copy target/release/obi-sidecar to
# /tmp/obi-before before rebuilding.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
  echo "usage: $0 BUILD_A BUILD_B (two sidecar binaries)" >&2; exit 2
fi
[ "$(id -u)" -eq 0 ] || { echo "ab: run as root (eBPF needs it)" >&2; exit 1; }
builds=("$1" "$2")
ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-50}

# lib.sh needs $root.
root=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

read -r port collector_port < <(free_ports 2)
new_namespace; pod=$ns_init
start_nginx "$pod" nginx "$port"
url="http://127.0.0.1:$port/status/200"
new_namespace
start_nginx "$ns_init" collector "$collector_port"
collector="http://127.0.0.1:$collector_port"

# One line per run: round variant rps p99 cpu; the report reads them back.
results="$work/results"
: > "$results"
run_variant() { # variant
  local variant=$1 build
  case $variant in
    off) read -r rps p99 _ < <(run_wrk); cpu=0 ;;
    on_*|exp_*)
      build=${builds[${variant#*_}]}
      sidecar=$build
      if [ "${variant%_*}" = exp ]; then
        measure_sidecar OTEL_EXPORTER_OTLP_ENDPOINT="$collector"
      else
        measure_sidecar
      fi ;;
  esac
  echo "$round $variant $rps $p99 $cpu" >> "$results"
  printf '%-6s %-8s %10s %10s %8.2f\n' "$round" "$variant" "$rps" "$p99" "$cpu"
}
variants=(off on_0 on_1 exp_0 exp_1)
printf '%-6s %-8s %10s %10s %8s\n' round variant req/s p99_ms us/req
for round in $(seq "$ROUNDS"); do
  for i in "${!variants[@]}"; do
    run_variant "${variants[$(( (i + round - 1) % ${#variants[@]} ))]}"
  done
done

python3 - "$results" "${builds[0]}" "${builds[1]}" <<'PY'
import collections, statistics as st, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    rnd, variant, rps, p99, cpu = line.split()
    runs[int(rnd)][variant] = (float(rps), float(p99), float(cpu))
def median_ratio(variant, field):
    return st.median(r[variant][field] / r["off"][field] for r in runs.values())
def median(variant, field):
    return st.median(r[variant][field] for r in runs.values())
print()
print(f"{'build':<40} {'with/without':>12} {'p99 ratio':>10} {'us/req':>8} {'exporting':>10} {'us/req':>8}")
for i, build in enumerate(sys.argv[2:]):
    print(f"{build:<40} {median_ratio(f'on_{i}', 0):>12.3f} {median_ratio(f'on_{i}', 1):>10.3f} "
          f"{median(f'on_{i}', 2):>8.2f} {median_ratio(f'exp_{i}', 0):>10.3f} {median(f'exp_{i}', 2):>8.2f}")
# The builds' ratio to each other, paired per round: what the change did.
b_over_a = st.median(r["on_1"][0] / r["on_0"][0] for r in runs.values())
print(f"throughput B / A (median per round): {b_over_a:.3f}")
PY
