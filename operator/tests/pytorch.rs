//! The PyTorch example algorithm (`miniautoml/pytorch-intent`, built by `make images` from
//! Debian's python3-torch) on the real node: one worker, and data-parallel over two and three
//! ranks (DDP over gloo), launched by `python train.py` and by a bare `torchrun`. The helper
//! package (`training-code/miniautoml-training`) reports every epoch and stores the model.

use kube::{Api, api::PostParams};
use miniautoml_api::{Dataset, TrainingJob, training_job::TrainingPhase};
use miniautoml_data::Store;
use miniautoml_test_support::{
    LocalCluster,
    harness::{self, finished, logs_on_failure, training_job, tweet_emotion, wait_for},
};
use sha2::{Digest, Sha256};

/// A TrainingJob `name` of the PyTorch example with `workers` ranks (one torch thread each, so
/// that several ranks share the node's cores without oversubscribing them) and `extra` fields.
fn pytorch_job(name: &str, workers: i32, extra: serde_json::Value) -> TrainingJob {
    let mut spec = serde_json::json!({
        "algorithm": "pytorch-intent",
        "workers": workers,
        "parameters": {"EPOCHS": "3", "THREADS": "1"},
    });
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    training_job(name, spec)
}

async fn succeeded(
    jobs: &Api<TrainingJob>,
    name: &str,
    namespace: &str,
) -> miniautoml_api::TrainingJobStatus {
    let done = wait_for(jobs, name, namespace, finished).await;
    let status = done.status.clone().unwrap();
    assert_eq!(
        status.phase,
        Some(TrainingPhase::Succeeded),
        "{name}: {status:#?}"
    );
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pytorch_example_trains_alone_and_data_parallel_to_the_same_weights_on_every_rank() {
    let (cluster, client, ns, _operator) =
        harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), "pytorch", &[]).await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(
        cluster,
        &Api::<Dataset>::namespaced(client.clone(), &ns.name),
        &ns.name,
    )
    .await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    for (name, workers) in [("alone", 1), ("pair", 2), ("trio", 3)] {
        jobs.create(
            &PostParams::default(),
            &pytorch_job(name, workers, serde_json::json!({})),
        )
        .await
        .unwrap();
    }

    // One worker: every epoch reported, the model and its manifest stored and registered.
    let alone = succeeded(&jobs, "alone", &ns.name).await;
    let ids: Vec<&str> = alone.epochs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["0-1", "0-2", "0-3"], "{alone:#?}");
    for epoch in &alone.epochs {
        for metric in ["accuracy", "loss", "macroF1", "trainLoss"] {
            assert!(epoch.metrics.contains_key(metric), "{metric}: {epoch:?}");
        }
    }
    let message = alone.message.clone().unwrap();
    assert!(message.starts_with("test accuracy "), "{message}");
    assert!(alone.metrics["accuracy"] > 0.4, "{alone:#?}");
    assert_eq!(
        alone.code_version.as_deref(),
        Some(harness::image_ref("miniautoml/pytorch-intent").as_str())
    );
    let artifact = alone.artifact.clone().unwrap();
    assert_eq!(
        artifact.files,
        ["labels.json", "manifest.json", "model.pt", "vocab.json"]
    );
    // The manifest's checksums are those of the files stored beside it.
    let prefix = artifact
        .uri
        .strip_prefix(&format!("s3://{}/", cluster.s3_bucket))
        .unwrap()
        .to_string();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read(&format!("{prefix}manifest.json")).await.unwrap()).unwrap();
    assert_eq!(manifest["format"], "miniautoml.model/v1", "{manifest}");
    assert_eq!(manifest["algorithm"], "pytorch-intent", "{manifest}");
    assert!(
        manifest["framework"].as_str().unwrap().starts_with("torch 1.13"),
        "{manifest}"
    );
    assert_eq!(manifest["hyperparameters"]["EPOCHS"], "3", "{manifest}");
    for name in ["labels.json", "model.pt", "vocab.json"] {
        let body = store.read(&format!("{prefix}{name}")).await.unwrap();
        let digest: String = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            manifest["files"][name]["sha256"],
            digest.as_str(),
            "{name}: {manifest}"
        );
        assert_eq!(manifest["files"][name]["bytes"], body.len(), "{name}: {manifest}");
    }

    // Two and three ranks: one Indexed Job, each rank its share of every epoch, and after
    // training the ranks compared their weights (all_gather of a sha256): identical.
    for (name, workers) in [("pair", 2), ("trio", 3)] {
        let status = succeeded(&jobs, name, &ns.name).await;
        let message = status.message.clone().unwrap();
        assert!(
            message.contains(&format!("weights identical on {workers} ranks")),
            "{name}: {message}"
        );
        assert_eq!(status.progress.as_deref(), Some("3/3"), "{status:#?}");
        let logs = pod_logs(cluster, &ns.name, &format!("{name}-train"));
        for rank in 0..workers {
            assert!(
                logs.contains(&format!("rank {rank}/{workers} (gloo)")),
                "{name}: {logs}"
            );
            assert!(logs.contains(&format!("rank {rank} epoch 3:")), "{name}: {logs}");
        }
        let manifest = serde_json::from_slice::<serde_json::Value>(
            &store
                .read(&format!(
                    "{}manifest.json",
                    status
                        .artifact
                        .as_ref()
                        .unwrap()
                        .uri
                        .strip_prefix(&format!("s3://{}/", cluster.s3_bucket))
                        .unwrap()
                ))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["data"]["workers"], workers.to_string(), "{manifest}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bare_torchrun_launch_works_unchanged() {
    // The image's entrypoint is `torchrun train.py`: no flags, the operator's PET_* say it all.
    let (cluster, client, ns, _operator) =
        harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), "torchrun", &[]).await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(
        cluster,
        &Api::<Dataset>::namespaced(client.clone(), &ns.name),
        &ns.name,
    )
    .await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let mut job = pytorch_job(
        "launched",
        2,
        serde_json::json!({"image": "miniautoml/test-torchrun:1"}),
    );
    job.spec.algorithm = None;
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let status = succeeded(&jobs, "launched", &ns.name).await;
    let message = status.message.clone().unwrap();
    assert!(message.contains("weights identical on 2 ranks"), "{message}");
    let logs = pod_logs(cluster, &ns.name, "launched-train");
    // torchrun's agent started one worker per pod with the rank the pod's index gave it.
    assert!(
        logs.contains("rank 0/2 (gloo)") && logs.contains("rank 1/2 (gloo)"),
        "{logs}"
    );
}

/// The logs of every pod of the Job `job`.
fn pod_logs(cluster: &LocalCluster, namespace: &str, job: &str) -> String {
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
