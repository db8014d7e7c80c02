//! Writes what is generated from the API types: the CustomResourceDefinition YAML into `crds/`
//! (or each directory given) and, annotated to be kept on uninstall, into the Helm chart
//! (`charts/miniautoml/files/crds`), and `docs/api.md`. Run from the repository root through
//! `make generate`.

use std::{fs, path::PathBuf};

use anyhow::Context;

fn write_all(dir: &PathBuf, manifests: &[(String, String)]) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, yaml) in manifests {
        let path = dir.join(name);
        fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let chart = dirs.is_empty();
    if chart {
        dirs = vec!["crds".into()];
    }
    let manifests = miniautoml_api::crd::manifests().context("serializing the CRDs")?;
    for dir in &dirs {
        write_all(dir, &manifests)?;
    }
    if chart {
        let manifests = miniautoml_api::crd::chart_manifests().context("serializing the chart's CRDs")?;
        write_all(&miniautoml_api::crd::CHART_CRDS_PATH.into(), &manifests)?;
    }
    let reference = miniautoml_api::crd::REFERENCE_PATH;
    fs::write(reference, miniautoml_api::crd::reference()).with_context(|| format!("writing {reference}"))?;
    println!("wrote {reference}");
    Ok(())
}
