//! Benchmark: many TrainingJobs against many simulated GPU nodes, through the operator's own
//! run queue (issue #34's goals: 1,000 runs → every Job in < 60 s; 10,000 runs → every Job in
//! < 10 min, every run Succeeded, operator RSS < 300 MiB; the queue's cost per lookup flat).
//!
//!     make bench-training                              # 1,000 runs, then 10,000
//!     BENCH_TRAINING_JOBS=1000 make bench-training     # one size
//!
//! On the local cluster (started if needed): adds `BENCH_GPU_NODES` kwok nodes with 8 GPUs
//! each, starts the release-build operator for a fresh namespace with `--max-concurrent-runs`
//! at the GPUs' count (`BENCH_MAX_CONCURRENT_RUNS`) and `--storage-credentials` from
//! `BENCH_STORAGE_CREDENTIALS` (default `scoped`, the chart's), creates a small Dataset, then
//! the TrainingJobs, each asking for one GPU. A simulated trainer (test-support's
//! `SimulatedTrainer`) reports every run whose pod kwok runs: run start, three epochs, artifact,
//! run end, with the run's token, through the operator's MetadataStoreService, then kwok ends
//! the pod. Runs and Jobs are counted from watches (a LIST of 10,000 runs every half second
//! would load the API server being measured). Prints the time until every Job exists, until
//! every TrainingJob is Succeeded, the operator's peak RSS (VmHWM), its Kubernetes API requests
//! per TrainingJob (from its own `miniautoml_operator_kube_api_requests_total`, start-up
//! excluded), the run queue's mean cost per lookup, and the object store's CPU time.

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{Read, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, ResourceExt,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use miniautoml_api::{TrainingJob, training_job::TrainingPhase};
use miniautoml_test_support::{LocalCluster, OperatorProcess, TestNamespace, install_crds};

use common::{
    GPUS_PER_NODE, api_requests, create_runs, env_number, gpu_nodes, peak_rss_mib, remove_gpu_nodes,
    requests_between, simulate, small_dataset,
};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let node_count = env_number("BENCH_GPU_NODES", 100);
    let sizes: Vec<usize> = match std::env::var("BENCH_TRAINING_JOBS") {
        Ok(_) => vec![env_number("BENCH_TRAINING_JOBS", 1000)],
        Err(_) => vec![1000, 10_000],
    };
    let credentials = std::env::var("BENCH_STORAGE_CREDENTIALS").unwrap_or_else(|_| "scoped".into());
    let max_runs = env_number("BENCH_MAX_CONCURRENT_RUNS", node_count * GPUS_PER_NODE as usize);
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    gpu_nodes(&client, node_count).await;
    let mut met = true;
    let mut rows = Vec::new();
    for runs in sizes {
        let row = pass(cluster, &client, runs, node_count, max_runs, &credentials).await;
        met &= row.met;
        rows.push(row);
    }
    println!();
    println!(
        "| runs | every Job | every run Succeeded | peak RSS | API requests per run | queue cost per lookup | lookups | store CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{}", row.line);
    }
    remove_gpu_nodes(&client, node_count).await;
    println!("goal: {}", if met { "met" } else { "NOT met" });
    if !met {
        std::process::exit(1);
    }
}

struct Row {
    line: String,
    met: bool,
}

