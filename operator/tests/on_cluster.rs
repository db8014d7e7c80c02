//! The operator binary on the local cluster, with exactly the RBAC the Helm chart grants: it
//! starts, becomes ready, validates a TrainingJob into its status with an event, and stops
//! cleanly on SIGTERM.

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

#[tokio::test]
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
    let mut operator = Command::new(env!("CARGO_BIN_EXE_miniautoml-operator"))
        .args([
            format!("--admin-addr=127.0.0.1:{admin_port}"),
            format!("--grpc-addr=127.0.0.1:{}", free_addr().port()),
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
    let rejected = await_condition(jobs, "twitter-model", |job: Option<&TrainingJob>| {
        job.and_then(|j| j.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.reason == "UnknownAlgorithm")
        })
    });
    let job = tokio::time::timeout(WAIT, rejected)
        .await
        .expect("status in time")
        .unwrap()
        .unwrap();
    let status = job.status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert!(
        status.conditions[0]
            .message
            .contains("\"random-forest\" is not configured")
    );

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
    std::fs::remove_dir_all(dir).unwrap();
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
