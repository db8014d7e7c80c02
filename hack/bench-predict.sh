#!/usr/bin/env bash
# Benchmark: the predictor's throughput and latency over gRPC and over the Open Inference
# Protocol v2's REST, beside the original design's predictor (a Python grpcio server running the
# same model, hack/bench/predictor_baseline.py; gRPC only) and the framework's ceiling
# (predictor/examples/constant.rs: tonic and axum on the predictor's runtime and transport
# settings answering a constant, no model), in one run on this machine.
#
#   hack/bench-predict.sh [SECONDS] [RUNS]    default: 10 s measured per level, 3 runs
#
# Trains the default model (ngram-nb) on tweet_emotion part 1 + part 2 (testdata/), serves it
# from a local directory with each server in turn, and runs the load generator
# (predictor/benches/predict.rs; one client thread, 2 s of warm-up per level) against it:
#   - gRPC, closed loop at concurrency 1, 16 and 64 (min(concurrency, 4) HTTP/2 connections);
#     then, for the predictor and the constant server, open loop at half the rate that server
#     reached at concurrency 64 in the same run (latency from each request's due time);
#   - REST (predictor and constant server), closed loop at concurrency 64 (one HTTP/1.1
#     connection per client), then open loop at half that peak over 64 connections.
# RUNS times, the servers alternating; each row of the table is the median of the runs (every
# run's lines are printed as they come). Documents are real tweets cycled in order: the
# validation split (../shared/data/tweet_emotion/validation.csv, not used for training) or,
# without it, testdata part 1; never the test split. Environment:
#   BENCH_PREDICT_CONCURRENCY  gRPC levels (default 1,16,64); the last one is "saturation"
#   BENCH_PREDICT_WARMUP       seconds of unmeasured load per level (default 2)
#   BENCH_PREDICT_DOCUMENTS    a raw TextIntent CSV of documents
# Client and server share this machine's cores. Goals at saturation (issue #34), for gRPC and
# for REST: >= 25x the baseline's throughput (gRPC; there is no REST baseline), >= 0.8x the
# constant server's, p99 <= 5 ms at half the peak rate (open loop). grpcio and numpy are
# installed into a virtualenv under ~/.cache/miniautoml (pinned below) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_LEVEL=${1:-10}
RUNS=${2:-3}
LEVELS=${BENCH_PREDICT_CONCURRENCY:-1,16,64}
WARMUP=${BENCH_PREDICT_WARMUP:-2}
GRPCIO_VERSION=1.85.1
NUMPY_VERSION=2.4.6
DATA=testdata/tweet_emotion
DOCUMENTS=${BENCH_PREDICT_DOCUMENTS:-../shared/data/tweet_emotion/validation.csv}
[ -f "$DOCUMENTS" ] || DOCUMENTS=$DATA/tweet_emotion_part1.csv
case "$DOCUMENTS" in */test.csv) echo "bench-predict: not on the test split ($DOCUMENTS)" >&2; exit 1 ;; esac
DOCUMENTS=$(realpath "$DOCUMENTS")
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/miniautoml/bench-venv-predictor-grpcio-$GRPCIO_VERSION-numpy-$NUMPY_VERSION
WORK=$(mktemp -d)
SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap 'stop_server; rm -rf "$WORK"' EXIT

if [ ! -x "$VENV/bin/python" ]; then
  echo "bench-predict: installing grpcio $GRPCIO_VERSION and numpy $NUMPY_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION" "numpy==$NUMPY_VERSION"
fi
cargo build --release --locked --quiet -p miniautoml-predictor -p miniautoml-intent-classification \
  --bin miniautoml-predictor --bin intent-classification
cargo build --release --locked --quiet -p miniautoml-predictor --example constant
cargo bench --locked --quiet -p miniautoml-predictor --bench predict --no-run

