//! What a ModelDeployment's reconcile reads: the TrainingJob it references (by name or run id),
//! the predictors' Deployment (never another's of its name) and their pods. Nothing here writes.

use std::sync::Arc;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{Api, ResourceExt, api::ListParams, runtime::reflector::ObjectRef};
use miniautoml_api::{
    ModelDeployment, TrainingJob, labels::MODEL_DEPLOYMENT_LABEL, model_deployment::NotServable,
};

use super::build::deployment_name;
use crate::{
    Result,
    context::Context,
    controller::children::{controlled_by, name_taken},
};

/// The TrainingJob `md` references, or why there is none.
pub async fn training_job(md: &ModelDeployment, ctx: &Context) -> Result<Result<TrainingJob, NotServable>> {
    let namespace = md.namespace().unwrap_or_default();
    let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(name) = &md.spec.model.training_job {
        // A direct read: the TrainingJob controller's cache may not have seen the latest phase.
        return Ok(api.get_opt(name).await?.ok_or_else(|| {
            (
                "TrainingJobNotFound",
                format!("TrainingJob {name} does not exist in namespace {namespace}"),
            )
        }));
    }
    let run = md.spec.model.run_id.clone().unwrap_or_default();
    // Run ids are unique across namespaces; the run must be in this one.
    let found = match run.parse() {
        Ok(id) => ctx
            .find_run(id, |job| job.served_model().is_ok())
            .await?
            .filter(|job| job.namespace().as_deref() == Some(namespace.as_str())),
        Err(_) => None,
    };
    Ok(found.ok_or_else(|| {
        (
            "RunNotFound",
            format!("no TrainingJob in namespace {namespace} has run id {run}"),
        )
    }))
}

/// The predictors' Deployment: as the watch cache has it, else (none in the cache, which
/// sees only labelled Deployments) from a list of that name, so that one the operator did not
/// make is found. `Err` with the reason when a Deployment of the name exists that this
/// ModelDeployment does not control: it is never adopted or overwritten.
pub async fn deployment(
    md: &ModelDeployment,
    ctx: &Context,
) -> Result<Result<Option<Deployment>, NotServable>> {
    let namespace = md.namespace().unwrap_or_default();
    let name = deployment_name(md);
    let cached = ctx
        .caches
        .predictor_deployments
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|d| (*d).clone());
    let found = match cached {
        Some(deployment) => Some(deployment),
        None => Api::<Deployment>::namespaced(ctx.client.clone(), &namespace)
            .list(&ListParams::default().fields(&format!("metadata.name={name}")))
            .await?
            .items
            .into_iter()
            .next(),
    };
    Ok(match found {
        Some(deployment) if !controlled_by(&deployment.metadata, md.uid().as_deref()) => Err((
            "NameTaken",
            name_taken(
                "Deployment",
                &deployment.metadata,
                &format!("ModelDeployment {}", md.name_any()),
            ),
        )),
        found => Ok(found),
    })
}

/// The predictors' pods, from the watch cache.
pub fn predictor_pods(md: &ModelDeployment, ctx: &Context) -> Vec<Arc<Pod>> {
    let namespace = md.namespace();
    ctx.caches
        .predictor_pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace() == namespace && p.labels().get(MODEL_DEPLOYMENT_LABEL) == Some(&md.name_any())
        })
        .collect()
}
