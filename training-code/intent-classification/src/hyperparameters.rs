//! Hyperparameters: the original's `LR`, `EPOCHS`, `BATCH_SIZE`, `FC_SIZE`, plus our extras. They
//! arrive as environment variables (the training-image contract) or `--param NAME=VALUE` on the
//! command line, and are recorded, defaults included, in the model's manifest.

use std::collections::BTreeMap;

use miniautoml_intent_model::Architecture;

use crate::{Error, Result};

/// One hyperparameter: its variable, what it means, which architecture uses it, how it is read
/// into [`Hyperparameters`] (its default when unset or blank, which may depend on the
/// architecture, read first) and how it is recorded in the manifest. [`HYPERPARAMETERS`] is the
/// one list `--help`, the reading, the manifest and the docs' check all go through.
pub struct Param {
    /// The environment variable (or `--param` name).
    pub name: &'static str,
    /// What it means (for `--help`).
    pub help: &'static str,
    /// The architecture that uses it (the manifest records it only for that one); `None`: all.
    pub only: Option<Architecture>,
    read: fn(&mut Hyperparameters, Option<&str>) -> Result<()>,
    show: fn(&Hyperparameters) -> String,
}

/// Every hyperparameter the trainer reads, `ARCHITECTURE` first (other defaults depend on it).
pub const HYPERPARAMETERS: &[Param] = &[
    Param {
        name: "ARCHITECTURE",
        help: "ngram-nb (default) or embedding-bag (the original network)",
        only: None,
        read: |h, v| {
            h.architecture = match v {
                None => Architecture::NgramNb,
                Some(name) => Architecture::from_name(name).ok_or_else(|| {
                    Error::Contract(format!(
                        "ARCHITECTURE={name:?}: expected {} or {}",
                        Architecture::NgramNb.name(),
                        Architecture::EmbeddingBag.name()
                    ))
                })?,
            };
            Ok(())
        },
        show: |h| h.architecture.name().into(),
    },
    Param {
        name: "EPOCHS",
        help: "passes over the training data (ngram-nb 6, embedding-bag 20)",
        only: None,
        read: |h, v| {
            h.epochs = whole("EPOCHS", v, if h.original() { 20 } else { 6 }, 1)?;
            Ok(())
        },
        show: |h| h.epochs.to_string(),
    },
    Param {
        name: "LR",
        help: "learning rate on the original's SGD scale (5); ngram-nb's AdamW steps LR/1000",
        only: None,
        read: |h, v| {
            h.lr = real("LR", v, DEFAULT_LR, |x| x > 0.0, "a number > 0")?;
            Ok(())
        },
        show: |h| h.lr.to_string(),
    },
    Param {
        name: "BATCH_SIZE",
        help: "examples per step (ngram-nb 128, embedding-bag 64)",
        only: None,
        read: |h, v| {
            h.batch_size = whole("BATCH_SIZE", v, if h.original() { 64 } else { 128 }, 1)?;
            Ok(())
        },
        show: |h| h.batch_size.to_string(),
    },
    Param {
        name: "FC_SIZE",
        help: "embedding-bag: width of the hidden linear layers (128); ngram-nb has none",
        only: Some(Architecture::EmbeddingBag),
        read: |h, v| {
            h.fc_size = whole("FC_SIZE", v, 128, 1)?;
            Ok(())
        },
        show: |h| h.fc_size.to_string(),
    },
    Param {
        name: "EMBEDDING_DIM",
        help: "embedding-bag: embedding width (64)",
        only: Some(Architecture::EmbeddingBag),
        read: |h, v| {
            h.embedding_dim = whole("EMBEDDING_DIM", v, 64, 1)?;
            Ok(())
        },
        show: |h| h.embedding_dim.to_string(),
    },
    Param {
        name: "CLIP_NORM",
        help: "the gradients' global norm is clipped to this (ngram-nb 1, embedding-bag 0.1)",
        only: None,
        read: |h, v| {
            let default = if h.original() { 0.1 } else { 1.0 };
            h.clip_norm = real("CLIP_NORM", v, default, |x| x > 0.0, "a number > 0")?;
            Ok(())
        },
        show: |h| h.clip_norm.to_string(),
    },
    Param {
        name: "WEIGHT_DECAY",
        help: "ngram-nb: AdamW decoupled weight decay (1)",
        only: Some(Architecture::NgramNb),
        read: |h, v| {
            h.weight_decay = real("WEIGHT_DECAY", v, 1.0, |x| x >= 0.0, "a number ≥ 0")?;
            Ok(())
        },
        show: |h| h.weight_decay.to_string(),
    },
    Param {
        name: "NB_ALPHA",
        help: "ngram-nb: smoothing of the naive-Bayes ratios (1)",
        only: Some(Architecture::NgramNb),
        read: |h, v| {
            h.nb_alpha = real("NB_ALPHA", v, 1.0, |x| x > 0.0, "a number > 0")?;
            Ok(())
        },
        show: |h| h.nb_alpha.to_string(),
    },
    Param {
        name: "MIN_DF",
        help: "keep terms found in at least this many training texts (ngram-nb 2, embedding-bag 1)",
        only: None,
        read: |h, v| {
            h.min_df = whole("MIN_DF", v, if h.original() { 1 } else { 2 }, 1)?;
            Ok(())
        },
        show: |h| h.min_df.to_string(),
    },
    Param {
        name: "LOSS",
        help: "squared-hinge (ngram-nb default: one-vs-rest, as LinearSVC) or cross-entropy (embedding-bag default)",
        only: None,
        read: |h, v| {
            h.loss = match v {
                None if h.original() => Loss::CrossEntropy,
                None => Loss::SquaredHinge,
                Some("squared-hinge") => Loss::SquaredHinge,
                Some("cross-entropy") => Loss::CrossEntropy,
                Some(other) => {
                    return Err(Error::Contract(format!(
                        "LOSS={other:?}: expected squared-hinge or cross-entropy"
                    )));
                }
            };
            Ok(())
        },
        show: |h| h.loss.name().into(),
    },
    Param {
        name: "CLASS_WEIGHT",
        help: "balanced (ngram-nb default: classes weigh inversely to their size) or none",
        only: None,
        read: |h, v| {
            h.balanced = two_ways("CLASS_WEIGHT", v, !h.original(), ["balanced", "none"])?;
            Ok(())
        },
        show: |h| if h.balanced { "balanced" } else { "none" }.into(),
    },
    Param {
        name: "SEED",
        help: "seeds the split, initialisation and shuffling (42)",
        only: None,
        read: |h, v| {
            h.seed = match v {
                None => 42,
                Some(v) => v
                    .parse()
                    .map_err(|_| Error::Contract(format!("SEED={v:?}: expected a whole number ≥ 0")))?,
            };
            Ok(())
        },
        show: |h| h.seed.to_string(),
    },
    Param {
        name: "VALIDATION_FRACTION",
        help: "share of examples scored after every epoch (0.1)",
        only: None,
        read: |h, v| {
            h.validation_fraction = fraction("VALIDATION_FRACTION", v)?;
            Ok(())
        },
        show: |h| h.validation_fraction.to_string(),
    },
    Param {
        name: "TEST_FRACTION",
        help: "share of examples held out and scored at the end (0.1)",
        only: None,
        read: |h, v| {
            h.test_fraction = fraction("TEST_FRACTION", v)?;
            Ok(())
        },
        show: |h| h.test_fraction.to_string(),
    },
    Param {
        name: "REFIT",
        help: "after the epochs, train again from scratch on train + validation for the epoch count that scored best on validation (ngram-nb true, embedding-bag false)",
        only: None,
        read: |h, v| {
            h.refit = two_ways("REFIT", v, !h.original(), ["true", "false"])?;
            Ok(())
        },
        show: |h| h.refit.to_string(),
    },
];

