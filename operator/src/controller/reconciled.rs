//! What the three controllers share: the bound on the resources they reconcile and the report
//! of an object the operator cannot read.

use std::fmt::Debug;

use kube::{
    Resource,
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::warn;

use crate::{Result, context::Context};

/// A custom resource a controller reconciles.
pub trait Reconciled:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// Controller name used in logs and metrics.
    const CONTROLLER: &'static str;
}

impl Reconciled for miniautoml_api::Dataset {
    const CONTROLLER: &'static str = "dataset";
}

impl Reconciled for miniautoml_api::TrainingJob {
    const CONTROLLER: &'static str = "trainingjob";
}

impl Reconciled for miniautoml_api::ModelDeployment {
    const CONTROLLER: &'static str = "modeldeployment";
}

/// Reports an object the operator cannot read (its stored form does not match the types, e.g.
/// written under an older CRD), without stopping the controller for the others.
pub async fn report_unreadable<K: Reconciled>(
    guard: &DeserializeGuard<K>,
    error: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Result<Action> {
    warn!(controller = K::CONTROLLER, name = ?error.metadata.name, %error, "cannot read object");
    let event = Event {
        type_: EventType::Warning,
        reason: "Unreadable".into(),
        note: Some(format!("The operator cannot read this object: {error}")),
        action: "Read".into(),
        secondary: None,
    };
    ctx.recorder.publish(&event, &guard.object_ref(&())).await?;
    Ok(Action::await_change())
}
