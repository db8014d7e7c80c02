//! The model as files: `model.safetensors`, `vocab.json`, `labels.json` and `manifest.json`,
//! which records how the model was made and the sha256 of every other file. Artifacts are
//! verified before use, so a corrupt or half-written model is refused, never served.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::network::{DirectNgramNb, probabilities};
use crate::{Architecture, Error, Network, Result, Vocabulary};

/// The network weights.
pub const MODEL_FILE: &str = "model.safetensors";
/// The fitted tokenizer and vocabulary ([`Vocabulary`]).
pub const VOCABULARY_FILE: &str = "vocab.json";
/// Class index → label name, a JSON array of strings.
pub const LABELS_FILE: &str = "labels.json";
/// The [`Manifest`].
pub const MANIFEST_FILE: &str = "manifest.json";
/// Every artifact, manifest last (it is written after the files it describes).
pub const ARTIFACT_FILES: [&str; 4] = [MODEL_FILE, VOCABULARY_FILE, LABELS_FILE, MANIFEST_FILE];

/// The `format` of `manifest.json`.
pub const MANIFEST_FORMAT: &str = "miniautoml.model/v1";

/// What a model is and how it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The training algorithm (`ALGORITHM_NAME`), e.g. `intent-classification`.
    pub algorithm: String,
    /// The network.
    pub architecture: Architecture,
    /// The ML framework and its version, e.g. `candle 0.11.1`.
    pub framework: String,
    /// The trainer's code version.
    pub code_version: String,
    /// Every hyperparameter the trainer used, defaults included.
    pub hyperparameters: BTreeMap<String, String>,
    /// Final metrics, e.g. `testAccuracy`, `testMacroF1`.
    pub metrics: BTreeMap<String, f64>,
    /// Training data: `datasetId`, `versionHash`, numbers of examples per split.
    pub data: BTreeMap<String, String>,
    /// sha256 and size of every other artifact.
    #[serde(default)]
    pub files: BTreeMap<String, FileDigest>,
}

/// A file's checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

impl FileDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> FileDigest {
        FileDigest {
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
        }
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A model's artifacts in memory, by file name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelFiles {
    /// File name → contents.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl ModelFiles {
    /// Serialises a model: the network, vocabulary and labels, then the manifest with their
    /// checksums filled in.
    pub fn build(
        network: &Network,
        vocabulary: &Vocabulary,
        labels: &[String],
        mut manifest: Manifest,
    ) -> Result<Self> {
        let mut files = BTreeMap::new();
        files.insert(MODEL_FILE.to_string(), network.to_safetensors()?);
        files.insert(VOCABULARY_FILE.to_string(), vocabulary.to_json());
        files.insert(
            LABELS_FILE.to_string(),
            serde_json::to_vec(labels).expect("labels serialise"),
        );
        manifest.format = MANIFEST_FORMAT.into();
        manifest.architecture = network.architecture();
        manifest.files = files
            .iter()
            .map(|(name, bytes)| (name.clone(), FileDigest::of(bytes)))
            .collect();
        files.insert(
            MANIFEST_FILE.to_string(),
            serde_json::to_vec_pretty(&manifest).expect("a manifest serialises"),
        );
        Ok(ModelFiles { files })
    }

    /// Writes the files into `dir` (created if needed), manifest last.
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for name in ARTIFACT_FILES {
            if let Some(bytes) = self.files.get(name) {
                std::fs::write(dir.join(name), bytes)?;
            }
        }
        Ok(())
    }

    /// Reads the artifacts from `dir`.
    pub fn read_dir(dir: &Path) -> Result<ModelFiles> {
        let mut files = BTreeMap::new();
        for name in ARTIFACT_FILES {
            match std::fs::read(dir.join(name)) {
                Ok(bytes) => {
                    files.insert(name.to_string(), bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::Io(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", dir.join(name).display()),
                    )));
                }
            }
        }
        Ok(ModelFiles { files })
    }

    /// The manifest, after checking that every file it lists is present and intact.
    pub fn verify(&self) -> Result<Manifest> {
        let bytes = self
            .files
            .get(MANIFEST_FILE)
            .ok_or_else(|| Error::Missing(MANIFEST_FILE.into()))?;
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Error::Invalid(format!("{MANIFEST_FILE}: {e}")))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(Error::Invalid(format!(
                "{MANIFEST_FILE}: format {:?}, expected {MANIFEST_FORMAT:?}",
                manifest.format
            )));
        }
        for required in [MODEL_FILE, VOCABULARY_FILE, LABELS_FILE] {
            if !manifest.files.contains_key(required) {
                return Err(Error::Invalid(format!(
                    "{MANIFEST_FILE} does not list {required}"
                )));
            }
        }
        for (name, digest) in &manifest.files {
            let bytes = self.files.get(name).ok_or_else(|| Error::Missing(name.clone()))?;
            let actual = FileDigest::of(bytes);
            if actual != *digest {
                return Err(Error::Checksum {
                    file: name.clone(),
                    expected: format!("{} ({} bytes)", digest.sha256, digest.bytes),
                    actual: format!("{} ({} bytes)", actual.sha256, actual.bytes),
                });
            }
        }
        Ok(manifest)
    }
}

