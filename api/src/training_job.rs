//! The `TrainingJob` resource: one training run of an algorithm image on a dataset snapshot.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Toleration,
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{RetainPolicy, Tags, conditions_schema, tags_schema};

/// Condition: the dataset snapshot is Ready.
pub const DATASET_READY: &str = "DatasetReady";
/// Condition: the workers run (or ran).
pub const RUNNING: &str = "Running";
/// Condition: the run succeeded.
pub const SUCCEEDED: &str = "Succeeded";
/// Condition: the run failed.
pub const FAILED: &str = "Failed";
/// Condition: Kueue admitted the run's Workload (runs with `spec.queueName`): the ClusterQueue
/// and flavors, or Kueue's own reason while it waits.
pub const ADMITTED: &str = "Admitted";
/// Condition: which storage key the run's pods hold — a key of their own (`Scoped`, until
/// `Revoked` when the run ends) or the store's shared one (`SharedKey`).
pub const STORAGE_KEY: &str = "StorageKey";

/// Environment variables of the training-image contract that the operator sets; a
/// hyperparameter cannot override them (nor `AWS_*`, `MINIAUTOML_*`, `METADATA_STORE_*` or
/// torchrun's `PET_*`).
pub const CONTRACT_VARIABLES: [&str; 17] = [
    "JOB_ID",
    "ALGORITHM_NAME",
    "METADATA_STORE_SERVER",
    "METADATA_STORE_CA",
    "TRAINING_DATASET_ID",
    "TRAINING_DATASET_VERSION_HASH",
    "TRAINING_DATA_BUCKET",
    "TRAINING_DATA_PATH",
    "MODEL_BUCKET",
    "MODEL_NAME",
    "MINIO_SERVER",
    "MINIO_SERVER_ACCESS_KEY",
    "MINIO_SERVER_SECRET_KEY",
    "WORLD_SIZE",
    "RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
];

/// The most epochs a TrainingJob's status lists; the full history is in object storage.
pub const MAX_STATUS_EPOCHS: u64 = 32;
fn retain() -> RetainPolicy {
    RetainPolicy::Retain
}

/// The most workers (ranks) one TrainingJob may run.
pub const MAX_WORKERS: i32 = 64;
/// The most GPUs one worker may request.
pub const MAX_GPUS: i32 = 8;

/// A training run: the algorithm's image runs as Kubernetes Jobs on a dataset snapshot with
/// hyperparameters; metrics, code version and the model artifact are recorded in status.
/// The spec is immutable: to train again, create another TrainingJob.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "miniautoml.io",
    version = "v1alpha1",
    kind = "TrainingJob",
    namespaced,
    status = "TrainingJobStatus",
    shortname = "tj",
    category = "miniautoml",
    cel,
    validation = Rule::new("self.metadata.name.size() <= 63").message("a TrainingJob's name must be at most 63 characters: it labels the run's Job and pods, and a label value is at most 63"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Progress",
        type_ = "string",
        json_path = ".status.progress",
        description = "Epochs done out of EPOCHS"
    ),
    printcolumn(
        name = "Accuracy",
        type_ = "number",
        json_path = ".status.metrics.accuracy",
        description = "Final test accuracy"
    ),
    printcolumn(name = "Dataset", type_ = "string", json_path = ".spec.dataset.name"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.datasetVersionHash",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.algorithm) != has(self.image)").message("set exactly one of algorithm and image"),
    validation = Rule::new("self == oldSelf").message("a TrainingJob's spec is immutable; create a new TrainingJob to train again"),
)]
pub struct TrainingJobSpec {
    /// Algorithm name, resolved to a container image through the operator's configuration
    /// (e.g. `intent-classification`). Exactly one of `algorithm` and `image` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub algorithm: Option<String>,

    /// Container image implementing the training-image contract, used as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// The dataset to train on, resolved to a training snapshot.
    pub dataset: DatasetReference,

