#!/usr/bin/env bash
# make tools: builds the pinned Kubernetes tools (hack/versions.env) from the Go module proxy and
# crates.io into ~/.cache/miniautoml/tools/<id>/bin. Tools already built are skipped, so a second
# run takes seconds. Prints the bin directory last.
#
#   hack/tools.sh           every tool
#   hack/tools.sh cluster   only what the local cluster and the tests need (no kwokctl)
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

BUILD=$MINIAUTOML_CACHE/build
mkdir -p "$TOOLS_BIN" "$BUILD"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
log() { printf '[tools] %s\n' "$*" >&2; }
have() { [ -x "$TOOLS_BIN/$1" ]; }

# A module whose go.mod has replace directives cannot be `go install`ed at a version; build it
# from a wrapper module that requires it and pins each replaced module to the same release.
# $1: wrapper dir, $2: module, $3: version, $4: replace lines, then the packages to build.
build_wrapped() {
  local dir=$1 module=$2 version=$3 replaces=$4 ldflags=$5
  shift 5
  mkdir -p "$dir"
  {
    printf 'module miniautoml.local/tools\n\ngo 1.24.0\n\nrequire %s %s\n\nreplace (\n%s\n)\n' \
      "$module" "$version" "$replaces"
    printf '\n'
  } >"$dir/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for package in "$@"; do printf '\t_ "%s"\n' "$package"; done
    printf ')\n'
  } >"$dir/tools.go"
  (cd "$dir" && go mod tidy && go build -trimpath -ldflags "$ldflags" -o "$TOOLS_BIN/" "$@")
}

# The replace lines of a module's own go.mod whose target is a local path, rewritten to the
# module itself at $3 (e.g. k8s.io/api => ./staging/src/k8s.io/api becomes => k8s.io/api v0.34.4).
replaces_of() {
  local module=$1 version=$2 target_version=$3 gomod
  gomod=$(go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  awk -v v="$target_version" '$2 == "=>" && $3 ~ /^\.\.?\// { printf "\t%s => %s %s\n", $1, $1, v }' "$gomod"
}

# The one-line replace directives of a module's go.mod that point at another module (not a local
# path), copied as they are (umoci and SeaweedFS each swap one dependency for a fork).
non_local_replaces_of() {
  local gomod
  gomod=$(go mod download -json "$1@$2" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  awk '$1 == "replace" && $3 == "=>" && $4 !~ /^\.\.?\// { printf "\t%s => %s %s\n", $2, $4, $5 }' "$gomod"
}

KUBERNETES_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
missing_kubernetes=false
for binary in "${KUBERNETES_BINARIES[@]}"; do have "$binary" || missing_kubernetes=true; done
if $missing_kubernetes; then
  log "Kubernetes $KUBERNETES_VERSION: ${KUBERNETES_BINARIES[*]}"
  minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  staging=v0.${KUBERNETES_VERSION#v1.}
  version_pkg=k8s.io/component-base/version
  ldflags="-s -w -X $version_pkg.gitVersion=$KUBERNETES_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor"
  ldflags+=" -X $version_pkg.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
  build_wrapped "$BUILD/kubernetes-$KUBERNETES_VERSION" k8s.io/kubernetes "$KUBERNETES_VERSION" \
    "$(replaces_of k8s.io/kubernetes "$KUBERNETES_VERSION" "$staging")" "$ldflags" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
fi

if ! have etcd; then
  log "etcd $ETCD_VERSION"
  build_wrapped "$BUILD/etcd-$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" \
    "$(replaces_of go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" | grep -v FORBIDDEN)" \
    "-s -w" go.etcd.io/etcd/server/v3
  # go names the binary of a /v3 package after the element before the version suffix.
  for built in server v3; do
    if [ -f "$TOOLS_BIN/$built" ]; then mv "$TOOLS_BIN/$built" "$TOOLS_BIN/etcd"; fi
  done
fi

SCOPE=${1:-all}
case "$SCOPE" in all | cluster) ;; *) echo "usage: $0 [all|cluster]" >&2; exit 2 ;; esac