/// One text's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Index of the most probable class (the lowest index on a tie).
    pub class: usize,
    /// Probability of each class.
    pub probabilities: Vec<f32>,
}

/// A verified model, ready to classify texts (on the CPU).
#[derive(Clone, Debug)]
pub struct Classifier {
    manifest: Manifest,
    vocabulary: Vocabulary,
    labels: Vec<String>,
    network: Network,
    /// The network without tensors, where it has that form ([`DirectNgramNb::new`]).
    direct: Option<DirectNgramNb>,
}

/// Texts classified per forward pass.
const CLASSIFY_BATCH: usize = 256;

impl Classifier {
    /// Verifies the artifacts against the manifest and loads them.
    pub fn from_files(files: &ModelFiles) -> Result<Classifier> {
        let manifest = files.verify()?;
        let vocabulary = Vocabulary::from_json(&files.files[VOCABULARY_FILE])?;
        let labels: Vec<String> = serde_json::from_slice(&files.files[LABELS_FILE])
            .map_err(|e| Error::Invalid(format!("{LABELS_FILE}: {e}")))?;
        let network =
            Network::from_safetensors(manifest.architecture, &files.files[MODEL_FILE], &Device::Cpu)?;
        if network.features()? != vocabulary.len() {
            return Err(Error::Invalid(format!(
                "the network takes {} features but the vocabulary has {}",
                network.features()?,
                vocabulary.len()
            )));
        }
        if network.classes()? != labels.len() || labels.is_empty() {
            return Err(Error::Invalid(format!(
                "the network has {} classes but {LABELS_FILE} names {}",
                network.classes()?,
                labels.len()
            )));
        }
        let direct = DirectNgramNb::new(&network)?;
        Ok(Classifier {
            manifest,
            vocabulary,
            labels,
            network,
            direct,
        })
    }

    /// Loads and verifies the artifacts in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Classifier> {
        Classifier::from_files(&ModelFiles::read_dir(dir)?)
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Class index → label.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The vocabulary.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    /// Classifies `texts`; a text's result does not depend on the others in the batch.
    pub fn classify<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Prediction>> {
        match &self.direct {
            Some(direct) => texts
                .iter()
                .map(|text| {
                    let features = self.vocabulary.transform(std::slice::from_ref(text));
                    let probabilities = direct.probabilities(&features.features, &features.values)?;
                    Ok(Prediction {
                        class: argmax(&probabilities),
                        probabilities,
                    })
                })
                .collect(),
            None => self.classify_with_tensors(texts),
        }
    }

    /// [`Classifier::classify`] through candle tensors, batch by batch.
    fn classify_with_tensors<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Prediction>> {
        let mut predictions = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(CLASSIFY_BATCH) {
            let batch = self.vocabulary.transform(chunk);
            let probabilities = probabilities(&self.network.logits(&batch)?)?.to_vec2::<f32>()?;
            predictions.extend(probabilities.into_iter().map(|probabilities| Prediction {
                class: argmax(&probabilities),
                probabilities,
            }));
        }
        Ok(predictions)
    }
}

