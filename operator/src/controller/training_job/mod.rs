//! TrainingJob controller: dereference (run id, dataset snapshot) → validate → build the run's
//! Secret, Job and (for several workers) headless Service → apply → status from the Job and its
//! pods. The metadata store (`grpc::metadata_store`) writes what the trainer reports (epochs,
//! message, artifact) into the same status; both write read-modify-write with resourceVersion.
//!
//! Phases: `Queued` (waiting for its snapshot), `Launching` (Job created, pods not running),
//! `Running`, then `Succeeded` (every worker exited 0 and the artifact is recorded) or `Failed`.
//! A finished run is never touched again.

pub mod build;
pub mod observe;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        batch::v1::Job,
        core::v1::{Pod, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    core::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        reflector::{self, ObjectRef},
    },
};
use miniautoml_api::{
    Dataset, RetainPolicy, SnapshotState, SnapshotStatus, TrainingJob, TrainingJobSpec, TrainingJobStatus,
    labels::{DATASET_ID_LABEL, RUN_ID_LABEL, TRAINING_JOB_LABEL},
    training_job::{DATASET_READY, FAILED, RUNNING, SUCCEEDED, TrainingPhase},
};
use miniautoml_data::{SnapshotSelector, layout};

use self::build::{RunInputs, build_job, build_secret, build_service, job_name, launched_version_hash};
use self::observe::{Observed, image_digest, observe};
use super::{
    reconciled::{Verdict, report_unreadable},
    watches::Events,
};
use crate::{
    Result,
    conditions::{self, ACCEPTED},
    context::{Context, MANAGER, TrainingSettings},
    ids::RUN_IDS,
    snapshots::SnapshotError,
    status::modify_cached_status,
};

/// Finalizer of TrainingJobs whose run objects are deleted with them.
pub const FINALIZER: &str = "miniautoml.io/trainingjob-artifacts";

/// The image a TrainingJob runs: `spec.image`, or its algorithm's configured image.
pub fn resolve_image<'a>(
    spec: &'a TrainingJobSpec,
    algorithm_images: &'a BTreeMap<String, String>,
) -> Result<&'a str, Verdict> {
    if let Some(image) = &spec.image {
        return Ok(image);
    }
    let Some(algorithm) = &spec.algorithm else {
        // The CEL rule requires one of the two; an object stored before that rule still gets a
        // clear answer.
        return Err(Verdict::Invalid {
            reason: "NoImage",
            message: "set exactly one of spec.algorithm and spec.image".into(),
        });
    };
    algorithm_images
        .get(algorithm)
        .map(String::as_str)
        .ok_or_else(|| {
            let known: Vec<&str> = algorithm_images.keys().map(String::as_str).collect();
            Verdict::Invalid {
                reason: "UnknownAlgorithm",
                message: format!(
                    "algorithm {algorithm:?} is not configured in the operator (configured: {}); \
                 use one of those, set spec.image instead, or add it to the operator with \
                 --algorithm {algorithm}=IMAGE",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            }
        })
}

/// Validation beyond the schema: the image must be resolvable.
pub fn validate(job: &TrainingJob, ctx: &Context) -> Verdict {
    match resolve_image(&job.spec, &ctx.algorithm_images) {
        Ok(_) => Verdict::Valid,
        Err(invalid) => invalid,
    }
}

/// Reconciles one TrainingJob.
#[tracing::instrument(skip_all, fields(trainingjob = %kube::runtime::reflector::ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<TrainingJob>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("trainingjob");
    match &guard.0 {
        Err(error) => report_unreadable(&guard, error, &ctx).await,
        // Owner references let the garbage collector stop the pods.
        Ok(job) if job.metadata.deletion_timestamp.is_some() => finalize(job, &ctx).await,
        Ok(job) if needs_finalizer(job) && !job.finalizers().iter().any(|f| f == FINALIZER) => {
            set_finalizers(job, &ctx, |finalizers| finalizers.push(FINALIZER.into())).await?;
            // The finalizer's own update event reconciles it again.
            Ok(Action::await_change())
        }
        Ok(job) => reconcile_run(job, &ctx).await,
    }
}

