//! TrainingJob controller. Each reconcile runs the stages in order:
//!
//! 1. [`dereference`]: the run's Job and pods, its Dataset's Ready snapshot, its place in the
//!    queue (reads only);
//! 2. [`validate`]: what the schema cannot check (the algorithm is configured);
//! 3. [`build`]: the run's Secret, Job and headless Service (pure);
//! 4. [`restart`]: whether a multi-worker run's failed attempt restarts its gang (pure);
//! 5. [`apply`]: the run-id label, launching the run, stopping a failed gang, deleting its
//!    objects under the finalizer;
//! 6. [`status`]: the status, computed once from what the stages found (pure) and written
//!    read-modify-write. The metadata store writes what the trainer reports into the same status.
//!
//! Phases: `Queued` (waiting for its snapshot or a slot), `Launching` (Job created, pods not
//! running), `Running`, then `Succeeded` (every worker exited 0 and the artifact is recorded) or
//! `Failed`. A finished run is never touched again.

pub mod apply;
pub mod build;
pub mod dereference;
pub mod observe;
pub mod restart;
pub mod status;
pub mod validate;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{self, ObjectRef},
    },
};
use miniautoml_api::{RetainPolicy, TrainingJob, labels::TRAINING_JOB_LABEL, training_job::TrainingPhase};

use self::{
    build::{attempt, job_name, launched_attempt, launched_version_hash, run_inputs},
    dereference::Waiting,
    observe::{Observed, image_digest, observe},
    status::{Found, PodKey, holds_own_key, phase},
};
use super::{reconciled::report_unreadable, watches::Events};
use crate::{
    Error, Result,
    context::Context,
    error::{Stage, at},
    kueue::Workload,
    status::modify_cached_status,
};

/// Finalizer of TrainingJobs whose run objects are deleted with them.
pub const FINALIZER: &str = "miniautoml.io/trainingjob-artifacts";

