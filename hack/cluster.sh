#!/usr/bin/env bash
# The local cluster, from real components and no Docker: etcd, kube-apiserver (TLS, RBAC,
# service-account signing), kube-controller-manager, kube-scheduler, one real node
# (hack/cluster/node.sh: containerd + runc, CNI, kubelet, kube-proxy, CoreDNS, the images of
# `make images`), dynamic volumes (local-path-provisioner, default StorageClass `standard`), kwok
# simulating the nodes of hack/cluster/nodes.yaml (GPU nodes included), and
# SeaweedFS as the S3 store with generated credentials and a bucket. Needs root (the node's
# network, cgroups and mounts).
#
#   hack/cluster.sh up      start what is not running (idempotent); prints the env file's path
#   hack/cluster.sh load    import the archives of `make images` into the node again
#   hack/cluster.sh down    stop everything, clean the host and delete the cluster's state
#   hack/cluster.sh status  say what runs
#   hack/cluster.sh kueue   install Kueue (hack/versions.env) as its manifests do, on the running
#                           cluster (idempotent): the tests of queued TrainingJobs call it
#   hack/cluster.sh restart COMPONENT
#                           SIGKILL one component (kube-apiserver, seaweedfs, ...) and start it
#                           again with its state (etcd keeps the API's data, SeaweedFS its
#                           volumes): a crash, for `make chaos`
#   hack/cluster.sh pid COMPONENT
#                           print a running component's process id (`make chaos` freezes it)
#
# The env file exports KUBECONFIG, S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_REGION, S3_BUCKET and MINIAUTOML_NODE_IP. Ports and paths can be overridden with the
# variables below.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

STATE=${CLUSTER_STATE:-$MINIAUTOML_CACHE/cluster}
ETCD_PORT=${ETCD_PORT:-32379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-32380}
APISERVER_PORT=${APISERVER_PORT:-36443}
KWOK_PORT=${KWOK_PORT:-30247}
S3_PORT=${S3_PORT:-39000}
# SeaweedFS's own servers (master, volume, filer; gRPC on each port + 10000).
SEAWEED_MASTER_PORT=${SEAWEED_MASTER_PORT:-9333}
SEAWEED_VOLUME_PORT=${SEAWEED_VOLUME_PORT:-9340}
SEAWEED_FILER_PORT=${SEAWEED_FILER_PORT:-9888}
S3_BUCKET=${S3_BUCKET:-miniautoml}
NODES=${CLUSTER_NODES:-$HACK_DIR/cluster/nodes.yaml}
PKI=$STATE/pki
LOGS=$STATE/logs
RUN=$STATE/run
ENV_FILE=$STATE/env
# shellcheck source=hack/cluster/node.sh
. "$HACK_DIR/cluster/node.sh"

log() { printf '[cluster] %s\n' "$*" >&2; }
# running NAME: its process lives (a killed one left unreaped, a zombie, does not count).
running() {
  [ -f "$RUN/$1.pid" ] || return 1
  local state
  state=$(ps -o stat= -p "$(cat "$RUN/$1.pid")" 2>/dev/null) || return 1
  [ -n "$state" ] && [[ $state != Z* ]]
}

