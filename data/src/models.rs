//! A trained model's folder, fetched from the store onto local disk and verified: what a custom
//! predictor's storage initializer does before the predictor starts (`miniautoml-operator
//! fetch-model`), so that the predictor reads plain files and never a half-written or altered
//! model.
//!
//! The folder is every object under the run's artifact prefix. `manifest.json` must be there.
//! Its sha256 must be the one the run recorded at `CreateArtifact` (the status's
//! `artifact.sha256`, given to predictors as `MODEL_SHA256`), so nothing written after the run
//! is served. A MiniAutoML manifest (`format: miniautoml.model/v1`) lists the sha256 and size
//! of every other file: each must match, and a file it does not list is refused. Another
//! manifest (the original images' own) vouches only for itself.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{StorageError, Store};

/// The manifest file every artifact has.
pub const MANIFEST: &str = "manifest.json";
/// The `format` of a MiniAutoML manifest, whose `files` carry checksums.
pub const MINIAUTOML_FORMAT: &str = "miniautoml.model/v1";

/// Why a model could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `MODEL_URI` is not `s3://bucket/prefix/`.
    #[error("{0:?} is not an s3://BUCKET/PREFIX/ model URI")]
    Uri(String),
    /// The store refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The files are not the model the run recorded.
    #[error("{0}")]
    Invalid(String),
    /// Writing the files failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a model's `files` (name → contents, the manifest among them): the manifest exists,
/// has the sha256 `expected_manifest` when one is given, and, when it is a MiniAutoML manifest,
/// every other file is listed in it with its sha256 and size, and every listed file is there.
pub fn verify(files: &BTreeMap<String, Vec<u8>>, expected_manifest: Option<&str>) -> Result<(), String> {
    let manifest = files
        .get(MANIFEST)
        .ok_or_else(|| format!("the model has no {MANIFEST}"))?;
    let actual = sha256_hex(manifest);
    if let Some(expected) = expected_manifest
        && !expected.eq_ignore_ascii_case(&actual)
    {
        return Err(format!(
            "the model changed since it was trained: {MANIFEST} has sha256 {actual}, the run recorded {expected}"
        ));
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| format!("{MANIFEST} is not JSON: {e}"))?;
    if parsed.get("format").and_then(|f| f.as_str()) != Some(MINIAUTOML_FORMAT) {
        return Ok(());
    }
    let listed = parsed
        .get("files")
        .and_then(|f| f.as_object())
        .ok_or_else(|| format!("{MANIFEST} ({MINIAUTOML_FORMAT}) lists no files"))?;
    for (name, body) in files.iter().filter(|(name, _)| *name != MANIFEST) {
        let entry = listed.get(name).ok_or_else(|| {
            format!("{name} is not in {MANIFEST}: the model folder holds a file its run did not write")
        })?;
        let sha256 = entry.get("sha256").and_then(|s| s.as_str()).unwrap_or_default();
        let bytes = entry.get("bytes").and_then(|b| b.as_u64());
        if !sha256.eq_ignore_ascii_case(&sha256_hex(body)) || bytes.is_some_and(|b| b != body.len() as u64) {
            return Err(format!(
                "{name} is not the file the run wrote: its sha256 or size differs from {MANIFEST}'s"
            ));
        }
    }
    if let Some(missing) = listed.keys().find(|name| !files.contains_key(*name)) {
        return Err(format!("{missing}, listed in {MANIFEST}, is missing"));
    }
    Ok(())
}

/// `(bucket, prefix/)` of `s3://bucket/prefix/`.
pub fn split_uri(uri: &str) -> Result<(String, String), FetchError> {
    let (bucket, prefix) = uri
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(bucket, prefix)| !bucket.is_empty() && !prefix.trim_matches('/').is_empty())
        .ok_or_else(|| FetchError::Uri(uri.to_string()))?;
    Ok((bucket.to_string(), format!("{}/", prefix.trim_end_matches('/'))))
}

