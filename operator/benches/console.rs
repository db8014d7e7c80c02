//! `make bench-console-cluster`: the console's runs table with 500 runs, on the path users take.
//! 500 one-GPU TrainingJobs run to the end on simulated GPU nodes (kwok; the simulated trainer
//! reports three epochs and the artifact of each, through the operator's metadata store), then
//! a ServiceAccount that may list the namespace's runs signs in to the operator's console in
//! chromium (through chromedriver) and loads `/runs` `BENCH_CONSOLE_LOADS` times: the first
//! load with the reviews not yet kept, then the rest. Each load is read from the browser's own
//! Navigation Timing: the server's answer (request start to response end), DOM ready and the
//! load event, until the table shows all 500 rows.

mod common;

use std::time::{Duration, Instant};

use common::{
    count_succeeded, create_runs, env_number, gpu_nodes, remove_gpu_nodes, simulate, small_dataset,
};
use kube::Api;
use miniautoml_api::TrainingJob;
use miniautoml_e2e::browser::Browser;
use miniautoml_test_support::{LocalCluster, OperatorProcess, TestNamespace, install_crds};

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let runs = env_number("BENCH_CONSOLE_RUNS", 500);
    let loads = env_number("BENCH_CONSOLE_LOADS", 20);
    let nodes = env_number("BENCH_GPU_NODES", 20);
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    gpu_nodes(&client, nodes).await;
    let ns = TestNamespace::new(cluster, &client, "bench-console")
        .await
        .unwrap();
    let console_addr = miniautoml_test_support::free_addr();
    let operator = OperatorProcess::start_at(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        &ns.name,
        &cluster.s3_secret_key,
        cluster.free_addr(),
        &[
            &format!("--console-addr={console_addr}"),
            // Viewers are reviewed as the chart's default has it.
            "--grpc-auth=kubernetes",
        ],
    );
    small_dataset(cluster, &client, &ns.name, &operator).await;
    let simulation = simulate(&client, cluster, &operator, &ns.name, Duration::from_millis(500)).await;
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    create_runs(&jobs, runs, None).await;
    loop {
        let done = count_succeeded(&jobs).await;
        if done == runs {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "{done} of {runs} runs Succeeded in 20 min"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "{runs} runs Succeeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    simulation.stop();

    // A viewer who may list and get the namespace's runs, and its token for the console.
    cluster.apply(&format!(
        "apiVersion: v1
kind: ServiceAccount
metadata: {{name: viewer, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: run-viewer, namespace: {ns}}}
rules:
  - {{apiGroups: [miniautoml.io], resources: [trainingjobs], verbs: [get, list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: viewer, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: run-viewer}}
subjects: [{{kind: ServiceAccount, name: viewer, namespace: {ns}}}]
",
        ns = ns.name
    ));
    let token = cluster
        .kubectl()
        .args([
            "create",
            "token",
            "viewer",
            "-n",
            &ns.name,
            "--audience",
            "miniautoml",
        ])
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();

    tokio::task::spawn_blocking(move || {
        // Plain HTTP here (no TLS directory): no certificate to trust.
        let browser = Browser::start("none");
        let base = format!("http://{console_addr}");
        browser.goto(&format!("{base}/login#token={token}"));
        let rows = format!("return document.querySelectorAll('#runs tbody tr[data-key]').length === {runs};");
        browser.wait_for("the runs table after signing in", Duration::from_secs(60), &rows);
        // Once the load event has ended: the answer, DOM ready, the load event, and the bytes.
        let timing = "const n = performance.getEntriesByType('navigation')[0];
             return n && n.loadEventEnd > 0 ? [n.responseEnd - n.requestStart, n.domContentLoadedEventEnd - n.startTime,
                     n.loadEventEnd - n.startTime, n.transferSize] : null;";
        let (mut answer, mut ready, mut loaded) = (Vec::new(), Vec::new(), Vec::new());
        let mut bytes = 0.0;
        let mut first = None;
        for load in 0..loads {
            browser.goto(&format!("{base}/runs"));
            browser.wait_for("all rows", Duration::from_secs(30), &rows);
            let t = browser.wait_for("the load event's timing", Duration::from_secs(10), timing);
            let t: Vec<f64> = t.as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(0.0)).collect();
            if load == 0 {
                first = Some(t.clone());
            } else {
                answer.push(t[0]);
                ready.push(t[1]);
                loaded.push(t[2]);
            }
            bytes = t[3];
        }
        let first = first.unwrap();
        println!(
            "| /runs with {runs} runs ({} loads after the first) | p50 | p95 | first load |",
            loads - 1
        );
        println!("|---|---|---|---|");
        for (what, values, at) in [
            ("server's answer (request to response end)", &mut answer, 0),
            ("DOM ready", &mut ready, 1),
            ("load event (styles, scripts)", &mut loaded, 2),
        ] {
            println!(
                "| {what} | {:.0} ms | {:.0} ms | {:.0} ms |",
                percentile(values, 0.5),
                percentile(values, 0.95),
                first[at]
            );
        }
        println!("page transferred: {bytes:.0} bytes");
    })
    .await
    .unwrap();
    drop(operator);
    remove_gpu_nodes(&client, nodes).await;
}
