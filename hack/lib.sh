# Shared by the hack/ scripts: where the pinned tools live.
# shellcheck shell=bash
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$HACK_DIR")
# shellcheck disable=SC1091
. "$HACK_DIR/versions.env"
MINIAUTOML_CACHE=${MINIAUTOML_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/miniautoml}
TOOLS_ID=$(grep -v '^#' "$HACK_DIR/versions.env" | sha256sum | cut -c1-12)
TOOLS_DIR=$MINIAUTOML_CACHE/tools/$TOOLS_ID
TOOLS_BIN=$TOOLS_DIR/bin
KWOK_STAGES=$TOOLS_DIR/kwok-stages
# What the local cluster and the tests need; `make tools` also builds the rest.
CLUSTER_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd kwok helm grpcurl
  crictl coredns umoci weed local-path-provisioner kind kind-config-check kube-router kueue)
# Kueue's own manifests (its module's config/ folder), for `hack/cluster.sh kueue`.
KUEUE_CONFIG=$TOOLS_DIR/kueue-config
OTHER_TOOLS=(kwokctl)

# The tag of the SeaweedFS image (`make images`, the chart's objectStore.image.tag): the pinned
# pseudo-version's commit date and hash, e.g. v0.0.0-20261109003541-7506e5f91cd6 -> 20261109-7506e5f91cd6.
seaweedfs_image_tag() {
  local stamp=${SEAWEEDFS_VERSION#v0.0.0-}
  echo "${stamp:0:8}-${stamp##*-}"
}

# grpc ARGS...: grpcurl as the caller whose bearer token is in GRPC_TOKEN (e.g.
# `export GRPC_TOKEN=$(kubectl create token NAME -n NAMESPACE --audience miniautoml)`), when one is set: the operator
# checks it unless it runs with --grpc-auth=none. The token stays out of the command line (ps).
# Over TLS trusting GRPC_CACERT (the operator's ca.crt, as the chart serves by default) when it is
# set, with GRPC_SERVERNAME as the name to check when the address does not carry it; else in
# plain text (a local lab's operator, or a chart installed with tls.enabled=false).
grpc() {
  local transport=(-plaintext)
  if [ -n "${GRPC_CACERT:-}" ]; then
    transport=(-cacert "$GRPC_CACERT")
    [ -z "${GRPC_SERVERNAME:-}" ] || transport+=(-servername "$GRPC_SERVERNAME")
  fi
  if [ -n "${GRPC_TOKEN:-}" ]; then
    GRPC_TOKEN=$GRPC_TOKEN grpcurl "${transport[@]}" -expand-headers -H 'authorization: Bearer ${GRPC_TOKEN}' "$@"
  else
    grpcurl "${transport[@]}" "$@"
  fi
}

# require_tools [NAME...]: fails with "run make tools" unless the named tools (default: the
# cluster's) are built.
require_tools() {
  local missing=() wanted=("$@")
  [ ${#wanted[@]} -gt 0 ] || wanted=("${CLUSTER_TOOLS[@]}")
  for tool in "${wanted[@]}"; do
    [ -x "$TOOLS_BIN/$tool" ] || missing+=("$tool")
  done
  [ -f "$KWOK_STAGES/pod-delete.yaml" ] || missing+=(kwok-stages)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing tools in $TOOLS_BIN: ${missing[*]}; run make tools" >&2
    return 1
  fi
}

# s3_get KEY FILE: downloads s3://$S3_BUCKET/KEY to FILE (as s3_put, unsigned payload).
s3_get() {
  local key=$1 file=$2
  curl -fsS --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    -o "$file" "$S3_ENDPOINT/$S3_BUCKET/$key"
}

# s3_put FILE KEY: uploads FILE to s3://$S3_BUCKET/KEY on $S3_ENDPOINT with SigV4 (curl), using
# the env file's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_REGION.
s3_put() {
  local file=$1 key=$2
  curl -fsS --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: $(sha256sum "$file" | cut -d' ' -f1)" \
    -T "$file" "$S3_ENDPOINT/$S3_BUCKET/$key"
}

# ensure_debian_packages PACKAGE...: installs the packages apt does not list as installed (the
# node's runtime, the image build's compilers); the project's scripts call it, so a new machine
# needs nothing beforehand but apt's sources.
ensure_debian_packages() {
  local missing=() package status
  for package in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  printf '[packages] installing %s (apt)\n' "${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
}