async fn pass(
    cluster: &LocalCluster,
    client: &kube::Client,
    runs: usize,
    node_count: usize,
    max_runs: usize,
    credentials: &str,
) -> Row {
    let ns = TestNamespace::new(cluster, client, "bench-training")
        .await
        .unwrap();
    let operator = OperatorProcess::start_at(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        &ns.name,
        &cluster.s3_secret_key,
        cluster.free_addr(),
        &[
            &format!("--max-concurrent-runs={max_runs}"),
            &format!("--storage-credentials={credentials}"),
        ],
    );

    // A small Dataset (one commit), ingested before the clock starts.
    small_dataset(cluster, client, &ns.name, &operator).await;
    let before = api_requests(&operator);
    let queue_before = operator_metrics(&operator);
    let store = store_pid();
    let store_cpu_before = store.map(cpu_seconds);

    // The simulated trainer: every run pod kwok runs is reported and ended.
    let simulation = simulate(client, cluster, &operator, &ns.name, Duration::ZERO).await;
    let counts = Counts::watch(client, &ns.name);

    println!(
        "{runs} TrainingJobs (1 GPU each), {node_count} simulated GPU nodes with {GPUS_PER_NODE} GPUs each, \
         --max-concurrent-runs={max_runs}, --storage-credentials={credentials}"
    );
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns.name);
    let start = Instant::now();
    create_runs(&jobs, runs, None).await;
    let created = start.elapsed();
    let mut all_jobs = None;
    let mut all_succeeded = None;
    let limit = Duration::from_secs(env_number("BENCH_TIMEOUT_SECONDS", 900) as u64);
    let mut last_print = Instant::now();
    while all_succeeded.is_none() && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (job_count, succeeded) = counts.now();
        if all_jobs.is_none() && job_count >= runs {
            all_jobs = Some(start.elapsed());
        }
        if succeeded >= runs {
            all_succeeded = Some(start.elapsed());
        }
        if last_print.elapsed() > Duration::from_secs(30) {
            last_print = Instant::now();
            println!(
                "  {:>5.0} s: {job_count} Jobs, {succeeded} Succeeded",
                start.elapsed().as_secs_f64()
            );
        }
    }
    let after = api_requests(&operator);
    let queue_after = operator_metrics(&operator);
    let store_cpu = store.map(cpu_seconds).zip(store_cpu_before).map(|(a, b)| a - b);
    let rss = peak_rss_mib(operator.pid());
    let total = requests_between(&before, &after);
    let phases = counts.phases();
    let seconds =
        |d: Option<Duration>| d.map_or("not reached".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    let delta = |name: &str| queue_after.get(name).unwrap_or(&0.0) - queue_before.get(name).unwrap_or(&0.0);
    let lookups = delta("miniautoml_operator_run_queue_lookups_total");
    let queue_seconds = delta("miniautoml_operator_run_queue_seconds_total");
    let per_lookup_us = if lookups > 0.0 {
        queue_seconds / lookups * 1e6
    } else {
        0.0
    };

    println!(
        "TrainingJobs created by the client:   {:.1} s",
        created.as_secs_f64()
    );
    let job_goal = if runs <= 1000 { 60 } else { 600 };
    println!(
        "every Job created:                    {}   (goal < {job_goal} s)",
        seconds(all_jobs)
    );
    println!("every TrainingJob Succeeded:          {}", seconds(all_succeeded));
    println!("TrainingJob phases at the end:        {phases:?}");
    println!("operator peak RSS:                    {rss:.1} MiB   (goal < 300 MiB)");
    println!(
        "operator API requests per TrainingJob: {:.1}",
        total / runs as f64
    );
    for (request, n) in &after {
        let per_run = (n - before.get(request).unwrap_or(&0.0)) / runs as f64;
        if per_run >= 0.005 {
            println!("  {request:<28} {per_run:.2}");
        }
    }
    println!(
        "run queue: {lookups:.0} lookups, {per_lookup_us:.1} µs each on average (the order's recomputation included)"
    );
    if let Some(cpu) = store_cpu {
        println!("object store CPU:                     {cpu:.1} s");
    }
    let failed = simulation.stop();
    let met = all_jobs.is_some_and(|d| d < Duration::from_secs(job_goal))
        && rss < 300.0
        && all_succeeded.is_some()
        && failed == 0;
    drop(counts);
    drop(operator);
    drop(ns);
    Row {
        line: format!(
            "| {runs} | {} | {} | {rss:.1} MiB | {:.1} | {per_lookup_us:.1} µs | {lookups:.0} | {} |",
            seconds(all_jobs),
            seconds(all_succeeded),
            total / runs as f64,
            store_cpu.map_or("-".to_string(), |c| format!("{c:.1} s")),
        ),
        met,
    }
}

/// The Jobs and the TrainingJobs' phases of a namespace, kept from two watches.
struct Counts {
    jobs: Arc<Mutex<HashSet<String>>>,
    phases: Arc<Mutex<HashMap<String, String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Counts {
    fn watch(client: &kube::Client, namespace: &str) -> Counts {
        let jobs = Arc::new(Mutex::new(HashSet::new()));
        let phases = Arc::new(Mutex::new(HashMap::new()));
        let batch_jobs: Api<PartialObjectMeta<Job>> = Api::namespaced(client.clone(), namespace);
        let runs: Api<TrainingJob> = Api::namespaced(client.clone(), namespace);
        let seen = jobs.clone();
        let job_task = tokio::spawn(async move {
            let mut events = watcher(batch_jobs, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                if let Ok(job) = event {
                    seen.lock().unwrap().insert(job.name_any());
                }
            }
        });
        let seen = phases.clone();
        let run_task = tokio::spawn(async move {
            let mut events = watcher(runs, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                if let Ok(run) = event {
                    let phase = run.status.as_ref().and_then(|s| s.phase);
                    seen.lock().unwrap().insert(run.name_any(), format!("{phase:?}"));
                }
            }
        });
        Counts {
            jobs,
            phases,
            tasks: vec![job_task, run_task],
        }
    }

    /// (Jobs, Succeeded runs).
    fn now(&self) -> (usize, usize) {
        let succeeded = format!("{:?}", Some(TrainingPhase::Succeeded));
        let jobs = self.jobs.lock().unwrap().len();
        let done = self
            .phases
            .lock()
            .unwrap()
            .values()
            .filter(|p| **p == succeeded)
            .count();
        (jobs, done)
    }

    fn phases(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for phase in self.phases.lock().unwrap().values() {
            *counts.entry(phase.clone()).or_insert(0) += 1;
        }
        counts
    }
}

impl Drop for Counts {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Every `miniautoml_operator_*` sample of the operator's `/metrics` without labels.
fn operator_metrics(operator: &OperatorProcess) -> BTreeMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(operator.admin_addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|line| line.starts_with("miniautoml_operator_") && !line.contains('{'))
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The local cluster's SeaweedFS (`weed server`), if it runs on this machine.
fn store_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let mut args = cmdline.split(|b| *b == 0);
        let binary = args.next()?;
        (binary.ends_with(b"/weed") && args.next() == Some(b"server".as_slice())).then_some(pid)
    })
}

/// A process's user + system CPU time, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}
