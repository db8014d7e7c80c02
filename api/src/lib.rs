//! MiniAutoML's API: the custom resource types of group `miniautoml.io`, version `v1alpha1`,
//! and the generation of their CustomResourceDefinitions.

// `#[kube(printcolumn(...))]` repeats the same keys once per column, which this lint misreads.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod crd;
pub mod dataset;
pub mod labels;
pub mod model_deployment;
pub mod reference;
pub mod training_job;

pub use common::{ObjectSource, RetainPolicy, Tags};
pub use dataset::{
    Dataset, DatasetCommitStatus, DatasetSpec, DatasetStatistics, DatasetStatus, DatasetType, RejectedCommit,
    SnapshotState, SnapshotStatus,
};
pub use model_deployment::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
pub use training_job::{TrainingJob, TrainingJobSpec, TrainingJobStatus};

/// API group of every MiniAutoML resource.
pub const GROUP: &str = "miniautoml.io";
/// API version of every MiniAutoML resource.
pub const VERSION: &str = "v1alpha1";