# start NAME COMMAND...: runs a component in the background, logging to $LOGS/NAME.log.
start() {
  local name=$1
  shift
  if running "$name"; then return 0; fi
  log "starting $name"
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# stop_component NAME: SIGTERM, then SIGKILL after 5 s; returns once the process is gone, so
# that a start right after it starts a new one (a restart of the API server once found the old
# one still exiting, started nothing, and failed "did not come up").
stop_component() {
  local name=$1
  running "$name" || return 0
  log "stopping $name"
  kill -TERM "$(cat "$RUN/$name.pid")" 2>/dev/null || true
  for _ in $(seq 1 20); do running "$name" || return 0; sleep 0.25; done
  kill -KILL "$(cat "$RUN/$name.pid")" 2>/dev/null || true
  for _ in $(seq 1 100); do running "$name" || return 0; sleep 0.1; done
  log "$name (pid $(cat "$RUN/$name.pid")) did not exit after SIGKILL"
  return 1
}

# wait_for NAME COMMAND...: polls COMMAND until it succeeds (60 s), else shows NAME's log.
wait_for() {
  local name=$1
  shift
  for _ in $(seq 1 120); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! running "$name"; then break; fi
    sleep 0.5
  done
  log "$name did not come up; last lines of $LOGS/$name.log:"
  tail -n 20 "$LOGS/$name.log" >&2
  return 1
}

certificate() { # name CN O [SAN]
  local name=$1 cn=$2 org=$3 san=${4:-}
  [ -f "$PKI/$name.crt" ] && return 0
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  local subject="/CN=$cn"
  [ -n "$org" ] && subject="/O=$org/CN=$cn"
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n' >"$ext"
  if [ -n "$san" ]; then
    printf 'extendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san" >>"$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >>"$ext"
  fi
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
}

kubeconfig() { # name user-cert
  local file=$STATE/$1.kubeconfig cert=$2
  [ -f "$file" ] && return 0
  local k=("$TOOLS_BIN/kubectl" --kubeconfig="$file")
  "${k[@]}" config set-cluster local --server="https://$NODE_IP:$APISERVER_PORT" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  "${k[@]}" config set-credentials "$1" --client-certificate="$PKI/$cert.crt" \
    --client-key="$PKI/$cert.key" --embed-certs=true >/dev/null
  "${k[@]}" config set-context local --cluster=local --user="$1" >/dev/null
  "${k[@]}" config use-context local >/dev/null
}

pki() {
  mkdir -p "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=miniautoml-local-ca" -days 3650 \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  certificate apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:$NODE_IP,IP:198.19.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  certificate admin admin system:masters
  certificate controller-manager system:kube-controller-manager ""
  certificate scheduler system:kube-scheduler ""
  certificate kwok kwok system:masters
  certificate apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  if [ ! -f "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kwok kwok
}

s3_credentials() {
  if [ ! -f "$STATE/s3.credentials" ]; then
    printf '%s %s\n' "$(openssl rand -hex 10)" "$(openssl rand -hex 20)" >"$STATE/s3.credentials"
    chmod 600 "$STATE/s3.credentials"
  fi
  read -r S3_ACCESS_KEY S3_SECRET_KEY <"$STATE/s3.credentials"
  # SeaweedFS's S3 identities: one, with every action on every bucket.
  jq -n --arg access "$S3_ACCESS_KEY" --arg secret "$S3_SECRET_KEY" \
    '{identities: [{name: "miniautoml", credentials: [{accessKey: $access, secretKey: $secret}],
      actions: ["Admin", "Read", "List", "Tagging", "Write"]}]}' >"$STATE/s3.json"
  chmod 600 "$STATE/s3.json"
  # Its STS (AssumeRole on the S3 port, for credentialScope: sts) signs session tokens with a
  # key of its own, made once.
  if [ ! -f "$STATE/s3-iam.json" ]; then
    jq -n --arg key "$(openssl rand -base64 32)" '{sts: {signingKey: $key}}' >"$STATE/s3-iam.json"
    chmod 600 "$STATE/s3-iam.json"
  fi
}

# Dynamic volumes, as kind provides them: rancher's local-path-provisioner (the one kind ships)
# with the default StorageClass `standard`; each PersistentVolume is a directory under
# $STATE/node/local-path on the real node, made and removed by a helper pod (busybox).
LOCAL_PATH_NAMESPACE=local-path-storage
storage_up() {
  certificate local-path-provisioner local-path-provisioner ""
  kubeconfig local-path-provisioner local-path-provisioner
  mkdir -p "$NODE_DIR/local-path"
  "${kubectl[@]}" apply --server-side -f - >/dev/null <<EOT
apiVersion: v1
kind: Namespace
metadata: {name: $LOCAL_PATH_NAMESPACE}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner-service-account, namespace: $LOCAL_PATH_NAMESPACE}
automountServiceAccountToken: false
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: local-path-provisioner}
rules:
  - apiGroups: [""]
    resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [persistentvolumes]
    verbs: [get, list, watch, create, patch, update, delete]
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch]
  - apiGroups: [storage.k8s.io]
    resources: [storageclasses]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: local-path-provisioner}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: local-path-provisioner}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: local-path-provisioner}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-path-provisioner, namespace: $LOCAL_PATH_NAMESPACE}
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: local-path-provisioner, namespace: $LOCAL_PATH_NAMESPACE}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-path-provisioner}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: local-path-provisioner}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: $LOCAL_PATH_NAMESPACE}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$NODE_DIR/local-path"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata: {name: helper-pod}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsUser: 0, runAsGroup: 0}
      tolerations: [{key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}]
      containers:
        - name: helper-pod
          image: docker.io/miniautoml/test-tools:1
          imagePullPolicy: IfNotPresent
