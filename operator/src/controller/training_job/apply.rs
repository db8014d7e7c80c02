//! Every write a run's reconcile makes besides its status: the run-id label, the run's Secret,
//! headless Service and Job, and, under the finalizer, stopping its pods and the deletion of its
//! objects in storage.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Secret, Service},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::events::EventType,
};
use miniautoml_api::TrainingJob;

use miniautoml_data::KeyError;

use super::build::{RunInputs, build_job, build_secret, build_service, job_name, run_grants};
use crate::{
    Result,
    config::Credentials,
    context::{Context, MANAGER, TrainingSettings},
    ids::RUN_ID,
    names::run_secret,
    pod_keys::Holder,
    tombstones::{self, Tombstone},
};

/// The run's id: the one the operator gave it (`status.runId`), else a new one; the label is made
/// to mirror it. Costs no API call when the id is given and the label mirrors it. Its writes
/// are recorded for reconciles that start from a lagging cache (`Context::written_runs`).
pub async fn assign_run_id(
    job: &TrainingJob,
    ctx: &Context,
    api: &Api<TrainingJob>,
) -> Result<(u64, TrainingJob)> {
    ctx.ids
        .assign_telling(
            &ctx.client,
            &ctx.id_namespace,
            (api, job),
            &RUN_ID,
            |read, written| ctx.written_runs.record(&[read], written),
        )
        .await
}

/// The storage key the run's pods get: their own, issued now for exactly [`run_grants`] (the
/// same key every time), or the shared one.
pub async fn issue_key(
    job: &TrainingJob,
    inputs: &RunInputs,
    settings: &TrainingSettings,
) -> Result<Credentials, KeyError> {
    let uid = job.uid().unwrap_or_default();
    settings
        .pods
        .keys
        .issue(Holder::Run, &uid, &run_grants(job, inputs))
        .await
}

/// Revokes the run's own storage key (its pods' key stops working at once); nothing to do
/// when pods get the shared key or it is revoked already.
pub async fn revoke_key(job: &TrainingJob, ctx: &Context) -> Result<()> {
    if let Some(settings) = &ctx.training {
        let uid = job.uid().unwrap_or_default();
        settings.pods.keys.revoke(Holder::Run, &uid).await?;
    }
    Ok(())
}

/// Launches the run: its Secret, the headless Service of a multi-worker run, then the Job.
/// Returns the Job, or why a name of the run's is taken. The Secret is applied, not created: one
/// that someone made under its name before the run was launched gets the operator's token and
/// credentials (the token is derived from the run's uid, so applying it again never changes
/// it); one that another object controls is refused by the API server (an object has one
/// controller), and so is that Service.
pub async fn launch(
    job: &TrainingJob,
    ctx: &Context,
    inputs: &RunInputs,
    (settings, credentials): (&TrainingSettings, &Credentials),
) -> Result<Result<Job, String>> {
    let namespace = job.namespace().unwrap_or_default();
    let parent = format!("TrainingJob {}", job.name_any());
    let apply = PatchParams::apply(MANAGER).force();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let token = settings.run_tokens.token(&job.uid().unwrap_or_default());
    let secret = build_secret(job, inputs.run_id, &token, credentials);
    let applied = secrets
        .patch(&run_secret(job), &apply, &Patch::Apply(&secret))
        .await;
    if let Some(taken) = second_controller(applied, "Secret", &run_secret(job), &parent)? {
        return Ok(Err(taken));
    }
    let name = job_name(job);
    if job.spec.workers > 1 {
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
        let applied = services
            .patch(&name, &apply, &Patch::Apply(&build_service(job, inputs.run_id)))
            .await;
        if let Some(taken) = second_controller(applied, "Service", &name, &parent)? {
            return Ok(Err(taken));
        }
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
    Ok(Ok(created))
}

/// An apply's outcome: `Some(reason)` when the API server refused it because another object
/// controls `kind name` (the apply would have made it a second controller), else the error.
fn second_controller<K>(
    applied: kube::Result<K>,
    kind: &str,
    name: &str,
    parent: &str,
) -> Result<Option<String>> {
    match applied {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 422 && status.message.contains("Controller") => {
            Ok(Some(format!(
                "{kind} {name} belongs to another object, so {parent} cannot use the name: {}",
                status.message
            )))
        }
        Err(error) => Err(error.into()),
    }
}

/// Stops a run's pods by deleting its Job in the foreground: the Job is gone only once its pods
/// are, so the next attempt of a gang never meets a rank of the last one, and a run being
/// deleted writes nothing more (a Job already gone, or going, is fine). The operator never
/// changes a Job's `suspend`: under Kueue that is Kueue's, and its Workload goes with the Job.
/// Only the Job `run` itself goes (its uid a precondition), never another of its name.
pub async fn stop_job(batch_job: &Job, ctx: &Context) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &batch_job.namespace().unwrap_or_default());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: batch_job.uid(),
            resource_version: None,
        }),
        ..DeleteParams::foreground()
    };
    match jobs.delete(&batch_job.name_any(), &params).await {
        Ok(_) => Ok(()),
        // Gone, or replaced by another Job of its name (the precondition failed): not ours.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
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
