//! The operator binary fails fast, with a reason, when it cannot start.

use std::process::{Command, Output};

fn operator(args: &[&str], kubeconfig: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_miniautoml-operator"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("the operator binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const LOCAL_PORTS: [&str; 4] = [
    "--admin-addr=127.0.0.1:0",
    "--grpc-addr=127.0.0.1:0",
    "--original-contract-addr=127.0.0.1:0",
    "--console-addr=127.0.0.1:0",
];

#[test]
fn no_cluster_configuration_is_a_clear_error() {
    let output = operator(&LOCAL_PORTS, "/nonexistent/kubeconfig");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no usable Kubernetes configuration"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unreachable_cluster_is_a_clear_error() {
    // A port nothing listens on: bind one, note it, free it.
    let port = miniautoml_test_support::free_addr().port();
    let dir = std::env::temp_dir().join(format!("miniautoml-binary-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let output = operator(&LOCAL_PORTS, kubeconfig.to_str().unwrap());
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "cannot reach the Kubernetes API server at http://127.0.0.1:{port}/"
        )),
        "{message}"
    );
    assert!(message.contains("make cluster-up"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_taken_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = operator(
        &[
            &format!("--grpc-addr={addr}"),
            "--admin-addr=127.0.0.1:0",
            "--original-contract-addr=127.0.0.1:0",
            "--console-addr=127.0.0.1:0",
        ],
        "/nonexistent/kubeconfig",
    );
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("gRPC server cannot listen on {addr}")),
        "{message}"
    );
}

#[test]
fn bad_flags_are_rejected_before_anything_starts() {
    let output = operator(&["--algorithm=no-image"], "/nonexistent/kubeconfig");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is not NAME=IMAGE"),
        "{}",
        stderr(&output)
    );
}
