//! The binary's commands, printing progress for a person (or a pod log).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use miniautoml_intent_model::Classifier;

use crate::data::Examples;
use crate::hyperparameters::Hyperparameters;
use crate::package::{Provenance, evaluate_file, package};
use crate::train::{describe_epoch, describe_refit, train as train_model, training_device};
use crate::{Error, Result};

/// `train --data … --out DIR --param NAME=VALUE…`.
pub fn train(data: &[PathBuf], out: &Path, params: &[String]) -> Result<()> {
    let mut values = BTreeMap::new();
    for param in params {
        let (name, value) = param
            .split_once('=')
            .ok_or_else(|| Error::Contract(format!("--param {param:?}: expected NAME=VALUE")))?;
        values.insert(name.trim().to_string(), value.to_string());
    }
    let hyperparameters = Hyperparameters::from_lookup(|name| values.get(name).cloned())?;
    let examples = Examples::read(data)?;
    let split = hyperparameters.split(examples.len())?;
    let device = training_device()?;
    println!(
        "training {} on {} examples ({} train, {} validation, {} test), {} labels, on {device:?}",
        hyperparameters.architecture.name(),
        examples.len(),
        split.train.len(),
        split.validation.len(),
        split.test.len(),
        examples.labels.len()
    );
    let clock = Instant::now();
    let trained = train_model(&examples, &split, &hyperparameters, &device, |report| {
        println!("{}", describe_epoch(report));
        Ok(())
    })?;
    let seconds = clock.elapsed().as_secs_f64();
    if let Some(refit) = trained.refit {
        println!("{}", describe_refit(&refit));
    }
    let provenance = Provenance {
        algorithm: "intent-classification".into(),
        data: BTreeMap::from([(
            "source".to_string(),
            data.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        )]),
    };
    let packaged = package(&trained, &examples, &split, &hyperparameters, &provenance)?;
    packaged.files.write_dir(out)?;
    println!(
        "trained in {seconds:.3} s ({:.0} examples/s), {} features",
        (split.train.len() * hyperparameters.epochs + trained.refit.map_or(0, |r| r.examples * r.epochs))
            as f64
            / seconds,
        trained.vocabulary.len()
    );
    if let Some(test) = packaged.test {
        println!("test accuracy {:.3} macro-F1 {:.3}", test.accuracy, test.macro_f1);
    }
    println!("model written to {}", out.display());
    Ok(())
}

/// `eval --model DIR --data FILE`.
pub fn eval(model: &Path, data: &Path) -> Result<()> {
    let classifier =
        Classifier::load_dir(model).map_err(|e| Error::Data(format!("model {}: {e}", model.display())))?;
    let (scores, rows) = evaluate_file(&classifier, data)?;
    println!("examples {rows}");
    println!("accuracy {:.4}", scores.accuracy);
    println!("macro-F1 {:.4}", scores.macro_f1);
    Ok(())
}
