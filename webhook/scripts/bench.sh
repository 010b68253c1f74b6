#!/usr/bin/env bash
# Admission latency benchmark (`make bench`): the release binary behind TLS, driven by h2load
# (HTTP/2, TLS) with the sample AdmissionReview, first at a fixed rate, then at saturation.
# Prints p50/p99/max latency, errors (failed, errored, timed out or non-2xx answers), throughput
# and the webhook's RSS (from /proc) as a table.
# Targets: p99 < 2 ms at 500 req/s, zero errors, RSS < 20 MiB.
#
#   BENCH_RATE=500 BENCH_SECONDS=20 BENCH_SATURATION_SECONDS=10 webhook/scripts/bench.sh
set -euo pipefail

webhook=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$webhook/.." && pwd)
binary=${OBI_WEBHOOK_BINARY:-$root/target/release/obi-webhook}
sample=$webhook/testdata/admission-review.json
rate=${BENCH_RATE:-500}
seconds=${BENCH_SECONDS:-20}
saturation_seconds=${BENCH_SATURATION_SECONDS:-10}
# The fixed rate is spread over this many HTTP/2 connections (the API server also keeps several).
rate_clients=10

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'webhook bench: FAILED: %s\n' "$*" >&2; exit 1; }
# shellcheck source=SCRIPTDIR/common.sh
. "$webhook/scripts/common.sh"

[ -x "$binary" ] || die "$binary not found: run 'cargo build --release -p obi-webhook' (or make build) first"
for tool in h2load curl openssl python3; do
  command -v "$tool" >/dev/null || die "$tool not found (make setup installs it; h2load is in nghttp2-client)"
done
[ $((rate % rate_clients)) -eq 0 ] || die "BENCH_RATE must be a multiple of $rate_clients"

tmp=$(mktemp -d)
sampler=""
trap '[ -n "$sampler" ] && kill "$sampler" 2>/dev/null; kill_webhook; rm -rf "$tmp"' EXIT

step "certificates and webhook"
make_certs "$tmp/tls"
start_webhook "$binary" "$tmp/tls" "$tmp/webhook.log" OBI_WEBHOOK_OTLP_ENDPOINT=http://otel-collector:4318
echo "webhook pid $webhook_pid on 127.0.0.1:$tls_port; $(nproc) CPUs shared by the webhook and h2load"
url="https://127.0.0.1:$tls_port/mutate"

# Samples the webhook's resident set every 100 ms into rss.log (kB).
(
  while [ -r "/proc/$webhook_pid/status" ]; do
    awk '/^VmRSS:/ {print $2}' "/proc/$webhook_pid/status" 2>/dev/null || true
    sleep 0.1
  done
) >"$tmp/rss.log" &
sampler=$!

# run_phase NAME H2LOAD-ARGS...: one h2load run, its per-request log and the RSS samples it saw.
run_phase() {
  local name=$1
  shift
  local before
  before=$(wc -l <"$tmp/rss.log")
  h2load --header 'content-type: application/json' --data "$sample" \
    --log-file "$tmp/$name.requests" "$@" "$url" >"$tmp/$name.h2load" 2>&1 \
    || { cat "$tmp/$name.h2load" >&2; die "h2load failed ($name)"; }
  tail -n +"$((before + 1))" "$tmp/rss.log" >"$tmp/$name.rss"
  grep -E '^(finished in|requests:|status codes:)' "$tmp/$name.h2load" | sed 's/^/  /'
}

step "fixed rate: $rate req/s for ${seconds}s ($rate_clients connections, TLS, HTTP/2)"
run_phase rate --clients "$rate_clients" --threads 1 --rps $((rate / rate_clients)) \
  --duration "$seconds" --warm-up-time 2
step "saturation: ${saturation_seconds}s, 16 connections x 8 streams"
run_phase saturation --clients 16 --threads 1 --max-concurrent-streams 8 \
  --duration "$saturation_seconds" --warm-up-time 1

