//! TrainingJob controller. A reconcile of an active run is a straight line
//! ([`reconcile_run`]): `advance` makes every write besides the status, each stage only once
//! what it needs is there, and says where the run stands (`State`); that becomes the status in
//! one write; then the event that is news, and when to look again (pure). The stages:
//!
//! 1. [`validate`]: what the schema cannot check (the algorithm is configured), then the run id;
//! 2. [`dereference`]: the run's Job (never another's of its name) and pods, its Dataset's Ready
//!    snapshot, its place in the queue, Kueue's word (reads only);
//! 3. [`build`]: the run's Secret, Job and headless Service (pure);
//! 4. [`restart`]: whether a multi-worker run's failed attempt restarts its gang (pure);
//! 5. [`apply`]: launching the run, stopping an earlier attempt's Job, and under the finalizer
//!    the key's revocation and the deletion of its objects in storage;
//! 6. [`status`]: the status, computed once from what was found (pure) and written
//!    read-modify-write. The metadata store writes what the trainer reports into the same status.
//!
//! A gang's failed attempt is recorded first (the next attempt counted in the status); the
//! reconcile that follows stops its Job, and the next attempt launches once its pods are gone.
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
        controller::{Action, Config},
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
    context::{Context, TrainingSettings},
    error::{Stage, at},
    kueue::Workload,
    run_queue,
};

/// How long a run's reconcile waits for more of a burst of events (a pod created, scheduled,
/// started; the run's own status writes): one reconcile for the burst. Epochs are written at
/// most once a second, so a run's updates never keep it waiting for good.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Finalizer of TrainingJobs whose run objects are deleted with them.
pub const FINALIZER: &str = "miniautoml.io/trainingjob-artifacts";

/// Reconciles one TrainingJob.
#[tracing::instrument(skip_all, fields(trainingjob = %ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<TrainingJob>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("trainingjob");
    let job = match &guard.0 {
        Err(error) => return report_unreadable(&guard, error, &ctx).await,
        // The cache may lag a status this process wrote a moment ago.
        Ok(job) => Arc::new(ctx.written_runs.freshest(job)),
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
        .with_config(Config::default().debounce(DEBOUNCE))
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

/// Writes the status `found` makes of `job`: the reconcile's one status write (after any
/// metadata-store write of the run under way, from its result).
async fn report(
    ctx: &Context,
    api: &Api<TrainingJob>,
    job: &TrainingJob,
    found: &Found<'_>,
) -> Result<TrainingJob> {
    let now = Time(Timestamp::now());
    ctx.written_runs
        .write(api, job, |current: &mut TrainingJob| {
            status::record(current, found, &now)
        })
        .await
        .map_err(at(Stage::Status))
}

/// Reconciles a run: its writes besides the status ([`advance`]), then what they found as the
/// status (one write), the event that is news, and when to look again (pure).
async fn reconcile_run(job: &TrainingJob, ctx: &Context) -> Result<Action> {
    let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    if job.has_ended() {
        return finished(job, ctx, &api).await;
    }
    let (advanced, state) = advance(job, ctx, &api).await?;
    let found = state.found(ctx.training.as_ref());
    let written = report(ctx, &api, &advanced, &found).await?;
    // The version the reconcile started from is older too (the id's writes came between).
    ctx.written_runs.record(&[job], &written);
    announce(ctx, &advanced, &written, &found).await;
    Ok(next(&state, &written))
}

/// A run that ended: only a run-id label someone changed is put back, and its pods' own key
/// revoked.
async fn finished(job: &TrainingJob, ctx: &Context, api: &Api<TrainingJob>) -> Result<Action> {
    if job.run_id().is_some() {
        apply::assign_run_id(job, ctx, api).await.map_err(at(Stage::Id))?;
    }
    if holds_own_key(job) {
        apply::revoke_key(job, ctx).await.map_err(at(Stage::Apply))?;
        report(ctx, api, job, &Found::KeyRevoked).await?;
    }
    Ok(Action::await_change())
}

/// Where an active run stands after [`advance`]: what it owns, so that [`State::found`] can
/// lend it to the status.
enum State {
    /// The spec cannot be acted on.
    Invalid(validate::Invalid),
    /// The operator lacks storage or the metadata store address.
    NotConfigured,
    /// An object of the run's names is another's.
    NameTaken(String),
    /// The run waits for its Dataset or snapshot.
    WaitingForDataset(Waiting),
    /// The run waits for a slot of `--max-concurrent-runs`.
    WaitingForSlot {
        version_hash: String,
        /// Runs ahead, as the status is to say it.
        ahead: usize,
        /// Seconds until it looks again.
        retry: u64,
    },
    /// Its own storage key cannot be issued.
    NoStorageKey(miniautoml_data::KeyError),
    /// The pods of an earlier attempt are stopping.
    GangStopping { attempt: u32 },
    /// The run's Job exists (launched now or before).
    Launched {
        version_hash: String,
        name: String,
        pods: Vec<Pod>,
        /// The trainer image's digest, once the runtime resolved it.
        code_version: Option<String>,
        workers: Observed,
        attempt: u32,
        queued: Option<dereference::Queued>,
        /// A multi-worker attempt failed and the gang restarts (whether it counts).
        restart: Option<bool>,
    },
}

impl State {
    /// What the status says of it (pure).
    fn found(&self, settings: Option<&TrainingSettings>) -> Found<'_> {
        match self {
            State::Invalid(invalid) => Found::Invalid(invalid),
            State::NotConfigured => Found::NotConfigured,
            State::NameTaken(taken) => Found::NameTaken(taken),
            State::WaitingForDataset(waiting) => Found::WaitingForDataset {
                reason: waiting.reason,
                message: &waiting.message,
            },
            State::WaitingForSlot {
                version_hash, ahead, ..
            } => Found::WaitingForSlot {
                version_hash,
                ahead: *ahead,
                max: settings.map_or(0, |s| s.max_concurrent_runs),
            },
            State::NoStorageKey(error) => Found::NoStorageKey(error),
            State::GangStopping { attempt } => Found::GangStopping { attempt: *attempt },
            State::Launched {
                workers: Observed::Failed { message, .. },
                attempt,
                restart: Some(counted),
                ..
            } => Found::GangRestart {
                failed: *attempt,
                message,
                counted: *counted,
            },
            State::Launched {
                version_hash,
                name,
                pods,
                code_version,
                workers,
                attempt,
                queued,
                ..
            } => Found::Launched {
                version_hash,
                job_name: name,
                code_version: code_version.as_deref(),
                workers,
                pods,
                attempt: *attempt,
                queued: queued.as_ref(),
                key: settings.map_or(PodKey::Shared, |s| {
                    match (s.pods.keys.scoped(), s.pods.keys.session_duration()) {
                        (true, _) => PodKey::Own,
                        (false, Some(lifetime)) => PodKey::Session(lifetime),
                        (false, None) => PodKey::Shared,
                    }
                }),
            },
        }
    }
}

