//! The predictor binary as a real process: a model trained by the real trainer, served from a
//! directory or from the local cluster's S3 server, over gRPC and HTTP.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use miniautoml_proto::prediction::{
    PredictRequest, PredictorPredictRequest, prediction_service_client::PredictionServiceClient,
    predictor_client::PredictorClient,
};
use miniautoml_test_support::{LocalCluster, free_addr, harness::http, repo_root, unique};
use serde_json::{Value, json};
use tonic::Code;

/// A model trained once per test run on the first 600 rows of tweet_emotion part 1.
fn model_dir() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = std::env::temp_dir().join(unique("predictor-model"));
        std::fs::create_dir_all(&dir).unwrap();
        let text =
            std::fs::read_to_string(repo_root().join("testdata/tweet_emotion/tweet_emotion_part1.csv"))
                .unwrap();
        let rows: String = text.lines().take(600).map(|l| format!("{l}\n")).collect();
        let data = dir.join("train.csv");
        std::fs::write(&data, rows).unwrap();
        let out = dir.join("model");
        miniautoml_intent_classification::cli::train(&[data], &out, &["TEST_FRACTION=0".into()]).unwrap();
        out
    })
}

fn labels() -> Vec<String> {
    serde_json::from_slice(&std::fs::read(model_dir().join("labels.json")).unwrap()).unwrap()
}

/// A running predictor process, killed when dropped.
struct Predictor {
    child: Child,
    grpc: String,
    http: String,
    stderr: PathBuf,
}

