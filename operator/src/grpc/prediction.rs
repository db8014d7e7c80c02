//! `prediction.PredictionService`: the original front end's `Predict(runId, document)`.
//!
//! The run's TrainingJob must exist (else NOT_FOUND) and have Succeeded (else
//! FAILED_PRECONDITION). The request goes to a ready predictor pod serving exactly that run (the
//! ModelDeployment controller's pod cache; round robin), whichever ModelDeployment runs it.
//! When none serves the run, a ModelDeployment `run-<id>` is created in the run's namespace and
//! the request waits for its first ready predictor, at most `--predict-deploy-timeout`, then
//! fails with UNAVAILABLE and what the deployment waits for. The predictor's own answers
//! (INVALID_ARGUMENT for an empty or oversized document) pass through unchanged.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use miniautoml_api::{
    ModelDeployment, ModelDeploymentSpec, TrainingJob,
    labels::{CREATED_BY_LABEL, MODEL_DEPLOYMENT_LABEL, RUN_ID_LABEL as SERVED_RUN_LABEL},
    model_deployment::{ModelReference, READY},
};
use miniautoml_proto::prediction::{
    PredictRequest, PredictResponse, PredictorPredictRequest, prediction_service_server::PredictionService,
    predictor_client::PredictorClient,
};
use tonic::{
    Code, Request, Response, Status,
    codegen::http,
    transport::{Channel, Endpoint},
};

use super::{
    auth::{self, Permission},
    errors::{self, internal},
    input,
};
use crate::{conditions, context::Context};

/// How often a waiting request looks for a ready predictor.
const POLL: Duration = Duration::from_millis(200);

/// The service.
pub struct Prediction {
    ctx: Arc<Context>,
    deploy_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    http: HttpClient,
    next: AtomicUsize,
}

/// The HTTP/1.1 client of OIP v2 predictors.
type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// How long an OIP v2 predictor may take to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a predictor pod can take requests for `run`.
pub fn serves(pod: &Pod, run: &str) -> bool {
    let labels = pod.labels();
    pod.metadata.deletion_timestamp.is_none()
        && labels.contains_key(MODEL_DEPLOYMENT_LABEL)
        && labels.get(SERVED_RUN_LABEL).map(String::as_str) == Some(run)
        && pod.status.as_ref().is_some_and(|status| {
            status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
                && status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// How to call one predictor pod: the protocol its container's named port says (`grpc`: the
/// `prediction.Predictor` gRPC service, as ours and the original predictor serve; else `http`:
/// the Open Inference Protocol v2), at its own port number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `prediction.Predictor/PredictorPredict` on this port.
    Predictor(i32),
    /// `POST /v2/models/<model>/infer` on this port.
    OpenInference {
        /// The port.
        port: i32,
        /// The model's name (its ModelDeployment's).
        model: String,
    },
}

/// A ready predictor pod: its address and how to call it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The pod's IP.
    pub ip: String,
    /// How.
    pub call: Call,
}

/// The number of the port named `name` of `pod`'s predictor container.
pub fn named_port(pod: &Pod, name: &str) -> Option<i32> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

/// How to call `pod` (`None`: its container declares neither port).
pub fn target(pod: &Pod) -> Option<Target> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let call = match (named_port(pod, "grpc"), named_port(pod, "http")) {
        (Some(port), _) => Call::Predictor(port),
        (None, Some(port)) => Call::OpenInference {
            port,
            model: pod.labels().get(MODEL_DEPLOYMENT_LABEL)?.clone(),
        },
        (None, None) => return None,
    };
    Some(Target { ip, call })
}

/// `host:port` of `ip` and `port`.
pub fn authority(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The Open Inference Protocol v2 request of one document.
pub fn infer_request(document: &str) -> serde_json::Value {
    serde_json::json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [document]}]})
}

