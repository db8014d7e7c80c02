//! ModelDeployment controller.
//!
//! The schema and CEL rules enforce the spec's invariants (exactly one model reference, bounded
//! replicas), so the controller accepts what the apiserver stored. Resolving the model and
//! rolling out predictors are its next stages.

use std::sync::Arc;

use kube::{core::DeserializeGuard, runtime::controller::Action};
use miniautoml_api::ModelDeployment;

use super::{Context, Verdict, reconcile_validated, reconciled};
use crate::Result;

reconciled!(ModelDeployment, "modeldeployment");

/// Validation beyond the schema: none is needed yet (see the module documentation).
pub fn validate(_deployment: &ModelDeployment, _ctx: &Context) -> Verdict {
    Verdict::Valid
}

/// Reconciles one ModelDeployment.
#[tracing::instrument(skip_all, fields(modeldeployment = %kube::runtime::reflector::ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<ModelDeployment>>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_validated(guard, ctx, validate).await
}