EOT
  start local-path-provisioner "$TOOLS_BIN/local-path-provisioner" start \
    --kubeconfig "$STATE/local-path-provisioner.kubeconfig" --namespace "$LOCAL_PATH_NAMESPACE" \
    --configmap-name local-path-config --service-account-name local-path-provisioner-service-account \
    --helper-image docker.io/miniautoml/test-tools:1 --provisioner-name rancher.io/local-path
}

# SeaweedFS (master, volume, filer and S3 gateway in one process). Only the S3 gateway listens
# on the node IP, so host processes and pods reach the same endpoint; the master, volume server
# and filer (which answer without credentials) and the Iceberg and Lance endpoints listen on
# loopback or not at all, so no pod reaches them. Its IAM API (on the S3 port) takes the
# operator's writes — the scoped keys of runs and predictors — and no user may make keys for
# itself; its STS gives temporary keys narrowed by a session policy (AssumeRole, as an external
# S3 with credentialScope: sts would). The bucket is created through the S3 API. Each
# bucket is a collection that takes 7 volumes when first written: 100 volumes (sparse files, at
# most 1 GiB each) leave room for a dozen buckets (the auto limit, free disk / 1 GiB, can be 12).
# Volumes turn read-only below 512 MiB free (the default, 1 % of a large shared disk, is GiBs).
s3_up() {
  mkdir -p "$STATE/s3"
  start seaweedfs "$TOOLS_BIN/weed" server -dir "$STATE/s3" -ip 127.0.0.1 -ip.bind 127.0.0.1 \
    -master.port "$SEAWEED_MASTER_PORT" -volume.port "$SEAWEED_VOLUME_PORT" \
    -filer -filer.port "$SEAWEED_FILER_PORT" -s3 -s3.ip.bind "$NODE_IP" -s3.port "$S3_PORT" \
    -s3.port.iceberg 0 -s3.port.lance 0 -s3.config "$STATE/s3.json" \
    -s3.iam.readOnly=false -s3.iam.selfServiceRequiresGrant=true -s3.iam.config "$STATE/s3-iam.json" \
    -master.volumeSizeLimitMB 1024 -volume.max 100 -master.raftHashicorp=false -volume.minFreeSpace 512MiB
  local endpoint=http://$NODE_IP:$S3_PORT
  wait_for seaweedfs curl -fsS -o /dev/null --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$endpoint/"
  local code
  for _ in $(seq 1 60); do
    code=$(curl -sS -o "$LOGS/s3-create-bucket.out" -w '%{http_code}' -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" \
      --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$endpoint/$S3_BUCKET" || true)
    case "$code" in 200 | 409) return 0 ;; esac
    sleep 0.5
  done
  log "creating bucket $S3_BUCKET failed (HTTP $code): $(cat "$LOGS/s3-create-bucket.out")"
  return 1
}

# The aggregation layer's certificates (as kubeadm makes them): a CA of its own and the client
# certificate the API server presents when it proxies a request to an extension API server
# (Kueue's visibility API), which trusts the user it names only from that CA.
front_proxy_pki() {
  [ -f "$PKI/front-proxy-client.crt" ] && return 0
  openssl genrsa -out "$PKI/front-proxy-ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/front-proxy-ca.key" -subj "/CN=miniautoml-front-proxy-ca" -days 3650 \
    -out "$PKI/front-proxy-ca.crt" 2>/dev/null
  openssl genrsa -out "$PKI/front-proxy-client.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/front-proxy-client.key" -subj "/CN=front-proxy-client" \
    -out "$PKI/front-proxy-client.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' \
    >"$PKI/front-proxy-client.ext"
  openssl x509 -req -in "$PKI/front-proxy-client.csr" -CA "$PKI/front-proxy-ca.crt" \
    -CAkey "$PKI/front-proxy-ca.key" -CAcreateserial -days 3650 -extfile "$PKI/front-proxy-client.ext" \
    -out "$PKI/front-proxy-client.crt" 2>/dev/null
}

