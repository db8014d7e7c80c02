//! Datasets in object storage (docs/datasets.md): commits ingested from a source by
//! streaming (memory bounded by a few upload parts, not by the file), their statistics, the
//! original's snapshot selection and version hashes, and merged training snapshots. Used by the
//! Dataset controller, the DataManagementService and the TrainingJob controller.
//!
//! - [`text_intent`]: the TextIntent format, parsing and label numbering (pure, synchronous);
//! - [`version`]: snapshot selection and version hashes (pure);
//! - [`layout`]: object keys;
//! - [`store`]: the bucket, streaming reads and multipart writes;
//! - [`ingest`]: commits and snapshots, end to end;
//! - [`keys`]: scoped keys for runs and predictors, through the store's IAM API;
//! - [`models`]: a trained model's folder fetched onto local disk and verified (custom predictors).

pub mod ingest;
pub mod keys;
pub mod layout;
pub mod models;
pub mod sessions;
pub mod store;
pub mod text_intent;
pub mod version;

pub use ingest::{IngestError, Written, build_snapshot, ingest_commit};
pub use keys::{Grants, KeyError, KeyIssuer, StoreKey};
pub use sessions::{SessionIssuer, SessionKey};
pub use store::{StorageError, Store};
pub use version::{SnapshotSelector, version_hash};
