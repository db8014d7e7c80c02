//! Ingesting a commit and building a snapshot: stream from the source, parse and rewrite on a
//! blocking thread, upload in parts. Memory stays bounded (a few parts) whatever the file size;
//! an object appears only once complete, and a failure leaves no object behind.

use std::io;

use miniautoml_api::{DatasetStatistics, DatasetType, ObjectSource};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use crate::{
    layout::{EXAMPLES, LABELS, STATISTICS},
    store::{ObjectWriter, StorageError, Store},
    text_intent::{self, EncodeError, LabelTable, SnapshotMerger},
};

/// Why an ingestion or snapshot failed, sorted by what should happen next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The data cannot be used (malformed, empty): the commit is rejected for good.
    #[error("{0}")]
    Rejected(String),
    /// The source object or bucket does not exist: the commit is rejected for good.
    #[error("{0}")]
    Missing(String),
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
            StorageError::NotFound(message) => IngestError::Missing(message),
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

/// Ingests `source` into `prefix` (ending in `/`) of the store's bucket, first removing what an
/// earlier attempt left there: its objects and its unfinished uploads (a writer killed
/// mid-object). The prefix must belong to this one commit.
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
    // An attempt starts from an empty prefix: an earlier one cut short (the store or the
    // operator gone mid-way) may have left a finished examples.csv without its labels, or an
    // upload in progress.
    let cleared = store.delete_prefix(prefix).await.map_err(IngestError::from)?;
    if cleared > 0 {
        tracing::info!(cleared, prefix, "removed the objects an earlier attempt left");
    }
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
    // One streaming GET: on the bundled SeaweedFS, parallel ranged reads were no faster and held
    // about 30 MiB more (docs/datasets.md, the benchmark).
    let reader = store.get(bucket, key).await?.into_async_read();
    let mut writer = store.writer(&format!("{prefix}{EXAMPLES}"), "text/csv");
    let parsed = pump(&mut writer, &what, move |emit| {
        text_intent::encode(SyncIoBridge::new(reader), CHUNK, emit)
    })
    .await;
    let encoder = match parsed {
        Ok(Ok(encoder)) => encoder,
        Ok(Err(error)) => {
            writer.abort().await;
            return Err(encode_error(&what, error));
        }
        Err(error) => {
            writer.abort().await;
            return Err(error);
        }
    };
    finish_text_intent(store, writer, prefix, encoder.table()).await
}

/// Runs `produce` on a blocking thread, uploading every chunk it emits to `writer` as it comes;
/// returns what `produce` returned, or the upload's error.
async fn pump<T: Send + 'static>(
    writer: &mut ObjectWriter,
    what: &str,
    produce: impl FnOnce(&mut dyn FnMut(Vec<u8>) -> io::Result<()>) -> T + Send + 'static,
) -> Result<T, IngestError> {
    let (chunks, mut received) = mpsc::channel::<Vec<u8>>(4);
    let producer = tokio::task::spawn_blocking(move || {
        produce(&mut |chunk| {
            chunks
                .blocking_send(chunk)
                .map_err(|_| io::Error::other("the upload stopped"))
        })
    });
    let mut upload_error = None;
    while let Some(chunk) = received.recv().await {
        if let Err(error) = writer.write(&chunk).await {
            upload_error = Some(error);
            break;
        }
    }
    // Closing the channel stops a producer still sending after an upload error.
    drop(received);
    let produced = producer
        .await
        .map_err(|e| IngestError::Unavailable(format!("{what}: the parser stopped: {e}")))?;
    match upload_error {
        Some(error) => Err(error.into()),
        None => Ok(produced),
    }
}

fn encode_error(what: &str, error: EncodeError) -> IngestError {
    match error {
        EncodeError::Rejected(rejection) => IngestError::Rejected(format!("{what}: {rejection}")),
        EncodeError::Io(error) => IngestError::Unavailable(format!("{what}: {error}")),
    }
}

/// Completes `examples.csv` and writes `labels.csv` and `statistics.json` beside it.
async fn finish_text_intent(
    store: &Store,
    writer: ObjectWriter,
    prefix: &str,
    table: &LabelTable,
) -> Result<Written, IngestError> {
    let bytes = writer.written();
    writer.finish().await?;
    store
        .put(&format!("{prefix}{LABELS}"), table.labels_csv(), "text/csv")
        .await?;
    let statistics = table.statistics();
    let full = serde_json::json!({
        "numExamples": statistics.num_examples,
        "numLabels": statistics.num_labels,
        "perLabel": table.per_label(),
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

/// Builds the snapshot of the commits at `commit_prefixes` (in commit order) into `prefix`,
/// first aborting the uploads an earlier attempt left unfinished there.
pub async fn build_snapshot(
    store: &Store,
    dataset_type: DatasetType,
    commit_prefixes: &[String],
    prefix: &str,
) -> Result<Written, IngestError> {
    store.abort_uploads(prefix).await?;
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
    finish_text_intent(store, writer, prefix, merger.table()).await
}

/// Appends one commit's rows to `writer`, its labels merged into `merger`.
async fn merge_commit(
    store: &Store,
    commit: &str,
    mut merger: SnapshotMerger,
    writer: &mut ObjectWriter,
) -> Result<SnapshotMerger, IngestError> {
    let labels = store.read(&format!("{commit}{LABELS}")).await?;
    let labels =
        text_intent::read_labels(&labels).map_err(|e| IngestError::Rejected(format!("{commit}{e}")))?;
    let map = merger.add_labels(&labels);
    let bucket = store.bucket.clone();
    let examples = format!("{commit}{EXAMPLES}");
    let reader = store.get(&bucket, &examples).await?.into_async_read();
    let (merger, result) = pump(writer, &examples, move |emit| {
        let result = merger.merge(SyncIoBridge::new(reader), &map, CHUNK, emit);
        (merger, result)
    })
    .await?;
    result
        .map(|()| merger)
        .map_err(|error| encode_error(&examples, error))
}
