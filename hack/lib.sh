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
CLUSTER_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok s3s-fs helm grpcurl)
OTHER_TOOLS=(kwokctl)

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
