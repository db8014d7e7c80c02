//! The ModelDeployment's writes besides its status: the predictors' Secret, Service and
//! Deployment by server-side apply, skipped when the Deployment already carries their digest.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service},
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use miniautoml_api::{ModelDeployment, model_deployment::ServedModel};

use super::build::{APPLIED_ANNOTATION, Desired, deployment_name, secret_name, template_run};
use crate::{
    Result,
    context::{Context, MANAGER},
};

/// Applies `desired` unless the `cached` Deployment shows it is already there; returns the
/// Deployment. A change of model is announced as an event.
pub async fn apply(
    md: &ModelDeployment,
    model: &ServedModel,
    desired: &Desired,
    cached: Option<&Deployment>,
    ctx: &Context,
) -> Result<Deployment> {
    if let Some(cached) = cached
        && cached.annotations().get(APPLIED_ANNOTATION) == desired.digest()
    {
        return Ok(cached.clone());
    }
    let namespace = md.namespace().unwrap_or_default();
    let params = PatchParams::apply(MANAGER).force();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    secrets
        .patch(&secret_name(md), &params, &Patch::Apply(&desired.secret))
        .await?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    services
        .patch(&deployment_name(md), &params, &Patch::Apply(&desired.service))
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = cached.and_then(template_run).map(str::to_string);
    let written = deployments
        .patch(&deployment_name(md), &params, &Patch::Apply(&desired.deployment))
        .await?;
    if previous.as_deref() != Some(model.run_id.as_str()) {
        let note = match previous {
            Some(previous) => format!("rolling out run {} (replacing run {previous})", model.run_id),
            None => format!("deploying run {} ({})", model.run_id, model.uri),
        };
        ctx.publish(md, EventType::Normal, "Deploying", note).await;
    }
    Ok(written)
}
