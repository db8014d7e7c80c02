//! `make chaos`: the lab while things die, then a soak of mixed load. Both run against the
//! operator binary on the local cluster (real API server, kubelet + containerd node, SeaweedFS),
//! with the trainer and predictor images on the node; they are `#[ignore]`d in `make test`
//! (minutes each, and they restart the cluster's API server and S3 store).
//!
//! **Chaos.** A user's script runs the whole lab: upload tweet_emotion part 1, apply a Dataset,
//! append part 2, prepare the snapshot over gRPC, 3 TrainingJobs applied as CRs and 3 through
//! `TrainingService/Train`, a ModelDeployment, predictions through `PredictionService/Predict`,
//! and a Dataset and a TrainingJob deleted mid-ingestion and mid-run. Meanwhile a killer
//! SIGKILLs the operator at random moments (at least [`MIN_KILLS`]) and restarts it, and at
//! random moments the S3 store is SIGKILLed and restarted, frozen (SIGSTOP: connections open,
//! nothing answered) for 30 s, and the API server SIGKILLed and restarted (etcd keeps its
//! data). The script retries what a script would (unreachable, reset, timed out). Afterwards it
//! asserts and prints: every run Succeeded once (one Job each, distinct run ids, Train's retries
//! found their first run), both commits with the statistics the data crate computes from the
//! same files, every object a status names present, no child object or stored object without
//! its resource, the predictor serving the model its status names, and the deleted resources
//! gone with everything they owned.
//!
//! **Soak.** [`SOAK`] (10 minutes; `SOAK_SECONDS`) of gRPC Predict loops, Train calls and
//! kubectl-style applies against one operator, sampling its and the predictor's RSS every 10 s:
//! no failed call, and memory flat.
//!
//! `CHAOS_SEED` replays a run's random choices (it prints the seed it used).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Display,
    future::Future,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{
    Resource,
    api::{
        apps::v1::Deployment,
        batch::v1::Job,
        core::v1::{Event, Pod, Secret, Service},
    },
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use miniautoml_api::{
    Dataset, ModelDeployment, TrainingJob,
    labels::{DATASET_ID_LABEL, MODEL_DEPLOYMENT_LABEL, RUN_ID_LABEL, TRAINING_JOB_LABEL},
    training_job::TrainingPhase,
};
use miniautoml_data::{layout, text_intent};
use miniautoml_operator::names::RUN_TOKEN_KEY;
use miniautoml_proto::{
    data_management::{self as data_pb, data_management_service_client::DataManagementServiceClient},
    prediction::{PredictRequest, prediction_service_client::PredictionServiceClient},
    training::{self as training_pb, training_service_client::TrainingServiceClient},
};
use miniautoml_test_support::{
    LocalCluster, OperatorProcess, SWEPT_WITHIN, TestNamespace,
    harness::{logs_on_failure, model_deployment, predictor_pid, training_job, tweets},
    http_get, install_crds, operator_log_path, repo_root,
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

/// Operator kills per chaos run, at least.
const MIN_KILLS: u64 = 20;
/// Seconds between kills, and how long the operator stays dead (a Deployment restarts a pod
/// in about that time).
const KILL_EVERY: std::ops::Range<f64> = 2.0..7.0;
const DEAD_FOR: std::ops::Range<f64> = 0.0..2.0;
/// How long the S3 store stays frozen.
const FROZEN: Duration = Duration::from_secs(30);
/// How long the user's script keeps retrying one call, and waits for one state.
const PATIENCE: Duration = Duration::from_secs(300);
/// One attempt of a call (a frozen store or API server must not hang the script).
const ATTEMPT: Duration = Duration::from_secs(30);
/// The whole chaos run, at most.
const CHAOS_LIMIT: Duration = Duration::from_secs(20 * 60);
/// The soak's length unless `SOAK_SECONDS` says otherwise.
const SOAK: Duration = Duration::from_secs(600);
/// RSS samples, every so often.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const DOCUMENTS: [&str; 4] = [
    "I am so happy today!",
    "this traffic makes me furious",
    "I lost my keys again, sad day",
    "tomorrow will be better",
];
const LABELS: [&str; 4] = ["anger", "joy", "optimism", "sadness"];

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_miniautoml-operator")
}

fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
        })
}

/// The operator process under test, restartable at the same gRPC address (as a Service keeps
/// its address while its pods come and go).
struct Supervised {
    cluster: &'static LocalCluster,
    namespace: String,
    grpc_addr: SocketAddr,
    process: Mutex<Option<OperatorProcess>>,
    kills: AtomicU64,
}

impl Supervised {
    fn start(cluster: &'static LocalCluster, namespace: &str) -> Arc<Supervised> {
        let supervised = Arc::new(Supervised {
            cluster,
            namespace: namespace.to_string(),
            grpc_addr: cluster.free_addr(),
            process: Mutex::new(None),
            kills: AtomicU64::new(0),
        });
        supervised.restart();
        supervised
    }

    fn restart(&self) {
        let process = OperatorProcess::start_at(
            binary(),
            self.cluster,
            &self.namespace,
            &self.cluster.s3_secret_key,
            self.grpc_addr,
            &[],
        );
        *self.process.lock().unwrap() = Some(process);
    }

    fn kill(&self) {
        if let Some(mut process) = self.process.lock().unwrap().take() {
            process.kill();
            self.kills.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn pid(&self) -> Option<u32> {
        self.process.lock().unwrap().as_ref().map(OperatorProcess::pid)
    }

    fn admin_addr(&self) -> Option<SocketAddr> {
        self.process.lock().unwrap().as_ref().map(|p| p.admin_addr)
    }

    /// A channel that reconnects on its own to whichever process listens now.
    fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(ATTEMPT)
            .connect_lazy()
    }
}

/// What the user's script retried, by what it saw.
#[derive(Default)]
struct Retries(Mutex<BTreeMap<String, u64>>);

impl Retries {
    fn saw(&self, what: &str) {
        *self.0.lock().unwrap().entry(what.to_string()).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }

