#!/usr/bin/env bash
# Fuzzes every parser of captured bytes on nightly, each target for SECONDS (default 60): the
# HTTP/1.x parsers and the connection layer, the HTTP/2 frame reader, the HPACK decoder and TCP
# reassembly. The golden captures seed the corpora; a crash leaves its input under
# sidecar/fuzz/artifacts/.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# One build for all targets.
cargo +nightly fuzz build --sanitizer none

corpus=corpus/http1
mkdir -p "$corpus"
cp ../testdata/http1/*.req ../testdata/http1/*.resp "$corpus"/
cargo +nightly fuzz run --sanitizer none http1 "$corpus" -- -max_total_time="$seconds" -max_len=8192

# http2_frames reads four control bytes, then the stream: bit 0 of the first says the server
# sends it. Each capture is seeded whole and as 1 KiB cut from its start.
corpus=corpus/http2_frames
mkdir -p "$corpus"
for capture in ../testdata/http2/*.c2s ../testdata/http2/*.s2c; do
    case "$capture" in *.s2c) control='\001\020\000\000' ;; *) control='\000\020\000\000' ;; esac
    name=$(basename "$capture")
    { printf "$control"; cat "$capture"; } >"$corpus/$name"
    { printf "$control"; head -c 1024 "$capture"; } >"$corpus/$name.1k"
done
cargo +nightly fuzz run --sanitizer none http2_frames "$corpus" -- -max_total_time="$seconds" -max_len=65536

# hpack draws its blocks from the golden captures itself.
mkdir -p corpus/hpack
cargo +nightly fuzz run --sanitizer none hpack corpus/hpack -- -max_total_time="$seconds" -max_len=4096

mkdir -p corpus/reassembly
cargo +nightly fuzz run --sanitizer none reassembly corpus/reassembly -- -max_total_time="$seconds" -max_len=4096
