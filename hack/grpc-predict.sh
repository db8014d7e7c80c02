#!/usr/bin/env bash
# The original system's prediction call through grpcurl, against a running operator:
# PredictionService/Predict on a run's model. When no ModelDeployment serves the run yet, the
# operator deploys one (run-<id>) and answers once it is ready.
#
#   GRPC_ADDR=127.0.0.1:51001 hack/grpc-predict.sh RUN_ID "some text" ["more text" ...]
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
if [ $# -lt 2 ]; then
  echo "usage: GRPC_ADDR=host:port $0 RUN_ID DOCUMENT [DOCUMENT ...]" >&2
  exit 2
fi
RUN_ID=$1
shift
for document in "$@"; do
  echo "--- Predict (run $RUN_ID): $document"
  request=$(printf '{"runId": "%s", "document": %s}' "$RUN_ID" \
    "$(printf '%s' "$document" | sed 's/\\/\\\\/g; s/"/\\"/g; s/^/"/; s/$/"/')")
  grpc -max-time 300 -d "$request" "$GRPC_ADDR" prediction.PredictionService/Predict
done
