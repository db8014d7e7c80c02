//! What the TrainingJob benchmarks share: simulated GPU nodes, a small Dataset, a simulated
//! trainer that reports every run pod kwok runs, and the operator's own figures.

#![allow(dead_code)] // each benchmark uses its part

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use miniautoml_api::Dataset;
use miniautoml_data::Store;
use miniautoml_test_support::{
    LocalCluster, OperatorProcess, repo_root,
    simulated::{EXIT_CODE_ANNOTATION, SimulatedTrainer},
};

pub const GPUS_PER_NODE: u32 = 8;
pub const POOL: &str = "bench-gpu";

/// How many of `jobs`' TrainingJobs have Succeeded.
pub async fn count_succeeded(jobs: &kube::Api<miniautoml_api::TrainingJob>) -> usize {
    let list = jobs.list(&Default::default()).await.unwrap();
    let phase = miniautoml_api::training_job::TrainingPhase::Succeeded;
    list.items
        .iter()
        .filter(|j| j.status.as_ref().and_then(|s| s.phase) == Some(phase))
        .count()
}

pub fn env_number(name: &str, default: usize) -> usize {
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

/// `count` simulated GPU nodes (pool [`POOL`]), made afresh.
pub async fn gpu_nodes(client: &Client, count: usize) {
    remove_gpu_nodes(client, count).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for index in 0..count {
        nodes.create(&PostParams::default(), &node(index)).await.unwrap();
    }
}

pub async fn remove_gpu_nodes(client: &Client, count: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    for index in 0..count {
        let _ = nodes
            .delete(&format!("{POOL}-{index}"), &DeleteParams::default())
            .await;
    }
}

/// A TrainingJob `name` asking for one simulated GPU, in Kueue's LocalQueue `queue` if given.
pub fn gpu_run(name: &str, queue: Option<&str>) -> miniautoml_api::TrainingJob {
    let mut spec = serde_json::json!({
        "algorithm": "intent-classification",
        "dataset": {"name": "tweets"},
        "parameters": {"EPOCHS": "3"},
        "outputModelName": "intent",
        "resources": {"gpus": 1},
        "nodeSelector": {"miniautoml.io/pool": POOL},
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
    });
    if let Some(queue) = queue {
        spec["queueName"] = queue.into();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// Creates `runs` one-GPU TrainingJobs `run-00000`… through `jobs` (16 requests in flight), in
/// Kueue's LocalQueue `queue` if given.
pub async fn create_runs(jobs: &Api<miniautoml_api::TrainingJob>, runs: usize, queue: Option<&str>) {
    futures::stream::iter(0..runs)
        .map(|index| {
            let jobs = jobs.clone();
            async move {
                let run = gpu_run(&format!("run-{index:05}"), queue);
                jobs.create(&PostParams::default(), &run).await.unwrap()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// A small Dataset `tweets` (one commit) in `namespace`, ingested, and the operator's admin
/// server answering: the clock starts after this.
pub async fn small_dataset(
    cluster: &LocalCluster,
    client: &Client,
    namespace: &str,
    operator: &OperatorProcess,
) {
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let key = format!("raw/{namespace}/part1.csv");
    let part = std::fs::read(repo_root().join("testdata/tweet_emotion/tweet_emotion_part2.csv")).unwrap();
    store.put(&key, part, "text/csv").await.unwrap();
    let datasets: Api<Dataset> = Api::namespaced(client.clone(), namespace);
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
            miniautoml_test_support::operator_log_path(namespace).display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The simulated trainers of a namespace: every run pod kwok runs is held `hold`, then reported
/// (run start, three epochs, artifact, run end, with the run's token) and ended with exit 0.
pub struct Simulation {
    pub task: tokio::task::JoinHandle<()>,
    pub reported: Arc<Mutex<HashSet<String>>>,
    pub failures: Arc<Mutex<Vec<String>>>,
}

pub async fn simulate(
    client: &Client,
    cluster: &LocalCluster,
    operator: &OperatorProcess,
    namespace: &str,
    hold: Duration,
) -> Simulation {
    let trainer = SimulatedTrainer::connect(client.clone(), cluster.s3(), operator.grpc_addr)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let reported = Arc::new(Mutex::new(HashSet::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let task = {
        let (reported, failures) = (reported.clone(), failures.clone());
        let permits = Arc::new(tokio::sync::Semaphore::new(32));
        tokio::spawn(async move {
            // A watch that fails (an API server too busy to answer) is resumed, never ended:
            // a pod it misses would run forever and the benchmark never finish.
            let config = watcher::Config::default().labels("miniautoml.io/run-id");
            let mut events = watcher(pods, config).default_backoff().applied_objects().boxed();
            while let Some(event) = events.next().await {
                let Ok(pod) = event else { continue };
                let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if !running
                    || pod.annotations().contains_key(EXIT_CODE_ANNOTATION)
                    || !reported.lock().unwrap().insert(pod.name_any())
                {
                    continue;
                }
                let (trainer, failures, permits) = (trainer.clone(), failures.clone(), permits.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    let _permit = permits.acquire_owned().await.unwrap();
                    // A report refused by a busy cluster is tried again (three times in all).
                    let mut last = None;
                    for attempt in 0..3 {
                        match trainer.finish(&pod, 3).await {
                            Ok(()) => return,
                            Err(error) => last = Some(error),
                        }
                        tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                    }
                    if let Some(error) = last {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {error}", pod.name_any()));
                    }
                });
            }
        })
    };
    Simulation {
        task,
        reported,
        failures,
    }
}

impl Simulation {
    /// Stops it; prints how many it reported and the first failures; returns the failures.
    pub fn stop(self) -> usize {
        self.task.abort();
        let failures = self.failures.lock().unwrap().clone();
        println!(
            "simulated trainers: {} reported, {} failed",
            self.reported.lock().unwrap().len(),
            failures.len()
        );
        for failure in failures.iter().take(5) {
            println!("  {failure}");
        }
        failures.len()
    }
}

/// The operator's API request counters, by verb and resource (`update trainingjobs/status`).
pub fn api_requests(operator: &OperatorProcess) -> BTreeMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(operator.admin_addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter_map(|line| {
            // miniautoml_operator_kube_api_requests_total{verb="update",resource="trainingjobs/status"} 12
            let rest = line.strip_prefix("miniautoml_operator_kube_api_requests_total{verb=\"")?;
            let (verb, rest) = rest.split_once("\",resource=\"")?;
            let (resource, value) = rest.split_once("\"} ")?;
            Some((format!("{verb} {resource}"), value.trim().parse().ok()?))
        })
        .collect()
}

/// API requests made between two readings of [`api_requests`].
pub fn requests_between(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> f64 {
    after
        .iter()
        .map(|(verb, n)| n - before.get(verb).unwrap_or(&0.0))
        .sum()
}

/// A process's `VmHWM` (peak resident set) or `VmRSS`, in MiB.
pub fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

pub fn peak_rss_mib(pid: u32) -> f64 {
    memory_mib(pid, "VmHWM")
}
