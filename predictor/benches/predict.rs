//! Load generator for `prediction.Predictor/PredictorPredict`: closed-loop clients at each
//! concurrency level against one server, throughput and latency percentiles per level.
//!
//!     cargo bench --locked -p miniautoml-predictor --bench predict -- \
//!         --address 127.0.0.1:8081 [--name rust] [--concurrency 1,16,64] [--duration 10] \
//!         [--warmup 2] [--connections 4] [--documents CSV] [--run-id 1] [--threads 1]
//!
//! Each of `concurrency` tasks sends a request, waits for its response and sends the next,
//! cycling through the tweets of `--documents` (a raw TextIntent CSV: text, label), each task
//! from its own offset. Tasks share `min(concurrency, --connections)` HTTP/2 connections round
//! robin, so one connection is not the bottleneck. After `--warmup` seconds (not counted), the
//! requests that complete within the next `--duration` seconds are counted. One line per level:
//!
//!     predict name=rust concurrency=16 connections=4 seconds=10.000 requests=123456 errors=0 rps=12345.6 p50_ms=1.234 p99_ms=2.345 max_ms=9.876
//!
//! A failed request (a gRPC error, a timeout, or a response that is not `{"result": ...}`) is
//! an error; the first one's message is printed, and the process exits 1 if any level had one.
//! The hack/bench-predict.sh script runs this against the predictor and the Python baseline.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use miniautoml_intent_classification::data::Examples;
use miniautoml_proto::prediction::{PredictorPredictRequest, predictor_client::PredictorClient};
use tonic::transport::{Channel, Endpoint};

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Tweets from the training data, always in the repository.
const DEFAULT_DOCUMENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/tweet_emotion/tweet_emotion_part1.csv"
);

#[derive(Parser, Debug)]
#[command(about = "gRPC PredictorPredict load generator")]
struct Args {
    /// The server, HOST:PORT.
    #[arg(long, env = "BENCH_PREDICT_ADDRESS")]
    address: String,
    /// Name printed on every line (which server this is).
    #[arg(long, default_value = "server")]
    name: String,
    /// Concurrency levels, comma-separated.
    #[arg(
        long,
        env = "BENCH_PREDICT_CONCURRENCY",
        value_delimiter = ',',
        default_value = "1,16,64"
    )]
    concurrency: Vec<usize>,
    /// Measured seconds per level.
    #[arg(long, env = "BENCH_PREDICT_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each level's measurement, not counted.
    #[arg(long, env = "BENCH_PREDICT_WARMUP", default_value_t = 2.0)]
    warmup: f64,
    /// Most HTTP/2 connections per level.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The documents: a raw TextIntent CSV (text, label), without a header.
    #[arg(long, env = "BENCH_PREDICT_DOCUMENTS", default_value = DEFAULT_DOCUMENTS)]
    documents: PathBuf,
    /// The request's runId.
    #[arg(long, default_value = "1")]
    run_id: String,
    /// Client threads. With one (the default), a current-thread runtime: the load generator
    /// then takes the least CPU from the server it shares the machine with.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one task saw during the measured window.
#[derive(Default)]
struct Tally {
    /// Latency of each successful request, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// One level's figures.
struct Level {
    concurrency: usize,
    connections: usize,
    seconds: f64,
    tally: Tally,
}

fn main() {
    let args = Args::parse();
    let documents = match read_documents(&args.documents) {
        Ok(documents) if !documents.is_empty() => Arc::new(documents),
        Ok(_) => fail(&format!("{}: no documents", args.documents.display())),
        Err(error) => fail(&format!("{}: {error}", args.documents.display())),
    };
    if args.concurrency.contains(&0) || args.connections == 0 || args.duration <= 0.0 || args.warmup < 0.0 {
        fail("--concurrency levels and --connections must be positive, --duration > 0, --warmup >= 0");
    }
    // One thread: a current-thread runtime, so no wake-up crosses threads.
    let mut builder = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(args.threads);
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("tokio runtime: {e}")));
    let mut failed = false;
    for &concurrency in &args.concurrency {
        let level = runtime
            .block_on(run_level(&args, concurrency, documents.clone()))
            .unwrap_or_else(|e| fail(&e));
        print_level(&args.name, &level);
        failed |= level.tally.errors > 0;
    }
    if failed {
        eprintln!("predict: some requests failed");
        std::process::exit(1);
    }
}

