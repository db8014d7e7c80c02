//! Status writes by read-modify-write against the resourceVersion read: the controllers, the
//! snapshot builds and the metadata store all write the same statuses, and none overwrites
//! another's fields.

use std::fmt::Debug;

use kube::{Api, Resource, api::PostParams};
use serde::{Serialize, de::DeserializeOwned};

use crate::Result;

/// How many times a write that lost a race to another writer is tried again from a fresh read.
const CONFLICT_RETRIES: u32 = 10;

/// Whether `error` is the API server refusing a write against a stale resourceVersion.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Reads `name`, lets `change` edit it (returning whether it changed anything) and writes its
/// status back with the read's resourceVersion, retrying on conflicts. Returns the object as
/// written (or as read when unchanged).
pub async fn modify_status<K>(api: &Api<K>, name: &str, mut change: impl FnMut(&mut K) -> bool) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut attempts = 0;
    loop {
        let mut object = api.get_status(name).await?;
        if !change(&mut object) {
            return Ok(object);
        }
        match api.replace_status(name, &PostParams::default(), &object).await {
            Ok(written) => return Ok(written),
            Err(error) if is_conflict(&error) && attempts < CONFLICT_RETRIES => attempts += 1,
            Err(error) => return Err(error.into()),
        }
    }
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
