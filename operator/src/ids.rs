//! Numeric ids that survive restarts, for the original API's integer ids (dataset ids, run ids):
//! a counter in a ConfigMap, advanced by compare-and-swap on its resourceVersion, so concurrent
//! allocations (even from two operator processes) never hand out the same id.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use tokio::sync::oneshot;

use crate::{
    Error, Result,
    status::{is_conflict, retry_on_conflict},
};

/// ConfigMap (in the gRPC namespace) counting dataset ids.
pub const DATASET_IDS: &str = "miniautoml-dataset-ids";
/// ConfigMap (in the gRPC namespace) counting run ids.
pub const RUN_IDS: &str = "miniautoml-run-ids";

/// Allocates ids for one operator process. Concurrent allocations from the same counter are
/// grouped: whoever holds the counter's lock reserves ids for every caller waiting at that
/// moment with one compare-and-swap, so a burst of N TrainingJobs costs a few API round trips,
/// not N conflicting ones (the compare-and-swap still guards against other processes).
#[derive(Default)]
pub struct Ids {
    counters: std::sync::Mutex<BTreeMap<(String, String), Arc<Counter>>>,
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
