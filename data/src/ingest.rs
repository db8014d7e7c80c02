//! Ingesting a commit and building a snapshot: stream from the source, parse and rewrite on a
//! blocking thread, upload in parts. Memory stays bounded (a few parts) whatever the file size;
//! an object appears only once complete, and a failure leaves no object behind.

use std::io;

use miniautoml_api::{DatasetStatistics, DatasetType, ObjectSource};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use crate::{
    layout::{EXAMPLES, LABELS, STATISTICS},
    store::{StorageError, Store},
    text_intent::{self, EncodeError, SnapshotMerger},
};

/// Why an ingestion or snapshot failed, sorted by what should happen next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The data cannot be used (malformed, empty, not found): the commit is rejected for good.
    #[error("{0}")]
    Rejected(String),
    /// The operator's credentials are refused: retried, since fixing them needs no new commit.
    #[error("{0}")]
    Denied(String),
    /// Storage is unavailable: retried.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StorageError> for IngestError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound(message) => IngestError::Rejected(message),
            StorageError::Denied(message) => IngestError::Denied(message),
            StorageError::Unavailable(message) => IngestError::Unavailable(message),
        }
    }
}

/// Chunks handed from the parser to the uploader.
const CHUNK: usize = 256 << 10;

/// What an ingestion or snapshot wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// Statistics of the data.
    pub statistics: DatasetStatistics,
    /// Files written, relative to the prefix.
    pub parts: Vec<String>,
    /// Bytes read from the source.
    pub bytes: u64,
}

/// Ingests `source` into `prefix` (ending in `/`) of the store's bucket.
pub async fn ingest_commit(
    store: &Store,
    dataset_type: DatasetType,
    source: &ObjectSource,
    prefix: &str,
) -> Result<Written, IngestError> {
    if source.url.is_some() {
        return Err(IngestError::Rejected(
            "url sources are not supported by this version: copy the file into a bucket and give bucket and key"
                .into(),
        ));
    }
    let bucket = source
        .bucket
        .clone()
        .ok_or_else(|| IngestError::Rejected("the source names no bucket".into()))?;
    match dataset_type {
        DatasetType::TextIntent => {
            let key = source.key.clone().ok_or_else(|| {
                IngestError::Rejected("a TextIntent commit reads one object: give source.key".into())
            })?;
            ingest_text_intent(store, &bucket, &key, prefix).await
        }
        DatasetType::Generic => ingest_generic(store, &bucket, source, prefix).await,
    }
}

async fn ingest_text_intent(
    store: &Store,
    bucket: &str,
    key: &str,
    prefix: &str,
) -> Result<Written, IngestError> {
    let what = format!("s3://{bucket}/{key}");
    let reader = tokio_util::io::StreamReader::new(Box::pin(store.get_ranges(bucket, key).await?));
    let (chunks, mut received) = mpsc::channel::<Vec<u8>>(4);
    let parser = tokio::task::spawn_blocking(move || {
        let encoder = text_intent::encode(SyncIoBridge::new(reader), CHUNK, |chunk| {
            chunks
                .blocking_send(chunk)
                .map_err(|_| io::Error::other("the upload stopped"))
        })?;
        Ok::<_, EncodeError>(encoder)
    });
    let mut writer = store.writer(&format!("{prefix}{EXAMPLES}"), "text/csv");
    let mut upload_error = None;
    while let Some(chunk) = received.recv().await {
        if let Err(error) = writer.write(&chunk).await {
            upload_error = Some(error);
            break;
        }
    }
    drop(received);
    let parsed = parser
        .await
        .map_err(|e| IngestError::Unavailable(format!("{what}: the parser stopped: {e}")))?;
    if let Some(error) = upload_error {
        writer.abort().await;
        return Err(error.into());
    }
    let encoder = match parsed {
        Ok(encoder) => encoder,
        Err(EncodeError::Rejected(rejection)) => {
            writer.abort().await;
            return Err(IngestError::Rejected(format!("{what}: {rejection}")));
        }
        Err(EncodeError::Io(error)) => {
            writer.abort().await;
            return Err(IngestError::Unavailable(format!("{what}: {error}")));
        }
    };
    let bytes = writer.written();
    writer.finish().await?;
    store
        .put(&format!("{prefix}{LABELS}"), encoder.labels_csv(), "text/csv")
        .await?;
    let statistics = encoder.statistics();
    let full = serde_json::json!({
        "numExamples": statistics.num_examples,
        "numLabels": statistics.num_labels,
        "perLabel": encoder.per_label(),
    });
    store
        .put(
            &format!("{prefix}{STATISTICS}"),
            full.to_string().into_bytes(),
            "application/json",
        )
        .await?;
    Ok(Written {
        statistics,
        parts: vec![EXAMPLES.into(), LABELS.into()],
        bytes,
    })
}

