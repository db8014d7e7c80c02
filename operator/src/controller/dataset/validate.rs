//! What the Dataset's reconcile does next, decided from the Dataset alone (pure): nothing (every
//! entry processed), wait for storage to be configured, refuse an entry whose source the
//! namespace may not read (before any read), or ingest the next entry as the next commit.

use miniautoml_api::{Dataset, ObjectSource, dataset::READY};

use super::status::ingesting;
use crate::{conditions, sources::SourcePolicy};

/// The next step for a Dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every `spec.commits` entry is committed or rejected.
    Done,
    /// The operator has no object storage: nothing can be ingested.
    NotConfigured,
    /// `spec.commits[entry]` names a source the namespace may not read: rejected unread, said as
    /// for a missing one.
    Refused {
        /// The entry.
        entry: usize,
        /// Why, in the words a missing source gets.
        message: String,
    },
    /// `spec.commits[entry]` is next, to become commit `id`.
    Next {
        /// The entry.
        entry: usize,
        /// Its commit id (commits are numbered without gaps; a rejection takes none).
        id: u32,
    },
}

/// The next step for `dataset` in `namespace`, with object storage `configured` or not and
/// the namespace's readable `sources`.
pub fn next_step(dataset: &Dataset, namespace: &str, configured: bool, sources: &SourcePolicy) -> Step {
    let Some(entry) = dataset.next_entry() else {
        return Step::Done;
    };
    if !configured {
        return Step::NotConfigured;
    }
    let source = &dataset.spec.commits[entry].source;
    let allowed = match (&source.bucket, source.key.as_ref().or(source.prefix.as_ref())) {
        (Some(bucket), Some(key)) => sources.allows(namespace, bucket, key),
        _ => false,
    };
    if !allowed && source.url.is_none() {
        let message = unavailable(sources, namespace, source);
        return Step::Refused { entry, message };
    }
    let id = dataset.status.as_ref().map_or(0, |s| s.commit_count) + 1;
    Step::Next { entry, id }
}

/// What a source the namespace may not read, or that is missing, is answered: the same words
/// for both, so a refusal tells nothing about what exists.
pub fn unavailable(sources: &SourcePolicy, namespace: &str, source: &ObjectSource) -> String {
    let bucket = source.bucket.as_deref().unwrap_or_default();
    let key = source.key.as_ref().or(source.prefix.as_ref());
    sources.unavailable(namespace, bucket, key.map(String::as_str).unwrap_or_default())
}

/// Whether `dataset`'s status already says it is ingesting `spec.commits[entry]` as commit `id`
/// (so the ingestion itself comes next, and the user saw it start).
pub fn announced(dataset: &Dataset, entry: usize, id: u32) -> bool {
    let Some(status) = &dataset.status else {
        return false;
    };
    conditions::find(&status.conditions, READY).is_some_and(|ready| {
        ready.reason == "Ingesting"
            && ready.observed_generation == dataset.metadata.generation
            && ready.message == ingesting(dataset, entry, id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::dataset::status::{Found, record};

    fn dataset() -> Dataset {
        let mut dataset: Dataset =
            serde_yaml::from_str(include_str!("../../../../examples/dataset.yaml")).unwrap();
        dataset.metadata.generation = Some(1);
        dataset
    }

    #[test]
    fn the_next_entry_is_ingested_only_from_a_source_the_namespace_may_read() {
        let sources = SourcePolicy::new("miniautoml", &[]).unwrap();
        let d = dataset();
        // examples/dataset.yaml reads raw/default/…: the default namespace's own upload prefix.
        assert_eq!(
            next_step(&d, "default", true, &sources),
            Step::Next { entry: 0, id: 1 }
        );
        assert_eq!(next_step(&d, "default", false, &sources), Step::NotConfigured);
        match next_step(&d, "team-b", true, &sources) {
            Step::Refused { entry: 0, message } => {
                assert_eq!(
                    message,
                    sources.unavailable(
                        "team-b",
                        "miniautoml",
                        &d.spec.commits[0].source.key.clone().unwrap()
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        let mut done = d.clone();
        done.spec.commits.clear();
        assert_eq!(next_step(&done, "default", true, &sources), Step::Done);
    }

    #[test]
    fn an_entry_is_announced_for_its_own_generation_entry_and_id() {
        let mut d = dataset();
        assert!(!announced(&d, 0, 1), "no status yet");
        let at =
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        record(&mut d, &Found::Ingesting { entry: 0, id: 1 }, &at);
        assert!(announced(&d, 0, 1));
        assert!(!announced(&d, 0, 2), "another id");
        d.metadata.generation = Some(2);
        assert!(!announced(&d, 0, 1), "a spec changed since");
    }
}
