//! Hyperparameters: the original's `LR`, `EPOCHS`, `BATCH_SIZE`, `FC_SIZE`, plus our extras. They
//! arrive as environment variables (the training-image contract) or `--param NAME=VALUE` on the
//! command line, and are recorded, defaults included, in the model's manifest.

use std::collections::BTreeMap;

use miniautoml_intent_model::Architecture;

use crate::{Error, Result};

/// Every hyperparameter the trainer reads, with what it means (for `--help` and the docs).
pub const HYPERPARAMETERS: &[(&str, &str)] = &[
    (
        "ARCHITECTURE",
        "ngram-nb (default) or embedding-bag (the original network)",
    ),
    (
        "EPOCHS",
        "passes over the training data (ngram-nb 6, embedding-bag 20)",
    ),
    (
        "LR",
        "learning rate on the original's SGD scale (5); ngram-nb's AdamW steps LR/1000",
    ),
    ("BATCH_SIZE", "examples per step (ngram-nb 128, embedding-bag 64)"),
    (
        "FC_SIZE",
        "embedding-bag: width of the hidden linear layers (128); ngram-nb has none",
    ),
    ("EMBEDDING_DIM", "embedding-bag: embedding width (64)"),
    (
        "CLIP_NORM",
        "the gradients' global norm is clipped to this (ngram-nb 1, embedding-bag 0.1)",
    ),
    ("WEIGHT_DECAY", "ngram-nb: AdamW decoupled weight decay (1)"),
    ("NB_ALPHA", "ngram-nb: smoothing of the naive-Bayes ratios (1)"),
    (
        "MIN_DF",
        "keep terms found in at least this many training texts (ngram-nb 2, embedding-bag 1)",
    ),
    (
        "LOSS",
        "squared-hinge (ngram-nb default: one-vs-rest, as LinearSVC) or cross-entropy (embedding-bag default)",
    ),
    (
        "CLASS_WEIGHT",
        "balanced (ngram-nb default: classes weigh inversely to their size) or none",
    ),
    ("SEED", "seeds the split, initialisation and shuffling (42)"),
    (
        "VALIDATION_FRACTION",
        "share of examples scored after every epoch (0.1)",
    ),
    (
        "TEST_FRACTION",
        "share of examples held out and scored at the end (0.1)",
    ),
];

/// `LR` when none is given: the original's default.
pub const DEFAULT_LR: f64 = 5.0;

/// ngram-nb's AdamW rate per unit of `LR` (`LR` 5 → 0.005).
pub const ADAMW_LR_SCALE: f64 = 0.001;

/// What training minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// `Σ_c max(0, 1 − y_c · logit_c)²` with `y_c` +1 for the text's class and −1 for every
    /// other: one-vs-rest, as LinearSVC's default loss.
    SquaredHinge,
    /// Softmax cross-entropy.
    CrossEntropy,
}

impl Loss {
    /// The name used in hyperparameters and the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Loss::SquaredHinge => "squared-hinge",
            Loss::CrossEntropy => "cross-entropy",
        }
    }
}

/// The parsed hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Hyperparameters {
    /// `ARCHITECTURE`.
    pub architecture: Architecture,
    /// `EPOCHS`.
    pub epochs: usize,
    /// `LR`, on the original's SGD scale (see [`Hyperparameters::optimizer_lr`]).
    pub lr: f64,
    /// `BATCH_SIZE`.
    pub batch_size: usize,
    /// `FC_SIZE`.
    pub fc_size: usize,
    /// `EMBEDDING_DIM`.
    pub embedding_dim: usize,
    /// `CLIP_NORM`.
    pub clip_norm: f64,
    /// `WEIGHT_DECAY`.
    pub weight_decay: f64,
    /// `NB_ALPHA`.
    pub nb_alpha: f64,
    /// `MIN_DF`.
    pub min_df: usize,
    /// `LOSS`.
    pub loss: Loss,
    /// `CLASS_WEIGHT` is `balanced`.
    pub balanced: bool,
    /// `SEED`.
    pub seed: u64,
    /// `VALIDATION_FRACTION`.
    pub validation_fraction: f64,
    /// `TEST_FRACTION`.
    pub test_fraction: f64,
}

