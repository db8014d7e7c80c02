//! Fencing the storage of deleted resources against writes that land after their clean-up.
//!
//! Deleting a Dataset or TrainingJob whose storage is not retained clears its prefixes in the
//! finalizer. A write already on its way can still land afterwards: a put an operator sent just
//! before it was killed, or a trainer's upload, held up by a frozen store, is stored when the
//! store resumes, and no live process knows its resource is gone. So the clean-up ([`bury`])
//! first writes a tombstone, `tombstones/<namespace>/<uid>.json`, then clears the prefixes; the
//! leader [`sweep`]s every tombstone every [`SWEEP_EVERY`], deleting whatever has appeared under
//! its prefixes since, and removes a tombstone [`GRACE`] after the clean-up.
//!
//! A TrainingJob's prefixes carry its uid, so only its late writers can write there. A Dataset's
//! are named after the Dataset: once a new Dataset of the same name exists they are its, and the
//! sweep drops the old tombstone without touching them.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Api, Resource, ResourceExt};
use miniautoml_api::{Dataset, TrainingJob};
use miniautoml_data::{StorageError, Store, layout};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Result, context::Context};

/// How often the leader sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// How long after a clean-up its tombstone is kept (and its prefixes swept): far longer than a
/// write can be held up by a store that is restarted or frozen and comes back.
pub const GRACE: Duration = Duration::from_secs(15 * 60);

/// What a clean-up cleared: the deleted resource (its prefixes follow from it, so a tombstone
/// cannot name any other storage) and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    /// `Dataset` or `TrainingJob`.
    pub kind: String,
    /// Namespace of the resource.
    pub namespace: String,
    /// Name of the resource.
    pub name: String,
    /// Uid of the resource.
    pub uid: String,
    /// When the clean-up started.
    pub cleared_at: Time,
}

/// Who has the tombstone's name now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// No resource of that name exists.
    Nobody,
    /// The deleted resource itself, still finishing its deletion.
    Deleted,
    /// A new resource of the same name.
    Successor,
}

/// What a sweep does with one tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delete what is under its prefixes; `remove` the tombstone too once its grace is over.
    Sweep {
        /// Whether the tombstone is removed after this sweep.
        remove: bool,
    },
    /// Remove the tombstone and leave the prefixes alone (they are a new resource's).
    Drop,
}

impl Tombstone {
    /// The tombstone of `object`, cleared now; `None` for an object without a namespace or uid.
    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Option<Tombstone> {
        Some(Tombstone {
            kind: K::kind(&()).into_owned(),
            namespace: object.namespace()?,
            name: object.name_any(),
            uid: object.uid()?,
            cleared_at: Time(Timestamp::now()),
        })
    }

    /// The key of this tombstone.
    pub fn key(&self) -> String {
        layout::tombstone(&self.namespace, &self.uid)
    }

    /// The prefixes the resource wrote under (none for a kind that stores nothing).
    pub fn prefixes(&self) -> Vec<String> {
        let (namespace, name, uid) = (&self.namespace, &self.name, &self.uid);
        if self.kind == TrainingJob::kind(&()) {
            vec![
                layout::model_prefix(namespace, name, uid),
                layout::run_prefix(namespace, name, uid),
            ]
        } else if self.name_keyed() {
            vec![layout::dataset_prefix(namespace, name)]
        } else {
            Vec::new()
        }
    }

    /// Whether its prefixes are named after the resource's name rather than its uid.
    pub fn name_keyed(&self) -> bool {
        self.kind == Dataset::kind(&())
    }
}

/// What to do with `tombstone`, whose name `holder` has, `age` after its clean-up.
pub fn judge(tombstone: &Tombstone, holder: Holder, age: Duration) -> Verdict {
    if tombstone.name_keyed() && holder == Holder::Successor {
        return Verdict::Drop;
    }
    Verdict::Sweep { remove: age >= GRACE }
}

/// Clears a deleted resource's storage behind a tombstone; returns how many objects were
/// deleted. Writing the tombstone first means a late write is swept even if this process dies
/// right after.
pub async fn bury(store: &Store, tombstone: &Tombstone) -> Result<usize> {
    let body = serde_json::to_vec(tombstone).expect("a tombstone serializes");
    store.put(&tombstone.key(), body, "application/json").await?;
    let mut deleted = 0;
    for prefix in tombstone.prefixes() {
        deleted += store.delete_prefix(&prefix).await?;
    }
    Ok(deleted)
}

