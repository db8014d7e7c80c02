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

impl Error {
    /// Short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
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
