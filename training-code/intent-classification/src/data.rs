//! Training data: a snapshot's `examples.csv` + `labels.csv`, or raw TextIntent CSV files encoded
//! with the same rules the operator uses for commits; and the seeded train/validation/test split.

use std::path::{Path, PathBuf};

use miniautoml_data::text_intent::{self, EncodeError, SnapshotMerger};

use crate::{Error, Result};

/// Labelled texts. A text's class is the index of its first label in `labels`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Examples {
    /// The texts.
    pub texts: Vec<String>,
    /// Class index of each text.
    pub classes: Vec<usize>,
    /// Class index → label name (label id `i + 1` of the snapshot).
    pub labels: Vec<String>,
}

impl Examples {
    /// Parses a snapshot's files. Rows with several labels train on the first one.
    pub fn from_snapshot(examples_csv: &[u8], labels_csv: &[u8]) -> Result<Examples> {
        let labels = text_intent::read_labels(labels_csv).map_err(|e| Error::Data(e.0))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(examples_csv);
        let (mut texts, mut classes) = (Vec::new(), Vec::new());
        for (row, record) in reader.records().enumerate() {
            let line = row + 1;
            let record = record.map_err(|e| Error::Data(format!("examples.csv: {e}")))?;
            if record.len() != 2 {
                return Err(Error::Data(format!(
                    "examples.csv line {line}: expected 2 columns, found {}",
                    record.len()
                )));
            }
            let first = record[1].split(';').next().unwrap_or_default();
            let class = first
                .parse::<usize>()
                .ok()
                .filter(|id| (1..=labels.len()).contains(id))
                .ok_or_else(|| {
                    Error::Data(format!(
                        "examples.csv line {line}: label id {first:?} is not in labels.csv (1..={})",
                        labels.len()
                    ))
                })?;
            texts.push(record[0].to_string());
            classes.push(class - 1);
        }
        if texts.is_empty() {
            return Err(Error::Data("examples.csv has no rows".into()));
        }
        Ok(Examples {
            texts,
            classes,
            labels,
        })
    }

    /// Reads `examples.csv` and `labels.csv` from a snapshot directory.
    pub fn read_snapshot_dir(dir: &Path) -> Result<Examples> {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| Error::Data(format!("{}: {e}", dir.join(name).display())))
        };
        Examples::from_snapshot(&read("examples.csv")?, &read("labels.csv")?)
    }

    /// Encodes raw TextIntent CSV files (text, `;`-separated label names) as commits, in order,
    /// and merges them as a snapshot would.
    pub fn read_raw_files(paths: &[PathBuf]) -> Result<Examples> {
        let (examples, labels) = encode_snapshot(paths)?;
        Examples::from_snapshot(&examples, &labels)
    }

    /// Reads a snapshot directory, or raw CSV files.
    pub fn read(paths: &[PathBuf]) -> Result<Examples> {
        match paths {
            [dir] if dir.is_dir() => Examples::read_snapshot_dir(dir),
            [] => Err(Error::Data("no training data given".into())),
            files => Examples::read_raw_files(files),
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// The `examples.csv` and `labels.csv` of a snapshot of raw TextIntent CSV files, one commit
/// each in order, encoded and merged by the operator's own rules (`miniautoml-data`).
pub fn encode_snapshot(paths: &[PathBuf]) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut merger = SnapshotMerger::default();
    let mut snapshot = Vec::new();
    for path in paths {
        let reason = |e: EncodeError| Error::Data(format!("{}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        let mut commit = Vec::new();
        let encoder = text_intent::encode(file, 1 << 20, |chunk| {
            commit.extend_from_slice(&chunk);
            Ok(())
        })
        .map_err(reason)?;
        let map = merger.add_labels(encoder.table().labels());
        merger
            .merge(commit.as_slice(), &map, 1 << 20, |chunk| {
                snapshot.extend_from_slice(&chunk);
                Ok(())
            })
            .map_err(reason)?;
    }
    Ok((snapshot, merger.table().labels_csv()))
}

/// A small, fast, seedable generator (SplitMix64) whose sequence never changes with a dependency
/// upgrade, so a seed reproduces a split and a run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Example indices of each part of the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Trained on.
    pub train: Vec<usize>,
    /// Scored after every epoch.
    pub validation: Vec<usize>,
    /// Scored once, at the end (the run's reported accuracy).
    pub test: Vec<usize>,
}

impl Split {
    /// Shuffles `0..n` with `seed` and cuts off the test part, then the validation part
    /// (fractions of `n`, rounded down); the rest trains.
    pub fn new(n: usize, seed: u64, validation_fraction: f64, test_fraction: f64) -> Result<Split> {
        let mut order: Vec<usize> = (0..n).collect();
        Rng::new(seed).shuffle(&mut order);
        let test = (n as f64 * test_fraction) as usize;
        let validation = (n as f64 * validation_fraction) as usize;
        if test + validation >= n {
            return Err(Error::Data(format!(
                "{n} examples leave none to train on after {test} for test and {validation} for validation"
            )));
        }
        let rest = order.split_off(test);
        let (validation_part, train) = rest.split_at(validation);
        Ok(Split {
            test: order,
            validation: validation_part.to_vec(),
            train: train.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_rows_take_their_first_label() {
        let examples = Examples::from_snapshot(
            b"\"hi there\",\"2;1\"\n\"bye\",\"1\"\n",
            b"\"1\",\"joy\"\n\"2\",\"anger\"\n",
        )
        .unwrap();
        assert_eq!(examples.texts, ["hi there", "bye"]);
        assert_eq!(examples.classes, [1, 0]);
        assert_eq!(examples.labels, ["joy", "anger"]);
    }

    #[test]
    fn unknown_label_ids_name_the_line() {
        let error = Examples::from_snapshot(b"\"a\",\"1\"\n\"b\",\"3\"\n", b"\"1\",\"joy\"\n").unwrap_err();
        assert!(error.to_string().contains("line 2: label id \"3\""), "{error}");
    }

    #[test]
    fn raw_files_merge_like_a_snapshot() {
        let dir = std::env::temp_dir().join(format!("intent-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.csv"), "\"one\",\"joy\"\n\"two\",\"anger\"\n").unwrap();
        std::fs::write(dir.join("b.csv"), "\"three\",\"sadness\"\n\"four\",\"joy\"\n").unwrap();
        let examples = Examples::read(&[dir.join("a.csv"), dir.join("b.csv")]).unwrap();
        assert_eq!(examples.labels, ["joy", "anger", "sadness"]);
        assert_eq!(examples.classes, [0, 1, 2, 0]);
        std::fs::write(dir.join("c.csv"), "\"unterminated,\"joy\"\n").unwrap();
        let error = Examples::read(&[dir.join("c.csv")]).unwrap_err();
        assert!(error.to_string().contains("c.csv"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_split_is_fixed_by_the_seed_and_covers_every_example_once() {
        let a = Split::new(100, 7, 0.1, 0.2).unwrap();
        assert_eq!(a, Split::new(100, 7, 0.1, 0.2).unwrap());
        assert_ne!(a, Split::new(100, 8, 0.1, 0.2).unwrap());
        assert_eq!((a.train.len(), a.validation.len(), a.test.len()), (70, 10, 20));
        let mut all: Vec<usize> = a
            .train
            .iter()
            .chain(&a.validation)
            .chain(&a.test)
            .copied()
            .collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(Split::new(2, 1, 0.5, 0.5).is_err());
    }
}