/// Reconciles one TrainingJob.
#[tracing::instrument(skip_all, fields(trainingjob = %ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<TrainingJob>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("trainingjob");
    let job = match &guard.0 {
        Err(error) => return report_unreadable(&guard, error, &ctx).await,
        Ok(job) => Arc::new(job.clone()),
    };
    // Owner references let the garbage collector stop the pods; storage and the pods' own key
    // need the finalizer.
    let own_keys = ctx.training.as_ref().is_some_and(|s| s.pods.keys.scoped());
    if !needs_finalizer(&job, own_keys) {
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        return reconcile_run(&job, &ctx).await;
    }
    if job.metadata.deletion_timestamp.is_some() && job.finalizers().iter().any(|f| f == FINALIZER) {
        // Its storage goes only once its pods have stopped: a trainer still running would
        // report epochs and upload its model into the prefixes being deleted. Deleting the Job
        // in the foreground stops them (the garbage collector would only after the finalizer
        // is gone); suspending it would not under Kueue, which unsuspends an admitted Job.
        let pods = dereference::run_pods(&ctx, &job)
            .await
            .map_err(at(Stage::Dereference))?;
        if pods.iter().any(still_running) {
            if let Ok(Some(batch_job)) = dereference::existing_run(&ctx, &job)
                .await
                .map_err(at(Stage::Dereference))?
            {
                apply::stop_job(&batch_job, &ctx)
                    .await
                    .map_err(at(Stage::Apply))?;
            }
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }
    let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => reconcile_run(&job, &ctx).await,
            Finalizer::Cleanup(job) => {
                apply::revoke_key(&job, &ctx).await.map_err(at(Stage::Cleanup))?;
                if job.spec.artifact_retain_policy == RetainPolicy::Delete {
                    apply::delete_run_objects(&job, &ctx)
                        .await
                        .map_err(at(Stage::Cleanup))?;
                }
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(Error::from_finalizer)
}

/// The TrainingJob controller on the watches of TrainingJobs and of the runs' Jobs and pods
/// (and Kueue's Workloads of the runs' Jobs, where Kueue runs: `job_cache` maps a Workload's
/// Job to its run): a run is followed by watch events, not by polling.
pub fn controller(
    jobs: Events<DeserializeGuard<TrainingJob>>,
    cache: reflector::Store<DeserializeGuard<TrainingJob>>,
    run_jobs: Events<Job>,
    run_pods: Events<Pod>,
    workloads: Option<(Events<Workload>, reflector::Store<Job>)>,
) -> Controller<DeserializeGuard<TrainingJob>> {
    let controller = Controller::for_stream(jobs, cache)
        .owns_stream(run_jobs)
        .watches_stream(run_pods, |pod| {
            let name = pod.labels().get(TRAINING_JOB_LABEL)?;
            Some(ObjectRef::new(name).within(&pod.namespace()?))
        });
    match workloads {
        Some((workloads, job_cache)) => controller.watches_stream(workloads, move |workload| {
            let namespace = workload.namespace()?;
            let owner = workload.owner_references().iter().find(|o| o.kind == "Job")?;
            let job = job_cache.get(&ObjectRef::new(&owner.name).within(&namespace))?;
            let name = job.labels().get(TRAINING_JOB_LABEL)?;
            Some(ObjectRef::new(name).within(&namespace))
        }),
        None => controller,
    }
}

/// Whether `pod` may still run its container (neither Succeeded nor Failed).
fn still_running(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether deleting `job` must first revoke its pods' own storage key (`own_keys`: pods get
/// keys of their own) or delete its objects in storage (`artifactRetainPolicy: Delete`).
pub fn needs_finalizer(job: &TrainingJob, own_keys: bool) -> bool {
    own_keys || job.spec.artifact_retain_policy == RetainPolicy::Delete
}

/// Writes the status `found` makes of `job`.
async fn report(api: &Api<TrainingJob>, job: &TrainingJob, found: &Found<'_>) -> Result<TrainingJob> {
    let now = Time(Timestamp::now());
    modify_cached_status(api, job, |current: &mut TrainingJob| {
        status::record(current, found, &now)
    })
    .await
    .map_err(at(Stage::Status))
}

/// Reports that an object of the run's names is not the run's (`taken` says whose), with a
/// warning event when that is news, and looks again later: the operator never adopts it.
async fn name_taken(api: &Api<TrainingJob>, job: &TrainingJob, ctx: &Context, taken: &str) -> Result<Action> {
    let written = report(api, job, &Found::NameTaken(taken)).await?;
    if job.status != written.status {
        ctx.publish(job, EventType::Warning, "NameTaken", taken.to_string())
            .await;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

async fn reconcile_run(job: &TrainingJob, ctx: &Context) -> Result<Action> {
    let namespace = job.namespace().unwrap_or_default();
    let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &namespace);
    if job.has_ended() {
        // Only a run-id label someone changed is put back, and its pods' own key revoked.
        if job.run_id().is_some() {
            apply::assign_run_id(job, ctx, &api)
                .await
                .map_err(at(Stage::Id))?;
        }
        if holds_own_key(job) {
            apply::revoke_key(job, ctx).await.map_err(at(Stage::Apply))?;
            report(&api, job, &Found::KeyRevoked).await?;
        }
        return Ok(Action::await_change());
    }
    let image = match validate::validate(job, ctx) {
        Ok(image) => image.to_string(),
        Err(invalid) => {
            let written = report(&api, job, &Found::Invalid(&invalid)).await?;
            if job.status != written.status {
                ctx.publish(job, EventType::Warning, invalid.reason, invalid.message)
                    .await;
            }
            return Ok(Action::await_change());
        }
    };
    let (run_id, job) = apply::assign_run_id(job, ctx, &api)
        .await
        .map_err(at(Stage::Id))?;
    let job = &job;
    let Some(settings) = &ctx.training else {
        report(&api, job, &Found::NotConfigured).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    };

    // A launched run keeps the snapshot it was launched on, whatever is committed since.
    let name = job_name(job);
    let (batch_job, version_hash) = match dereference::existing_run(ctx, job)
        .await
        .map_err(at(Stage::Dereference))?
    {
        Err(taken) => return name_taken(&api, job, ctx, &taken).await,
        Ok(Some(existing)) => {
            let hash = launched_version_hash(&existing)
                .or_else(|| job.status.as_ref().and_then(|s| s.dataset_version_hash.clone()))
                .unwrap_or_default();
            (existing, hash)
        }
        Ok(None) => {
            // A gang restart launches the next attempt on the snapshot the first trained on,
            // and ahead of the queue: the run holds its slot.
            let restarting = attempt(job) > 1;
            let snapshot = if restarting {
                dereference::launched_snapshot(job, ctx)
                    .await
                    .map_err(at(Stage::Dereference))?
            } else {
                dereference::ready_snapshot(job, ctx)
                    .await
                    .map_err(at(Stage::Dereference))?
            };
            let ready = match snapshot {
                Ok(ready) => ready,
                Err(Waiting {
                    reason,
                    message,
                    retry,
                }) => {
                    let found = Found::WaitingForDataset {
                        reason,
                        message: &message,
                    };
                    report(&api, job, &found).await?;
                    return Ok(Action::requeue(Duration::from_secs(retry)));
                }
            };
            let version_hash = ready.1.version_hash.clone();
            // Kueue admits a run with a queueName: the operator's own queue leaves it alone.
            if settings.max_concurrent_runs > 0 && !restarting && job.spec.queue_name.is_none() {
                let (ahead, active) = dereference::queue(job, ctx)
                    .await
                    .map_err(at(Stage::Dereference))?;
                if active + ahead >= settings.max_concurrent_runs as usize {
                    let found = Found::WaitingForSlot {
                        version_hash: &version_hash,
                        active,
                        ahead,
                        max: settings.max_concurrent_runs,
                    };
                    report(&api, job, &found).await?;
                    return Ok(Action::requeue(Duration::from_secs(2)));
                }
            }
            let inputs = run_inputs(job, run_id, &image, (&ready.0, &ready.1), settings);
            let credentials = match apply::issue_key(job, &inputs, settings).await {
                Ok(credentials) => credentials,
                Err(error) => {
                    let written = report(&api, job, &Found::NoStorageKey(&error)).await?;
                    if job.status != written.status {
                        ctx.publish(job, EventType::Warning, "StorageKey", error.to_string())
                            .await;
                    }
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
            };
            match apply::launch(job, ctx, &inputs, (settings, &credentials))
                .await
                .map_err(at(Stage::Apply))?
            {
                Ok(batch_job) => (batch_job, version_hash),
                Err(taken) => return name_taken(&api, job, ctx, &taken).await,
            }
        }
    };
    let pods = dereference::run_pods(ctx, job)
        .await
        .map_err(at(Stage::Dereference))?;
    let workers = observe(&batch_job, &pods, status::reported_failure_rank(job));
    let launched = launched_attempt(&batch_job);
    let queued = match &job.spec.queue_name {
        Some(queue) => Some(dereference::kueue_state(ctx, &batch_job, queue).await),
        None => None,
    };
    // While Kueue holds the Job suspended (not admitted yet, or evicted), its pods stopping are
    // Kueue's doing, not a failed attempt.
    let held = queued.as_ref().is_some_and(|q| q.suspended);
    if job.spec.workers > 1 && !held {
        // The Job of an earlier attempt, going: wait until its pods are gone.
        if batch_job.metadata.deletion_timestamp.is_some() || launched < attempt(job) {
            apply::stop_job(&batch_job, ctx).await.map_err(at(Stage::Apply))?;
            report(&api, job, &Found::GangStopping { attempt: launched }).await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        if let (Some(counted), Observed::Failed { message, .. }) = (restart::restart(job, &workers), &workers)
        {
            let found = Found::GangRestart {
                failed: launched,
                message,
                counted,
            };
            let written = report(&api, job, &found).await?;
            apply::stop_job(&batch_job, ctx).await.map_err(at(Stage::Apply))?;
            let text = written.status.and_then(|s| s.message).unwrap_or_default();
            ctx.publish(job, EventType::Warning, "GangRestart", text).await;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }
    let digest = image_digest(&pods);
    let found = Found::Launched {
        version_hash: &version_hash,
        job_name: &name,
        code_version: digest.as_deref(),
        workers: &workers,
        pods: &pods,
        attempt: launched,
        queued: queued.as_ref(),
        key: match (settings.pods.keys.scoped(), settings.pods.keys.session_duration()) {
            (true, _) => PodKey::Own,
            (false, Some(lifetime)) => PodKey::Session(lifetime),
            (false, None) => PodKey::Shared,
        },
    };
    let written = report(&api, job, &found).await?;
    match phase(&written) {
        Some(ended @ (TrainingPhase::Succeeded | TrainingPhase::Failed)) => {
            let (type_, reason) = match ended {
                TrainingPhase::Succeeded => (EventType::Normal, "Succeeded"),
                _ => (EventType::Warning, "Failed"),
            };
            let message = written
                .status
                .as_ref()
                .and_then(|s| s.message.clone())
                .unwrap_or_default();
            ctx.publish(job, type_, reason, message).await;
            Ok(Action::await_change())
        }
        // Kueue's queue positions change without an event for this run: look again soon.
        Some(TrainingPhase::Queued) if queued.is_some() => Ok(Action::requeue(Duration::from_secs(5))),
        // The Job and pod watches wake an active run; this is only a safety net.
        _ => Ok(Action::requeue(Duration::from_secs(60))),
    }
}
