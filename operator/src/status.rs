//! Writes that race other writers, by read-modify-write against the resourceVersion read: the
//! controllers, the snapshot builds and the metadata store all write the same statuses (and the
//! id counters and Dataset specs are shared by every call), so none overwrites another's fields.
//! [`retry_on_conflict`] is the one retry loop for a write that lost such a race.

use std::{fmt::Debug, future::Future, sync::Mutex, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use kube::{Api, Resource, api::PostParams};
use serde::{Serialize, de::DeserializeOwned};

use crate::Result;

/// How many times a write that lost a race to another writer is tried again from a fresh read.
const CONFLICT_RETRIES: usize = 10;

/// Whether `error` is the API server refusing a write against a stale resourceVersion.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// An error that may mean a write lost a race (and is worth trying again from a fresh read).
pub trait Conflict {
    /// Whether it does.
    fn is_conflict(&self) -> bool;
}

impl Conflict for kube::Error {
    fn is_conflict(&self) -> bool {
        is_conflict(self)
    }
}

impl Conflict for crate::Error {
    fn is_conflict(&self) -> bool {
        matches!(self.root(), crate::Error::Kube(error) if is_conflict(error))
    }
}

/// gRPC's name for a lost race.
impl Conflict for tonic::Status {
    fn is_conflict(&self) -> bool {
        self.code() == tonic::Code::Aborted
    }
}

/// Runs `attempt` (which reads, changes and writes) until it does not lose a race, at most
/// [`CONFLICT_RETRIES`] times more, a few jittered milliseconds apart; returns its last result.
pub async fn retry_on_conflict<T, E, F, Fut>(attempt: F) -> Result<T, E>
where
    E: Conflict,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(200))
        .with_max_times(CONFLICT_RETRIES)
        .with_jitter();
    attempt.retry(backoff).when(E::is_conflict).await
}

/// Reads `name`, lets `change` edit it (returning whether it changed anything) and writes its
/// status back with the read's resourceVersion, retrying on conflicts. Returns the object as
/// written (or as read when unchanged).
pub async fn modify_status<K>(api: &Api<K>, name: &str, change: impl FnMut(&mut K) -> bool) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let change = Mutex::new(change);
    let written = retry_on_conflict(|| async {
        let mut object = api.get_status(name).await?;
        if !(change.lock().expect("status change"))(&mut object) {
            return Ok(object);
        }
        api.replace_status(name, &PostParams::default(), &object).await
    })
    .await?;
    Ok(written)
}

/// As [`modify_status`], starting from `cached` (an object from the watch cache) instead of a
/// read: nothing is sent when `change` changes nothing, and a write with a stale
/// resourceVersion is refused by the server and retried from a fresh read.
pub async fn modify_cached_status<K>(
    api: &Api<K>,
    cached: &K,
    mut change: impl FnMut(&mut K) -> bool,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut object = cached.clone();
    if !change(&mut object) {
        return Ok(object);
    }
    let name = object.meta().name.clone().unwrap_or_default();
    match api.replace_status(&name, &PostParams::default(), &object).await {
        Ok(written) => Ok(written),
        Err(error) if is_conflict(&error) => modify_status(api, &name, change).await,
        Err(error) => Err(error.into()),
    }
}
