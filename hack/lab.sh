#!/usr/bin/env bash
# The original MiniAutoML lab, as its scripts lab-002 to lab-005 send it: every gRPC request
# body unchanged (the dataset name "tweet_emotion", bucket "mini-automl-dm", Train's "test1" /
# "twitter-model" with LR 4, EPOCHS 15, BATCH_SIZE 64, FC_SIZE 128, and after the second commit
# LR 50 with FC_SIZE 1024, job ids sent as strings, the lab's Predict document), against one
# operator, which serves all four of the original's services on one port.
#
#   GRPC_ADDR=127.0.0.1:51001 hack/lab.sh
#
# Needs grpcurl (make tools) and jq, and for the upload (the lab's `mc cp`) S3_ENDPOINT and
# AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (the local cluster's env file, as `make demo` sources).
# Fails if a call fails or a run does not succeed. Where the lab reads a reply's field with jq
# (".version_hash", ".job_id"), this script also accepts grpcurl's newer camelCase names.
# GRPC_TOKEN, when set, is the caller's bearer token (kubectl create token NAME -n NAMESPACE --audience miniautoml),
# for an operator that checks callers (the chart's default, grpc.auth=kubernetes).
# GRPC_CACERT, when set, is the operator's CA (the chart's TLS Secret's ca.crt; its default is
# TLS): calls go over TLS, checking GRPC_SERVERNAME when set; without it, plain text.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
GRPC_ADDR=${GRPC_ADDR:-127.0.0.1:51001}
# The lab's ports: DataManagement, Training, MetadataStore and Prediction are one server here.
DM=$GRPC_ADDR TS=$GRPC_ADDR MS=$GRPC_ADDR PS=$GRPC_ADDR
MINIO_DM_BUCKET=mini-automl-dm
DATA=$REPO_ROOT/testdata/tweet_emotion
DOCUMENT="You can have a certain #arrogance, and I think that's fine, but what you should never lose is the #respect for the others."
# A status poll every 2 s (the lab: 5 s), at most 10 minutes per run.
POLLS=300

# jq FIELD_SNAKE FIELD_CAMEL: the field as JSON (quoted, as the lab's `jq ".version_hash"`).
field() { jq "if has(\"$1\") then .$1 else .$2 end"; }

echo "=== lab-002: upload the raw data, create the intent dataset"
(
  S3_BUCKET=$MINIO_DM_BUCKET
  # The lab's MinIO had the bucket already; create it if it is missing.
  curl -fsS -o /dev/null --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" \
    -X PUT "$S3_ENDPOINT/$S3_BUCKET" 2>/dev/null || true
  s3_put "$DATA/tweet_emotion_part1.csv" upload/tweet_emotion_part1.csv
  s3_put "$DATA/tweet_emotion_part2.csv" upload/tweet_emotion_part2.csv
)
created=$(grpc \
  -d '{"name": "tweet_emotion", "dataset_type": "TEXT_INTENT", "bucket": "mini-automl-dm", "path": "upload/tweet_emotion_part1.csv"}' \
  "$DM" data_management.DataManagementService/CreateDataset)
echo "$created"
dataset_id=$(echo "$created" | jq -r 'if has("dataset_id") then .dataset_id else .datasetId end')
echo "dataset_id is $dataset_id"

prepare_dataset() {
  grpc \
    -d "{\"dataset_id\": \"$1\"}" \
    "$DM" data_management.DataManagementService/PrepareTrainingDataset
}

# start_training DATASET_ID VERSION_HASH(JSON) LR FC_SIZE: the lab's Train request.
start_training() {
  grpc \
    -d "{
    \"metadata\": {
      \"algorithm\":\"intent-classification\",
      \"dataset_id\":\"$1\",
      \"name\":\"test1\",
      \"train_data_version_hash\":$2,
      \"output_model_name\":\"twitter-model\",
      \"parameters\": {
        \"LR\":\"$3\",
        \"EPOCHS\":\"15\",
        \"BATCH_SIZE\":\"64\",
        \"FC_SIZE\":\"$4\"
      }
    }
  }" \
    "$TS" training.TrainingService/Train
}

check_job_status() {
  grpc \
    -d "{\"job_id\": \"$1\"}" \
    "$TS" training.TrainingService/GetTrainingStatus
}

predict() {
  grpc \
    -d "{
    \"runId\": \"$1\",
    \"document\": \"$2\"
  }" \
    "$PS" prediction.PredictionService/Predict
}

# train_and_predict LR FC_SIZE: lab-003 (and lab-005 after its UpdateDataset).
train_and_predict() {
  local temp version_hash job_id job_status=unknown
  temp=$(prepare_dataset "$dataset_id")
  version_hash=$(echo -n "$temp" | field version_hash versionHash)
  echo "version_hash is $version_hash"
  temp=$(start_training "$dataset_id" "$version_hash" "$1" "$2")
  job_id=$(echo -n "$temp" | field job_id jobId)
  echo "job_id is $job_id"
  for _ in $(seq "$POLLS"); do
    temp=$(check_job_status "$job_id")
    job_status=$(echo -n "$temp" | jq ".status")
    if [ "$job_status" == "\"failure\"" ] || [ "$job_status" == "\"succeed\"" ]; then break; fi
    echo "job $job_id is currently in $job_status status, check back in 2 seconds"
    sleep 2
  done
  echo "$temp"
  grpc \
    -d "{\"run_id\": \"$job_id\"}" \
    "$MS" metadata_store.MetadataStoreService/GetRunStatus
  [ "$job_status" == "\"succeed\"" ] || { echo "lab: job $job_id ended $job_status" >&2; return 1; }
  predict "$job_id" "$DOCUMENT"
  LAST_JOB_ID=$job_id
}

echo "=== lab-003: first training (LR 4, FC_SIZE 128), then predict"
train_and_predict 4 128

echo "=== lab-004: model serving"
predict "$LAST_JOB_ID" "I am so happy to see you again, what a wonderful day"

echo "=== lab-005: second commit, second training (LR 50, FC_SIZE 1024), then predict"
grpc \
  -d "{
    \"dataset_id\": \"$dataset_id\",
    \"commit_message\": \"tweet_emotion_part2\",
    \"bucket\": \"${MINIO_DM_BUCKET}\",
    \"path\": \"upload/tweet_emotion_part2.csv\"
    }" \
  "$DM" data_management.DataManagementService/UpdateDataset
train_and_predict 50 1024
echo "=== lab done"
