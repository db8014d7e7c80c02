#!/usr/bin/env bash
# A throwaway CA and a server certificate it signed, stored as a kubernetes.io/tls Secret (tls.crt,
# tls.key, ca.crt: the form cert-manager writes) for the chart's tls.secretName. For a lab or a
# test; a cluster with cert-manager sets tls.certManager.issuerRef instead.
#
#   hack/tls-secret.sh NAMESPACE SECRET NAME...   (NAME: a DNS name or an IP address)
#
# The files stay in $TLS_DIR (default: a new temporary directory, printed); clients trust
# $TLS_DIR/ca.crt (grpcurl -cacert, curl --cacert).
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
KUBECTL=$(command -v kubectl || echo "$TOOLS_BIN/kubectl")

if [[ $# -lt 3 ]]; then
  echo "usage: $0 NAMESPACE SECRET NAME... (a DNS name or IP address the certificate names)" >&2
  exit 2
fi
namespace=$1 secret=$2
shift 2
dir=${TLS_DIR:-$(mktemp -d)}
mkdir -p "$dir"

sans=()
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
    sans+=("IP:$name")
  elif [[ $name =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
    sans+=("DNS:$name")
  else
    echo "$0: $name is neither a DNS name nor an IP address" >&2
    exit 2
  fi
done
san=$(IFS=,; echo "${sans[*]}")

# openssl, its progress dots kept out of sight unless it fails.
ssl() {
  if ! openssl "$@" 2>"$dir/openssl.log"; then
    cat "$dir/openssl.log" >&2
    echo "$0: openssl $1 failed (names: $san)" >&2
    exit 1
  fi
}
curve=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
ssl req -x509 "${curve[@]}" -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 30 -subj "/CN=miniautoml-lab-ca"
ssl req -new "${curve[@]}" -keyout "$dir/tls.key" -out "$dir/tls.csr" -subj "/CN=$1" \
  -addext "subjectAltName=$san" -addext "extendedKeyUsage=serverAuth"
ssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -copy_extensions copy -days 30 -out "$dir/tls.crt"
rm -f "$dir/tls.csr" "$dir/ca.srl" "$dir/openssl.log"

"$KUBECTL" create secret generic "$secret" -n "$namespace" --type=kubernetes.io/tls \
  --from-file=tls.crt="$dir/tls.crt" --from-file=tls.key="$dir/tls.key" \
  --from-file=ca.crt="$dir/ca.crt" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
echo "Secret $namespace/$secret: a certificate for $san; clients trust $dir/ca.crt"
