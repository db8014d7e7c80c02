//! Dataset controller: ingests each `spec.commits` entry exactly once, in order, and removes a
//! deleted Dataset's objects.
//!
//! Pipeline per reconcile: read → decide the next entry (pure) → ingest it into
//! `datasets/<ns>/<name>/commits/<id>/` (streaming; objects first) → record the outcome in status
//! (a commit with the next id, or a rejection that takes no id) with an event → requeue for the
//! next entry. A crash between writing the objects and the status re-ingests the entry into the
//! same prefix, so a commit appears exactly once and only complete. Storage that refuses the
//! credentials or is down is retried; data that cannot be used is rejected for good (append a
//! corrected entry).

use std::{sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use miniautoml_api::{
    Dataset, DatasetCommitStatus, DatasetStatus, RejectedCommit, RetainPolicy,
    dataset::{INGESTED, READY},
};
use miniautoml_data::{IngestError, ingest_commit, layout};

use super::reconciled::report_unreadable;
use crate::{
    Error, Result,
    conditions::{self, ACCEPTED},
    context::Context,
    ids::DATASET_ID,
    status::modify_status,
    tombstones::{self, Tombstone},
};

/// Finalizer that removes a Dataset's objects before the Dataset goes.
pub const FINALIZER: &str = "miniautoml.io/dataset-storage";
/// Describes where an entry's data comes from.
fn source_text(dataset: &Dataset, entry: usize) -> String {
    let source = &dataset.spec.commits[entry].source;
    match (&source.url, &source.bucket, &source.key, &source.prefix) {
        (Some(url), ..) => url.clone(),
        (None, Some(bucket), Some(key), _) => format!("s3://{bucket}/{key}"),
        (None, Some(bucket), None, Some(prefix)) => format!("s3://{bucket}/{prefix}"),
        _ => "an incomplete source".into(),
    }
}

/// Sets a condition in `status` for `generation`; true when it changed.
fn set(
    status: &mut DatasetStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> bool {
    let now = Time(Timestamp::now());
    conditions::upsert(
        &mut status.conditions,
        conditions::condition(type_, ok, reason, message, generation, now),
    )
}

/// Marks the current generation accepted (the CRD's schema and CEL rules did the validation).
fn accept(status: &mut DatasetStatus, generation: Option<i64>) -> bool {
    let mut changed = set(
        status,
        ACCEPTED,
        true,
        "Valid",
        "The spec is valid".into(),
        generation,
    );
    if status.observed_generation != generation {
        status.observed_generation = generation;
        changed = true;
    }
    changed
}

/// Records an ingested commit; false when the entry was recorded meanwhile.
pub fn record_commit(
    status: &mut DatasetStatus,
    dataset: &Dataset,
    entry: usize,
    commit: DatasetCommitStatus,
) -> bool {
    let index = entry as u32;
    if status.commits.iter().any(|c| c.entry == index) || commit.id != status.commit_count + 1 {
        return false;
    }
    status.total_examples += commit.statistics.num_examples;
    status.commit_count = commit.id;
    let message = format!(
        "commit {} from {}: {} examples, {} labels",
        commit.id,
        source_text(dataset, entry),
        commit.statistics.num_examples,
        commit.statistics.num_labels
    );
    status.last_updated_at = Some(commit.created_at.clone());
    status.commits.push(commit);
    let generation = dataset.metadata.generation;
    set(status, INGESTED, true, "Ingested", message, generation);
    true
}

/// Records a rejected entry; false when it was recorded meanwhile.
pub fn record_rejection(status: &mut DatasetStatus, dataset: &Dataset, entry: usize, message: &str) -> bool {
    let index = entry as u32;
    if status.rejected.iter().any(|r| r.entry == index) {
        return false;
    }
    let text = format!("spec.commits[{entry}] rejected: {message}");
    status.rejected.push(RejectedCommit {
        entry: index,
        message: message.chars().take(2000).collect(),
        rejected_at: Time(Timestamp::now()),
    });
    set(
        status,
        INGESTED,
        false,
        "Rejected",
        text,
        dataset.metadata.generation,
    );
    true
}

/// Whether `dataset` (as read now) still has `spec.commits[entry]` to ingest as commit `id`.
fn still_next(dataset: &Dataset, entry: usize, id: u32) -> bool {
    dataset.next_entry() == Some(entry) && dataset.status.as_ref().map_or(0, |s| s.commit_count) + 1 == id
}

/// Reconciles one Dataset.
#[tracing::instrument(skip_all, fields(dataset = %kube::runtime::reflector::ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<Dataset>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("dataset");
    let dataset = match &guard.0 {
        Err(error) => return report_unreadable(&guard, error, &ctx).await,
        Ok(dataset) => Arc::new(dataset.clone()),
    };
    let namespace = dataset.namespace().ok_or_else(|| Error::MissingField {
        kind: "Dataset",
        name: dataset.name_any(),
        field: "metadata.namespace",
    })?;
    let api: Api<Dataset> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, dataset, |event| async {
        match event {
            Finalizer::Apply(dataset) => apply(&api, &dataset, &ctx).await,
            Finalizer::Cleanup(dataset) => cleanup(&dataset, &ctx).await,
        }
    })
    .await
    .map_err(Error::from_finalizer)
}

