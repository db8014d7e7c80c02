//! The web console's [`Backend`] (`miniautoml-console` renders the pages): the operator's watch
//! caches for every list, the object store for epoch histories and model files, the API server
//! for pod logs, the predictor pods for the try-it box, and the gRPC API's [`Reviewer`] for who
//! may see what. Served on its own port (`--console-addr`), over TLS where the operator serves
//! it, by every replica (the caches are every replica's).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture, stream};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{Api, ResourceExt, api::LogParams, runtime::reflector::ObjectRef};
use lru::LruCache;
use miniautoml_api::{
    Dataset, ModelDeployment, TrainingJob, labels::MODEL_DEPLOYMENT_LABEL, training_job::EpochStatus,
};
use miniautoml_console::{Action, Anyone, ArtifactFile, Backend, Prediction, Refusal, SystemInfo, Viewer};
use miniautoml_data::layout;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::{
    StartupError,
    context::Context,
    controller::training_job::build::CONTAINER,
    grpc::{
        auth::{Caller, Permission, Reviewer},
        prediction,
    },
    tls::ServerTls,
};

/// Runs whose epochs read from the store are kept in memory.
const HISTORIES: usize = 64;
/// Epoch objects read at once.
const READS_IN_FLIGHT: usize = 16;
/// How long a predictor may take to answer the try-it box.
const PREDICT_TIMEOUT: Duration = Duration::from_secs(30);

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// The epochs of a run read from the store, by object key.
struct History {
    epochs: BTreeMap<String, EpochStatus>,
    /// The run had ended when they were read: there are no more.
    complete: bool,
}

/// The console's view of the operator.
pub struct Console {
    ctx: Arc<Context>,
    reviewer: Option<Reviewer>,
    histories: Mutex<LruCache<String, Arc<History>>>,
    http: HttpClient,
    version: String,
}

