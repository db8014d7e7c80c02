#!/usr/bin/env bash
# Benchmark: data-parallel training on the path users take — TrainingJobs on a snapshot of
# tweet_emotion (parts 1 + 2), run by the operator as Jobs on the local cluster's real node.
#
#   hack/bench-distributed.sh [WORKERS...]      default: 1 2 4
#
# For each count: a TrainingJob of pytorch-intent with that many workers (DDP over gloo; one
# torch thread per rank; the same effective batch, 64, split across the ranks; 5 epochs), one
# after the other. Then our Rust trainer (intent-classification, one worker) on the same
# snapshot. Per run: wall time from apply to Succeeded, the training loop's examples/s (the
# trainer's own figure, all ranks together), and test accuracy and macro-F1 on the run's
# held-out 10 % (from the artifact's manifest). Prints one row per run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. hack/lib.sh
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1 2 4)
NAMESPACE=bench-distributed
WORK=$(mktemp -d)
OPERATOR_PID=
cleanup() {
  [ -n "$OPERATOR_PID" ] && kill "$OPERATOR_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

hack/tools.sh cluster >/dev/null
hack/images.sh >/dev/null
# shellcheck disable=SC1090
. "$(hack/cluster.sh up)"
hack/cluster.sh load
cargo build --release --locked --quiet -p miniautoml-operator --bin miniautoml-operator
OPERATOR=${CARGO_TARGET_DIR:-target}/release/miniautoml-operator
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl delete namespace "$NAMESPACE" --ignore-not-found --wait=true --timeout=300s >/dev/null
kubectl create namespace "$NAMESPACE" >/dev/null

s3_get() {
  curl -fsS --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "$S3_ENDPOINT/$S3_BUCKET/$1"
}

for part in 1 2; do
  s3_put "testdata/tweet_emotion/tweet_emotion_part$part.csv" "raw/$NAMESPACE/part$part.csv" >/dev/null
done
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
"$OPERATOR" --admin-addr 127.0.0.1:0 --grpc-addr "$MINIAUTOML_NODE_IP:$port" --original-contract-addr none --console-addr none \
  --metadata-store-address "$MINIAUTOML_NODE_IP:$port" --watch-namespace "$NAMESPACE" \
  --log-format json >"$WORK/operator.log" 2>&1 &
OPERATOR_PID=$!
kubectl apply -n "$NAMESPACE" -f - >/dev/null <<EOT
apiVersion: miniautoml.io/v1alpha1
kind: Dataset
metadata: {name: tweets}
spec:
  type: TextIntent
  commits:
    - {message: part 1, source: {bucket: $S3_BUCKET, key: raw/$NAMESPACE/part1.csv}}
    - {message: part 2, source: {bucket: $S3_BUCKET, key: raw/$NAMESPACE/part2.csv}}
EOT
kubectl wait -n "$NAMESPACE" --for=jsonpath='{.status.commitCount}'=2 --timeout=300s dataset/tweets >/dev/null

# run NAME ALGORITHM WORKERS PARAMETERS-JSON: one TrainingJob, timed from apply to its end.
run() {
  local name=$1 algorithm=$2 workers=$3 parameters=$4 start end phase uri manifest
  start=$(date +%s.%N)
  kubectl apply -n "$NAMESPACE" -f - >/dev/null <<EOT
{"apiVersion": "miniautoml.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "$name"},
 "spec": {"algorithm": "$algorithm", "workers": $workers, "dataset": {"name": "tweets"},
          "outputModelName": "intent", "parameters": $parameters}}
EOT
  while :; do
    phase=$(kubectl get -n "$NAMESPACE" "trainingjob/$name" -o jsonpath='{.status.phase}')
    case "$phase" in Succeeded | Failed) break ;; esac
    sleep 0.5
  done
  end=$(date +%s.%N)
  if [ "$phase" != Succeeded ]; then
    echo "$name: $phase: $(kubectl get -n "$NAMESPACE" "trainingjob/$name" -o jsonpath='{.status.message}')" >&2
    exit 1
  fi
  uri=$(kubectl get -n "$NAMESPACE" "trainingjob/$name" -o jsonpath='{.status.artifact.uri}')
  manifest=$(s3_get "${uri#s3://"$S3_BUCKET"/}manifest.json")
  jq -r --arg n "$name" --arg a "$algorithm" --arg w "$workers" --arg t "$(echo "$end - $start" | bc)" \
    '[$a, $w, ($t | tonumber), (.metrics.examplesPerSecond // null), .metrics.testAccuracy, .metrics.testMacroF1]
     | "\(.[0]) \(.[1]) \(.[2]) \(.[3] // "-") \(.[4]) \(.[5])"' <<<"$manifest" |
    awk '{ eps = ($4 == "-") ? "-" : sprintf("%.0f", $4);
           printf "%-22s %8s %10.1f %14s %10.3f %10.3f\n", $1, $2, $3, eps, $5, $6 }'
}

ensure_debian_packages bc
printf '%-22s %8s %10s %14s %10s %10s\n' algorithm workers wall_s examples_per_s test_acc macro_F1
for workers in "${COUNTS[@]}"; do
  run "torch-$workers" pytorch-intent "$workers" '{"EPOCHS": "5", "THREADS": "1", "BATCH_SIZE": "64"}'
done
run rust-1 intent-classification 1 '{}'
echo "(the same snapshot, 2607 train / 325 validation / 325 test rows; pytorch-intent: 5 epochs, effective batch 64,"
echo " one torch thread per rank; intent-classification: its defaults; $(nproc) cores, one real node)"
kubectl delete namespace "$NAMESPACE" --wait=false >/dev/null
