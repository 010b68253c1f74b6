#!/usr/bin/env bash
# Fuzzes the admission path (decode → decide → encode, plus the idempotence property) for
# SECONDS seconds (default 60) with cargo-fuzz on the nightly toolchain. Exits non-zero if the
# fuzzer finds a crash; the reproducer is left in webhook/fuzz/artifacts/.
#   webhook/scripts/fuzz.sh 30
set -euo pipefail

seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "usage: $0 SECONDS" >&2; exit 2; }
webhook=$(cd "$(dirname "$0")/.." && pwd)

rustup toolchain list | grep -q '^nightly' || { echo "fuzz: the nightly toolchain is missing" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

corpus=$webhook/fuzz/corpus/admission_review
python3 "$webhook/scripts/fuzz-seeds.py" "$webhook/testdata" "$corpus"

cd "$webhook"
# No sanitizer: the code under test is safe Rust, so ASan adds build time but finds nothing
# that a panic would not; debug assertions and overflow checks stay on.
echo "==> fuzzing admission_review for ${seconds}s"
cargo +nightly fuzz run --sanitizer none admission_review "$corpus" -- \
  -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -dict="$webhook/fuzz/admission_review.dict" -print_final_stats=1
