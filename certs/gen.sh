#!/usr/bin/env bash
# Generates a private CA and a TLS serving certificate for the webhook Service, with openssl.
#
#   certs/gen.sh [--out DIR] [--namespace NS] [--service SVC] [--days N] [--kustomize DIR]
#
# Writes ca.crt, ca.key, ca-bundle.crt, tls.crt and tls.key to --out (default: certs/out).
# With --kustomize DIR it also writes tls.crt, tls.key and ca.crt (the CA bundle) to DIR, where
# manifests/default picks them up: a secretGenerator builds the TLS Secret from them and a
# replacement copies ca.crt into the MutatingWebhookConfiguration's caBundle.
#
# Every run rotates: new CA, new key, new certificate. The bundle keeps the previous CA next to the
# new one so a webhook still serving the old certificate (the kubelet refreshes mounted Secrets
# with a delay) is trusted by the API server until it has reloaded the new one.
set -euo pipefail

script_dir=$(cd "$(dirname "$0")" && pwd)
out="$script_dir/out"
namespace=obi-system
service=obi-webhook
days=365
kustomize_dir=""

usage() {
  sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() { printf 'certs/gen.sh: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    --namespace) [ $# -ge 2 ] || usage; namespace=$2; shift 2 ;;
    --service) [ $# -ge 2 ] || usage; service=$2; shift 2 ;;
    --days) [ $# -ge 2 ] || usage; days=$2; shift 2 ;;
    --kustomize) [ $# -ge 2 ] || usage; kustomize_dir=$2; shift 2 ;;
    -h | --help) usage ;;
    *) printf 'certs/gen.sh: unknown argument: %s\n' "$1" >&2; usage ;;
  esac
done

# Names end up in DNS SANs: accept only what Kubernetes accepts for them (RFC 1123 labels).
dns_label='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
[[ $namespace =~ $dns_label ]] || die "--namespace '$namespace' is not a valid namespace name (RFC 1123 label)"
[[ $service =~ $dns_label ]] || die "--service '$service' is not a valid Service name (RFC 1123 label)"
[[ $days =~ ^[1-9][0-9]{0,4}$ ]] || die "--days '$days' must be a whole number of days from 1 to 99999"
command -v openssl >/dev/null || die "openssl not found: install it (Debian: apt-get install openssl)"

dns_short="$service.$namespace.svc"
dns_full="$dns_short.cluster.local"

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$out/.gen.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no

[dn]

[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
# ECDSA keys sign the handshake; they never encipher a key, so digitalSignature is the only use.
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:$dns_short, DNS:$dns_full
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF

# -quiet keeps openssl's progress dots out of the output; failures still print to stderr.
new_key() { openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

new_key "$work/ca.key"
openssl req -new -x509 -config "$work/openssl.cnf" -extensions ca_ext -key "$work/ca.key" \
  -subj "/CN=$service-ca.$namespace" -days "$days" -sha256 -out "$work/ca.crt"

new_key "$work/tls.key"
openssl req -new -config "$work/openssl.cnf" -key "$work/tls.key" -subj "/CN=$dns_short" \
  -out "$work/tls.csr"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 \
  -extfile "$work/openssl.cnf" -extensions server_ext -out "$work/tls.crt" 2>/dev/null

# Never hand out a pair that does not chain: check before anything is replaced.
openssl verify -CAfile "$work/ca.crt" -purpose sslserver "$work/tls.crt" >/dev/null \
  || die "the new serving certificate does not verify against the new CA"

cp "$work/ca.crt" "$work/ca-bundle.crt"
if [ -f "$out/ca.crt" ] && openssl x509 -in "$out/ca.crt" -noout -checkend 0 >/dev/null 2>&1; then
  cat "$out/ca.crt" >>"$work/ca-bundle.crt"
fi

chmod 600 "$work/ca.key" "$work/tls.key"
chmod 644 "$work/ca.crt" "$work/ca-bundle.crt" "$work/tls.crt"
# Each rename is atomic, and the key lands before the certificate a reloading reader pairs with it.
for f in ca.key ca.crt ca-bundle.crt tls.key tls.crt; do
  mv -f "$work/$f" "$out/$f"
done

if [ -n "$kustomize_dir" ]; then
  mkdir -p "$kustomize_dir"
  install -m 600 "$out/tls.key" "$kustomize_dir/tls.key"
  install -m 644 "$out/tls.crt" "$kustomize_dir/tls.crt"
  install -m 644 "$out/ca-bundle.crt" "$kustomize_dir/ca.crt"
fi

not_after=$(openssl x509 -in "$out/tls.crt" -noout -enddate | cut -d= -f2)
printf 'certs: CA and serving certificate for %s and %s in %s (valid until %s)\n' \
  "$dns_short" "$dns_full" "$out" "$not_after"
if [ -n "$kustomize_dir" ]; then
  printf 'certs: TLS Secret files and caBundle written to %s\n' "$kustomize_dir"
fi
