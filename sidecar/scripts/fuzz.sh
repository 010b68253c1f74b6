#!/usr/bin/env bash
# Fuzzes each target for SECONDS (default 30) on nightly, one after another: the HTTP/1.x
# parsers and connection tracker, the database parsers, the SQL tokenizer. The golden captures
# seed the HTTP/1 corpus; a crash leaves its input under sidecar/fuzz/artifacts/<target>/.
set -euo pipefail
seconds="${1:-30}"
targets=(http1 postgres mysql redis sql)
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
mkdir -p corpus/http1
cp ../testdata/http1/*.req ../testdata/http1/*.resp corpus/http1/
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "==> fuzzing $target for ${seconds}s"
    cargo +nightly fuzz run --sanitizer none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=8192
done
