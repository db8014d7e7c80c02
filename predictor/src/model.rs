//! The served model: where its artifacts are, loading them (checksums verified against the
//! manifest), and classifying one document through the trainer's inference library, so serving
//! tokenises exactly as training did.

use std::path::PathBuf;

use miniautoml_data::Store;
use miniautoml_intent_model::{ARTIFACT_FILES, Classifier, MANIFEST_FILE, Manifest, ModelFiles, sha256_hex};

use crate::{Config, Error, Result};

/// Where a model's artifacts are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `s3://bucket/prefix/`: the objects `<prefix><file>`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, ending in `/`.
        prefix: String,
    },
    /// A local directory.
    Dir(PathBuf),
}

impl Source {
    /// Parses `s3://BUCKET/PREFIX`, `file:///path` or a plain path.
    pub fn parse(uri: &str) -> Result<Source> {
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!("model URI {uri:?} names no bucket")));
            }
            let mut prefix = prefix.trim_start_matches('/').to_string();
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            return Ok(Source::S3 {
                bucket: bucket.into(),
                prefix,
            });
        }
        if let Some(path) = uri.strip_prefix("file://") {
            return Ok(Source::Dir(path.into()));
        }
        if uri.is_empty() || uri.contains("://") {
            return Err(Error::Config(format!(
                "model URI {uri:?}: expected s3://BUCKET/PREFIX/, file:///PATH or a path"
            )));
        }
        Ok(Source::Dir(uri.into()))
    }
}

/// Reads the artifacts from `source`: the manifest first, then every file it lists.
pub async fn fetch(source: &Source, config: &Config) -> Result<ModelFiles> {
    match source {
        Source::Dir(dir) => {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || ModelFiles::read_dir(&dir))
                .await
                .expect("reading artifacts does not panic")
                .map_err(|e| Error::Model(e.to_string()))
        }
        Source::S3 { bucket, prefix } => {
            let (Some(access_key), Some(secret_key)) = (&config.s3_access_key, &config.s3_secret_key) else {
                return Err(Error::Config(
                    "the model is in S3 but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set".into(),
                ));
            };
            let store = Store::with_session_token(
                config.s3_endpoint.as_deref(),
                &config.s3_region,
                (access_key, secret_key, config.s3_session_token.as_deref()),
                bucket.clone(),
            )
            .for_new_pod();
            let mut files = ModelFiles::default();
            let manifest = get(&store, bucket, &format!("{prefix}{MANIFEST_FILE}")).await?;
            let listed: Manifest = serde_json::from_slice(&manifest)
                .map_err(|e| Error::Model(format!("s3://{bucket}/{prefix}{MANIFEST_FILE}: {e}")))?;
            files.files.insert(MANIFEST_FILE.into(), manifest);
            for name in listed.files.keys() {
                if !ARTIFACT_FILES.contains(&name.as_str()) {
                    return Err(Error::Model(format!(
                        "{MANIFEST_FILE} lists {name:?}, which is not a model artifact"
                    )));
                }
                let bytes = get(&store, bucket, &format!("{prefix}{name}")).await?;
                files.files.insert(name.clone(), bytes);
            }
            Ok(files)
        }
    }
}

async fn get(store: &Store, bucket: &str, key: &str) -> Result<Vec<u8>> {
    let body = store
        .get(bucket, key)
        .await
        .map_err(|e| Error::Model(e.to_string()))?;
    let bytes = body
        .collect()
        .await
        .map_err(|e| Error::Model(format!("s3://{bucket}/{key}: {e}")))?;
    Ok(bytes.into_bytes().to_vec())
}

/// Refuses artifacts whose manifest is not the one the run recorded (its sha256 in the
/// TrainingJob's status): the manifest holds every other file's sha256, which loading checks,
/// so this pins the whole model to what was trained.
fn unchanged_since_training(files: &ModelFiles, recorded: &str) -> Result<()> {
    let manifest = files
        .files
        .get(MANIFEST_FILE)
        .ok_or_else(|| Error::Model(format!("no {MANIFEST_FILE}")))?;
    let found = sha256_hex(manifest);
    if !found.eq_ignore_ascii_case(recorded.trim()) {
        return Err(Error::Model(format!(
            "the model changed since it was trained: {MANIFEST_FILE} has sha256 {found}, the run recorded {recorded}; refusing to serve it"
        )));
    }
    Ok(())
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The document is empty (or only whitespace).
    #[error("document is empty")]
    Empty,
    /// The document is longer than the limit.
    #[error("document is {bytes} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The request names a run this predictor does not serve.
    #[error("this predictor serves run {served}, not run {asked}")]
    OtherRun {
        /// The run served.
        served: String,
        /// The run asked for.
        asked: String,
    },
}