async fn apply(api: &Api<Dataset>, dataset: &Dataset, ctx: &Context) -> Result<Action> {
    // Its dataset id first (no API call once given and mirrored in the label).
    let (_, dataset) = ctx
        .ids
        .assign(&ctx.client, &ctx.id_namespace, (api, dataset), &DATASET_ID)
        .await?;
    let dataset = &dataset;
    let name = dataset.name_any();
    let namespace = dataset.namespace().unwrap_or_default();
    let generation = dataset.metadata.generation;
    let Some(entry) = dataset.next_entry() else {
        let status = dataset.status.clone().unwrap_or_default();
        let message = format!(
            "{} commits ingested ({} examples); {} entries rejected",
            status.commit_count,
            status.total_examples,
            status.rejected.len()
        );
        modify_status(api, &name, |d: &mut Dataset| {
            let status = d.status.get_or_insert_with(Default::default);
            accept(status, generation) | set(status, READY, true, "Ingested", message.clone(), generation)
        })
        .await?;
        return Ok(Action::await_change());
    };
    let source = source_text(dataset, entry);
    let Some(store) = &ctx.store else {
        let message = "object storage is not configured: start the operator with AWS_ACCESS_KEY_ID, \
                       AWS_SECRET_ACCESS_KEY (and --s3-endpoint for MinIO)"
            .to_string();
        modify_status(api, &name, |d: &mut Dataset| {
            let status = d.status.get_or_insert_with(Default::default);
            accept(status, generation)
                | set(
                    status,
                    READY,
                    false,
                    "StorageNotConfigured",
                    message.clone(),
                    generation,
                )
        })
        .await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    };

    let spec = &dataset.spec.commits[entry];
    // A source this namespace may not read is answered as a missing one, before any read.
    let allowed = match (
        &spec.source.bucket,
        spec.source.key.as_ref().or(spec.source.prefix.as_ref()),
    ) {
        (Some(bucket), Some(key)) => ctx
            .sources
            .allows(&namespace, bucket, key)
            .then_some((bucket, key)),
        _ => None,
    };
    if allowed.is_none() && spec.source.url.is_none() {
        let bucket = spec.source.bucket.clone().unwrap_or_default();
        let key = spec
            .source
            .key
            .clone()
            .or(spec.source.prefix.clone())
            .unwrap_or_default();
        let message = ctx.sources.unavailable(&namespace, &bucket, &key);
        return reject(api, dataset, entry, &message, ctx).await;
    }

    // The watch cache may still lack the status write that recorded this entry (a requeue can
    // come before the watch event): decide on a fresh read, so a recorded commit's objects are
    // never written again (a user may have changed or deleted them since).
    let id = dataset.status.as_ref().map(|s| s.commit_count).unwrap_or(0) + 1;
    let ingesting = format!("ingesting spec.commits[{entry}] from {source} as commit {id}");
    let fresh = modify_status(api, &name, |d: &mut Dataset| {
        if !still_next(d, entry, id) {
            return false;
        }
        let status = d.status.get_or_insert_with(Default::default);
        accept(status, generation) | set(status, READY, false, "Ingesting", ingesting.clone(), generation)
    })
    .await?;
    if !still_next(&fresh, entry, id) {
        return Ok(Action::requeue(Duration::ZERO));
    }

    let prefix = layout::commit_prefix(&namespace, &name, id);
    let started = std::time::Instant::now();
    match ingest_commit(store, dataset.spec.r#type, &spec.source, &prefix).await {
        Ok(written) => {
            let commit = DatasetCommitStatus {
                id,
                entry: entry as u32,
                created_at: Time(Timestamp::now()),
                message: spec.message.clone(),
                tags: spec.tags.clone(),
                path: prefix.clone(),
                statistics: written.statistics.clone(),
            };
            modify_status(api, &name, |d: &mut Dataset| {
                let current = d.clone();
                let status = d.status.get_or_insert_with(Default::default);
                record_commit(status, &current, entry, commit.clone())
            })
            .await?;
            tracing::info!(
                id,
                entry,
                bytes = written.bytes,
                seconds = started.elapsed().as_secs_f64(),
                "commit ingested"
            );
            let note = format!(
                "Commit {id} from {source}: {} examples, {} labels",
                written.statistics.num_examples, written.statistics.num_labels
            );
            ctx.publish(dataset, EventType::Normal, "Ingested", note).await;
            Ok(Action::requeue(Duration::ZERO))
        }
        Err(error @ (IngestError::Rejected(_) | IngestError::Missing(_))) => {
            // Nothing complete was written; clear any leftovers of an earlier attempt.
            if let Err(error) = store.delete_prefix(&prefix).await {
                tracing::warn!(%error, "clearing a rejected commit's prefix");
            }
            let message = match error {
                // Said as for a source the namespace may not read: the same words for both.
                IngestError::Missing(_) => {
                    let (bucket, key) = allowed.map_or(("", ""), |(b, k)| (b.as_str(), k.as_str()));
                    ctx.sources.unavailable(&namespace, bucket, key)
                }
                other => other.to_string(),
            };
            reject(api, dataset, entry, &message, ctx).await
        }
        Err(error @ (IngestError::Denied(_) | IngestError::Unavailable(_))) => {
            let reason = match error {
                IngestError::Denied(_) => "StorageDenied",
                _ => "StorageUnavailable",
            };
            let message = format!("spec.commits[{entry}] waits: {error}");
            modify_status(api, &name, |d: &mut Dataset| {
                let status = d.status.get_or_insert_with(Default::default);
                set(status, READY, false, reason, message.clone(), generation)
            })
            .await?;
            ctx.publish(dataset, EventType::Warning, reason, message).await;
            Ok(Action::requeue(Duration::from_secs(30)))
        }
    }
}