    fn table(&self) -> String {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(what, n)| format!("{what} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a call failed, as a script sees it: worth another try, or a wrong answer.
enum Failure {
    Transient(String),
    Wrong(String),
}

fn grpc_failure(status: tonic::Status) -> Failure {
    // What a client retries: the server is away (UNAVAILABLE, a reset: UNKNOWN or CANCELLED),
    // slow (DEADLINE_EXCEEDED), or something it depends on is away (the operator answers
    // UNAVAILABLE when the API server or the store is; INTERNAL is counted, to be seen).
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Internal => {
            Failure::Transient(format!("gRPC {:?}", status.code()))
        }
        _ => Failure::Wrong(format!("{:?}: {}", status.code(), status.message())),
    }
}

fn kube_failure(error: kube::Error) -> Failure {
    match &error {
        kube::Error::Api(status) if status.code == 404 => Failure::Wrong(error.to_string()),
        kube::Error::Api(status) => Failure::Transient(format!("API {}", status.code)),
        _ => Failure::Transient("API unreachable".into()),
    }
}

/// Calls `call` until it succeeds, retrying transient failures for [`PATIENCE`], each attempt
/// at most [`ATTEMPT`]; panics on a wrong answer.
async fn retry<T, F, Fut>(retries: &Retries, what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    loop {
        let failure = match tokio::time::timeout(ATTEMPT, call()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(failure)) => failure,
            Err(_) => Failure::Transient("timed out".into()),
        };
        match failure {
            Failure::Transient(why) if started.elapsed() < PATIENCE => {
                retries.saw(&why);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Failure::Transient(why) => panic!("{what}: still failing after {PATIENCE:?}: {why}"),
            Failure::Wrong(why) => panic!("{what}: {why}"),
        }
    }
}

/// Polls `check` (its errors retried as transient) until it returns `Some`, for [`PATIENCE`].
async fn wait<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < PATIENCE {
        match tokio::time::timeout(ATTEMPT, check()).await {
            Ok(Ok(Some(found))) => return found,
            Ok(Ok(None)) => last = "not yet".into(),
            Ok(Err(error)) => last = error,
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out after {PATIENCE:?} waiting for {what}; last: {last}");
}

/// `hack/cluster.sh ARGS`, its stdout.
fn cluster_sh(args: &[&str]) -> String {
    let output = Command::new(repo_root().join("hack/cluster.sh"))
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "hack/cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn signal(pid: &str, signal: &str) {
    let status = Command::new("kill").args([signal, pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// A fault of the cluster around the operator.
#[derive(Clone, Copy, Debug)]
enum Fault {
    StoreRestart,
    StoreFrozen,
    ApiServerRestart,
}

impl Fault {
    fn inject(self) {
        match self {
            Fault::StoreRestart => {
                cluster_sh(&["restart", "seaweedfs"]);
            }
            Fault::StoreFrozen => {
                let pid = cluster_sh(&["pid", "seaweedfs"]);
                signal(&pid, "-STOP");
                std::thread::sleep(FROZEN);
                signal(&pid, "-CONT");
            }
            Fault::ApiServerRestart => {
                cluster_sh(&["restart", "kube-apiserver"]);
            }
        }
    }
}

/// The chaos: injects each [`Fault`] once, in a random order, the first within 20 s and the
/// others 10 to 30 s apart, then sets `faults_done`; kills the operator until `done` and at
/// least [`MIN_KILLS`] kills. Returns what it injected, with times.
fn chaos(
    operator: Arc<Supervised>,
    done: Arc<AtomicBool>,
    faults_done: Arc<AtomicBool>,
    seed: u64,
) -> std::thread::JoinHandle<Vec<String>> {
    let faults = std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let mut faults = [Fault::StoreRestart, Fault::StoreFrozen, Fault::ApiServerRestart];
        faults.shuffle(&mut rng);
        let started = Instant::now();
        let mut log = Vec::new();
        for (i, fault) in faults.into_iter().enumerate() {
            let pause = if i == 0 { 5.0..20.0 } else { 10.0..30.0 };
            std::thread::sleep(Duration::from_secs_f64(rng.random_range(pause)));
            let at = started.elapsed();
            fault.inject();
            log.push(format!(
                "{fault:?} at {:.0} s (back after {:.1} s)",
                at.as_secs_f64(),
                (started.elapsed() - at).as_secs_f64()
            ));
        }
        faults_done.store(true, Ordering::SeqCst);
        log
    });
    std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed);
        let started = Instant::now();
        while !(done.load(Ordering::SeqCst) && operator.kills.load(Ordering::SeqCst) >= MIN_KILLS) {
            assert!(
                started.elapsed() < CHAOS_LIMIT,
                "the chaos run took over {CHAOS_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_secs_f64(rng.random_range(KILL_EVERY)));
            operator.kill();
            std::thread::sleep(Duration::from_secs_f64(rng.random_range(DEAD_FOR)));
            operator.restart();
        }
        faults.join().expect("the fault injector")
    })
}

/// The user's lab, as a script with retries would run it. Returns the run ids Train gave.
struct Lab {
    cluster: &'static LocalCluster,
    client: kube::Client,
    namespace: String,
    operator: Arc<Supervised>,
    retries: Arc<Retries>,
}

impl Lab {
    fn new(
        cluster: &'static LocalCluster,
        client: &kube::Client,
        namespace: &str,
        operator: &Arc<Supervised>,
    ) -> Lab {
        Lab {
            cluster,
            client: client.clone(),
            namespace: namespace.to_string(),
            operator: operator.clone(),
            retries: Arc::default(),
        }
    }

    /// Uploads tweet_emotion parts 1 and 2 under `raw/<namespace>/`; their keys.
    async fn upload_parts(&self) -> [String; 2] {
        let raw = format!("raw/{}/", self.namespace);
        let parts = [format!("{raw}part1.csv"), format!("{raw}part2.csv")];
        self.upload(&parts[0], tweets(1)).await;
        self.upload(&parts[1], tweets(2)).await;
        parts
    }

    fn datasets(&self) -> Api<Dataset> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn jobs(&self) -> Api<TrainingJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn deployments(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// `kubectl apply` (server-side) of a resource, retried.
    async fn apply<K>(&self, api: &Api<K>, object: &K)
    where
        K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        retry(&self.retries, &format!("apply {name}"), || async {
            api.patch(
                &name,
                &PatchParams::apply("chaos-user").force(),
                &Patch::Apply(object),
            )
            .await
            .map(drop)
            .map_err(kube_failure)
        })
        .await;
    }

    async fn upload(&self, key: &str, body: Vec<u8>) {
        let s3 = self.cluster.s3();
        retry(&self.retries, &format!("upload {key}"), || async {
            s3.put_object()
                .bucket(&self.cluster.s3_bucket)
                .key(key)
                .body(body.clone().into())
                .send()
                .await
                .map(drop)
                .map_err(|_| Failure::Transient("S3 unreachable".into()))
        })
        .await;
    }

    fn dataset(&self, name: &str, parts: &[&str]) -> Dataset {
        let commits: Vec<serde_json::Value> = parts
            .iter()
            .map(|key| {
                serde_json::json!({"message": key, "source": {"bucket": self.cluster.s3_bucket, "key": key}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "miniautoml.io/v1alpha1", "kind": "Dataset",
            "metadata": {"name": name},
            "spec": {"type": "TextIntent", "description": "tweet_emotion", "commits": commits},
        }))
        .unwrap()
    }

    async fn wait_commits(&self, name: &str, count: u32) -> Dataset {
        let api = self.datasets();
        wait(&format!("{name}: {count} commits"), || async {
            let dataset = api.get(name).await.map_err(|e| e.to_string())?;
            let done = dataset.status.as_ref().is_some_and(|s| s.commit_count >= count);
            Ok(done.then_some(dataset))
        })
        .await
    }

    /// The snapshot of every commit, prepared over gRPC: (dataset id, version hash).
    async fn snapshot(&self) -> (String, String) {
        let client = DataManagementServiceClient::new(self.operator.channel());
        // Listing gives every Dataset of the namespace an id.
        retry(&self.retries, "ListDatasets", || {
            let mut client = client.clone();
            async move {
                let mut stream = client
                    .list_datasets(data_pb::ListQueryOptions::default())
                    .await
                    .map_err(grpc_failure)?
                    .into_inner();
                while stream.message().await.map_err(grpc_failure)?.is_some() {}
                Ok(())
            }
        })
        .await;
        let dataset = retry(&self.retries, "get tweets", || async {
            self.datasets().get("tweets").await.map_err(kube_failure)
        })
        .await;
        let id = dataset.labels()[DATASET_ID_LABEL].clone();
        let version = retry(&self.retries, "PrepareTrainingDataset", || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                client
                    .prepare_training_dataset(data_pb::DatasetQuery {
                        dataset_id: id,
                        ..Default::default()
                    })
                    .await
                    .map_err(grpc_failure)
            }
        })
        .await
        .into_inner()
        .version_hash;
        wait(&format!("snapshot {version} READY"), || {
            let mut client = client.clone();
            let query = data_pb::VersionQuery {
                dataset_id: id.clone(),
                version_hash: version.clone(),
            };
            async move {
                let fetched = client
                    .fetch_training_dataset(query)
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner();
                assert_ne!(
                    fetched.state,
                    data_pb::SnapshotState::Failed as i32,
                    "the snapshot failed"
                );
                Ok((fetched.state == data_pb::SnapshotState::Ready as i32).then_some(()))
            }
        })
        .await;
        (id, version)
    }

    /// `TrainingService/Train`, retried with the same `idempotency-key`.
    async fn train(&self, name: &str, dataset_id: &str, version_hash: &str, epochs: u32) -> i32 {
        let client = TrainingServiceClient::new(self.operator.channel());
        let key = format!("{}-{name}", self.namespace);
        retry(&self.retries, &format!("Train {name}"), || {
            let mut client = client.clone();
            let mut request = tonic::Request::new(training_pb::TrainRequest {
                metadata: Some(training_pb::TrainingJobMetadata {
                    algorithm: "intent-classification".into(),
                    dataset_id: dataset_id.into(),
                    name: name.into(),
                    train_data_version_hash: version_hash.into(),
                    parameters: [("EPOCHS".to_string(), epochs.to_string())].into(),
                    output_model_name: name.into(),
                }),
            });
            request
                .metadata_mut()
                .insert("idempotency-key", key.parse().unwrap());
            async move { client.train(request).await.map_err(grpc_failure) }
        })
        .await
        .into_inner()
        .job_id
    }

    async fn predict(&self, run_id: &str, document: &str) -> String {
        let client = PredictionServiceClient::new(self.operator.channel());
        retry(&self.retries, "Predict", || {
            let mut client = client.clone();
            let request = PredictRequest {
                run_id: run_id.into(),
                document: document.into(),
            };
            async move { client.predict(request).await.map_err(grpc_failure) }
        })
        .await
        .into_inner()
        .response
    }

    async fn wait_phase(&self, name: &str, phases: &[TrainingPhase]) -> TrainingJob {
        let api = self.jobs();
        wait(&format!("{name} in {phases:?}"), || async {
            let job = api.get(name).await.map_err(|e| e.to_string())?;
            let phase = job.status.as_ref().and_then(|s| s.phase);
            if phase == Some(TrainingPhase::Failed) && !phases.contains(&TrainingPhase::Failed) {
                panic!("{name} Failed: {:#?}", job.status);
            }
            Ok(phase.is_some_and(|p| phases.contains(&p)).then_some(job))
        })
        .await
    }

    /// Deletes `name` and waits until it is gone (its finalizer ran).
    async fn delete_and_wait<K>(&self, api: &Api<K>, name: &str)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        retry(&self.retries, &format!("delete {name}"), || async {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(error) => Err(kube_failure(error)),
            }
        })
        .await;
        wait(&format!("{name} gone"), || async {
            match api.get_opt(name).await {
                Ok(found) => Ok(found.is_none().then_some(())),
                Err(error) => Err(error.to_string()),
            }
        })
        .await;
    }

