//! The process node on the local cluster: pods made by the real kube-controller-manager, bound
//! by the real kube-scheduler, run as local processes with their env, exit codes, readiness and
//! deletion. (The cluster's image mapping is `hack/cluster/images.yaml`.)

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{ConfigMap, Pod, Secret},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
    runtime::wait::{Condition, await_condition},
};
use miniautoml_test_support::{LocalCluster, TestNamespace, WAIT};

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

async fn wait<K>(api: &Api<K>, name: &str, what: &str, condition: impl Condition<K>) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    tokio::time::timeout(WAIT, await_condition(api.clone(), name, condition))
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out waiting for {what}"))
        .unwrap()
        .unwrap_or_else(|| panic!("{name} is gone"))
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn terminated(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    let statuses = pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap();
    statuses[0].state.clone().unwrap().terminated.unwrap()
}

/// The log of `pod`'s container `container` (first run).
fn log(cluster: &LocalCluster, pod: &Pod, container: &str) -> String {
    let dir = format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap(),
        pod.metadata.name.as_deref().unwrap(),
        pod.metadata.uid.as_deref().unwrap()
    );
    let path: PathBuf = cluster.pod_logs.join(dir).join(container).join("0.log");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn an_indexed_job_runs_a_local_binary_to_completion() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "pn-job").await.unwrap();
    let create = PostParams::default();
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(
            &create,
            &object(serde_json::json!({
                "metadata": {"name": "s3"}, "stringData": {"secret": "hunter2"},
            })),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .create(
            &create,
            &object(serde_json::json!({
                "metadata": {"name": "settings"}, "data": {"MODE": "fast"},
            })),
        )
        .await
        .unwrap();
    // miniautoml/test-env is mapped to /usr/bin/env: the container prints its environment.
    let job: Job = object(serde_json::json!({
        "metadata": {"name": "print-env"},
        "spec": {
            "completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": "miniautoml/test-env:1",
                    "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}},
                        {"name": "ADDRESS", "value": "$(POD_IP):8080"},
                    ],
                }],
            }},
        },
    }));
    let jobs = Api::<Job>::namespaced(client.clone(), &ns.name);
    jobs.create(&create, &job).await.unwrap();
    wait(&jobs, "print-env", "the Job to complete", |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref()?.succeeded) == Some(2)
    })
    .await;

    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let list = pods
        .list(&ListParams::default().labels("job-name=print-env"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);
    let mut ips = Vec::new();
    let mut indexes = Vec::new();
    for pod in &list.items {
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", "print-env"));
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("process-node")
        );
        assert_eq!(phase(pod), Some("Succeeded"));
        let ended = terminated(pod);
        assert_eq!((ended.exit_code, ended.reason.as_deref()), (0, Some("Completed")));
        let pod_ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        assert!(pod_ip.starts_with("127.0."), "{pod_ip}");

        let env = log(cluster, pod, "main");
        let name = pod.metadata.name.as_deref().unwrap();
        for line in [
            format!("POD_NAME={name}"),
            format!("POD_IP={pod_ip}"),
            format!("ADDRESS={pod_ip}:8080"),
            "SECRET=hunter2".into(),
            "CFG_MODE=fast".into(),
            format!("HOSTNAME={name}"),
        ] {
            assert!(env.lines().any(|l| l == line), "{line} missing from\n{env}");
        }
        let via_api = cluster
            .kubectl()
            .args(["logs", "-n", &ns.name, name])
            .output()
            .unwrap();
        assert!(
            via_api.status.success(),
            "{}",
            String::from_utf8_lossy(&via_api.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&via_api.stdout),
            env,
            "kubectl logs reads the same log"
        );
        let index = env
            .lines()
            .find_map(|l| l.strip_prefix("JOB_COMPLETION_INDEX="))
            .expect("the Job controller's completion index reaches the process");
        indexes.push(index.to_string());
        ips.push(pod_ip);
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1"]);
    assert_ne!(ips[0], ips[1], "every pod has its own IP");
}

#[tokio::test]
async fn the_log_endpoint_refuses_clients_without_a_cluster_certificate() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(client)
        .get("process-node")
        .await
        .unwrap();
    let port = node
        .status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    assert!(port > 0, "the node advertises its log endpoint");
    let url = format!("https://127.0.0.1:{port}/healthz");
    let anonymous = std::process::Command::new("curl")
        .args(["-sk", &url])
        .output()
        .unwrap();
    assert!(!anonymous.status.success(), "served without a client certificate");
}

