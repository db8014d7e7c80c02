//! The gRPC API of the original MiniAutoML, kept wire- and name-compatible so existing clients (and
//! grpcurl requests) keep working: the `.proto` files under `proto/` and the Rust code that tonic and
//! prost generate from them, servers and clients both.
//!
//! The code under `src/generated/` is checked in; `make generate` (the `protogen` binary, feature
//! `codegen`) rewrites it and CI fails when it drifts from the `.proto` files.

// Generated code: formatted by prettyplease, not rustfmt (rustfmt does not follow `include!`), and not
// held to the workspace's lints.
#[allow(clippy::all, clippy::pedantic)]
pub mod data_management {
    //! `data_management.DataManagementService`: datasets, commits and training snapshots.
    include!("generated/data_management.rs");
}

#[allow(clippy::all, clippy::pedantic)]
pub mod training {
    //! `training.TrainingService`: training jobs.
    include!("generated/training.rs");
}

#[allow(clippy::all, clippy::pedantic)]
pub mod metadata_store {
    //! `metadata_store.MetadataStoreService`: training runs, epochs and model artifacts.
    include!("generated/metadata_store.rs");
}

#[allow(clippy::all, clippy::pedantic)]
pub mod prediction {
    //! `prediction.PredictionService` (the front end) and `prediction.Predictor` (a model server).
    include!("generated/prediction.rs");
}

pub mod codec;
#[cfg(feature = "codegen")]
pub mod codegen;
pub mod shutdown;

/// The encoded `FileDescriptorSet` of the four API files and their imports, for gRPC reflection
/// (`tonic_reflection::server::Builder::register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/descriptor.bin");
