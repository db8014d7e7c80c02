//! Regenerates the checked-in Rust code and descriptor set from the `.proto` files, into
//! `proto/src/generated/` or the directory given. Run through `make generate`.

use std::{path::PathBuf, process::ExitCode};

use miniautoml_proto::codegen;

fn main() -> ExitCode {
    let out_dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(codegen::generated_dir);
    match codegen::generate(&out_dir) {
        Ok(()) => {
            println!("wrote {}", out_dir.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("protogen: {error}");
            ExitCode::FAILURE
        }
    }
}
