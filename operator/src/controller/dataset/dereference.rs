//! What a Dataset's reconcile reads besides the cached Dataset: the Dataset as the API server has
//! it now, before an ingestion. Nothing here writes.

use kube::Api;
use miniautoml_api::Dataset;

use crate::Result;

/// `name` as the API server has it now: the watch cache may still lack the status write that
/// recorded the entry about to be ingested (a requeue can come before the watch event), and
/// ingesting it again would rewrite a recorded commit's objects.
pub async fn fresh(api: &Api<Dataset>, name: &str) -> Result<Dataset> {
    Ok(api.get(name).await?)
}