/// Records `spec.commits[entry]` as rejected with `message` (it takes no commit id), with a
/// warning event, and goes on to the next entry.
async fn reject(
    api: &Api<Dataset>,
    dataset: &Dataset,
    entry: usize,
    message: &str,
    ctx: &Context,
) -> Result<Action> {
    modify_status(api, &dataset.name_any(), |d: &mut Dataset| {
        let current = d.clone();
        let status = d.status.get_or_insert_with(Default::default);
        record_rejection(status, &current, entry, message)
    })
    .await?;
    let note = format!("spec.commits[{entry}] rejected: {message}");
    ctx.publish(dataset, EventType::Warning, "Rejected", note).await;
    Ok(Action::requeue(Duration::ZERO))
}

async fn cleanup(dataset: &Dataset, ctx: &Context) -> Result<Action> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(entries: usize) -> Dataset {
        let text = include_str!("../../../examples/dataset.yaml");
        let mut dataset: Dataset = serde_yaml::from_str(text).unwrap();
        let first = dataset.spec.commits[0].clone();
        dataset.spec.commits = vec![first; entries];
        dataset.metadata.generation = Some(1);
        dataset
    }

    fn commit(id: u32, entry: u32) -> DatasetCommitStatus {
        DatasetCommitStatus {
            id,
            entry,
            created_at: Time(Timestamp::UNIX_EPOCH),
            message: String::new(),
            tags: Default::default(),
            path: String::new(),
            statistics: Default::default(),
        }
    }

    #[test]
    fn entries_are_taken_in_order_skipping_processed_ones() {
        let mut d = dataset(3);
        assert_eq!(d.next_entry(), Some(0));
        let mut status = DatasetStatus::default();
        assert!(record_commit(&mut status, &d, 0, commit(1, 0)));
        d.status = Some(status.clone());
        assert_eq!(d.next_entry(), Some(1));
        assert!(record_rejection(&mut status, &d, 1, "line 3: empty text"));
        d.status = Some(status.clone());
        assert_eq!(d.next_entry(), Some(2), "a rejected entry is done");
        assert!(
            record_commit(&mut status, &d, 2, commit(2, 2)),
            "the rejection took no id"
        );
        d.status = Some(status.clone());
        assert_eq!(d.next_entry(), None);
        assert_eq!(status.commit_count, 2);
        let ingested = conditions::find(&status.conditions, INGESTED).unwrap();
        assert_eq!(ingested.status, "True");
    }

    #[test]
    fn an_entry_a_stale_cache_still_shows_is_not_ingested_again() {
        let cached = dataset(2);
        let mut fresh = cached.clone();
        let mut status = DatasetStatus::default();
        assert!(record_commit(&mut status, &fresh, 0, commit(1, 0)));
        fresh.status = Some(status);
        assert!(still_next(&cached, 0, 1), "the cache says entry 0 is next");
        assert!(!still_next(&fresh, 0, 1), "the fresh read says it is recorded");
        assert!(still_next(&fresh, 1, 2));
        assert!(!still_next(&fresh, 1, 1), "an id computed from a stale count");
    }

    #[test]
    fn an_entry_is_recorded_once_and_ids_have_no_gaps() {
        let d = dataset(2);
        let mut status = DatasetStatus::default();
        assert!(record_commit(&mut status, &d, 0, commit(1, 0)));
        assert!(!record_commit(&mut status, &d, 0, commit(2, 0)), "entry 0 again");
        assert!(
            !record_commit(&mut status, &d, 1, commit(3, 1)),
            "id 3 would leave a gap"
        );
        assert!(!record_rejection(&mut status, &d, 1, "x") || status.rejected.len() == 1);
        assert!(!record_rejection(&mut status, &d, 1, "x"), "rejected once");
        let ingested = conditions::find(&status.conditions, INGESTED).unwrap();
        assert_eq!(ingested.reason, "Rejected");
        assert!(ingested.message.contains("spec.commits[1] rejected: x"));
    }
}
