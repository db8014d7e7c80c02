//! Numeric ids that survive restarts, for the original API's integer ids (dataset ids, run ids):
//! a counter in a ConfigMap, advanced by compare-and-swap on its resourceVersion, so concurrent
//! allocations (even from two operator processes) never hand out the same id.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::{Error, Result};

/// Allocates the next id (from 1) of the counter ConfigMap `counter` in `namespace`.
pub async fn allocate(client: &Client, namespace: &str, counter: &str) -> Result<u64> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for _ in 0..20 {
        match maps.get_opt(counter).await? {
            None => {
                let map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(counter.into()),
                        ..Default::default()
                    },
                    data: Some([("next".to_string(), "2".to_string())].into()),
                    ..Default::default()
                };
                match maps.create(&PostParams::default(), &map).await {
                    Ok(_) => return Ok(1),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(error) => return Err(error.into()),
                }
            }
            Some(mut map) => {
                let next: u64 = map
                    .data
                    .as_ref()
                    .and_then(|d| d.get("next"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                map.data
                    .get_or_insert_with(BTreeMap::new)
                    .insert("next".into(), (next + 1).to_string());
                match maps.replace(counter, &PostParams::default(), &map).await {
                    Ok(_) => return Ok(next),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(error) => return Err(error.into()),
                }
            }
        }
    }
    Err(Error::IdConflict(counter.to_string()))
}
