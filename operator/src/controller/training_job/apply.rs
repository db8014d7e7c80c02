//! Every write a run's reconcile makes besides its status: the run-id label, the run's Secret,
//! headless Service and Job, and, under the finalizer, stopping its pods and the deletion of its
//! objects in storage.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Secret, Service},
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::EventType,
};
use miniautoml_api::{TrainingJob, labels::RUN_ID_LABEL};

use super::build::{RunInputs, build_job, build_secret, build_service, job_name};
use crate::{
    Error, Result,
    config::Credentials,
    context::{Context, MANAGER},
    ids::RUN_IDS,
    status::is_conflict,
    tombstones::{self, Tombstone},
};

/// Labels `job` with a new run id; returns the id and the labelled object.
pub async fn label_run_id(
    job: &TrainingJob,
    ctx: &Context,
    api: &Api<TrainingJob>,
) -> Result<(u64, TrainingJob)> {
    // The watch cache can lag behind the label this process wrote (a Job or pod event may
    // wake the run first), so the label is looked up once more at the source.
    let fresh = api.get(&job.name_any()).await?;
    if let Some(id) = fresh.run_id() {
        return Ok((id, fresh));
    }
    let namespace = ctx
        .training
        .as_ref()
        .map(|t| t.id_namespace.clone())
        .unwrap_or_else(|| fresh.namespace().unwrap_or_default());
    let id = ctx.ids.allocate(&ctx.client, &namespace, RUN_IDS).await?;
    // Against the version read: a reconcile that saw a stale object (no label yet) is refused
    // instead of labelling the run a second time.
    let patch = serde_json::json!({"metadata": {
        "labels": {RUN_ID_LABEL: id.to_string()},
        "resourceVersion": fresh.resource_version(),
    }});
    let labelled = api
        .patch(&fresh.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok((id, labelled))
}

/// Launches the run: its Secret (created once, so its token never changes), the headless
/// Service of a multi-worker run, then the Job. Returns the Job.
pub async fn launch(
    job: &TrainingJob,
    ctx: &Context,
    inputs: &RunInputs,
    credentials: &Credentials,
) -> Result<Job> {
    let namespace = job.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = build_secret(job, inputs.run_id, &new_token()?, credentials);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        // Created by an earlier try: it keeps its token.
        Err(error) if is_conflict(&error) => {}
        Err(error) => return Err(error.into()),
    }
    let apply = PatchParams::apply(MANAGER).force();
    let name = job_name(job);
    if job.spec.workers > 1 {
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
        services
            .patch(&name, &apply, &Patch::Apply(&build_service(job, inputs.run_id)))
            .await?;
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let created = jobs
        .patch(&name, &apply, &Patch::Apply(&build_job(job, inputs)))
        .await?;
    ctx.publish(
        job,
        EventType::Normal,
        "Launched",
        format!(
            "Job {name} runs {} on snapshot {}",
            inputs.image, inputs.version_hash
        ),
    )
    .await;
    Ok(created)
}

/// Suspends the run's Job, which makes the Job controller stop its running pods (a Job already
/// gone is fine).
pub async fn stop_job(job: &TrainingJob, ctx: &Context) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let suspend = serde_json::json!({"spec": {"suspend": true}});
    match jobs
        .patch(&job_name(job), &PatchParams::default(), &Patch::Merge(&suspend))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Deletes a deleted run's model and epoch history from storage (`artifactRetainPolicy:
/// Delete`) behind a tombstone, so that a write still on its way is swept when it lands; the
/// garbage collector stops its pods through owner references.
pub async fn delete_run_objects(job: &TrainingJob, ctx: &Context) -> Result<()> {
    let (Some(store), Some(tombstone)) = (&ctx.store, Tombstone::of(job)) else {
        return Ok(());
    };
    let deleted = tombstones::bury(store, &tombstone).await?;
    tracing::info!(deleted, trainingjob = job.name_any(), "run objects deleted");
    Ok(())
}

/// 32 random bytes from the operating system, hex: the run's token.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(Error::Randomness)?;
    Ok(hex::encode(bytes))
}
