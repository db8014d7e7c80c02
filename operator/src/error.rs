//! The operator's error type.

/// Everything that can go wrong in the operator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// Building a client from kubeconfig or the in-cluster environment failed.
    #[error("no usable Kubernetes configuration (set KUBECONFIG, or run in a cluster): {0}")]
    KubeConfig(String),

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

    /// Adding, running or removing a finalizer failed.
    #[error("{0}")]
    Finalizer(String),

    /// Allocating a numeric id kept losing compare-and-swap races.
    #[error("allocating an id from ConfigMap {0} kept conflicting")]
    IdConflict(String),

    /// Allocating a numeric id failed (the message says why).
    #[error("allocating an id: {0}")]
    IdAllocation(String),

    /// Object storage failed in a way worth retrying.
    #[error("object storage: {0}")]
    Storage(String),

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

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::KubeConfig(_) => "kubeconfig",
            Error::Unreachable { .. } => "unreachable",
            Error::CrdsMissing(_) => "crds_missing",
            Error::Bind { .. } => "bind",
            Error::Serve { .. } => "serve",
            Error::Grpc(_) => "grpc",
            Error::Reflection(_) => "reflection",
            Error::LeaderElection(_) => "leader_election",
            Error::MissingField { .. } => "missing_field",
            Error::Finalizer(_) => "finalizer",
            Error::Storage(_) => "storage",
            Error::IdConflict(_) => "id_conflict",
            Error::IdAllocation(_) => "id_allocation",
        }
    }
}
