#!/usr/bin/env bash
# Webhook demo: certificates, the release binary on loopback ports, a real AdmissionReview over
# TLS (curl, CA verified, HTTP/2), the decoded patch and the patched Deployment, then the same
# Deployment sent back as an UPDATE to show that an injected Deployment gets no second patch.
# Called by `make demo` after `cargo build --release`. Stops by itself; exits non-zero on failure.
set -euo pipefail

webhook=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$webhook/.." && pwd)
binary=${OBI_WEBHOOK_BINARY:-$root/target/release/obi-webhook}
sample=$webhook/testdata/admission-review.json
step() { printf '\n==> %s\n' "$*"; }
die() { printf 'webhook demo: FAILED: %s\n' "$*" >&2; exit 1; }
# shellcheck source=SCRIPTDIR/common.sh
. "$webhook/scripts/common.sh"
host=$webhook_host

[ -x "$binary" ] || die "$binary not found: run 'cargo build --release -p obi-webhook' (or make build) first"
for tool in curl openssl python3; do
  command -v "$tool" >/dev/null || die "$tool not found (make setup installs it)"
done
python3 -c 'import jsonpatch, yaml' 2>/dev/null || die "python3 modules jsonpatch and PyYAML missing (make setup)"

tmp=$(mktemp -d)
trap 'kill_webhook; rm -rf "$tmp"' EXIT

step "TLS certificates for $host"
make_certs "$tmp/tls"
openssl x509 -in "$tmp/tls/tls.crt" -noout -subject -ext subjectAltName | sed 's/^/  /'

step "starting $(basename "$binary") on loopback (TLS and health ports)"
start_webhook "$binary" "$tmp/tls" "$tmp/webhook.log" \
  OBI_WEBHOOK_OTLP_ENDPOINT=http://otel-collector.observability:4318 OBI_WEBHOOK_CLUSTER_NAME=demo
echo "ready: TLS on 127.0.0.1:$tls_port, health on 127.0.0.1:$health_port"

# POSTs an AdmissionReview file over TLS, verifying the server against the demo CA.
admit() {
  curl -sS --fail-with-body --max-time 10 --http2 \
    --cacert "$tmp/tls/ca.crt" --resolve "$host:$tls_port:127.0.0.1" \
    -H 'Content-Type: application/json' --data-binary "@$1" \
    -o "$2" -w '  HTTP/%{http_version} %{http_code}, %{size_download} bytes in %{time_total}s\n' \
    "https://$host:$tls_port/mutate"
}

step "AdmissionReview CREATE of Deployment shop/web ($(basename "$sample"))"
admit "$sample" "$tmp/response.json" || die "admission request failed"

# Decodes the answer: the patch (bytes, as a JSON array of numbers or base64) and the patched object.
python3 - "$sample" "$tmp/response.json" "$tmp" <<'PY' || die "the answer is not what the demo expects"
import base64, json, sys
import jsonpatch, yaml

review = json.load(open(sys.argv[1]))
answer = json.load(open(sys.argv[2]))
out = sys.argv[3]
response = answer["response"]
assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
assert response["uid"] == review["request"]["uid"], "uid mismatch"
assert response["allowed"] is True
raw = response.get("patch")
assert raw is not None and response.get("patchType") == "JSONPatch", "no JSONPatch in the answer"
patch = json.loads(bytes(raw) if isinstance(raw, list) else base64.b64decode(raw))
print(f"uid {response['uid']}: allowed, patchType JSONPatch, {len(patch)} operations, "
      f"warnings: {response.get('warnings') or 'none'}")

print("\n==> the patch (decoded)")
print(json.dumps(patch, indent=2))

patched = jsonpatch.apply_patch(review["request"]["object"], patch)
print("\n==> the patched Deployment")
print(yaml.safe_dump(patched, sort_keys=False, width=120), end="")

update = json.loads(json.dumps(review))
update["request"].update(uid="demo-update", operation="UPDATE", object=patched,
                         oldObject=patched)
json.dump(update, open(f"{out}/update.json", "w"))
PY

step "AdmissionReview UPDATE of the patched Deployment (re-apply): no second patch"
admit "$tmp/update.json" "$tmp/update-response.json" || die "update request failed"
python3 - "$tmp/update-response.json" <<'PY' || die "the UPDATE of an injected Deployment was patched again"
import json, sys
response = json.load(open(sys.argv[1]))["response"]
assert response["allowed"] is True and "patch" not in response, response
print(f"  uid {response['uid']}: allowed, no patch")
PY

step "metrics (http://127.0.0.1:$health_port/metrics)"
curl -fsS --max-time 5 "http://127.0.0.1:$health_port/metrics" \
  | grep -E '^obi_webhook_(admission_requests|injections|skips|errors|cert_reloads)_total' | sed 's/^/  /'

step "stopping the webhook (SIGTERM)"
stop_webhook "$tmp/webhook.log"
sed 's/^/  /' "$tmp/webhook.log"
echo
echo "webhook demo: OK"
