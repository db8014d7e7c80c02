//! The watches every replica runs: each fills a cache the context shares (for the gRPC API as
//! much as for the controllers) and triggers the controller that owns or reads its objects.

use std::fmt::Debug;

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::PartialObjectMeta,
    core::DeserializeGuard,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use miniautoml_api::{
    Dataset, ModelDeployment, TrainingJob,
    labels::{MODEL_DEPLOYMENT_LABEL, TRAINING_JOB_LABEL},
};
use serde::de::DeserializeOwned;

use crate::{
    context::{Caches, scoped},
    kueue::Workload,
};

/// A watch's changed objects.
pub type Events<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The watch streams that trigger the controllers (each fills one of the [`Caches`] as it is
/// polled, so the controller consuming it keeps that cache current).
pub struct Triggers {
    /// Datasets (their controller's own objects).
    pub datasets: Events<DeserializeGuard<Dataset>>,
    /// TrainingJobs (their controller's own objects).
    pub training_jobs: Events<DeserializeGuard<TrainingJob>>,
    /// The runs' Jobs.
    pub run_jobs: Events<Job>,
    /// The runs' pods.
    pub run_pods: Events<Pod>,
    /// ModelDeployments (their controller's own objects).
    pub model_deployments: Events<DeserializeGuard<ModelDeployment>>,
    /// The predictors' Deployments.
    pub predictor_deployments: Events<Deployment>,
    /// The predictors' pods.
    pub predictor_pods: Events<Pod>,
    /// TrainingJobs' metadata, for the ModelDeployments that reference them.
    pub training_job_changes: Events<PartialObjectMeta<TrainingJob>>,
    /// Kueue's Workloads, where the cluster serves them.
    pub workloads: Option<Events<Workload>>,
}

/// Starts nothing yet: builds the caches of `namespace` (every namespace when `None`) and the
/// streams that fill them once the controllers run; Kueue's Workloads too when `kueue` (the
/// cluster serves them).
pub fn watch(client: &Client, namespace: Option<&str>, kueue: bool) -> (Caches, Triggers) {
    let (datasets, dataset_events) = resource_cache(scoped(client, namespace));
    let (training_jobs, training_job_events) = resource_cache(scoped(client, namespace));
    let (model_deployments, model_deployment_events) = resource_cache(scoped(client, namespace));
    let (run_jobs, run_job_events) = labelled_cache(scoped(client, namespace), TRAINING_JOB_LABEL, |_| {});
    let (run_pods, run_pod_events) = labelled_cache(scoped(client, namespace), TRAINING_JOB_LABEL, trim_pod);
    let (predictor_deployments, predictor_deployment_events) =
        labelled_cache(scoped(client, namespace), MODEL_DEPLOYMENT_LABEL, |_| {});
    // Routing needs the labels, IP and readiness.
    let (predictor_pods, predictor_pod_events) =
        labelled_cache(scoped(client, namespace), MODEL_DEPLOYMENT_LABEL, trim_pod);
    let jobs: Api<PartialObjectMeta<TrainingJob>> = scoped(client, namespace);
    let training_job_changes = watcher(jobs, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects()
        .boxed();
    // Every Workload of the watched namespaces (Kueue labels them with their Job's uid only).
    let (workloads, workload_events) = if kueue {
        let (cache, events) = trimmed_cache(scoped(client, namespace), watcher::Config::default(), |_| {});
        (Some(cache), Some(events))
    } else {
        (None, None)
    };
    let caches = Caches {
        datasets,
        training_jobs,
        run_jobs,
        run_pods,
        model_deployments,
        predictor_deployments,
        predictor_pods,
        workloads,
    };
    let triggers = Triggers {
        datasets: dataset_events,
        training_jobs: training_job_events,
        run_jobs: run_job_events,
        run_pods: run_pod_events,
        model_deployments: model_deployment_events,
        predictor_deployments: predictor_deployment_events,
        predictor_pods: predictor_pod_events,
        training_job_changes,
        workloads: workload_events,
    };
    (caches, triggers)
}

/// A controller's own resource, cached as the API server stores it but for its managed fields
/// (an object the types cannot read is kept as such and reported, not dropped). A status
/// written from a cached object without them keeps the server's: the API server takes the
/// stored object's managed fields for an update that sends none.
fn resource_cache<K>(
    api: Api<DeserializeGuard<K>>,
) -> (Store<DeserializeGuard<K>>, Events<DeserializeGuard<K>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (cache, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|guard| {
            if let Ok(object) = &mut guard.0 {
                object.meta_mut().managed_fields = None;
            }
        })
        .reflect(writer)
        .applied_objects()
        .boxed();
    (cache, events)
}

/// Watches the objects of `api` labelled `label` into a cache, trimmed by `trim` (managed fields
/// are always dropped) so the cache holds only what readers use. Returns the cache and the stream
/// of changed objects.
pub fn labelled_cache<K>(
    api: Api<K>,
    label: &str,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, Events<K>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    trimmed_cache(api, watcher::Config::default().labels(label), trim)
}

/// Watches the objects of `api` that `config` selects into a cache, trimmed by `trim` (managed
/// fields are always dropped). Returns the cache and the stream of changed objects.
fn trimmed_cache<K>(
    api: Api<K>,
    config: watcher::Config,
    mut trim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, Events<K>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (cache, writer) = reflector::store();
    let events = watcher(api, config.any_semantic())
        .default_backoff()
        .modify(move |object| {
            object.managed_fields_mut().clear();
            trim(object);
        })
        .reflect(writer)
        .touched_objects()
        .boxed();
    (cache, events)
}

/// What a pod cache keeps: labels, node and status (no annotations, volumes, tolerations or
/// container environment).
pub fn trim_pod(pod: &mut Pod) {
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
