//! Numeric ids that survive restarts, for the original API's integer ids (dataset ids, run ids):
//! a counter in a ConfigMap, advanced by compare-and-swap on its resourceVersion, so concurrent
//! allocations (even from two operator processes) never hand out the same id.
//!
//! An id is given once, into the object's **status** (`status.runId`, `status.datasetId`), which
//! only the operator writes: users' roles grant no `*/status`, so nobody can make an object answer
//! to an id the operator did not give it. The label of the same name only mirrors it for `kubectl
//! get -l`, and is put back when someone changes it.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use miniautoml_api::{
    Dataset, TrainingJob,
    labels::{DATASET_ID_LABEL, RUN_ID_LABEL},
};
use serde::{Serialize, de::DeserializeOwned};

use tokio::sync::oneshot;

use crate::{
    Error, Result,
    status::{is_conflict, modify_cached_status, retry_on_conflict},
};

/// ConfigMap (in the gRPC namespace) counting dataset ids.
pub const DATASET_IDS: &str = "miniautoml-dataset-ids";
/// ConfigMap (in the gRPC namespace) counting run ids.
pub const RUN_IDS: &str = "miniautoml-run-ids";

/// An object about to be created: (counter, namespace, name).
type PromiseKey = (&'static str, String, String);

/// How long an id promised to an object about to be created is kept.
const PROMISE_TTL: Duration = Duration::from_secs(600);

/// Allocates ids for one operator process. Concurrent allocations from the same counter are
/// grouped: whoever holds the counter's lock reserves ids for every caller waiting at that
/// moment with one compare-and-swap, so a burst of N TrainingJobs costs a few API round trips,
/// not N conflicting ones (the compare-and-swap still guards against other processes).
#[derive(Default)]
pub struct Ids {
    counters: std::sync::Mutex<BTreeMap<(String, String), Arc<Counter>>>,
    /// Ids allocated for objects about to be created (by the gRPC API), by (counter, namespace,
    /// name), with when: whoever assigns first — the gRPC call or the controller seeing the new
    /// object — gives it this id, so none is wasted. Kept for [`PROMISE_TTL`] (not removed at the
    /// first write, which would leave a moment where the other writer finds neither the id nor
    /// the promise and allocates one more).
    promised: std::sync::Mutex<BTreeMap<PromiseKey, (u64, Instant)>>,
}

#[derive(Default)]
struct Counter {
    waiting: std::sync::Mutex<Vec<oneshot::Sender<Result<u64>>>>,
    leader: tokio::sync::Mutex<()>,
}

impl Ids {
    /// The next id (from 1) of the counter ConfigMap `counter` in `namespace`.
    pub async fn allocate(&self, client: &Client, namespace: &str, counter: &str) -> Result<u64> {
        let entry = self
            .counters
            .lock()
            .expect("id counters")
            .entry((namespace.to_string(), counter.to_string()))
            .or_default()
            .clone();
        let (sender, mut receiver) = oneshot::channel();
        entry.waiting.lock().expect("id waiters").push(sender);
        let _leader = entry.leader.lock().await;
        if let Ok(served) = receiver.try_recv() {
            return served;
        }
        // Serve everyone waiting, this caller included, in arrival order.
        let batch = std::mem::take(&mut *entry.waiting.lock().expect("id waiters"));
        match reserve(client, namespace, counter, batch.len() as u64).await {
            Ok(first) => {
                for (offset, waiter) in batch.into_iter().enumerate() {
                    let _ = waiter.send(Ok(first + offset as u64));
                }
            }
            Err(Error::IdConflict(counter)) => {
                for waiter in batch {
                    let _ = waiter.send(Err(Error::IdConflict(counter.clone())));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for waiter in batch {
                    let _ = waiter.send(Err(Error::IdAllocation(error.clone())));
                }
            }
        }
        receiver
            .await
            .unwrap_or_else(|_| Err(Error::IdConflict(counter.to_string())))
    }
}

/// A TrainingJob's run id.
pub const RUN_ID: IdField<TrainingJob> = IdField {
    counter: RUN_IDS,
    label: RUN_ID_LABEL,
    get: TrainingJob::run_id,
    set: set_run_id,
};

/// A Dataset's dataset id.
pub const DATASET_ID: IdField<Dataset> = IdField {
    counter: DATASET_IDS,
    label: DATASET_ID_LABEL,
    get: Dataset::dataset_id,
    set: set_dataset_id,
};

fn set_run_id(job: &mut TrainingJob, id: u64) {
    job.status.get_or_insert_with(Default::default).run_id = Some(id.to_string());
}

fn set_dataset_id(dataset: &mut Dataset, id: u64) {
    dataset.status.get_or_insert_with(Default::default).dataset_id = Some(id.to_string());
}

/// Where an object keeps its id: the status field (read and written) and the mirroring label.
pub struct IdField<K> {
    /// The counter ConfigMap ([`RUN_IDS`] or [`DATASET_IDS`]).
    pub counter: &'static str,
    /// The label mirroring the id.
    pub label: &'static str,
    /// The id in the object's status.
    pub get: fn(&K) -> Option<u64>,
    /// Sets the id in the object's status.
    pub set: fn(&mut K, u64),
}

impl Ids {
    /// Promises `id` (allocated already) to the object `name` of `namespace` about to be
    /// created: [`Ids::assign`] gives it that id.
    pub fn promise<K>(&self, field: &IdField<K>, namespace: &str, name: &str, id: u64) {
        let mut promised = self.promised.lock().expect("promised ids");
        promised.retain(|_, (_, at)| at.elapsed() < PROMISE_TTL);
        promised.insert(
            (field.counter, namespace.into(), name.into()),
            (id, Instant::now()),
        );
    }

    /// Takes back the promise of [`Ids::promise`] (the object was not created).
    pub fn forget<K>(&self, field: &IdField<K>, namespace: &str, name: &str) {
        self.promised
            .lock()
            .expect("promised ids")
            .remove(&(field.counter, namespace.into(), name.into()));
    }

    /// The id of `object` (`api` is its namespace's): the one in its status, else the one
    /// promised to it or a new one from the counter in `namespace`, written into the status
    /// against the resourceVersion read (a concurrent writer that gave it one first wins, and
    /// this one's id is left unused). The label is then made to mirror it. Returns the
    /// id and the object as written; no API call when `object` has its id and the label
    /// mirrors it.
    pub async fn assign<K>(
        &self,
        client: &Client,
        namespace: &str,
        (api, object): (&Api<K>, &K),
        field: &IdField<K>,
    ) -> Result<(u64, K)>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    {
        self.assign_telling(client, namespace, (api, object), field, |_, _| {})
            .await
    }

    /// As [`Ids::assign`], telling `wrote` of each write it makes (the version it wrote over,
    /// the version written).
    pub async fn assign_telling<K>(
        &self,
        client: &Client,
        namespace: &str,
        (api, object): (&Api<K>, &K),
        field: &IdField<K>,
        mut wrote: impl FnMut(&K, &K),
    ) -> Result<(u64, K)>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    {
        if let Some(id) = (field.get)(object)
            && object.labels().get(field.label) == Some(&id.to_string())
        {
            return Ok((id, object.clone()));
        }
        let name = object.name_any();
        // The cache may lag a status this process wrote a moment ago: read it at the source.
        let mut current = api.get_status(&name).await?;
        let id = match (field.get)(&current) {
            Some(id) => id,
            None => {
                let key = (
                    field.counter,
                    object.meta().namespace.clone().unwrap_or_default(),
                    name.clone(),
                );
                // A concurrent assign of the same object (the gRPC call and the controller)
                // finds the same promise and writes the same id.
                let promised = self
                    .promised
                    .lock()
                    .expect("promised ids")
                    .get(&key)
                    .filter(|(_, at)| at.elapsed() < PROMISE_TTL)
                    .map(|(id, _)| *id);
                let new = match promised {
                    Some(id) => id,
                    None => self.allocate(client, namespace, field.counter).await?,
                };
                // From the version just read: a second read only after a lost race.
                let read = current;
                current = modify_cached_status(api, &read, |fresh| {
                    (field.get)(fresh).is_none() && {
                        (field.set)(fresh, new);
                        true
                    }
                })
                .await?;
                wrote(&read, &current);
                (field.get)(&current).ok_or_else(|| Error::IdConflict(field.counter.to_string()))?
            }
        };
        let shown = id.to_string();
        if current.labels().get(field.label) != Some(&shown) {
            let patch = serde_json::json!({"metadata": {"labels": {field.label: shown}}});
            let read = current;
            current = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            wrote(&read, &current);
        }
        Ok((id, current))
    }
}

/// The Dataset of `api`'s namespace whose `status.datasetId` is `id` (labels do not count).
pub async fn find_dataset(api: &Api<Dataset>, id: u64) -> Result<Option<Dataset>> {
    let list = api.list(&kube::api::ListParams::default()).await?;
    Ok(list.items.into_iter().find(|d| d.dataset_id() == Some(id)))
}

/// Reserves `count` consecutive ids of the counter ConfigMap `counter` in `namespace`; returns
/// the first.
async fn reserve(client: &Client, namespace: &str, counter: &str, count: u64) -> Result<u64> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let reserved = retry_on_conflict(|| async {
        let Some(mut map) = maps.get_opt(counter).await? else {
            let map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(counter.into()),
                    ..Default::default()
                },
                data: Some([("next".to_string(), (1 + count).to_string())].into()),
                ..Default::default()
            };
            // Another process creating it first is a conflict too: read it again.
            return maps.create(&PostParams::default(), &map).await.map(|_| 1);
        };
        let next: u64 = map
            .data
            .as_ref()
            .and_then(|d| d.get("next"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        map.data
            .get_or_insert_with(BTreeMap::new)
            .insert("next".into(), (next + count).to_string());
        maps.replace(counter, &PostParams::default(), &map)
            .await
            .map(|_| next)
    })
    .await;
    match reserved {
        Err(error) if is_conflict(&error) => Err(Error::IdConflict(counter.to_string())),
        other => Ok(other?),
    }
}
