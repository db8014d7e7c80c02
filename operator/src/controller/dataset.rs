//! Dataset controller.
//!
//! Every Dataset invariant known so far (append-only commits, one location per commit source,
//! bounded sizes) is enforced by the CRD schema and its CEL rules at admission, so the
//! controller accepts what the apiserver stored. Ingestion and snapshots are its next stages.

use std::sync::Arc;

use kube::{core::DeserializeGuard, runtime::controller::Action};
use miniautoml_api::Dataset;

use super::{Context, Verdict, reconcile_validated, reconciled};
use crate::Result;

reconciled!(Dataset, "dataset");

/// Validation beyond the schema: none is needed yet (see the module documentation).
pub fn validate(_dataset: &Dataset, _ctx: &Context) -> Verdict {
    Verdict::Valid
}

/// Reconciles one Dataset.
#[tracing::instrument(skip_all, fields(dataset = %kube::runtime::reflector::ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<Dataset>>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_validated(guard, ctx, validate).await
}
