//! What the cluster tests of several crates share: a namespace with its own operator process,
//! the logs to print when a test fails, and a minimal HTTP/1.1 client for the predictors' REST
//! API.

use std::time::Duration;

use kube::{Api, api::PostParams, runtime::wait::await_condition};
use miniautoml_api::{Dataset, ModelDeployment, TrainingJob, TrainingJobStatus, training_job::TrainingPhase};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{LocalCluster, OperatorProcess, TestNamespace, install_crds, operator_log_path, repo_root};

/// How long a training run may take: training takes seconds; building the snapshot and starting
/// the pod on the node a few more.
pub const RUN_WAIT: Duration = Duration::from_secs(240);

/// Raw tweet_emotion part 1 or 2 (testdata/).
pub fn tweets(part: u32) -> Vec<u8> {
    std::fs::read(repo_root().join(format!("testdata/tweet_emotion/tweet_emotion_part{part}.csv"))).unwrap()
}

/// Uploads tweet_emotion parts 1 and 2 and creates the Dataset `tweets` with one commit each.
pub async fn tweet_emotion(cluster: &LocalCluster, api: &Api<Dataset>, namespace: &str) {
    let s3 = cluster.s3();
    let mut commits = Vec::new();
    for part in [1, 2] {
        let key = format!("raw/{namespace}/part{part}.csv");
        s3.put_object()
            .bucket(&cluster.s3_bucket)
            .key(&key)
            .body(tweets(part).into())
            .content_type("text/csv")
            .send()
            .await
            .unwrap();
        commits.push(serde_json::json!({"message": format!("part {part}"), "source": {"bucket": cluster.s3_bucket, "key": key}}));
    }
    let dataset: Dataset = serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1", "kind": "Dataset",
        "metadata": {"name": "tweets"},
        "spec": {"type": "TextIntent", "description": "tweet_emotion", "commits": commits},
    }))
    .unwrap();
    api.create(&PostParams::default(), &dataset).await.unwrap();
}

/// A TrainingJob `name` of the intent-classification algorithm on the Dataset `tweets`, with
/// `extra` spec fields.
pub fn training_job(name: &str, extra: serde_json::Value) -> TrainingJob {
    let mut spec = serde_json::json!({
        "algorithm": "intent-classification",
        "dataset": {"name": "tweets"},
        "parameters": {"EPOCHS": "3"},
        "outputModelName": "intent",
    });
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// Waits (at most [`RUN_WAIT`]) for `name`'s status to satisfy `done`; on a timeout, panics with
/// the status and the operator's log.
pub async fn wait_for(
    api: &Api<TrainingJob>,
    name: &str,
    namespace: &str,
    done: impl Fn(&TrainingJobStatus) -> bool,
) -> TrainingJob {
    let condition = await_condition(api.clone(), name, move |j: Option<&TrainingJob>| {
        j.and_then(|j| j.status.as_ref()).is_some_and(&done)
    });
    match tokio::time::timeout(RUN_WAIT, condition).await {
        Ok(found) => found.unwrap().unwrap(),
        Err(_) => panic!(
            "{name}: timed out; status {:#?}\noperator log: {}",
            api.get(name).await.ok().and_then(|j| j.status),
            std::fs::read_to_string(operator_log_path(namespace)).unwrap_or_default()
        ),
    }
}

/// Creates the TrainingJob `name` ([`training_job`], no extra fields) and waits until it has
/// Succeeded (panicking with its status if it ends otherwise).
pub async fn succeeded_run(api: &Api<TrainingJob>, name: &str, namespace: &str) -> TrainingJob {
    api.create(&PostParams::default(), &training_job(name, serde_json::json!({})))
        .await
        .unwrap();
    let done = wait_for(api, name, namespace, finished).await;
    let status = done.status.as_ref();
    assert_eq!(
        status.and_then(|s| s.phase),
        Some(TrainingPhase::Succeeded),
        "{status:#?}"
    );
    done
}

/// A ModelDeployment `name` (one replica) of the model `training_job` trained.
pub fn model_deployment(name: &str, training_job: &str) -> ModelDeployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"trainingJob": training_job}, "replicas": 1},
    }))
    .unwrap()
}

