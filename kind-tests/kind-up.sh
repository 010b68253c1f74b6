#!/usr/bin/env bash
# `make kind-up`: a kind cluster running the webhook (images built by `make image`, certs from
# `make certs`) and the demo, ready to use. Idempotent: re-running reuses the cluster and
# re-applies. The Makefile checks the tools, builds the images and the certs before calling this.
set -euo pipefail

: "${VERSION:?VERSION (the image tag) must be set}"
KIND_CLUSTER=${KIND_CLUSTER:-obi}
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
PYTHON=${PYTHON:-python3}

cd "$(dirname "$0")/.."
context="kind-$KIND_CLUSTER"
kubectl() { command "$KUBECTL" --context "$context" "$@"; }
obi_kind() { PYTHONPATH=kind-tests "$PYTHON" -m obi_kind "$@"; }
step() { printf '==> %s\n' "$*"; }

if "$KIND" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  step "kind cluster '$KIND_CLUSTER': present"
else
  step "kind cluster '$KIND_CLUSTER': creating"
  "$KIND" create cluster --name "$KIND_CLUSTER" --config kind-tests/kind-config.yaml --wait 180s
fi

step "loading obi-webhook:$VERSION and obi-sidecar:$VERSION into the nodes"
"$KIND" load docker-image --name "$KIND_CLUSTER" "obi-webhook:$VERSION" "obi-sidecar:$VERSION"

step "rendering manifests/kind (demo overlay pinned to $VERSION)"
obi_kind render-kind-overlay --version "$VERSION" --out manifests/kind --cluster-name "$KIND_CLUSTER"

# The webhook first, and ready, so the demo's Deployments are admitted through it: with
# failurePolicy Ignore they would otherwise be created without the sidecar.
# A -dirty tag is reused across rebuilds of an uncommitted tree: the spec does not change when
# the loaded image does, so running pods are restarted to pick it up.
rebuilt_in_place=false
[[ $VERSION == *-dirty ]] && rebuilt_in_place=true

step "applying the webhook"
kubectl apply -k manifests/kind -l app.kubernetes.io/part-of=obi
if $rebuilt_in_place; then kubectl -n obi-system rollout restart deployment/obi-webhook; fi
kubectl -n obi-system rollout status deployment/obi-webhook --timeout=180s

step "applying the demo"
kubectl apply -k manifests/kind
for deployment in $(kubectl -n obi-demo get deployments -o name); do
  if $rebuilt_in_place; then kubectl -n obi-demo rollout restart "$deployment"; fi
  kubectl -n obi-demo rollout status "$deployment" --timeout=300s
done

# The API server may reach a fresh webhook a moment after its pods are Ready: a Deployment
# admitted in that window is restarted once, which sends it through the webhook again.
missing=$(obi_kind missing-sidecar --context "$context" --namespace obi-demo)
if [ -n "$missing" ]; then
  for name in $missing; do
    step "deployment/$name was admitted without the sidecar: restarting it"
    kubectl -n obi-demo rollout restart "deployment/$name"
    kubectl -n obi-demo rollout status "deployment/$name" --timeout=300s
  done
  missing=$(obi_kind missing-sidecar --context "$context" --namespace obi-demo)
  if [ -n "$missing" ]; then
    printf 'kind-up: still no sidecar in: %s (see: kubectl --context %s -n obi-system logs deploy/obi-webhook)\n' \
      "$missing" "$context" >&2
    exit 1
  fi
fi

step "ready. Spans arrive at the demo collector:"
printf '    kubectl --context %s -n obi-demo logs -f deploy/otel-collector\n' "$context"
printf '    make kind-test    # end-to-end tests\n'
printf '    make kind-down    # delete the cluster\n'
