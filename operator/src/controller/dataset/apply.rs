//! A Dataset's writes besides its status: ingesting an entry into
//! `datasets/<ns>/<name>/commits/<id>/` (streaming; objects first, so a crash before the status
//! write re-ingests into the same prefix and a commit appears once and only complete) and, under
//! the finalizer, removing a deleted Dataset's objects.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::controller::Action};
use miniautoml_api::{Dataset, DatasetCommitStatus, RetainPolicy};
use miniautoml_data::{IngestError, Store, ingest_commit, layout};

use super::{status::Found, validate::unavailable};
use crate::{
    Result,
    context::Context,
    sources::SourcePolicy,
    tombstones::{self, Tombstone},
};

/// Ingests `spec.commits[entry]` of `dataset` as commit `id` into `store`: `Committed`, or
/// `Rejected` for data that cannot be used (nothing complete is left under the prefix), or
/// `Waiting` when storage refused the operator or was down (retried).
pub async fn ingest(
    store: &Store,
    sources: &SourcePolicy,
    dataset: &Dataset,
    entry: usize,
    id: u32,
) -> Found {
    let namespace = dataset.namespace().unwrap_or_default();
    let spec = &dataset.spec.commits[entry];
    let prefix = layout::commit_prefix(&namespace, &dataset.name_any(), id);
    let started = std::time::Instant::now();
    match ingest_commit(store, dataset.spec.r#type, &spec.source, &prefix).await {
        Ok(written) => {
            tracing::info!(
                id,
                entry,
                bytes = written.bytes,
                seconds = started.elapsed().as_secs_f64(),
                "commit ingested"
            );
            Found::Committed {
                entry,
                commit: DatasetCommitStatus {
                    id,
                    entry: entry as u32,
                    created_at: Time(Timestamp::now()),
                    message: spec.message.clone(),
                    tags: spec.tags.clone(),
                    path: prefix,
                    statistics: written.statistics,
                },
            }
        }
        Err(error @ (IngestError::Rejected(_) | IngestError::Missing(_))) => {
            // Nothing complete was written; clear any leftovers of an earlier attempt.
            if let Err(error) = store.delete_prefix(&prefix).await {
                tracing::warn!(%error, "clearing a rejected commit's prefix");
            }
            let message = match error {
                // Said as for a source the namespace may not read: the same words for both.
                IngestError::Missing(_) => unavailable(sources, &namespace, &spec.source),
                other => other.to_string(),
            };
            Found::Rejected { entry, message }
        }
        Err(error @ (IngestError::Denied(_) | IngestError::Unavailable(_))) => Found::Waiting {
            entry,
            reason: match error {
                IngestError::Denied(_) => "StorageDenied",
                _ => "StorageUnavailable",
            },
            message: error.to_string(),
        },
    }
}

/// Removes a deleted Dataset's objects (unless it retains them) behind a tombstone, so that a
/// write still on its way is swept when it lands.
pub async fn cleanup(dataset: &Dataset, ctx: &Context) -> Result<Action> {
    if dataset.spec.retain_policy == RetainPolicy::Retain {
        return Ok(Action::await_change());
    }
    let Some(store) = &ctx.store else {
        // Without storage nothing was ever written.
        return Ok(Action::await_change());
    };
    let Some(tombstone) = Tombstone::of(dataset) else {
        return Ok(Action::await_change());
    };
    let deleted = tombstones::bury(store, &tombstone).await?;
    tracing::info!(deleted, dataset = dataset.name_any(), "dataset objects deleted");
    Ok(Action::await_change())
}