async fn ingest_generic(
    store: &Store,
    bucket: &str,
    source: &ObjectSource,
    prefix: &str,
) -> Result<Written, IngestError> {
    let keys = match (&source.key, &source.prefix) {
        (Some(key), _) => vec![key.clone()],
        (None, Some(from)) => {
            let keys = store.list(bucket, from).await?;
            if keys.is_empty() {
                return Err(IngestError::Rejected(format!(
                    "s3://{bucket}/{from}: no objects under this prefix"
                )));
            }
            keys
        }
        (None, None) => return Err(IngestError::Rejected("the source names no key or prefix".into())),
    };
    let mut parts = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let part = format!("part-{index}");
        store.copy(bucket, key, &format!("{prefix}{part}")).await?;
        parts.push(part);
    }
    let names = serde_json::json!({ "parts": parts, "sources": keys });
    store
        .put(
            &format!("{prefix}files.json"),
            names.to_string().into_bytes(),
            "application/json",
        )
        .await?;
    Ok(Written {
        statistics: DatasetStatistics {
            num_examples: keys.len() as u64,
            ..Default::default()
        },
        parts,
        bytes: 0,
    })
}

/// Builds the snapshot of the commits at `commit_prefixes` (in commit order) into `prefix`.
pub async fn build_snapshot(
    store: &Store,
    dataset_type: DatasetType,
    commit_prefixes: &[String],
    prefix: &str,
) -> Result<Written, IngestError> {
    match dataset_type {
        DatasetType::TextIntent => build_text_intent_snapshot(store, commit_prefixes, prefix).await,
        DatasetType::Generic => {
            let mut parts = Vec::new();
            let bucket = store.bucket.clone();
            for commit in commit_prefixes {
                for key in store.list(&bucket, commit).await? {
                    if key
                        .rsplit('/')
                        .next()
                        .is_some_and(|name| name.starts_with("part-"))
                    {
                        let part = format!("part-{}", parts.len());
                        store.copy(&bucket, &key, &format!("{prefix}{part}")).await?;
                        parts.push(part);
                    }
                }
            }
            Ok(Written {
                statistics: DatasetStatistics {
                    num_examples: parts.len() as u64,
                    ..Default::default()
                },
                parts,
                bytes: 0,
            })
        }
    }
}

async fn build_text_intent_snapshot(
    store: &Store,
    commit_prefixes: &[String],
    prefix: &str,
) -> Result<Written, IngestError> {
    let mut merger = SnapshotMerger::default();
    let mut writer = store.writer(&format!("{prefix}{EXAMPLES}"), "text/csv");
    for commit in commit_prefixes {
        match merge_commit(store, commit, merger, &mut writer).await {
            Ok(next) => merger = next,
            Err(error) => {
                writer.abort().await;
                return Err(error);
            }
        }
    }
    let bytes = writer.written();
    writer.finish().await?;
    store
        .put(&format!("{prefix}{LABELS}"), merger.labels_csv(), "text/csv")
        .await?;
    let statistics = merger.statistics();
    let full = serde_json::json!({
        "numExamples": statistics.num_examples,
        "numLabels": statistics.num_labels,
        "perLabel": merger.per_label(),
    });
    store
        .put(
            &format!("{prefix}{STATISTICS}"),
            full.to_string().into_bytes(),
            "application/json",
        )
        .await?;
    Ok(Written {
        statistics,
        parts: vec![EXAMPLES.into(), LABELS.into()],
        bytes,
    })
}

/// Appends one commit's rows to `writer`, its labels merged into `merger`.
async fn merge_commit(
    store: &Store,
    commit: &str,
    mut merger: SnapshotMerger,
    writer: &mut crate::store::ObjectWriter,
) -> Result<SnapshotMerger, IngestError> {
    let labels = store.read(&format!("{commit}{LABELS}")).await?;
    let labels =
        text_intent::read_labels(&labels).map_err(|e| IngestError::Rejected(format!("{commit}{e}")))?;
    let map = merger.add_labels(&labels);
    let bucket = store.bucket.clone();
    let body = store.get(&bucket, &format!("{commit}{EXAMPLES}")).await?;
    let reader = body.into_async_read();
    let (chunks, mut received) = mpsc::channel::<Vec<u8>>(4);
    let merging = tokio::task::spawn_blocking(move || {
        let result = merger.merge(SyncIoBridge::new(reader), &map, CHUNK, |chunk| {
            chunks
                .blocking_send(chunk)
                .map_err(|_| io::Error::other("the upload stopped"))
        });
        (merger, result)
    });
    let mut upload_error = None;
    while let Some(chunk) = received.recv().await {
        if let Err(error) = writer.write(&chunk).await {
            upload_error = Some(error);
            break;
        }
    }
    drop(received);
    let (merger, result) = merging
        .await
        .map_err(|e| IngestError::Unavailable(format!("{commit}: the merge stopped: {e}")))?;
    if let Some(error) = upload_error {
        return Err(error.into());
    }
    match result {
        Ok(()) => Ok(merger),
        Err(EncodeError::Rejected(rejection)) => Err(IngestError::Rejected(format!("{commit}{rejection}"))),
        Err(EncodeError::Io(error)) => Err(IngestError::Unavailable(format!("{commit}: {error}"))),
    }
}
