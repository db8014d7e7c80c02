//! The Dataset's status from what its reconcile found (pure): [`record`] is the one function
//! the status write applies, to the cached object and, after a conflict, to a fresh read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use miniautoml_api::{
    Dataset, DatasetCommitStatus, DatasetStatus, RejectedCommit,
    dataset::{INGESTED, READY},
};

use crate::conditions::{self, ACCEPTED};

/// What a Dataset's reconcile found or did.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// Every entry is processed.
    Done,
    /// The operator has no object storage.
    NotConfigured,
    /// `spec.commits[entry]` is about to be ingested as commit `id`.
    Ingesting {
        /// The entry.
        entry: usize,
        /// Its commit id.
        id: u32,
    },
    /// `spec.commits[entry]` is ingested as `commit`.
    Committed {
        /// The entry.
        entry: usize,
        /// The commit, with its statistics.
        commit: DatasetCommitStatus,
    },
    /// `spec.commits[entry]` cannot be used and is rejected for good (it takes no commit id).
    Rejected {
        /// The entry.
        entry: usize,
        /// Why.
        message: String,
    },
    /// Storage refused the operator or was down: `spec.commits[entry]` waits and is retried.
    Waiting {
        /// The entry.
        entry: usize,
        /// `StorageDenied` or `StorageUnavailable`.
        reason: &'static str,
        /// What storage said.
        message: String,
    },
}

/// Describes where `spec.commits[entry]`'s data comes from.
pub fn source_text(dataset: &Dataset, entry: usize) -> String {
    let source = &dataset.spec.commits[entry].source;
    match (&source.url, &source.bucket, &source.key, &source.prefix) {
        (Some(url), ..) => url.clone(),
        (None, Some(bucket), Some(key), _) => format!("s3://{bucket}/{key}"),
        (None, Some(bucket), None, Some(prefix)) => format!("s3://{bucket}/{prefix}"),
        _ => "an incomplete source".into(),
    }
}

/// The `Ready` message while `spec.commits[entry]` is ingested as commit `id`.
pub fn ingesting(dataset: &Dataset, entry: usize, id: u32) -> String {
    format!(
        "ingesting spec.commits[{entry}] from {} as commit {id}",
        source_text(dataset, entry)
    )
}

/// What `found` means for `dataset`'s status, as of `now`; true when anything changed. The spec's
/// generation is accepted (its schema and CEL rules did the validation); `Ready` says what
/// happens next: the next entry's ingestion, or that every entry is processed.
pub fn record(dataset: &mut Dataset, found: &Found, now: &Time) -> bool {
    let current = dataset.clone();
    let generation = dataset.metadata.generation;
    let status = dataset.status.get_or_insert_with(Default::default);
    let at = conditions::At { generation, now };
    let set = |status: &mut DatasetStatus, type_: &str, ok: bool, reason: &str, message: String| {
        at.set(&mut status.conditions, type_, ok, reason, message)
    };
    let mut changed = set(status, ACCEPTED, true, "Valid", "The spec is valid".into());
    if status.observed_generation != generation {
        status.observed_generation = generation;
        changed = true;
    }
    let processed = match found {
        Found::Done => true,
        Found::NotConfigured => {
            let message = "object storage is not configured: start the operator with \
                           AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and --s3-endpoint for MinIO)";
            changed |= set(status, READY, false, "StorageNotConfigured", message.into());
            false
        }
        Found::Ingesting { entry, id } => {
            changed |= set(
                status,
                READY,
                false,
                "Ingesting",
                ingesting(&current, *entry, *id),
            );
            false
        }
        Found::Committed { entry, commit } => {
            if !record_commit(status, &current, *entry, commit.clone(), now) {
                return changed;
            }
            changed = true;
            true
        }
        Found::Rejected { entry, message } => {
            if !record_rejection(status, &current, *entry, message, now) {
                return changed;
            }
            changed = true;
            true
        }
        Found::Waiting {
            entry,
            reason,
            message,
        } => {
            let message = format!("spec.commits[{entry}] waits: {message}");
            changed |= set(status, READY, false, reason, message);
            false
        }
    };
    if processed {
        let mut after = current;
        after.status = Some(status.clone());
        let (reason, message) = match after.next_entry() {
            // The next entry's ingestion: the next reconcile finds it announced.
            Some(entry) => ("Ingesting", ingesting(&after, entry, status.commit_count + 1)),
            None => (
                "Ingested",
                format!(
                    "{} commits ingested ({} examples); {} entries rejected",
                    status.commit_count,
                    status.total_examples,
                    status.rejected.len()
                ),
            ),
        };
        changed |= set(status, READY, after.next_entry().is_none(), reason, message);
    }
    changed
}

/// Records an ingested commit; false when the entry was recorded meanwhile, or its id would
/// leave a gap.
fn record_commit(
    status: &mut DatasetStatus,
    dataset: &Dataset,
    entry: usize,
    commit: DatasetCommitStatus,
    now: &Time,
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
    let at = conditions::At { generation, now };
    at.set(&mut status.conditions, INGESTED, true, "Ingested", message);
    true
}

