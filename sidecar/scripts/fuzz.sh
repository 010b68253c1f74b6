#!/usr/bin/env bash
# Fuzzes every parser of captured bytes on nightly, one target after another, each for SECONDS
# (default 30): the HTTP/1.x parsers and the connection layer, the HTTP/2 frame reader and the
# HPACK decoder, TCP reassembly, the pod-scoped records, the PostgreSQL, MySQL and Redis parsers,
# the SQL tokenizer, and the ring buffer records (TLS ones among them) decoded into the
# connection layer.
# The golden captures seed the corpora; a crash leaves its input under
# sidecar/fuzz/artifacts/<target>/.
set -euo pipefail
seconds="${1:-30}"
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# One build for all targets.
cargo +nightly fuzz build --sanitizer none

mkdir -p corpus/http1
cp ../testdata/http1/*.req ../testdata/http1/*.resp corpus/http1/
# http2_frames reads four control bytes, then the stream: bit 0 of the first says the server
# sends it. Each capture is seeded whole and as 1 KiB cut from its start.
mkdir -p corpus/http2_frames
for capture in ../testdata/http2/*.c2s ../testdata/http2/*.s2c; do
    case "$capture" in *.s2c) control='\001\020\000\000' ;; *) control='\000\020\000\000' ;; esac
    name=$(basename "$capture")
    { printf '%b' "$control"; cat "$capture"; } >"corpus/http2_frames/$name"
    { printf '%b' "$control"; head -c 1024 "$capture"; } >"corpus/http2_frames/$name.1k"
done

# target:max_len (hpack draws its blocks from the golden captures itself).
for entry in http1:8192 http2_frames:65536 hpack:4096 reassembly:4096 pod_records:16384 \
    postgres:8192 mysql:8192 redis:8192 sql:8192 events:16384; do
    target=${entry%%:*}
    mkdir -p "corpus/$target"
    echo "==> fuzzing $target for ${seconds}s"
    cargo +nightly fuzz run --sanitizer none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="${entry##*:}"
done
