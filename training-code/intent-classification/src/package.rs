//! From a trained network to verified artifacts: the files are built, loaded back through the
//! inference library's [`Classifier`] (checksums and all) and the test split is scored with that
//! classifier, so the accuracy a run reports is exactly what serving the files reproduces.

use std::collections::BTreeMap;
use std::path::Path;

use miniautoml_intent_model::{Classifier, Manifest, ModelFiles};

use crate::data::{Examples, Split};
use crate::hyperparameters::Hyperparameters;
use crate::metrics::{Scores, scores};
use crate::train::Trained;
use crate::{Error, Result};

/// The ML framework the models are built with, as recorded in manifests (kept in step with
/// Cargo.lock by a test).
pub const FRAMEWORK: &str = "candle 0.11.1";

/// This trainer's code version: `MINIAUTOML_CODE_VERSION` at build time (the image build passes
/// the git commit), else the crate version.
pub const CODE_VERSION: &str = match option_env!("MINIAUTOML_CODE_VERSION") {
    Some(version) => version,
    None => concat!("intent-classification v", env!("CARGO_PKG_VERSION")),
};

/// Where the data came from, for the manifest.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// `ALGORITHM_NAME`.
    pub algorithm: String,
    /// Free-form facts: `datasetId`, `versionHash`, `source`.
    pub data: BTreeMap<String, String>,
}

/// The packaged model and its test scores (`None` without a test split).
pub struct Packaged {
    /// The artifacts.
    pub files: ModelFiles,
    /// Scores on the test split, computed through the loaded artifacts.
    pub test: Option<Scores>,
}

/// Builds the artifacts, scores the test split through them and records the scores in the
/// manifest.
pub fn package(
    trained: &Trained,
    examples: &Examples,
    split: &Split,
    hyperparameters: &Hyperparameters,
    provenance: &Provenance,
) -> Result<Packaged> {
    let mut data = provenance.data.clone();
    data.insert("examples".into(), examples.len().to_string());
    data.insert("trainExamples".into(), split.train.len().to_string());
    data.insert("validationExamples".into(), split.validation.len().to_string());
    data.insert("testExamples".into(), split.test.len().to_string());
    if let Some(refit) = trained.refit {
        data.insert("refitExamples".into(), refit.examples.to_string());
    }
    let mut manifest = Manifest {
        format: String::new(),
        algorithm: provenance.algorithm.clone(),
        architecture: trained.network.architecture(),
        framework: FRAMEWORK.into(),
        code_version: CODE_VERSION.into(),
        hyperparameters: hyperparameters.to_map(),
        metrics: BTreeMap::new(),
        data,
        files: BTreeMap::new(),
    };
    if let Some(refit) = trained.refit {
        manifest.metrics.insert("refitEpochs".into(), refit.epochs as f64);
    }
    if let Some(last) = trained.epochs.last() {
        manifest.metrics.insert("trainLoss".into(), last.train_loss);
        if let Some((scores, loss)) = last.validation {
            manifest
                .metrics
                .insert("validationAccuracy".into(), scores.accuracy);
            manifest
                .metrics
                .insert("validationMacroF1".into(), scores.macro_f1);
            manifest.metrics.insert("validationLoss".into(), loss);
        }
    }
    let draft = ModelFiles::build(
        &trained.network,
        &trained.vocabulary,
        &examples.labels,
        manifest.clone(),
    )?;
    let test = if split.test.is_empty() {
        None
    } else {
        let classifier = Classifier::from_files(&draft)?;
        let texts: Vec<&str> = split.test.iter().map(|&i| examples.texts[i].as_str()).collect();
        let truth: Vec<usize> = split.test.iter().map(|&i| examples.classes[i]).collect();
        Some(score(&classifier, &texts, &truth)?)
    };
    if let Some(test) = test {
        manifest.metrics.insert("testAccuracy".into(), test.accuracy);
        manifest.metrics.insert("testMacroF1".into(), test.macro_f1);
    }
    let files = ModelFiles::build(&trained.network, &trained.vocabulary, &examples.labels, manifest)?;
    Ok(Packaged { files, test })
}

/// Classifies `texts` and scores the result against `truth`.
pub fn score(classifier: &Classifier, texts: &[&str], truth: &[usize]) -> Result<Scores> {
    let predicted: Vec<usize> = classifier.classify(texts)?.iter().map(|p| p.class).collect();
    Ok(scores(truth, &predicted))
}

/// Scores a model on a raw TextIntent CSV file (text, label names; the first label counts),
/// read as ingestion reads it (`miniautoml_data::text_intent::rows`).
pub fn evaluate_file(classifier: &Classifier, path: &Path) -> Result<(Scores, usize)> {
    let file = std::fs::File::open(path).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    let rows = miniautoml_data::text_intent::rows(std::io::BufReader::new(file))
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    let (mut texts, mut truth) = (Vec::new(), Vec::new());
    for (line, text, labels) in &rows {
        let label = labels.first().map(String::as_str).unwrap_or_default();
        let class = classifier
            .labels()
            .iter()
            .position(|l| l == label)
            .ok_or_else(|| {
                Error::Data(format!(
                    "{} line {line}: label {label:?} is not one the model knows ({})",
                    path.display(),
                    classifier.labels().join(", ")
                ))
            })?;
        texts.push(text.as_str());
        truth.push(class);
    }
    if texts.is_empty() {
        return Err(Error::Data(format!("{} has no rows", path.display())));
    }
    Ok((score(classifier, &texts, &truth)?, texts.len()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_recorded_framework_version_is_the_one_built() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
        let version = super::FRAMEWORK.strip_prefix("candle ").unwrap();
        assert!(
            lock.contains(&format!("name = \"candle-core\"\nversion = \"{version}\"")),
            "Cargo.lock has another candle-core than {version}"
        );
    }
}