peak_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$webhook_pid/status")
curl -fsS --max-time 5 "http://127.0.0.1:$health_port/metrics" >"$tmp/metrics" || die "cannot read /metrics"
kill "$sampler" 2>/dev/null || true
sampler=""
stop_webhook "$tmp/webhook.log"

step "results"
python3 - "$tmp" "$rate" "$peak_kb" <<'PY'
import re, sys

tmp, rate, peak_kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def percentile(sorted_values, fraction):
    # Nearest rank.
    index = max(0, min(len(sorted_values) - 1, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]

rows, cut_off = [], 0
for name, label in (("rate", f"{rate} req/s"), ("saturation", "saturation")):
    latencies = []
    for line in open(f"{tmp}/{name}.requests"):
        fields = line.split()
        if len(fields) != 3:
            continue
        status, micros = int(fields[1]), int(fields[2])
        if status == 0:
            # No response when h2load stopped at the end of the duration: not a latency sample.
            cut_off += 1
            continue
        latencies.append(micros / 1000.0)
    latencies.sort()
    summary = open(f"{tmp}/{name}.h2load").read()
    counts = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", summary)
    statuses = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", summary)
    throughput = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", summary)
    errors = sum(map(int, counts.groups())) + sum(map(int, statuses.groups()))
    rss = [int(v) for v in open(f"{tmp}/{name}.rss").read().split()] or [0]
    rows.append((label, float(throughput.group(1)), len(latencies), errors,
                 percentile(latencies, 0.50), percentile(latencies, 0.99), latencies[-1],
                 max(rss) / 1024.0))

header = ("scenario", "req/s", "requests", "errors", "p50 ms", "p99 ms", "max ms", "RSS MiB")
print("| " + " | ".join(header) + " |")
print("|" + "|".join("---" for _ in header) + "|")
for label, rps, n, errors, p50, p99, mx, rss in rows:
    print(f"| {label} | {rps:.0f} | {n} | {errors} | {p50:.3f} | {p99:.3f} | {mx:.3f} | {rss:.1f} |")
# VmHWM is the kernel's high-water mark; the samples can catch a peak it has not synced yet.
peak = max([peak_kb / 1024.0] + [row[7] for row in rows])
print(f"\npeak RSS over the whole run: {peak:.1f} MiB")
if cut_off:
    print(f"{cut_off} request(s) still in flight when h2load stopped (no latency, not errors)")

# The webhook's own view: decode, decide and encode, without TLS, HTTP/2 or scheduling.
buckets = [(float(m.group(1)), int(m.group(2))) for m in re.finditer(
    r'^obi_webhook_admission_duration_seconds_bucket\{le="([^"+]+)"\} (\d+)$', open(f"{tmp}/metrics").read(), re.M)]
count = int(re.search(r"^obi_webhook_admission_duration_seconds_count (\d+)$", open(f"{tmp}/metrics").read(), re.M).group(1))
def bound(fraction):
    return next((le * 1000 for le, c in buckets if c >= fraction * count), float("inf"))
print(f"decision time inside the webhook (histogram, both runs): p50 <= {bound(0.5):.2f} ms, "
      f"p99 <= {bound(0.99):.2f} ms, p99.9 <= {bound(0.999):.2f} ms")

label, rps, n, errors, p50, p99, mx, rss = rows[0]
checks = [
    (f"p99 at {rate} req/s < 2 ms", p99 < 2.0, f"{p99:.3f} ms"),
    ("zero errors (both runs)", all(r[3] == 0 for r in rows), f"{sum(r[3] for r in rows)} errors"),
    ("RSS < 20 MiB", peak < 20.0, f"{peak:.1f} MiB peak"),
]
print("\ntargets:")
for what, met, value in checks:
    print(f"  [{'met' if met else 'MISSED'}] {what}: {value}")
PY