/// Every write a run's reconcile makes besides its status, in order, each only once what it
/// needs is there: the run id, the launch (snapshot ready, a slot free, its key issued), and
/// the stop of an earlier attempt's Job. Returns the TrainingJob (with its id) and where the run
/// stands; nothing here writes the status.
async fn advance(job: &TrainingJob, ctx: &Context, api: &Api<TrainingJob>) -> Result<(TrainingJob, State)> {
    let image = match validate::validate(job, ctx) {
        Ok(image) => image.to_string(),
        Err(invalid) => return Ok((job.clone(), State::Invalid(invalid))),
    };
    let (run_id, job) = apply::assign_run_id(job, ctx, api).await.map_err(at(Stage::Id))?;
    let Some(settings) = &ctx.training else {
        return Ok((job, State::NotConfigured));
    };
    let state = launch_or_follow(&job, ctx, settings, run_id, &image).await?;
    Ok((job, state))
}

/// The run's Job, launched when due, and what it and its pods say.
async fn launch_or_follow(
    job: &TrainingJob,
    ctx: &Context,
    settings: &TrainingSettings,
    run_id: u64,
    image: &str,
) -> Result<State> {
    // A launched run keeps the snapshot it was launched on, whatever is committed since.
    let existing = dereference::existing_run(ctx, job)
        .await
        .map_err(at(Stage::Dereference))?;
    let (batch_job, version_hash) = match existing {
        Err(taken) => return Ok(State::NameTaken(taken)),
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
                dereference::launched_snapshot(job, ctx).await
            } else {
                dereference::ready_snapshot(job, ctx).await
            };
            let (dataset, snapshot) = match snapshot.map_err(at(Stage::Dereference))? {
                Ok(ready) => ready,
                Err(waiting) => return Ok(State::WaitingForDataset(waiting)),
            };
            let version_hash = snapshot.version_hash.clone();
            // Kueue admits a run with a queueName: the operator's own queue leaves it alone.
            if settings.max_concurrent_runs > 0 && !restarting && job.spec.queue_name.is_none() {
                let max = settings.max_concurrent_runs as usize;
                let place = dereference::queue(job, ctx);
                if place.active + place.ahead >= max {
                    let written = job.status.as_ref().and_then(|s| s.position_in_queue);
                    return Ok(State::WaitingForSlot {
                        version_hash,
                        ahead: run_queue::shown_ahead(written, place.ahead),
                        retry: run_queue::retry_seconds(&place, max),
                    });
                }
            }
            // The name at the source, just before launching: a Job someone made under it is
            // never cached, and one of the run's made a moment ago may not be yet.
            match dereference::run_at_source(ctx, job)
                .await
                .map_err(at(Stage::Dereference))?
            {
                Err(taken) => return Ok(State::NameTaken(taken)),
                Ok(Some(existing)) => (existing, version_hash),
                Ok(None) => {
                    let inputs = run_inputs(job, run_id, image, (&dataset, &snapshot), settings);
                    let credentials = match apply::issue_key(job, &inputs, settings).await {
                        Ok(credentials) => credentials,
                        Err(error) => return Ok(State::NoStorageKey(error)),
                    };
                    let launched = apply::launch(job, ctx, &inputs, (settings, &credentials))
                        .await
                        .map_err(at(Stage::Apply))?;
                    match launched {
                        Ok(batch_job) => (batch_job, version_hash),
                        Err(taken) => return Ok(State::NameTaken(taken)),
                    }
                }
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
    let gang = job.spec.workers > 1 && !held;
    // The Job of an earlier attempt (the status already counts the next): stop it, and launch
    // the next once its pods are gone.
    if gang && (batch_job.metadata.deletion_timestamp.is_some() || launched < attempt(job)) {
        apply::stop_job(&batch_job, ctx).await.map_err(at(Stage::Apply))?;
        return Ok(State::GangStopping { attempt: launched });
    }
    // A failed attempt of a gang is recorded first (the next attempt counted in the status);
    // the next reconcile stops its Job.
    let restart = gang.then(|| restart::restart(job, &workers)).flatten();
    Ok(State::Launched {
        version_hash,
        name: job_name(job),
        code_version: image_digest(&pods),
        pods,
        workers,
        attempt: launched,
        queued,
        restart,
    })
}

/// The event for what the status write made news: a refused spec, a name taken, a storage key
/// refused, a gang restart, the run's end.
async fn announce(ctx: &Context, job: &TrainingJob, written: &TrainingJob, found: &Found<'_>) {
    if job.status == written.status {
        return;
    }
    let message = || {
        written
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default()
    };
    let (type_, reason, note) = match found {
        Found::Invalid(invalid) => (EventType::Warning, invalid.reason, invalid.message.clone()),
        Found::NameTaken(taken) => (EventType::Warning, "NameTaken", taken.to_string()),
        Found::NoStorageKey(error) => (EventType::Warning, "StorageKey", error.to_string()),
        Found::GangRestart { .. } => (EventType::Warning, "GangRestart", message()),
        Found::Launched { .. } => match (phase(job), phase(written)) {
            (before, Some(TrainingPhase::Succeeded)) if before != Some(TrainingPhase::Succeeded) => {
                (EventType::Normal, "Succeeded", message())
            }
            (before, Some(TrainingPhase::Failed)) if before != Some(TrainingPhase::Failed) => {
                (EventType::Warning, "Failed", message())
            }
            _ => return,
        },
        _ => return,
    };
    ctx.publish(job, type_, reason, note).await;
}

/// When to look at the run again, from where it stands and what was written (pure).
fn next(state: &State, written: &TrainingJob) -> Action {
    let seconds = |s| Action::requeue(Duration::from_secs(s));
    match state {
        State::Invalid(_) => Action::await_change(),
        State::NotConfigured => seconds(60),
        State::NameTaken(_) | State::NoStorageKey(_) => seconds(30),
        State::WaitingForDataset(waiting) => seconds(waiting.retry),
        State::WaitingForSlot { retry, .. } => seconds(*retry),
        State::GangStopping { .. } => seconds(2),
        State::Launched { restart: Some(_), .. } => seconds(2),
        State::Launched { queued, .. } => match phase(written) {
            Some(TrainingPhase::Succeeded | TrainingPhase::Failed) => Action::await_change(),
            // Kueue's queue positions change without an event for this run: look again soon.
            Some(TrainingPhase::Queued) if queued.is_some() => seconds(5),
            // The Job and pod watches wake an active run; this is only a safety net.
            _ => seconds(60),
        },
    }
}
