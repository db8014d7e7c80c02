//! The trainer binary under the training-image contract, against the local cluster's real S3
//! server and an in-test `metadata_store.MetadataStoreService` that records every call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};

use miniautoml_data::Store;
use miniautoml_intent_classification::data::{Examples, Split, encode_snapshot};
use miniautoml_intent_classification::package::score;
use miniautoml_intent_model::{ARTIFACT_FILES, Classifier, ModelFiles};
use miniautoml_proto::data_management::FileInfo;
use miniautoml_proto::metadata_store as pb;
use miniautoml_proto::metadata_store::metadata_store_service_server::{
    MetadataStoreService, MetadataStoreServiceServer,
};
use miniautoml_test_support::{LocalCluster, repo_root, unique};
use tonic::{Request, Response, Status};

const TOKEN: &str = "run-token-for-the-test";

/// A call the trainer made, in order.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Start {
        run_id: String,
        tracing: pb::TracingInformation,
    },
    Epoch {
        run_id: String,
        epoch_id: String,
        metrics: BTreeMap<String, String>,
    },
    Artifact {
        run_id: String,
        artifact: FileInfo,
        algorithm: String,
    },
    End {
        run_id: String,
        success: bool,
        message: String,
    },
}

#[derive(Clone)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    bucket: String,
    path: String,
}

impl Recorder {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let expected = format!("Bearer {TOKEN}");
        match request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            Some(token) if token == expected => Ok(()),
            _ => Err(Status::permission_denied("not this run's token")),
        }
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

#[tonic::async_trait]
impl MetadataStoreService for Recorder {
    async fn log_run_start(
        &self,
        request: Request<pb::LogRunStartRequest>,
    ) -> Result<Response<pb::LogRunStartResponse>, Status> {
        self.check(&request)?;
        let request = request.into_inner();
        self.record(Call::Start {
            run_id: request.run_id,
            tracing: request.tracing.unwrap_or_default(),
        });
        Ok(Response::new(pb::LogRunStartResponse {
            run_info: None,
            bucket: self.bucket.clone(),
            path: self.path.clone(),
        }))
    }

    async fn log_epoch(
        &self,
        request: Request<pb::LogEpochRequest>,
    ) -> Result<Response<pb::LogEpochResponse>, Status> {
        self.check(&request)?;
        let epoch = request.into_inner().epoch_info.unwrap_or_default();
        self.record(Call::Epoch {
            run_id: epoch.run_id.clone(),
            epoch_id: epoch.epoch_id.clone(),
            metrics: epoch.metrics.clone(),
        });
        Ok(Response::new(pb::LogEpochResponse {
            epoch_info: Some(epoch),
        }))
    }

    async fn log_run_end(
        &self,
        request: Request<pb::LogRunEndRequest>,
    ) -> Result<Response<pb::LogRunEndResponse>, Status> {
        self.check(&request)?;
        let request = request.into_inner();
        self.record(Call::End {
            run_id: request.run_id,
            success: request.success,
            message: request.message,
        });
        Ok(Response::new(pb::LogRunEndResponse { run_info: None }))
    }

    async fn get_run_status(
        &self,
        _: Request<pb::GetRunStatusRequest>,
    ) -> Result<Response<pb::GetRunStatusResponse>, Status> {
        Err(Status::unimplemented("the trainer never reads"))
    }

    async fn create_artifact(
        &self,
        request: Request<pb::CreateArtifactRequest>,
    ) -> Result<Response<pb::CreateArtifactResponse>, Status> {
        self.check(&request)?;
        let request = request.into_inner();
        self.record(Call::Artifact {
            run_id: request.run_id.clone(),
            artifact: request.artifact.clone().unwrap_or_default(),
            algorithm: request.algorithm.clone(),
        });
        Ok(Response::new(pb::CreateArtifactResponse {
            version: "1".into(),
            artifact: request.artifact,
            run_id: request.run_id,
            name: String::new(),
            algorithm: request.algorithm,
        }))
    }

