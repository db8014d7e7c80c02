//! The intent-classification trainer: the original MiniAutoML training-image contract (its
//! environment variables, `metadata_store.MetadataStoreService` calls and model upload) around a
//! candle model from `miniautoml-intent-model`, plus the local `train`/`eval` commands.

pub mod cli;
pub mod contract;
pub mod data;
pub mod host_step;
pub mod hyperparameters;
pub mod job;
pub mod metrics;
pub mod package;
pub mod sparse;
pub mod train;

/// Why a training run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A missing or malformed environment variable or parameter; the message names it.
    #[error("{0}")]
    Contract(String),
    /// Unusable training or evaluation data.
    #[error("{0}")]
    Data(String),
    /// The model could not be built, saved or loaded.
    #[error("{0}")]
    Model(#[from] miniautoml_intent_model::Error),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Object storage failed.
    #[error("{0}")]
    Storage(String),
    /// The metadata store refused or failed a call.
    #[error("{0}")]
    Metadata(String),
    /// The loss stopped being a finite number: the learning rate is too high for the data.
    #[error("diverged at epoch {epoch}: loss is not finite; lower LR")]
    Diverged {
        /// 1-based.
        epoch: usize,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
