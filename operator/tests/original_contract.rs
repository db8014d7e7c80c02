//! The original MiniAutoML's training contract, its images unchanged, on the real node:
//! `miniautoml/test-original` (hack/images/original-contract/train.py) follows it to the
//! letter — no token, plain text to `METADATA_STORE_SERVER`, `MINIO_SERVER` as host:port,
//! rank 0's LogRunStart naming where the four files go, per-rank epochs, CreateArtifact,
//! LogRunEnd — and trains through the original `Train` with `PARALLEL_INSTANCES=3`. Its reports
//! are taken only from its own run's pods and only for that run. Its predictor's contract too:
//! `miniautoml/test-original-predictor` serves the run's files from `MODEL_DIR/<runId>/` on
//! 51001, through `PredictionService/Predict`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
    runtime::wait::await_condition,
};
use miniautoml_api::{ModelDeployment, TrainingJob, training_job::TrainingPhase};
use miniautoml_data::{Store, layout};
use miniautoml_proto::{
    data_management::{
        CreateDatasetRequest, DatasetQuery, DatasetType,
        data_management_service_client::DataManagementServiceClient,
    },
    metadata_store::{
        GetRunStatusRequest, LogRunStartRequest, metadata_store_service_client::MetadataStoreServiceClient,
    },
    prediction::{PredictRequest, prediction_service_client::PredictionServiceClient},
    training::{TrainRequest, TrainingJobMetadata, training_service_client::TrainingServiceClient},
};
use miniautoml_test_support::{
    WAIT,
    harness::{self, finished, job_logs, logs_on_failure, tweets, wait_for},
};

const FLAGS: [&str; 2] = [
    "--algorithm=original-intent=miniautoml/test-original:1",
    "--algorithm-contract=original-intent=Original",
];

