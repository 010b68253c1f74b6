# OBI sidecar: build, test and ship. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# Test threads: each root + BPF test runs its own sidecar, so two at once fit on 2 cores.
TEST_THREADS ?= 2
# Seconds of each fuzz target in `make test` (longer runs: webhook/scripts/fuzz.sh N).
FUZZ_SECONDS ?= 30

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
	$(CARGO) build --release --locked -p obi-sidecar
	OBI_SIDECAR_BIN=$(CURDIR)/target/release/obi-sidecar \
	  $(CARGO) test --locked --workspace -- --test-threads=$(TEST_THREADS)
	webhook/scripts/fuzz.sh $(FUZZ_SECONDS)
	sidecar/scripts/fuzz.sh $(FUZZ_SECONDS)
	kind-tests/run-local.sh

demo: build ## Sidecar tracing a sample service, then the webhook patching a Deployment
	sidecar/scripts/demo.sh
	webhook/scripts/demo.sh

bench: build ## Webhook and sidecar benchmarks (figures printed as tables)
	webhook/scripts/bench.sh
	sidecar/scripts/bench.sh
	sidecar/scripts/bench-db.sh
	sidecar/scripts/bench-pods.sh
	sidecar/scripts/bench-h2.sh

# --- Images, certificates and a kind cluster (Dockerfile, certs/, manifests/, kind-tests/) ---
# Image tag: the commit, marked -dirty with uncommitted changes, so a tag names what it holds.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Build timestamps from the last commit, so rebuilding one commit gives the same image.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
DOCKER ?= docker
KIND ?= kind
KUBECTL ?= kubectl
PYTHON ?= python3
KIND_CLUSTER ?= obi
# Where the webhook's Service lives (the certificate's DNS names); manifests/ use the defaults.
WEBHOOK_NAMESPACE ?= obi-system
WEBHOOK_SERVICE ?= obi-webhook
OBI_KIND = PYTHONPATH=kind-tests $(PYTHON) -m obi_kind

.PHONY: certs image kind-up kind-test kind-down

certs: ## Webhook CA + serving cert into certs/out and manifests/default/certs (re-run rotates)
	certs/gen.sh --namespace $(WEBHOOK_NAMESPACE) --service $(WEBHOOK_SERVICE) --kustomize manifests/default/certs

image: ## Docker images obi-webhook and obi-sidecar, tagged with `git describe` (VERSION=)
	@$(OBI_KIND) require docker=$(DOCKER)
	for target in webhook sidecar; do \
	  DOCKER_BUILDKIT=1 $(DOCKER) build --target $$target \
	    --build-arg VERSION=$(VERSION) --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	    -t obi-$$target:$(VERSION) . || exit 1; \
	done

kind-up: ## kind cluster with both images, fresh certs, the webhook and the demo, ready
	@$(OBI_KIND) require docker=$(DOCKER) kind=$(KIND) kubectl=$(KUBECTL)
	$(MAKE) image certs
	VERSION=$(VERSION) KIND_CLUSTER=$(KIND_CLUSTER) KIND=$(KIND) KUBECTL=$(KUBECTL) PYTHON=$(PYTHON) \
	  kind-tests/kind-up.sh

kind-test: ## End-to-end tests against the kind cluster of `make kind-up`
	@$(OBI_KIND) require docker=$(DOCKER) kind=$(KIND) kubectl=$(KUBECTL)
	cd kind-tests && KIND_CLUSTER=$(KIND_CLUSTER) $(PYTHON) -m pytest e2e

kind-down: ## Delete the kind cluster
	@$(OBI_KIND) require kind=$(KIND)
	$(KIND) delete cluster --name $(KIND_CLUSTER)