    async fn get_artifact(
        &self,
        _: Request<pb::GetArtifactRequest>,
    ) -> Result<Response<pb::GetArtifactResponse>, Status> {
        Err(Status::unimplemented("the trainer never reads"))
    }
}

/// A metadata store on a free port, answering with `bucket`/`path` for the artifacts.
async fn metadata_store(bucket: &str, path: &str) -> (SocketAddr, Recorder) {
    let recorder = Recorder {
        calls: Arc::default(),
        bucket: bucket.into(),
        path: path.into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = MetadataStoreServiceServer::new(recorder.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, recorder)
}

/// The reason of the run's last call, which must be LogRunEnd(false, reason).
fn failure_reason(calls: &[Call]) -> &str {
    match calls.last() {
        Some(Call::End {
            success: false,
            message,
            ..
        }) => message,
        _ => panic!("the run did not end with a failure: {calls:#?}"),
    }
}

fn tweet_emotion() -> Vec<PathBuf> {
    ["tweet_emotion_part1.csv", "tweet_emotion_part2.csv"]
        .iter()
        .map(|f| repo_root().join("testdata/tweet_emotion").join(f))
        .collect()
}

fn store(cluster: &LocalCluster) -> Store {
    Store::new(cluster.s3(), &cluster.s3_bucket)
}

/// Uploads the tweet_emotion snapshot; returns its folder.
async fn upload_snapshot(cluster: &LocalCluster) -> String {
    let (examples, labels) = encode_snapshot(&tweet_emotion()).unwrap();
    let folder = unique("training-tests/snapshot");
    let store = store(cluster);
    store
        .put(&format!("{folder}/examples.csv"), examples, "text/csv")
        .await
        .unwrap();
    store
        .put(&format!("{folder}/labels.csv"), labels, "text/csv")
        .await
        .unwrap();
    folder
}

/// The contract's environment for a run of `snapshot` reporting to `metadata`.
fn contract(cluster: &LocalCluster, metadata: SocketAddr, snapshot: &str) -> BTreeMap<String, String> {
    let endpoint = cluster.s3_endpoint.trim_start_matches("http://");
    BTreeMap::from(
        [
            ("JOB_ID", "17"),
            ("ALGORITHM_NAME", "intent-classification"),
            ("METADATA_STORE_SERVER", &metadata.to_string()),
            ("TRAINING_DATASET_ID", "3"),
            ("TRAINING_DATASET_VERSION_HASH", "hashBg=="),
            ("TRAINING_DATA_BUCKET", &cluster.s3_bucket),
            ("TRAINING_DATA_PATH", snapshot),
            ("MODEL_NAME", "intent"),
            ("MINIO_SERVER", endpoint),
            ("MINIO_SERVER_ACCESS_KEY", &cluster.s3_access_key),
            ("MINIO_SERVER_SECRET_KEY", &cluster.s3_secret_key),
            ("MINIAUTOML_RUN_TOKEN", TOKEN),
            ("EPOCHS", "3"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

/// Runs the trainer binary with exactly `env` (nothing inherited but PATH).
async fn run_trainer(env: BTreeMap<String, String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_intent-classification"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn log(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_reports_every_step_and_its_artifacts_reproduce_the_test_accuracy() {
    let cluster = LocalCluster::shared();
    let snapshot = upload_snapshot(cluster).await;
    let model_path = unique("models/training-tests/intent");
    let (addr, recorder) = metadata_store(&cluster.s3_bucket, &model_path).await;
    let output = run_trainer(contract(cluster, addr, &snapshot)).await;
    assert!(output.status.success(), "{}", log(&output));

    let calls = recorder.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1 + 3 + 2, "{calls:#?}");
    let Call::Start { run_id, tracing } = &calls[0] else {
        panic!("first call: {:?}", calls[0])
    };
    assert_eq!(run_id, "17");
    assert_eq!(
        (tracing.dataset_id.as_str(), tracing.version_hash.as_str()),
        ("3", "hashBg==")
    );
    assert!(
        tracing.code_version.starts_with("intent-classification"),
        "{tracing:?}"
    );
    for (i, call) in calls[1..4].iter().enumerate() {
        let Call::Epoch {
            run_id,
            epoch_id,
            metrics,
        } = call
        else {
            panic!("call {}: {call:?}", i + 1)
        };
        assert_eq!(
            (run_id.as_str(), epoch_id.as_str()),
            ("17", format!("0-{}", i + 1).as_str())
        );
        for metric in ["accuracy", "loss", "macroF1", "trainLoss"] {
            let value: f64 = metrics[metric].parse().unwrap();
            assert!(value.is_finite() && value >= 0.0, "{metric} = {value}");
        }
        assert!(metrics["accuracy"].parse::<f64>().unwrap() > 0.5, "{metrics:?}");
    }
    assert_eq!(
        calls[4],
        Call::Artifact {
            run_id: "17".into(),
            artifact: FileInfo {
                name: "intent".into(),
                bucket: cluster.s3_bucket.clone(),
                path: model_path.clone(),
            },
            algorithm: "intent-classification".into(),
        }
    );
    let Call::End {
        run_id,
        success,
        message,
    } = &calls[5]
    else {
        panic!("last call: {:?}", calls[5])
    };
    assert_eq!((run_id.as_str(), *success), ("17", true));
    let reported: f64 = message
        .strip_prefix("test accuracy ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("message {message:?}"))
        .parse()
        .unwrap();
    assert!(message.contains("refit on train + validation"), "{message}");

    // Exactly the four artifacts, and they load through the inference library.
    let store = store(cluster);
    let mut keys = store
        .list(&cluster.s3_bucket, &format!("{model_path}/"))
        .await
        .unwrap();
    keys.sort();
    let mut expected: Vec<String> = ARTIFACT_FILES
        .iter()
        .map(|f| format!("{model_path}/{f}"))
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
    let mut files = ModelFiles::default();
    for name in ARTIFACT_FILES {
        let bytes = store.read(&format!("{model_path}/{name}")).await.unwrap();
        files.files.insert(name.to_string(), bytes);
    }
    let classifier = Classifier::from_files(&files).unwrap();
    let manifest = classifier.manifest().clone();
    assert_eq!(manifest.algorithm, "intent-classification");
    assert_eq!(manifest.hyperparameters["EPOCHS"], "3");
    assert_eq!(manifest.hyperparameters["REFIT"], "true");
    let refit_epochs = manifest.metrics["refitEpochs"];
    assert!((1.0..=3.0).contains(&refit_epochs), "{refit_epochs}");
    let (train, validation): (usize, usize) = (
        manifest.data["trainExamples"].parse().unwrap(),
        manifest.data["validationExamples"].parse().unwrap(),
    );
    assert_eq!(manifest.data["refitExamples"], (train + validation).to_string());
    assert_eq!(manifest.data["versionHash"], "hashBg==");
    assert_eq!(classifier.labels(), ["anger", "joy", "sadness", "optimism"]);

    // The same seeded split, classified through the loaded files, gives the reported accuracy.
    let (examples_csv, labels_csv) = encode_snapshot(&tweet_emotion()).unwrap();
    let examples = Examples::from_snapshot(&examples_csv, &labels_csv).unwrap();
    let split = Split::new(examples.len(), 42, 0.1, 0.1).unwrap();
    let texts: Vec<&str> = split.test.iter().map(|&i| examples.texts[i].as_str()).collect();
    let truth: Vec<usize> = split.test.iter().map(|&i| examples.classes[i]).collect();
    let scores = score(&classifier, &texts, &truth).unwrap();
    assert_eq!(scores.accuracy, manifest.metrics["testAccuracy"]);
    assert_eq!(format!("{:.3}", scores.accuracy), format!("{reported:.3}"));
    assert!(scores.accuracy > 0.6, "{scores:?}");

    // A second run into the same folder is refused: artifacts are immutable.
    let (addr, recorder) = metadata_store(&cluster.s3_bucket, &model_path).await;
    let output = run_trainer(contract(cluster, addr, &snapshot)).await;
    assert!(!output.status.success(), "{}", log(&output));
    let calls = recorder.calls.lock().unwrap().clone();
    let message = failure_reason(&calls);
    assert!(message.contains("never overwritten"), "{message}");
    let after = store.read(&format!("{model_path}/manifest.json")).await.unwrap();
    assert_eq!(after, files.files["manifest.json"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_ends_the_run_with_its_reason_and_a_non_zero_exit() {
    let cluster = LocalCluster::shared();
    let model_path = unique("models/training-tests/missing");
    let (addr, recorder) = metadata_store(&cluster.s3_bucket, &model_path).await;
    let output = run_trainer(contract(cluster, addr, "training-tests/no-such-snapshot")).await;
    assert!(!output.status.success(), "{}", log(&output));
    let calls = recorder.calls.lock().unwrap().clone();
    assert!(matches!(calls[0], Call::Start { .. }), "{calls:#?}");
    let message = failure_reason(&calls);
    assert!(message.contains("examples.csv"), "{message}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("examples.csv"),
        "{}",
        log(&output)
    );
    let left = store(cluster)
        .list(&cluster.s3_bucket, &format!("{model_path}/"))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_diverging_run_ends_with_the_reason_and_a_non_zero_exit() {
    let cluster = LocalCluster::shared();
    let snapshot = upload_snapshot(cluster).await;
    let model_path = unique("models/training-tests/diverged");
    let (addr, recorder) = metadata_store(&cluster.s3_bucket, &model_path).await;
    let mut env = contract(cluster, addr, &snapshot);
    // SGD with a rate no clipping can tame (ngram-nb refuses such a rate before training).
    env.insert("ARCHITECTURE".into(), "embedding-bag".into());
    env.insert("LR".into(), "1e30".into());
    let output = run_trainer(env).await;
    assert!(!output.status.success(), "{}", log(&output));
    let calls = recorder.calls.lock().unwrap().clone();
    let message = failure_reason(&calls);
    assert!(
        message.starts_with("diverged at epoch ") && message.ends_with(": loss is not finite; lower LR"),
        "{message}"
    );
    // Every epoch reported before it had finite metrics; nothing was uploaded.
    assert!(
        calls.iter().all(|c| !matches!(c, Call::Artifact { .. })),
        "{calls:#?}"
    );
    let left = store(cluster)
        .list(&cluster.s3_bucket, &format!("{model_path}/"))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_variable_is_named_and_reported_to_the_metadata_store() {
    let cluster = LocalCluster::shared();
    let (addr, recorder) = metadata_store(&cluster.s3_bucket, "unused").await;
    let mut env = contract(cluster, addr, "unused");
    env.remove("MINIO_SERVER_SECRET_KEY");
    let output = run_trainer(env.clone()).await;
    assert!(!output.status.success(), "{}", log(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("MINIO_SERVER_SECRET_KEY (or AWS_SECRET_ACCESS_KEY) is required"),
        "{stderr}"
    );
    let calls = recorder.calls.lock().unwrap().clone();
    let [
        Call::End {
            success: false,
            message,
            ..
        },
    ] = calls.as_slice()
    else {
        panic!("{calls:#?}")
    };
    assert!(message.contains("MINIO_SERVER_SECRET_KEY"), "{message}");

    env.insert("MINIO_SERVER_SECRET_KEY".into(), cluster.s3_secret_key.clone());
    env.insert("LR".into(), "fast".into());
    let output = run_trainer(env).await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("LR=\"fast\""),
        "{}",
        log(&output)
    );
}
