//! Controllers of the three resources.
//!
//! Each reconcile is a pipeline: dereference → validate (pure) → build desired objects (pure) →
//! server-side apply → status. This module holds what the three share: the context, the
//! `Accepted` condition every controller reports, and the controller runner.

pub mod children;
pub mod dataset;
pub mod model_deployment;
pub mod training_job;

use std::{collections::BTreeMap, fmt::Debug, sync::Arc, time::Duration};

use futures::{StreamExt, future};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    Error, Result,
    conditions::{self, ACCEPTED},
    metrics::Metrics,
    readiness::Readiness,
};

/// Field manager of everything the operator writes with server-side apply.
pub const MANAGER: &str = "miniautoml-operator";

/// What every reconcile can use.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes events users see in `kubectl describe`.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Algorithm name → training image (operator configuration).
    pub algorithm_images: BTreeMap<String, String>,
    /// The bucket of datasets and models; `None` when no credentials are configured.
    pub store: Option<miniautoml_data::Store>,
    /// The namespace the controllers watch; `None`: every namespace.
    pub watch_namespace: Option<String>,
    /// Snapshots being built by this process (`namespace/dataset/hash`).
    pub snapshot_builds: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// What training runs need; `None` until storage and the metadata store address are
    /// configured (TrainingJobs then wait with a condition).
    pub training: Option<TrainingSettings>,
    /// Numeric ids (dataset ids, run ids) handed out by this process.
    pub ids: crate::ids::Ids,
    /// The TrainingJob controller's watch cache, once it runs (the metadata store finds runs
    /// there instead of asking the API server on every write).
    pub training_jobs:
        std::sync::OnceLock<kube::runtime::reflector::Store<DeserializeGuard<miniautoml_api::TrainingJob>>>,
    /// The runs' Jobs and pods (label `miniautoml.io/trainingjob`), cached by the TrainingJob
    /// controller's watches.
    pub run_jobs: std::sync::OnceLock<kube::runtime::reflector::Store<k8s_openapi::api::batch::v1::Job>>,
    /// See `run_jobs`.
    pub run_pods: std::sync::OnceLock<kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>>,
    /// What predictors need; `None` until storage is configured (ModelDeployments then wait
    /// with a condition).
    pub serving: Option<model_deployment::build::PredictorSettings>,
    /// The ModelDeployment controller's watch cache, once it runs (the PredictionService finds
    /// deployments there).
    pub model_deployments: std::sync::OnceLock<
        kube::runtime::reflector::Store<DeserializeGuard<miniautoml_api::ModelDeployment>>,
    >,
    /// The predictors' Deployments (label `miniautoml.io/modeldeployment`), cached by the
    /// ModelDeployment controller's watches.
    pub predictor_deployments:
        std::sync::OnceLock<kube::runtime::reflector::Store<k8s_openapi::api::apps::v1::Deployment>>,
    /// The predictors' pods, cached likewise (the PredictionService routes to the ready ones).
    pub predictor_pods: std::sync::OnceLock<kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>>,
    /// Whether this replica leads: every replica watches and caches, only the leader
    /// reconciles (see `leader`).
    pub leadership: crate::leader::Leadership,
}

/// What a training run's pods are given.
#[derive(Clone, Debug)]
pub struct TrainingSettings {
    /// `host:port` of this operator's gRPC server as the pods reach it.
    pub metadata_store_address: String,
    /// S3 endpoint URL for the trainers (`None`: AWS S3).
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// The bucket of data and models.
    pub bucket: String,
    /// Storage credentials copied into each run's Secret.
    pub credentials: (String, String),
    /// Namespace of the run-id counter.
    pub id_namespace: String,
    /// Most runs at once (0: no limit).
    pub max_concurrent_runs: u32,
    /// Image pull Secrets of the runs' pods.
    pub image_pull_secrets: Vec<String>,
    /// Algorithm name → image pull policy of its runs' pods.
    pub algorithm_pull_policies: BTreeMap<String, String>,
}

impl Context {
    /// A context publishing events as `reporter_instance` (the pod name, when known).
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        algorithm_images: BTreeMap<String, String>,
        store: Option<miniautoml_data::Store>,
        reporter_instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: reporter_instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            algorithm_images,
            store,
            watch_namespace: None,
            snapshot_builds: Default::default(),
            training: None,
            ids: Default::default(),
            training_jobs: Default::default(),
            run_jobs: Default::default(),
            run_pods: Default::default(),
            serving: None,
            model_deployments: Default::default(),
            predictor_deployments: Default::default(),
            predictor_pods: Default::default(),
            leadership: crate::leader::Leadership::single(),
        }
    }
}

