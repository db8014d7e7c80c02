#!/usr/bin/env bash
# make demo: the dataset -> training -> serving -> prediction flow. Exits 0 only when every step
# succeeds.
#
# Cluster: the local one (built and started on demand, as `make cluster-up` does), unless
# KUBECONFIG names another cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

NAMESPACE=${DEMO_NAMESPACE:-miniautoml-demo}
ADMIN_ADDR=${DEMO_ADMIN_ADDR:-127.0.0.1:18080}
WORK=$(mktemp -d)
OPERATOR_PID=

step() { printf '\n==> %s\n' "$*"; }
cleanup() {
  if [ -n "$OPERATOR_PID" ] && kill -0 "$OPERATOR_PID" 2>/dev/null; then
    kill -TERM "$OPERATOR_PID" 2>/dev/null || true
    wait "$OPERATOR_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step "Build the operator and the container images (make images: operator, predictor, trainer)"
cargo build --quiet --locked -p miniautoml-operator --bins
OPERATOR=${CARGO_TARGET_DIR:-target}/debug/miniautoml-operator
if [ -z "${KUBECONFIG:-}" ]; then
  hack/tools.sh cluster >/dev/null
  hack/images.sh >/dev/null
fi

step "Check the example manifests against the API types and their CEL rules"
cargo test --quiet --locked -p miniautoml-api --test cel examples_deserialize_and_pass_the_rules

if [ -z "${KUBECONFIG:-}" ]; then
  step "Start the local cluster (first run builds the pinned tools: minutes)"
  LOCAL_ENV=$(hack/cluster.sh up)
  hack/cluster.sh load
  # shellcheck disable=SC1090
  . "$LOCAL_ENV"
else
  step "Use the cluster of KUBECONFIG=$KUBECONFIG"
fi
kubectl version --request-timeout=10s
kubectl get nodes -o wide
# Training pods reach the operator over the pod network: locally it listens on the node's IP.
GRPC_ADDR=${DEMO_GRPC_ADDR:-${MINIAUTOML_NODE_IP:-127.0.0.1}:15001}

step "Run a Job (a container on the local node: busybox from make images)"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl delete job -n "$NAMESPACE" hello --ignore-not-found --wait
kubectl create job -n "$NAMESPACE" hello --image=miniautoml/test-tools:1 -- \
  sh -c 'echo "hello from pod $HOSTNAME (uid $(id -u), IP $(hostname -i))"'
kubectl wait -n "$NAMESPACE" --for=condition=Complete --timeout=60s job/hello
kubectl get pods -n "$NAMESPACE" -l job-name=hello -o wide
kubectl logs -n "$NAMESPACE" job/hello

step "Install the CRDs"
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established --timeout=60s \
  crd/datasets.miniautoml.io crd/trainingjobs.miniautoml.io crd/modeldeployments.miniautoml.io

step "Start the operator (admin $ADMIN_ADDR, gRPC $GRPC_ADDR)"
# S3 settings and credentials come from the environment (the local cluster's env file).
"$OPERATOR" --admin-addr "$ADMIN_ADDR" --grpc-addr "$GRPC_ADDR" --grpc-namespace "$NAMESPACE" \
  --metadata-store-address "$GRPC_ADDR" \
  >"$WORK/operator.log" 2>&1 &
OPERATOR_PID=$!
for _ in $(seq 1 60); do
  if curl -fsS "http://$ADMIN_ADDR/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$OPERATOR_PID" 2>/dev/null; then
    cat "$WORK/operator.log" >&2
    echo "the operator exited during start-up" >&2
    exit 1
  fi
  sleep 1
done
curl -fsS "http://$ADMIN_ADDR/readyz"

if [ -n "${S3_ENDPOINT:-}" ]; then
  step "Upload the reference data (tweet_emotion part 1) to s3://$S3_BUCKET/raw/tweet_emotion/"
  # shellcheck disable=SC1091
  . hack/lib.sh
  s3_put testdata/tweet_emotion/tweet_emotion_part1.csv raw/tweet_emotion/tweet_emotion_part1.csv
fi

step "Apply the examples in namespace $NAMESPACE"
EXAMPLES=(-f examples/dataset.yaml -f examples/trainingjob.yaml -f examples/modeldeployment.yaml)
# Start from the examples as written (an earlier run may have appended commits, which the
# append-only rule would rightly refuse to take back).
kubectl delete -n "$NAMESPACE" --ignore-not-found --wait "${EXAMPLES[@]}"
kubectl apply -n "$NAMESPACE" "${EXAMPLES[@]}"
kubectl wait -n "$NAMESPACE" --for=condition=Accepted --timeout=60s \
  dataset/tweet-emotion trainingjob/twitter-model modeldeployment/twitter-model
if [ -n "${S3_ENDPOINT:-}" ]; then
  step "The Dataset ingests its commit into S3"
  kubectl wait -n "$NAMESPACE" --for=jsonpath='{.status.commitCount}'=1 --timeout=120s dataset/tweet-emotion
  kubectl get -n "$NAMESPACE" dataset tweet-emotion \
    -o jsonpath='{range .status.commits[*]}commit {.id}: {.statistics.numExamples} examples, {.statistics.numLabels} labels at {.path}{"\n"}{end}'
fi
if [ -n "${S3_ENDPOINT:-}" ]; then
  step "The TrainingJob trains on the Dataset's snapshot (a Job running the trainer image)"
  kubectl wait -n "$NAMESPACE" --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s trainingjob/twitter-model \
    || { kubectl get -n "$NAMESPACE" trainingjob twitter-model -o yaml; exit 1; }
  kubectl get -n "$NAMESPACE" trainingjob twitter-model \
    -o jsonpath='run {.status.runId}: {.status.message}, epochs {.status.progress}, model {.status.artifact.uri}{"\n"}'
  RUN_ID=$(kubectl get -n "$NAMESPACE" trainingjob twitter-model -o jsonpath='{.status.runId}')

  step "The ModelDeployment rolls out a predictor serving run $RUN_ID (the predictor image)"
  kubectl wait -n "$NAMESPACE" --for=condition=Ready --timeout=180s modeldeployment/twitter-model \
    || { kubectl get -n "$NAMESPACE" modeldeployment twitter-model -o yaml; exit 1; }
  kubectl get -n "$NAMESPACE" modeldeployment twitter-model \
    -o jsonpath='serving run {.status.servedRun} (version {.status.modelVersion}) on {.status.readyReplicas} replica(s): gRPC {.status.endpoint.grpc}, HTTP {.status.endpoint.http}{"\n"}'
  kubectl get -n "$NAMESPACE" deployments,services,pods -l miniautoml.io/modeldeployment=twitter-model -o wide
  if [ -n "${LOCAL_ENV:-}" ]; then
    # Pod IPs (198.18.0.0/24) are reachable from this machine over the node's bridge.
    POD_IP=$(kubectl get pods -n "$NAMESPACE" -l miniautoml.io/modeldeployment=twitter-model \
      -o jsonpath='{.items[0].status.podIP}')
    step "The Open Inference Protocol v2 on the predictor pod ($POD_IP:8080)"
    curl -fsS "http://$POD_IP:8080/v2/models/twitter-model"
    echo
    curl -fsS -X POST "http://$POD_IP:8080/v2/models/twitter-model/infer" -H 'Content-Type: application/json' \
      -d '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["I am so happy today!", "this traffic makes me furious"]}]}'
    echo
  fi
fi
kubectl get -n "$NAMESPACE" datasets,trainingjobs,modeldeployments

if command -v grpcurl >/dev/null 2>&1; then
  step "gRPC health and reflection"
  grpcurl -plaintext "$GRPC_ADDR" grpc.health.v1.Health/Check
  grpcurl -plaintext "$GRPC_ADDR" list
  if [ -n "${S3_ENDPOINT:-}" ]; then
    step "The original dataset workflow over gRPC (hack/grpc-datasets.sh)"
    kubectl delete dataset -n "$NAMESPACE" tweets-grpc --ignore-not-found --wait
    GRPC_ADDR=$GRPC_ADDR hack/grpc-datasets.sh tweets-grpc | tee "$WORK/grpc.log"
    step "The original training workflow over gRPC (hack/grpc-training.sh)"
    id=$(sed -n 's/.*"datasetId": "\([0-9]*\)".*/\1/p' "$WORK/grpc.log" | awk 'NR == 1')
    GRPC_ADDR=$GRPC_ADDR hack/grpc-training.sh "$id" hashBg== | tee "$WORK/training.log"
    step "Predict through the original PredictionService (hack/grpc-predict.sh)"
    GRPC_ADDR=$GRPC_ADDR hack/grpc-predict.sh "$RUN_ID" "I am so happy today!" "why does this always happen to me"
    grpc_run=$(sed -n 's/.*"jobId": \([0-9]*\).*/\1/p' "$WORK/training.log" | awk 'NR == 1')
    step "Predict on run $grpc_run, which no ModelDeployment serves: the operator deploys it first"
    GRPC_ADDR=$GRPC_ADDR hack/grpc-predict.sh "$grpc_run" "what a wonderful surprise"
    kubectl get -n "$NAMESPACE" modeldeployments
  fi
fi

step "Stop the operator gracefully (SIGTERM)"
kill -TERM "$OPERATOR_PID"
wait "$OPERATOR_PID"
OPERATOR_PID=
echo "operator exited cleanly"