"${CARGO_TARGET_DIR:-target}"/release/intent-classification train --data "$DATA/tweet_emotion_part1.csv" "$DATA/tweet_emotion_part2.csv" \
  --out "$WORK/model" >"$WORK/train.log"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Waits (at most 60 s) until `$@` succeeds while the server is alive.
wait_until() {
  for _ in $(seq 600); do
    "$@" && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "bench-predict: the server exited" >&2; return 1; }
    sleep 0.1
  done
  echo "bench-predict: the server did not get ready in 60 s" >&2
  return 1
}
peak_rss_mib() { awk '$1=="VmHWM:" {printf "%.1f", $2/1024}' "/proc/$SERVER_PID/status"; }

# load NAME PORT [ARGS...]: the load generator's lines, printed and kept in $WORK/all.out.
load() {
  local name=$1 port=$2
  shift 2
  cargo bench --locked --quiet -p miniautoml-predictor --bench predict -- --address "127.0.0.1:$port" \
    --name "$name" --duration "$SECONDS_PER_LEVEL" --warmup "$WARMUP" --documents "$DOCUMENTS" "$@" |
    tee -a "$WORK/all.out" "$WORK/level.out"
}
# half_peak: half the req/s of the last closed-loop line in $WORK/level.out.
half_peak() {
  grep -v 'concurrency=open\|first_error' "$WORK/level.out" | tail -1 |
    sed -n 's/.* rps=\([0-9.]*\).*/\1/p' | awk '{ printf "%.0f", $1 / 2 }'
}
# rust: the predictor, baseline: the Python grpcio server; each serves $WORK/model until stopped.
start_rust() {
  port=$(free_port)
  http_port=$(free_port)
  RUST_LOG=warn "${CARGO_TARGET_DIR:-target}"/release/miniautoml-predictor --model-uri "$WORK/model" --host 127.0.0.1 \
    --grpc-port "$port" --http-port "$http_port" --run-id 1 --model-name tweets --shutdown-delay 0 \
    2>>"$WORK/predictor.log" &
  SERVER_PID=$!
  wait_until curl -sf -o /dev/null "http://127.0.0.1:$http_port/v2/health/ready"
}
start_constant() {
  "${CARGO_TARGET_DIR:-target}"/release/examples/constant 127.0.0.1:0 127.0.0.1:0 >"$WORK/constant.log" 2>&1 &
  SERVER_PID=$!
  wait_until grep -q '^http listening on' "$WORK/constant.log"
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$WORK/constant.log")
  http_port=$(sed -n 's/^http listening on .*:\([0-9]*\)$/\1/p' "$WORK/constant.log")
}
start_baseline() {
  "$VENV/bin/python" hack/bench/predictor_baseline.py --model-dir "$WORK/model" --address 127.0.0.1:0 \
    >"$WORK/baseline.log" 2>&1 &
  SERVER_PID=$!
  wait_until grep -q '^listening on' "$WORK/baseline.log"
  port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$WORK/baseline.log")
}

status=0
echo "PredictorPredict (gRPC) and OIP v2 infer (REST), ngram-nb on tweet_emotion; documents $(realpath --relative-to=. "$DOCUMENTS");" \
  "${SECONDS_PER_LEVEL} s per level after ${WARMUP} s of warm-up; $RUNS runs; $(nproc) cores shared by client and server"
for run in $(seq "$RUNS"); do
  for server in rust constant baseline; do
    "start_$server"
    : >"$WORK/level.out"
    load "$server" "$port" --concurrency "$LEVELS" || status=$?
    if [ "$server" != baseline ]; then
      load "$server" "$port" --rate "$(half_peak)" || status=$?
      : >"$WORK/level.out"
      load "$server-rest" "$http_port" --protocol rest --concurrency 64 || status=$?
      load "$server-rest" "$http_port" --protocol rest --rate "$(half_peak)" --connections 64 || status=$?
    fi
    echo "peak_rss name=$server run=$run mib=$(peak_rss_mib)" | tee -a "$WORK/all.out"
    stop_server
  done
done

