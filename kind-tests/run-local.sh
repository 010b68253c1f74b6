#!/usr/bin/env bash
# Everything of manifests/, certs/, Dockerfile and kind-tests/ that runs without a cluster:
# strict schema validation of every manifest and kustomize build, the certificate checks, the
# webhook binary run with the manifests' configuration (built with cargo), the demo app,
# hadolint and shellcheck, the helpers' unit tests, and the end-to-end suite (which
# skips, saying why, when no kind cluster is up). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"
exec python3 -m pytest "$@"
