//! Benchmark (issue #31): single-GPU TrainingJobs through Kueue beside the same runs through
//! the operator's own queue, in one run, on the local cluster's real Kueue and simulated GPU
//! nodes.
//!
//!     make bench-kueue     # BENCH_KUEUE_RUNS=500 BENCH_KUEUE_GPUS=100 BENCH_HOLD_MS=2000
//!
//! Each pass gets a fresh namespace, its own operator (release build, `--max-concurrent-runs`
//! = the quota, which Kueue's runs are outside of), a small Dataset and the simulated trainer,
//! which holds every run pod kwok runs `BENCH_HOLD_MS` before reporting it (three epochs,
//! artifact) and ending it. The FIFO pass creates the runs plainly; the Kueue pass puts them in
//! a LocalQueue whose ClusterQueue has `BENCH_KUEUE_GPUS` GPUs. Both on
//! `BENCH_GPU_NODES` nodes of 8 GPUs (more GPUs than the quota, so that the queue decides).
//! Prints, per pass: the time until every run has started (its Job exists, unsuspended) and
//! until every run Succeeded, the most run pods alive at once (sampled every 250 ms: never
//! more than the quota), the operator's peak RSS and API requests per run, and Kueue's
//! manager's resident and peak memory.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{Api, Client, api::ListParams};
use miniautoml_api::TrainingJob;
use miniautoml_test_support::{LocalCluster, OperatorProcess, TestNamespace, install_crds};

use common::{
    GPUS_PER_NODE, api_requests, count_succeeded, create_runs, env_number, gpu_nodes, memory_mib,
    peak_rss_mib, remove_gpu_nodes, requests_between, simulate, small_dataset,
};

/// What one pass measured.
struct Pass {
    started: Option<Duration>,
    succeeded: Option<Duration>,
    most_at_once: usize,
    operator_peak_mib: f64,
    requests_per_run: f64,
    failed: usize,
}

/// The Kueue manager's process id on this machine (its container runs here).
fn kueue_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let first = cmdline.split(|b| *b == 0).next()?;
        let config = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == b"--config=/controller_manager_config.yaml");
        (first == b"/manager" && config).then_some(pid)
    })
}

async fn pass(
    cluster: &LocalCluster,
    client: &Client,
    kueue: bool,
    runs: usize,
    quota: usize,
    hold: Duration,
) -> Pass {
    let label = if kueue { "bench-kueue" } else { "bench-fifo" };
    let ns = TestNamespace::new(cluster, client, label).await.unwrap();
    let operator = OperatorProcess::start_at(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        &ns.name,
        &cluster.s3_secret_key,
        cluster.free_addr(),
        &["--max-concurrent-runs", &quota.to_string()],
    );
    small_dataset(cluster, client, &ns.name, &operator).await;
    if kueue {
        cluster.gpu_queue(&ns.name, &ns.name, "gpus", quota as u32);
    }
    let before = api_requests(&operator);
    let simulation = simulate(client, cluster, &operator, &ns.name, hold).await;

    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns.name);
    let start = Instant::now();
    create_runs(&jobs, runs, kueue.then_some("gpus")).await;
    let batch_jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let limit = Duration::from_secs(env_number("BENCH_TIMEOUT_SECONDS", 1200) as u64);
    let (mut started, mut succeeded, mut most_at_once) = (None, None, 0);
    while succeeded.is_none() && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let alive = pods
            .list(&ListParams::default().labels("miniautoml.io/run-id"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .count();
        most_at_once = most_at_once.max(alive);
        if started.is_none() {
            let unsuspended = batch_jobs
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|j| j.spec.as_ref().and_then(|s| s.suspend) != Some(true))
                .count();
            if unsuspended >= runs {
                started = Some(start.elapsed());
            }
        }
        let done = count_succeeded(&jobs).await;
        if done >= runs {
            succeeded = Some(start.elapsed());
        }
    }
    let after = api_requests(&operator);
    let requests = requests_between(&before, &after);
    println!("{label}:");
    let failed = simulation.stop();
    Pass {
        started,
        succeeded,
        most_at_once,
        operator_peak_mib: peak_rss_mib(operator.pid()),
        requests_per_run: requests / runs as f64,
        failed,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs = env_number("BENCH_KUEUE_RUNS", 500);
    let quota = env_number("BENCH_KUEUE_GPUS", 100);
    let node_count = env_number("BENCH_GPU_NODES", quota.div_ceil(GPUS_PER_NODE as usize) + 4);
    let hold = Duration::from_millis(env_number("BENCH_HOLD_MS", 2000) as u64);
    let cluster = LocalCluster::shared().with_kueue();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    gpu_nodes(&client, node_count).await;
    println!(
        "{runs} TrainingJobs of 1 GPU, each held {} ms by the simulated trainer; queue of {quota} GPUs; \
         {node_count} simulated nodes of {GPUS_PER_NODE} GPUs",
        hold.as_millis()
    );
    let fifo = pass(cluster, &client, false, runs, quota, hold).await;
    let kueue = pass(cluster, &client, true, runs, quota, hold).await;
    remove_gpu_nodes(&client, node_count).await;

    let seconds =
        |d: Option<Duration>| d.map_or("not reached".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    println!("{:<40} {:>16} {:>16}", "", "operator FIFO", "Kueue");
    let row = |name: &str, a: String, b: String| println!("{name:<40} {a:>16} {b:>16}");
    row("every run started", seconds(fifo.started), seconds(kueue.started));
    row(
        "every run Succeeded",
        seconds(fifo.succeeded),
        seconds(kueue.succeeded),
    );
    row(
        &format!("most run pods alive at once (quota {quota})"),
        fifo.most_at_once.to_string(),
        kueue.most_at_once.to_string(),
    );
    row(
        "operator peak RSS",
        format!("{:.1} MiB", fifo.operator_peak_mib),
        format!("{:.1} MiB", kueue.operator_peak_mib),
    );
    row(
        "operator API requests per run",
        format!("{:.1}", fifo.requests_per_run),
        format!("{:.1}", kueue.requests_per_run),
    );
    row(
        "simulated trainers failed",
        fifo.failed.to_string(),
        kueue.failed.to_string(),
    );
    match kueue_pid() {
        Some(pid) => println!(
            "Kueue manager (pid {pid}): RSS {:.1} MiB now, peak {:.1} MiB since it started",
            memory_mib(pid, "VmRSS"),
            memory_mib(pid, "VmHWM")
        ),
        None => println!("Kueue manager: process not found on this machine"),
    }
    let met = [&fifo, &kueue]
        .iter()
        .all(|p| p.succeeded.is_some() && p.most_at_once <= quota && p.failed == 0);
    println!(
        "goal (every run Succeeded, never more than the quota at once): {}",
        if met { "met" } else { "NOT met" }
    );
    if !met {
        std::process::exit(1);
    }
}
