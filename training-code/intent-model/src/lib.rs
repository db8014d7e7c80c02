//! The intent-classification model, shared by the trainer (`training-code/intent-classification`)
//! and the predictor: the text features (one tokenisation for both), the networks' forward pass,
//! and the model artifacts with their checksummed manifest.
//!
//! A [`Classifier`] is what serving needs: [`Classifier::from_files`] verifies every artifact
//! against `manifest.json` before anything is used, and [`Classifier::classify`] labels a batch of
//! texts.

pub mod artifacts;
pub mod features;
pub mod network;

pub use artifacts::{
    ARTIFACT_FILES, Classifier, FileDigest, LABELS_FILE, MANIFEST_FILE, MODEL_FILE, Manifest, ModelFiles,
    Prediction, VOCABULARY_FILE, sha256_hex,
};
pub use features::{FitOptions, SparseBatch, Tokenizer, Vocabulary, Weighting};
pub use network::{Architecture, Network};

/// Why a model could not be built, loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Artifacts or inputs that do not make a model.
    #[error("{0}")]
    Invalid(String),
    /// An artifact the manifest requires is absent.
    #[error("artifact {0} is missing")]
    Missing(String),
    /// An artifact does not match the checksum in the manifest.
    #[error("artifact {file} is corrupt: sha256 {actual}, the manifest says {expected}")]
    Checksum {
        /// The file.
        file: String,
        /// sha256 in the manifest.
        expected: String,
        /// sha256 of the bytes.
        actual: String,
    },
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Reading or writing files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