    /// Hyperparameters, passed to the trainer as environment variables verbatim
    /// (`LR`, `EPOCHS`, `BATCH_SIZE`, `FC_SIZE`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(
        validation = Rule::new("self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$'))").message("parameter names must be environment variable names (letters, digits and _, not starting with a digit)"),
        validation = Rule::new("self.all(k, !(k in ['JOB_ID', 'ALGORITHM_NAME', 'METADATA_STORE_SERVER', 'TRAINING_DATASET_ID', 'TRAINING_DATASET_VERSION_HASH', 'TRAINING_DATA_BUCKET', 'TRAINING_DATA_PATH', 'MODEL_BUCKET', 'MODEL_NAME', 'MINIO_SERVER', 'MINIO_SERVER_ACCESS_KEY', 'MINIO_SERVER_SECRET_KEY', 'WORLD_SIZE', 'RANK', 'MASTER_ADDR', 'MASTER_PORT']) && !k.startsWith('AWS_') && !k.startsWith('MINIAUTOML_') && !k.startsWith('METADATA_STORE_') && !k.startsWith('PET_'))").message("parameter names must not be ones the operator sets: the training-image contract's variables (JOB_ID, TRAINING_*, MODEL_*, MINIO_*, WORLD_SIZE, RANK, MASTER_*, ...), AWS_*, MINIAUTOML_*, METADATA_STORE_* or torchrun's PET_*"),
        validation = Rule::new("self.all(k, size(self[k]) <= 1024)").message("parameter values must be at most 1024 characters"),
        validation = Rule::new("!('EPOCHS' in self) || (self['EPOCHS'].matches('^[0-9]{1,6}$') && int(self['EPOCHS']) >= 1 && int(self['EPOCHS']) <= 10000)").message("EPOCHS must be a whole number from 1 to 10000"),
    )]
    pub parameters: BTreeMap<String, String>,

    /// Name of the model this run produces.
    #[schemars(length(min = 1, max = 253))]
    pub output_model_name: String,

    /// Compute each worker requests.
    #[serde(default)]
    pub resources: TrainingResources,

    /// Node labels a worker's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the workers tolerate. A toleration for `nvidia.com/gpu` is added when `gpus > 0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub tolerations: Vec<Toleration>,

    /// Number of workers (ranks). More than one runs an Indexed Job with `WORLD_SIZE`, `RANK`,
    /// `MASTER_ADDR` and `MASTER_PORT` set, for an image that trains data-parallel; an algorithm
    /// the operator knows trains on fewer refuses more (`Accepted=False`, `TooManyWorkers`).
    #[serde(default = "default_workers")]
    #[schemars(range(min = 1, max = MAX_WORKERS))]
    pub workers: i32,

    /// One worker: retries of its failed pod before the run fails. Several workers form a gang
    /// whose pods are never retried alone (see `maxRestarts`).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,

    /// Several workers: how many times the whole gang is restarted after a rank fails. The
    /// first failed rank fails the attempt, every other pod of it is stopped, and once they
    /// are gone a new Job starts every rank again on the same snapshot. An eviction or
    /// preemption restarts without counting.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub max_restarts: i32,

    /// Seconds the run may take before it is stopped and marked failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,

    /// Kueue LocalQueue (in this namespace) to submit to: Kueue admits the run against its
    /// ClusterQueue's quota, all workers at once, instead of the operator's own queue. The Job is
    /// created suspended with the `kueue.x-k8s.io/queue-name` label; the run is `Queued` with
    /// Kueue's reason and its place in the LocalQueue until admitted. Refused
    /// (`Accepted=False/NoKueue`) where the cluster runs no Kueue the operator may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub queue_name: Option<String>,

    /// What happens to the run's objects in storage (the model artifact and the epoch
    /// history) when the TrainingJob is deleted: `Retain` (the default) keeps them, `Delete`
    /// removes them with it.
    #[serde(default = "retain")]
    pub artifact_retain_policy: RetainPolicy,

    /// How the trainer reports: `MiniAutoML` (with the run's token, over TLS where the
    /// operator serves it) or `Original` (the original MiniAutoML's images, unchanged: no token,
    /// plain text to a port of its own, accepted only from this run's own pods and only for
    /// this run). Unset: the algorithm's, as the operator is configured (else `MiniAutoML`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<Contract>,
}

/// How a trainer proves a report comes from its run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Contract {
    // The run's token (`MINIAUTOML_RUN_TOKEN`), on the operator's gRPC port.
    #[default]
    MiniAutoML,
    // The original images': no token, plain text, from one of the run's own pods.
    Original,
}

impl std::str::FromStr for Contract {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "MiniAutoML" => Ok(Contract::MiniAutoML),
            "Original" => Ok(Contract::Original),
            other => Err(format!("{other:?} is not a contract: MiniAutoML or Original")),
        }
    }
}

fn default_workers() -> i32 {
    1
}

/// A dataset and which of its commits to train on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetReference {
    /// Name of a Dataset in the TrainingJob's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Use commits 1 up to this id; unset means up to the latest commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub commit: Option<u32>,
    /// Use only commits carrying all these tags (exact match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "tags_schema")]
    pub tags: Tags,
}