    /// Multipart uploads in progress under `prefix` (retried while the store is away).
    async fn uploads(&self, prefix: &str) -> usize {
        let s3 = self.cluster.s3();
        retry(&self.retries, &format!("list uploads {prefix}"), || async {
            s3.list_multipart_uploads()
                .bucket(&self.cluster.s3_bucket)
                .prefix(prefix)
                .send()
                .await
                .map(|listed| listed.uploads().len())
                .map_err(|_| Failure::Transient("S3 unreachable".into()))
        })
        .await
    }

    /// Keys under `prefix` in the bucket (the listing retried while the store is away).
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let s3 = self.cluster.s3();
        retry(&self.retries, &format!("list {prefix}"), || async {
            let mut keys = Vec::new();
            let mut pages = s3
                .list_objects_v2()
                .bucket(&self.cluster.s3_bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|_| Failure::Transient("S3 unreachable".into()))?;
                keys.extend(page.contents().iter().filter_map(|o| o.key().map(String::from)));
            }
            Ok(keys)
        })
        .await
    }
}

/// The kind and metadata of every `K` in `namespace`.
async fn metadata<K>(client: &kube::Client, namespace: &str) -> Vec<(&'static str, kube::api::ObjectMeta)>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| (<K as k8s_openapi::Resource>::KIND, o.meta().clone()))
        .collect()
}