/// `true` for `words[0]`, `false` for `words[1]`, `default` when unset.
fn two_ways(name: &str, value: Option<&str>, default: bool, words: [&str; 2]) -> Result<bool> {
    match value {
        None => Ok(default),
        Some(v) if v == words[0] => Ok(true),
        Some(v) if v == words[1] => Ok(false),
        Some(other) => Err(Error::Contract(format!(
            "{name}={other:?}: expected {} or {}",
            words[0], words[1]
        ))),
    }
}

/// A whole number ≥ `min`, `default` when unset.
fn whole(name: &str, value: Option<&str>, default: usize, min: usize) -> Result<usize> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= min)
            .ok_or_else(|| Error::Contract(format!("{name}={v:?}: expected a whole number ≥ {min}"))),
    }
}

/// A finite number `ok` accepts (`expected` says which), `default` when unset.
fn real(name: &str, value: Option<&str>, default: f64, ok: fn(f64) -> bool, expected: &str) -> Result<f64> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && ok(*x))
            .ok_or_else(|| Error::Contract(format!("{name}={v:?}: expected {expected}"))),
    }
}

/// A share in [0, 1), 0.1 when unset.
fn fraction(name: &str, value: Option<&str>) -> Result<f64> {
    real(
        name,
        value,
        0.1,
        |x| (0.0..1.0).contains(&x),
        "a number in [0, 1)",
    )
}

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
    /// `REFIT`.
    pub refit: bool,
}

