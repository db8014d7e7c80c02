#!/usr/bin/env bash
# The original system's dataset workflow through grpcurl, against a running operator:
# upload tweet_emotion part 1 and 2, CreateDataset, UpdateDataset, PrepareTrainingDataset,
# FetchTrainingDataset until READY, GetDatasetSummary, ListDatasets.
#
#   GRPC_ADDR=127.0.0.1:51001 hack/grpc-datasets.sh [dataset-name]
#
# Needs grpcurl (make tools) and the local cluster's env file sourced (S3_ENDPOINT, S3_BUCKET,
# AWS_*), as `make demo` does. The operator serves reflection, so no .proto files are passed.
# GRPC_NAMESPACE is the operator's gRPC namespace (default: default, as `make run`; the chart's is
# its release namespace): the data goes to that namespace's own raw prefix, raw/<namespace>/, the
# only place it may ingest from unless an administrator granted more.
# GRPC_TOKEN, when set, is the caller's bearer token (kubectl create token NAME -n NAMESPACE --audience miniautoml),
# for an operator that checks callers (the chart's default, grpc.auth=kubernetes).
# GRPC_CACERT, when set, is the operator's CA (the chart's TLS Secret's ca.crt; its default is
# TLS): calls go over TLS, checking GRPC_SERVERNAME when set; without it, plain text.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
GRPC_ADDR=${GRPC_ADDR:-127.0.0.1:51001}
NAME=${1:-tweets-grpc}
RAW=raw/${GRPC_NAMESPACE:-default}/$NAME
DATA=$REPO_ROOT/testdata/tweet_emotion
call() { grpc -d "$2" "$GRPC_ADDR" "data_management.DataManagementService/$1"; }
field() { sed -n "s/.*\"$1\": \"\\([^\"]*\\)\".*/\\1/p" | head -n 1; }

echo "--- upload tweet_emotion part 1 and 2 to s3://$S3_BUCKET/$RAW/"
s3_put "$DATA/tweet_emotion_part1.csv" "$RAW/part1.csv"
s3_put "$DATA/tweet_emotion_part2.csv" "$RAW/part2.csv"

echo "--- CreateDataset (returns once commit 1 is ingested)"
created=$(call CreateDataset "{\"name\": \"$NAME\", \"description\": \"tweet emotions\", \"dataset_type\": \"TEXT_INTENT\", \"bucket\": \"$S3_BUCKET\", \"path\": \"$RAW/part1.csv\", \"tags\": [{\"tag_key\": \"part\", \"tag_value\": \"1\"}]}")
echo "$created"
id=$(echo "$created" | field datasetId)

echo "--- UpdateDataset $id (commit 2)"
call UpdateDataset "{\"dataset_id\": \"$id\", \"commit_message\": \"part 2\", \"bucket\": \"$S3_BUCKET\", \"path\": \"$RAW/part2.csv\", \"tags\": [{\"tag_key\": \"part\", \"tag_value\": \"2\"}]}" >/dev/null

echo "--- PrepareTrainingDataset $id (all commits)"
hash=$(call PrepareTrainingDataset "{\"dataset_id\": \"$id\"}" | field versionHash)
echo "version hash: $hash"

echo "--- FetchTrainingDataset $id $hash until READY"
for _ in $(seq 1 100); do
  snapshot=$(call FetchTrainingDataset "{\"dataset_id\": \"$id\", \"version_hash\": \"$hash\"}")
  # RUNNING is proto3's default value, which grpcurl leaves out; READY and FAILED are printed.
  if echo "$snapshot" | grep -q '"state"'; then break; fi
  sleep 0.2
done
echo "$snapshot"
echo "$snapshot" | grep -q '"state": "READY"' || { echo "snapshot $hash is not READY" >&2; exit 1; }

echo "--- ListDatasets"
grpc -d '{}' "$GRPC_ADDR" data_management.DataManagementService/ListDatasets