/// A CSV of `copies` times part 1's rows: ingestion of it takes seconds, long enough to delete
/// its Dataset mid-ingestion.
fn big_csv(copies: usize) -> Vec<u8> {
    let part = String::from_utf8(tweets(1)).unwrap();
    let (header, rows) = part.split_once('\n').unwrap();
    let mut csv = format!("{header}\n");
    for _ in 0..copies {
        csv.push_str(rows);
        if !rows.ends_with('\n') {
            csv.push('\n');
        }
    }
    csv.into_bytes()
}

/// The statistics the data crate computes for a file: (examples, labels).
fn expected_statistics(csv: &[u8]) -> (u64, u32) {
    let encoder = text_intent::encode(csv, 1 << 20, |_| Ok(())).unwrap();
    let statistics = encoder.table().statistics();
    (statistics.num_examples, statistics.num_labels)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "make chaos: minutes long; restarts the local cluster's API server and S3 store"]
async fn the_lab_survives_operator_kills_store_and_api_server_faults() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "chaos").await.unwrap();
    let _logs = logs_on_failure(cluster, &ns);
    let seed = seed();
    println!("[chaos] seed {seed} (CHAOS_SEED={seed} replays the random choices)");
    let started = Instant::now();
    let operator = Supervised::start(cluster, &ns.name);
    let done = Arc::new(AtomicBool::new(false));
    let faults_done = Arc::new(AtomicBool::new(false));
    let chaos = chaos(operator.clone(), done.clone(), faults_done.clone(), seed);
    let lab = Lab::new(cluster, &client, &ns.name, &operator);

    // Ingest part 1, then append part 2.
    let raw = format!("raw/{}/", ns.name);
    let parts = lab.upload_parts().await;
    lab.apply(&lab.datasets(), &lab.dataset("tweets", &[&parts[0]]))
        .await;
    lab.wait_commits("tweets", 1).await;
    lab.apply(&lab.datasets(), &lab.dataset("tweets", &[&parts[0], &parts[1]]))
        .await;
    lab.wait_commits("tweets", 2).await;
    println!(
        "[chaos] dataset ingested at {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // The snapshot; 3 runs as CRs, 3 through Train.
    let (dataset_id, version_hash) = lab.snapshot().await;
    let epochs = [20, 60, 120];
    for (i, epochs) in epochs.iter().enumerate() {
        let job = training_job(
            &format!("cr-run-{i}"),
            serde_json::json!({"parameters": {"EPOCHS": epochs.to_string()}}),
        );
        lab.apply(&lab.jobs(), &job).await;
    }
    let mut train_ids = Vec::new();
    for (i, epochs) in epochs.iter().enumerate() {
        train_ids.push(
            lab.train(&format!("grpc-run-{i}"), &dataset_id, &version_hash, *epochs)
                .await,
        );
    }
    println!("[chaos] Train answered run ids {train_ids:?}");

    // Deleted mid-ingestion and mid-run: cleaned up under their finalizers. The Dataset is
    // deleted as soon as its commit's upload shows in the store (an object, or a multipart
    // upload in progress), before its status names a commit.
    let big = format!("{raw}big.csv");
    lab.upload(&big, big_csv(300)).await;
    lab.apply(&lab.datasets(), &lab.dataset("doomed", &[&big])).await;
    let doomed_prefix = layout::dataset_prefix(&ns.name, "doomed");
    let doomed_state = wait("doomed's ingestion to start", || async {
        let (objects, uploads) = (
            lab.keys(&doomed_prefix).await.len(),
            lab.uploads(&doomed_prefix).await,
        );
        let commits = lab
            .datasets()
            .get("doomed")
            .await
            .map_err(|e| e.to_string())?
            .status
            .map(|s| s.commit_count)
            .unwrap_or_default();
        Ok((objects + uploads > 0 || commits > 0).then(|| {
            format!("{commits} commits, {objects} objects and {uploads} multipart uploads in the store")
        }))
    })
    .await;
    lab.delete_and_wait(&lab.datasets(), "doomed").await;
    let doomed_run = training_job(
        "doomed-run",
        // Deleted with its storage (the default, Retain, keeps the history on purpose).
        serde_json::json!({"parameters": {"EPOCHS": "2000"}, "artifactRetainPolicy": "Delete"}),
    );
    lab.apply(&lab.jobs(), &doomed_run).await;
    let running = lab.wait_phase("doomed-run", &[TrainingPhase::Running]).await;
    let doomed_uid = running.uid().unwrap();
    lab.delete_and_wait(&lab.jobs(), "doomed-run").await;
    println!("[chaos] deleted doomed (when it had {doomed_state}) and doomed-run (Running)");

    // Every run to its end; one served and asked.
    let mut runs = Vec::new();
    for name in (0..3).map(|i| format!("cr-run-{i}")) {
        runs.push(lab.wait_phase(&name, &[TrainingPhase::Succeeded]).await);
    }
    let served_job = runs[0].clone();
    let served_run = served_job.status.as_ref().unwrap().run_id.clone().unwrap();
    lab.apply(&lab.deployments(), &model_deployment("tweets", "cr-run-0"))
        .await;
    let deployments = lab.deployments();
    wait("the ModelDeployment Ready, serving cr-run-0", || async {
        let md = deployments.get("tweets").await.map_err(|e| e.to_string())?;
        let status = md.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        Ok((ready && status.served_run.as_deref() == Some(served_run.as_str())).then_some(()))
    })
    .await;
    // Predictions, as a client would keep asking, until every fault has been injected and the
    // operator killed often enough.
    let mut predictions = 0;
    for document in DOCUMENTS.iter().cycle() {
        let answer = lab.predict(&served_run, document).await;
        assert!(LABELS.iter().any(|l| answer.contains(l)), "{answer}");
        predictions += 1;
        if predictions >= 20
            && faults_done.load(Ordering::SeqCst)
            && operator.kills.load(Ordering::SeqCst) >= MIN_KILLS
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all: Vec<TrainingJob> = wait("the Train runs to succeed", || async {
        let jobs = lab
            .jobs()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let train: Vec<&TrainingJob> = jobs
            .items
            .iter()
            .filter(|j| j.name_any().starts_with("grpc-run-"))
            .collect();
        for job in &train {
            if job.status.as_ref().and_then(|s| s.phase) == Some(TrainingPhase::Failed) {
                panic!("{} Failed: {:#?}", job.name_any(), job.status);
            }
        }
        let succeeded = train
            .iter()
            .filter(|j| j.status.as_ref().and_then(|s| s.phase) == Some(TrainingPhase::Succeeded))
            .count();
        Ok((succeeded == train.len() && train.len() >= 3).then_some(jobs.items))
    })
    .await;
    done.store(true, Ordering::SeqCst);
    let faults = tokio::task::spawn_blocking(move || chaos.join())
        .await
        .unwrap()
        .expect("the chaos thread");
    let workload = started.elapsed();
    let kills = operator.kills.load(Ordering::SeqCst);
    println!(
        "[chaos] workload done at {:.0} s; {kills} operator kills",
        workload.as_secs_f64()
    );

    // The operator stays up now: let it settle what the last kill interrupted.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Every run once: one Job each, distinct run ids; Train made exactly 3 runs.
    let all_jobs = Api::<Job>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut run_ids = BTreeSet::new();
    for job in &all {
        let name = job.name_any();
        let status = job.status.clone().unwrap_or_default();
        assert_eq!(
            status.phase,
            Some(TrainingPhase::Succeeded),
            "{name}: {status:#?}"
        );
        let owned: Vec<String> = all_jobs
            .iter()
            .filter(|j| j.labels().get(TRAINING_JOB_LABEL) == Some(&name))
            .map(ResourceExt::name_any)
            .collect();
        assert_eq!(owned.len(), 1, "{name} has Jobs {owned:?}");
        let run_id = status.run_id.clone().unwrap();
        assert_eq!(job.labels().get(RUN_ID_LABEL), Some(&run_id), "{name}");
        assert!(run_ids.insert(run_id.clone()), "run id {run_id} repeats");
        let artifact = status.artifact.unwrap();
        let prefix = artifact
            .uri
            .strip_prefix(&format!("s3://{}/", cluster.s3_bucket))
            .unwrap();
        assert!(
            !lab.keys(prefix).await.is_empty(),
            "{name}: no objects at {}",
            artifact.uri
        );
    }
    let train_runs: BTreeSet<String> = all
        .iter()
        .filter(|j| j.name_any().starts_with("grpc-run-"))
        .map(|j| j.labels()[RUN_ID_LABEL].clone())
        .collect();
    let answered: BTreeSet<String> = train_ids.iter().map(i32::to_string).collect();
    assert_eq!(train_runs, answered, "Train made runs it did not answer with");
    assert_eq!(
        all.len(),
        6,
        "{:?}",
        all.iter().map(|j| j.name_any()).collect::<Vec<_>>()
    );

    // Both commits, with the data crate's statistics of the same files, and their objects.
    let dataset = lab.datasets().get("tweets").await.unwrap();
    let status = dataset.status.unwrap();
    assert_eq!(status.commit_count, 2);
    for (commit, part) in status.commits.iter().zip([1, 2]) {
        assert_eq!(
            (commit.statistics.num_examples, commit.statistics.num_labels),
            expected_statistics(&tweets(part)),
            "commit {}",
            commit.id
        );
        assert!(
            !lab.keys(&commit.path).await.is_empty(),
            "commit {}: nothing at {}",
            commit.id,
            commit.path
        );
    }
    for snapshot in &status.snapshots {
        let keys: BTreeSet<String> = lab
            .keys(snapshot.root.as_deref().unwrap_or_default())
            .await
            .into_iter()
            .collect();
        for part in &snapshot.parts {
            assert!(
                keys.iter().any(|k| k.ends_with(part.as_str())),
                "snapshot {}: no {part}",
                snapshot.version_hash
            );
        }
    }

    // No child object without its resource, no stored object without its resource.
    let mut owners: BTreeSet<String> = all.iter().map(|j| j.uid().unwrap()).collect();
    let deployments = lab
        .deployments()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let datasets = lab.datasets().list(&ListParams::default()).await.unwrap().items;
    owners.extend(deployments.iter().map(|d| d.uid().unwrap()));
    owners.extend(datasets.iter().map(|d| d.uid().unwrap()));
    let mut children_of_ours: Vec<(&str, kube::api::ObjectMeta)> =
        all_jobs.iter().map(|o| (Job::KIND, o.metadata.clone())).collect();
    children_of_ours.extend(metadata::<Secret>(&client, &ns.name).await);
    children_of_ours.extend(metadata::<Service>(&client, &ns.name).await);
    children_of_ours.extend(metadata::<Deployment>(&client, &ns.name).await);
    children_of_ours.retain(|(_, meta)| {
        let labels = meta.labels.clone().unwrap_or_default();
        labels.contains_key(TRAINING_JOB_LABEL) || labels.contains_key(MODEL_DEPLOYMENT_LABEL)
    });
    let children = children_of_ours.len();
    let orphans: Vec<String> = children_of_ours
        .iter()
        .filter(|(_, meta)| {
            !meta
                .owner_references
                .iter()
                .flatten()
                .any(|o| owners.contains(&o.uid))
        })
        .map(|(kind, meta)| format!("{kind} {}", meta.name.clone().unwrap_or_default()))
        .collect();
    assert!(
        orphans.is_empty(),
        "child objects without their resource: {orphans:?}"
    );
    let uids: BTreeSet<String> = all.iter().map(|j| j.uid().unwrap()).collect();
    // A write on its way when a resource was deleted (sent by an operator killed since, held
    // up by the frozen store) may land after the clean-up: the sweep of the tombstone the
    // clean-up left deletes it.
    for prefix in [
        layout::model_prefix(&ns.name, "doomed-run", &doomed_uid),
        layout::run_prefix(&ns.name, "doomed-run", &doomed_uid),
        layout::dataset_prefix(&ns.name, "doomed"),
    ] {
        lab.cluster.keys_left(&prefix, SWEPT_WITHIN).await;
    }
    let late_swept: usize = std::fs::read_to_string(operator_log_path(&lab.namespace))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once("storage was cleared")?.1.split("objects=").nth(1))
        .filter_map(|count| count.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    let mut stray = Vec::new();
    // An upload a killed writer left unfinished holds space nobody sees in a listing.
    for prefix in ["models", "runs", "datasets"].map(|kind| format!("{kind}/{}/", ns.name)) {
        let unfinished = lab.uploads(&prefix).await;
        if unfinished > 0 {
            stray.push(format!(
                "{unfinished} unfinished multipart uploads under {prefix}"
            ));
        }
    }
    for prefix in [format!("models/{}/", ns.name), format!("runs/{}/", ns.name)] {
        for key in lab.keys(&prefix).await {
            let uid = key[prefix.len()..]
                .split('/')
                .nth(1)
                .unwrap_or_default()
                .to_string();
            if !uids.contains(&uid) {
                stray.push(key);
            }
        }
    }
    for key in lab.keys(&format!("datasets/{}/", ns.name)).await {
        if !key.starts_with(&layout::dataset_prefix(&ns.name, "tweets")) {
            stray.push(key);
        }
    }
    assert!(
        stray.is_empty(),
        "stored objects without their resource: {stray:?}"
    );
    assert!(
        lab.keys(&layout::model_prefix(&ns.name, "doomed-run", &doomed_uid))
            .await
            .is_empty()
            && lab
                .keys(&layout::run_prefix(&ns.name, "doomed-run", &doomed_uid))
                .await
                .is_empty()
            && lab
                .keys(&layout::dataset_prefix(&ns.name, "doomed"))
                .await
                .is_empty()
            && lab.uploads(&layout::dataset_prefix(&ns.name, "doomed")).await == 0,
        "the deleted resources left objects or multipart uploads"
    );

    // The predictor serves the model its status names.
    let md = lab.deployments().get("tweets").await.unwrap();
    let served = md.status.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels(&format!("{MODEL_DEPLOYMENT_LABEL}=tweets")))
        .await
        .unwrap();
    let uri = served_job
        .status
        .as_ref()
        .unwrap()
        .artifact
        .as_ref()
        .unwrap()
        .uri
        .clone();
    for pod in pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        assert_eq!(
            pod.labels().get(RUN_ID_LABEL),
            served.served_run.as_ref(),
            "{}",
            pod.name_any()
        );
        let env = &pod.spec.as_ref().unwrap().containers[0].env;
        let model = env
            .iter()
            .flatten()
            .find(|e| e.name == "MODEL_URI")
            .and_then(|e| e.value.clone());
        assert_eq!(model.as_deref(), Some(uri.as_str()), "{}", pod.name_any());
    }

    let (looked_for, places, lines, leaks) = credentials_found(&lab).await;
    assert!(looked_for >= 3, "too few credentials to look for: {looked_for}");
    assert!(leaks.is_empty(), "credentials found in {leaks:?}");

    let figures = [
        ("seed", seed.to_string()),
        ("operator kills (SIGKILL), all survived", kills.to_string()),
        ("faults of the cluster", faults.join("; ")),
        (
            "client retries",
            format!("{} ({})", lab.retries.total(), lab.retries.table()),
        ),
        (
            "runs Succeeded once (3 CRs, 3 Train)",
            format!("{} (run ids {run_ids:?})", all.len()),
        ),
        (
            "commits intact (statistics as computed)",
            status.commits.len().to_string(),
        ),
        ("predictions answered", predictions.to_string()),
        (
            "child objects checked, orphans",
            format!("{children}, {}", orphans.len()),
        ),
        ("stored objects without a resource", stray.len().to_string()),
        ("late writes to deleted storage, swept", late_swept.to_string()),
        (
            "deleted mid-ingestion / mid-run, cleaned",
            format!("doomed ({doomed_state}) / doomed-run: all gone"),
        ),
        (
            "credentials sought, places (lines), found",
            format!("{looked_for}, {places} ({lines}), {}", leaks.len()),
        ),
        ("workload", format!("{:.0} s", workload.as_secs_f64())),
    ];
    println!("\n[chaos] figures");
    for (name, value) in figures {
        println!("  {name:42} {value}");
    }
    drop(operator);
}

