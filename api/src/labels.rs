//! The labels and annotations users select on: kept stable, since `kubectl get -l` commands,
//! dashboards and the operator's own watches depend on them.

/// Label mirroring a Dataset's numeric id (the DataManagementService's `dataset_id`), for `kubectl
/// get -l`; the operator restores it when changed and never reads it: the id is
/// `status.datasetId`.
pub const DATASET_ID_LABEL: &str = "miniautoml.io/dataset-id";
/// Label mirroring a TrainingJob's numeric run id, for `kubectl get -l`; the operator restores it
/// when changed and never trusts it: the id is `status.runId`. Predictor pods carry the run they
/// serve.
pub const RUN_ID_LABEL: &str = "miniautoml.io/run-id";
/// Label naming the TrainingJob on everything it owns (its Secret, Job, Service and pods).
pub const TRAINING_JOB_LABEL: &str = "miniautoml.io/trainingjob";
/// Label naming the ModelDeployment on everything it owns (its Secret, Deployment, Service and
/// pods).
pub const MODEL_DEPLOYMENT_LABEL: &str = "miniautoml.io/modeldeployment";
/// Label on objects the gRPC API created for a caller (its value names the service).
pub const CREATED_BY_LABEL: &str = "miniautoml.io/created-by";
/// Label on a TrainingJob created by `TrainingService/Train` with an `idempotency-key` header:
/// the key's SHA-256 (40 hex digits), so that a retried call finds the run the first created.
pub const IDEMPOTENCY_KEY_LABEL: &str = "miniautoml.io/idempotency-key";
/// Annotation on a TrainingJob created by `TrainingService/Train`: the dataset id it named.
pub const DATASET_ID_ANNOTATION: &str = "miniautoml.io/dataset-id";
