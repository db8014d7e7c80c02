//! The checked-in generated files are what the generator makes from the `.proto` files now.
#![cfg(feature = "codegen")]

use std::{collections::BTreeSet, fs, path::Path};

use miniautoml_proto::codegen;

fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn generated_files_match_the_proto_files() {
    let fresh = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("proto-drift-{}", std::process::id()));
    let _ = fs::remove_dir_all(&fresh);
    codegen::generate(&fresh).expect("generating");

    let checked_in = codegen::generated_dir();
    assert_eq!(
        file_names(&checked_in),
        file_names(&fresh),
        "generated file set differs; run `make generate`"
    );
    for name in file_names(&fresh) {
        let want = fs::read(fresh.join(&name)).expect("reading a fresh file");
        let have = fs::read(checked_in.join(&name)).expect("reading a checked-in file");
        assert!(
            have == want,
            "proto/src/generated/{name} is stale; run `make generate`"
        );
    }
    fs::remove_dir_all(&fresh).expect("removing the temporary directory");
}

#[test]
fn generation_is_deterministic() {
    let first = codegen::compile().expect("compiling");
    let second = codegen::compile().expect("compiling");
    assert_eq!(first, second);
}
