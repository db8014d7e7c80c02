//! The predictor's error type.

/// What can stop the predictor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or variable is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The model could not be fetched, verified or loaded.
    #[error("model: {0}")]
    Model(String),
    /// A listener could not be opened or failed.
    #[error("{server} server on {addr}: {source}")]
    Serve {
        /// `gRPC` or `HTTP`.
        server: &'static str,
        /// Its address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Result with the predictor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
