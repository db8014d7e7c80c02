#!/usr/bin/env bash
# make demo: what a user does with MiniAutoML, each command printed before it runs:
#
#   cluster up → images on its node → helm install (bundled object store) → upload tweet_emotion
#   part 1 → kubectl apply the examples → Dataset ingested → TrainingJob Succeeded →
#   ModelDeployment rolled out → predictions (REST and the original PredictionService) → the
#   original grpcurl dataset and training workflow → how to poke at it.
#
# The release stays installed. Cluster: the local one (built and started on demand), unless
# KUBECONFIG names another cluster whose nodes already have the images of `make images`.
# Exits 0 only when every step succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. hack/lib.sh

RELEASE=miniautoml
NAMESPACE=${DEMO_NAMESPACE:-miniautoml}
WORK=$(mktemp -d)
FORWARDS=()

step() { printf '\n==> %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
  for pid in "${FORWARDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# forward NAMESPACE TARGET PORT: `kubectl port-forward` on a free loopback port, printed;
# sets FORWARDED to 127.0.0.1:<port>.
forward() {
  local out=$WORK/forward-$RANDOM port=""
  printf '$ kubectl port-forward -n %s %s :%s &\n' "$1" "$2" "$3"
  kubectl port-forward -n "$1" "$2" ":$3" --address 127.0.0.1 >"$out" 2>&1 &
  FORWARDS+=($!)
  for _ in $(seq 1 100); do
    port=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$out" | head -n1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { cat "$out" >&2; echo "port-forward to $2 failed" >&2; exit 1; }
  FORWARDED=127.0.0.1:$port
}

if [ -z "${KUBECONFIG:-}" ]; then
  step "The local cluster: pinned tools, container images, a real kubelet + containerd node"
  show make images
  LOCAL_ENV=$(hack/cluster.sh up)
  hack/cluster.sh load
  # shellcheck disable=SC1090
  . "$LOCAL_ENV"
  echo "cluster env: source $LOCAL_ENV"
else
  step "The cluster of KUBECONFIG=$KUBECONFIG"
  export PATH=$TOOLS_BIN:$PATH
fi
show kubectl get nodes -o wide

step "Install MiniAutoML with Helm (operator, CRDs, a bundled SeaweedFS object store)"
# CRDs installed otherwise (`kubectl apply -f crds/`, the e2e suite's release) are handed to this
# release the way Helm documents.
for crd in datasets.miniautoml.io trainingjobs.miniautoml.io modeldeployments.miniautoml.io; do
  if kubectl get crd "$crd" >/dev/null 2>&1 &&
    [ "$(kubectl get crd "$crd" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}/{.metadata.annotations.meta\.helm\.sh/release-namespace}')" != "$RELEASE/$NAMESPACE" ]; then
    show kubectl label crd "$crd" app.kubernetes.io/managed-by=Helm --overwrite
    show kubectl annotate crd "$crd" "meta.helm.sh/release-name=$RELEASE" "meta.helm.sh/release-namespace=$NAMESPACE" --overwrite
  fi
done
show helm upgrade --install "$RELEASE" charts/miniautoml -n "$NAMESPACE" --create-namespace --wait --timeout 5m
show kubectl get pods,services -n "$NAMESPACE"

step "Upload tweet_emotion part 1 to the bundled object store, with namespace default's upload key"
# The operator gives each namespace of uploads.namespaces (default: default) a Secret
# miniautoml-upload whose key writes only raw/<namespace>/ — never the bucket-wide key.
for _ in $(seq 1 60); do kubectl get secret -n default miniautoml-upload >/dev/null 2>&1 && break; sleep 2; done
forward "$NAMESPACE" "svc/$RELEASE-object-store" 8333
S3_ENDPOINT=http://$FORWARDED
S3_BUCKET=miniautoml
echo "\$ export AWS_ACCESS_KEY_ID=\$(kubectl get secret -n default miniautoml-upload -o jsonpath='{.data.AWS_ACCESS_KEY_ID}' | base64 -d)"
AWS_ACCESS_KEY_ID=$(kubectl get secret -n default miniautoml-upload -o jsonpath='{.data.AWS_ACCESS_KEY_ID}' | base64 -d)
echo "\$ export AWS_SECRET_ACCESS_KEY=\$(kubectl get secret -n default miniautoml-upload -o jsonpath='{.data.AWS_SECRET_ACCESS_KEY}' | base64 -d)"
AWS_SECRET_ACCESS_KEY=$(kubectl get secret -n default miniautoml-upload -o jsonpath='{.data.AWS_SECRET_ACCESS_KEY}' | base64 -d)
export S3_ENDPOINT S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
# The operator creates the bucket at start; the first upload may come before it. The key is
# read again on each try: a Secret an earlier install left holds that install's key until this
# operator writes its own.
for attempt in $(seq 1 30); do
  AWS_ACCESS_KEY_ID=$(kubectl get secret -n default miniautoml-upload -o jsonpath='{.data.AWS_ACCESS_KEY_ID}' | base64 -d)
  AWS_SECRET_ACCESS_KEY=$(kubectl get secret -n default miniautoml-upload -o jsonpath='{.data.AWS_SECRET_ACCESS_KEY}' | base64 -d)
  printf '$ curl --aws-sigv4 aws:amz:us-east-1:s3 --user ... -T testdata/tweet_emotion/tweet_emotion_part1.csv %s\n' \
    "$S3_ENDPOINT/$S3_BUCKET/raw/default/tweet_emotion/tweet_emotion_part1.csv"
  if s3_put testdata/tweet_emotion/tweet_emotion_part1.csv raw/default/tweet_emotion/tweet_emotion_part1.csv; then break; fi
  [ "$attempt" -lt 30 ] || exit 1
  sleep 2
done

step "Apply the examples: a Dataset, a TrainingJob, a ModelDeployment"
EXAMPLES=(-f examples/dataset.yaml -f examples/trainingjob.yaml -f examples/modeldeployment.yaml)
# Start from the examples as written (an earlier run may have appended commits, which the
# append-only rule would rightly refuse to take back).
kubectl delete "${EXAMPLES[@]}" --ignore-not-found --wait >/dev/null
show kubectl apply "${EXAMPLES[@]}"

step "The Dataset ingests its commit"
show kubectl wait --for=jsonpath='{.status.commitCount}'=1 --timeout=180s dataset/tweet-emotion
show kubectl get dataset tweet-emotion \
  -o jsonpath='{range .status.commits[*]}commit {.id}: {.statistics.numExamples} examples, {.statistics.numLabels} labels at {.path}{"\n"}{end}'

step "The TrainingJob trains (the trainer image in a Job's pod)"
show kubectl wait --for=jsonpath='{.status.phase}'=Succeeded --timeout=600s trainingjob/twitter-model ||
  { kubectl get trainingjob twitter-model -o yaml; exit 1; }
show kubectl get trainingjob twitter-model \
  -o jsonpath='run {.status.runId}: {.status.message}, epochs {.status.progress}, code {.status.codeVersion}, model {.status.artifact.uri}{"\n"}'
RUN_ID=$(kubectl get trainingjob twitter-model -o jsonpath='{.status.runId}')

step "The ModelDeployment rolls out a predictor serving run $RUN_ID"
show kubectl wait --for=condition=Ready --timeout=300s modeldeployment/twitter-model ||
  { kubectl get modeldeployment twitter-model -o yaml; exit 1; }
show kubectl get miniautoml
show kubectl get deployments,services,pods -l miniautoml.io/modeldeployment=twitter-model

step "Predict over the Open Inference Protocol v2 (REST, the predictor's Service)"
forward default svc/twitter-model-predictor 8080
show curl -fsS -X POST "http://$FORWARDED/v2/models/twitter-model/infer" -H 'Content-Type: application/json' \
  -d '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["I am so happy today!", "this traffic makes me furious"]}]}'
echo

step "The original gRPC API on the operator's Service: health, reflection, Predict"
forward "$NAMESPACE" "svc/$RELEASE" 51001
GRPC_ADDR=$FORWARDED
echo "# TLS by default: the chart generated a CA and a certificate (also for 127.0.0.1); trust its CA."
echo "\$ kubectl get secret -n $NAMESPACE $RELEASE-tls -o jsonpath='{.data.ca\.crt}' | base64 -d > ca.crt"
kubectl get secret -n "$NAMESPACE" "$RELEASE-tls" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$WORK/ca.crt"
GRPC_CACERT=$WORK/ca.crt
export GRPC_CACERT
show grpcurl -cacert "$GRPC_CACERT" "$GRPC_ADDR" grpc.health.v1.Health/Check
show grpcurl -cacert "$GRPC_CACERT" "$GRPC_ADDR" list
echo "# Every other method needs a caller Kubernetes knows, allowed to do what the method does:"
show grpcurl -cacert "$GRPC_CACERT" -d "{\"runId\": \"$RUN_ID\", \"document\": \"hello\"}" "$GRPC_ADDR" prediction.PredictionService/Predict || true

step "A caller of the gRPC API: a ServiceAccount with the chart's user roles, and its token"
# `kubectl create ARGS`, shown, and kept when it exists already (a second `make demo`).
create() { printf '$ kubectl create %s\n' "$*"; kubectl create "$@" --dry-run=client -o yaml | kubectl apply -f - >/dev/null; }
create serviceaccount demo-user -n "$NAMESPACE"
# The data engineer's, data scientist's and app developer's roles where the gRPC API creates
# what it is asked to (namespace $NAMESPACE), and the app developer's where the examples run.
for binding in "$NAMESPACE data-engineer" "$NAMESPACE data-scientist" "$NAMESPACE app-developer" "default app-developer"; do
  read -r namespace role <<<"$binding"
  create rolebinding "demo-user-$role" -n "$namespace" --clusterrole="$RELEASE-$role" --serviceaccount="$NAMESPACE:demo-user"
done
echo "\$ export GRPC_TOKEN=\$(kubectl create token demo-user -n $NAMESPACE --audience miniautoml)"
GRPC_TOKEN=$(kubectl create token demo-user -n "$NAMESPACE" --audience miniautoml)
export GRPC_TOKEN
show env GRPC_ADDR="$GRPC_ADDR" hack/grpc-predict.sh "$RUN_ID" "I am so happy today!" "why does this always happen to me"

step "The original dataset workflow over gRPC (hack/grpc-datasets.sh)"
kubectl delete dataset -n "$NAMESPACE" tweets-grpc --ignore-not-found --wait >/dev/null
# It uploads into raw/$NAMESPACE/, with that namespace's upload key (uploads.grpcNamespace).
echo "\$ export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...   # from: kubectl get secret -n $NAMESPACE miniautoml-upload"
AWS_ACCESS_KEY_ID=$(kubectl get secret -n "$NAMESPACE" miniautoml-upload -o jsonpath='{.data.AWS_ACCESS_KEY_ID}' | base64 -d)
AWS_SECRET_ACCESS_KEY=$(kubectl get secret -n "$NAMESPACE" miniautoml-upload -o jsonpath='{.data.AWS_SECRET_ACCESS_KEY}' | base64 -d)
show env GRPC_ADDR="$GRPC_ADDR" GRPC_NAMESPACE="$NAMESPACE" hack/grpc-datasets.sh tweets-grpc | tee "$WORK/grpc.log"
step "The original training workflow over gRPC (hack/grpc-training.sh)"
id=$(sed -n 's/.*"datasetId": "\([0-9]*\)".*/\1/p' "$WORK/grpc.log" | awk 'NR == 1')
show env GRPC_ADDR="$GRPC_ADDR" hack/grpc-training.sh "$id" hashBg==
show kubectl get trainingjobs -n "$NAMESPACE"

step "Done. MiniAutoML stays installed; poke at it:"
cat <<EOT
  kubectl get miniautoml -A                      # Datasets, TrainingJobs, ModelDeployments
  kubectl describe trainingjob twitter-model     # epochs, artifact, events
  kubectl logs -n $NAMESPACE deployment/$RELEASE  # the operator (JSON lines)
  kubectl port-forward -n $NAMESPACE svc/$RELEASE 51001:51001 &
  kubectl get secret -n $NAMESPACE $RELEASE-tls -o jsonpath='{.data.ca\.crt}' | base64 -d > ca.crt
  grpcurl -cacert ca.crt 127.0.0.1:51001 list    # the original gRPC API, over TLS
  export GRPC_TOKEN=\$(kubectl create token demo-user -n $NAMESPACE --audience miniautoml)   # a caller with the user roles
  grpcurl -cacert ca.crt -expand-headers -H 'authorization: Bearer \${GRPC_TOKEN}' -d '{}' 127.0.0.1:51001 data_management.DataManagementService/ListDatasets
  kubectl port-forward -n $NAMESPACE svc/$RELEASE 8090:8090 &   # the web console: https://127.0.0.1:8090 (trust ca.crt)
  kubectl create token demo-user -n $NAMESPACE --audience miniautoml   # paste it on the console's sign-in page
  helm upgrade $RELEASE charts/miniautoml -n $NAMESPACE --set replicas=2   # two replicas, one leader
  helm uninstall $RELEASE -n $NAMESPACE           # keeps the CRDs and your data
EOT
if [ -n "${LOCAL_ENV:-}" ]; then
  echo "  source $LOCAL_ENV                               # kubectl, helm, grpcurl for this cluster"
fi
