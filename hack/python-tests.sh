#!/usr/bin/env bash
# The Python training helper's unit tests (training-code/miniautoml-training/tests), with
# Debian 12's python3 and the packages the PyTorch image has (grpcio, protobuf, boto3). The
# helper's work on the real node is tested by operator/tests/pytorch.rs.
set -euo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
ensure_debian_packages python3 python3-grpcio python3-protobuf python3-boto3
cd "$REPO_ROOT/training-code/miniautoml-training"
/usr/bin/python3 -B -m unittest discover -s tests "$@"