/// Compute requested by each worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingResources {
    /// CPU request and limit, e.g. `2` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory request and limit, e.g. `4Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// GPUs per worker, requested as `nvidia.com/gpu`.
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_GPUS))]
    pub gpus: i32,
}

/// Observed state of a TrainingJob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, one per type, each with a reason and message. `Accepted`: whether the operator
    /// validated the current generation of the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Summary of the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TrainingPhase>,
    /// Queued runs ahead of this one (0 when it is next): in the operator's queue, or for a
    /// `queueName` Kueue's `positionInLocalQueue`; absent once launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_in_queue: Option<u32>,
    /// Numeric run id used by the gRPC API and the trainer's `JOB_ID`, given by the operator
    /// once; the label `miniautoml.io/run-id` mirrors it for selection, but only this field counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Version hash of the training snapshot in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_version_hash: Option<String>,
    /// Name of the batch/v1 Job running the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the workers started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Version of the training code (image digest when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_version: Option<String>,
    /// Epochs done out of the requested number, e.g. `3/15`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The most recent epochs with their metrics; the full history is in object storage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STATUS_EPOCHS))]
    pub epochs: Vec<EpochStatus>,
    /// Final metrics of the run (e.g. `accuracy` on the test split).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub metrics: BTreeMap<String, f64>,
    /// Human-readable outcome, e.g. `test accuracy 0.712`, or why the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The model artifact, once all its files are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactStatus>,
    /// The attempt running now (1 the first; each gang restart starts the next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Gang restarts counted against `maxRestarts` (evictions and preemptions are not).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Each rank of the current attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_WORKERS))]
    pub workers: Vec<WorkerStatus>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One rank of a run: its pod and how it is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// The rank (the pod's completion index).
    pub rank: u32,
    /// The rank's current pod.
    pub pod: String,
    /// The pod's phase (`Pending`, `Running`, `Succeeded`, `Failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The node it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Times this rank was started again: gang restarts, and retries of a lone worker's pod.
    #[serde(default)]
    pub restarts: u32,
    /// The trainer's exit code, once it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it is not running or why it ended (e.g. `ContainerCreating`, `Error`, `OOMKilled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rank's latest reported epoch (`<rank>-<epoch>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_epoch: Option<String>,
}

/// Summary phase of a TrainingJob: `Queued` (waiting for its snapshot or a free slot),
/// `Launching` (Job created, pods not running yet), `Running`, `Succeeded` (artifact recorded)
/// or `Failed` (`message` and the conditions say why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum TrainingPhase {
    // Waiting for its dataset snapshot or for a free slot.
    Queued,
    // Job created, pods not running yet.
    Launching,
    // Workers running.
    Running,
    // Finished and the artifact recorded.
    Succeeded,
    // Failed; `message` and the conditions say why.
    Failed,
}

/// One epoch of one worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EpochStatus {
    /// `<rank>-<epoch>`, as reported by the trainer.
    pub id: String,
    /// When the epoch started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the epoch ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Metrics of the epoch, e.g. `accuracy` and `loss` on the validation split.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub metrics: BTreeMap<String, f64>,
}

/// A model artifact in object storage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactStatus {
    /// `s3://bucket/prefix/` of the run's folder.
    pub uri: String,
    /// Artifact version (the run id; artifacts are never overwritten).
    pub version: String,
    /// sha256 of `manifest.json`, which lists the sha256 of every file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// File names in the folder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub files: Vec<String>,
}

impl TrainingJobSpec {
    /// Requested epochs, when `EPOCHS` is set and well-formed.
    pub fn epochs(&self) -> Option<u32> {
        self.parameters.get("EPOCHS")?.parse().ok()
    }
}

impl TrainingJobStatus {
    /// Merges the trainer's reported `epochs` into the status list (same id replaced) and
    /// updates `progress` from rank 0's latest epoch (of `requested` epochs, when known). The
    /// list stays bounded however long the run: rank 0's epochs evenly spaced (every epoch whose
    /// number is a multiple of a power-of-two stride, which doubles as the run grows) plus rank
    /// 0's latest and the latest report of any rank, at most [`MAX_STATUS_EPOCHS`] in all. The
    /// whole history is in object storage.
    pub fn merge_epochs(&mut self, epochs: &[EpochStatus], requested: Option<u32>) {
        for epoch in epochs {
            self.epochs.retain(|e| e.id != epoch.id);
            self.epochs.push(epoch.clone());
            let rank = epoch
                .id
                .split_once('-')
                .and_then(|(rank, _)| rank.parse::<u32>().ok());
            if let Some(worker) = self.workers.iter_mut().find(|w| Some(w.rank) == rank) {
                worker.last_epoch = Some(epoch.id.clone());
            }
        }
        let rank_zero = |e: &EpochStatus| e.id.strip_prefix("0-")?.parse::<u64>().ok();
        let Some(done) = self.epochs.iter().filter_map(rank_zero).max() else {
            // No rank-0 epoch numbers: the most recent ones.
            let excess = self.epochs.len().saturating_sub(MAX_STATUS_EPOCHS as usize);
            self.epochs.drain(..excess);
            return;
        };
        self.progress = Some(match requested {
            Some(total) => format!("{done}/{total}"),
            None => done.to_string(),
        });
        // Multiples of the stride up to `done` (at most MAX - 2 of them), `done` and the latest.
        let mut stride = 1;
        while done / stride > MAX_STATUS_EPOCHS - 2 {
            stride *= 2;
        }
        let latest = self.epochs.last().map(|e| e.id.clone());
        self.epochs.retain(|e| {
            Some(&e.id) == latest.as_ref() || rank_zero(e).is_some_and(|n| n == done || n % stride == 0)
        });
    }
}