/// The host pid of the predictor process in the container of pod `pod` (its environment has
/// `HOSTNAME=<pod>`; the node's containers are processes of this machine).
pub fn predictor_pid(pod: &str) -> Option<i32> {
    let wanted = format!("HOSTNAME={pod}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        if !String::from_utf8_lossy(&cmdline).contains("miniautoml-predictor") {
            return None;
        }
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        environ
            .split(|b| *b == 0)
            .any(|var| var == wanted.as_bytes())
            .then_some(pid)
    })
}

/// Whether a run has ended, either way.
pub fn finished(status: &TrainingJobStatus) -> bool {
    matches!(
        status.phase,
        Some(TrainingPhase::Succeeded | TrainingPhase::Failed)
    )
}

/// Every container log of `namespace`'s pods on the local node (the kubelet's files, CRI
/// format), for failure messages.
pub fn pod_logs(cluster: &LocalCluster, namespace: &str) -> String {
    let mut logs = String::new();
    let Ok(pods) = std::fs::read_dir(&cluster.pod_logs) else {
        return logs;
    };
    for pod in pods.flatten().filter(|p| {
        p.file_name()
            .to_string_lossy()
            .starts_with(&format!("{namespace}_"))
    }) {
        for container in std::fs::read_dir(pod.path()).into_iter().flatten().flatten() {
            for log in std::fs::read_dir(container.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                logs.push_str(&format!("--- {}\n", log.path().display()));
                logs.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
            }
        }
    }
    logs
}

/// The logs of every pod of the Job `job` in `namespace` (`kubectl logs`, each line prefixed
/// with its pod and container).
pub fn job_logs(cluster: &LocalCluster, namespace: &str, job: &str) -> String {
    let output = cluster
        .kubectl()
        .args([
            "logs",
            "-n",
            namespace,
            "-l",
            &format!("job-name={job}"),
            "--tail=-1",
            "--prefix",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The shared cluster, an admin client, a namespace of one test and the operator process
/// watching it.
pub type WithOperator = (
    &'static LocalCluster,
    kube::Client,
    TestNamespace,
    OperatorProcess,
);

/// A fresh namespace of the shared local cluster with its own operator process (`binary`, started
/// with `flags`), for one test.
pub async fn namespace_with_operator(binary: &str, prefix: &str, flags: &[&str]) -> WithOperator {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, prefix).await.unwrap();
    let grpc_addr = cluster.free_addr();
    let operator = OperatorProcess::start_at(
        binary,
        cluster,
        &ns.name,
        &cluster.s3_secret_key,
        grpc_addr,
        flags,
    );
    (cluster, client, ns, operator)
}

/// Prints the namespace's pod logs and its operator's log if the test fails, so a failure in
/// CI (whose cluster is removed afterwards) still says what the trainer and the operator saw.
pub struct LogsOnFailure<'a> {
    cluster: &'a LocalCluster,
    namespace: String,
}

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "=== pod logs of {ns}\n{}\n=== operator log of {ns}\n{}",
                pod_logs(self.cluster, &self.namespace),
                std::fs::read_to_string(operator_log_path(&self.namespace)).unwrap_or_default(),
                ns = self.namespace,
            );
        }
    }
}

pub fn logs_on_failure<'a>(cluster: &'a LocalCluster, ns: &TestNamespace) -> LogsOnFailure<'a> {
    LogsOnFailure {
        cluster,
        namespace: ns.name.clone(),
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) to `addr` and returns the status code and
/// body. Enough for JSON APIs in tests; not a general client.
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other(format!("connecting to {addr} timed out")))??;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other(format!("{method} {path}: no answer in 30 s")))??;
    let response = String::from_utf8_lossy(&response);
    let (head, rest) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((status, if chunked { dechunk(rest) } else { rest.to_string() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `docker.io/<name>@sha256:…`: the digest reference of an image `make images` built (its
/// `target/images/digests.tsv`), as the node reports it.
pub fn image_ref(name: &str) -> String {
    let path = repo_root().join("target/images/digests.tsv");
    let digests =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run make images", path.display()));
    let prefix = format!("docker.io/{name}:");
    digests
        .lines()
        .find_map(|line| {
            let (image, digest) = line.split_once('\t')?;
            image
                .starts_with(&prefix)
                .then(|| format!("docker.io/{name}@{digest}"))
        })
        .unwrap_or_else(|| panic!("{name} is not in {}", path.display()))
}
