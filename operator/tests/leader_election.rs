//! Two operator processes with `--leader-elect` on the local cluster, in one namespace: one
//! leads (metrics, the Lease), a write sent to the follower is forwarded and the leader carries
//! it out, reads are answered where they arrive, and the leader hands over on SIGTERM at once
//! and on SIGKILL when its Lease expires.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use miniautoml_api::Dataset;
use miniautoml_proto::data_management::{
    self as pb, data_management_service_client::DataManagementServiceClient,
};
use miniautoml_test_support::{
    LocalCluster, OperatorProcess, TestNamespace, harness::tweets, install_crds, operator_log_path,
};
use tonic::transport::Channel;

const LEASE: &str = "operators";
const LEASE_SECONDS: u64 = 6;

fn start(cluster: &LocalCluster, namespace: &str) -> OperatorProcess {
    OperatorProcess::start_at(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        namespace,
        &cluster.s3_secret_key,
        cluster.free_addr(),
        &[
            "--leader-elect",
            &format!("--leader-elect-namespace={namespace}"),
            &format!("--leader-elect-lease={LEASE}"),
            &format!("--lease-duration={LEASE_SECONDS}"),
        ],
    )
}

/// `miniautoml_operator_leader` from the operator's `/metrics`, once it answers.
async fn leading(operator: &OperatorProcess) -> Option<bool> {
    let (status, body) =
        miniautoml_test_support::harness::http(&operator.admin_addr.to_string(), "GET", "/metrics", None)
            .await
            .ok()?;
    (status == 200).then_some(())?;
    let line = body
        .lines()
        .find(|l| l.starts_with("miniautoml_operator_leader "))?;
    Some(line.ends_with(" 1"))
}

/// The `<address>` part of the Lease's holder identity, when held.
async fn holder(leases: &Api<Lease>) -> Option<String> {
    let lease = leases.get_opt(LEASE).await.ok()??;
    let identity = lease.spec?.holder_identity?;
    identity.rsplit_once('_').map(|(_, address)| address.to_string())
}

async fn client(operator: &OperatorProcess) -> DataManagementServiceClient<Channel> {
    DataManagementServiceClient::new(operator.grpc_channel().await)
}

/// Waits (at most `within`) until the operator at `address` holds the Lease; how long it took.
async fn leads_within(leases: &Api<Lease>, address: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if holder(leases).await.as_deref() == Some(address) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{address} did not lead within {within:?}; holder {:?}",
        holder(leases).await
    );
}