/// Sweeps every tombstone of the watched namespaces once; returns how many late objects it
/// deleted.
pub async fn sweep(ctx: &Context, store: &Store) -> Result<usize> {
    let prefix = layout::tombstones_prefix(ctx.watch_namespace.as_deref());
    let mut deleted = 0;
    for key in store.list(&store.bucket, &prefix).await? {
        let body = match store.read(&key).await {
            Ok(body) => body,
            // Removed since the listing (by a replica that led a moment ago).
            Err(StorageError::NotFound(_)) => continue,
            Err(error) => return Err(error.into()),
        };
        let tombstone = match serde_json::from_slice::<Tombstone>(&body) {
            Ok(tombstone) if tombstone.key() == key => tombstone,
            Ok(_) | Err(_) => {
                warn!(key, "not a tombstone of this operator; left alone");
                continue;
            }
        };
        // List first, then look at the name: whatever was listed existed before a successor,
        // if there is none now.
        let mut late = Vec::new();
        for prefix in tombstone.prefixes() {
            late.extend(store.list(&store.bucket, &prefix).await?);
        }
        let holder = if tombstone.name_keyed() {
            holder(ctx, &tombstone).await?
        } else {
            Holder::Nobody
        };
        let age = Timestamp::now()
            .duration_since(tombstone.cleared_at.0)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let remove = match judge(&tombstone, holder, age) {
            Verdict::Drop => true,
            Verdict::Sweep { remove } => {
                for prefix in tombstone.prefixes() {
                    store.abort_uploads(&prefix).await?;
                }
                store.delete_keys(&late).await?;
                if !late.is_empty() {
                    warn!(
                        kind = tombstone.kind,
                        namespace = tombstone.namespace,
                        name = tombstone.name,
                        objects = late.len(),
                        "deleted objects written after the resource's storage was cleared"
                    );
                    ctx.metrics.late_objects_deleted(late.len());
                    deleted += late.len();
                }
                remove
            }
        };
        if remove {
            store.delete_keys(&[key]).await?;
        }
    }
    Ok(deleted)
}

/// Who has a name-keyed tombstone's name now.
async fn holder(ctx: &Context, tombstone: &Tombstone) -> Result<Holder> {
    let datasets: Api<Dataset> = Api::namespaced(ctx.client.clone(), &tombstone.namespace);
    Ok(match datasets.get_opt(&tombstone.name).await? {
        None => Holder::Nobody,
        Some(dataset) if dataset.uid().as_deref() == Some(tombstone.uid.as_str()) => Holder::Deleted,
        Some(_) => Holder::Successor,
    })
}

/// Sweeps every [`SWEEP_EVERY`] while this replica leads, until `shutdown` fires.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let Some(store) = ctx.store.clone() else {
        return;
    };
    loop {
        if ctx.leadership.is_leading() {
            match sweep(&ctx, &store).await {
                Ok(0) => {}
                Ok(deleted) => info!(deleted, "tombstone sweep deleted late objects"),
                Err(error) => warn!(%error, "tombstone sweep failed; trying again"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tombstone(kind: &str) -> Tombstone {
        Tombstone {
            kind: kind.to_string(),
            namespace: "team".to_string(),
            name: "tweets".to_string(),
            uid: "u-1".to_string(),
            cleared_at: Time("2026-12-03T04:09:40Z".parse().unwrap()),
        }
    }

    #[test]
    fn a_run_tombstone_names_the_runs_own_prefixes() {
        let run = tombstone("TrainingJob");
        assert_eq!(run.key(), "tombstones/team/u-1.json");
        assert_eq!(
            run.prefixes(),
            ["models/team/tweets/u-1/", "runs/team/tweets/u-1/"]
        );
        assert_eq!(tombstone("Dataset").prefixes(), ["datasets/team/tweets/"]);
        assert!(tombstone("ModelDeployment").prefixes().is_empty());
    }

    #[test]
    fn tombstones_read_back() {
        let run = tombstone("TrainingJob");
        let text = serde_json::to_string(&run).unwrap();
        assert!(text.contains("\"clearedAt\":\"2026-12-03T04:09:40Z\""), "{text}");
        assert_eq!(serde_json::from_str::<Tombstone>(&text).unwrap(), run);
    }

    #[test]
    fn a_tombstone_is_swept_until_its_grace_is_over() {
        let run = tombstone("TrainingJob");
        let young = Duration::from_secs(60);
        assert_eq!(
            judge(&run, Holder::Nobody, young),
            Verdict::Sweep { remove: false }
        );
        assert_eq!(
            judge(&run, Holder::Nobody, GRACE),
            Verdict::Sweep { remove: true }
        );
        // A run's prefixes carry its uid: a new run of the same name writes elsewhere.
        assert_eq!(
            judge(&run, Holder::Successor, young),
            Verdict::Sweep { remove: false }
        );
    }

    #[test]
    fn a_dataset_of_the_same_name_takes_its_prefixes_over() {
        let dataset = tombstone("Dataset");
        let young = Duration::from_secs(60);
        assert_eq!(judge(&dataset, Holder::Successor, young), Verdict::Drop);
        assert_eq!(
            judge(&dataset, Holder::Deleted, young),
            Verdict::Sweep { remove: false }
        );
        assert_eq!(
            judge(&dataset, Holder::Nobody, GRACE),
            Verdict::Sweep { remove: true }
        );
    }
}
