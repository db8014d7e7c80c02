//! What every reconcile and every gRPC method can use: the client, the event recorder, the
//! bucket, the operator's settings, the watch caches and the services built on them. Plain
//! shared state: it depends on no controller and no gRPC service.

use std::{collections::BTreeMap, fmt::Debug, sync::Arc};

use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{Pod, SecurityContext},
};
use kube::{
    Api, Client, Resource,
    api::ListParams,
    core::DeserializeGuard,
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        reflector::Store,
    },
};
use miniautoml_api::{Dataset, ModelDeployment, TrainingJob, labels::RUN_ID_LABEL};
use tracing::warn;

use crate::{
    Result, ids::Ids, leader::Leadership, metrics::Metrics, pod_keys::PodKeys, run_queue::RunQueue,
    run_tokens::RunTokens, snapshots::Snapshots, sources::SourcePolicy, status::Written,
};

/// Field manager of everything the operator writes with server-side apply, and the controller
/// name on its events.
pub const MANAGER: &str = "miniautoml-operator";

/// The watch caches every replica keeps, leader or not (`controller::watch` builds them; the
/// controllers' watches fill them). A cache still filling answers nothing, and readers fall
/// back to the API server.
#[derive(Clone)]
pub struct Caches {
    /// Datasets (the console lists them here).
    pub datasets: Store<DeserializeGuard<Dataset>>,
    /// TrainingJobs (the metadata store finds runs here instead of asking the API server on
    /// every write).
    pub training_jobs: Store<DeserializeGuard<TrainingJob>>,
    /// The runs' Jobs (label `miniautoml.io/trainingjob`).
    pub run_jobs: Store<Job>,
    /// The runs' pods, trimmed.
    pub run_pods: Store<Pod>,
    /// ModelDeployments (the PredictionService finds deployments here).
    pub model_deployments: Store<DeserializeGuard<ModelDeployment>>,
    /// The predictors' Deployments (label `miniautoml.io/modeldeployment`).
    pub predictor_deployments: Store<Deployment>,
    /// The predictors' pods, trimmed (the PredictionService routes to the ready ones).
    pub predictor_pods: Store<Pod>,
    /// Kueue's Workloads, where the cluster serves them (queued runs read their admission here).
    pub workloads: Option<Store<crate::kueue::Workload>>,
}

/// What every pod the operator starts (trainers, predictors, upload keys' holders) is given
/// alike: where storage is, the key it gets, how its images are pulled, and the operator's own
/// image for the steps it runs in pods.
#[derive(Clone, Debug)]
pub struct PodSettings {
    /// S3 endpoint URL for the pods (`None`: AWS S3).
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// The storage key each pod's Secret gets.
    pub keys: PodKeys,
    /// Image pull Secrets of the pods.
    pub image_pull_secrets: Vec<String>,
    /// The operator's image, for the steps it runs in pods (a multi-worker run's start step, a
    /// custom predictor's storage initializer: `--launcher-image`).
    pub launcher_image: String,
}

/// What a training run's pods are given.
#[derive(Clone, Debug)]
pub struct TrainingSettings {
    /// What every pod gets.
    pub pods: PodSettings,
    /// `host:port` of this operator's gRPC server as the pods reach it (`https://host:port`
    /// when it serves TLS).
    pub metadata_store_address: String,
    /// The CA the pods trust for it, when it serves TLS (PEM).
    pub metadata_store_ca: Option<String>,
    /// `host:port` of the plain-text listener for original-contract runs' reports, as the pods
    /// reach it; `None` when it is off (such runs are not accepted).
    pub original_contract_address: Option<String>,
    /// Algorithm name → how its trainer reports, where configured (else with its run's token).
    pub algorithm_contracts: BTreeMap<String, miniautoml_api::training_job::Contract>,
    /// The bucket of data and models.
    pub bucket: String,
    /// Issues and checks the runs' tokens.
    pub run_tokens: RunTokens,
    /// Most runs at once (0: no limit).
    pub max_concurrent_runs: u32,
    /// Algorithm name → image pull policy of its runs' pods.
    pub algorithm_pull_policies: BTreeMap<String, String>,
    /// Algorithm name → security context of its runs' containers, where configured (else the
    /// restricted default, which a spec's own image always gets).
    pub algorithm_security_contexts: BTreeMap<String, SecurityContext>,
}