echo
awk -v levels="$LEVELS" '
  function median(list,   n, v, i, j, t) {
    n = split(list, v, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return n ? v[int((n + 1) / 2)] : ""
  }
  function row(name, level,   key) {
    key = name SUBSEP level
    if (!(key in rps)) return
    printf "%-13s %11s %8s %10s %8s %8s %8s %7d\n", name, (level == "open" ? "open loop" : level),
      (level == "open" ? median(rate[key]) : "-"), median(rps[key]), median(p50[key]), median(p99[key]), median(max[key]), errors[key]
  }
  function ratio(a, b) { return b > 0 ? a / b : 0 }
  $1 == "predict" && $0 !~ /first_error=/ || $1 == "peak_rss" {
    delete f
    for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    if ($1 == "peak_rss") { rss[f["name"]] = rss[f["name"]] " " f["mib"]; next }
    key = f["name"] SUBSEP f["concurrency"]
    rps[key] = rps[key] " " f["rps"]; p50[key] = p50[key] " " f["p50_ms"]; rate[key] = rate[key] " " f["rate"]
    p99[key] = p99[key] " " f["p99_ms"]; max[key] = max[key] " " f["max_ms"]; errors[key] += f["errors"]
  }
  END {
    n = split(levels, level, ",")
    printf "%-13s %11s %8s %10s %8s %8s %8s %7s\n", "server", "concurrency", "rate/s", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    split("baseline constant rust", names, " ")
    for (i = 1; i <= n; i++) for (s = 1; s <= 3; s++) row(names[s], level[i])
    row("constant", "open"); row("rust", "open")
    row("constant-rest", "64"); row("rust-rest", "64"); row("constant-rest", "open"); row("rust-rest", "open")
    printf "\ngRPC throughput rust/baseline:"
    for (i = 1; i <= n; i++)
      printf "  concurrency %s: %.1fx", level[i], ratio(median(rps["rust" SUBSEP level[i]]), median(rps["baseline" SUBSEP level[i]]))
    printf "\ngRPC throughput rust/constant:"
    for (i = 1; i <= n; i++)
      printf "  concurrency %s: %.2fx", level[i], ratio(median(rps["rust" SUBSEP level[i]]), median(rps["constant" SUBSEP level[i]]))
    printf "\npeak RSS (VmHWM, gRPC and REST runs of a server together): rust predictor %s MiB, constant server %s MiB, baseline %s MiB\n",
      median(rss["rust"]), median(rss["constant"]), median(rss["baseline"])
    top = level[n]
    g_base = ratio(median(rps["rust" SUBSEP top]), median(rps["baseline" SUBSEP top]))
    g_near = ratio(median(rps["rust" SUBSEP top]), median(rps["constant" SUBSEP top]))
    g_tail = median(p99["rust" SUBSEP "open"])
    printf "goals, gRPC (concurrency %s): %.1fx the baseline >= 25x: %s; %.2fx the constant server >= 0.8x: %s; open-loop p99 %s ms at half the peak <= 5 ms: %s\n",
      top, g_base, (g_base >= 25 ? "met" : "MISSED"), g_near, (g_near >= 0.8 ? "met" : "MISSED"), g_tail, (g_tail != "" && g_tail <= 5 ? "met" : "MISSED")
    r_near = ratio(median(rps["rust-rest" SUBSEP "64"]), median(rps["constant-rest" SUBSEP "64"]))
    r_tail = median(p99["rust-rest" SUBSEP "open"])
    printf "goals, REST (concurrency 64): %.2fx the constant server >= 0.8x: %s; open-loop p99 %s ms at half the peak <= 5 ms: %s; no REST baseline (the original design had none)\n",
      r_near, (r_near >= 0.8 ? "met" : "MISSED"), r_tail, (r_tail != "" && r_tail <= 5 ? "met" : "MISSED")
  }' "$WORK/all.out"
[ "$status" -eq 0 ] || echo "bench-predict: some requests failed (see the first_error lines above)" >&2
exit "$status"