impl Predictor {
    fn spawn(model_uri: &str, extra_env: &[(&str, &str)]) -> Predictor {
        let (grpc_port, http_port) = (free_addr().port(), free_addr().port());
        let stderr = std::env::temp_dir().join(format!("{}.log", unique("predictor")));
        let mut command = Command::new(env!("CARGO_BIN_EXE_miniautoml-predictor"));
        command
            .args(["--model-uri", model_uri, "--host", "127.0.0.1"])
            .args([
                "--grpc-port",
                &grpc_port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .args(["--model-name", "tweets", "--run-id", "7", "--shutdown-delay", "2"])
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        Predictor {
            child: command.spawn().unwrap(),
            grpc: format!("127.0.0.1:{grpc_port}"),
            http: format!("127.0.0.1:{http_port}"),
            stderr,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for readiness; panics with the log if the process exits first.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the predictor exited with {status}:\n{}", self.log());
            }
            if let Ok((200, _)) = http(&self.http, "GET", "/v2/health/ready", None).await {
                return;
            }
            assert!(Instant::now() < deadline, "not ready in 60 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit and returns its exit code.
    async fn exit_code(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn predictor(&self) -> PredictorClient<tonic::transport::Channel> {
        PredictorClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    async fn predict(&self, run: &str, document: &str) -> Result<String, tonic::Status> {
        let request = PredictorPredictRequest {
            run_id: run.into(),
            document: document.into(),
        };
        Ok(self
            .predictor()
            .await
            .predictor_predict(request)
            .await?
            .into_inner()
            .response)
    }
}

impl Drop for Predictor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn result_label(response: &str) -> String {
    let value: Value = serde_json::from_str(response).unwrap();
    value["result"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_a_model_over_grpc_and_the_open_inference_protocol() {
    let mut predictor = Predictor::spawn(model_dir().to_str().unwrap(), &[]);
    predictor.ready().await;
    let labels = labels();

    // The original API: {"result": "<label>"} from both services.
    let response = predictor
        .predict("7", "I am so happy and grateful today")
        .await
        .unwrap();
    assert!(response.starts_with("{\"result\": \""), "{response}");
    assert!(
        labels.contains(&result_label(&response)),
        "{response} not in {labels:?}"
    );
    let mut front = PredictionServiceClient::connect(format!("http://{}", predictor.grpc))
        .await
        .unwrap();
    let response = front
        .predict(PredictRequest {
            run_id: String::new(),
            document: "this makes me furious".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .response;
    assert!(labels.contains(&result_label(&response)));

    // Bad requests: a clear status each, and the process keeps serving.
    let empty = predictor.predict("7", "  ").await.unwrap_err();
    assert_eq!(
        (empty.code(), empty.message()),
        (Code::InvalidArgument, "document is empty")
    );
    let oversized = predictor
        .predict("7", &"a".repeat(64 * 1024 + 1))
        .await
        .unwrap_err();
    assert_eq!(oversized.code(), Code::InvalidArgument);
    assert!(
        oversized.message().contains("more than the limit of 65536"),
        "{}",
        oversized.message()
    );
    // Over the transport's limit (4 × the document limit): RESOURCE_EXHAUSTED, gRPC's code for
    // a message larger than the configured maximum (tonic's own answer is OUT_OF_RANGE).
    let huge = predictor
        .predict("7", &"a".repeat(4 * 64 * 1024 + 1))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::ResourceExhausted, "{huge:?}");
    assert!(huge.message().contains("message length too large"), "{huge:?}");
    let other_run = predictor.predict("8", "hello").await.unwrap_err();
    assert_eq!(other_run.code(), Code::NotFound);
    assert_eq!(other_run.message(), "this predictor serves run 7, not run 8");

    // Health over gRPC.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", predictor.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "prediction.Predictor".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // The Open Inference Protocol v2.
    let (status, body) = http(&predictor.http, "GET", "/v2/health/live", None)
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "{\"live\":true}"));
    let (status, body) = http(&predictor.http, "GET", "/v2/models/tweets", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let metadata: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["versions"], json!(["7"]));
    assert_eq!(
        metadata["inputs"][0],
        json!({"name": "text", "datatype": "BYTES", "shape": [-1]})
    );
    let infer = json!({"id": "r1", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
        "data": ["what a wonderful morning", "I can't stop crying"]}]});
    let (status, body) = http(
        &predictor.http,
        "POST",
        "/v2/models/tweets/infer",
        Some(&infer.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (answer["id"].as_str(), answer["model_version"].as_str()),
        (Some("r1"), Some("7"))
    );
    let predicted = answer["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(predicted.len(), 2);
    assert!(
        predicted
            .iter()
            .all(|l| labels.contains(&l.as_str().unwrap().to_string()))
    );
    assert_eq!(answer["outputs"][1]["shape"], json!([2, labels.len()]));
    // The HTTP and gRPC answers agree (one classifier behind both).
    let grpc = predictor.predict("", "I can't stop crying").await.unwrap();
    assert_eq!(result_label(&grpc), predicted[1].as_str().unwrap());

    for (path, body, expected_status, expected) in [
        (
            "/v2/models/other/infer",
            infer.to_string(),
            404,
            "model \"other\" not found: this predictor serves \"tweets\"",
        ),
        (
            "/v2/models/tweets/infer",
            "{not json".to_string(),
            400,
            "request body: key must be a string at line 1 column 2",
        ),
        (
            "/v2/models/tweets/infer",
            json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [""]}]})
                .to_string(),
            400,
            "document 0 is empty",
        ),
        (
            "/v2/models/tweets/infer",
            json!({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]})
                .to_string(),
            400,
            "input \"text\" has datatype FP32; expected BYTES",
        ),
        (
            "/v2/models/tweets/infer",
            json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a"]}]})
                .to_string(),
            400,
            "shape [3] does not match the 1 documents in data",
        ),
    ] {
        let (status, answer) = http(&predictor.http, "POST", path, Some(&body)).await.unwrap();
        assert_eq!(status, expected_status, "{path} {body}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"], expected, "{path} {body}");
    }
    let oversized = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
        "data": ["a".repeat(64 * 1024 + 1)]}]});
    let (status, body) = http(
        &predictor.http,
        "POST",
        "/v2/models/tweets/infer",
        Some(&oversized.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than the limit of 65536"), "{body}");

    let (status, metrics) = http(&predictor.http, "GET", "/metrics", None).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("miniautoml_predictor_requests_total{api=\"grpc\",code=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("miniautoml_predictor_requests_total{api=\"grpc\",code=\"invalid_argument\"} 2")
    );
    assert!(metrics.contains("miniautoml_predictor_model_info{name=\"tweets\",run=\"7\",version=\"7\"} 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_corrupt_artifact_fails_start_up_with_the_reason() {
    let broken = |name: &str, edit: &dyn Fn(&Path)| {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        for file in std::fs::read_dir(model_dir()).unwrap().flatten() {
            std::fs::copy(file.path(), dir.join(file.file_name())).unwrap();
        }
        edit(&dir);
        dir
    };
    let corrupt = broken("corrupt-model", &|dir| {
        let path = dir.join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    });
    let missing = broken("missing-model", &|dir| {
        std::fs::remove_file(dir.join("vocab.json")).unwrap()
    });
    for (dir, reason) in [
        (corrupt, "model: artifact model.safetensors is corrupt: sha256 "),
        (missing, "model: artifact vocab.json is missing"),
    ] {
        let mut predictor = Predictor::spawn(dir.to_str().unwrap(), &[]);
        assert_eq!(predictor.exit_code(Duration::from_secs(30)).await, 1);
        let log = predictor.log();
        assert!(log.contains(&format!("miniautoml-predictor: {reason}")), "{log}");
    }
    // A whole model replaced by another consistent one (its manifest matches its files) is
    // refused when the run recorded another manifest.
    let recorded = "0".repeat(64);
    let mut replaced = Predictor::spawn(model_dir().to_str().unwrap(), &[("MODEL_SHA256", &recorded)]);
    assert_eq!(replaced.exit_code(Duration::from_secs(30)).await, 1);
    let log = replaced.log();
    assert!(
        log.contains("the model changed since it was trained: manifest.json has sha256 ")
            && log.contains(&format!("the run recorded {recorded}; refusing to serve it")),
        "{log}"
    );
    let mut nowhere = Predictor::spawn("s3://miniautoml/models/none/", &[]);
    assert_eq!(nowhere.exit_code(Duration::from_secs(30)).await, 1);
    assert!(
        nowhere
            .log()
            .contains("the model is in S3 but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"),
        "{}",
        nowhere.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loads_from_s3_and_keeps_serving_while_it_stops() {
    let cluster = LocalCluster::shared();
    let store = miniautoml_data::Store::new(cluster.s3(), &cluster.s3_bucket);
    let prefix = format!("models/{}/", unique("predictor-test"));
    for file in std::fs::read_dir(model_dir()).unwrap().flatten() {
        let key = format!("{prefix}{}", file.file_name().to_string_lossy());
        store
            .put(
                &key,
                std::fs::read(file.path()).unwrap(),
                "application/octet-stream",
            )
            .await
            .unwrap();
    }
    let uri = format!("s3://{}/{prefix}", cluster.s3_bucket);
    let env = [
        ("AWS_ENDPOINT_URL", cluster.s3_endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", cluster.s3_access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", cluster.s3_secret_key.as_str()),
    ];
    let mut predictor = Predictor::spawn(&uri, &env);
    predictor.ready().await;
    assert!(labels().contains(&result_label(&predictor.predict("7", "so happy").await.unwrap())));

    // SIGTERM: not ready at once, yet requests are still answered during the shutdown delay,
    // then the process exits 0.
    let mut client = predictor.predictor().await;
    unsafe { libc::kill(predictor.child.id() as i32, libc::SIGTERM) };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = http(&predictor.http, "GET", "/v2/health/ready", None)
        .await
        .unwrap();
    assert_eq!(status, 503);
    let answer = client
        .predictor_predict(PredictorPredictRequest {
            run_id: "7".into(),
            document: "still there?".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .response;
    assert!(labels().contains(&result_label(&answer)));
    assert_eq!(
        predictor.exit_code(Duration::from_secs(15)).await,
        0,
        "{}",
        predictor.log()
    );
    assert!(predictor.log().contains("in-flight requests finished; stopped"));

    // A key that is not there: start-up fails naming it.
    let mut missing = Predictor::spawn(&format!("s3://{}/models/nothing-here/", cluster.s3_bucket), &env);
    assert_eq!(missing.exit_code(Duration::from_secs(60)).await, 1);
    assert!(
        missing.log().contains("manifest.json: not found"),
        "{}",
        missing.log()
    );
}
