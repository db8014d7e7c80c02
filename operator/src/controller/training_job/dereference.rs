//! Everything a run's reconcile reads besides the TrainingJob itself: its Job (once launched),
//! the Job's pods, its Dataset and snapshot, and its place in the queue. Nothing here writes.

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    api::ListParams,
    runtime::reflector::{self, ObjectRef},
};
use miniautoml_api::{Dataset, SnapshotState, SnapshotStatus, TrainingJob, labels::TRAINING_JOB_LABEL};
use miniautoml_data::SnapshotSelector;

use super::build::job_name;
use crate::{
    Result,
    context::Context,
    controller::children::{controlled_by, name_taken},
    kueue::{self, QueueState},
    run_queue::Place,
    snapshots::SnapshotError,
};

/// Why a run cannot launch yet, and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Condition reason.
    pub reason: &'static str,
    /// For the user.
    pub message: String,
    /// Seconds until the next look (the watches usually come first).
    pub retry: u64,
}

fn waiting(
    reason: &'static str,
    message: String,
    retry: u64,
) -> Result<Result<(Dataset, SnapshotStatus), Waiting>> {
    Ok(Err(Waiting {
        reason,
        message,
        retry,
    }))
}

/// The run's Job, from the cache, else (just created, or the cache is still filling) from the
/// API server: `Ok(None)` when there is none, `Err` with the reason when a Job of its name
/// exists that this TrainingJob does not control (another's, or one someone made), which is
/// never adopted. A run the status says was never launched is not looked up at the API server
/// once the cache is filled (a queue of thousands would cost a GET per waiting run every few
/// seconds): [`run_at_source`] checks its name just before it launches.
pub async fn existing_run(ctx: &Context, job: &TrainingJob) -> Result<Result<Option<Job>, String>> {
    let namespace = job.namespace().unwrap_or_default();
    let name = job_name(job);
    let cached = ctx
        .caches
        .run_jobs
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|batch_job| (*batch_job).clone());
    let never_launched = job.status.as_ref().is_none_or(|s| s.job_name.is_none());
    match cached {
        Some(batch_job) => Ok(owned(job, Some(batch_job))),
        None if never_launched && filled(&ctx.caches.run_jobs) => Ok(Ok(None)),
        None => run_at_source(ctx, job).await,
    }
}

/// The run's Job as the API server has it, as [`existing_run`] answers: the cache holds only
/// the runs' own (labelled) Jobs, so a Job someone made under the run's name is found here.
pub async fn run_at_source(ctx: &Context, job: &TrainingJob) -> Result<Result<Option<Job>, String>> {
    let namespace = job.namespace().unwrap_or_default();
    let found = Api::<Job>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&job_name(job))
        .await?;
    Ok(owned(job, found))
}

/// `found` if `job` controls it, else why not.
fn owned(job: &TrainingJob, found: Option<Job>) -> Result<Option<Job>, String> {
    match found {
        Some(batch_job) if !controlled_by(&batch_job.metadata, job.uid().as_deref()) => Err(name_taken(
            "Job",
            &batch_job.metadata,
            &format!("TrainingJob {}", job.name_any()),
        )),
        found => Ok(found),
    }
}

