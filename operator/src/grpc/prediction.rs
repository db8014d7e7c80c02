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
    model_deployment::{GRPC_PORT, ModelReference, READY},
};
use miniautoml_proto::prediction::{
    PredictRequest, PredictResponse, PredictorPredictRequest, prediction_service_server::PredictionService,
    predictor_client::PredictorClient,
};
use tonic::{
    Code, Request, Response, Status,
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
    next: AtomicUsize,
}

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

    /// Ready predictor pods serving `run`: `ip`s.
    fn ready_predictors(&self, namespace: &str, run: &str) -> Vec<String> {
        let mut ips: Vec<String> = self
            .ctx
            .caches
            .predictor_pods
            .state()
            .iter()
            .filter(|pod| pod.namespace().as_deref() == Some(namespace) && serves(pod, run))
            .filter_map(|pod| pod.status.as_ref()?.pod_ip.clone())
            .collect();
        ips.sort();
        ips
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

    fn channel(&self, ip: &str) -> Result<Channel, Status> {
        let address = if ip.contains(':') {
            format!("http://[{ip}]:{GRPC_PORT}")
        } else {
            format!("http://{ip}:{GRPC_PORT}")
        };
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

    /// Sends the request to one of `ips`, trying the next on a connection failure.
    async fn forward(&self, ips: &[String], run: &str, document: &str) -> Result<String, Status> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..ips.len().min(3) {
            let ip = &ips[(start + i) % ips.len()];
            let mut client = PredictorClient::new(self.channel(ip)?);
            let request = PredictorPredictRequest {
                run_id: run.into(),
                document: document.into(),
            };
            match client.predictor_predict(request).await {
                Ok(response) => return Ok(response.into_inner().response),
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
            let ips = self.ready_predictors(&namespace, run);
            let last = if ips.is_empty() {
                None
            } else {
                match self.forward(&ips, run, &request.document).await {
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
    fn only_ready_live_pods_of_the_run_serve_it() {
        assert!(serves(&pod("3", "True", false), "3"));
        assert!(!serves(&pod("3", "True", false), "4"), "another run");
        assert!(!serves(&pod("3", "False", false), "3"), "not ready");
        assert!(!serves(&pod("3", "True", true), "3"), "terminating");
        assert_eq!(deployment_for("12"), "run-12");
    }
}
