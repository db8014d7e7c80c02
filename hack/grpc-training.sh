#!/usr/bin/env bash
# The original system's training workflow through grpcurl, against a running operator: Train on
# a prepared dataset snapshot, GetTrainingStatus until it succeeds or fails, then the run's
# metadata with GetRunStatus and GetArtifact.
#
#   GRPC_ADDR=127.0.0.1:51001 hack/grpc-training.sh DATASET_ID VERSION_HASH
#
# Needs grpcurl (make tools); the operator serves reflection, so no .proto files are passed.
# GRPC_TOKEN, when set, is the caller's bearer token (kubectl create token NAME -n NAMESPACE --audience miniautoml),
# for an operator that checks callers (the chart's default, grpc.auth=kubernetes).
# GRPC_CACERT, when set, is the operator's CA (the chart's TLS Secret's ca.crt; its default is
# TLS): calls go over TLS, checking GRPC_SERVERNAME when set; without it, plain text.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
GRPC_ADDR=${GRPC_ADDR:-127.0.0.1:51001}
DATASET_ID=$1
VERSION_HASH=$2
field() { sed -n "s/.*\"$1\": \"*\\([^\",]*\\)\"*,*$/\\1/p" | awk 'NR == 1'; }

echo "--- Train (dataset $DATASET_ID, snapshot $VERSION_HASH)"
trained=$(grpc -d "{\"metadata\": {\"algorithm\": \"intent-classification\", \"dataset_id\": \"$DATASET_ID\", \"name\": \"intent\", \"train_data_version_hash\": \"$VERSION_HASH\", \"output_model_name\": \"intent\", \"parameters\": {\"EPOCHS\": \"4\"}}}" \
  "$GRPC_ADDR" training.TrainingService/Train)
echo "$trained"
job=$(echo "$trained" | field jobId)

echo "--- GetTrainingStatus $job until it ends"
for _ in $(seq 1 300); do
  status=$(grpc -d "{\"job_id\": $job}" "$GRPC_ADDR" training.TrainingService/GetTrainingStatus)
  state=$(echo "$status" | field status)
  case "$state" in
    succeed | failure) break ;;
  esac
  sleep 1
done
echo "$status"
[ "$state" = succeed ] || { echo "run $job did not succeed" >&2; exit 1; }

echo "--- GetRunStatus $job"
grpc -d "{\"run_id\": \"$job\"}" "$GRPC_ADDR" metadata_store.MetadataStoreService/GetRunStatus
echo "--- GetArtifact $job"
grpc -d "{\"run_id\": \"$job\"}" "$GRPC_ADDR" metadata_store.MetadataStoreService/GetArtifact