/// The TrainingJob controller on the watches of TrainingJobs and of the runs' Jobs and pods: a
/// run is followed by watch events, not by polling.
pub fn controller(
    jobs: Events<DeserializeGuard<TrainingJob>>,
    cache: reflector::Store<DeserializeGuard<TrainingJob>>,
    run_jobs: Events<Job>,
    run_pods: Events<Pod>,
) -> Controller<DeserializeGuard<TrainingJob>> {
    Controller::for_stream(jobs, cache)
        .owns_stream(run_jobs)
        .watches_stream(run_pods, |pod| {
            let name = pod.labels().get(TRAINING_JOB_LABEL)?;
            Some(ObjectRef::new(name).within(&pod.namespace()?))
        })
}

/// Whether deleting `job` must first delete its objects in storage (`artifactRetainPolicy:
/// Delete`); the spec is immutable, so this never changes.
pub fn needs_finalizer(job: &TrainingJob) -> bool {
    job.spec.artifact_retain_policy == RetainPolicy::Delete
}

/// Writes `job`'s finalizers as `edit` leaves them, against the version read.
async fn set_finalizers(job: &TrainingJob, ctx: &Context, edit: impl FnOnce(&mut Vec<String>)) -> Result<()> {
    let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let mut finalizers = job.finalizers().to_vec();
    edit(&mut finalizers);
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": job.resource_version(),
    }});
    api.patch(&job.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// A deleted TrainingJob with `artifactRetainPolicy: Delete`: its model and epoch history go
/// first, then the finalizer (the garbage collector stops the pods through owner references).
async fn finalize(job: &TrainingJob, ctx: &Context) -> Result<Action> {
    if !job.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if let (Some(store), Some(uid)) = (&ctx.store, job.uid()) {
        let namespace = job.namespace().unwrap_or_default();
        let mut deleted = 0;
        for prefix in [
            layout::model_prefix(&namespace, &job.name_any(), &uid),
            layout::run_prefix(&namespace, &job.name_any(), &uid),
        ] {
            deleted += store
                .delete_prefix(&prefix)
                .await
                .map_err(|e| crate::Error::Storage(e.to_string()))?;
        }
        tracing::info!(deleted, trainingjob = job.name_any(), "run objects deleted");
    }
    set_finalizers(job, ctx, |finalizers| finalizers.retain(|f| f != FINALIZER)).await?;
    Ok(Action::await_change())
}

/// The phase recorded so far.
pub fn phase(job: &TrainingJob) -> Option<TrainingPhase> {
    job.status.as_ref().and_then(|s| s.phase)
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Sets one condition (and optionally the phase and message) in `status`; returns whether
/// anything changed.
fn set(
    status: &mut TrainingJobStatus,
    generation: Option<i64>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
) -> bool {
    conditions::upsert(
        &mut status.conditions,
        conditions::condition(type_, ok, reason, message, generation, now()),
    )
}

async fn write(
    api: &Api<TrainingJob>,
    job: &TrainingJob,
    mut change: impl FnMut(&mut TrainingJobStatus, Option<i64>) -> bool,
) -> Result<TrainingJob> {
    modify_cached_status(api, job, |current: &mut TrainingJob| {
        let generation = current.metadata.generation;
        let id = current.labels().get(RUN_ID_LABEL).cloned();
        let status = current.status.get_or_insert_with(Default::default);
        let mut changed = status.observed_generation != generation;
        if id.is_some() && status.run_id != id {
            status.run_id = id;
            changed = true;
        }
        status.observed_generation = generation;
        changed |= change(status, generation);
        changed
    })
    .await
}

async fn reconcile_run(job: &TrainingJob, ctx: &Arc<Context>) -> Result<Action> {
    let namespace = job.namespace().unwrap_or_default();
    let api: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &namespace);
    if matches!(phase(job), Some(TrainingPhase::Succeeded | TrainingPhase::Failed)) {
        return Ok(Action::await_change());
    }
    let verdict = validate(job, ctx);
    let image = match (&verdict, resolve_image(&job.spec, &ctx.algorithm_images)) {
        (Verdict::Valid, Ok(image)) => image.to_string(),
        (Verdict::Invalid { reason, message }, _) => {
            let before = job.status.clone();
            let written = write(&api, job, |status, generation| {
                set(status, generation, ACCEPTED, false, reason, message)
            })
            .await?;
            if before != written.status {
                ctx.publish(job, EventType::Warning, reason, message.clone())
                    .await;
            }
            return Ok(Action::await_change());
        }
        (Verdict::Valid, Err(_)) => unreachable!("validate resolves the image"),
    };
    // The id goes into status with the next status write (see `write`).
    let labelled;
    let (run_id, job) = match job.run_id() {
        Some(id) => (id, job),
        None => {
            labelled = assign_run_id(job, ctx, &api).await?;
            (labelled.0, &labelled.1)
        }
    };
    let Some(settings) = ctx.training.clone() else {
        write(&api, job, |status, generation| {
            set(status, generation, ACCEPTED, true, "Valid", "The spec is valid")
                | set(status, generation, RUNNING, false, "NotConfigured",
                    "the operator has no object storage or metadata store address (--metadata-store-address) configured")
                | queued(status)
        })
        .await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    };

    // A launched run keeps the snapshot it was launched on, whatever is committed since.
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = job_name(job);
    let cached = ctx
        .caches
        .run_jobs
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|job| (*job).clone());
    // Not cached yet (just created, or the cache is still filling): ask the API server.
    let existing = match cached {
        Some(job) => Some(job),
        None => jobs.get_opt(&name).await?,
    };
    let (run, version_hash) = match existing {
        Some(existing) => {
            let hash = launched_version_hash(&existing)
                .or_else(|| job.status.as_ref().and_then(|s| s.dataset_version_hash.clone()))
                .unwrap_or_default();
            (existing, hash)
        }
        None => match launch_when_ready(job, ctx, &api, &settings, run_id, image).await? {
            Launch::Waiting(action) => return Ok(action),
            Launch::Launched(run, hash) => (*run, hash),
        },
    };
    let pods = run_pods(ctx, &namespace, &name).await?;
    let observed = observe(&run, &pods);
    let digest = image_digest(&pods);
    let written = write(&api, job, |status, generation| {
        let mut changed = set(status, generation, ACCEPTED, true, "Valid", "The spec is valid")
            | set(
                status,
                generation,
                DATASET_READY,
                true,
                "Ready",
                &format!("snapshot {version_hash} is ready"),
            );
        if status.dataset_version_hash.as_deref() != Some(&version_hash) {
            status.dataset_version_hash = Some(version_hash.clone());
            changed = true;
        }
        if status.job_name.as_deref() != Some(&name) {
            status.job_name = Some(name.clone());
            changed = true;
        }
        if digest.is_some() && status.code_version != digest {
            status.code_version = digest.clone();
            changed = true;
        }
        if status.position_in_queue.take().is_some() {
            changed = true;
        }
        changed | record(status, generation, &observed)
    })
    .await?;
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
        // The Job and pod watches wake an active run; this is only a safety net.
        _ => Ok(Action::requeue(Duration::from_secs(60))),
    }
}