/// The pods of the run's Job: from the pod cache once it is filled, else from the API server.
/// Only pods labelled with the TrainingJob's name too count (a Job of the same name that is
/// not the run's is never its).
pub async fn run_pods(ctx: &Context, job: &TrainingJob) -> Result<Vec<Pod>> {
    let namespace = job.namespace().unwrap_or_default();
    let (name, owner) = (job_name(job), job.name_any());
    let ours = |pod: &Pod| {
        let labels = pod.labels();
        labels.get("job-name") == Some(&name) && labels.get(TRAINING_JOB_LABEL) == Some(&owner)
    };
    if let Some(cache) = Some(&ctx.caches.run_pods).filter(|cache| filled(cache)) {
        return Ok(cache
            .state()
            .iter()
            .filter(|pod| pod.namespace().as_deref() == Some(namespace.as_str()) && ours(pod))
            .map(|pod| (**pod).clone())
            .collect());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("job-name={name},{TRAINING_JOB_LABEL}={owner}");
    Ok(pods.list(&ListParams::default().labels(&selector)).await?.items)
}

/// Whether a watch cache has been filled (its first list is in).
fn filled<K>(cache: &reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures::FutureExt::now_or_never(cache.wait_until_ready()).is_some_and(|r| r.is_ok())
}

/// The Dataset and its Ready snapshot for `job`, or why not: the Dataset is missing, still
/// ingesting the commits a run on its latest data needs, has no matching commits, or the
/// snapshot is being built or failed. Asking for the snapshot starts its build.
pub async fn ready_snapshot(
    job: &TrainingJob,
    ctx: &Context,
) -> Result<Result<(Dataset, SnapshotStatus), Waiting>> {
    let namespace = job.namespace().unwrap_or_default();
    let dataset_name = &job.spec.dataset.name;
    // The cached Dataset when its snapshot for the run is Ready there (a queue of thousands
    // asks for it every few seconds per run); anything else is read at the source, since the
    // cache may lag a build that just ended.
    if let Some(ready) = cached_ready_snapshot(job, ctx, &namespace) {
        return Ok(Ok(ready));
    }
    let datasets: Api<Dataset> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(dataset) = datasets.get_opt(dataset_name).await? else {
        return waiting(
            "DatasetNotFound",
            format!("Dataset {dataset_name:?} does not exist in namespace {namespace}"),
            10,
        );
    };
    // Without a pinned commit the run trains on every commit of the spec, so it waits for them.
    if job.spec.dataset.commit.is_none()
        && let Some(entry) = dataset.next_entry()
    {
        return waiting(
            "DatasetIngesting",
            format!(
                "Dataset {dataset_name:?} is still ingesting spec.commits[{entry}]; the run trains on \
                 every commit once they are in"
            ),
            2,
        );
    }
    let selector = SnapshotSelector {
        up_to: job.spec.dataset.commit,
        tags: job.spec.dataset.tags.clone(),
    };
    let status = dataset.status.clone().unwrap_or_default();
    match selector.select(&status.commits) {
        Ok(ids) if ids.is_empty() => {
            return waiting(
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
            );
        }
        Ok(_) => {}
        Err(error) => {
            return waiting("NoSuchCommits", format!("Dataset {dataset_name:?}: {error}"), 15);
        }
    }
    let snapshot = match ctx.snapshots.prepare(&dataset, &selector).await {
        Ok(snapshot) => snapshot,
        Err(SnapshotError::Selection(error)) => {
            return waiting("NoSuchCommits", format!("Dataset {dataset_name:?}: {error}"), 15);
        }
        Err(SnapshotError::NoStorage) => {
            return waiting("NotConfigured", "object storage is not configured".into(), 60);
        }
        Err(SnapshotError::Operator(error)) => return Err(error),
    };
    match snapshot.state {
        SnapshotState::Running => waiting(
            "SnapshotBuilding",
            format!(
                "snapshot {} of Dataset {dataset_name:?} is being built",
                snapshot.version_hash
            ),
            2,
        ),
        SnapshotState::Failed => {
            let why = snapshot.message.clone().unwrap_or_default();
            waiting(
                "SnapshotFailed",
                format!(
                    "snapshot {} of Dataset {dataset_name:?} failed: {why}; retrying",
                    snapshot.version_hash
                ),
                15,
            )
        }
        SnapshotState::Ready => Ok(Ok((dataset, snapshot))),
    }
}

/// The Dataset and the Ready snapshot `job` trains on, when the watch cache has both and the
/// Dataset has nothing left to ingest that the run waits for.
fn cached_ready_snapshot(
    job: &TrainingJob,
    ctx: &Context,
    namespace: &str,
) -> Option<(Dataset, SnapshotStatus)> {
    let guard = ctx
        .caches
        .datasets
        .get(&ObjectRef::new(&job.spec.dataset.name).within(namespace))?;
    let dataset = guard.0.as_ref().ok()?;
    if job.spec.dataset.commit.is_none() && dataset.next_entry().is_some() {
        return None;
    }
    let selector = SnapshotSelector {
        up_to: job.spec.dataset.commit,
        tags: job.spec.dataset.tags.clone(),
    };
    let status = dataset.status.as_ref()?;
    let ids = selector
        .select(&status.commits)
        .ok()
        .filter(|ids| !ids.is_empty())?;
    let hash = miniautoml_data::version_hash(&ids);
    let snapshot = status
        .snapshots
        .iter()
        .find(|s| s.version_hash == hash && s.state == SnapshotState::Ready)?;
    Some((dataset.clone(), snapshot.clone()))
}

/// The Dataset and the snapshot `job` was launched on (`status.datasetVersionHash`), for the
/// next attempt of a gang restart: the same data, whatever was committed since.
pub async fn launched_snapshot(
    job: &TrainingJob,
    ctx: &Context,
) -> Result<Result<(Dataset, SnapshotStatus), Waiting>> {
    let namespace = job.namespace().unwrap_or_default();
    let dataset_name = &job.spec.dataset.name;
    let hash = job
        .status
        .as_ref()
        .and_then(|s| s.dataset_version_hash.clone())
        .unwrap_or_default();
    let Some(dataset) = Api::<Dataset>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(dataset_name)
        .await?
    else {
        return waiting(
            "DatasetNotFound",
            format!("Dataset {dataset_name:?}, which the run's first attempt trained on, no longer exists"),
            10,
        );
    };
    let snapshot = dataset.status.as_ref().and_then(|s| {
        s.snapshots
            .iter()
            .find(|snapshot| snapshot.version_hash == hash && snapshot.state == SnapshotState::Ready)
            .cloned()
    });
    match snapshot {
        Some(snapshot) => Ok(Ok((dataset, snapshot))),
        None => waiting(
            "SnapshotGone",
            format!(
                "snapshot {hash} of Dataset {dataset_name:?}, which the run's first attempt trained on, is not \
                 Ready; the restart waits for it"
            ),
            15,
        ),
    }
}

/// What Kueue says of a queued run's Job `run` (LocalQueue `queue`): its Workload's state, and
/// while Kueue holds it suspended and pending, its place in the LocalQueue.
pub async fn kueue_state(ctx: &Context, batch_job: &Job, queue: &str) -> Queued {
    let uid = batch_job.uid().unwrap_or_default();
    let state = match &ctx.caches.workloads {
        Some(cache) => {
            let all = cache.state();
            kueue::state(kueue::of_job(all.iter().map(|w| &**w), &uid))
        }
        None => QueueState::NoWorkload,
    };
    let suspended = batch_job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
    let position = match (&state, &ctx.kueue) {
        (QueueState::Pending { .. }, Some(positions)) if suspended => {
            let namespace = batch_job.namespace().unwrap_or_default();
            positions.position(&namespace, queue, &batch_job.name_any()).await
        }
        _ => None,
    };
    Queued {
        state,
        suspended,
        position,
    }
}

/// A queued run's state in Kueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// What its Workload says.
    pub state: QueueState,
    /// Whether its Job is suspended (Kueue has not started it, or stopped it on eviction).
    pub suspended: bool,
    /// Its place in its LocalQueue (from 0), while pending.
    pub position: Option<u32>,
}

/// `job`'s place in the operator's own queue, from the TrainingJob cache (no API call; the
/// order is recomputed at most every `run_queue::FRESH`).
pub fn queue(job: &TrainingJob, ctx: &Context) -> Place {
    let start = std::time::Instant::now();
    let place = ctx.run_queue.place(job);
    ctx.metrics.run_queue_lookup(start.elapsed().as_secs_f64());
    place
}