/// The original's answer, `{"result": "<label>"}`, from an OIP v2 response: the first BYTES
/// output named `label` (else the first BYTES output), its first element.
pub fn infer_answer(body: &[u8]) -> Result<String, String> {
    let response: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the predictor's answer is not JSON: {e}"))?;
    let outputs = response
        .get("outputs")
        .and_then(|o| o.as_array())
        .ok_or("the predictor's answer has no outputs")?;
    let bytes = |o: &&serde_json::Value| o.get("datatype").and_then(|d| d.as_str()) == Some("BYTES");
    let output = outputs
        .iter()
        .filter(bytes)
        .find(|o| o.get("name").and_then(|n| n.as_str()) == Some("label"))
        .or_else(|| outputs.iter().find(bytes))
        .ok_or("the predictor's answer has no BYTES output (a label)")?;
    let label = output
        .get("data")
        .and_then(|d| d.as_array())
        .and_then(|d| d.first())
        .and_then(|l| l.as_str())
        .ok_or("the predictor's label output is empty")?;
    Ok(serde_json::json!({"result": label}).to_string())
}

/// Name of the ModelDeployment Predict creates for a run nobody serves.
pub fn deployment_for(run: &str) -> String {
    format!("run-{run}")
}

impl Prediction {
    /// A service waiting at most `deploy_timeout` for a model to be deployed.
    pub fn new(ctx: Arc<Context>, deploy_timeout: Duration) -> Self {
        Prediction {
            ctx,
            deploy_timeout,
            channels: Mutex::default(),
            http: {
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.set_connect_timeout(Some(Duration::from_secs(2)));
                connector.set_nodelay(true);
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(connector)
            },
            next: AtomicUsize::new(0),
        }
    }

    /// The run's TrainingJob: the controller's cache when it shows the run servable, else the
    /// API server (the cache may lag the last status write).
    async fn find(&self, run: &str) -> Result<TrainingJob, Status> {
        let id = input::id("runId", run)?;
        self.ctx
            .find_run(id, |job| job.served_model().is_ok())
            .await
            .map_err(errors::operator)?
            .ok_or_else(|| Status::not_found(format!("run {run} does not exist")))
    }

    /// Ready predictor pods serving `run`, and how to call each.
    fn ready_predictors(&self, namespace: &str, run: &str) -> Vec<Target> {
        let mut targets: Vec<Target> = self
            .ctx
            .caches
            .predictor_pods
            .state()
            .iter()
            .filter(|pod| pod.namespace().as_deref() == Some(namespace) && serves(pod, run))
            .filter_map(|pod| target(pod))
            .collect();
        targets.sort_by(|a, b| a.ip.cmp(&b.ip));
        targets
    }

    /// A ModelDeployment in `namespace` referencing the run (by run id or TrainingJob name).
    fn deployment_of(&self, namespace: &str, run: &str, job: &str) -> Option<ModelDeployment> {
        self.ctx
            .caches
            .model_deployments
            .state()
            .iter()
            .find_map(|guard| {
                let md = guard.0.as_ref().ok()?;
                let model = &md.spec.model;
                (md.namespace().as_deref() == Some(namespace)
                    && (model.run_id.as_deref() == Some(run) || model.training_job.as_deref() == Some(job)))
                .then(|| md.clone())
            })
    }

