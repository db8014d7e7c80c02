# The local cluster's real node, sourced by hack/cluster.sh: a Linux bridge holding the node IP,
# containerd + runc (Debian packages) with CNI bridge/host-local/loopback/portmap, kubelet and
# kube-proxy (KUBERNETES_VERSION), CoreDNS, and the images of `make images` imported into the
# node's containerd. Everything it starts keeps its config, state and sockets under
# $STATE/node, and `node_down` removes what it put on the host (bridge, iptables chains,
# network namespaces, cgroups, mounts).
# shellcheck shell=bash

NODE_NAME=${NODE_NAME:-local-node}
# 198.18.0.0/15 is reserved for network tests (RFC 2544): pods get 198.18.0.0/16 (this node
# 198.18.0.0/24, the bridge and node IP 198.18.0.1), Services 198.19.0.0/16.
NODE_IP=198.18.0.1
POD_CIDR=198.18.0.0/16
NODE_POD_CIDR=198.18.0.0/24
SERVICE_CIDR=198.19.0.0/16
NODE_BRIDGE=${NODE_BRIDGE:-miniautoml0}
KUBELET_PORT=${KUBELET_PORT:-30250}
KUBELET_HEALTHZ_PORT=${KUBELET_HEALTHZ_PORT:-30248}
KUBE_PROXY_HEALTHZ_PORT=${KUBE_PROXY_HEALTHZ_PORT:-30256}
KUBE_PROXY_METRICS_PORT=${KUBE_PROXY_METRICS_PORT:-30249}
# What the node offers pods (allocatable); the rest of the machine stays with the host.
NODE_CPU=${NODE_CPU:-1800m}
NODE_MEMORY=${NODE_MEMORY:-12Gi}
NODE_DIR=$STATE/node
CONTAINERD_SOCK=$NODE_DIR/containerd.sock
IMAGES_DIR=${IMAGES_DIR:-$REPO_ROOT/target/images}
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack ipset)

# write_config FILE: writes stdin to FILE only when it differs, so that an idempotent `up` does
# not touch the files of running components (kube-proxy exits when its config file changes).
write_config() {
  local new
  new=$(cat)
  [ -f "$1" ] && [ "$(cat "$1")" = "$new" ] && return 0
  printf '%s\n' "$new" >"$1"
}

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# The machine's CPUs in millicores and memory in bytes.
machine_cpu_milli() { echo $(($(nproc) * 1000)); }
machine_memory_bytes() { echo $(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024)); }
# quantity_bytes 12Gi|512Mi|123 -> bytes; milli 1800m|2 -> millicores. Anything else stops
# `up` with the variable's name and the forms accepted.
quantity_bytes() {
  if [[ "$2" =~ ^([0-9]+)(Mi|Gi)?$ ]]; then
    case "${BASH_REMATCH[2]}" in
      Gi) echo $((BASH_REMATCH[1] * 1024 * 1024 * 1024)) ;;
      Mi) echo $((BASH_REMATCH[1] * 1024 * 1024)) ;;
      *) echo "${BASH_REMATCH[1]}" ;;
    esac
    return 0
  fi
  log "$1=$2: give a whole number of bytes, Mi or Gi (e.g. 12Gi)"
  return 1
}
milli() {
  if [[ "$2" =~ ^([0-9]+)(m?)$ ]]; then
    if [ -n "${BASH_REMATCH[2]}" ]; then echo "${BASH_REMATCH[1]}"; else echo $((BASH_REMATCH[1] * 1000)); fi
    return 0
  fi
  log "$1=$2: give whole CPUs or millicores (e.g. 2 or 1800m)"
  return 1
}

node_packages() { ensure_debian_packages "${NODE_PACKAGES[@]}"; }

node_network() {
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
  fi
  local addresses # not piped into grep -q: an early exit would SIGPIPE ip and fail pipefail
  addresses=$(ip -4 addr show dev "$NODE_BRIDGE")
  [[ "$addresses" == *"inet $NODE_IP/"* ]] || ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Traffic between pods on the bridge passes iptables, so Service NAT is undone on replies.
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
  # Pods reach this machine and each other, nothing else: forwarded traffic from the pod
  # network to an address outside 198.18.0.0/15 is dropped (with ip_forward on, it would
  # otherwise leave through the machine's own interface).
  iptables -N MINIAUTOML-POD-EGRESS 2>/dev/null || iptables -F MINIAUTOML-POD-EGRESS
  iptables -A MINIAUTOML-POD-EGRESS -s "$POD_CIDR" ! -d 198.18.0.0/15 -j DROP
  iptables -C FORWARD -j MINIAUTOML-POD-EGRESS 2>/dev/null || iptables -I FORWARD 1 -j MINIAUTOML-POD-EGRESS
}

node_certificates() {
  certificate node "system:node:$NODE_NAME" system:nodes
  certificate node-serving "$NODE_NAME" "" "IP:$NODE_IP,DNS:$NODE_NAME"
  certificate kube-proxy system:kube-proxy ""
  certificate coredns system:coredns ""
  certificate kube-router system:kube-router ""
  kubeconfig node node
  kubeconfig kube-proxy kube-proxy
  kubeconfig coredns coredns
  kubeconfig kube-router kube-router
}