/// Downloads the model at `uri` (every object under it; a model is a few files of at most a
/// few hundred MB, read whole), verifies it ([`verify`]) and writes it into `dir`, manifest
/// last. Returns each file's name and size.
pub async fn fetch(
    store: &Store,
    uri: &str,
    dir: &Path,
    expected_manifest: Option<&str>,
) -> Result<Vec<(String, u64)>, FetchError> {
    let (bucket, prefix) = split_uri(uri)?;
    let mut files = BTreeMap::new();
    for key in store.list(&bucket, &prefix).await? {
        let Some(name) = key
            .strip_prefix(&prefix)
            .filter(|n| !n.is_empty() && !n.ends_with('/'))
        else {
            continue;
        };
        if name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(FetchError::Invalid(format!(
                "{key} is not a file name a model may have"
            )));
        }
        let body = store
            .get(&bucket, &key)
            .await?
            .collect()
            .await
            .map_err(|e| StorageError::Unavailable(format!("s3://{bucket}/{key}: {e}")))?;
        files.insert(name.to_string(), body.into_bytes().to_vec());
    }
    if files.is_empty() {
        return Err(FetchError::Storage(StorageError::NotFound(format!(
            "{uri} holds no files"
        ))));
    }
    verify(&files, expected_manifest).map_err(FetchError::Invalid)?;
    let write = |name: &str, body: &[u8]| -> Result<(), FetchError> {
        let path = dir.join(name);
        let failed = |source| FetchError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        std::fs::write(&path, body).map_err(failed)
    };
    for (name, body) in files.iter().filter(|(name, _)| *name != MANIFEST) {
        write(name, body)?;
    }
    write(MANIFEST, &files[MANIFEST])?;
    Ok(files
        .iter()
        .map(|(name, body)| (name.clone(), body.len() as u64))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> BTreeMap<String, Vec<u8>> {
        let weights = b"weights".to_vec();
        let manifest = serde_json::json!({
            "format": MINIAUTOML_FORMAT,
            "files": {"model.pt": {"sha256": sha256_hex(&weights), "bytes": weights.len()}},
        });
        BTreeMap::from([
            ("model.pt".to_string(), weights),
            (MANIFEST.to_string(), serde_json::to_vec(&manifest).unwrap()),
        ])
    }

    #[test]
    fn a_miniautoml_model_is_served_only_as_its_run_wrote_it() {
        let files = ours();
        let recorded = sha256_hex(&files[MANIFEST]);
        assert_eq!(verify(&files, Some(&recorded)), Ok(()));
        assert_eq!(verify(&files, None), Ok(()));
        // The manifest replaced after the run.
        let changed = verify(&files, Some(&sha256_hex(b"other"))).unwrap_err();
        assert!(changed.contains("changed since it was trained"), "{changed}");
        // A file altered, added or missing.
        let mut altered = files.clone();
        altered.insert("model.pt".into(), b"poisoned".to_vec());
        assert!(
            verify(&altered, Some(&recorded))
                .unwrap_err()
                .contains("not the file the run wrote")
        );
        let mut added = files.clone();
        added.insert("extra.bin".into(), b"x".to_vec());
        assert!(
            verify(&added, Some(&recorded))
                .unwrap_err()
                .contains("did not write")
        );
        let mut missing = files.clone();
        missing.remove("model.pt");
        assert!(
            verify(&missing, Some(&recorded))
                .unwrap_err()
                .contains("is missing")
        );
        missing.remove(MANIFEST);
        assert!(verify(&missing, None).unwrap_err().contains("no manifest.json"));
    }

    #[test]
    fn another_manifest_vouches_for_itself_only() {
        let manifest = br#"{"Framework": "Pytorch", "classes": {"0": "joy"}}"#.to_vec();
        let files = BTreeMap::from([
            ("model.pth".to_string(), b"weights".to_vec()),
            (MANIFEST.to_string(), manifest.clone()),
        ]);
        assert_eq!(verify(&files, Some(&sha256_hex(&manifest))), Ok(()));
        assert!(verify(&files, Some(&sha256_hex(b"x"))).is_err());
    }

    #[test]
    fn model_uris_name_a_bucket_and_a_folder() {
        assert_eq!(
            split_uri("s3://b/models/ns/run/uid").unwrap(),
            ("b".to_string(), "models/ns/run/uid/".to_string())
        );
        assert_eq!(split_uri("s3://b/m/").unwrap().1, "m/");
        for bad in ["http://b/m", "s3://b", "s3://b/", "s3:///m"] {
            assert!(split_uri(bad).is_err(), "{bad}");
        }
    }
}
