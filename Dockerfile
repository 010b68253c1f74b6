# syntax=docker/dockerfile:1.7
#
# One build stage compiles both binaries; each image is its own target:
#   docker build --target webhook -t obi-webhook:TAG .
#   docker build --target sidecar -t obi-sidecar:TAG .
# `make image` does both with the tag from `git describe`.
#
# The sidecar's build script compiles the eBPF crate (sidecar-bpf) with the nightly toolchain,
# rust-src (build-std=core for the bpf target) and bpf-linker; bpf-linker is built against that
# nightly rustc's own LLVM so it always reads the bitcode the compiler emits (as .ci/setup.sh does).

# glibc of the build stage (Debian 12) matches the distroless runtime images (Debian 12).
FROM rust:1.95.0-slim-bookworm AS build

# Pinned nightly for the eBPF object and bpf-linker; the release matching its LLVM (22).
ARG NIGHTLY=nightly-2026-05-20
ARG BPF_LINKER_VERSION=0.13.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# aya-build runs `rustup run nightly cargo build ...` for the eBPF crate: `nightly` has to be
# the pinned toolchain, and rustup refuses "nightly" as a linked toolchain name, so the pinned
# toolchain's directory is also published under that name.
RUN rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src \
 && host=$(rustc -vV | sed -n 's/^host: //p') \
 && ln -s "$NIGHTLY-$host" "$RUSTUP_HOME/toolchains/nightly-$host" \
 && rustc +nightly --version

# libLLVM's file name carries LLVM's and rustc's versions: derive both from the nightly sysroot.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    sysroot_lib="$(rustc +nightly --print sysroot)/lib" \
 && llvm_so=$(compgen -G "$sysroot_lib/libLLVM-*.so" | head -n1) \
 && test -n "$llvm_so" \
 && llvm_lib=$(basename "$llvm_so" .so) && llvm_lib=${llvm_lib#lib} \
 && llvm_major=$(sed -E 's/^LLVM-([0-9]+).*/\1/' <<<"$llvm_lib") \
 && RUSTFLAGS="-L $sysroot_lib -l dylib=$llvm_lib -C link-arg=-Wl,-rpath,$sysroot_lib" \
    cargo +nightly install --locked "bpf-linker@$BPF_LINKER_VERSION" --no-default-features \
      --features "llvm-$llvm_major,no-llvm-linking" \
 && bpf-linker --version

WORKDIR /src
COPY . .
# The target dir is a cache mount, so the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p obi-webhook -p obi-sidecar \
 && install -D -m 0755 target/release/obi-webhook /out/obi-webhook \
 && install -D -m 0755 target/release/obi-sidecar /out/obi-sidecar

# The sidecar: root, because loading eBPF programs needs CAP_BPF and CAP_PERFMON (plus reading
# other processes' /proc entries); the injected container gets those capabilities only, never
# privileged: the image itself grants nothing. Same base as the webhook (distroless publishes
# no release tags; pin by digest where the registry is reachable).
FROM gcr.io/distroless/cc-debian12:nonroot AS sidecar
ARG VERSION=dev
LABEL org.opencontainers.image.title="obi-sidecar" \
      org.opencontainers.image.description="Pod-scoped eBPF instrumentation sidecar (HTTP/1.x to OpenTelemetry)" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/obi-sidecar /usr/local/bin/obi-sidecar
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["/usr/local/bin/obi-sidecar"]

# The webhook: no shell, no package manager, non-root (65532, distroless' "nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot AS webhook
ARG VERSION=dev
LABEL org.opencontainers.image.title="obi-webhook" \
      org.opencontainers.image.description="Mutating admission webhook injecting the OBI eBPF sidecar" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/obi-webhook /usr/local/bin/obi-webhook
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/obi-webhook"]