/// What predictors are given, from the operator's configuration.
#[derive(Clone, Debug)]
pub struct PredictorSettings {
    /// What every pod gets (the launcher image runs a custom predictor's storage initializer,
    /// `fetch-model`).
    pub pods: PodSettings,
    /// Image used unless the spec names one.
    pub image: String,
    /// Algorithm name → the predictor image of its models (used unless the spec names one).
    pub algorithm_predictors: BTreeMap<String, String>,
    /// Pull policy of `image` (`None`: Kubernetes' default); a spec's own image keeps the default.
    pub image_pull_policy: Option<String>,
    /// Security context of the predictor containers.
    pub security_context: SecurityContext,
    /// Who the predictors' NetworkPolicy lets in besides the pods of their namespace and of the
    /// namespaces their ModelDeployment allows; `None`: the operator writes no policy.
    pub ingress: Option<PredictorIngress>,
}

/// The peers every predictor NetworkPolicy lets in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PredictorIngress {
    /// The operator's pods: their namespace and labels (`None`: unknown, as for an operator
    /// run outside the cluster, whose traffic comes from a node).
    pub operator: Option<(String, BTreeMap<String, String>)>,
}

/// What every reconcile and gRPC method can use.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes events users see in `kubectl describe`.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Algorithm name → training image (operator configuration).
    pub algorithm_images: BTreeMap<String, String>,
    /// Algorithm name → most workers one of its runs may have (unlisted: the CRD's limit).
    pub algorithm_max_workers: BTreeMap<String, u32>,
    /// The bucket of datasets and models; `None` when no credentials are configured.
    pub store: Option<miniautoml_data::Store>,
    /// The namespace the controllers watch; `None`: every namespace.
    pub watch_namespace: Option<String>,
    /// Training snapshots, built once each.
    pub snapshots: Snapshots,
    /// What training runs need; `None` until storage and the metadata store address are
    /// configured (TrainingJobs then wait with a condition).
    pub training: Option<TrainingSettings>,
    /// What predictors need; `None` until storage is configured (ModelDeployments then wait
    /// with a condition).
    pub serving: Option<PredictorSettings>,
    /// Numeric ids (dataset ids, run ids) handed out by this process.
    pub ids: Ids,
    /// Namespace of the id counters (the gRPC namespace).
    pub id_namespace: String,
    /// Where each namespace may ingest data from.
    pub sources: SourcePolicy,
    /// The watch caches.
    pub caches: Caches,
    /// Whether this replica leads: every replica watches and caches, only the leader
    /// reconciles (see `leader`).
    pub leadership: Leadership,
    /// Pending runs' places in Kueue's LocalQueues; `None` where the cluster serves no Kueue
    /// (runs with `spec.queueName` are then refused).
    pub kueue: Option<Arc<crate::kueue::Positions>>,
    /// The operator's own queue of runs (`--max-concurrent-runs`), over the TrainingJob cache.
    pub run_queue: RunQueue,
    /// The TrainingJobs this process wrote and the cache does not show yet (the controller and
    /// the metadata store start from them).
    pub written_runs: Written<TrainingJob>,
}

/// What a [`Context`] is built from, every part required: a context is built whole, never
/// patched after, so no part can be left at a default (a replica that forgot its leadership
/// would act as the leader).
pub struct Parts {
    /// Kubernetes client.
    pub client: Client,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Events are published as this instance (the pod name, when known).
    pub reporter_instance: Option<String>,
    /// Algorithm name → training image.
    pub algorithm_images: BTreeMap<String, String>,
    /// Algorithm name → most workers one of its runs may have.
    pub algorithm_max_workers: BTreeMap<String, u32>,
    /// The bucket; `None` without credentials.
    pub store: Option<miniautoml_data::Store>,
    /// The namespace the controllers watch; `None`: every namespace.
    pub watch_namespace: Option<String>,
    /// Namespace of the id counters (the gRPC namespace).
    pub id_namespace: String,
    /// Where each namespace may ingest data from.
    pub sources: SourcePolicy,
    /// The watch caches.
    pub caches: Caches,
    /// What training runs need, when configured.
    pub training: Option<TrainingSettings>,
    /// What predictors need, when configured.
    pub serving: Option<PredictorSettings>,
    /// Whether this replica leads.
    pub leadership: Leadership,
    /// Whether the cluster serves Kueue (queued runs' positions are then asked of it).
    pub kueue: bool,
}