impl Hyperparameters {
    /// Reads the hyperparameters through `get` (an environment lookup or `--param`s); a
    /// malformed value is an error naming the variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Hyperparameters> {
        let mut hyperparameters = Hyperparameters {
            architecture: Architecture::NgramNb,
            epochs: 0,
            lr: 0.0,
            batch_size: 0,
            fc_size: 0,
            embedding_dim: 0,
            clip_norm: 0.0,
            weight_decay: 0.0,
            nb_alpha: 0.0,
            min_df: 0,
            loss: Loss::SquaredHinge,
            balanced: false,
            seed: 0,
            validation_fraction: 0.0,
            test_fraction: 0.0,
            refit: false,
        };
        // In the table's order: ARCHITECTURE before the defaults that depend on it.
        for param in HYPERPARAMETERS {
            let value = get(param.name).filter(|v| !v.trim().is_empty());
            (param.read)(&mut hyperparameters, value.as_deref().map(str::trim))?;
        }
        let architecture = hyperparameters.architecture;
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

    /// Every value the architecture uses, by variable name, as recorded in the manifest.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        HYPERPARAMETERS
            .iter()
            .filter(|param| param.only.is_none_or(|only| only == self.architecture))
            .map(|param| (param.name.to_string(), (param.show)(self)))
            .collect()
    }

    /// Whether the original network trains (its defaults differ).
    fn original(&self) -> bool {
        self.architecture == Architecture::EmbeddingBag
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
        assert_eq!(
            (ours.min_df, ours.loss, ours.refit),
            (2, Loss::SquaredHinge, true)
        );
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
        assert_eq!((original.loss, original.refit), (Loss::CrossEntropy, false));
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
            ("REFIT", "yes"),
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

    #[test]
    fn every_hyperparameter_is_documented_once_in_its_table() {
        let docs = include_str!("../../../docs/training.md");
        for param in HYPERPARAMETERS {
            let row = format!("| `{}` |", param.name);
            assert_eq!(
                docs.matches(&row).count(),
                1,
                "docs/training.md's table row {row}"
            );
        }
        let names: Vec<&str> = HYPERPARAMETERS.iter().map(|p| p.name).collect();
        assert_eq!(
            names[0], "ARCHITECTURE",
            "read first: other defaults depend on it"
        );
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}