#[tokio::test]
async fn one_leader_writes_followers_forward_and_the_lease_changes_hands() {
    let cluster = LocalCluster::shared();
    let client_kube = cluster.client().await.unwrap();
    install_crds(&client_kube).await.unwrap();
    let ns = TestNamespace::new(cluster, &client_kube, "leader").await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client_kube.clone(), &ns.name);
    let _logs = miniautoml_test_support::harness::logs_on_failure(cluster, &ns);

    let mut first = start(cluster, &ns.name);
    let first_address = first.grpc_addr.to_string();
    leads_within(&leases, &first_address, Duration::from_secs(30)).await;
    let mut second = start(cluster, &ns.name);
    let second_address = second.grpc_addr.to_string();
    let mut follower_grpc = client(&second).await;
    // Both ready; only the first leads.
    for _ in 0..100 {
        if leading(&second).await == Some(false) && leading(&first).await == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leading(&first).await, Some(true));
    assert_eq!(leading(&second).await, Some(false));

    // A write on the follower: forwarded; the leader ingests the commit before answering.
    let s3 = cluster.s3();
    let key = format!("raw/{}/part1.csv", ns.name);
    s3.put_object()
        .bucket(&cluster.s3_bucket)
        .key(&key)
        .body(tweets(1).into())
        .send()
        .await
        .unwrap();
    let created = follower_grpc
        .create_dataset(pb::CreateDatasetRequest {
            name: "tweets".into(),
            description: "through the follower".into(),
            dataset_type: pb::DatasetType::TextIntent as i32,
            bucket: cluster.s3_bucket.clone(),
            path: key,
            tags: vec![],
        })
        .await
        .unwrap_or_else(|status| panic!("CreateDataset on the follower: {status:?}"))
        .into_inner();
    assert_eq!(created.dataset_id, "1");
    assert_eq!(created.commits[0].statistics["numExamples"], "2963");
    let datasets: Api<Dataset> = Api::namespaced(client_kube.clone(), &ns.name);
    assert!(datasets.get("tweets").await.is_ok());
    // A read on the follower, from its own cache or the API server.
    let summary = follower_grpc
        .get_dataset_summary(pb::DatasetPointer {
            dataset_id: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.name, "tweets");
    let leader_log = std::fs::read_to_string(operator_log_path(&ns.name)).unwrap();
    assert!(leader_log.contains("became the leader"), "{leader_log}");

    // SIGTERM: the leader stops its controllers, releases the Lease, the follower takes it.
    let terminated = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let handover = leads_within(&leases, &second_address, Duration::from_secs(LEASE_SECONDS)).await;
    println!(
        "handover after SIGTERM: {:?} ({:?} after the signal)",
        handover,
        terminated.elapsed()
    );
    assert!(
        handover < Duration::from_secs(LEASE_SECONDS),
        "a released Lease waited for its expiry"
    );
    first.kill();
    // The Lease names it a moment before its metrics do.
    let mut reports = None;
    for _ in 0..50 {
        reports = leading(&second).await;
        if reports == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reports, Some(true), "the new leader's miniautoml_operator_leader");

    // SIGKILL: nobody releases the Lease; a third operator takes it once it expires.
    let third = start(cluster, &ns.name);
    let third_address = third.grpc_addr.to_string();
    let _ = client(&third).await;
    let killed = Instant::now();
    second.kill();
    let took = leads_within(&leases, &third_address, Duration::from_secs(LEASE_SECONDS * 3)).await;
    println!(
        "takeover after SIGKILL: {took:?} ({:?} after the kill)",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() <= Duration::from_secs(LEASE_SECONDS + 3),
        "the takeover took longer than the lease duration"
    );
    drop(third);
}

#[tokio::test]
async fn a_follower_forwards_only_to_a_leader_it_verified() {
    let cluster = LocalCluster::shared();
    let client_kube = cluster.client().await.unwrap();
    install_crds(&client_kube).await.unwrap();
    let ns = TestNamespace::new(cluster, &client_kube, "lease-hijack")
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(client_kube.clone(), &ns.name);
    // Whoever may patch the Lease names their own listener as the leader, for a long time.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap = listener.local_addr().unwrap();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    let trap_task = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let now = k8s_openapi::jiff::Timestamp::now();
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": LEASE},
        "spec": {
            "holderIdentity": format!("attacker_{trap}"),
            "leaseDurationSeconds": 3600,
            "acquireTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        },
    }))
    .unwrap();
    leases.create(&Default::default(), &lease).await.unwrap();

    // A replica that runs in a pod (as the chart starts it) checks the holder's pod: there is
    // none named "attacker" running as the operator's ServiceAccount, so nothing is forwarded.
    let in_pod = OperatorProcess::start_with_env(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        &ns.name,
        &cluster.s3_secret_key,
        cluster.free_addr(),
        &[
            "--leader-elect",
            &format!("--leader-elect-namespace={}", ns.name),
            &format!("--leader-elect-lease={LEASE}"),
            &format!("--lease-duration={LEASE_SECONDS}"),
        ],
        &cluster.kubeconfig,
        &[("POD_NAME", "replica-0"), ("POD_SERVICE_ACCOUNT", "miniautoml")],
    );
    let refused = client(&in_pod)
        .await
        .create_dataset(pb::CreateDatasetRequest {
            name: "tweets".into(),
            description: String::new(),
            dataset_type: pb::DatasetType::TextIntent as i32,
            bucket: cluster.s3_bucket.clone(),
            path: format!("raw/{}/part1.csv", ns.name),
            tags: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("does not forward") && refused.message().contains("no pod of that name"),
        "{}",
        refused.message()
    );
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the follower connected to the address the Lease names"
    );
    println!("refused: {}", refused.message());
    trap_task.abort();
}
