#!/usr/bin/env bash
# Fuzzes the HTTP/1.x parsers and the connection tracker, then TCP reassembly, each for SECONDS
# (default 60) on nightly.
# The golden captures seed the corpus; a crash leaves its input under sidecar/fuzz/artifacts/.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
corpus=corpus/http1
mkdir -p "$corpus"
cp ../testdata/http1/*.req ../testdata/http1/*.resp "$corpus"/
cargo +nightly fuzz run --sanitizer none http1 "$corpus" -- -max_total_time="$seconds" -max_len=8192
mkdir -p corpus/reassembly
cargo +nightly fuzz run --sanitizer none reassembly corpus/reassembly -- -max_total_time="$seconds" -max_len=4096