impl Context {
    /// An API over the watched namespace, or over every namespace when none is set.
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.watch_namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// The TrainingJob of run `run`: from the TrainingJob controller's cache when the cached
    /// object satisfies `fresh_enough` (the cache may lag the last write), else from the API
    /// server; `None` when no TrainingJob has that run id.
    pub async fn find_run(
        &self,
        run: &str,
        fresh_enough: impl Fn(&miniautoml_api::TrainingJob) -> bool,
    ) -> Result<Option<miniautoml_api::TrainingJob>> {
        use training_job::build::RUN_ID_LABEL;
        let cached = self.training_jobs.get().and_then(|store| {
            store.state().iter().find_map(|guard| {
                let job = guard.0.as_ref().ok()?;
                (job.labels().get(RUN_ID_LABEL).map(String::as_str) == Some(run)).then(|| job.clone())
            })
        });
        if let Some(job) = cached.filter(|job| fresh_enough(job)) {
            return Ok(Some(job));
        }
        let api: Api<miniautoml_api::TrainingJob> = self.watched();
        let params = kube::api::ListParams::default().labels(&format!("{RUN_ID_LABEL}={run}"));
        Ok(api.list(&params).await?.items.into_iter().next())
    }
}

/// Watches the objects of `api` labelled `label` into a cache, trimmed by `trim` (managed fields
/// are always dropped) so the cache holds only what reconciles read. Returns the cache and the
/// stream of changed objects, for `Controller::owns_stream` or `watches_stream`.
pub fn labelled_cache<K>(
    api: Api<K>,
    label: &str,
    mut trim: impl FnMut(&mut K) + Send + 'static,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use kube::runtime::WatchStreamExt;
    let (cache, writer) = kube::runtime::reflector::store();
    let events = watcher(api, watcher::Config::default().labels(label).any_semantic())
        .default_backoff()
        .modify(move |object| {
            object.managed_fields_mut().clear();
            trim(object);
        })
        .reflect(writer)
        .touched_objects();
    (cache, events)
}

/// What a pod cache keeps: labels, node and status (no annotations, volumes, tolerations or
/// container environment).
pub fn trim_pod(pod: &mut k8s_openapi::api::core::v1::Pod) {
    pod.annotations_mut().clear();
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        spec.tolerations = None;
        for container in &mut spec.containers {
            container.env = None;
            container.volume_mounts = None;
        }
    }
}

/// A custom resource with the status fields every controller reports.
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
    /// Current status conditions.
    fn conditions(&self) -> &[Condition];
    /// `status.observedGeneration`.
    fn observed_generation(&self) -> Option<i64>;
}

/// Outcome of validating a spec beyond what the CRD schema and CEL rules check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The spec can be acted on.
    Valid,
    /// The spec cannot be acted on until the user changes it.
    Invalid {
        /// CamelCase reason for the condition and event.
        reason: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// The status patch that records `verdict` for `object`, or `None` when the status already
/// says so for the current generation.
pub fn accepted_status_patch<K: Reconciled>(object: &K, verdict: &Verdict, now: Time) -> Option<Value> {
    let generation = object.meta().generation;
    let desired = match verdict {
        Verdict::Valid => {
            conditions::condition(ACCEPTED, true, "Valid", "The spec is valid", generation, now)
        }
        Verdict::Invalid { reason, message } => {
            conditions::condition(ACCEPTED, false, reason, message.clone(), generation, now)
        }
    };
    let mut current = object.conditions().to_vec();
    let changed = conditions::upsert(&mut current, desired);
    if !changed && object.observed_generation() == generation {
        return None;
    }
    let accepted = conditions::find(&current, ACCEPTED).cloned();
    Some(json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": {
            "observedGeneration": generation,
            "conditions": [accepted],
        },
    }))
}

/// Writes the `Accepted` condition for `verdict` and, when the spec became invalid, a warning
/// event. Invalid specs wait for the user's next change.
pub async fn report_verdict<K: Reconciled>(object: &K, verdict: Verdict, ctx: &Context) -> Result<Action> {
    let namespace = object.namespace().ok_or_else(|| Error::MissingField {
        kind: K::CONTROLLER,
        name: object.name_any(),
        field: "metadata.namespace",
    })?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let Some(patch) = accepted_status_patch(object, &verdict, now) else {
        return Ok(Action::await_change());
    };
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams::apply(MANAGER).force();
    api.patch_status(&object.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    if let Verdict::Invalid { reason, message } = verdict {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(message),
            action: "Validate".into(),
            secondary: None,
        };
        ctx.recorder.publish(&event, &object.object_ref(&())).await?;
    }
    Ok(Action::await_change())
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

/// The reconcile the controllers share until their own pipelines land: reads the object, skips
/// objects being deleted, and records `validate`'s verdict in the `Accepted` condition.
pub async fn reconcile_validated<K: Reconciled>(
    guard: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
    validate: fn(&K, &Context) -> Verdict,
) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(K::CONTROLLER);
    match &guard.0 {
        Err(error) => report_unreadable(&guard, error, &ctx).await,
        Ok(object) if object.meta().deletion_timestamp.is_some() => Ok(Action::await_change()),
        Ok(object) => report_verdict(object, validate(object, &ctx), &ctx).await,
    }
}

