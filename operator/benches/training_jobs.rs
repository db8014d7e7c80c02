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

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Node, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use miniautoml_api::{Dataset, TrainingJob, training_job::TrainingPhase};
use miniautoml_data::Store;
use miniautoml_test_support::{
    LocalCluster, OperatorProcess, TestNamespace, install_crds, repo_root,
    simulated::{EXIT_CODE_ANNOTATION, SimulatedTrainer},
};

const GPUS_PER_NODE: u32 = 8;
const POOL: &str = "bench-gpu";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn node(index: usize) -> Node {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": format!("{POOL}-{index}"),
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": format!("{POOL}-{index}"),
                "type": "kwok", "miniautoml.io/pool": POOL, "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {"taints": [
            {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
        ]},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": GPUS_PER_NODE.to_string()},
            "capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": GPUS_PER_NODE.to_string()},
        },
    }))
    .unwrap()
}

fn training_job(index: usize) -> TrainingJob {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": format!("run-{index:05}")},
        "spec": {
            "algorithm": "intent-classification",
            "dataset": {"name": "tweets"},
            "parameters": {"EPOCHS": "3"},
            "outputModelName": "intent",
            "resources": {"gpus": 1},
            "nodeSelector": {"miniautoml.io/pool": POOL},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }))
    .unwrap()
}

/// The operator's API request counters, by verb.
fn api_requests(operator: &OperatorProcess) -> BTreeMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(operator.admin_addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("miniautoml_operator_kube_api_requests_total{verb=\"")?;
            let (verb, value) = rest.split_once("\"} ")?;
            Some((verb.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs = env_number("BENCH_TRAINING_JOBS", 1000);
    let node_count = env_number("BENCH_GPU_NODES", 100);
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    for index in 0..node_count {
        let _ = nodes
            .delete(&format!("{POOL}-{index}"), &DeleteParams::default())
            .await;
    }
    for index in 0..node_count {
        nodes.create(&PostParams::default(), &node(index)).await.unwrap();
    }
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
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let key = format!("raw/{}/part1.csv", ns.name);
    let part = std::fs::read(repo_root().join("testdata/tweet_emotion/tweet_emotion_part2.csv")).unwrap();
    store.put(&key, part, "text/csv").await.unwrap();
    let datasets: Api<Dataset> = Api::namespaced(client.clone(), &ns.name);
    let dataset: Dataset = serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1", "kind": "Dataset",
        "metadata": {"name": "tweets"},
        "spec": {"type": "TextIntent", "commits": [{"message": "part 2", "source": {"bucket": cluster.s3_bucket, "key": key}}]},
    }))
    .unwrap();
    datasets.create(&PostParams::default(), &dataset).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while datasets
        .get("tweets")
        .await
        .unwrap()
        .status
        .is_none_or(|s| s.commit_count < 1)
    {
        assert!(Instant::now() < deadline, "the Dataset was not ingested in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admin_deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(operator.admin_addr).is_err() {
        assert!(
            Instant::now() < admin_deadline,
            "the operator's admin server did not answer in 60 s; see {}",
            miniautoml_test_support::operator_log_path(&ns.name).display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = api_requests(&operator);

    // The simulated trainer: every run pod kwok runs is reported and ended.
    let trainer = SimulatedTrainer::connect(client.clone(), cluster.s3(), operator.grpc_addr)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let reported = Arc::new(Mutex::new(HashSet::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let simulation = {
        let (reported, failures) = (reported.clone(), failures.clone());
        let permits = Arc::new(tokio::sync::Semaphore::new(32));
        tokio::spawn(async move {
            let config = watcher::Config::default().labels("miniautoml.io/run-id");
            let mut events = watcher(pods, config).applied_objects().boxed();
            while let Some(pod) = events.try_next().await.unwrap_or(None) {
                let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if !running
                    || pod.annotations().contains_key(EXIT_CODE_ANNOTATION)
                    || !reported.lock().unwrap().insert(pod.name_any())
                {
                    continue;
                }
                let (trainer, failures) = (trainer.clone(), failures.clone());
                let permit = permits.clone().acquire_owned().await.unwrap();
                tokio::spawn(async move {
                    if let Err(error) = trainer.finish(&pod, 3).await {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {error}", pod.name_any()));
                    }
                    drop(permit);
                });
            }
        })
    };

    println!(
        "{runs} TrainingJobs (1 GPU each), {node_count} simulated GPU nodes with {GPUS_PER_NODE} GPUs each"
    );
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns.name);
    let start = Instant::now();
    futures::stream::iter(0..runs)
        .map(|index| {
            let jobs = jobs.clone();
            async move {
                jobs.create(&PostParams::default(), &training_job(index))
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
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
    simulation.abort();
    let after = api_requests(&operator);
    let rss = peak_rss_mib(operator.pid());
    let total: f64 = after
        .iter()
        .map(|(verb, n)| n - before.get(verb).unwrap_or(&0.0))
        .sum();
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
    let failures = failures.lock().unwrap().clone();
    println!(
        "simulated trainers: {} reported, {} failed",
        reported.lock().unwrap().len(),
        failures.len()
    );
    for failure in failures.iter().take(5) {
        println!("  {failure}");
    }
    let met = all_jobs.is_some_and(|d| d < Duration::from_secs(60)) && rss < 150.0 && all_succeeded.is_some();
    println!("goal: {}", if met { "met" } else { "NOT met" });

    drop(operator);
    drop(ns);
    for index in 0..node_count {
        let _ = nodes
            .delete(&format!("{POOL}-{index}"), &DeleteParams::default())
            .await;
    }
    if !met {
        std::process::exit(1);
    }
}
