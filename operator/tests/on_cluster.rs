//! The operator binary on the local cluster, with exactly the RBAC the Helm chart grants: it
//! starts, becomes ready, validates a TrainingJob into its status with an event, checks gRPC
//! callers with the API server (tokens of ServiceAccounts bound to the chart's user roles, or to
//! none), and stops cleanly on SIGTERM.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::events::v1::Event;
use kube::{
    Api,
    api::{ListParams, PostParams},
    runtime::wait::await_condition,
};
use miniautoml_api::TrainingJob;
use miniautoml_test_support::{
    LocalCluster, TestNamespace, WAIT, example, free_addr, install_crds, repo_root,
};

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

// Several threads: the gRPC connections the test opens close in the background while it waits,
// blocking, for the operator to exit (which waits for them).
/// Waits (at most [`WAIT`]) until TrainingJob `name` is `Accepted=False` with `reason`.
async fn not_accepted(jobs: &Api<TrainingJob>, name: &str, reason: &str) -> TrainingJob {
    let refused = await_condition(jobs.clone(), name, |job: Option<&TrainingJob>| {
        job.and_then(|j| j.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.reason == reason)
        })
    });
    tokio::time::timeout(WAIT, refused)
        .await
        .expect("status in time")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_with_the_charts_rbac_and_stops_cleanly() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "operator").await.unwrap();
    let release = ns.name.clone();

    // The chart's ServiceAccount, ClusterRole and binding, rendered by helm and applied.
    let manifests = run(Command::new(cluster.tools_bin.join("helm")).args([
        "template",
        &release,
        repo_root().join("charts/miniautoml").to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--show-only=templates/serviceaccount.yaml",
        "--show-only=templates/rbac.yaml",
        "--show-only=templates/user-roles.yaml",
    ]));
    let mut apply = cluster
        .kubectl()
        .args(["apply", "-n", &ns.name, "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(manifests.as_bytes())
        .unwrap();
    assert!(apply.wait().unwrap().success(), "the chart's RBAC applies");
    let account = format!("{release}-miniautoml");
    let token = run(cluster
        .kubectl()
        .args(["create", "token", &account, "-n", &ns.name]));

    // A kubeconfig with the admin's cluster entry and the ServiceAccount's token.
    let dir = std::env::temp_dir().join(format!("miniautoml-{release}"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        run(cluster.kubectl().args(["config", "view", "--raw", "--minify"])),
    )
    .unwrap();
    let as_account = |args: &[&str]| {
        let mut command = Command::new(cluster.tools_bin.join("kubectl"));
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args);
        run(&mut command)
    };
    as_account(&[
        "config",
        "set-credentials",
        "operator",
        &format!("--token={}", token.trim()),
    ]);
    as_account(&["config", "set-context", "--current", "--user=operator"]);

    let admin_port = free_addr().port();
    let grpc_addr = free_addr();
    // The gRPC API checks callers by default (--grpc-auth=kubernetes).
    let mut operator = Command::new(env!("CARGO_BIN_EXE_miniautoml-operator"))
        .args([
            format!("--admin-addr=127.0.0.1:{admin_port}"),
            format!("--grpc-addr={grpc_addr}"),
            "--original-contract-addr=127.0.0.1:0".to_string(),
            "--console-addr=127.0.0.1:0".to_string(),
            format!("--grpc-namespace={}", ns.name),
            // As the chart runs it without kueue.enabled, whose RBAC it has.
            "--kueue=off".to_string(),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut job: TrainingJob = example("trainingjob.yaml");
    job.spec.algorithm = Some("random-forest".into());
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let job = not_accepted(&jobs, "twitter-model", "UnknownAlgorithm").await;
    let status = job.status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert!(
        status.conditions[0]
            .message
            .contains("\"random-forest\" is not configured")
    );

    // The built-in algorithm has no data-parallel training: three workers would be three
    // copies of the same work, so the run is refused with the reason and nothing is launched.
    let mut copies: TrainingJob = example("trainingjob.yaml");
    copies.metadata.name = Some("three-copies".into());
    copies.spec.workers = 3;
    jobs.create(&PostParams::default(), &copies).await.unwrap();
    let refused = not_accepted(&jobs, "three-copies", "TooManyWorkers").await;
    let message = &refused.status.unwrap().conditions[0].message;
    assert!(message.contains("trains on one worker"), "{message}");
    let launched = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(launched.items.is_empty(), "no Job for a refused run");

    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    let mut warned = false;
    for _ in 0..40 {
        let list = events.list(&ListParams::default()).await.unwrap();
        warned = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("UnknownAlgorithm")
                && e.reporting_controller.as_deref() == Some("miniautoml-operator")
        });
        if warned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(warned, "a warning event names the reason");

    // Readiness follows the caches' sync by up to a polling interval.
    let mut ready = String::new();
    for _ in 0..40 {
        ready = http_get(admin_port, "/readyz");
        if ready.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    grpc_callers_are_reviewed(cluster, &ns.name, &release, grpc_addr).await;

    run(Command::new("kill").args(["-TERM", &operator.id().to_string()]));
    let exited = operator.wait().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut operator.stdout.take().unwrap(), &mut logs).unwrap();
    std::io::Read::read_to_string(&mut operator.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(
        exited.success(),
        "SIGTERM ends the operator cleanly: {exited:?}\n{logs}"
    );
    assert!(logs.contains("SIGTERM received"), "{logs}");
    // The operator watches every namespace, so it may meet another test's namespace while that
    // is being deleted; the API server refuses writes there as "forbidden" too, but that is
    // admission (NamespaceTerminating), not RBAC.
    let denied: Vec<&str> = logs
        .lines()
        .filter(|line| line.to_lowercase().contains("forbidden") && !line.contains("NamespaceTerminating"))
        .collect();
    assert!(
        denied.is_empty(),
        "the chart's RBAC covers every call:\n{}",
        denied.join("\n")
    );

    run(cluster.kubectl().args([
        "delete",
        "clusterrole,clusterrolebinding",
        &account,
        "--ignore-not-found",
    ]));
    for role in ["data-engineer", "data-scientist", "app-developer"] {
        run(cluster.kubectl().args([
            "delete",
            "clusterrole",
            &format!("{account}-{role}"),
            "--ignore-not-found",
        ]));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A call's message with `authorization: Bearer TOKEN` when there is a token.
fn as_caller<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// The gRPC API behind TokenReviews and SubjectAccessReviews: no token or a made-up one is
/// UNAUTHENTICATED; a ServiceAccount without a role binding is PERMISSION_DENIED, naming the
/// permission; a data engineer (the chart's role, bound in the gRPC namespace) may list and read
/// Datasets but not train; health stays open and the trainers' writes still go by run token.
async fn grpc_callers_are_reviewed(
    cluster: &LocalCluster,
    namespace: &str,
    release: &str,
    addr: std::net::SocketAddr,
) {
    use miniautoml_proto::{
        data_management::{
            CreateDatasetRequest, DatasetPointer, ListQueryOptions,
            data_management_service_client::DataManagementServiceClient,
        },
        metadata_store::{LogEpochRequest, metadata_store_service_client::MetadataStoreServiceClient},
        training::{GetTrainingStatusRequest, TrainRequest, training_service_client::TrainingServiceClient},
    };
    use tonic::Code;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    for account in ["engineer", "nobody"] {
        run(cluster
            .kubectl()
            .args(["create", "serviceaccount", account, "-n", namespace]));
    }
    run(cluster.kubectl().args([
        "create",
        "rolebinding",
        "engineer",
        "-n",
        namespace,
        &format!("--clusterrole={release}-miniautoml-data-engineer"),
        &format!("--serviceaccount={namespace}:engineer"),
    ]));
    // Callers' tokens are made for the operator's audience, not the API server's.
    let token_for = |account: &str, audience: &[&str]| {
        run(cluster
            .kubectl()
            .args(["create", "token", account, "-n", namespace])
            .args(audience))
        .trim()
        .to_string()
    };
    let token = |account: &str| token_for(account, &["--audience", "miniautoml"]);
    let (engineer, nobody) = (token("engineer"), token("nobody"));
    let engineer_for_the_api_server = token_for("engineer", &[]);

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut data = DataManagementServiceClient::new(channel.clone());
    let mut training = TrainingServiceClient::new(channel.clone());
    let list = || ListQueryOptions { limit: 0, index: 0 };

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health needs no token");
    assert_eq!(health.get_ref().status, 1, "SERVING");

    let anonymous = data.list_datasets(as_caller(list(), None)).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    assert!(
        anonymous.message().contains("kubectl create token"),
        "{anonymous:?}"
    );
    let made_up = data
        .list_datasets(as_caller(list(), Some("not-a-token")))
        .await
        .unwrap_err();
    assert_eq!(made_up.code(), Code::Unauthenticated, "{made_up:?}");
    assert!(made_up.message().contains("does not accept"), "{made_up:?}");
    // A real token made for the API server (as every pod's own is) is refused: a caller never
    // hands the operator a token that could act on the cluster.
    let wrong_audience = data
        .list_datasets(as_caller(list(), Some(&engineer_for_the_api_server)))
        .await
        .unwrap_err();
    assert_eq!(wrong_audience.code(), Code::Unauthenticated, "{wrong_audience:?}");
    assert!(
        wrong_audience.message().contains("--audience miniautoml"),
        "{wrong_audience:?}"
    );

    let unbound = data
        .create_dataset(as_caller(
            CreateDatasetRequest {
                name: "tweets".into(),
                ..CreateDatasetRequest::default()
            },
            Some(&nobody),
        ))
        .await
        .unwrap_err();
    assert_eq!(unbound.code(), Code::PermissionDenied, "{unbound:?}");
    let missing = format!(
        "system:serviceaccount:{namespace}:nobody may not create datasets.miniautoml.io in namespace \"{namespace}\""
    );
    assert!(unbound.message().contains(&missing), "{unbound:?}");

    let listed = data.list_datasets(as_caller(list(), Some(&engineer))).await;
    assert!(listed.is_ok(), "a data engineer lists Datasets: {listed:?}");
    let unknown = data
        .get_dataset_summary(as_caller(
            DatasetPointer {
                dataset_id: "424242".into(),
            },
            Some(&engineer),
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "past the reviews: {unknown:?}");
    let train = training
        .train(as_caller(TrainRequest::default(), Some(&engineer)))
        .await
        .unwrap_err();
    assert_eq!(train.code(), Code::PermissionDenied, "{train:?}");
    assert!(
        train
            .message()
            .contains("may not create trainingjobs.miniautoml.io"),
        "{train:?}"
    );
    let status = training
        .get_training_status(as_caller(GetTrainingStatusRequest { job_id: 1 }, Some(&engineer)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("may not get trainingjobs.miniautoml.io"),
        "{status:?}"
    );

    // The trainers' writes go by their run's own token, which the metadata store checks: the
    // reviews let them through to it.
    let epoch = MetadataStoreServiceClient::new(channel)
        .log_epoch(as_caller(LogEpochRequest::default(), None))
        .await
        .unwrap_err();
    assert!(!epoch.message().contains("Kubernetes bearer token"), "{epoch:?}");
}

/// A plain HTTP/1.1 GET on the loopback admin port, retried until the operator listens.
fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    for _ in 0..100 {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            return response;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}