/// Index of the largest value, the first on a tie.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use candle_core::Tensor;

    use super::*;
    use crate::{FitOptions, Tokenizer, Weighting};

    const TEXTS: [&str; 4] = [
        "I am so happy today",
        "this makes me angry",
        "happy happy joy",
        "so angry now",
    ];

    fn model(labels: &[&str]) -> ModelFiles {
        let options = FitOptions {
            tokenizer: Tokenizer {
                word_ngrams: Some([1, 2]),
                char_ngrams: Some([2, 3]),
            },
            weighting: Weighting::SublinearTfIdf,
            min_df: 1,
        };
        let vocabulary = Vocabulary::fit(&TEXTS, &options).unwrap();
        let features = vocabulary.len();
        // Weights that make "happy" texts class 0 and "angry" texts class 1.
        let mut weight = vec![0f32; features * 2];
        for (i, term) in vocabulary.word_terms.iter().enumerate() {
            if term.contains("happy") || term.contains("joy") {
                weight[i * 2] = 3.0;
            }
            if term.contains("angry") {
                weight[i * 2 + 1] = 3.0;
            }
        }
        let network = Network::NgramNb {
            weight: Tensor::from_vec(weight, (features, 2), &Device::Cpu).unwrap(),
            bias: Tensor::from_vec(vec![0.1f32, 0.0], 2, &Device::Cpu).unwrap(),
        };
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let manifest = test_manifest();
        ModelFiles::build(&network, &vocabulary, &labels, manifest).unwrap()
    }

    #[test]
    fn a_saved_model_loads_and_classifies_each_text_as_it_would_alone() {
        let dir = std::env::temp_dir().join(format!("intent-model-{}", std::process::id()));
        model(&["joy", "anger"]).write_dir(&dir).unwrap();
        let classifier = Classifier::load_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(classifier.labels(), ["joy", "anger"]);
        assert_eq!(classifier.manifest().files.len(), 3);
        let batch = classifier.classify(&TEXTS).unwrap();
        let classes: Vec<usize> = batch.iter().map(|p| p.class).collect();
        assert_eq!(classes, [0, 1, 0, 1]);
        for (text, in_batch) in TEXTS.iter().zip(&batch) {
            let alone = &classifier.classify(&[text]).unwrap()[0];
            assert_eq!(alone, in_batch, "{text}");
            let sum: f32 = alone.probabilities.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6);
        }
        // A text with no known feature falls back on the bias.
        assert_eq!(classifier.classify(&["zzz"]).unwrap()[0].class, 0);
        assert!(classifier.classify::<&str>(&[]).unwrap().is_empty());
    }

    /// A manifest for an n-gram test model (format and checksums are filled in by
    /// `ModelFiles::build`).
    fn test_manifest() -> Manifest {
        Manifest {
            format: String::new(),
            algorithm: "intent-classification".into(),
            architecture: Architecture::NgramNb,
            framework: "candle".into(),
            code_version: "test".into(),
            hyperparameters: BTreeMap::new(),
            metrics: BTreeMap::new(),
            data: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    /// An n-gram classifier fitted on real tweets, with pseudo-random weights of `scale`.
    fn tweet_classifier(texts: &[&str], classes: usize, scale: f32) -> Classifier {
        let options = FitOptions {
            tokenizer: Tokenizer {
                word_ngrams: Some([1, 2]),
                char_ngrams: Some([2, 5]),
            },
            weighting: Weighting::SublinearTfIdf,
            min_df: 1,
        };
        let vocabulary = Vocabulary::fit(texts, &options).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ classes as u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        };
        let weight: Vec<f32> = (0..vocabulary.len() * classes).map(|_| next()).collect();
        let bias: Vec<f32> = (0..classes).map(|_| next()).collect();
        let network = Network::NgramNb {
            weight: Tensor::from_vec(weight, (vocabulary.len(), classes), &Device::Cpu).unwrap(),
            bias: Tensor::from_vec(bias, classes, &Device::Cpu).unwrap(),
        };
        let labels: Vec<String> = (0..classes).map(|c| format!("class{c}")).collect();
        let manifest = test_manifest();
        let files = ModelFiles::build(&network, &vocabulary, &labels, manifest).unwrap();
        Classifier::from_files(&files).unwrap()
    }

    #[test]
    fn the_direct_path_gives_the_tensor_paths_probabilities_bit_for_bit() {
        let tweets = include_str!("../../../testdata/tweet_emotion/tweet_emotion_part2.csv");
        let mut texts: Vec<&str> = tweets.lines().collect();
        let (fit, unseen) = texts.split_at(texts.len() / 2);
        let classifiers: Vec<Classifier> = [(2, 1.0), (3, 4.0), (6, 20.0), (31, 0.5), (3, 400.0)]
            .into_iter()
            .map(|(classes, scale)| tweet_classifier(fit, classes, scale))
            .collect();
        let unseen = unseen.to_vec();
        texts.extend(["", " ", "zzz", "ΣΑΣ ÉTÉ straße 🙂🙂 _ a", "happy happy happy"]);
        texts.extend(unseen);
        for classifier in &classifiers {
            assert!(classifier.direct.is_some());
            let direct = classifier.classify(&texts).unwrap();
            let tensors = classifier.classify_with_tensors(&texts).unwrap();
            for ((text, direct), tensors) in texts.iter().zip(&direct).zip(&tensors) {
                let bits = |p: &Prediction| p.probabilities.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(direct), bits(tensors), "{text:?}");
                assert_eq!(direct.class, tensors.class, "{text:?}");
            }
        }
        // candle sums 32 or more exponentials in SIMD blocks: such networks keep the tensor path.
        assert!(tweet_classifier(&texts[..50], 32, 1.0).direct.is_none());
    }

    #[test]
    fn a_corrupt_or_missing_artifact_is_refused_by_name() {
        let mut corrupt = model(&["joy", "anger"]);
        let bytes = corrupt.files.get_mut(MODEL_FILE).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let error = Classifier::from_files(&corrupt).unwrap_err();
        assert!(
            matches!(&error, Error::Checksum { file, .. } if file == MODEL_FILE),
            "{error}"
        );
        assert!(
            error.to_string().contains("model.safetensors is corrupt"),
            "{error}"
        );

        for name in [VOCABULARY_FILE, MANIFEST_FILE] {
            let mut missing = model(&["joy", "anger"]);
            missing.files.remove(name);
            let error = Classifier::from_files(&missing).unwrap_err();
            assert_eq!(error.to_string(), format!("artifact {name} is missing"));
        }
    }

    #[test]
    fn labels_that_do_not_fit_the_network_are_refused() {
        let error = Classifier::from_files(&model(&["joy", "anger", "fear"])).unwrap_err();
        assert!(
            error.to_string().contains("2 classes but labels.json names 3"),
            "{error}"
        );
    }
}