/// Records a rejected entry; false when it was recorded meanwhile.
fn record_rejection(
    status: &mut DatasetStatus,
    dataset: &Dataset,
    entry: usize,
    message: &str,
    now: &Time,
) -> bool {
    let index = entry as u32;
    if status.rejected.iter().any(|r| r.entry == index) {
        return false;
    }
    let text = format!("spec.commits[{entry}] rejected: {message}");
    status.rejected.push(RejectedCommit {
        entry: index,
        message: message.chars().take(2000).collect(),
        rejected_at: now.clone(),
    });
    let generation = dataset.metadata.generation;
    let at = conditions::At { generation, now };
    at.set(&mut status.conditions, INGESTED, false, "Rejected", text);
    true
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::controller::dataset::validate::{Step, announced, next_step};

    pub(crate) fn dataset(entries: usize) -> Dataset {
        let text = include_str!("../../../../examples/dataset.yaml");
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

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn ready(dataset: &Dataset) -> (String, String) {
        let status = dataset.status.as_ref().unwrap();
        let ready = conditions::find(&status.conditions, READY).unwrap();
        (ready.status.clone(), ready.reason.clone())
    }

    #[test]
    fn entries_are_taken_in_order_skipping_processed_ones() {
        let mut d = dataset(3);
        assert_eq!(d.next_entry(), Some(0));
        assert!(record(&mut d, &Found::Ingesting { entry: 0, id: 1 }, &at(1)));
        assert!(announced(&d, 0, 1));
        let committed = Found::Committed {
            entry: 0,
            commit: commit(1, 0),
        };
        assert!(record(&mut d, &committed, &at(2)));
        assert_eq!(d.next_entry(), Some(1));
        // Ready announces the next entry: its reconcile ingests at once.
        assert!(announced(&d, 1, 2));
        assert_eq!(ready(&d), ("False".into(), "Ingesting".into()));
        let rejected = Found::Rejected {
            entry: 1,
            message: "line 3: empty text".into(),
        };
        assert!(record(&mut d, &rejected, &at(3)));
        assert_eq!(d.next_entry(), Some(2), "a rejected entry is done");
        assert!(announced(&d, 2, 2), "the rejection took no id");
        let last = Found::Committed {
            entry: 2,
            commit: commit(2, 2),
        };
        assert!(record(&mut d, &last, &at(4)));
        assert_eq!(d.next_entry(), None);
        let status = d.status.clone().unwrap();
        assert_eq!(status.commit_count, 2);
        assert_eq!(status.rejected[0].rejected_at, at(3));
        let ingested = conditions::find(&status.conditions, INGESTED).unwrap();
        assert_eq!(ingested.status, "True");
        assert_eq!(ready(&d), ("True".into(), "Ingested".into()));
        assert!(!record(&mut d, &Found::Done, &at(5)), "nothing new");
    }

    #[test]
    fn an_entry_a_stale_cache_still_shows_is_not_ingested_again() {
        // The driver decides again on a fresh read before it ingests.
        let sources = crate::sources::SourcePolicy::new("miniautoml", &[]).unwrap();
        let next = |d: &Dataset| next_step(d, "default", true, &sources);
        let cached = dataset(2);
        let mut fresh = cached.clone();
        let committed = Found::Committed {
            entry: 0,
            commit: commit(1, 0),
        };
        assert!(record(&mut fresh, &committed, &at(1)));
        assert_eq!(
            next(&cached),
            Step::Next { entry: 0, id: 1 },
            "the cache says entry 0"
        );
        assert_eq!(
            next(&fresh),
            Step::Next { entry: 1, id: 2 },
            "the fresh read: entry 1"
        );
    }

    #[test]
    fn an_entry_is_recorded_once_and_ids_have_no_gaps() {
        let mut d = dataset(2);
        let first = |id| Found::Committed {
            entry: 0,
            commit: commit(id, 0),
        };
        assert!(record(&mut d, &first(1), &at(1)));
        assert!(!record(&mut d, &first(2), &at(2)), "entry 0 again");
        let gap = Found::Committed {
            entry: 1,
            commit: commit(3, 1),
        };
        assert!(!record(&mut d, &gap, &at(3)), "id 3 would leave a gap");
        let rejected = Found::Rejected {
            entry: 1,
            message: "x".into(),
        };
        assert!(record(&mut d, &rejected, &at(4)));
        assert!(!record(&mut d, &rejected, &at(5)), "rejected once");
        let status = d.status.unwrap();
        let ingested = conditions::find(&status.conditions, INGESTED).unwrap();
        assert_eq!(ingested.reason, "Rejected");
        assert!(ingested.message.contains("spec.commits[1] rejected: x"));
    }

    #[test]
    fn a_waiting_entry_says_why_and_a_new_generation_is_accepted() {
        let mut d = dataset(1);
        let waiting = Found::Waiting {
            entry: 0,
            reason: "StorageUnavailable",
            message: "connection refused".into(),
        };
        assert!(record(&mut d, &waiting, &at(1)));
        assert_eq!(ready(&d), ("False".into(), "StorageUnavailable".into()));
        assert!(!announced(&d, 0, 1), "a wait is not an announcement");
        d.metadata.generation = Some(2);
        assert!(record(&mut d, &waiting, &at(2)));
        assert_eq!(d.status.as_ref().unwrap().observed_generation, Some(2));
    }
}