# kube-apiserver on the node IP, with etcd's data.
apiserver_up() {
  front_proxy_pki
  # The audit log records every request of a workload's ServiceAccount (the operator's, the
  # e2e suite's callers'), not the cluster's own components: the e2e suite derives the
  # permissions the operator used from it (least privilege, checked).
  cat >"$STATE/audit-policy.yaml" <<EOT
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
EOT
  start kube-apiserver "$TOOLS_BIN/kube-apiserver" \
    --audit-policy-file "$STATE/audit-policy.yaml" --audit-log-path "$LOGS/audit.log" \
    --audit-log-maxsize 200 --audit-log-maxbackup 3 \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
    --kubelet-preferred-address-types InternalIP --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --cert-dir "$PKI/generated" \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key"
  wait_for kube-apiserver "${kubectl[@]}" get --raw /readyz
}

# SeaweedFS marks every volume read-only when its disk runs low, and each S3 write then fails
# with "InternalError: We encountered an internal error" (a CI run on a nearly full disk failed
# 30 tests so). The cluster refuses to start below this many GiB free, saying why.
MIN_FREE_GIB=${CLUSTER_MIN_FREE_GIB:-4}

enough_disk() {
  local free mount
  free=$(df -Pk "$STATE" | awk 'NR == 2 {print int($4 / 1048576)}')
  mount=$(df -P "$STATE" | awk 'NR == 2 {print $6}')
  if [ "$free" -lt "$MIN_FREE_GIB" ]; then
    log "only $free GiB free on $mount (the cluster needs $MIN_FREE_GIB: its object store refuses writes on a full disk);"
    log "free space first, e.g. hack/prune-target.sh (stale build outputs in $MINIAUTOML_CACHE/cargo-target)"
    return 1
  fi
}

# kueue_visibility: waits until the API server proxies Kueue's visibility API (queue
# positions): Kueue's own server answers for a LocalQueue that does not exist. The aggregator
# finds an APIService available with a growing back-off (90 s after a fresh install here). On
# an API server started before the APIService existed, it then stayed unrouted for good ("the
# server could not find the requested resource", though Available; re-creating the APIServices
# did not help, a restart of the API server did, every time): after 90 s the API server is
# restarted once (etcd keeps everything; clients retry).
kueue_visibility() {
  local waited answer
  local probe=/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/default/localqueues/miniautoml-probe/pendingworkloads
  for waited in $(seq 0 5 300); do
    answer=$("${kubectl[@]}" get --raw "$probe" 2>&1 || true)
    if [[ $answer == *'"miniautoml-probe" not found'* ]]; then
      log "kueue $KUEUE_VERSION ready (visibility API after $waited s)"
      return 0
    fi
    if [ "$waited" = 90 ]; then
      log "visibility API not routed after 90 s ($answer): restarting the API server"
      stop_component kube-apiserver
      apiserver_up
    fi
    sleep 5
  done
  log "Kueue's visibility API never answered: $answer"
  return 1
}