#[tokio::test(flavor = "multi_thread")]
async fn an_original_image_trains_through_train_on_three_ranks_and_reports_only_its_own_run() {
    let (cluster, client, ns, operator) =
        harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), "original", &FLAGS).await;
    let _logs = logs_on_failure(cluster, &ns);
    let channel = operator.grpc_channel().await;

    // The lab's steps: a dataset from a CSV in the store, a snapshot, then Train.
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let key = format!("raw/{}/part1.csv", ns.name);
    store.put(&key, tweets(1), "text/csv").await.unwrap();
    let mut data = DataManagementServiceClient::new(channel.clone());
    let summary = data
        .create_dataset(CreateDatasetRequest {
            name: "tweets".into(),
            description: "part 1".into(),
            dataset_type: DatasetType::TextIntent as i32,
            bucket: cluster.s3_bucket.clone(),
            path: key,
            tags: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let version = data
        .prepare_training_dataset(DatasetQuery {
            dataset_id: summary.dataset_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut training = TrainingServiceClient::new(channel.clone());
    let train = |parameters: Vec<(&str, String)>| TrainRequest {
        metadata: Some(TrainingJobMetadata {
            algorithm: "original-intent".into(),
            dataset_id: summary.dataset_id.clone(),
            name: "Intent Classifier".into(),
            train_data_version_hash: version.version_hash.clone(),
            parameters: parameters.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            output_model_name: "twitter_model".into(),
        }),
    };
    // Run B, one rank; then run A on three ranks, each of whose ranks also tries to report an
    // epoch into run B.
    let run_b = training
        .train(train(vec![("EPOCHS", "2".into())]))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let run_a = training
        .train(train(vec![
            ("EPOCHS", "2".into()),
            ("PARALLEL_INSTANCES", "3".into()),
            ("ALSO_REPORT_TO", run_b.to_string()),
        ]))
        .await
        .unwrap()
        .into_inner()
        .job_id;

    // A pod that is no run's, running the same image, reporting as run A: refused.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let plain = operator.original_contract_addr.to_string();
    let impostor: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "impostor"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "miniautoml/test-original:1",
            "env": [{"name": "REPORT_ONLY", "value": "1"}, {"name": "JOB_ID", "value": run_a.to_string()},
                    {"name": "METADATA_STORE_SERVER", "value": plain}],
        }]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &impostor).await.unwrap();

    // From this host (the node's address, not a pod's): refused too, and reads are not served.
    let endpoint = format!("http://{}", operator.original_contract_addr);
    let mut from_host = MetadataStoreServiceClient::connect(endpoint).await.unwrap();
    let refused = from_host
        .log_run_start(LogRunStartRequest {
            run_id: run_a.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("no pod of a training run has the address"),
        "{refused:?}"
    );
    let read = from_host
        .get_run_status(GetRunStatusRequest {
            run_id: run_a.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(read.code(), tonic::Code::PermissionDenied, "{read:?}");
    assert!(
        read.message()
            .contains("is not served on the original contract's port"),
        "{read:?}"
    );

    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let name_a = format!("intent-classifier-{run_a}");
    let name_b = format!("intent-classifier-{run_b}");
    let a = wait_for(&jobs, &name_a, &ns.name, finished).await;
    let b = wait_for(&jobs, &name_b, &ns.name, finished).await;
    let (status_a, status_b) = (a.status.clone().unwrap(), b.status.clone().unwrap());
    for (name, status) in [(&name_a, &status_a), (&name_b, &status_b)] {
        assert_eq!(
            status.phase,
            Some(TrainingPhase::Succeeded),
            "{name}: {status:#?}\n{}",
            harness::pod_logs(cluster, &ns.name)
        );
    }

    // Run A: three ranks, each one's epochs as "<rank>-<epoch>", the test accuracy, the artifact.
    assert_eq!(a.spec.workers, 3);
    assert_eq!(
        a.spec.parameters.get("PARALLEL_INSTANCES").map(String::as_str),
        Some("3")
    );
    // Every rank's epochs in the run's history (the status keeps a bounded selection), and
    // each rank in status.workers.
    let history = layout::run_history_prefix(&ns.name, &name_a, &a.uid().unwrap());
    let mut ids: Vec<String> = store
        .list(&cluster.s3_bucket, &history)
        .await
        .unwrap()
        .into_iter()
        .map(|key| {
            key.trim_start_matches(&history)
                .trim_end_matches(".json")
                .to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["0-1", "0-2", "1-1", "1-2", "2-1", "2-2"], "{status_a:#?}");
    let ranks: Vec<u32> = status_a.workers.iter().map(|w| w.rank).collect();
    assert_eq!(ranks, [0, 1, 2], "{status_a:#?}");
    let message = status_a.message.clone().unwrap();
    assert!(message.starts_with("test accuracy"), "{message}");
    assert!(status_a.metrics.contains_key("accuracy"), "{status_a:#?}");
    let artifact = status_a.artifact.clone().expect("an artifact");
    let prefix = artifact
        .uri
        .strip_prefix(&format!("s3://{}/", cluster.s3_bucket))
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let mut files: Vec<String> = store
        .list(&cluster.s3_bucket, &format!("{prefix}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|key| key.trim_start_matches(&format!("{prefix}/")).to_string())
        .collect();
    files.sort();
    assert_eq!(files, ["manifest.json", "model.mar", "model.pth", "vocab.pth"]);

    // Run B: only its own rank's epochs; every one of A's ranks was refused.
    let ids_b: Vec<&str> = status_b.epochs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids_b, ["0-1", "0-2"], "{status_b:#?}");
    let logs = job_logs(cluster, &ns.name, &format!("{name_a}-train"));
    let refusals = logs
        .lines()
        .filter(|line| line.contains(&format!("report to run {run_b} refused: PERMISSION_DENIED")))
        .count();
    assert_eq!(refusals, 3, "{logs}");
    assert!(logs.contains("may report only to its own run"), "{logs}");

    // The pods were given the plain-text port and no token; MINIO_SERVER as host:port.
    let trainer = pods
        .list(&ListParams::default().labels(&format!("job-name={name_a}-train")))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .unwrap();
    let env = trainer.spec.unwrap().containers[0].env.clone().unwrap();
    let value = |name: &str| env.iter().find(|v| v.name == name).and_then(|v| v.value.clone());
    assert_eq!(value("METADATA_STORE_SERVER"), Some(plain.clone()));
    assert!(env.iter().all(|v| v.name != "MINIAUTOML_RUN_TOKEN"));
    assert!(!value("MINIO_SERVER").unwrap().contains("://"));

    // The original predictor's contract: its image (gRPC on 51001, MODEL_DIR/<runId>/) serves
    // run A's four files through PredictionService/Predict.
    let deployments = Api::<ModelDeployment>::namespaced(client.clone(), &ns.name);
    let predictor: ModelDeployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "original"},
        "spec": {"model": {"runId": run_a.to_string()}, "replicas": 1,
                 "image": "miniautoml/test-original-predictor:1", "protocol": "Predictor", "port": 51001},
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &predictor)
        .await
        .unwrap();
    let ready = await_condition(deployments.clone(), "original", |m: Option<&ModelDeployment>| {
        m.and_then(|m| m.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    });
    if tokio::time::timeout(Duration::from_secs(180), ready)
        .await
        .is_err()
    {
        panic!(
            "the original predictor never became ready: {:#?}
{}",
            deployments.get("original").await.unwrap().status,
            harness::pod_logs(cluster, &ns.name)
        );
    }
    let classes: Vec<String> = {
        let manifest = store.read(&format!("{prefix}/manifest.json")).await.unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        manifest["classes"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let mut predict = PredictionServiceClient::new(channel.clone());
    let response = predict
        .predict(PredictRequest {
            run_id: run_a.to_string(),
            document: "I am so happy today, what a joy".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .response;
    let answer: serde_json::Value = serde_json::from_str(&response).unwrap();
    assert!(
        classes.contains(&answer["result"].as_str().unwrap().to_string()),
        "{response} not among {classes:?}"
    );

    // The impostor pod was refused and said so.
    let ended = await_condition(pods.clone(), "impostor", |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
    });
    let impostor = tokio::time::timeout(WAIT, ended).await.unwrap().unwrap().unwrap();
    let output = cluster
        .kubectl()
        .args(["logs", "-n", &ns.name, "impostor"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        impostor.status.unwrap().phase.as_deref(),
        Some("Failed"),
        "{said}"
    );
    assert!(
        said.contains(&format!("LogRunStart for run {run_a} refused: PERMISSION_DENIED"))
            && said.contains("no pod of a training run has the address"),
        "{said}"
    );
}