/// What [`launch_when_ready`] did.
enum Launch {
    /// Not launched yet; the status says why.
    Waiting(Action),
    /// The run's Job, and the snapshot it trains on.
    Launched(Box<Job>, String),
}

/// Launches the run once its snapshot is Ready and (under `--max-concurrent-runs`) a slot is
/// free: the run's Secret, the headless Service of a multi-worker run, then the Job.
async fn launch_when_ready(
    job: &TrainingJob,
    ctx: &Arc<Context>,
    api: &Api<TrainingJob>,
    settings: &TrainingSettings,
    run_id: u64,
    image: String,
) -> Result<Launch> {
    let namespace = job.namespace().unwrap_or_default();
    let (dataset, snapshot) = match ready_snapshot(job, ctx, api).await? {
        Ok(ready) => ready,
        Err(action) => return Ok(Launch::Waiting(action)),
    };
    let inputs = RunInputs {
        run_id,
        image,
        metadata_store: settings.metadata_store_address.clone(),
        dataset_id: dataset
            .labels()
            .get(DATASET_ID_LABEL)
            .cloned()
            .unwrap_or_else(|| dataset.name_any()),
        version_hash: snapshot.version_hash.clone(),
        bucket: settings.bucket.clone(),
        data_path: snapshot
            .root
            .clone()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string(),
        s3_endpoint: settings.s3_endpoint.clone(),
        s3_region: settings.s3_region.clone(),
        image_pull_secrets: settings.image_pull_secrets.clone(),
        // A spec naming its own image keeps Kubernetes' default policy.
        image_pull_policy: match (&job.spec.image, &job.spec.algorithm) {
            (None, Some(algorithm)) => settings.algorithm_pull_policies.get(algorithm).cloned(),
            _ => None,
        },
    };

    if settings.max_concurrent_runs > 0 {
        let scope: Api<TrainingJob> = ctx.watched();
        let all = scope.list(&ListParams::default()).await?.items;
        let (ahead, active) = queue_position(job, &all);
        if active + ahead >= settings.max_concurrent_runs as usize {
            let message = format!(
                "{active} of at most {} runs are running; {ahead} queued ahead of this one",
                settings.max_concurrent_runs
            );
            let ready = format!("snapshot {} is ready", snapshot.version_hash);
            write(api, job, |status, generation| {
                let mut changed = set(status, generation, DATASET_READY, true, "Ready", &ready)
                    | set(status, generation, RUNNING, false, "WaitingForSlot", &message)
                    | queued(status);
                if status.position_in_queue != Some(ahead as u32) {
                    status.position_in_queue = Some(ahead as u32);
                    changed = true;
                }
                changed
            })
            .await?;
            return Ok(Launch::Waiting(Action::requeue(Duration::from_secs(2))));
        }
    }

    // The Secret is created once: its token never changes.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = build_secret(job, run_id, &new_token()?, &settings.credentials);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        // Created by an earlier try: it keeps its token.
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    let apply = PatchParams::apply(MANAGER).force();
    if job.spec.workers > 1 {
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
        services
            .patch(&job_name(job), &apply, &Patch::Apply(&build_service(job, run_id)))
            .await?;
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let run = launch(ctx, job, &jobs, &job_name(job), &inputs).await?;
    Ok(Launch::Launched(Box::new(run), snapshot.version_hash))
}

/// The Dataset and its Ready snapshot for `job`, or the requeue while the status says why not:
/// the Dataset is missing, still ingesting the commits a run on its latest data needs, has no
/// matching commits, or the snapshot is being built or failed.
async fn ready_snapshot(
    job: &TrainingJob,
    ctx: &Arc<Context>,
    api: &Api<TrainingJob>,
) -> Result<std::result::Result<(Dataset, SnapshotStatus), Action>> {
    let namespace = job.namespace().unwrap_or_default();
    let datasets: Api<Dataset> = Api::namespaced(ctx.client.clone(), &namespace);
    let dataset_name = &job.spec.dataset.name;
    let wait = |reason: &'static str, message: String, retry: u64| async move {
        waiting(api, job, reason, message, retry).await.map(Err)
    };
    let Some(dataset) = datasets.get_opt(dataset_name).await? else {
        return wait(
            "DatasetNotFound",
            format!("Dataset {dataset_name:?} does not exist in namespace {namespace}"),
            10,
        )
        .await;
    };
    // Without a pinned commit the run trains on every commit of the spec, so it waits for them.
    if job.spec.dataset.commit.is_none()
        && let Some(entry) = dataset.next_entry()
    {
        return wait(
            "DatasetIngesting",
            format!(
                "Dataset {dataset_name:?} is still ingesting spec.commits[{entry}]; the run trains on \
                 every commit once they are in"
            ),
            2,
        )
        .await;
    }
    let selector = SnapshotSelector {
        up_to: job.spec.dataset.commit,
        tags: job.spec.dataset.tags.clone(),
    };
    let status = dataset.status.clone().unwrap_or_default();
    match selector.select(&status.commits) {
        Ok(ids) if ids.is_empty() => {
            return wait(
                "NoCommits",
                format!(
                    "Dataset {dataset_name:?} has no ingested commits{}; add data to spec.commits",
                    if selector.tags.is_empty() {
                        ""
                    } else {
                        " with the selected tags"
                    }
                ),
                10,
            )
            .await;
        }
        Ok(_) => {}
        Err(error) => {
            return wait("NoSuchCommits", format!("Dataset {dataset_name:?}: {error}"), 15).await;
        }
    }
    let snapshot = match ctx.snapshots.prepare(&dataset, &selector).await {
        Ok(snapshot) => snapshot,
        Err(SnapshotError::Selection(error)) => {
            return wait("NoSuchCommits", format!("Dataset {dataset_name:?}: {error}"), 15).await;
        }
        Err(SnapshotError::NoStorage) => {
            return wait("NotConfigured", "object storage is not configured".into(), 60).await;
        }
        Err(SnapshotError::Operator(error)) => return Err(error),
    };
    match snapshot.state {
        SnapshotState::Running => {
            wait(
                "SnapshotBuilding",
                format!(
                    "snapshot {} of Dataset {dataset_name:?} is being built",
                    snapshot.version_hash
                ),
                2,
            )
            .await
        }
        SnapshotState::Failed => {
            let why = snapshot.message.clone().unwrap_or_default();
            wait(
                "SnapshotFailed",
                format!(
                    "snapshot {} of Dataset {dataset_name:?} failed: {why}; retrying",
                    snapshot.version_hash
                ),
                15,
            )
            .await
        }
        SnapshotState::Ready => Ok(Ok((dataset, snapshot))),
    }
}

