//! Compiles the `.proto` files with protox (a protobuf compiler in Rust, so no `protoc` is needed) and
//! writes the tonic/prost code and the encoded descriptor set.
//!
//! The `protogen` binary links the library, which `include!`s the generated files: should they ever be
//! deleted, create them empty (`touch`) before regenerating.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use prost::Message;

/// The API's `.proto` files, relative to [`proto_dir`], in the order they are compiled.
pub const PROTO_FILES: [&str; 4] = [
    "data_management.proto",
    "training.proto",
    "metadata_store.proto",
    "prediction.proto",
];

/// Name of the encoded `FileDescriptorSet` written beside the Rust code.
pub const DESCRIPTOR_FILE: &str = "descriptor.bin";

/// Errors of code generation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `.proto` file failed to parse or to type-check.
    #[error("compiling the .proto files: {0}")]
    Compile(#[from] protox::Error),
    /// Writing the generated files failed.
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Result of code generation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// This crate's directory: where cargo runs it from (`cargo run`, `cargo test` set
/// CARGO_MANIFEST_DIR), else where it was built. A binary built in another checkout sharing the
/// target directory (CI's clean clone) would otherwise read and write that checkout's files.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The directory holding the `.proto` files.
pub fn proto_dir() -> PathBuf {
    crate_dir().join("proto")
}

/// The directory the generated files are checked in to.
pub fn generated_dir() -> PathBuf {
    crate_dir().join("src/generated")
}

/// Compiles [`PROTO_FILES`] and their imports into a descriptor set, with source info so that the
/// generated code and reflection clients get the comments.
pub fn compile() -> Result<prost_types::FileDescriptorSet> {
    let mut compiler = protox::Compiler::new([proto_dir()])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTO_FILES)?;
    Ok(compiler.file_descriptor_set())
}

/// Writes one Rust file per package (server and client code) and [`DESCRIPTOR_FILE`] into `out_dir`,
/// creating it if needed. Maps become `BTreeMap`s so that encoding and `Debug` output are in key order.
pub fn generate(out_dir: &Path) -> Result<()> {
    let fds = compile()?;
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    fs::create_dir_all(out_dir).map_err(write_error(out_dir))?;
    let descriptor = out_dir.join(DESCRIPTOR_FILE);
    fs::write(&descriptor, fds.encode_to_vec()).map_err(write_error(&descriptor))?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .btree_map(".")
        // A malformed request is INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::ProtoCodec")
        .out_dir(out_dir)
        .compile_fds(fds)
        .map_err(write_error(out_dir))
}