# Kueue as its release installs it (config/default of its module: CRDs, RBAC, the manager's
# Deployment with internal certificate management, its webhooks and the visibility API), with
# the image `make images` builds, on the real node, and this cluster's settings: only batch/v1
# Jobs are managed (the integrations whose CRDs are not installed stay off) and waitForPodsReady
# evicts a workload whose pods are not all ready within a minute, so a gang never holds quota half
# started (and the tests see it happen). Then two ResourceFlavors: `real-node` (this node's CPU and memory) and
# `simulated-gpu` (kwok's GPU nodes, labelled nvidia.com/gpu.present). ClusterQueues and
# LocalQueues are the tests' own.
KUEUE_NAMESPACE=kueue-system
kueue_up() {
  local dir=$STATE/kueue config
  mkdir -p "$dir"
  config=$(cat <<'EOT'
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
health: {healthProbeBindAddress: ":8081"}
metrics: {bindAddress: ":8443"}
webhook: {port: 9443}
leaderElection: {leaderElect: false}
controller:
  groupKindConcurrency: {Job.batch: 5, Pod: 5, Workload.kueue.x-k8s.io: 10, LocalQueue.kueue.x-k8s.io: 5, ClusterQueue.kueue.x-k8s.io: 5, ResourceFlavor.kueue.x-k8s.io: 1}
clientConnection: {qps: 300, burst: 500}
waitForPodsReady:
  timeout: 1m
  blockAdmission: false
  requeuingStrategy: {timestamp: Eviction, backoffBaseSeconds: 5, backoffMaxSeconds: 60}
integrations:
  frameworks: ["batch/job"]
EOT
)
  # One replica, replaced (never two at once: maxSurge 0), so no leader election: on these two cores a slow lease renewal under load
  # (seen in make bench-kueue) made the manager exit and its webhooks refuse every Job for
  # the seconds it took to come back. The manager reads its configuration at start: the pod
  # template carries its hash, so a changed configuration rolls the manager.
  cat >"$dir/kustomization.yaml" <<EOT
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [upstream]
images:
  - name: us-central1-docker.pkg.dev/k8s-staging-images/kueue/kueue
    newName: docker.io/miniautoml/kueue
    newTag: $KUEUE_VERSION
patches:
  - target: {kind: Deployment, name: kueue-controller-manager}
    patch: |-
      - {op: replace, path: /spec/template/spec/containers/0/imagePullPolicy, value: IfNotPresent}
      - {op: replace, path: /spec/template/spec/containers/0/resources/requests, value: {cpu: 10m, memory: 128Mi}}
      - {op: add, path: /spec/template/spec/nodeSelector, value: {kubernetes.io/hostname: $NODE_NAME}}
      - {op: add, path: /spec/strategy, value: {type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}}
      - {op: add, path: /spec/template/metadata/annotations/miniautoml.io~1config-sha256, value: "$(printf '%s' "$config" | sha256sum | cut -c1-16)"}
  - target: {kind: ConfigMap, name: kueue-manager-config}
    patch: |-
      - op: replace
        path: /data/controller_manager_config.yaml
        value: |
$(printf '%s\n' "$config" | sed 's/^/          /')
EOT
  ln -sfn "$KUEUE_CONFIG/default" "$dir/upstream"
  # kustomize reads the upstream folder through the link (its files stay inside the overlay).
  "$TOOLS_BIN/kubectl" kustomize --load-restrictor LoadRestrictionsNone "$dir" >"$dir/manifests.yaml"
  "${kubectl[@]}" apply --server-side --force-conflicts -f "$dir/manifests.yaml" >/dev/null
  "${kubectl[@]}" -n "$KUEUE_NAMESPACE" rollout status deployment/kueue-controller-manager --timeout=180s >&2
  # Its webhooks answer only once the manager has written its certificates and the endpoints
  # are ready (a known start-up race): retry until an object they check is taken.
  local attempt
  for attempt in $(seq 1 60); do
    if "${kubectl[@]}" apply --server-side -f - >"$LOGS/kueue-flavors.out" 2>&1 <<EOT; then
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: {name: real-node}
spec:
  nodeLabels: {kubernetes.io/hostname: $NODE_NAME}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: {name: simulated-gpu}
spec:
  nodeLabels: {nvidia.com/gpu.present: "true"}
  tolerations:
    - {key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
EOT
      kueue_visibility
      return
    fi
    sleep 2
  done
  log "Kueue's webhooks never took the ResourceFlavors: $(cat "$LOGS/kueue-flavors.out")"
  "${kubectl[@]}" -n "$KUEUE_NAMESPACE" logs deployment/kueue-controller-manager --tail 30 >&2 || true
  return 1
}

up() {
  require_tools
  mkdir -p "$STATE" "$LOGS" "$RUN"
  chmod 700 "$STATE"
  enough_disk
  pki
  s3_credentials
  local admin=$STATE/admin.kubeconfig
  kubectl=("$TOOLS_BIN/kubectl" --kubeconfig="$admin" --request-timeout=10s)

  node_packages
  node_network
  start etcd "$TOOLS_BIN/etcd" --name local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "" --log-level warn
  wait_for etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  apiserver_up

  # Client rate limits above the defaults (20 and 50 requests/s), so hundreds of Jobs and pods
  # (make bench-training) are not throttled by the cluster's own controllers.
  start kube-controller-manager "$TOOLS_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true --controllers '*' \
    --cluster-cidr "$POD_CIDR" --service-cluster-ip-range "$SERVICE_CIDR" \
    --kube-api-qps 200 --kube-api-burst 400 --concurrent-job-syncs 20
  start kube-scheduler "$TOOLS_BIN/kube-scheduler" \
    --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
    --kube-api-qps 200 --kube-api-burst 400
  # kwok's stages, with the project's (hack/cluster/kwok-stages) replacing same-named ones.
  local stages="" stage
  for stage in "$KWOK_STAGES"/*.yaml; do
    [ -f "$REPO_ROOT/hack/cluster/kwok-stages/${stage##*/}" ] || stages+="$stage,"
  done
  stages+=$(printf '%s,' "$REPO_ROOT"/hack/cluster/kwok-stages/*.yaml)
  start kwok "$TOOLS_BIN/kwok" --kubeconfig "$STATE/kwok.kubeconfig" --config "${stages%,}" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$KWOK_PORT" --node-ip 127.0.0.1 --node-lease-duration-seconds 40 \
    --cidr 198.18.64.0/18

  s3_up

  "${kubectl[@]}" apply --server-side -f "$NODES" >/dev/null
  # Its own nodes only: simulated nodes a benchmark left (type=kwok too) are no reason to wait.
  wait_for kwok "${kubectl[@]}" wait --for=condition=Ready --timeout=2s -f "$NODES"

  node_up
  storage_up
  wait_for kube-controller-manager "${kubectl[@]}" get serviceaccount default -n default
  for component in kube-scheduler kwok kubelet kube-proxy kube-router coredns seaweedfs local-path-provisioner; do
    running "$component" || { log "$component exited:"; tail -n 20 "$LOGS/$component.log" >&2; return 1; }
  done

  cat >"$ENV_FILE" <<EOT
# Written by hack/cluster.sh up; source it to use the local cluster.
export KUBECONFIG=$admin
export S3_ENDPOINT=http://$NODE_IP:$S3_PORT
export AWS_ENDPOINT_URL=http://$NODE_IP:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_REGION=us-east-1
export S3_BUCKET=$S3_BUCKET
export MINIAUTOML_TOOLS_BIN=$TOOLS_BIN
export MINIAUTOML_POD_LOGS=$NODE_DIR/pods
export MINIAUTOML_NODE_IP=$NODE_IP
export MINIAUTOML_NODE_NAME=$NODE_NAME
export MINIAUTOML_AUDIT_LOG=$LOGS/audit.log
export CONTAINERD_ADDRESS=$CONTAINERD_SOCK
export CONTAINER_RUNTIME_ENDPOINT=unix://$CONTAINERD_SOCK
export PATH=$TOOLS_BIN:\$PATH
EOT
  chmod 600 "$ENV_FILE"
  log "ready: $("${kubectl[@]}" get nodes --no-headers | wc -l) nodes, S3 bucket $S3_BUCKET on $NODE_IP:$S3_PORT"
  echo "$ENV_FILE"
}

down() {
  stop_component local-path-provisioner || true
  node_down
  for component in seaweedfs kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_component "$component" || true
  done
  rm -rf "$STATE"
  log "stopped; state removed"
}

status() {
  for component in etcd kube-apiserver kube-controller-manager kube-scheduler kwok seaweedfs containerd kubelet kube-proxy kube-router coredns local-path-provisioner; do
    if running "$component"; then echo "$component: running"; else echo "$component: stopped"; fi
  done
  [ -f "$ENV_FILE" ] && echo "env: $ENV_FILE"
  return 0
}

case "${1:-}" in
  up) up ;;
  load)
    require_tools
    kubectl=("$TOOLS_BIN/kubectl" --kubeconfig="$STATE/admin.kubeconfig" --request-timeout=10s)
    running containerd || { log "the cluster is not running"; exit 1; }
    node_load_images
    ;;
  down) down ;;
  status) status ;;
  kueue)
    require_tools kubectl kueue
    kubectl=("$TOOLS_BIN/kubectl" --kubeconfig="$STATE/admin.kubeconfig" --request-timeout=10s)
    running kube-apiserver || { log "the cluster is not running: hack/cluster.sh up first"; exit 1; }
    kueue_up
    ;;
  restart)
    component=${2:?usage: $0 restart COMPONENT}
    running "$component" || { log "$component is not running"; exit 1; }
    log "killing $component (SIGKILL)"
    kill -KILL "$(cat "$RUN/$component.pid")"
    while running "$component"; do sleep 0.1; done
    require_tools
    kubectl=("$TOOLS_BIN/kubectl" --kubeconfig="$STATE/admin.kubeconfig" --request-timeout=10s)
    case "$component" in
      kube-apiserver) apiserver_up ;;
      seaweedfs) s3_credentials && s3_up ;;
      *) up >/dev/null ;;
    esac
    ;;
  pid)
    component=${2:?usage: $0 pid COMPONENT}
    running "$component" || { log "$component is not running"; exit 1; }
    cat "$RUN/$component.pid"
    ;;
  *) echo "usage: $0 up|load|down|status|kueue|restart COMPONENT|pid COMPONENT" >&2; exit 2 ;;
esac
