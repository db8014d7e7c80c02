//! The process node's errors.

use std::path::PathBuf;

/// What can go wrong running the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The image mapping file is malformed.
    #[error("image mapping {0}: {1}")]
    Mapping(PathBuf, String),
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The pod watch ended with an error.
    #[error("watching pods: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