impl Console {
    /// Over `ctx`, checking viewers with `reviewer` (none: everyone sees everything, as with
    /// `--grpc-auth=none`).
    pub fn new(ctx: Arc<Context>, reviewer: Option<Reviewer>) -> Console {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Console {
            ctx,
            reviewer,
            histories: Mutex::new(LruCache::new(NonZeroUsize::new(HISTORIES).expect("positive"))),
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn store(&self) -> Result<&miniautoml_data::Store, String> {
        self.ctx
            .store
            .as_ref()
            .ok_or_else(|| "the operator has no object store configured".to_string())
    }

    /// A run's epochs from the store. What was read is kept (per run, [`HISTORIES`] runs):
    /// a later call lists the run's folder and reads only the epochs it has not read, and a
    /// run that had ended when it was read is not listed again.
    async fn read_history(&self, run: &TrainingJob) -> Result<Vec<EpochStatus>, String> {
        let uid = run.uid().unwrap_or_default();
        let kept = self.histories.lock().expect("histories lock").get(&uid).cloned();
        if let Some(kept) = &kept
            && kept.complete
        {
            return Ok(kept.epochs.values().cloned().collect());
        }
        let mut epochs = kept.map(|k| k.epochs.clone()).unwrap_or_default();
        let ended = run.has_ended();
        let store = self.store()?;
        let prefix = layout::run_history_prefix(&run.namespace().unwrap_or_default(), &run.name_any(), &uid);
        let keys = store
            .list(&store.bucket, &prefix)
            .await
            .map_err(|e| e.to_string())?;
        let missing: Vec<String> = keys.into_iter().filter(|k| !epochs.contains_key(k)).collect();
        let read: Vec<Result<(String, EpochStatus), String>> = stream::iter(missing)
            .map(|key| async move {
                let body = store.read(&key).await.map_err(|e| e.to_string())?;
                let epoch = serde_json::from_slice(&body).map_err(|e| format!("{key}: {e}"))?;
                Ok((key, epoch))
            })
            .buffer_unordered(READS_IN_FLIGHT)
            .collect()
            .await;
        for entry in read {
            let (key, epoch) = entry?;
            epochs.insert(key, epoch);
        }
        let all = epochs.values().cloned().collect();
        self.histories.lock().expect("histories lock").put(
            uid,
            Arc::new(History {
                epochs,
                complete: ended,
            }),
        );
        Ok(all)
    }

    async fn read_artifact(&self, run: &TrainingJob) -> Result<Vec<ArtifactFile>, String> {
        let store = self.store()?;
        let artifact = run
            .status
            .as_ref()
            .and_then(|s| s.artifact.clone())
            .ok_or("the run has no artifact")?;
        let prefix = layout::model_prefix(
            &run.namespace().unwrap_or_default(),
            &run.name_any(),
            &run.uid().unwrap_or_default(),
        );
        let manifest_key = format!("{prefix}manifest.json");
        if let Ok(body) = store.read(&manifest_key).await
            && let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&body)
        {
            let mut files: Vec<ArtifactFile> = manifest
                .get("files")
                .and_then(|f| f.as_object())
                .map(|files| {
                    files
                        .iter()
                        .map(|(name, digest)| ArtifactFile {
                            name: name.clone(),
                            bytes: digest.get("bytes").and_then(|b| b.as_u64()).unwrap_or_default(),
                            sha256: digest.get("sha256").and_then(|s| s.as_str()).map(str::to_string),
                        })
                        .collect()
                })
                .unwrap_or_default();
            files.push(ArtifactFile {
                name: "manifest.json".into(),
                bytes: body.len() as u64,
                sha256: artifact.sha256.clone(),
            });
            return Ok(files);
        }
        // A model without our manifest (an image of one's own): the files as stored.
        let keys = store
            .list(&store.bucket, &prefix)
            .await
            .map_err(|e| e.to_string())?;
        let mut files = Vec::new();
        for key in keys {
            let bytes = store.head(&store.bucket, &key).await.map_err(|e| e.to_string())?;
            files.push(ArtifactFile {
                name: key.trim_start_matches(&prefix).to_string(),
                bytes,
                sha256: None,
            });
        }
        Ok(files)
    }

    /// One document through a ready predictor pod of `deployment`: the Open Inference Protocol
    /// (label and each label's score) where the pod serves HTTP, else the gRPC predictor
    /// (label only).
    async fn send(&self, deployment: &ModelDeployment, text: &str) -> Result<Prediction, String> {
        let namespace = deployment.namespace().unwrap_or_default();
        let name = deployment.name_any();
        let run = deployment
            .status
            .as_ref()
            .and_then(|s| s.served_run.clone())
            .ok_or_else(|| format!("ModelDeployment {name} serves no run yet"))?;
        let pods: Vec<Arc<Pod>> = self
            .ctx
            .caches
            .predictor_pods
            .state()
            .into_iter()
            .filter(|pod| {
                pod.namespace().as_deref() == Some(namespace.as_str())
                    && pod.labels().get(MODEL_DEPLOYMENT_LABEL) == Some(&name)
                    && prediction::serves(pod, &run)
            })
            .collect();
        let pod = pods
            .first()
            .ok_or_else(|| format!("no ready predictor pod of ModelDeployment {name} serves run {run}"))?;
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        if let Some(port) = prediction::named_port(pod, "http") {
            return self.infer(&ip, port, &name, text).await;
        }
        match prediction::target(pod) {
            Some(prediction::Target {
                call: prediction::Call::Predictor(port),
                ..
            }) => self.predictor(&ip, port, &run, text).await,
            _ => Err(format!(
                "predictor pod {} declares no grpc or http port",
                pod.name_any()
            )),
        }
    }

    async fn infer(&self, ip: &str, port: i32, model: &str, text: &str) -> Result<Prediction, String> {
        let base = format!("http://{}/v2/models/{model}", prediction::authority(ip, port));
        let answer = self
            .request(
                axum::http::Request::post(format!("{base}/infer"))
                    .header(axum::http::header::CONTENT_TYPE, "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        prediction::infer_request(text).to_string(),
                    )))
                    .map_err(|e| e.to_string())?,
            )
            .await?;
        let label = serde_json::from_str::<serde_json::Value>(&prediction::infer_answer(
            answer.to_string().as_bytes(),
        )?)
        .ok()
        .and_then(|v| v.get("result").and_then(|r| r.as_str()).map(str::to_string))
        .unwrap_or_default();
        // The scores, named by the model's labels where its metadata lists them.
        let probabilities: Vec<f64> = answer
            .get("outputs")
            .and_then(|o| o.as_array())
            .and_then(|outputs| {
                outputs
                    .iter()
                    .find(|o| o.get("name").and_then(|n| n.as_str()) == Some("probabilities"))
            })
            .and_then(|o| o.get("data").and_then(|d| d.as_array()))
            .map(|data| data.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default();
        let mut scores = BTreeMap::new();
        if !probabilities.is_empty() {
            let metadata = self
                .request(
                    axum::http::Request::get(&base)
                        .body(http_body_util::Full::default())
                        .map_err(|e| e.to_string())?,
                )
                .await
                .unwrap_or_default();
            let labels: Vec<String> = metadata
                .pointer("/parameters/labels")
                .and_then(|l| l.as_array())
                .map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if labels.len() == probabilities.len() {
                scores = labels.into_iter().zip(probabilities).collect();
            }
        }
        Ok(Prediction { label, scores })
    }