impl Context {
    /// The context `parts` make, with its event recorder, snapshot service and id allocator.
    pub fn new(parts: Parts) -> Self {
        let Parts {
            client,
            metrics,
            reporter_instance,
            algorithm_images,
            algorithm_max_workers,
            store,
            watch_namespace,
            id_namespace,
            sources,
            caches,
            training,
            serving,
            leadership,
            kueue,
        } = parts;
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: reporter_instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            snapshots: Snapshots::new(client.clone(), store.clone()),
            kueue: kueue.then(|| Arc::new(crate::kueue::Positions::new(client.clone()))),
            run_queue: RunQueue::new(caches.training_jobs.clone()),
            written_runs: Written::default(),
            client,
            metrics,
            algorithm_images,
            algorithm_max_workers,
            store,
            watch_namespace,
            training,
            serving,
            ids: Ids::default(),
            id_namespace,
            sources,
            caches,
            leadership,
        }
    }

    /// An API over the watched namespace, or over every namespace when none is set.
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        scoped(&self.client, self.watch_namespace.as_deref())
    }

    /// The TrainingJob of run `run` (its `status.runId`, which only the operator writes): from
    /// the watch cache when the cached object satisfies `fresh_enough` (the cache may lag the
    /// last write), else from the API server; `None` when no TrainingJob has that run id. A
    /// `miniautoml.io/run-id` label alone never makes a run answer to an id.
    pub async fn find_run(
        &self,
        run: u64,
        fresh_enough: impl Fn(&TrainingJob) -> bool,
    ) -> Result<Option<TrainingJob>> {
        self.find_run_where(run, |_| true, fresh_enough).await
    }

    /// The TrainingJob of run `run` whose uid is `uid`, as [`Context::find_run`] finds it. Where
    /// two TrainingJobs carry the same run id (another operator's, watching a namespace this one
    /// watches too, counts its own ids), only the one the uid names answers.
    pub async fn find_run_with_uid(&self, run: u64, uid: &str) -> Result<Option<TrainingJob>> {
        self.find_run_where(run, |job| job.metadata.uid.as_deref() == Some(uid), |_| true)
            .await
    }

    async fn find_run_where(
        &self,
        run: u64,
        matches: impl Fn(&TrainingJob) -> bool,
        fresh_enough: impl Fn(&TrainingJob) -> bool,
    ) -> Result<Option<TrainingJob>> {
        let is_it = |job: &TrainingJob| job.run_id() == Some(run) && matches(job);
        let cached = self.caches.training_jobs.state().iter().find_map(|guard| {
            let job = guard.0.as_ref().ok()?;
            is_it(job).then(|| job.clone())
        });
        // The cache may lag a status this process wrote a moment ago.
        let cached = cached.map(|job| self.written_runs.freshest(&job));
        if let Some(job) = cached.filter(|job| fresh_enough(job)) {
            return Ok(Some(job));
        }
        // The label mirrors the id and narrows the list; the status decides.
        let api: Api<TrainingJob> = self.watched();
        let params = ListParams::default().labels(&format!("{RUN_ID_LABEL}={run}"));
        Ok(api.list(&params).await?.items.into_iter().find(|job| is_it(job)))
    }

    /// Publishes an event about `object`; a failure is logged, not returned (an event is never
    /// worth failing a reconcile or a request).
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
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
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            warn!(%error, "publishing an event failed");
        }
    }
}

/// An API over `namespace`, or over every namespace.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}
