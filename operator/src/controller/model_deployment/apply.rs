//! The ModelDeployment's writes besides its status: the predictors' own storage key (issued for
//! the models they load), their Secret, Service, NetworkPolicy and Deployment by server-side
//! apply — all skipped when the Deployment already carries their digest — and, under the
//! finalizer, the key's revocation.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use miniautoml_api::{ModelDeployment, model_deployment::ServedModel};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::build::{
    APPLIED_ANNOTATION, Desired, KEY_EXPIRES_ANNOTATION, deployment_name, key_renewal_due, predictor_grants,
    secret_name, template_model_uri, template_run,
};
use crate::controller::children::credential_entries;
use crate::{
    Result,
    context::{Context, MANAGER},
    pod_keys::Holder,
};

/// Applies `desired` unless the `cached` Deployment shows it is already there (and its
/// temporary storage key, if any, is not due for renewal); returns the Deployment. A change of
/// model is announced as an event.
pub async fn apply(
    md: &ModelDeployment,
    model: &ServedModel,
    desired: &Desired,
    cached: Option<&Deployment>,
    ctx: &Context,
) -> Result<Deployment> {
    let lifetime = ctx.serving.as_ref().and_then(|s| s.pods.keys.session_duration());
    if let Some(cached) = cached
        && cached.annotations().get(APPLIED_ANNOTATION) == desired.digest()
        && !key_renewal_due(cached, lifetime, Timestamp::now())
    {
        return Ok(cached.clone());
    }
    let namespace = md.namespace().unwrap_or_default();
    let mut secret = desired.secret.clone();
    let mut deployment = desired.deployment.clone();
    // The key in the Secret must work for the model before the predictors load it.
    if let Some(settings) = &ctx.serving {
        let grants = predictor_grants(model, cached.and_then(template_model_uri));
        let issued = settings
            .pods
            .keys
            .issue(Holder::Predictor, &md.uid().unwrap_or_default(), &grants)
            .await?;
        if let Some(lifetime) = lifetime {
            // A temporary key is only known now; the Deployment dates it (a change of its
            // metadata only: nothing rolls out).
            secret.string_data = Some(credential_entries(&issued));
            let expires = SignedDuration::try_from(lifetime)
                .ok()
                .and_then(|lifetime| Timestamp::now().checked_add(lifetime).ok())
                .unwrap_or_else(Timestamp::now);
            deployment
                .annotations_mut()
                .insert(KEY_EXPIRES_ANNOTATION.into(), expires.to_string());
        }
    }
    let params = PatchParams::apply(MANAGER).force();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    secrets
        .patch(&secret_name(md), &params, &Patch::Apply(&secret))
        .await?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    services
        .patch(&deployment_name(md), &params, &Patch::Apply(&desired.service))
        .await?;
    // The policy goes first, so no predictor pod is ever open to more than it allows.
    if let Some(policy) = &desired.network_policy {
        let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        policies
            .patch(&deployment_name(md), &params, &Patch::Apply(policy))
            .await?;
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = cached.and_then(template_run).map(str::to_string);
    let written = deployments
        .patch(&deployment_name(md), &params, &Patch::Apply(&deployment))
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

/// Revokes the predictors' own storage key (nothing to do when they hold the shared one).
pub async fn revoke_key(md: &ModelDeployment, ctx: &Context) -> Result<()> {
    if let Some(settings) = &ctx.serving {
        settings
            .pods
            .keys
            .revoke(Holder::Predictor, &md.uid().unwrap_or_default())
            .await?;
    }
    Ok(())
}