impl TrainingJob {
    /// Whether the run has ended (`Succeeded` or `Failed`): it is never changed again.
    pub fn has_ended(&self) -> bool {
        matches!(
            self.status.as_ref().and_then(|s| s.phase),
            Some(TrainingPhase::Succeeded | TrainingPhase::Failed)
        )
    }

    /// The numeric run id the operator gave this run (`status.runId`); labels do not count,
    /// since anyone who may edit the TrainingJob may set them.
    pub fn run_id(&self) -> Option<u64> {
        self.status.as_ref()?.run_id.as_deref()?.parse().ok()
    }

    /// The dataset id the original API answers for this run (GetTrainingStatus, GetRunStatus):
    /// the one the caller of `Train` named (annotation [`crate::labels::DATASET_ID_ANNOTATION`]),
    /// else, for a run made with kubectl, its Dataset's name.
    pub fn caller_dataset_id(&self) -> String {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(crate::labels::DATASET_ID_ANNOTATION))
            .cloned()
            .unwrap_or_else(|| self.spec.dataset.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(id: &str) -> EpochStatus {
        EpochStatus {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_original_api_answers_the_dataset_id_its_caller_used() {
        let mut job: TrainingJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "miniautoml.io/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "run"},
            "spec": {"dataset": {"name": "tweets-grpc"}, "outputModelName": "m"},
        }))
        .unwrap();
        assert_eq!(job.caller_dataset_id(), "tweets-grpc", "made with kubectl");
        job.metadata.annotations = Some(BTreeMap::from([(
            crate::labels::DATASET_ID_ANNOTATION.to_string(),
            "1".to_string(),
        )]));
        assert_eq!(job.caller_dataset_id(), "1", "made by Train on dataset 1");
    }

    #[test]
    fn epochs_are_bounded_evenly_spaced_and_progress_follows_rank_zero() {
        let mut status = TrainingJobStatus::default();
        for i in 1..=10 {
            status.merge_epochs(&[epoch(&format!("0-{i}"))], Some(1000));
        }
        assert_eq!(status.epochs.len(), 10, "a short run keeps every epoch");
        for i in 11..=1000 {
            status.merge_epochs(&[epoch(&format!("0-{i}")), epoch(&format!("1-{i}"))], Some(1000));
        }
        assert!(
            status.epochs.len() <= MAX_STATUS_EPOCHS as usize,
            "{}",
            status.epochs.len()
        );
        assert_eq!(status.progress.as_deref(), Some("1000/1000"));
        let ids: Vec<&str> = status.epochs.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.last(), Some(&"1-1000"), "the latest report stays");
        assert!(ids.contains(&"0-1000"), "rank 0's latest stays");
        let numbers: Vec<u64> = ids
            .iter()
            .filter_map(|id| id.strip_prefix("0-")?.parse().ok())
            .filter(|&n| n != 1000)
            .collect();
        assert!(numbers.len() >= 10, "{ids:?}");
        let gaps: Vec<u64> = numbers.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g == gaps[0]), "evenly spaced: {ids:?}");
        assert!(numbers[0] <= gaps[0], "from the start of the run: {ids:?}");
        // Ids that are not <rank>-<epoch>: the most recent ones.
        let mut other = TrainingJobStatus::default();
        let many: Vec<EpochStatus> = (1..=40).map(|i| epoch(&format!("e{i}"))).collect();
        other.merge_epochs(&many, None);
        assert_eq!(other.epochs.len(), MAX_STATUS_EPOCHS as usize);
        assert_eq!(other.epochs.last().unwrap().id, "e40");
    }
}