    /// Creates `run-<id>` serving the run (an existing one of that name is left as it is).
    async fn deploy(&self, namespace: &str, run: &str) -> Result<String, Status> {
        let name = deployment_for(run);
        let md = ModelDeployment {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.into()),
                labels: Some([(CREATED_BY_LABEL.to_string(), "prediction-service".to_string())].into()),
                ..Default::default()
            },
            spec: ModelDeploymentSpec {
                model: ModelReference {
                    training_job: None,
                    run_id: Some(run.into()),
                },
                replicas: 1,
                resources: Default::default(),
                image: None,
                protocol: None,
                port: None,
                allowed_namespaces: Vec::new(),
            },
            status: None,
        };
        let api: Api<ModelDeployment> = Api::namespaced(self.ctx.client.clone(), namespace);
        match api.create(&PostParams::default(), &md).await {
            Ok(_) => {
                tracing::info!(
                    run,
                    modeldeployment = name,
                    "no predictor serves the run: deploying it"
                );
                Ok(name)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(name),
            Err(error) => Err(errors::kube(error)),
        }
    }

    fn channel(&self, ip: &str, port: i32) -> Result<Channel, Status> {
        let address = format!("http://{}", authority(ip, port));
        let mut channels = self.channels.lock().expect("channel cache lock");
        if let Some(channel) = channels.get(&address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(address.clone())
            .map_err(internal)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address, channel.clone());
        Ok(channel)
    }

    /// One OIP v2 inference: the original's answer, or a status (UNAVAILABLE when the pod
    /// cannot take it, so that another is tried; the predictor's refusal of the document as
    /// INVALID_ARGUMENT with its reason).
    async fn infer(&self, ip: &str, port: i32, model: &str, document: &str) -> Result<String, Status> {
        use http_body_util::BodyExt;
        let uri = format!("http://{}/v2/models/{model}/infer", authority(ip, port));
        let request = http::Request::post(&uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                infer_request(document).to_string(),
            )))
            .map_err(internal)?;
        let unavailable = |why: String| Status::unavailable(format!("{uri}: {why}"));
        let response = tokio::time::timeout(HTTP_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| unavailable(format!("no answer within {}s", HTTP_TIMEOUT.as_secs())))?
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let body = tokio::time::timeout(HTTP_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| unavailable("the answer did not finish".into()))?
            .map_err(|e| unavailable(e.to_string()))?
            .to_bytes();
        let reason = || {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect())
        };
        match status.as_u16() {
            200 => infer_answer(&body).map_err(Status::internal),
            400 | 413 | 422 => Err(Status::invalid_argument(reason())),
            404 => Err(Status::not_found(format!("{uri}: {}", reason()))),
            502..=504 => Err(unavailable(format!("{status}: {}", reason()))),
            _ => Err(Status::internal(format!("{uri}: {status}: {}", reason()))),
        }
    }

    /// Sends the request to one of `targets`, trying the next on a connection failure.
    async fn forward(&self, targets: &[Target], run: &str, document: &str) -> Result<String, Status> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..targets.len().min(3) {
            let target = &targets[(start + i) % targets.len()];
            let answer = match &target.call {
                Call::Predictor(port) => {
                    let mut client = PredictorClient::new(self.channel(&target.ip, *port)?);
                    let request = PredictorPredictRequest {
                        run_id: run.into(),
                        document: document.into(),
                    };
                    client
                        .predictor_predict(request)
                        .await
                        .map(|response| response.into_inner().response)
                }
                Call::OpenInference { port, model } => self.infer(&target.ip, *port, model, document).await,
            };
            match answer {
                Ok(response) => return Ok(response),
                // Unreachable or stopping: another replica (or a later look) may answer.
                Err(status) if status.code() == Code::Unavailable => last = Some(status),
                Err(status) => return Err(status),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no predictor")))
    }

    /// Why the run's deployment is not ready, from its `Ready` condition.
    fn waiting_for(&self, namespace: &str, run: &str, job: &str) -> String {
        match self.deployment_of(namespace, run, job) {
            Some(md) => {
                let why = md
                    .status
                    .as_ref()
                    .and_then(|s| conditions::find(&s.conditions, READY).cloned())
                    .map(|c| c.message)
                    .unwrap_or_else(|| "not reconciled yet".into());
                format!("ModelDeployment {}: {why}", md.name_any())
            }
            None => "no ModelDeployment serves it".into(),
        }
    }
}

