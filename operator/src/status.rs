//! Writes that race other writers, by read-modify-write against the resourceVersion read: the
//! controllers, the snapshot builds and the metadata store all write the same statuses (and the
//! id counters and Dataset specs are shared by every call), so none overwrites another's fields.
//! [`retry_on_conflict`] is the one retry loop for a write that lost such a race.

use std::{
    collections::HashMap,
    fmt::Debug,
    future::Future,
    sync::Mutex,
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable};
use kube::{Api, Resource, api::PostParams};
use serde::{Serialize, de::DeserializeOwned};

use crate::Result;

/// How long [`Written`] keeps an object the watch cache has not shown yet.
const WRITTEN_TTL: Duration = Duration::from_secs(60);

/// How many locks [`Written::write`] spreads objects over.
const WRITE_LOCKS: usize = 256;

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

/// What this process last wrote of each object, kept until the watch cache shows it. Under
/// load the cache lags the API server by seconds, and every pod event wakes a run's reconcile:
/// one that started from the lagging cache would write against a stale resourceVersion (a
/// conflict, a GET, the write again) and take a status it wrote itself for news. Starting from
/// [`Written::freshest`] instead, a reconcile or report sees this process's own writes at once.
///
/// Only resourceVersions this process saw replaced are trusted as older: a cached object at
/// any other version (someone else wrote it since) is taken as it is and the entry dropped.
///
/// [`Written::write`] also takes turns per object, so this process's writers of one status
/// (the controller, the metadata store) never race each other: each starts from the last
/// one's result. Only a writer elsewhere (a user, `kubectl`) still costs a conflict.
pub struct Written<K> {
    entries: Mutex<Entries<K>>,
    turns: Vec<tokio::sync::Mutex<()>>,
}

struct Entries<K> {
    by_object: HashMap<(String, String), Entry<K>>,
    pruned: Instant,
}

struct Entry<K> {
    /// The resourceVersions `latest` replaced, directly or through writes before it.
    replaced: Vec<String>,
    latest: K,
    at: Instant,
}

impl<K> Default for Written<K> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(Entries {
                by_object: HashMap::new(),
                pruned: Instant::now(),
            }),
            turns: (0..WRITE_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

fn object_key<K: Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl<K> Written<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    /// Writes the status `change` makes of `cached` (or of what this process wrote of it
    /// since), after any write of it this process has under way, and records the result; as
    /// [`modify_cached_status`] otherwise.
    pub async fn write(&self, api: &Api<K>, cached: &K, change: impl FnMut(&mut K) -> bool) -> Result<K> {
        let turn = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(object_key(cached));
            &self.turns[(hash % WRITE_LOCKS as u64) as usize]
        };
        let _turn = turn.lock().await;
        let base = self.freshest(cached);
        let written = modify_cached_status(api, &base, change).await?;
        self.record(&[cached, &base], &written);
        Ok(written)
    }
}

impl<K: Resource + Clone> Written<K> {
    /// `cached`, or what this process wrote of it since, where the cache has not shown that yet.
    pub fn freshest(&self, cached: &K) -> K {
        let mut entries = self.entries.lock().expect("written objects");
        let key = object_key(cached);
        let Some(entry) = entries.by_object.get(&key) else {
            return cached.clone();
        };
        let version = cached.meta().resource_version.as_ref();
        let same_object = entry.latest.meta().uid == cached.meta().uid;
        if same_object && version.is_some_and(|v| entry.replaced.contains(v)) {
            return entry.latest.clone();
        }
        // The cache shows the write, or a later one: it is current again.
        entries.by_object.remove(&key);
        cached.clone()
    }

    /// Records that `written` replaced `bases` (the versions a reconcile or report started
    /// from and wrote over).
    pub fn record(&self, bases: &[&K], written: &K) {
        let Some(version) = written.meta().resource_version.clone() else {
            return;
        };
        let mut entries = self.entries.lock().expect("written objects");
        let now = Instant::now();
        if entries.pruned.elapsed() > WRITTEN_TTL {
            entries.by_object.retain(|_, e| e.at.elapsed() < WRITTEN_TTL);
            entries.pruned = now;
        }
        let key = object_key(written);
        let mut replaced = match entries.by_object.remove(&key) {
            Some(entry) if entry.latest.meta().uid == written.meta().uid => {
                let mut replaced = entry.replaced;
                replaced.extend(entry.latest.meta().resource_version.clone());
                replaced
            }
            _ => Vec::new(),
        };
        replaced.extend(bases.iter().filter_map(|b| b.meta().resource_version.clone()));
        replaced.retain(|v| *v != version);
        if replaced.is_empty() {
            return;
        }
        replaced.sort();
        replaced.dedup();
        entries.by_object.insert(
            key,
            Entry {
                replaced,
                latest: written.clone(),
                at: now,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn map(uid: &str, version: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some("a".into()),
                name: Some("m".into()),
                uid: Some(uid.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            data: Some([("v".to_string(), value.to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_lagging_cache_is_read_through_this_process_s_writes_until_it_shows_them() {
        let written = Written::default();
        let v1 = map("u", "1", "first");
        assert_eq!(written.freshest(&v1), v1);
        // Two writes in a row (an id, then a status): the cache may show either older version.
        let v2 = map("u", "2", "id");
        written.record(&[&v1], &v2);
        let v3 = map("u", "3", "status");
        written.record(&[&v2], &v3);
        assert_eq!(written.freshest(&v1), v3);
        assert_eq!(written.freshest(&v2), v3);
        // The cache caught up: it is read again, and the entry is gone.
        assert_eq!(written.freshest(&v3), v3);
        assert_eq!(written.freshest(&v1), v1);
    }

    #[test]
    fn a_version_this_process_did_not_replace_wins_and_so_does_a_new_object_of_the_name() {
        let written = Written::default();
        let v1 = map("u", "1", "first");
        let v2 = map("u", "2", "ours");
        written.record(&[&v1], &v2);
        // Someone else wrote after us: their version is taken as it is.
        let theirs = map("u", "7", "theirs");
        assert_eq!(written.freshest(&theirs), theirs);
        assert_eq!(written.freshest(&v1), v1);
        // The name deleted and made again: the new object's versions are never ours.
        written.record(&[&v1], &v2);
        let reborn = map("other", "1", "new");
        assert_eq!(written.freshest(&reborn), reborn);
    }

    #[test]
    fn an_unchanged_write_records_nothing() {
        let written = Written::default();
        let v1 = map("u", "1", "first");
        written.record(&[&v1], &v1);
        let other = map("u", "1", "edited in memory only");
        assert_eq!(written.freshest(&other), other);
    }
}
