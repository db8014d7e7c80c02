#!/usr/bin/env bash
# Benchmark: Dataset ingestion throughput and the operator's peak memory (issue #4's goal:
# >= 100 MB/s and peak RSS < 64 MiB, for a 100 MB and a 1 GB TextIntent CSV).
#
#   hack/bench-ingest.sh [SIZE_MB...]      default: 100 1000
#
# For each size: generates a TextIntent CSV (tweet-like rows, 4 labels, some multi-label and
# quoted), uploads it to the local cluster's S3 server, starts a fresh release-build operator
# watching only the benchmark namespace, applies a Dataset with that one commit and times it
# from apply until status.commitCount is 1. Peak RSS is the operator's VmHWM (/proc) at the
# end. Runs on the local cluster (started if needed); prints one row per size.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. hack/lib.sh
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100 1000)
NAMESPACE=bench-ingest
WORK=$(mktemp -d)
OPERATOR_PID=
cleanup() {
  [ -n "$OPERATOR_PID" ] && kill "$OPERATOR_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

hack/tools.sh cluster >/dev/null
# shellcheck disable=SC1090
. "$(hack/cluster.sh up)"
cargo build --release --locked --quiet -p miniautoml-operator --bin miniautoml-operator
OPERATOR=${CARGO_TARGET_DIR:-target}/release/miniautoml-operator
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# generate FILE MB: TextIntent rows until the file has MB megabytes.
generate() {
  python3 - "$1" "$2" <<'PY'
import random, sys
path, megabytes = sys.argv[1], int(sys.argv[2])
random.seed(7)
words = "the a to and of i you it is in that my for this was so on me just with be not have but are".split() + \
        "happy sad angry great terrible love hate today tomorrow work home game weather coffee music".split()
labels = ["joy", "sadness", "anger", "optimism"]
target = megabytes * 1_000_000
rows = []
with open(path, "w", encoding="utf-8") as out:
    written = 0
    while written < target:
        text = " ".join(random.choice(words) for _ in range(random.randint(8, 30)))
        if random.random() < 0.1:
            text = f'"{text}, she said ""really"""'
        label = random.choice(labels) if random.random() < 0.9 else ";".join(random.sample(labels, 2))
        line = f"{text},{label}\n"
        out.write(line)
        written += len(line.encode())
PY
}

printf '%-8s %10s %10s %10s %12s %14s %8s\n' size_MB rows seconds MB_per_s peak_RSS_MiB operator_CPU_s goal
for size in "${SIZES[@]}"; do
  file=$WORK/intent-$size.csv
  generate "$file" "$size"
  bytes=$(stat -c %s "$file")
  rows=$(wc -l <"$file")
  s3_put "$file" "raw/$NAMESPACE/intent-$size.csv"
  rm -f "$file"

  kubectl delete dataset -n "$NAMESPACE" "bench-$size" --ignore-not-found --wait=false >/dev/null
  "$OPERATOR" --admin-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --original-contract-addr none --console-addr none --watch-namespace "$NAMESPACE" \
    --log-format json >"$WORK/operator-$size.log" 2>&1 &
  OPERATOR_PID=$!
  kubectl wait -n "$NAMESPACE" --for=delete "dataset/bench-$size" --timeout=120s >/dev/null 2>&1 || true
  start=$(date +%s.%N)
  kubectl apply -n "$NAMESPACE" -f - >/dev/null <<EOT
apiVersion: miniautoml.io/v1alpha1
kind: Dataset
metadata: {name: bench-$size}
spec:
  type: TextIntent
  commits:
    - {message: "$size MB", source: {bucket: $S3_BUCKET, key: raw/$NAMESPACE/intent-$size.csv}}
EOT
  kubectl wait -n "$NAMESPACE" --for=jsonpath='{.status.commitCount}'=1 --timeout=1200s "dataset/bench-$size" >/dev/null
  end=$(date +%s.%N)
  examples=$(kubectl get -n "$NAMESPACE" "dataset/bench-$size" -o jsonpath='{.status.commits[0].statistics.numExamples}')
  [ "$examples" = "$rows" ] || { echo "ingested $examples rows of $rows" >&2; exit 1; }
  peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$OPERATOR_PID/status")
  cpu_ticks=$(awk '{print $14 + $15}' "/proc/$OPERATOR_PID/stat")
  # Free the space before the next size: the commit's objects (the operator's finalizer) and
  # the source.
  kubectl delete dataset -n "$NAMESPACE" "bench-$size" --wait=true --timeout=300s >/dev/null
  kill "$OPERATOR_PID"; wait "$OPERATOR_PID" 2>/dev/null || true; OPERATOR_PID=
  awk -v s="$size" -v r="$rows" -v b="$bytes" -v t0="$start" -v t1="$end" -v p="$peak_kib" \
    -v c="$cpu_ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    t = t1 - t0; mbs = b / 1e6 / t; rss = p / 1024;
    goal = (mbs >= 100 && rss < 64) ? "met" : "missed";
    printf "%-8s %10d %10.2f %10.1f %12.1f %14.2f %8s\n", s, r, t, mbs, rss, c / hz, goal }'
  curl -fsS -X DELETE --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "$S3_ENDPOINT/$S3_BUCKET/raw/$NAMESPACE/intent-$size.csv" >/dev/null
done
echo "(goal: >= 100 MB/s and peak RSS < 64 MiB; MB = 10^6 bytes of source CSV; $(nproc) cores)"