/// The pods of the run's Job `name`: from the pod cache once it is filled, else from the API
/// server.
async fn run_pods(ctx: &Context, namespace: &str, name: &str) -> Result<Vec<Pod>> {
    let ready = |cache: &&reflector::Store<Pod>| {
        futures::FutureExt::now_or_never(cache.wait_until_ready()).is_some_and(|r| r.is_ok())
    };
    if let Some(cache) = Some(&ctx.caches.run_pods).filter(ready) {
        return Ok(cache
            .state()
            .iter()
            .filter(|pod| {
                pod.namespace().as_deref() == Some(namespace)
                    && pod.labels().get("job-name").map(String::as_str) == Some(name)
            })
            .map(|pod| (**pod).clone())
            .collect());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await?
        .items)
}

/// Creates the run's Job.
async fn launch(
    ctx: &Arc<Context>,
    job: &TrainingJob,
    jobs: &Api<Job>,
    name: &str,
    inputs: &RunInputs,
) -> Result<Job> {
    let apply = PatchParams::apply(MANAGER).force();
    let created = jobs
        .patch(name, &apply, &Patch::Apply(&build_job(job, inputs)))
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

/// `(queued runs ahead of job, runs holding a slot)` among `all`: runs hold a slot from their
/// Job's creation to their end; the queue is first created, first served.
pub fn queue_position(job: &TrainingJob, all: &[TrainingJob]) -> (usize, usize) {
    let key = |j: &TrainingJob| (j.creation_timestamp().map(|t| t.0), j.namespace(), j.name_any());
    let mine = key(job);
    let finished =
        |j: &TrainingJob| matches!(phase(j), Some(TrainingPhase::Succeeded | TrainingPhase::Failed));
    let mut ahead = 0;
    let mut active = 0;
    for other in all {
        if finished(other) || other.metadata.deletion_timestamp.is_some() || other.uid() == job.uid() {
            continue;
        }
        let status = other.status.as_ref();
        if status.and_then(|s| s.job_name.as_ref()).is_some() {
            active += 1;
        } else if key(other) < mine
            && !status.is_some_and(|s| {
                conditions::find(&s.conditions, ACCEPTED).is_some_and(|c| c.status == "False")
            })
        {
            ahead += 1;
        }
    }
    (ahead, active)
}

/// Records why the run waits for its dataset, and retries after `retry` seconds.
async fn waiting(
    api: &Api<TrainingJob>,
    job: &TrainingJob,
    reason: &str,
    message: String,
    retry: u64,
) -> Result<Action> {
    write(api, job, |status, generation| {
        set(status, generation, ACCEPTED, true, "Valid", "The spec is valid")
            | set(status, generation, DATASET_READY, false, reason, &message)
            | queued(status)
    })
    .await?;
    Ok(Action::requeue(Duration::from_secs(retry)))
}

fn queued(status: &mut TrainingJobStatus) -> bool {
    let changed = status.phase != Some(TrainingPhase::Queued);
    status.phase = Some(TrainingPhase::Queued);
    changed
}

/// Records what the workers do.
fn record(status: &mut TrainingJobStatus, generation: Option<i64>, observed: &Observed) -> bool {
    let before = status.clone();
    match observed {
        Observed::Launching { reason, message } => {
            status.phase = Some(TrainingPhase::Launching);
            set(status, generation, RUNNING, false, reason, message);
        }
        Observed::Running => {
            status.phase = Some(TrainingPhase::Running);
            status.start_time.get_or_insert_with(now);
            set(
                status,
                generation,
                RUNNING,
                true,
                "WorkersRunning",
                "the workers run",
            );
        }
        Observed::Completed => {
            status.start_time.get_or_insert_with(now);
            status.completion_time.get_or_insert_with(now);
            set(
                status,
                generation,
                RUNNING,
                false,
                "Completed",
                "every worker exited 0",
            );
            if status.artifact.is_some() {
                status.phase = Some(TrainingPhase::Succeeded);
                let message = status
                    .message
                    .clone()
                    .unwrap_or_else(|| "the model is recorded".into());
                set(status, generation, SUCCEEDED, true, "ArtifactRecorded", &message);
            } else {
                status.phase = Some(TrainingPhase::Failed);
                let message = "every worker exited 0 but no model artifact was recorded (the trainer never called CreateArtifact)";
                status.message = Some(message.into());
                set(status, generation, FAILED, true, "NoArtifact", message);
            }
        }
        Observed::Failed { reason, message } => {
            status.phase = Some(TrainingPhase::Failed);
            status.completion_time.get_or_insert_with(now);
            // The trainer's own reason (LogRunEnd(false, …)) says more than an exit code.
            let trainer = status.message.clone().filter(|_| {
                conditions::find(&status.conditions, FAILED).is_some_and(|c| c.reason == "TrainerFailed")
            });
            let message = match trainer {
                Some(trainer) => format!("{message}: {trainer}"),
                None => message.clone(),
            };
            status.message = Some(message.clone());
            set(status, generation, RUNNING, false, reason, &message);
            set(status, generation, FAILED, true, reason, &message);
        }
    }
    *status != before
}

/// Labels `job` with a new run id; returns the id and the labelled object.
async fn assign_run_id(
    job: &TrainingJob,
    ctx: &Arc<Context>,
    api: &Api<TrainingJob>,
) -> Result<(u64, TrainingJob)> {
    // The watch cache can lag behind the label this process wrote (a Job or pod event may
    // wake the run first), so the label is looked up once more at the source.
    let fresh = api.get(&job.name_any()).await?;
    if let Some(id) = fresh.run_id() {
        return Ok((id, fresh));
    }
    let job = &fresh;
    let namespace = ctx
        .training
        .as_ref()
        .map(|t| t.id_namespace.clone())
        .unwrap_or_else(|| job.namespace().unwrap_or_default());
    let id = ctx.ids.allocate(&ctx.client, &namespace, RUN_IDS).await?;
    // Against the version read: a reconcile that saw a stale object (no label yet) is refused
    // instead of labelling the run a second time.
    let patch = serde_json::json!({"metadata": {
        "labels": {RUN_ID_LABEL: id.to_string()},
        "resourceVersion": job.resource_version(),
    }});
    let labelled = api
        .patch(&job.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok((id, labelled))
}

/// 32 random bytes, hex: the run's token.
fn new_token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| crate::Error::Storage(format!("no randomness for a run token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> TrainingJob {
        serde_yaml::from_str(include_str!("../../../../examples/trainingjob.yaml")).unwrap()
    }

    fn images() -> BTreeMap<String, String> {
        BTreeMap::from([(
            "intent-classification".into(),
            "miniautoml/intent-classification:0.1.0".into(),
        )])
    }

    fn queued_job(
        name: &str,
        second: i64,
        job_name: Option<&str>,
        phase: Option<TrainingPhase>,
    ) -> TrainingJob {
        let mut job = fixture();
        job.metadata.name = Some(name.into());
        job.metadata.uid = Some(name.into());
        job.metadata.creation_timestamp = Some(Time(Timestamp::from_second(second).unwrap()));
        job.status = Some(TrainingJobStatus {
            job_name: job_name.map(String::from),
            phase,
            ..Default::default()
        });
        job
    }

    #[test]
    fn the_queue_is_first_created_first_served() {
        let all = vec![
            queued_job("running", 1, Some("running-train"), Some(TrainingPhase::Running)),
            queued_job("done", 0, Some("done-train"), Some(TrainingPhase::Succeeded)),
            queued_job("a", 2, None, Some(TrainingPhase::Queued)),
            queued_job("b", 3, None, Some(TrainingPhase::Queued)),
            queued_job("c", 4, None, None),
        ];
        assert_eq!(queue_position(&all[2], &all), (0, 1));
        assert_eq!(queue_position(&all[3], &all), (1, 1));
        assert_eq!(queue_position(&all[4], &all), (2, 1));
        // An invalid run holds no place.
        let mut invalid = all.clone();
        invalid[2]
            .status
            .as_mut()
            .unwrap()
            .conditions
            .push(conditions::condition(
                ACCEPTED,
                false,
                "UnknownAlgorithm",
                "",
                None,
                Time(Timestamp::from_second(0).unwrap()),
            ));
        assert_eq!(queue_position(&invalid[3], &invalid), (0, 1));
    }

    #[test]
    fn a_configured_algorithm_resolves_to_its_image() {
        let job = fixture();
        assert_eq!(
            resolve_image(&job.spec, &images()),
            Ok("miniautoml/intent-classification:0.1.0")
        );
    }

    #[test]
    fn an_explicit_image_is_used_as_is() {
        let mut job = fixture();
        job.spec.algorithm = None;
        job.spec.image = Some("registry.example/custom:7".into());
        assert_eq!(
            resolve_image(&job.spec, &BTreeMap::new()),
            Ok("registry.example/custom:7")
        );
    }

    #[test]
    fn an_unknown_algorithm_names_the_configured_ones_and_the_fixes() {
        let mut job = fixture();
        job.spec.algorithm = Some("random-forest".into());
        let Err(Verdict::Invalid { reason, message }) = resolve_image(&job.spec, &images()) else {
            panic!("an unknown algorithm must be rejected");
        };
        assert_eq!(reason, "UnknownAlgorithm");
        assert!(message.contains("\"random-forest\""), "{message}");
        assert!(message.contains("configured: intent-classification"), "{message}");
        assert!(message.contains("spec.image"), "{message}");

        let Err(Verdict::Invalid { message, .. }) = resolve_image(&job.spec, &BTreeMap::new()) else {
            panic!("an unknown algorithm must be rejected");
        };
        assert!(message.contains("configured: none"), "{message}");
    }

    #[test]
    fn neither_algorithm_nor_image_is_rejected() {
        let mut job = fixture();
        job.spec.algorithm = None;
        assert_eq!(
            resolve_image(&job.spec, &images()).unwrap_err(),
            Verdict::Invalid {
                reason: "NoImage",
                message: "set exactly one of spec.algorithm and spec.image".into(),
            }
        );
    }
}
