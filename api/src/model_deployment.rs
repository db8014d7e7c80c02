//! The `ModelDeployment` resource: predictor replicas serving a trained model over gRPC and HTTP.

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{TrainingJob, common::conditions_schema, training_job::TrainingPhase};

/// Condition: the referenced model can be served (its TrainingJob Succeeded with an artifact).
pub const MODEL_READY: &str = "ModelReady";
/// Condition: every replica serves the referenced model and is ready.
pub const READY: &str = "Ready";
/// Condition: at least one replica is ready to serve (the current or the previous model).
pub const AVAILABLE: &str = "Available";
/// gRPC port of a predictor (and of its Service).
pub const GRPC_PORT: i32 = 8081;
/// HTTP port of a predictor (and of its Service).
pub const HTTP_PORT: i32 = 8080;

/// The most predictor replicas one ModelDeployment may run.
pub const MAX_REPLICAS: i32 = 32;

/// Predictor replicas serving the model of a succeeded TrainingJob.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "miniautoml.io",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "ModelDeploymentStatus",
    shortname = "mdep",
    category = "miniautoml",
    cel,
    validation = Rule::new("self.metadata.name.size() <= 63").message("a ModelDeployment's name must be at most 63 characters: it labels its predictor pods, and a label value is at most 63"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".status.servedRun",
        description = "Run being served"
    ),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint.grpc",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.image) || (!has(self.protocol) && !has(self.port))").message("protocol and port describe spec.image: set image too, or leave both out"),
)]
pub struct ModelDeploymentSpec {
    /// The trained model to serve. Changing it rolls the predictors over to the new model
    /// without dropping requests.
    pub model: ModelReference,

    /// Number of predictor replicas.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub replicas: i32,

    /// Compute each predictor replica requests.
    #[serde(default)]
    pub resources: PredictorResources,

    /// A predictor image of one's own (a custom predictor); unset: the predictor the operator
    /// is configured with for the run's algorithm (else its default one). A custom predictor
    /// finds the model's files, downloaded and verified before it starts, in `/mnt/models` and
    /// `$MODEL_DIR/<run id>/` (`MODEL_DIR=/models`), serves `protocol` on `port`, and is ready
    /// when its readiness check passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// What `image` serves: `Predictor` (gRPC `prediction.Predictor/PredictorPredict`, as the
    /// original predictor and ours; ready when gRPC health says SERVING) or `OpenInference`
    /// (Open Inference Protocol v2 over HTTP: `POST /v2/models/<name>/infer` with one BYTES
    /// input; ready when `GET /v2/models/<name>/ready` answers 200). Only with `image`; unset:
    /// `Predictor`. `PredictionService/Predict` calls it this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PredictorProtocol>,

    /// The port `image` serves `protocol` on (the original predictor's is 51001). Only with
    /// `image`; unset: 8081 for `Predictor`, 8080 for `OpenInference`. The Service's ports stay
    /// 8081 (gRPC) and 8080 (HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Namespaces whose pods may call the predictors, besides the ModelDeployment's own
    /// namespace and the operator (`*`: every namespace). The operator enforces it with a
    /// NetworkPolicy on the predictor pods where the cluster's network plugin enforces them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ALLOWED_NAMESPACES), inner(regex(pattern = r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$")))]
    pub allowed_namespaces: Vec<String>,
}

/// How a predictor image is called.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PredictorProtocol {
    // gRPC `prediction.Predictor/PredictorPredict` (runId, document) → `{"result": label}`.
    #[default]
    Predictor,
    // Open Inference Protocol v2 over HTTP.
    OpenInference,
}

impl PredictorProtocol {
    /// The port an image of this protocol serves on unless told otherwise.
    pub fn default_port(self) -> i32 {
        match self {
            PredictorProtocol::Predictor => GRPC_PORT,
            PredictorProtocol::OpenInference => HTTP_PORT,
        }
    }
}

/// The most namespaces a ModelDeployment may let in besides its own.
pub const MAX_ALLOWED_NAMESPACES: u32 = 32;

fn default_replicas() -> i32 {
    1
}

/// Which trained model to serve: a TrainingJob, or a run id from the gRPC API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.trainingJob) != has(self.runId)").message("set exactly one of trainingJob and runId"))]
pub struct ModelReference {
    /// Name of a TrainingJob in the same namespace; it must have Succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub training_job: Option<String>,
    /// Numeric run id as returned by the gRPC `Train` call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20), regex(pattern = r"^[0-9]+$"))]
    pub run_id: Option<String>,
}

/// Compute requested by each predictor replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictorResources {
    /// CPU request and limit, e.g. `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory request and limit, e.g. `256Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// Observed state of a ModelDeployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, one per type, each with a reason and message. `Accepted`: the operator
    /// validated the current generation of the spec. `ModelReady`: the referenced TrainingJob
    /// Succeeded with an artifact (else why not). `Ready`: every replica serves the referenced
    /// run and is ready (else `RollingOut` with progress, or why nothing is deployed).
    /// `Available`: at least one replica is ready, whichever run it serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Run id whose model every replica serves; it changes only when a rollout completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_run: Option<String>,
    /// Artifact version being served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Predictor replicas that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Predictor replicas ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Where to send predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
}

/// In-cluster addresses of a ModelDeployment's Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `host:port` of the gRPC `prediction.Predictor` service.
    pub grpc: String,
    /// Base URL of the HTTP (Open Inference Protocol v2) API.
    pub http: String,
}

/// The trained model a ModelDeployment serves, resolved from its TrainingJob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedModel {
    /// Run id.
    pub run_id: String,
    /// The TrainingJob's name.
    pub training_job: String,
    /// `s3://bucket/models/…/` (the TrainingJob's `status.artifact.uri`).
    pub uri: String,
    /// Artifact version.
    pub version: String,
    /// sha256 of the artifact's `manifest.json` as the run recorded it; the predictor refuses
    /// a model whose manifest differs.
    pub sha256: Option<String>,
    /// The algorithm that trained it (`None` for a TrainingJob's own image): an algorithm may
    /// have a predictor of its own.
    pub algorithm: Option<String>,
}

/// Why a model cannot be served (yet): `(reason, message)` for the `ModelReady` condition.
pub type NotServable = (&'static str, String);

impl TrainingJob {
    /// The model this run offers for serving: only a Succeeded run with an artifact has one.
    pub fn served_model(&self) -> Result<ServedModel, NotServable> {
        let name = self.metadata.name.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        match status.phase {
            Some(TrainingPhase::Succeeded) => {}
            Some(TrainingPhase::Failed) => {
                return Err((
                    "TrainingFailed",
                    format!(
                        "TrainingJob {name} failed ({}); point spec.model at a succeeded run",
                        status.message.unwrap_or_default()
                    ),
                ));
            }
            phase => {
                let phase = phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "new".into());
                return Err((
                    "TrainingNotSucceeded",
                    format!("TrainingJob {name} is {phase}; the model is deployed once it has Succeeded"),
                ));
            }
        }
        let Some(artifact) = status.artifact else {
            return Err((
                "NoArtifact",
                format!("TrainingJob {name} Succeeded but recorded no artifact"),
            ));
        };
        let run_id = status
            .run_id
            .ok_or_else(|| ("NoRunId", format!("TrainingJob {name} has no run id")))?;
        Ok(ServedModel {
            run_id,
            training_job: name,
            uri: artifact.uri,
            version: artifact.version,
            sha256: artifact.sha256,
            algorithm: self.spec.algorithm.clone().filter(|_| self.spec.image.is_none()),
        })
    }
}