/// Reads `name`, lets `change` edit it (returning whether it changed anything) and writes its
/// status back with the read's resourceVersion, retrying on conflicts: writers in this process
/// (the controller, snapshot builds) never overwrite each other's status fields. Returns the
/// object as written (or as read when unchanged).
pub async fn modify_status<K>(api: &Api<K>, name: &str, mut change: impl FnMut(&mut K) -> bool) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut attempts = 0;
    loop {
        let mut object = api.get_status(name).await?;
        if !change(&mut object) {
            return Ok(object);
        }
        match api
            .replace_status(name, &kube::api::PostParams::default(), &object)
            .await
        {
            Ok(written) => return Ok(written),
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 10 => attempts += 1,
            Err(error) => return Err(error.into()),
        }
    }
}

/// As [`modify_status`], starting from `cached` (an object from the watch cache) instead of a
/// read: nothing is sent when `change` changes nothing, and a write with a stale
/// resourceVersion is refused by the server and retried from a fresh read.
pub async fn modify_cached_status<K>(
    api: &Api<K>,
    cached: &K,
    mut change: impl FnMut(&mut K) -> bool,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut object = cached.clone();
    if !change(&mut object) {
        return Ok(object);
    }
    let name = object.meta().name.clone().unwrap_or_default();
    match api
        .replace_status(&name, &kube::api::PostParams::default(), &object)
        .await
    {
        Ok(written) => Ok(written),
        Err(kube::Error::Api(status)) if status.code == 409 => modify_status(api, &name, change).await,
        Err(error) => Err(error.into()),
    }
}

/// Publishes an event about `object`.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        warn!(%error, "publishing an event failed");
    }
}

/// How long to wait before retrying a reconcile that failed.
fn backoff<K: Reconciled>(object: Arc<DeserializeGuard<K>>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(controller = K::CONTROLLER, object = %ObjectRef::from_obj(object.as_ref()), %error, "reconcile failed");
    ctx.metrics.reconcile_failed(K::CONTROLLER, error.metric_label());
    match error {
        // A write against a version another writer replaced: try again from the new one soon.
        Error::Kube(kube::Error::Api(status)) if status.code == 409 => {
            Action::requeue(Duration::from_secs(1))
        }
        _ => Action::requeue(Duration::from_secs(15)),
    }
}

/// Runs one controller until `shutdown` fires, marking `readiness` once its cache is synced.
async fn run_controller<K, F, Fut>(
    ctx: Arc<Context>,
    reconcile: F,
    // Adds the watches of the objects the controller owns or reads.
    watches: impl FnOnce(Controller<DeserializeGuard<K>>, &Context) -> Controller<DeserializeGuard<K>>,
    readiness: Readiness,
    shutdown: CancellationToken,
) where
    K: Reconciled,
    F: FnMut(Arc<DeserializeGuard<K>>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let api: Api<DeserializeGuard<K>> = ctx.watched();
    let controller = watches(
        Controller::new(api, watcher::Config::default().any_semantic()),
        &ctx,
    );
    let store = controller.store();
    let synced = readiness.component(K::CONTROLLER);
    tokio::spawn(async move {
        // The store's ready signal wakes only its most recent waiter (the controller itself), so
        // this second waiter polls again every so often instead of waiting for a wake-up.
        loop {
            match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
                Ok(Ok(())) => break synced.set_ready(),
                Ok(Err(_writer_dropped)) => break,
                Err(_still_waiting) => continue,
            }
        }
    });
    info!(controller = K::CONTROLLER, "controller started");
    // Followers keep their caches current but leave every object alone; a replica that becomes
    // the leader reconciles them all.
    let mut reconcile = reconcile;
    let leading_reconcile = move |object: Arc<DeserializeGuard<K>>, ctx: Arc<Context>| {
        let leading = ctx.leadership.is_leading();
        let run = leading.then(|| reconcile(object, ctx));
        async move {
            match run {
                Some(run) => run.await,
                None => Ok(Action::await_change()),
            }
        }
    };
    let gained = futures::stream::unfold(ctx.leadership.gained(), |mut gained| async move {
        gained.changed().await.ok()?;
        Some(((), gained))
    });
    controller
        .reconcile_all_on(gained)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(leading_reconcile, backoff::<K>, ctx)
        .for_each(|_| future::ready(()))
        .await;
    info!(controller = K::CONTROLLER, "controller stopped");
}

