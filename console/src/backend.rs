//! What the console reads and who may read it: the [`Backend`] the operator implements over its
//! watch caches, the object store and Kubernetes' reviews, and a fake one in the tests.

use std::{collections::BTreeMap, fmt, sync::Arc};

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use miniautoml_api::{Dataset, ModelDeployment, TrainingJob, training_job::EpochStatus};
use serde::Serialize;

/// What a page shows, checked per namespace with Kubernetes' authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The runs table (`list trainingjobs`).
    ListRuns,
    /// A run's page, curves and artifact (`get trainingjobs`).
    GetRun,
    /// A run's pod log lines (`get pods/log`).
    RunLogs,
    /// The datasets table (`list datasets`).
    ListDatasets,
    /// A dataset's page (`get datasets`).
    GetDataset,
    /// The deployments table (`list modeldeployments`).
    ListDeployments,
    /// A deployment's page (`get modeldeployments`).
    GetDeployment,
    /// The try-it box (`create modeldeployments/predict`, as gRPC Predict).
    Predict,
}

impl Action {
    /// The permission as RBAC names it, for messages.
    pub fn permission(self) -> &'static str {
        match self {
            Action::ListRuns => "list trainingjobs.miniautoml.io",
            Action::GetRun => "get trainingjobs.miniautoml.io",
            Action::RunLogs => "get pods/log",
            Action::ListDatasets => "list datasets.miniautoml.io",
            Action::GetDataset => "get datasets.miniautoml.io",
            Action::ListDeployments => "list modeldeployments.miniautoml.io",
            Action::GetDeployment => "get modeldeployments.miniautoml.io",
            Action::Predict => "create modeldeployments.miniautoml.io/predict",
        }
    }
}

/// Why a request was not answered with data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one the API server does not accept for the console's audience.
    Unauthenticated(String),
    /// The API server cannot be asked now: retry.
    Unavailable(String),
    /// Too many reviews of this caller in flight: retry.
    Busy(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unauthenticated(m) | Refusal::Unavailable(m) | Refusal::Busy(m) => f.write_str(m),
        }
    }
}

/// Someone the API server knows (or anyone, where authentication is off).
pub trait Viewer: Send + Sync {
    /// The user name, as the API server knows it.
    fn name(&self) -> &str;
    /// Whether the viewer may do `action` in `namespace`.
    fn may<'a>(&'a self, action: Action, namespace: &'a str) -> BoxFuture<'a, Result<bool, Refusal>>;
}

/// Anyone, who may do everything: the viewer where authentication is off
/// (`--grpc-auth=none`).
pub struct Anyone;

impl Viewer for Anyone {
    fn name(&self) -> &str {
        "anyone (authentication is off)"
    }

    fn may<'a>(&'a self, _: Action, _: &'a str) -> BoxFuture<'a, Result<bool, Refusal>> {
        Box::pin(async { Ok(true) })
    }
}

/// One file of a model artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArtifactFile {
    /// The name in the run's model folder.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lowercase hex sha256, where the manifest records it.
    pub sha256: Option<String>,
}

/// A predictor's answer to one document.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Prediction {
    /// The predicted label.
    pub label: String,
    /// Each label's score, where the predictor gives them.
    pub scores: BTreeMap<String, f64>,
}

/// The System page.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SystemInfo {
    /// The operator's version.
    pub version: String,
    /// The pod that leads (reconciles), when known.
    pub leader: Option<String>,
    /// This replica's pod.
    pub replica: Option<String>,
    /// Algorithm name → trainer image.
    pub algorithms: BTreeMap<String, String>,
    /// The bucket.
    pub bucket: String,
    /// Whether the object store answered, or its error.
    pub store: Result<(), String>,
    /// Whether Kueue admits runs with a queue name.
    pub kueue: bool,
}

/// What the console reads. Every list comes from the operator's watch caches (no request to
/// the API server per page); the histories, artifacts and logs from the store and the API.
pub trait Backend: Send + Sync + 'static {
    /// Who presents `token` (from `peer`): the viewer, or why not. Without a token, the
    /// anonymous viewer where authentication is off.
    fn authenticate<'a>(
        &'a self,
        token: Option<&'a str>,
        peer: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Viewer>, Refusal>>;
    /// Whether requests need a token (the login page is offered when they do).
    fn needs_token(&self) -> bool;
    /// Every TrainingJob the operator watches.
    fn runs(&self) -> Vec<Arc<TrainingJob>>;
    /// One TrainingJob (by default found among [`Backend::runs`]; a backend with an index
    /// looks it up).
    fn run(&self, namespace: &str, name: &str) -> Option<Arc<TrainingJob>> {
        self.runs().into_iter().find(|run| {
            run.metadata.namespace.as_deref() == Some(namespace) && run.metadata.name.as_deref() == Some(name)
        })
    }
    /// Every Dataset.
    fn datasets(&self) -> Vec<Arc<Dataset>>;
    /// Every ModelDeployment.
    fn deployments(&self) -> Vec<Arc<ModelDeployment>>;
    /// The predictor Deployment of a ModelDeployment, when there is one.
    fn predictor(&self, namespace: &str, model_deployment: &str) -> Option<Arc<Deployment>>;
    /// A run's whole epoch history (every rank), from the store.
    fn history<'a>(&'a self, run: &'a TrainingJob) -> BoxFuture<'a, Result<Vec<EpochStatus>, String>>;
    /// A run's model files, from the store.
    fn artifact<'a>(&'a self, run: &'a TrainingJob) -> BoxFuture<'a, Result<Vec<ArtifactFile>, String>>;
    /// The last `lines` log lines of a pod.
    fn logs<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        lines: i64,
    ) -> BoxFuture<'a, Result<String, String>>;
    /// `text` through a predictor of the deployment.
    fn predict<'a>(
        &'a self,
        deployment: &'a ModelDeployment,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, String>>;
    /// The System page's facts.
    fn system(&self) -> BoxFuture<'_, SystemInfo>;
}