impl Hyperparameters {
    /// Reads the hyperparameters through `get` (an environment lookup or `--param`s); a
    /// malformed value is an error naming the variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Hyperparameters> {
        let value = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let architecture = match value("ARCHITECTURE") {
            None => Architecture::NgramNb,
            Some(name) => Architecture::from_name(name.trim()).ok_or_else(|| {
                Error::Contract(format!(
                    "ARCHITECTURE={name:?}: expected {} or {}",
                    Architecture::NgramNb.name(),
                    Architecture::EmbeddingBag.name()
                ))
            })?,
        };
        let original = architecture == Architecture::EmbeddingBag;
        let whole = |name: &str, default: usize, min: usize| -> Result<usize> {
            match value(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| Error::Contract(format!("{name}={v:?}: expected a whole number ≥ {min}"))),
            }
        };
        let real = |name: &str, default: f64, ok: fn(f64) -> bool, expected: &str| -> Result<f64> {
            match value(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && ok(*x))
                    .ok_or_else(|| Error::Contract(format!("{name}={v:?}: expected {expected}"))),
            }
        };
        let fraction = |name: &str| real(name, 0.1, |x| (0.0..1.0).contains(&x), "a number in [0, 1)");
        let balanced = match value("CLASS_WEIGHT").as_deref().map(str::trim) {
            None => !original,
            Some("balanced") => true,
            Some("none") => false,
            Some(other) => {
                return Err(Error::Contract(format!(
                    "CLASS_WEIGHT={other:?}: expected balanced or none"
                )));
            }
        };
        let loss = match value("LOSS").as_deref().map(str::trim) {
            None if original => Loss::CrossEntropy,
            None => Loss::SquaredHinge,
            Some("squared-hinge") => Loss::SquaredHinge,
            Some("cross-entropy") => Loss::CrossEntropy,
            Some(other) => {
                return Err(Error::Contract(format!(
                    "LOSS={other:?}: expected squared-hinge or cross-entropy"
                )));
            }
        };
        let hyperparameters = Hyperparameters {
            architecture,
            epochs: whole("EPOCHS", if original { 20 } else { 6 }, 1)?,
            lr: real("LR", DEFAULT_LR, |x| x > 0.0, "a number > 0")?,
            batch_size: whole("BATCH_SIZE", if original { 64 } else { 128 }, 1)?,
            fc_size: whole("FC_SIZE", 128, 1)?,
            embedding_dim: whole("EMBEDDING_DIM", 64, 1)?,
            clip_norm: real(
                "CLIP_NORM",
                if original { 0.1 } else { 1.0 },
                |x| x > 0.0,
                "a number > 0",
            )?,
            weight_decay: real("WEIGHT_DECAY", 1.0, |x| x >= 0.0, "a number ≥ 0")?,
            nb_alpha: real("NB_ALPHA", 1.0, |x| x > 0.0, "a number > 0")?,
            min_df: whole("MIN_DF", if original { 1 } else { 2 }, 1)?,
            loss,
            balanced,
            seed: match value("SEED") {
                None => 42,
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| Error::Contract(format!("SEED={v:?}: expected a whole number ≥ 0")))?,
            },
            validation_fraction: fraction("VALIDATION_FRACTION")?,
            test_fraction: fraction("TEST_FRACTION")?,
        };
        if architecture == Architecture::NgramNb
            && hyperparameters.optimizer_lr() * hyperparameters.weight_decay >= 1.0
        {
            return Err(Error::Contract(format!(
                "LR={}: ngram-nb needs LR × WEIGHT_DECAY below {} (its AdamW rate is LR × {ADAMW_LR_SCALE}, and a larger product flips the weights' signs every step); WEIGHT_DECAY is {}",
                hyperparameters.lr,
                1.0 / ADAMW_LR_SCALE,
                hyperparameters.weight_decay
            )));
        }
        if hyperparameters.validation_fraction + hyperparameters.test_fraction >= 1.0 {
            return Err(Error::Contract(
                "VALIDATION_FRACTION + TEST_FRACTION must be below 1 to leave examples to train on".into(),
            ));
        }
        Ok(hyperparameters)
    }

    /// The rate the architecture's optimizer is given. `LR` is on the original network's SGD
    /// scale for every architecture (its lab trains with `LR` 4 and 50), so the same request
    /// means the same thing whichever architecture runs it: SGD steps `LR` itself, ngram-nb's
    /// AdamW `LR` / 1000 (AdamW moves each weight by about its rate per step, SGD by rate ×
    /// gradient, and ngram-nb's weights stay within ±1/WEIGHT_DECAY).
    pub fn optimizer_lr(&self) -> f64 {
        match self.architecture {
            Architecture::NgramNb => self.lr * ADAMW_LR_SCALE,
            Architecture::EmbeddingBag => self.lr,
        }
    }

    /// The seeded split of `n` examples these hyperparameters ask for.
    pub fn split(&self, n: usize) -> Result<crate::data::Split> {
        crate::data::Split::new(n, self.seed, self.validation_fraction, self.test_fraction)
    }

    /// Every value, by variable name, as recorded in the manifest.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let mut put = |name: &str, value: String| {
            map.insert(name.to_string(), value);
        };
        put("ARCHITECTURE", self.architecture.name().into());
        put("EPOCHS", self.epochs.to_string());
        put("LR", self.lr.to_string());
        put("BATCH_SIZE", self.batch_size.to_string());
        put("CLIP_NORM", self.clip_norm.to_string());
        put("SEED", self.seed.to_string());
        put("MIN_DF", self.min_df.to_string());
        put("LOSS", self.loss.name().into());
        put(
            "CLASS_WEIGHT",
            if self.balanced { "balanced" } else { "none" }.into(),
        );
        put("VALIDATION_FRACTION", self.validation_fraction.to_string());
        put("TEST_FRACTION", self.test_fraction.to_string());
        match self.architecture {
            Architecture::NgramNb => {
                put("WEIGHT_DECAY", self.weight_decay.to_string());
                put("NB_ALPHA", self.nb_alpha.to_string());
            }
            Architecture::EmbeddingBag => {
                put("FC_SIZE", self.fc_size.to_string());
                put("EMBEDDING_DIM", self.embedding_dim.to_string());
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Hyperparameters> {
        Hyperparameters::from_lookup(|name| {
            pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_depend_on_the_architecture() {
        let ours = parse(&[]).unwrap();
        assert_eq!(
            (ours.architecture, ours.epochs, ours.batch_size),
            (Architecture::NgramNb, 6, 128)
        );
        assert!(ours.balanced);
        assert_eq!((ours.lr, ours.optimizer_lr(), ours.clip_norm), (5.0, 0.005, 1.0));
        assert_eq!((ours.min_df, ours.loss), (2, Loss::SquaredHinge));
        let original = parse(&[("ARCHITECTURE", "embedding-bag")]).unwrap();
        assert_eq!(
            (
                original.epochs,
                original.lr,
                original.batch_size,
                original.fc_size
            ),
            (20, 5.0, 64, 128)
        );
        assert!(!original.balanced);
        assert_eq!((original.optimizer_lr(), original.clip_norm), (5.0, 0.1));
        assert_eq!(original.loss, Loss::CrossEntropy);
    }

    #[test]
    fn values_are_parsed_and_recorded() {
        let parsed = parse(&[
            ("LR", "0.5"),
            ("EPOCHS", "3"),
            ("BATCH_SIZE", "16"),
            ("SEED", "7"),
        ])
        .unwrap();
        assert_eq!(
            (parsed.lr, parsed.epochs, parsed.batch_size, parsed.seed),
            (0.5, 3, 16, 7)
        );
        let map = parsed.to_map();
        assert_eq!(map["LR"], "0.5");
        assert_eq!(map["ARCHITECTURE"], "ngram-nb");
        assert_eq!(
            parse(
                &map.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>()
            )
            .unwrap(),
            parsed
        );
    }

    #[test]
    fn a_malformed_value_names_its_variable() {
        for (name, value) in [
            ("LR", "fast"),
            ("LR", "-1"),
            ("EPOCHS", "0"),
            ("EPOCHS", "2.5"),
            ("BATCH_SIZE", "x"),
            ("FC_SIZE", "0"),
            ("ARCHITECTURE", "transformer"),
            ("CLASS_WEIGHT", "heavy"),
            ("LOSS", "hinge"),
            ("SEED", "-3"),
            ("TEST_FRACTION", "1.5"),
            ("NB_ALPHA", "0"),
            ("CLIP_NORM", "0"),
            ("LR", "inf"),
            ("LR", "1000"),
        ] {
            let error = parse(&[(name, value)]).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{name}=")), "{name}={value}: {error}");
        }
        let error = parse(&[("TEST_FRACTION", "0.6"), ("VALIDATION_FRACTION", "0.5")]).unwrap_err();
        assert!(
            error.to_string().contains("VALIDATION_FRACTION + TEST_FRACTION"),
            "{error}"
        );
    }
}