/// After the run: the store's secret key and every secret value of the namespace's Secrets (run
/// tokens, the trainers' and predictors' storage keys), looked for in its CRs, events and pod
/// logs, the log every operator process of the run appended to, and the last one's `/metrics`.
/// Returns how many were looked for, in how many places (of how many lines), and where found.
async fn credentials_found(lab: &Lab) -> (usize, usize, usize, Vec<String>) {
    let mut secrets = vec![lab.cluster.s3_secret_key.clone()];
    let listed = Api::<Secret>::namespaced(lab.client.clone(), &lab.namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    for secret in listed {
        for (key, value) in secret.data.unwrap_or_default() {
            if key == RUN_TOKEN_KEY || key == "AWS_SECRET_ACCESS_KEY" {
                secrets.push(String::from_utf8_lossy(&value.0).into_owned());
            }
        }
    }
    secrets.retain(|s| s.len() >= 16);
    secrets.sort();
    secrets.dedup();

    let json = |value: serde_json::Result<String>| value.unwrap();
    let all = ListParams::default();
    let mut places = vec![
        (
            "Datasets".to_string(),
            json(serde_json::to_string(&lab.datasets().list(&all).await.unwrap())),
        ),
        (
            "TrainingJobs".into(),
            json(serde_json::to_string(&lab.jobs().list(&all).await.unwrap())),
        ),
        (
            "ModelDeployments".into(),
            json(serde_json::to_string(
                &lab.deployments().list(&all).await.unwrap(),
            )),
        ),
        (
            "events".into(),
            json(serde_json::to_string(
                &Api::<Event>::namespaced(lab.client.clone(), &lab.namespace)
                    .list(&all)
                    .await
                    .unwrap(),
            )),
        ),
        (
            "operator log".into(),
            std::fs::read_to_string(operator_log_path(&lab.namespace)).unwrap_or_default(),
        ),
    ];
    let pods = Api::<Pod>::namespaced(lab.client.clone(), &lab.namespace)
        .list(&all)
        .await
        .unwrap();
    for pod in pods {
        let output = lab
            .cluster
            .kubectl()
            .args(["logs", "-n", &lab.namespace, &pod.name_any(), "--all-containers"])
            .output()
            .unwrap();
        places.push((
            format!("logs of {}", pod.name_any()),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ));
    }
    if let Some(admin) = lab.operator.admin_addr() {
        places.push((
            "/metrics".into(),
            http_get(admin, "/metrics").await.unwrap_or_default(),
        ));
    }
    let lines = places.iter().map(|(_, text)| text.lines().count()).sum();
    let leaks = places
        .iter()
        .filter(|(_, text)| secrets.iter().any(|secret| text.contains(secret.as_str())))
        .map(|(place, _)| place.clone())
        .collect();
    (secrets.len(), places.len(), lines, leaks)
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: impl Display) -> Option<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// First, last and largest of a series of samples, in MiB.
fn summary(samples: &[u64]) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    format!(
        "first {:.1} MiB, last {:.1} MiB, max {:.1} MiB ({} samples)",
        mib(samples.first().copied().unwrap_or_default()),
        mib(samples.last().copied().unwrap_or_default()),
        mib(samples.iter().copied().max().unwrap_or_default()),
        samples.len()
    )
}

