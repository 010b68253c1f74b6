# OBI sidecar: build, test and ship. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# Tests that load eBPF run one at a time: they share the kernel's tracepoints.
TEST_THREADS ?= 2

.PHONY: help setup build lint test demo bench

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Install what the build and tests need (idempotent)
	@.ci/setup.sh

build: setup ## Build both binaries (release, eBPF object embedded)
	$(CARGO) build --release --locked -p obi-webhook -p obi-sidecar

lint: setup ## rustfmt and clippy, host crates and the eBPF crate for its own target
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	cd sidecar-bpf && $(CARGO) +nightly clippy --locked -Z build-std=core --target bpfel-unknown-none --release --bins -- -D warnings

test: setup lint ## Lint, then every test (root + BPF tests included)
	$(CARGO) test --locked --workspace -- --test-threads=$(TEST_THREADS)

demo: build ## Sidecar tracing a sample service, then the webhook patching a Deployment
	sidecar/scripts/demo.sh
	webhook/scripts/demo.sh

bench: build ## Webhook and sidecar benchmarks (figures printed as tables)
	webhook/scripts/bench.sh
	sidecar/scripts/bench.sh
