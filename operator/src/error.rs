//! The operator's two error types: [`StartupError`] stops the process (it cannot start, or a
//! server it runs failed); [`Error`] fails one reconcile or one call, which is retried.

use std::sync::Arc;

use miniautoml_data::StorageError;

/// Why the operator cannot start or keep serving; the process exits with it.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// No kubeconfig or in-cluster environment was found.
    #[error("no usable Kubernetes configuration (set KUBECONFIG, or run in a cluster): {0}")]
    KubeConfig(#[source] kube::config::InferConfigError),

    /// The configuration found cannot build a client.
    #[error("the Kubernetes configuration cannot build a client: {0}")]
    KubeClient(#[source] kube::Error),

    /// The Kubernetes API server did not answer.
    #[error(
        "cannot reach the Kubernetes API server at {url}: {source}. Is the cluster running (`make cluster-up` for the local one)?"
    )]
    Unreachable {
        /// The API server's address from the configuration.
        url: String,
        /// What failed.
        source: kube::Error,
    },

    /// Custom resource definitions this operator needs are not installed.
    #[error(
        "CustomResourceDefinition(s) not installed: {}. Install them with `kubectl apply -f crds/` \
         (or `helm install miniautoml charts/miniautoml`), then start the operator again",
        .0.join(", ")
    )]
    CrdsMissing(Vec<String>),

    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),

    /// Settings that cannot work together (said before anything starts).
    #[error("configuration: {0}")]
    Config(String),

    /// A server could not listen on its address.
    #[error("{server} server cannot listen on {addr}: {source}")]
    Bind {
        /// Which server.
        server: &'static str,
        /// Where it tried to listen.
        addr: std::net::SocketAddr,
        /// What failed.
        source: std::io::Error,
    },

    /// A server failed while serving.
    #[error("{server} server: {source}")]
    Serve {
        /// Which server.
        server: &'static str,
        /// What failed.
        source: std::io::Error,
    },

    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),

    /// The gRPC reflection service could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),

    /// Joining the leader election failed (the Lease could not be read or created).
    #[error("leader election: {0}")]
    LeaderElection(#[from] kube_lease_manager::LeaseManagerError),
}

/// What fails one reconcile or one gRPC call; the controller retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stage of a reconcile failed: which one, with its cause (the drivers wrap every stage
    /// call, so a log line and the failure metric say where a reconcile stopped).
    #[error("{stage}: {source}")]
    Stage {
        /// The stage.
        stage: Stage,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },

    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// Adding or removing a finalizer failed.
    #[error("{action} finalizer: {source}")]
    Finalizer {
        /// `adding` or `removing`.
        action: &'static str,
        /// What failed.
        source: kube::Error,
    },

    /// kube refused a finalizer name as a JSON patch path (the names are constants, so a bug).
    #[error("invalid finalizer name")]
    InvalidFinalizer,

    /// Allocating a numeric id kept losing compare-and-swap races.
    #[error("allocating an id from ConfigMap {0} kept conflicting")]
    IdConflict(String),

    /// Allocating a batch of ids failed; every caller waiting on the batch gets the cause.
    #[error("allocating an id: {0}")]
    IdAllocation(#[source] Arc<Error>),

    /// Object storage failed.
    #[error("object storage: {0}")]
    Storage(#[from] StorageError),

    /// A pod's storage key could not be issued or revoked.
    #[error("{0}")]
    StorageKey(#[from] miniautoml_data::KeyError),

    /// An object from the API server lacks a field every such object has.
    #[error("{kind} {name} has no {field}")]
    MissingField {
        /// Kind of the object.
        kind: &'static str,
        /// Name of the object.
        name: String,
        /// The missing field.
        field: &'static str,
    },
}

/// Result with the reconcile [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The stages of a reconcile, as the drivers run them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Giving the object its numeric id (`Ids::assign`).
    Id,
    /// Reading what the reconcile needs: children, referenced objects, the queue.
    Dereference,
    /// Writing children and storage: launching, stopping, ingesting, keys.
    Apply,
    /// Writing the status.
    Status,
    /// Cleaning up under the finalizer.
    Cleanup,
}

impl Stage {
    /// Its label on `miniautoml_operator_reconcile_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Id => "id",
            Stage::Dereference => "dereference",
            Stage::Apply => "apply",
            Stage::Status => "status",
            Stage::Cleanup => "cleanup",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Id => "assigning the id",
            Stage::Dereference => "reading",
            Stage::Apply => "applying",
            Stage::Status => "writing the status",
            Stage::Cleanup => "cleaning up",
        })
    }
}

/// Wraps a stage's error with its stage: `stage_call().await.map_err(at(Stage::Apply))?`.
pub fn at<E: Into<Error>>(stage: Stage) -> impl FnOnce(E) -> Error {
    move |error| Error::Stage {
        stage,
        source: Box::new(error.into()),
    }
}

impl Error {
    /// The stage it happened in (`None` outside the drivers' stage calls: a finalizer patch).
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Error::Stage { stage, .. } => Some(*stage),
            _ => None,
        }
    }

    /// The cause under any stage wrapper.
    pub fn root(&self) -> &Error {
        match self {
            Error::Stage { source, .. } => source.root(),
            other => other,
        }
    }

    /// Short, stable label of its cause for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Stage { source, .. } => source.metric_label(),
            Error::Kube(_) => "kube",
            Error::Finalizer { .. } | Error::InvalidFinalizer => "finalizer",
            Error::IdConflict(_) => "id_conflict",
            Error::IdAllocation(_) => "id_allocation",
            Error::Storage(_) => "storage",
            Error::StorageKey(_) => "storage_key",
            Error::MissingField { .. } => "missing_field",
        }
    }

    /// The error of a reconcile run under `kube::runtime::finalizer`: the reconcile's own error,
    /// or the finalizer patch that failed.
    pub fn from_finalizer(error: kube::runtime::finalizer::Error<Error>) -> Error {
        use kube::runtime::finalizer::Error as Finalizer;
        match error {
            Finalizer::ApplyFailed(error) | Finalizer::CleanupFailed(error) => error,
            Finalizer::AddFinalizer(source) => Error::Finalizer {
                action: "adding",
                source,
            },
            Finalizer::RemoveFinalizer(source) => Error::Finalizer {
                action: "removing",
                source,
            },
            Finalizer::UnnamedObject => Error::MissingField {
                kind: "object",
                name: String::new(),
                field: "metadata.name",
            },
            Finalizer::InvalidFinalizer => Error::InvalidFinalizer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_wraps_its_cause_for_logs_and_metrics() {
        let cause = Error::IdConflict("miniautoml-run-ids".into());
        let error = at(Stage::Apply)(cause);
        assert_eq!(error.stage(), Some(Stage::Apply));
        assert_eq!(error.metric_label(), "id_conflict");
        assert!(matches!(error.root(), Error::IdConflict(_)));
        assert_eq!(
            error.to_string(),
            "applying: allocating an id from ConfigMap miniautoml-run-ids kept conflicting"
        );
        let bare = Error::InvalidFinalizer;
        assert_eq!((bare.stage(), bare.metric_label()), (None, "finalizer"));
        for stage in [
            Stage::Id,
            Stage::Dereference,
            Stage::Apply,
            Stage::Status,
            Stage::Cleanup,
        ] {
            assert!(!stage.label().is_empty() && !stage.to_string().is_empty());
        }
    }
}