    async fn request(
        &self,
        request: axum::http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> Result<serde_json::Value, String> {
        use http_body_util::BodyExt;
        let uri = request.uri().to_string();
        let response = tokio::time::timeout(PREDICT_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| format!("{uri}: no answer within {}s", PREDICT_TIMEOUT.as_secs()))?
            .map_err(|e| format!("{uri}: {e}"))?;
        let status = response.status();
        let body = tokio::time::timeout(PREDICT_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| format!("{uri}: the answer did not finish"))?
            .map_err(|e| format!("{uri}: {e}"))?
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::json!({"error": String::from_utf8_lossy(&body).chars().take(300).collect::<String>()})
        });
        if status.is_success() {
            Ok(value)
        } else {
            let reason = value.get("error").and_then(|e| e.as_str()).unwrap_or_default();
            Err(format!("the predictor answered {status}: {reason}"))
        }
    }

    async fn predictor(&self, ip: &str, port: i32, run: &str, text: &str) -> Result<Prediction, String> {
        use miniautoml_proto::prediction::{PredictorPredictRequest, predictor_client::PredictorClient};
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", prediction::authority(ip, port)))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(PREDICT_TIMEOUT)
                .connect_lazy();
        let answer = PredictorClient::new(channel)
            .predictor_predict(PredictorPredictRequest {
                run_id: run.to_string(),
                document: text.to_string(),
            })
            .await
            .map_err(|status| format!("the predictor answered {:?}: {}", status.code(), status.message()))?
            .into_inner()
            .response;
        let label = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v.get("result").and_then(|r| r.as_str()).map(str::to_string))
            .unwrap_or(answer);
        Ok(Prediction {
            label,
            scores: BTreeMap::new(),
        })
    }
}

/// The permission each console action takes.
pub fn permission(action: Action) -> Permission {
    match action {
        Action::ListRuns => Permission::LIST_TRAINING_JOBS,
        Action::GetRun => Permission::GET_TRAINING_JOBS,
        Action::RunLogs => Permission::POD_LOGS,
        Action::ListDatasets => Permission::LIST_DATASETS,
        Action::GetDataset => Permission::GET_DATASETS,
        Action::ListDeployments => Permission::LIST_MODEL_DEPLOYMENTS,
        Action::GetDeployment => Permission::GET_MODEL_DEPLOYMENTS,
        Action::Predict => Permission::PREDICT,
    }
}

fn refusal(status: Status) -> Refusal {
    match status.code() {
        Code::Unauthenticated => Refusal::Unauthenticated(status.message().to_string()),
        Code::ResourceExhausted => Refusal::Busy(status.message().to_string()),
        _ => Refusal::Unavailable(status.message().to_string()),
    }
}

/// A user the API server knows.
struct Reviewed(Caller);

impl Viewer for Reviewed {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn may<'a>(&'a self, action: Action, namespace: &'a str) -> BoxFuture<'a, Result<bool, Refusal>> {
        Box::pin(async move {
            match self.0.may(permission(action), namespace).await {
                Ok(()) => Ok(true),
                Err(status) if status.code() == Code::PermissionDenied => Ok(false),
                Err(status) => Err(refusal(status)),
            }
        })
    }
}

fn guarded<K: Clone>(guard: &kube::core::DeserializeGuard<K>) -> Option<Arc<K>> {
    guard.0.as_ref().ok().map(|k| Arc::new(k.clone()))
}

impl Backend for Console {
    fn authenticate<'a>(
        &'a self,
        token: Option<&'a str>,
        peer: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Viewer>, Refusal>> {
        Box::pin(async move {
            let Some(reviewer) = &self.reviewer else {
                return Ok(Arc::new(Anyone) as Arc<dyn Viewer>);
            };
            let Some(token) = token else {
                return Err(Refusal::Unauthenticated(format!(
                    "the console needs a Kubernetes bearer token for audience {}",
                    reviewer.audience()
                )));
            };
            let caller = reviewer
                .caller(token, peer, "the console")
                .await
                .map_err(refusal)?;
            Ok(Arc::new(Reviewed(caller)) as Arc<dyn Viewer>)
        })
    }

    fn needs_token(&self) -> bool {
        self.reviewer.is_some()
    }