#[tokio::test]
async fn failures_carry_the_exit_code_or_the_reason() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "pn-fail").await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let create = PostParams::default();
    let pod = |name: &str, image: &str, command: serde_json::Value| -> Pod {
        object(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": image, "command": command}]},
        }))
    };
    pods.create(
        &create,
        &pod(
            "exit-3",
            "busybox:1.36",
            serde_json::json!(["sh", "-c", "exit 3"]),
        ),
    )
    .await
    .unwrap();
    pods.create(
        &create,
        &pod("unmapped", "nginx:1.27", serde_json::json!(["nginx"])),
    )
    .await
    .unwrap();
    pods.create(
        &create,
        &pod(
            "not-found",
            "busybox:1.36",
            serde_json::json!(["no-such-program"]),
        ),
    )
    .await
    .unwrap();
    let mut deadline = pod("deadline", "busybox:1.36", serde_json::json!(["sleep", "600"]));
    deadline.spec.as_mut().unwrap().active_deadline_seconds = Some(2);
    pods.create(&create, &deadline).await.unwrap();

    let failed = |pod: Option<&Pod>| pod.and_then(phase) == Some("Failed");
    let exit_3 = wait(&pods, "exit-3", "Failed", failed).await;
    let ended = terminated(&exit_3);
    assert_eq!((ended.exit_code, ended.reason.as_deref()), (3, Some("Error")));

    let unmapped = wait(&pods, "unmapped", "Failed", failed).await;
    let status = unmapped.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("UnmappedImage"));
    let message = status.message.unwrap();
    assert!(
        message.contains("\"nginx:1.27\"") && message.contains("has no mapping"),
        "{message}"
    );

    let not_found = wait(&pods, "not-found", "Failed", failed).await;
    let ended = terminated(&not_found);
    assert_eq!(
        (ended.exit_code, ended.reason.as_deref()),
        (128, Some("StartError"))
    );
    assert!(ended.message.unwrap().contains("executable file not found"));

    let deadline = wait(&pods, "deadline", "Failed", failed).await;
    assert_eq!(
        deadline.status.as_ref().unwrap().reason.as_deref(),
        Some("DeadlineExceeded")
    );
    assert_eq!(terminated(&deadline).exit_code, 143, "SIGTERM ended it");
}

#[tokio::test]
async fn a_missing_secret_holds_the_container_until_it_exists() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "pn-secret").await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let pod: Pod = object(serde_json::json!({
        "metadata": {"name": "needs-secret"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox", "command": ["sh", "-c", "test \"$TOKEN\" = later"],
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}],
        }]},
    }));
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let waiting = wait(
        &pods,
        "needs-secret",
        "CreateContainerConfigError",
        |pod: Option<&Pod>| {
            pod.and_then(|p| {
                p.status.as_ref()?.container_statuses.as_ref()?[0]
                    .state
                    .clone()?
                    .waiting
            })
            .is_some_and(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
        },
    )
    .await;
    let state = waiting.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap();
    assert_eq!(
        state.waiting.unwrap().message.as_deref(),
        Some("secret \"late\" not found")
    );

    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &object(serde_json::json!({
                "metadata": {"name": "late"}, "stringData": {"token": "later"},
            })),
        )
        .await
        .unwrap();
    let done = wait(&pods, "needs-secret", "Succeeded", |pod: Option<&Pod>| {
        pod.and_then(phase) == Some("Succeeded")
    })
    .await;
    assert_eq!(terminated(&done).exit_code, 0);
}

/// Whether something accepts TCP connections at `address`.
async fn listening(address: &str) -> bool {
    tokio::net::TcpStream::connect(address).await.is_ok()
}

#[tokio::test]
async fn a_deployment_rolls_out_on_readiness_restarts_crashes_and_stops_on_delete() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "pn-deploy").await.unwrap();
    // Two replicas listen on the same port, each on its own pod IP; ready once they answer.
    let deployment: Deployment = object(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [{
                    "name": "web",
                    "image": "python:3.12",
                    "command": ["python3", "-m", "http.server", "--bind", "$(POD_IP)", "8080"],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                }]},
            },
        },
    }));
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    wait(
        &deployments,
        "web",
        "2 available replicas",
        |d: Option<&Deployment>| d.and_then(|d| d.status.as_ref()?.available_replicas) == Some(2),
    )
    .await;

    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    let addresses: Vec<String> = list
        .items
        .iter()
        .map(|p| format!("{}:8080", p.status.as_ref().unwrap().pod_ip.as_deref().unwrap()))
        .collect();
    assert_ne!(addresses[0], addresses[1]);
    for address in &addresses {
        assert!(listening(address).await, "{address} serves");
    }

    // A crash (the process killed from outside) restarts the container; it turns ready again.
    let victim = &list.items[0];
    let name = victim.metadata.name.clone().unwrap();
    let container_id = victim
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let pid: i32 = container_id.rsplit('/').next().unwrap().parse().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let restarted = wait(&pods, &name, "a restart that turns ready", |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first().cloned())
            .is_some_and(|c| c.restart_count == 1 && c.ready)
    })
    .await;
    let status = restarted.status.unwrap().container_statuses.unwrap()[0].clone();
    let last = status.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.signal), (137, Some(9)));

    deployments
        .delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    for pod in &list.items {
        let name = pod.metadata.name.clone().unwrap();
        tokio::time::timeout(
            WAIT,
            await_condition(pods.clone(), &name, |p: Option<&Pod>| p.is_none()),
        )
        .await
        .expect("the pod is removed once its process stopped")
        .unwrap();
    }
    for address in &addresses {
        let mut closed = false;
        for _ in 0..50 {
            if !listening(address).await {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(closed, "{address} still serves after its pod was deleted");
    }
}
