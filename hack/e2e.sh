#!/usr/bin/env bash
# make e2e / make kind-e2e: the e2e suite (e2e/tests/e2e.rs) through `helm install`, on a cluster
# prepared by a per-cluster step that only puts the images of `make images` on its nodes.
#
#   hack/e2e.sh local   the local cluster (real kubelet + containerd node), started on demand;
#                       the archives imported into the node's containerd
#   hack/e2e.sh kind    a kind cluster from kind-config.yaml (kind from hack/versions.env; needs
#                       Docker); the same archives loaded with `kind load image-archive`
#   hack/e2e.sh cluster KUBECONFIG names a cluster whose nodes already have the images
#
# Then the same suite, the same chart and the same values everywhere. Needs kubectl, helm,
# grpcurl (make tools), curl, openssl, and chromium with chromium-driver (installed here from apt).
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
TARGET=${1:-local}
KIND_CLUSTER=${KIND_CLUSTER:-miniautoml}
log() { printf '[e2e] %s\n' "$*" >&2; }

"$HACK_DIR/tools.sh" cluster >/dev/null
export PATH=$TOOLS_BIN:$PATH
# The console is tested in a real browser: Debian's chromium, driven through chromedriver.
ensure_debian_packages chromium chromium-driver

case "$TARGET" in
  local)
    # `make test` has just built them.
    [ -n "${E2E_IMAGES_BUILT:-}" ] || "$HACK_DIR/images.sh" >/dev/null
    env_file=$("$HACK_DIR/cluster.sh" up)
    "$HACK_DIR/cluster.sh" load
    # shellcheck disable=SC1090
    . "$env_file"
    ;;
  kind)
    if ! docker info >/dev/null 2>&1; then
      log "kind needs a running Docker engine: \`docker info\` failed on this machine"
      docker info 2>&1 | tail -n 3 >&2 || true
      exit 1
    fi
    "$HACK_DIR/images.sh" >/dev/null
    if ! kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
      kind create cluster --name "$KIND_CLUSTER" --config "$REPO_ROOT/kind-config.yaml" --wait 5m
    fi
    for archive in "${IMAGES_DIR:-$REPO_ROOT/target/images}"/*.oci.tar; do
      log "kind load image-archive ${archive##*/}"
      kind load image-archive --name "$KIND_CLUSTER" "$archive"
    done
    KUBECONFIG=$(mktemp)
    export KUBECONFIG
    kind get kubeconfig --name "$KIND_CLUSTER" >"$KUBECONFIG"
    ;;
  cluster)
    [ -n "${KUBECONFIG:-}" ] || { log "set KUBECONFIG to the cluster to test"; exit 2; }
    ;;
  *)
    echo "usage: $0 local|kind|cluster" >&2
    exit 2
    ;;
esac

log "the suite against $(kubectl config current-context 2>/dev/null || echo "$KUBECONFIG")"
cd "$REPO_ROOT"
# `kubectl miniautoml`, found on PATH by kubectl as a user's plugin would be.
cargo build --locked -q -p miniautoml-kubectl-plugin
PLUGIN_DIR=$(mktemp -d)
trap 'rm -rf "$PLUGIN_DIR"' EXIT
cp "${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/kubectl-miniautoml" "$PLUGIN_DIR/"
export PATH=$PLUGIN_DIR:$PATH
cargo test --locked -p miniautoml-e2e -- --nocapture --test-threads=1
