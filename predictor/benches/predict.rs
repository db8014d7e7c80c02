//! Load generator for the predictor: `prediction.Predictor/PredictorPredict` over gRPC, or the
//! Open Inference Protocol v2's `POST /v2/models/{name}/infer` over HTTP/1.1 (`--protocol rest`);
//! closed-loop clients at each concurrency level, then open-loop runs at fixed rates.
//!
//!     cargo bench --locked -p miniautoml-predictor --bench predict -- \
//!         --address 127.0.0.1:8081 [--name rust] [--protocol grpc|rest] [--model tweets] \
//!         [--concurrency 1,16,64] [--rate 15000] [--duration 10] [--warmup 2] \
//!         [--connections 4] [--documents CSV] [--run-id 1] [--threads 1]
//!
//! Closed loop: each of `concurrency` tasks sends a request, waits for its response and sends
//! the next, cycling through the tweets of `--documents` (a raw TextIntent CSV: text, label),
//! each task from its own offset. Over gRPC the tasks share `min(concurrency, --connections)`
//! HTTP/2 connections round robin, so one connection is not the bottleneck; over REST each task
//! has its own HTTP/1.1 connection. After `--warmup` seconds (not counted), the requests that
//! complete within the next `--duration` seconds are counted.
//!
//! Open loop (`--rate`, requests per second in all): request `i` is due at `start + i / rate`
//! and is sent then whatever the earlier ones are doing (gRPC: on the `--connections`
//! connections; REST: on the first idle one of `--connections` HTTP/1.1 connections, waiting for
//! one if all are busy). Its latency runs from when it was due, not from when it went out, so a
//! server that falls behind shows it (no coordinated omission). The requests due within the
//! measured window are counted. At most `MAX_IN_FLIGHT` are outstanding; one more is an error.
//!
//! One line per level:
//!
//!     predict name=rust concurrency=16 connections=4 seconds=10.000 requests=123456 errors=0 rps=12345.6 p50_ms=1.234 p99_ms=2.345 max_ms=9.876
//!     predict name=rust concurrency=open rate=15000 connections=4 seconds=10.000 requests=150000 errors=0 rps=15000.0 p50_ms=… p99_ms=… max_ms=…
//!
//! A failed request (a gRPC error or an HTTP status other than 200, a timeout, or a response
//! that is not the predictor's answer) is an error; the first one's message is printed, and the
//! process exits 1 if any level had one. hack/bench-predict.sh runs this against the predictor,
//! a no-model server and the Python baseline.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::{Request, body::Bytes, client::conn::http1::SendRequest};
use miniautoml_intent_classification::data::Examples;
use miniautoml_proto::prediction::{PredictorPredictRequest, predictor_client::PredictorClient};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Most open-loop requests outstanding at once; the client gives up on more.
const MAX_IN_FLIGHT: usize = 20_000;

/// Tweets from the training data, always in the repository.
const DEFAULT_DOCUMENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/tweet_emotion/tweet_emotion_part1.csv"
);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// prediction.Predictor/PredictorPredict over HTTP/2.
    Grpc,
    /// OIP v2 infer over HTTP/1.1, one document per request.
    Rest,
}

