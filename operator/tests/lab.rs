//! The original MiniAutoML lab, replayed through grpcurl with its requests unchanged
//! (`hack/lab.sh`: the dataset named `tweet_emotion`, Train with `LR 4, EPOCHS 15, BATCH_SIZE 64,
//! FC_SIZE 128`, a second commit, Train with `LR 50, FC_SIZE 1024`, predictions), against the
//! operator binary on the local cluster with the trainer and predictor images on the local node.

use kube::{Api, ResourceExt, api::ListParams};
use miniautoml_api::{Dataset, TrainingJob};
use miniautoml_test_support::{
    harness::{self, logs_on_failure},
    repo_root,
};

#[tokio::test]
async fn the_original_lab_runs_unchanged() {
    let (cluster, client, ns, operator) = harness::namespace_with_operator(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        "lab",
        // The original lab's bucket and folder, granted as an administrator would.
        &["--dataset-source=*=mini-automl-dm/upload/"],
    )
    .await;
    let _logs = logs_on_failure(cluster, &ns);
    let path = format!(
        "{}:{}",
        cluster.tools_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = repo_root().join("hack/lab.sh");
    let env = [
        ("GRPC_ADDR", operator.grpc_addr.to_string()),
        ("PATH", path),
        ("S3_ENDPOINT", cluster.s3_endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", cluster.s3_access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", cluster.s3_secret_key.clone()),
    ];
    let lab =
        tokio::task::spawn_blocking(move || std::process::Command::new(&script).envs(env).output().unwrap())
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&lab.stdout);
    let stderr = String::from_utf8_lossy(&lab.stderr);
    assert!(lab.status.success(), "hack/lab.sh failed:\n{stdout}\n{stderr}");

    // The dataset keeps the caller's name; its object has one derived from it.
    for expected in [
        "\"name\": \"tweet_emotion\"",
        "\"numExamples\": \"2963\"",
        "version_hash is \"hashAg==\"",
        "version_hash is \"hashBg==\"",
        "=== lab done",
    ] {
        assert!(stdout.contains(expected), "no {expected} in:\n{stdout}");
    }
    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns.name);
    let names: Vec<String> = datasets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(names, ["tweet-emotion"]);

    // Both runs succeeded with the lab's hyperparameters, and every prediction is a label of
    // the dataset.
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let mut runs: Vec<(String, String, Option<f64>)> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|job| {
            let status = job.status.clone().unwrap_or_default();
            (
                job.name_any(),
                job.spec.parameters.get("LR").cloned().unwrap_or_default(),
                status.metrics.get("accuracy").copied(),
            )
        })
        .collect();
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(runs.len(), 2, "{runs:?}");
    for (name, lr, accuracy) in &runs {
        let accuracy = accuracy.unwrap_or_else(|| panic!("{name} (LR {lr}) has no test accuracy"));
        assert!(accuracy > 0.6, "{name} (LR {lr}): test accuracy {accuracy}");
    }
    assert_eq!(runs.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["4", "50"]);
    let predictions: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("\"response\": "))
        .collect();
    assert_eq!(predictions.len(), 3, "{stdout}");
    for prediction in predictions {
        assert!(
            ["anger", "joy", "optimism", "sadness"]
                .iter()
                .any(|label| prediction.contains(&format!("\\\"result\\\": \\\"{label}\\\""))),
            "{prediction}"
        );
    }
}
