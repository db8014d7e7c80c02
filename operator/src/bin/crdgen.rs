//! Writes what is generated from the API types: the CustomResourceDefinition YAML into each
//! directory given (by default `crds/` and the Helm chart's `crds/`), and `docs/api.md`.
//! Run from the repository root through `make generate`.

use std::{fs, path::PathBuf};

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        dirs = vec!["crds".into(), "charts/miniautoml/crds".into()];
    }
    let manifests = miniautoml_api::crd::manifests().context("serializing the CRDs")?;
    for dir in &dirs {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, yaml) in &manifests {
            let path = dir.join(name);
            fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    let reference = miniautoml_api::crd::REFERENCE_PATH;
    fs::write(reference, miniautoml_api::crd::reference()).with_context(|| format!("writing {reference}"))?;
    println!("wrote {reference}");
    Ok(())
}