/// A loaded model and what the APIs report about it.
pub struct Model {
    classifier: Classifier,
    /// `{"result": "<label>"}` per class, built once.
    responses: Vec<String>,
    /// The run id, if known.
    pub run_id: Option<String>,
    /// Name in the HTTP API.
    pub name: String,
    /// Artifact version.
    pub version: String,
    max_document_bytes: usize,
}

/// One document's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Classified {
    /// Index of the label.
    pub class: usize,
    /// Probability of each label.
    pub probabilities: Vec<f32>,
}

impl Model {
    /// Verifies and loads `files`.
    pub fn new(files: &ModelFiles, config: &Config) -> Result<Model> {
        if let Some(recorded) = &config.model_sha256 {
            unchanged_since_training(files, recorded)?;
        }
        let classifier = Classifier::from_files(files).map_err(|e| Error::Model(e.to_string()))?;
        let responses = classifier
            .labels()
            .iter()
            .map(|label| format!("{{\"result\": {}}}", serde_json::Value::from(label.as_str())))
            .collect();
        Ok(Model {
            classifier,
            responses,
            run_id: config.run_id.clone(),
            name: config.model_name.clone(),
            version: config.version(),
            max_document_bytes: config.max_document_bytes,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        self.classifier.manifest()
    }

    /// The labels, by class index.
    pub fn labels(&self) -> &[String] {
        self.classifier.labels()
    }

    /// Checks a request's run id: empty or the served run.
    pub fn check_run(&self, asked: &str) -> Result<(), Rejection> {
        match &self.run_id {
            Some(served) if !asked.is_empty() && asked != served => Err(Rejection::OtherRun {
                served: served.clone(),
                asked: asked.into(),
            }),
            _ => Ok(()),
        }
    }

    /// Checks a document against the limits.
    pub fn check_document(&self, document: &str) -> Result<(), Rejection> {
        if document.len() > self.max_document_bytes {
            return Err(Rejection::TooLarge {
                bytes: document.len(),
                limit: self.max_document_bytes,
            });
        }
        if document.trim().is_empty() {
            return Err(Rejection::Empty);
        }
        Ok(())
    }

    /// Classifies checked documents.
    pub fn classify(&self, documents: &[&str]) -> Result<Vec<Classified>> {
        let predictions = self
            .classifier
            .classify(documents)
            .map_err(|e| Error::Model(format!("classifying: {e}")))?;
        Ok(predictions
            .into_iter()
            .map(|p| Classified {
                class: p.class,
                probabilities: p.probabilities,
            })
            .collect())
    }

    /// The original API's answer for one document: `{"result": "<label>"}`.
    pub fn respond(&self, run_id: &str, document: &str) -> Result<String, Refused> {
        self.check_run(run_id)?;
        self.check_document(document)?;
        let class = self.classify(&[document]).map_err(Refused::Internal)?[0].class;
        Ok(self.responses[class].clone())
    }
}

/// Why [`Model::respond`] gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The request is bad.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The model failed.
    #[error(transparent)]
    Internal(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            Source::parse("s3://miniautoml/models/ns/tj/uid").unwrap(),
            Source::S3 {
                bucket: "miniautoml".into(),
                prefix: "models/ns/tj/uid/".into()
            }
        );
        assert_eq!(
            Source::parse("s3://b/p/").unwrap(),
            Source::S3 {
                bucket: "b".into(),
                prefix: "p/".into()
            }
        );
        assert_eq!(
            Source::parse("file:///tmp/m").unwrap(),
            Source::Dir("/tmp/m".into())
        );
        assert_eq!(Source::parse("model").unwrap(), Source::Dir("model".into()));
        for bad in ["s3:///x", "http://h/m", ""] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_manifest_other_than_the_recorded_one_is_refused() {
        let manifest = br#"{"files": {}}"#.to_vec();
        let files = ModelFiles {
            files: [(MANIFEST_FILE.to_string(), manifest.clone())].into(),
        };
        let recorded = sha256_hex(&manifest);
        unchanged_since_training(&files, &recorded).unwrap();
        unchanged_since_training(&files, &recorded.to_uppercase()).unwrap();
        let changed = unchanged_since_training(&files, &sha256_hex(b"another")).unwrap_err();
        assert!(
            changed
                .to_string()
                .contains("the model changed since it was trained"),
            "{changed}"
        );
    }
}