#[derive(Parser, Debug)]
#[command(about = "Predictor load generator (gRPC PredictorPredict or OIP v2 REST infer)")]
struct Args {
    /// The server, HOST:PORT (its gRPC port, or its HTTP port with --protocol rest).
    #[arg(long, env = "BENCH_PREDICT_ADDRESS")]
    address: String,
    /// Name printed on every line (which server this is).
    #[arg(long, default_value = "server")]
    name: String,
    /// The protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// The model name in REST paths.
    #[arg(long, default_value = "tweets")]
    model: String,
    /// Closed-loop concurrency levels, comma-separated; 1,16,64 unless --rate is given.
    #[arg(long, env = "BENCH_PREDICT_CONCURRENCY", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Open-loop rates in requests per second, comma-separated, run after the closed-loop levels.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Measured seconds per level.
    #[arg(long, env = "BENCH_PREDICT_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each level's measurement, not counted.
    #[arg(long, env = "BENCH_PREDICT_WARMUP", default_value_t = 2.0)]
    warmup: f64,
    /// Most gRPC connections per level; open-loop REST connections.
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

/// What the requests of a level saw during the measured window.
#[derive(Default)]
struct Tally {
    /// Latency of each successful request, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, outcome: Result<(), String>, latency: Duration) {
        match outcome {
            Ok(()) => self.latencies.push(latency.as_nanos() as u64),
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One level's figures: `what` is `concurrency=N` or `concurrency=open rate=R`.
struct Level {
    what: String,
    connections: usize,
    seconds: f64,
    tally: Tally,
}

/// Where requests go: gRPC channels (multiplexed, chosen round robin), or a pool of idle
/// HTTP/1.1 connections (one request at a time each).
enum Target {
    Grpc {
        clients: Vec<PredictorClient<Channel>>,
        run_id: String,
    },
    Rest {
        idle: tokio::sync::Mutex<mpsc::Receiver<SendRequest<Full<Bytes>>>>,
        back: mpsc::Sender<SendRequest<Full<Bytes>>>,
        path: String,
        host: String,
    },
}

impl Target {
    async fn connect(args: &Args, connections: usize) -> Result<Target, String> {
        match args.protocol {
            Protocol::Grpc => {
                let endpoint = Endpoint::from_shared(format!("http://{}", args.address))
                    .map_err(|e| format!("address {:?}: {e}", args.address))?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(5));
                let mut clients = Vec::with_capacity(connections);
                for _ in 0..connections {
                    // Each `connect` opens its own HTTP/2 connection.
                    let channel = endpoint
                        .connect()
                        .await
                        .map_err(|e| format!("connecting to {}: {e}", args.address))?;
                    clients.push(PredictorClient::new(channel));
                }
                Ok(Target::Grpc {
                    clients,
                    run_id: args.run_id.clone(),
                })
            }
            Protocol::Rest => {
                let (back, idle) = mpsc::channel(connections);
                for _ in 0..connections {
                    let stream = tokio::net::TcpStream::connect(&args.address)
                        .await
                        .map_err(|e| format!("connecting to {}: {e}", args.address))?;
                    stream.set_nodelay(true).map_err(|e| e.to_string())?;
                    let (sender, connection) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                            .map_err(|e| format!("HTTP/1.1 handshake with {}: {e}", args.address))?;
                    tokio::spawn(connection);
                    back.send(sender).await.map_err(|e| e.to_string())?;
                }
                Ok(Target::Rest {
                    idle: tokio::sync::Mutex::new(idle),
                    back,
                    path: format!("/v2/models/{}/infer", args.model),
                    host: args.address.clone(),
                })
            }
        }
    }

    /// Sends request number `i` with `document`; Ok when the server gave the predictor's answer.
    async fn request(&self, i: usize, document: &str) -> Result<(), String> {
        match self {
            Target::Grpc { clients, run_id } => {
                let mut client = clients[i % clients.len()].clone();
                let request = PredictorPredictRequest {
                    run_id: run_id.clone(),
                    document: document.to_string(),
                };
                match client.predictor_predict(request).await {
                    Ok(response) if response.get_ref().response.starts_with("{\"result\"") => Ok(()),
                    Ok(response) => Err(format!("unexpected response {:?}", response.get_ref().response)),
                    Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
                }
            }
            Target::Rest {
                idle,
                back,
                path,
                host,
            } => {
                let mut sender = idle.lock().await.recv().await.ok_or("no connection left")?;
                let outcome = rest_request(&mut sender, path, host, document).await;
                // A connection that failed is not given back: later requests use the others.
                if outcome.is_ok() {
                    let _ = back.send(sender).await;
                }
                outcome
            }
        }
    }
}

async fn rest_request(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    host: &str,
    document: &str,
) -> Result<(), String> {
    let body = serde_json::json!({
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [document]}],
    });
    let request = Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| format!("connection: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();
    if status != hyper::StatusCode::OK {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    if !body.starts_with(b"{\"model_name\"") || !contains(&body, b"\"outputs\"") {
        return Err(format!("unexpected response {}", String::from_utf8_lossy(&body)));
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

fn main() {
    let args = Args::parse();
    let documents = match read_documents(&args.documents) {
        Ok(documents) if !documents.is_empty() => Arc::new(documents),
        Ok(_) => fail(&format!("{}: no documents", args.documents.display())),
        Err(error) => fail(&format!("{}: {error}", args.documents.display())),
    };
    if args.concurrency.contains(&0)
        || args.connections == 0
        || args.duration <= 0.0
        || args.warmup < 0.0
        || args.rate.iter().any(|rate| !rate.is_finite() || *rate <= 0.0)
    {
        fail(
            "--concurrency levels, --rate and --connections must be positive, --duration > 0, --warmup >= 0",
        );
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
    let levels = if args.concurrency.is_empty() && args.rate.is_empty() {
        vec![1, 16, 64]
    } else {
        args.concurrency.clone()
    };
    let mut failed = false;
    for &concurrency in &levels {
        let level = runtime
            .block_on(closed_level(&args, concurrency, documents.clone()))
            .unwrap_or_else(|e| fail(&e));
        print_level(&args.name, &level);
        failed |= level.tally.errors > 0;
    }
    for &rate in &args.rate {
        let level = runtime
            .block_on(open_level(&args, rate, documents.clone()))
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

async fn closed_level(args: &Args, concurrency: usize, documents: Arc<Vec<String>>) -> Result<Level, String> {
    let connections = match args.protocol {
        Protocol::Grpc => concurrency.min(args.connections),
        Protocol::Rest => concurrency,
    };
    let target = Arc::new(Target::connect(args, connections).await?);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let measure_until = measure_from + Duration::from_secs_f64(args.duration);
    let stride = documents.len() / concurrency + 1;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            tokio::spawn(client_loop(
                target.clone(),
                documents.clone(),
                task,
                task * stride,
                (measure_from, measure_until),
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.map_err(|e| format!("a client task failed: {e}"))?);
    }
    Ok(Level {
        what: format!("concurrency={concurrency}"),
        connections,
        seconds: args.duration,
        tally,
    })
}

/// Request after request until `until`; counts the ones that complete in `[from, until)`.
async fn client_loop(
    target: Arc<Target>,
    documents: Arc<Vec<String>>,
    task: usize,
    offset: usize,
    (from, until): (Instant, Instant),
) -> Tally {
    let mut tally = Tally::default();
    let mut next = offset;
    loop {
        let sent = Instant::now();
        if sent >= until {
            return tally;
        }
        let document = &documents[next % documents.len()];
        next += 1;
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, target.request(task, document)).await;
        let done = Instant::now();
        if done >= from && done < until {
            tally.record(flatten(outcome), done - sent);
        }
    }
}

fn flatten(outcome: Result<Result<(), String>, tokio::time::error::Elapsed>) -> Result<(), String> {
    outcome.unwrap_or_else(|_| Err(format!("no response within {REQUEST_TIMEOUT:?}")))
}

/// Requests sent at `rate` per second on a fixed schedule for the warm-up and the measured
/// window; each one's latency counted from when it was due.
async fn open_level(args: &Args, rate: f64, documents: Arc<Vec<String>>) -> Result<Level, String> {
    let target = Arc::new(Target::connect(args, args.connections).await?);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let measure_until = measure_from + Duration::from_secs_f64(args.duration);
    // Bounded in count (the schedule) and in time (each request's timeout).
    let total = ((args.warmup + args.duration) * rate).ceil() as usize;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        // Timers have millisecond resolution: the requests due by the time it fires go out at once.
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let counted = due >= measure_from && due < measure_until;
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            if counted {
                let error = format!("over {MAX_IN_FLIGHT} requests outstanding: the server fell behind");
                tally.lock().unwrap().record(Err(error), Duration::ZERO);
            }
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (target, documents, tally, in_flight) = (
            target.clone(),
            documents.clone(),
            tally.clone(),
            in_flight.clone(),
        );
        requests.spawn(async move {
            let document = &documents[i % documents.len()];
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, target.request(i, document)).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if counted {
                tally.lock().unwrap().record(flatten(outcome), due.elapsed());
            }
        });
        // Reap the finished ones now and then, so the set stays small.
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    Ok(Level {
        what: format!("concurrency=open rate={rate}"),
        connections: args.connections,
        seconds: args.duration,
        tally,
    })
}

fn print_level(name: &str, level: &Level) {
    let mut latencies = level.tally.latencies.clone();
    latencies.sort_unstable();
    let ms = |nanos: u64| nanos as f64 / 1e6;
    let requests = latencies.len();
    println!(
        "predict name={name} {} connections={} seconds={:.3} requests={requests} errors={} rps={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        level.what,
        level.connections,
        level.seconds,
        level.tally.errors,
        requests as f64 / level.seconds,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or(0)),
    );
    if let Some(error) = &level.tally.first_error {
        println!("predict name={name} {} first_error={error:?}", level.what);
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