/// Memory is flat when the last sample is within 25% (and 16 MiB of allocator slack) of the
/// first one taken after the warm-up minute.
fn flat(samples: &[u64]) -> bool {
    let warm = samples.get(6).or(samples.first()).copied().unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    last <= warm + warm / 4 + 16 * 1024
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "make chaos: a 10-minute soak"]
async fn a_soak_of_mixed_load_keeps_memory_flat() {
    let soak = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(SOAK);
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "soak").await.unwrap();
    let _logs = logs_on_failure(cluster, &ns);
    let operator = Supervised::start(cluster, &ns.name);
    let lab = Arc::new(Lab::new(cluster, &client, &ns.name, &operator));
    let parts = lab.upload_parts().await;
    let dataset = lab.dataset("tweets", &[&parts[0], &parts[1]]);
    lab.apply(&lab.datasets(), &dataset).await;
    lab.wait_commits("tweets", 2).await;
    let (dataset_id, version_hash) = lab.snapshot().await;
    lab.apply(&lab.jobs(), &training_job("served", serde_json::json!({})))
        .await;
    let served = lab.wait_phase("served", &[TrainingPhase::Succeeded]).await;
    let run = served.status.unwrap().run_id.unwrap();
    lab.apply(&lab.deployments(), &model_deployment("tweets", "served"))
        .await;
    let pod = wait("the predictor pod ready", || async {
        let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default().labels(&format!("{MODEL_DEPLOYMENT_LABEL}=tweets")))
            .await
            .map_err(|e| e.to_string())?;
        Ok(pods.items.iter().find_map(|p| {
            let ready = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then(|| p.name_any())
        }))
    })
    .await;
    let predictor = predictor_pid(&pod).unwrap_or_else(|| panic!("no predictor process in {pod}"));
    println!(
        "[soak] {soak:?} of load; operator pid {:?}, predictor pid {predictor}",
        operator.pid()
    );

    // The load: 4 Predict loops; a Train call or a TrainingJob applied each minute, in turn;
    // the Dataset and ModelDeployment applied again every 30 s.
    let started = Instant::now();
    let predicted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut loops = Vec::new();
    for i in 0..4 {
        let (predicted, failed, operator, run) =
            (predicted.clone(), failed.clone(), operator.clone(), run.clone());
        loops.push(tokio::spawn(async move {
            let mut client = PredictionServiceClient::new(operator.channel());
            while started.elapsed() < soak {
                let request = PredictRequest {
                    run_id: run.clone(),
                    document: DOCUMENTS[i % DOCUMENTS.len()].into(),
                };
                match client.predict(request).await {
                    Ok(answer) if LABELS.iter().any(|l| answer.get_ref().response.contains(l)) => {
                        predicted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(answer) => failed
                        .lock()
                        .unwrap()
                        .push(format!("Predict: {}", answer.get_ref().response)),
                    Err(status) => failed.lock().unwrap().push(format!("Predict: {status}")),
                }
            }
        }));
    }
    let writes = {
        let (lab, failed) = (lab.clone(), failed.clone());
        tokio::spawn(async move {
            let mut trained = 0;
            let mut minute = 0;
            while started.elapsed() + Duration::from_secs(60) < soak {
                tokio::time::sleep(Duration::from_secs(30)).await;
                lab.apply(&lab.datasets(), &dataset).await;
                lab.apply(&lab.deployments(), &model_deployment("tweets", "served"))
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                minute += 1;
                let name = format!("soak-{minute}");
                if minute % 2 == 0 {
                    lab.apply(
                        &lab.jobs(),
                        &training_job(&name, serde_json::json!({"parameters": {"EPOCHS": "2"}})),
                    )
                    .await;
                } else {
                    let mut client = TrainingServiceClient::new(lab.operator.channel());
                    let request = training_pb::TrainRequest {
                        metadata: Some(training_pb::TrainingJobMetadata {
                            algorithm: "intent-classification".into(),
                            dataset_id: dataset_id.clone(),
                            name: name.clone(),
                            train_data_version_hash: version_hash.clone(),
                            parameters: [("EPOCHS".to_string(), "2".to_string())].into(),
                            output_model_name: name.clone(),
                        }),
                    };
                    if let Err(status) = client.train(request).await {
                        failed.lock().unwrap().push(format!("Train: {status}"));
                    }
                }
                trained += 1;
            }
            trained
        })
    };
    let (mut operator_rss, mut predictor_rss) = (Vec::new(), Vec::new());
    while started.elapsed() < soak {
        operator_rss.extend(operator.pid().and_then(rss_kib));
        predictor_rss.extend(rss_kib(predictor));
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    for handle in loops {
        handle.await.unwrap();
    }
    let trained = writes.await.unwrap();
    // Every run of the soak to its end, Succeeded.
    let jobs = wait("the soak's runs to end", || async {
        let jobs = lab
            .jobs()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let ended = jobs.items.iter().all(|j| {
            matches!(
                j.status.as_ref().and_then(|s| s.phase),
                Some(TrainingPhase::Succeeded | TrainingPhase::Failed)
            )
        });
        Ok(ended.then_some(jobs.items))
    })
    .await;
    let not_succeeded: Vec<String> = jobs
        .iter()
        .filter(|j| j.status.as_ref().and_then(|s| s.phase) != Some(TrainingPhase::Succeeded))
        .map(|j| j.name_any())
        .collect();
    let failed = failed.lock().unwrap().clone();
    println!("\n[soak] figures");
    println!("  {:34} {:.0} s", "load", started.elapsed().as_secs_f64());
    println!(
        "  {:34} {}",
        "predictions answered",
        predicted.load(Ordering::Relaxed)
    );
    println!(
        "  {:34} {} ({} runs in all, not Succeeded: {not_succeeded:?})",
        "Train calls / applied runs",
        trained,
        jobs.len()
    );
    println!("  {:34} {}", "failed calls", failed.len());
    println!("  {:34} {}", "operator RSS", summary(&operator_rss));
    println!("  {:34} {}", "predictor RSS", summary(&predictor_rss));
    println!("  {:34} {}", "retried calls", lab.retries.table());
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert_eq!(
        lab.retries.total(),
        0,
        "calls needed retries: {}",
        lab.retries.table()
    );
    assert!(not_succeeded.is_empty(), "runs not Succeeded: {not_succeeded:?}");
    assert!(predicted.load(Ordering::Relaxed) > 0);
    assert!(
        flat(&operator_rss),
        "the operator's memory grew: {}",
        summary(&operator_rss)
    );
    assert!(
        flat(&predictor_rss),
        "the predictor's memory grew: {}",
        summary(&predictor_rss)
    );
}