    fn runs(&self) -> Vec<Arc<TrainingJob>> {
        self.ctx
            .caches
            .training_jobs
            .state()
            .iter()
            .filter_map(|g| guarded(g))
            .collect()
    }

    fn run(&self, namespace: &str, name: &str) -> Option<Arc<TrainingJob>> {
        let key = ObjectRef::new(name).within(namespace);
        self.ctx.caches.training_jobs.get(&key).and_then(|g| guarded(&g))
    }

    fn datasets(&self) -> Vec<Arc<Dataset>> {
        self.ctx
            .caches
            .datasets
            .state()
            .iter()
            .filter_map(|g| guarded(g))
            .collect()
    }

    fn deployments(&self) -> Vec<Arc<ModelDeployment>> {
        self.ctx
            .caches
            .model_deployments
            .state()
            .iter()
            .filter_map(|g| guarded(g))
            .collect()
    }

    fn predictor(&self, namespace: &str, model_deployment: &str) -> Option<Arc<Deployment>> {
        self.ctx
            .caches
            .predictor_deployments
            .state()
            .into_iter()
            .find(|d| {
                d.namespace().as_deref() == Some(namespace)
                    && d.labels().get(MODEL_DEPLOYMENT_LABEL).map(String::as_str) == Some(model_deployment)
            })
    }

    fn history<'a>(&'a self, run: &'a TrainingJob) -> BoxFuture<'a, Result<Vec<EpochStatus>, String>> {
        Box::pin(self.read_history(run))
    }

    fn artifact<'a>(&'a self, run: &'a TrainingJob) -> BoxFuture<'a, Result<Vec<ArtifactFile>, String>> {
        Box::pin(self.read_artifact(run))
    }

    fn logs<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        lines: i64,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), namespace);
            let params = LogParams {
                container: Some(CONTAINER.to_string()),
                tail_lines: Some(lines),
                limit_bytes: Some(64 * 1024),
                ..LogParams::default()
            };
            pods.logs(pod, &params).await.map_err(|e| e.to_string())
        })
    }

    fn predict<'a>(
        &'a self,
        deployment: &'a ModelDeployment,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, String>> {
        Box::pin(self.send(deployment, text))
    }

    fn system(&self) -> BoxFuture<'_, SystemInfo> {
        Box::pin(async move {
            let leader = match self.ctx.leadership.leader().await {
                Ok(Some(leader)) => Some(leader.name),
                Ok(None) if self.ctx.leadership.name().is_none() => Some("this replica (no election)".into()),
                Ok(None) => None,
                Err(error) => Some(format!("unknown: {error}")),
            };
            let store = match self.store() {
                Ok(store) => store
                    .client
                    .head_bucket()
                    .bucket(&store.bucket)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        miniautoml_data::StorageError::from_sdk(&format!("bucket {}", store.bucket), e)
                            .to_string()
                    }),
                Err(error) => Err(error),
            };
            SystemInfo {
                version: self.version.clone(),
                leader,
                replica: self.ctx.leadership.name().map(str::to_string),
                algorithms: self.ctx.algorithm_images.clone(),
                bucket: self.store().map(|s| s.bucket.clone()).unwrap_or_default(),
                store,
                kueue: self.ctx.kueue.is_some(),
            }
        })
    }
}

/// The address a console connection comes from, over TLS or not.
#[derive(Clone, Copy, Debug)]
struct PeerAddr(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::AdminListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::AdminListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Serves the console on `listener` (over TLS when `tls` is given) until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Option<ServerTls>,
    console: Console,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let failed = |source| StartupError::Serve {
        server: "console",
        source,
    };
    let addr = listener.local_addr().map_err(failed)?;
    tracing::info!(%addr, "console listening");
    let audience = console
        .reviewer
        .as_ref()
        .map(|r| r.audience().to_string())
        .unwrap_or_default();
    let settings = miniautoml_console::Settings {
        audience,
        secure: tls.is_some(),
    };
    let router = miniautoml_console::router(Arc::new(console), settings).layer(
        axum::middleware::map_request(|mut request: axum::extract::Request| async move {
            let peer = request
                .extensions()
                .get::<axum::extract::ConnectInfo<PeerAddr>>()
                .map(|info| info.0.0.ip().to_string());
            if let Some(peer) = peer {
                request.extensions_mut().insert(miniautoml_console::Peer(peer));
            }
            request
        }),
    );
    let service = router.into_make_service_with_connect_info::<PeerAddr>();
    match tls {
        Some(tls) => {
            let listener = tls.admin_listener(listener).map_err(failed)?;
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    }
    .map_err(failed)
}