/// Runs the three controllers until `shutdown` fires.
pub async fn run(ctx: Arc<Context>, readiness: Readiness, shutdown: CancellationToken) {
    tokio::join!(
        run_controller(
            ctx.clone(),
            dataset::reconcile,
            |controller, _| controller,
            readiness.clone(),
            shutdown.clone()
        ),
        run_controller(
            ctx.clone(),
            training_job::reconcile,
            training_job::watches,
            readiness.clone(),
            shutdown.clone()
        ),
        run_controller(
            ctx,
            model_deployment::reconcile,
            model_deployment::watches,
            readiness,
            shutdown
        ),
    );
}

/// Implements [`Reconciled`] for a resource whose status has `conditions` and
/// `observed_generation`.
macro_rules! reconciled {
    ($kind:ty, $controller:literal) => {
        impl $crate::controller::Reconciled for $kind {
            const CONTROLLER: &'static str = $controller;
            fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
                self.status
                    .as_ref()
                    .map(|s| s.conditions.as_slice())
                    .unwrap_or_default()
            }
            fn observed_generation(&self) -> Option<i64> {
                self.status.as_ref().and_then(|s| s.observed_generation)
            }
        }
    };
}
pub(crate) use reconciled;

#[cfg(test)]
mod tests {
    use miniautoml_api::Dataset;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn fixture(generation: i64) -> Dataset {
        let text = include_str!("../../../examples/dataset.yaml");
        let mut dataset: Dataset = serde_yaml::from_str(text).unwrap();
        dataset.metadata.namespace = Some("team-a".into());
        dataset.metadata.generation = Some(generation);
        dataset
    }

    /// `object` with the status a server-side apply of `patch` would leave.
    fn applied(mut object: Dataset, patch: &Value) -> Dataset {
        let status = object.status.get_or_insert_with(Default::default);
        status.observed_generation = patch["status"]["observedGeneration"].as_i64();
        let applied: Vec<Condition> = serde_json::from_value(patch["status"]["conditions"].clone()).unwrap();
        for condition in applied {
            conditions::upsert(&mut status.conditions, condition);
        }
        object
    }

    #[test]
    fn a_new_object_gets_observed_generation_and_accepted() {
        let patch = accepted_status_patch(&fixture(1), &Verdict::Valid, at(100)).unwrap();
        assert_eq!(patch["apiVersion"], "miniautoml.io/v1alpha1");
        assert_eq!(patch["kind"], "Dataset");
        assert_eq!(patch["status"]["observedGeneration"], 1);
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["type"], "Accepted");
        assert_eq!(condition["status"], "True");
        assert_eq!(condition["reason"], "Valid");
        assert_eq!(condition["observedGeneration"], 1);
    }

    #[test]
    fn an_up_to_date_status_is_not_written_again() {
        let first = accepted_status_patch(&fixture(1), &Verdict::Valid, at(100)).unwrap();
        let reconciled = applied(fixture(1), &first);
        assert_eq!(accepted_status_patch(&reconciled, &Verdict::Valid, at(200)), None);
    }

    #[test]
    fn a_new_generation_is_recorded_and_keeps_the_transition_time() {
        let first = accepted_status_patch(&fixture(1), &Verdict::Valid, at(100)).unwrap();
        let mut edited = applied(fixture(1), &first);
        edited.metadata.generation = Some(2);
        let patch = accepted_status_patch(&edited, &Verdict::Valid, at(200)).unwrap();
        assert_eq!(patch["status"]["observedGeneration"], 2);
        assert_eq!(
            patch["status"]["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:01:40Z"
        );
    }

    #[test]
    fn an_invalid_spec_sets_accepted_false_with_reason_and_message() {
        let first = accepted_status_patch(&fixture(1), &Verdict::Valid, at(100)).unwrap();
        let mut edited = applied(fixture(1), &first);
        edited.metadata.generation = Some(2);
        let verdict = Verdict::Invalid {
            reason: "UnknownAlgorithm",
            message: "no such algorithm".into(),
        };
        let patch = accepted_status_patch(&edited, &verdict, at(200)).unwrap();
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "UnknownAlgorithm");
        assert_eq!(condition["message"], "no such algorithm");
        assert_eq!(condition["lastTransitionTime"], "1970-01-01T00:03:20Z");
    }
}