go_install() { # name package [ldflags]: ldflags set the version a plain go install leaves empty
  local name=$1 package=$2 ldflags="-s -w ${3:-}"
  have "$name" && return 0
  log "$package"
  GOBIN=$TOOLS_BIN go install -trimpath -ldflags "$ldflags" "$package"
}
go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
# kwok simulates nothing without stages; use the ones its release ships (nodes become Ready and
# renew leases; pods on its nodes run, complete and are deleted at once).
if [ ! -f "$KWOK_STAGES/pod-delete.yaml" ]; then
  stages=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  [ -d "$stages" ] || go mod download "sigs.k8s.io/kwok@$KWOK_VERSION"
  mkdir -p "$KWOK_STAGES"
  cp "$stages/node/fast/node-initialize.yaml" "$stages/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
    "$stages/pod/fast/pod-ready.yaml" "$stages/pod/fast/pod-complete.yaml" "$stages/pod/fast/pod-delete.yaml" \
    "$KWOK_STAGES/"
  chmod 644 "$KWOK_STAGES"/*.yaml
fi
go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
# The tests drive the original gRPC workflow through grpcurl, as users do.
go_install grpcurl "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" "-X main.version=$GRPCURL_VERSION"
# The real node: crictl inspects its containerd; CoreDNS is the cluster DNS.
go_install crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION" "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION"
go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION"
# umoci writes the image archives (make images); its go.mod replaces one module.
if ! have umoci; then
  log "umoci $UMOCI_VERSION"
  build_wrapped "$BUILD/umoci-$UMOCI_VERSION" github.com/opencontainers/umoci "$UMOCI_VERSION" \
    "$(non_local_replaces_of github.com/opencontainers/umoci "$UMOCI_VERSION")" \
    "-s -w -X main.version=${UMOCI_VERSION#v}" github.com/opencontainers/umoci/cmd/umoci
fi
# SeaweedFS is the local cluster's S3 store; its go.mod replaces one module too.
if ! have weed; then
  log "SeaweedFS $SEAWEEDFS_VERSION"
  build_wrapped "$BUILD/seaweedfs-$SEAWEEDFS_VERSION" github.com/seaweedfs/seaweedfs "$SEAWEEDFS_VERSION" \
    "$(non_local_replaces_of github.com/seaweedfs/seaweedfs "$SEAWEEDFS_VERSION")" \
    "-s -w" github.com/seaweedfs/seaweedfs/weed
fi
# The node's NetworkPolicy engine, so that tests prove the chart's and the operator's policies.
go_install kube-router "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" \
  "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
# helm install's PVCs (the bundled object store) need a dynamic provisioner, as on kind.
go_install local-path-provisioner "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION"
# kind itself, and kind's own config loader and validation run over kind-config.yaml: a small
# main added to a copy of kind's module (its loader is an internal package).
go_install kind "sigs.k8s.io/kind@$KIND_VERSION"
if ! have kind-config-check; then
  log "kind-config-check (kind $KIND_VERSION's config loader)"
  kind_src=$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION
  [ -d "$kind_src" ] || go mod download "sigs.k8s.io/kind@$KIND_VERSION"
  rm -rf "$BUILD/kind-$KIND_VERSION"
  cp -r "$kind_src" "$BUILD/kind-$KIND_VERSION"
  chmod -R u+w "$BUILD/kind-$KIND_VERSION"
  mkdir -p "$BUILD/kind-$KIND_VERSION/pkg/internal/miniautomlcheck"
  cp "$HACK_DIR/kind-config-check.go" "$BUILD/kind-$KIND_VERSION/pkg/internal/miniautomlcheck/main.go"
  (cd "$BUILD/kind-$KIND_VERSION" && go build -trimpath -ldflags "-s -w" \
    -o "$TOOLS_BIN/kind-config-check" ./pkg/internal/miniautomlcheck)
fi
# Kueue's manager (static, as its release image is) and its kustomize manifests.
if ! have kueue || [ ! -d "$KUEUE_CONFIG" ]; then
  log "Kueue $KUEUE_VERSION"
  CGO_ENABLED=0 GOBIN=$TOOLS_BIN go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  rm -rf "$KUEUE_CONFIG"
  cp -r "$(go env GOMODCACHE)/sigs.k8s.io/kueue@$KUEUE_VERSION/config" "$KUEUE_CONFIG"
  chmod -R u+w "$KUEUE_CONFIG"
fi
if [ "$SCOPE" = all ]; then
  go_install kwokctl "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
fi


if [ "$SCOPE" = all ]; then require_tools "${CLUSTER_TOOLS[@]}" "${OTHER_TOOLS[@]}"; else require_tools; fi
"$TOOLS_BIN/kube-apiserver" --version >&2
etcd_version=$("$TOOLS_BIN/etcd" --version) # not piped into head: SIGPIPE would fail pipefail
echo "${etcd_version%%$'\n'*}" >&2
echo "$TOOLS_BIN"