#[tonic::async_trait]
impl PredictionService for Prediction {
    async fn predict(&self, request: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let run = &input::id("runId", &request.run_id)?.to_string();
        if request.document.trim().is_empty() {
            return Err(Status::invalid_argument("document is empty"));
        }
        let job = self.find(run).await?;
        let namespace = job.namespace().unwrap_or_default();
        // Predicting with a run's model (deploying it when none serves it) is allowed where the
        // run lives, which may be outside the gRPC namespace.
        auth::require(&extensions, Permission::PREDICT, &namespace).await?;
        if let Err((_, message)) = job.served_model() {
            return Err(Status::failed_precondition(format!(
                "run {run} cannot serve predictions: {message}"
            )));
        }
        let deadline = Instant::now() + self.deploy_timeout;
        let mut deployed = false;
        loop {
            let targets = self.ready_predictors(&namespace, run);
            let last = if targets.is_empty() {
                None
            } else {
                match self.forward(&targets, run, &request.document).await {
                    Ok(response) => return Ok(Response::new(PredictResponse { response })),
                    Err(status) if status.code() == Code::Unavailable => Some(status),
                    Err(status) => return Err(status),
                }
            };
            if !deployed && self.deployment_of(&namespace, run, &job.name_any()).is_none() {
                self.deploy(&namespace, run).await?;
            }
            deployed = true;
            if Instant::now() >= deadline {
                let why = self.waiting_for(&namespace, run, &job.name_any());
                let last = last
                    .map(|s| format!("; last attempt: {}", s.message()))
                    .unwrap_or_default();
                return Err(Status::unavailable(format!(
                    "the model of run {run} is not ready after {}s ({why}){last}; retry later",
                    self.deploy_timeout.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(run: &str, ready: &str, deleting: bool) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {MODEL_DEPLOYMENT_LABEL: "m", SERVED_RUN_LABEL: run}},
            "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": ready}]}
        }))
        .unwrap();
        if deleting {
            pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        }
        pod
    }

    #[test]
    fn a_pod_is_called_by_the_protocol_its_named_port_declares() {
        let with_ports = |ports: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "labels": {MODEL_DEPLOYMENT_LABEL: "intent"}},
                "spec": {"containers": [{"name": "predictor", "ports": ports}]},
                "status": {"podIP": "198.18.0.9"},
            }))
            .unwrap()
        };
        // Ours (both ports): gRPC. The original predictor's 51001. An OIP v2 image: HTTP.
        let ours = with_ports(serde_json::json!([{"name": "grpc", "containerPort": 8081},
                                                 {"name": "http", "containerPort": 8080}]));
        assert_eq!(target(&ours).unwrap().call, Call::Predictor(8081));
        let original = with_ports(serde_json::json!([{"name": "grpc", "containerPort": 51001}]));
        assert_eq!(target(&original).unwrap().call, Call::Predictor(51001));
        let oip = with_ports(serde_json::json!([{"name": "http", "containerPort": 9000}]));
        assert_eq!(
            target(&oip).unwrap(),
            Target {
                ip: "198.18.0.9".into(),
                call: Call::OpenInference {
                    port: 9000,
                    model: "intent".into()
                }
            }
        );
        assert_eq!(target(&with_ports(serde_json::json!([]))), None);
    }

    #[test]
    fn an_inference_answer_becomes_the_originals() {
        assert_eq!(
            infer_request("so happy")["inputs"][0]["data"][0],
            serde_json::json!("so happy")
        );
        let answer = br#"{"model_name":"m","outputs":[
            {"name":"probabilities","datatype":"FP32","shape":[1,2],"data":[0.9,0.1]},
            {"name":"label","datatype":"BYTES","shape":[1],"data":["joy"]}]}"#;
        assert_eq!(infer_answer(answer).unwrap(), r#"{"result":"joy"}"#);
        let unnamed = br#"{"outputs":[{"name":"out","datatype":"BYTES","shape":[1],"data":["anger"]}]}"#;
        assert_eq!(infer_answer(unnamed).unwrap(), r#"{"result":"anger"}"#);
        assert!(infer_answer(br#"{"outputs":[]}"#).is_err());
        assert!(infer_answer(b"not json").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn only_ready_live_pods_of_the_run_serve_it() {
        assert!(serves(&pod("3", "True", false), "3"));
        assert!(!serves(&pod("3", "True", false), "4"), "another run");
        assert!(!serves(&pod("3", "False", false), "3"), "not ready");
        assert!(!serves(&pod("3", "True", true), "3"), "terminating");
        assert_eq!(deployment_for("12"), "run-12");
    }
}