fn fail(message: &str) -> ! {
    eprintln!("predict: {message}");
    std::process::exit(2);
}

/// The texts of a raw TextIntent CSV, read as the trainer reads its data.
fn read_documents(path: &Path) -> Result<Vec<String>, String> {
    let examples = Examples::read(&[path.to_path_buf()]).map_err(|e| e.to_string())?;
    Ok(examples
        .texts
        .into_iter()
        .filter(|text| !text.trim().is_empty())
        .collect())
}

async fn run_level(args: &Args, concurrency: usize, documents: Arc<Vec<String>>) -> Result<Level, String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", args.address))
        .map_err(|e| format!("address {:?}: {e}", args.address))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let connections = concurrency.min(args.connections);
    let mut channels: Vec<Channel> = Vec::with_capacity(connections);
    for _ in 0..connections {
        // Each `connect` opens its own HTTP/2 connection.
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connecting to {}: {e}", args.address))?;
        channels.push(channel);
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let measure_until = measure_from + Duration::from_secs_f64(args.duration);
    let stride = documents.len() / concurrency + 1;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let client = PredictorClient::new(channels[task % connections].clone());
            let documents = documents.clone();
            let run_id = args.run_id.clone();
            tokio::spawn(client_loop(
                client,
                documents,
                task * stride,
                run_id,
                measure_from,
                measure_until,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        let task_tally = task.await.map_err(|e| format!("a client task failed: {e}"))?;
        tally.latencies.extend(task_tally.latencies);
        tally.errors += task_tally.errors;
        if tally.first_error.is_none() {
            tally.first_error = task_tally.first_error;
        }
    }
    Ok(Level {
        concurrency,
        connections,
        seconds: args.duration,
        tally,
    })
}

/// Request after request until `until`; counts the ones that complete in `[from, until)`.
async fn client_loop(
    mut client: PredictorClient<Channel>,
    documents: Arc<Vec<String>>,
    offset: usize,
    run_id: String,
    from: Instant,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut next = offset;
    loop {
        let sent = Instant::now();
        if sent >= until {
            return tally;
        }
        let request = PredictorPredictRequest {
            run_id: run_id.clone(),
            document: documents[next % documents.len()].clone(),
        };
        next += 1;
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, client.predictor_predict(request)).await;
        let done = Instant::now();
        if done < from || done >= until {
            continue;
        }
        let error = match outcome {
            Ok(Ok(response)) if response.get_ref().response.starts_with("{\"result\"") => {
                tally.latencies.push((done - sent).as_nanos() as u64);
                continue;
            }
            Ok(Ok(response)) => format!("unexpected response {:?}", response.get_ref().response),
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => format!("no response within {REQUEST_TIMEOUT:?}"),
        };
        tally.errors += 1;
        tally.first_error.get_or_insert(error);
    }
}

fn print_level(name: &str, level: &Level) {
    let mut latencies = level.tally.latencies.clone();
    latencies.sort_unstable();
    let ms = |nanos: u64| nanos as f64 / 1e6;
    let requests = latencies.len();
    println!(
        "predict name={name} concurrency={} connections={} seconds={:.3} requests={requests} errors={} rps={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        level.concurrency,
        level.connections,
        level.seconds,
        level.tally.errors,
        requests as f64 / level.seconds,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or(0)),
    );
    if let Some(error) = &level.tally.first_error {
        println!(
            "predict name={name} concurrency={} first_error={error:?}",
            level.concurrency
        );
    }
}

/// The nearest-rank percentile of sorted values (0 when there are none).
fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