node_configs() {
  mkdir -p "$NODE_DIR"/{containerd,cni/net.d,cni/ipam,kubelet,pods,runc}
  write_config "$NODE_DIR/containerd/config.toml" <<EOT
# Written by hack/cluster.sh: the local node's containerd (CRI), all state under $NODE_DIR.
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/miniautoml/pause:1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This VM lacks CAP_SYS_RESOURCE: a negative oom_score_adj cannot be written.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$NODE_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
EOT
  write_config "$NODE_DIR/cni/net.d/10-pods.conflist" <<EOT
{"cniVersion": "1.0.0", "name": "pods", "plugins": [
  {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
            "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOT
  # Pods resolve cluster names through CoreDNS and nothing else (no upstream resolvers).
  printf 'nameserver %s\n' "$NODE_IP" | write_config "$NODE_DIR/resolv.conf"
  local cpu memory cpu_reserved memory_reserved
  cpu=$(milli NODE_CPU "$NODE_CPU")
  memory=$(quantity_bytes NODE_MEMORY "$NODE_MEMORY")
  cpu_reserved=$(($(machine_cpu_milli) - cpu))
  memory_reserved=$(($(machine_memory_bytes) - memory))
  [ "$cpu_reserved" -ge 0 ] || cpu_reserved=0
  [ "$memory_reserved" -ge 0 ] || memory_reserved=0
  write_config "$NODE_DIR/kubelet/config.yaml" <<EOT
# Written by hack/cluster.sh: the local node's kubelet.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# No CAP_SYS_RESOURCE here (see containerd's restrict_oom_score_adj).
oomScoreAdj: 0
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/node-serving.crt
tlsPrivateKeyFile: $PKI/node-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $NODE_DIR/resolv.conf
podCIDR: $NODE_POD_CIDR
podLogsDir: $NODE_DIR/pods
maxPods: 110
serializeImagePulls: false
systemReserved: {cpu: ${cpu_reserved}m, memory: "$memory_reserved"}
# The images are imported, never pulled: keep them however full the disk is.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
mergeDefaultEvictionSettings: false
EOT
  write_config "$NODE_DIR/kube-proxy.yaml" <<EOT
# Written by hack/cluster.sh: the local node's kube-proxy.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
nodePortAddresses: [$NODE_IP/32]
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
conntrack: {maxPerCore: 0}
EOT
  write_config "$NODE_DIR/Corefile" <<EOT
# Written by hack/cluster.sh: the cluster DNS. Only cluster names: nothing is forwarded.
cluster.local:53 in-addr.arpa:53 {
  bind $NODE_IP
  errors
  kubernetes cluster.local in-addr.arpa {
    kubeconfig $STATE/coredns.kubeconfig local
    pods insecure
    ttl 5
  }
  cache 5
}
.:53 {
  bind $NODE_IP
  errors
}
EOT
}

# user_role NAME RULES: a ClusterRole system:NAME with RULES (YAML), bound to the user
# system:NAME (the CN of the component's client certificate).
user_role() {
  "${kubectl[@]}" apply --server-side -f - >/dev/null <<EOT
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:$1"}
rules:
$2
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:$1"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:$1"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:$1"}]
EOT
}

# CoreDNS reads Services, EndpointSlices, Pods and Namespaces cluster-wide; kube-router's
# firewall the pods, namespaces, nodes and NetworkPolicies it enforces.
node_rbac() {
  user_role coredns '  - {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}'
  user_role kube-router '  - {apiGroups: [""], resources: [pods, namespaces, nodes, services, endpoints], verbs: [get, list, watch]}
  - {apiGroups: [networking.k8s.io], resources: [networkpolicies], verbs: [list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}'
}

# Imports every archive of `make images` into the node's containerd (the same content is a
# no-op); the tests' images are there before any pod asks for them.
node_load_images() {
  local archive count=0
  for archive in "$IMAGES_DIR"/*.oci.tar; do
    [ -f "$archive" ] || continue
    ctr_ images import "$archive" >/dev/null
    count=$((count + 1))
  done
  if [ "$count" -eq 0 ]; then
    log "no image archives in $IMAGES_DIR: run make images (pods of miniautoml/* images will fail to pull)"
  fi
  ctr_ images label docker.io/miniautoml/pause:1 io.cri-containerd.pinned=pinned >/dev/null 2>&1 || true
}

# After node_packages and node_network, which `up` runs before the API server binds the node IP.
node_up() {
  node_certificates
  node_configs
  node_rbac
  # Images are imported, never pulled: containerd sends every registry request to a proxy on a
  # closed loopback port, so a missing image fails at once (ErrImagePull) without a DNS lookup
  # or a packet leaving this machine. (containerd 1.6 has no catch-all registry host config.)
  start containerd env HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 NO_PROXY= \
    https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 no_proxy= \
    containerd --config "$NODE_DIR/containerd/config.toml"
  wait_for containerd ctr_ version
  node_load_images
  start kubelet "$TOOLS_BIN/kubelet" --config "$NODE_DIR/kubelet/config.yaml" \
    --kubeconfig "$STATE/node.kubeconfig" --root-dir "$NODE_DIR/kubelet" \
    --cert-dir "$NODE_DIR/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "type=real,miniautoml.io/pool=local"
  start kube-proxy "$TOOLS_BIN/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml"
  start coredns "$TOOLS_BIN/coredns" -conf "$NODE_DIR/Corefile" -quiet
  wait_for kubelet "${kubectl[@]}" wait --for=condition=Ready --timeout=2s "node/$NODE_NAME"
  # NetworkPolicies enforced on the node's pods: kube-router's firewall only, once the node is
  # registered (the bridge CNI keeps the pod network, kube-proxy the Services).
  start kube-router "$TOOLS_BIN/kube-router" --kubeconfig "$STATE/kube-router.kubeconfig" \
    --hostname-override "$NODE_NAME" --run-firewall=true --run-router=false \
    --run-service-proxy=false --enable-cni=false --enable-ipv6=false --health-port=0 \
    --service-cluster-ip-range=198.19.0.0/16 --iptables-sync-period=1m
}

node_down() {
  local component
  for component in coredns kube-router kube-proxy kubelet; do stop_component "$component"; done
  if [ -S "$CONTAINERD_SOCK" ] && running containerd; then
    # Stop every pod sandbox (CNI DEL frees its address and veth) before containerd goes.
    if [ -x "$TOOLS_BIN/crictl" ]; then
      "$TOOLS_BIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" rmp -af >/dev/null 2>&1 || true
    fi
  fi
  stop_component containerd
  # What kubelet, kube-proxy and the CNI plugins leave on the host.
  if [ -x "$TOOLS_BIN/kube-proxy" ]; then "$TOOLS_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  # No iptables yet (a brand-new machine, whose node was never up): no chains of ours to remove.
  if command -v iptables >/dev/null 2>&1; then
    # kube-router's chains and ipsets (its --cleanup-config leaves its chains and then panics in
    # the service proxy's clean-up, which it does not run here): the jumps from the built-in
    # chains, then every KUBE-ROUTER-, KUBE-NWPLCY- and KUBE-POD-FW- chain, then the sets.
    iptables -S | awk '$1 == "-A" && $0 ~ /-j KUBE-ROUTER-/ && $2 !~ /^KUBE-/' | sed 's/^-A/-D/' |
      while read -r rule; do eval "iptables $rule" 2>/dev/null || true; done
    iptables -S | awk '$1 == "-N" && $2 ~ /^KUBE-(ROUTER|NWPLCY|POD-FW)-/ {print $2}' | while read -r chain; do
      iptables -F "$chain" 2>/dev/null || true
    done
    iptables -S | awk '$1 == "-N" && $2 ~ /^KUBE-(ROUTER|NWPLCY|POD-FW)-/ {print $2}' | while read -r chain; do
      iptables -X "$chain" 2>/dev/null || true
    done
    if command -v ipset >/dev/null 2>&1; then
      { ipset list -n 2>/dev/null || true; } | awk '/^(KUBE-(SRC|DST)-|kube-router)/' | while read -r set; do
        ipset destroy "$set" 2>/dev/null || true
      done
    fi
    iptables -D FORWARD -j MINIAUTOML-POD-EGRESS 2>/dev/null || true
    iptables -F MINIAUTOML-POD-EGRESS 2>/dev/null && iptables -X MINIAUTOML-POD-EGRESS 2>/dev/null || true
    local table chain t
    for table in iptables ip6tables; do
      for t in filter mangle nat; do
        for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
          "$table" -t "$t" -S "$chain" >/dev/null 2>&1 || continue
          # Jumps from the built-in chains first, then the chain itself.
          "$table" -t "$t" -S | awk -v c="$chain" '$1 == "-A" && $3 == "-j" && $4 == c {print $2}' |
            while read -r from; do "$table" -t "$t" -D "$from" -j "$chain" 2>/dev/null || true; done
          "$table" -t "$t" -F "$chain" 2>/dev/null || true
          "$table" -t "$t" -X "$chain" 2>/dev/null || true
        done
      done
    done
  fi
  # Leftover shims of killed containers, their mounts, then the network and cgroups.
  pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $CONTAINERD_SOCK" 2>/dev/null || true
  if [ -d "$NODE_DIR" ]; then
    awk -v dir="$NODE_DIR" 'index($2, dir) == 1 {print $2}' /proc/self/mounts | sort -r |
      while read -r mount; do umount -l "$mount" 2>/dev/null || true; done
  fi
  local netns
  for netns in /var/run/netns/cni-*; do
    [ -e "$netns" ] && ip netns del "${netns##*/}" 2>/dev/null || true
  done
  ip link del "$NODE_BRIDGE" >/dev/null 2>&1 || true
  local controller
  for controller in /sys/fs/cgroup/*/kubepods; do
    [ -d "$controller" ] && find "$controller" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  return 0
}
