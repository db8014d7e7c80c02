//! Benchmark: many TrainingJobs against many simulated GPU nodes (issue #6's goal: every Job
//! created in < 60 s, operator peak RSS < 150 MiB).
//!
//!     make bench-training        # BENCH_TRAINING_JOBS=1000 BENCH_GPU_NODES=100 by default
//!
//! On the local cluster (started if needed): adds `BENCH_GPU_NODES` kwok nodes with 8 GPUs
//! each, starts the release-build operator for a fresh namespace, creates a small Dataset, then
//! `BENCH_TRAINING_JOBS` TrainingJobs asking for one GPU each. A simulated trainer
//! (test-support's `SimulatedTrainer`) reports every run whose pod kwok runs: run start, three
//! epochs, artifact, run end, with the run's token, through the operator's MetadataStoreService,
//! then kwok ends the pod. Prints the time until every Job exists, until every TrainingJob is
//! Succeeded, the operator's peak RSS (VmHWM), and its Kubernetes API requests per TrainingJob
//! (from its own `miniautoml_operator_kube_api_requests_total`, start-up excluded).

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::batch::v1::Job;
use kube::{Api, api::ListParams};
use miniautoml_api::{TrainingJob, training_job::TrainingPhase};
use miniautoml_test_support::{LocalCluster, OperatorProcess, TestNamespace, install_crds};

use common::{
    GPUS_PER_NODE, api_requests, create_runs, env_number, gpu_nodes, peak_rss_mib, remove_gpu_nodes,
    requests_between, simulate, small_dataset,
};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs = env_number("BENCH_TRAINING_JOBS", 1000);
    let node_count = env_number("BENCH_GPU_NODES", 100);
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    gpu_nodes(&client, node_count).await;
    let ns = TestNamespace::new(cluster, &client, "bench-training")
        .await
        .unwrap();
    let operator = OperatorProcess::start(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        &ns.name,
        &cluster.s3_secret_key,
    );

    // A small Dataset (one commit), ingested before the clock starts.
    small_dataset(cluster, &client, &ns.name, &operator).await;
    let before = api_requests(&operator);

    // The simulated trainer: every run pod kwok runs is reported and ended.
    let simulation = simulate(&client, cluster, &operator, &ns.name, Duration::ZERO).await;

    println!(
        "{runs} TrainingJobs (1 GPU each), {node_count} simulated GPU nodes with {GPUS_PER_NODE} GPUs each"
    );
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns.name);
    let start = Instant::now();
    create_runs(&jobs, runs, None).await;
    let created = start.elapsed();
    let batch_jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let mut all_jobs = None;
    let mut all_succeeded = None;
    let limit = Duration::from_secs(env_number("BENCH_TIMEOUT_SECONDS", 900) as u64);
    let mut phases = BTreeMap::new();
    while all_succeeded.is_none() && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if all_jobs.is_none() {
            let count = batch_jobs
                .list_metadata(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
            if count >= runs {
                all_jobs = Some(start.elapsed());
            }
        }
        phases = BTreeMap::new();
        for job in jobs.list(&ListParams::default()).await.unwrap().items {
            let phase = job.status.and_then(|s| s.phase);
            *phases.entry(format!("{phase:?}")).or_insert(0usize) += 1;
        }
        if phases.get(&format!("{:?}", Some(TrainingPhase::Succeeded))) == Some(&runs) {
            all_succeeded = Some(start.elapsed());
        }
    }
    let after = api_requests(&operator);
    let rss = peak_rss_mib(operator.pid());
    let total = requests_between(&before, &after);
    let seconds =
        |d: Option<Duration>| d.map_or("not reached".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));

    println!(
        "TrainingJobs created by the client:   {:.1} s",
        created.as_secs_f64()
    );
    println!(
        "every Job created:                    {}   (goal < 60 s)",
        seconds(all_jobs)
    );
    if let Some(all_jobs) = all_jobs {
        println!(
            "  of which after the last TrainingJob: {:.1} s",
            all_jobs.saturating_sub(created).as_secs_f64()
        );
    }
    println!("every TrainingJob Succeeded:          {}", seconds(all_succeeded));
    println!("TrainingJob phases at the end:        {phases:?}");
    println!("operator peak RSS:                    {rss:.1} MiB   (goal < 150 MiB)");
    println!(
        "operator API requests per TrainingJob: {:.1}",
        total / runs as f64
    );
    for (verb, n) in &after {
        let per_run = (n - before.get(verb).unwrap_or(&0.0)) / runs as f64;
        println!("  {verb:<8} {per_run:.2}");
    }
    let failed = simulation.stop();
    let met = all_jobs.is_some_and(|d| d < Duration::from_secs(60))
        && rss < 150.0
        && all_succeeded.is_some()
        && failed == 0;
    println!("goal: {}", if met { "met" } else { "NOT met" });

    drop(operator);
    drop(ns);
    remove_gpu_nodes(&client, node_count).await;
    if !met {
        std::process::exit(1);
    }
}
