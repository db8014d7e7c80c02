//! ModelDeployment controller: dereference (the TrainingJob, by name or run id) → build the
//! predictors' Secret, Deployment and Service → apply → status from the Deployment.
//!
//! Nothing is deployed until the referenced TrainingJob has Succeeded with an artifact; the
//! `ModelReady` condition says what it waits for. Switching to another model changes only the
//! Deployment's pod template, so it rolls out one surge pod at a time with `maxUnavailable: 0`,
//! gated on the predictors' readiness (the model loaded and verified): the previous model keeps
//! serving until its replacement is ready, and `status.servedRun` changes only once every
//! replica serves the new run. A reference to a model that is not (yet) servable leaves the
//! current predictors running.

pub mod build;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Pod, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        reflector::{self, ObjectRef},
    },
};
use miniautoml_api::{
    ModelDeployment, ModelDeploymentStatus, TrainingJob,
    labels::{MODEL_DEPLOYMENT_LABEL, RUN_ID_LABEL},
    model_deployment::{AVAILABLE, MODEL_READY, NotServable, READY, ServedModel},
};
use sha2::{Digest, Sha256};

use self::build::{
    build_deployment, build_secret, build_service, deployment_name, endpoint, rollout, template_run,
};
use super::{reconciled::report_unreadable, watches::Events};
use crate::{
    Result,
    conditions::{self, ACCEPTED},
    context::{Context, MANAGER, PredictorSettings},
    status::modify_cached_status,
};

/// Annotation on the Deployment: digest of what the operator last applied, so an unchanged
/// spec is not applied again.
pub const APPLIED_ANNOTATION: &str = "miniautoml.io/applied-digest";

/// Reconciles one ModelDeployment.
#[tracing::instrument(skip_all, fields(modeldeployment = %ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<ModelDeployment>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("modeldeployment");
    match &guard.0 {
        Err(error) => report_unreadable(&guard, error, &ctx).await,
        // Owner references let the garbage collector remove the predictors.
        Ok(md) if md.metadata.deletion_timestamp.is_some() => Ok(Action::await_change()),
        Ok(md) => reconcile_deployment(md, &ctx).await,
    }
}

/// The ModelDeployment controller on the watches of ModelDeployments, of the predictors'
/// Deployments and pods (which wake their ModelDeployment when they change) and of
/// TrainingJobs (a change wakes the ModelDeployments that reference it).
pub fn controller(
    model_deployments: Events<DeserializeGuard<ModelDeployment>>,
    cache: reflector::Store<DeserializeGuard<ModelDeployment>>,
    predictor_deployments: Events<Deployment>,
    predictor_pods: Events<Pod>,
    training_jobs: Events<PartialObjectMeta<TrainingJob>>,
) -> Controller<DeserializeGuard<ModelDeployment>> {
    let referencing = cache.clone();
    Controller::for_stream(model_deployments, cache)
        .owns_stream(predictor_deployments)
        .watches_stream(predictor_pods, |pod| {
            let name = pod.labels().get(MODEL_DEPLOYMENT_LABEL)?;
            Some(ObjectRef::new(name).within(&pod.namespace()?))
        })
        .watches_stream(training_jobs, move |job| {
            // Every ModelDeployment referencing this TrainingJob, by name or run id.
            let namespace = job.namespace().unwrap_or_default();
            let name = job.name_any();
            let run = job.labels().get(RUN_ID_LABEL).cloned();
            referencing
                .state()
                .into_iter()
                .filter_map(|guard| guard.0.as_ref().ok().cloned())
                .filter(|md| md.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|md| {
                    md.spec.model.training_job.as_deref() == Some(name.as_str())
                        || (run.is_some() && md.spec.model.run_id == run)
                })
                .map(|md| ObjectRef::new(&md.name_any()).within(&namespace))
                .collect::<Vec<_>>()
        })
}

/// Finds the TrainingJob a ModelDeployment references.
async fn resolve(md: &ModelDeployment, ctx: &Context) -> Result<Result<TrainingJob, NotServable>> {
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
    let found = ctx
        .find_run(&run, |job| job.served_model().is_ok())
        .await?
        .filter(|job| job.namespace().as_deref() == Some(namespace.as_str()));
    Ok(found.ok_or_else(|| {
        (
            "RunNotFound",
            format!("no TrainingJob in namespace {namespace} has run id {run}"),
        )
    }))
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// What the controller found, for [`record`].
pub struct Observed<'a> {
    /// The referenced model, or why it cannot be served.
    pub model: &'a Result<ServedModel, NotServable>,
    /// The predictors' Deployment, if any.
    pub deployment: Option<&'a Deployment>,
    /// Why predictor pods are failing, if they are.
    pub pod_problem: Option<String>,
    /// Why nothing can be deployed regardless of the model (e.g. storage not configured).
    pub blocked: Option<NotServable>,
}

/// Records what was observed in `md`'s status; returns whether anything changed.
pub fn record(md: &ModelDeployment, status: &mut ModelDeploymentStatus, observed: &Observed) -> bool {
    let before = status.clone();
    let generation = md.metadata.generation;
    status.observed_generation = generation;
    let mut set = |type_: &str, ok: bool, reason: &str, message: &str| {
        conditions::upsert(
            &mut status.conditions,
            conditions::condition(type_, ok, reason, message, generation, now()),
        );
    };
    set(ACCEPTED, true, "Valid", "The spec is valid");
    match observed.model {
        Ok(model) => set(
            MODEL_READY,
            true,
            "Succeeded",
            &format!(
                "run {} of TrainingJob {} ({})",
                model.run_id, model.training_job, model.uri
            ),
        ),
        Err((reason, message)) => set(MODEL_READY, false, reason, message),
    }
    let desired = md.spec.replicas;
    let Some(deployment) = observed.deployment else {
        let (reason, message) = observed
            .blocked
            .clone()
            .or_else(|| observed.model.as_ref().err().cloned())
            .unwrap_or(("Deploying", "creating the predictors".into()));
        set(READY, false, reason, &format!("nothing is deployed: {message}"));
        set(AVAILABLE, false, "NotDeployed", "no predictor exists");
        status.replicas = 0;
        status.ready_replicas = 0;
        status.served_run = None;
        status.model_version = None;
        status.endpoint = None;
        return *status != before;
    };
    let state = rollout(deployment, desired);
    status.replicas = state.replicas;
    status.ready_replicas = state.ready;
    status.endpoint = Some(endpoint(md));
    let deployed = template_run(deployment).map(str::to_string);
    let target = observed.model.as_ref().ok().map(|m| m.run_id.clone());
    let rolled_out = state.complete && (target.is_none() || deployed == target);
    if rolled_out {
        if desired == 0 {
            status.served_run = None;
            status.model_version = None;
        } else {
            status.served_run = deployed.clone();
            status.model_version = deployment
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.env.as_ref())
                .and_then(|env| env.iter().find(|e| e.name == "MODEL_VERSION"))
                .and_then(|e| e.value.clone());
        }
    }
    let run = deployed.as_deref().unwrap_or("-");
    match (&observed.model, rolled_out) {
        (Err((reason, message)), _) => set(
            READY,
            false,
            reason,
            &format!("still serving run {run}: {message}"),
        ),
        (Ok(_), true) if desired == 0 => set(READY, true, "ScaledToZero", "replicas is 0"),
        (Ok(_), true) => set(
            READY,
            true,
            "RolledOut",
            &format!("{desired} of {desired} replicas serve run {run}"),
        ),
        (Ok(model), false) => {
            let problem = observed
                .pod_problem
                .as_ref()
                .map(|p| format!("; {p}"))
                .unwrap_or_default();
            set(
                READY,
                false,
                "RollingOut",
                &format!(
                    "rolling out run {}: {} of {desired} replicas updated, {} ready{problem}",
                    model.run_id, state.updated, state.ready
                ),
            );
        }
    }
    if state.ready > 0 {
        set(
            AVAILABLE,
            true,
            "ReplicasReady",
            &format!("{} of {} replicas ready", state.ready, state.replicas),
        );
    } else {
        set(AVAILABLE, false, "NoReadyReplicas", "no predictor is ready");
    }
    *status != before
}

/// Why a predictor pod is failing, if one is: a crash loop, an exit, a pull error.
pub fn pod_problem(pods: &[Arc<Pod>]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref();
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let waiting_reason = waiting.and_then(|w| w.reason.clone());
            match (waiting_reason, last) {
                (Some(reason), Some(last)) if c.restart_count > 0 => Some(format!(
                    "pod {} is {reason}: the predictor exited {} after {} restarts{}",
                    pod.name_any(),
                    last.exit_code,
                    c.restart_count,
                    last.message
                        .as_deref()
                        .map(|m| format!(" ({})", m.trim()))
                        .unwrap_or_default()
                )),
                (Some(reason), _) if reason != "ContainerCreating" => Some(format!(
                    "pod {} is {reason}{}",
                    pod.name_any(),
                    waiting
                        .and_then(|w| w.message.as_deref())
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )),
                _ => None,
            }
        })
    })
}

/// A digest of the objects to apply, to skip applying what is already there.
fn digest(objects: &[serde_json::Value]) -> String {
    let mut hasher = Sha256::new();
    for object in objects {
        hasher.update(object.to_string().as_bytes());
    }
    hasher.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn reconcile_deployment(md: &ModelDeployment, ctx: &Arc<Context>) -> Result<Action> {
    let namespace = md.namespace().unwrap_or_default();
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let job = resolve(md, ctx).await?;
    let model = job
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|job| job.served_model());
    let name = deployment_name(md);
    let cached = ctx
        .caches
        .predictor_deployments
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|d| (*d).clone());
    let mut deployment = cached.clone();
    let mut blocked = None;
    match (&model, &ctx.serving) {
        (Ok(model), Some(settings)) => {
            deployment = Some(apply(md, model, settings, cached.as_ref(), ctx).await?);
        }
        (Ok(_), None) => {
            blocked = Some((
                "StorageNotConfigured",
                "the operator has no storage credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), \
                 so predictors could not load models"
                    .to_string(),
            ));
        }
        (Err(_), _) => {}
    }
    let pods: Vec<Arc<Pod>> = ctx
        .caches
        .predictor_pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace.as_str())
                && p.labels().get(MODEL_DEPLOYMENT_LABEL) == Some(&md.name_any())
        })
        .collect();
    let observed = Observed {
        model: &model,
        deployment: deployment.as_ref(),
        pod_problem: pod_problem(&pods),
        blocked,
    };
    let before = md.status.clone().unwrap_or_default();
    let written = modify_cached_status(&api, md, |current: &mut ModelDeployment| {
        let mut status = current.status.clone().unwrap_or_default();
        let changed = record(current, &mut status, &observed);
        current.status = Some(status);
        changed
    })
    .await?;
    let after = written.status.unwrap_or_default();
    announce(ctx, md, &before, &after).await;
    let ready = conditions::find(&after.conditions, READY).is_some_and(|c| c.status == "True");
    Ok(if ready || model.is_err() {
        // Watches of the TrainingJob, Deployment and pods bring every change.
        Action::await_change()
    } else {
        // A rollout in progress: a safety net besides the watches.
        Action::requeue(Duration::from_secs(30))
    })
}

/// Events for what a user wants to hear about: a new model served, a model that cannot be.
async fn announce(
    ctx: &Context,
    md: &ModelDeployment,
    before: &ModelDeploymentStatus,
    after: &ModelDeploymentStatus,
) {
    if after.served_run != before.served_run
        && let Some(run) = &after.served_run
    {
        ctx.publish(
            md,
            EventType::Normal,
            "RolledOut",
            format!("every replica serves run {run}"),
        )
        .await;
    }
    let model = |s: &ModelDeploymentStatus| conditions::find(&s.conditions, MODEL_READY).cloned();
    if let Some(condition) = model(after)
        && condition.status == "False"
        && model(before).map(|c| c.reason) != Some(condition.reason.clone())
    {
        ctx.publish(md, EventType::Warning, &condition.reason, condition.message)
            .await;
    }
}

/// Applies the Secret, Service and Deployment unless the cached Deployment shows they are
/// already as desired; returns the Deployment.
async fn apply(
    md: &ModelDeployment,
    model: &ServedModel,
    settings: &PredictorSettings,
    cached: Option<&Deployment>,
    ctx: &Context,
) -> Result<Deployment> {
    let namespace = md.namespace().unwrap_or_default();
    let secret = build_secret(md, &settings.credentials);
    let service = build_service(md);
    let mut deployment = build_deployment(md, model, settings);
    let applied = digest(&[
        serde_json::to_value(&secret).expect("a Secret serialises"),
        serde_json::to_value(&service).expect("a Service serialises"),
        serde_json::to_value(&deployment).expect("a Deployment serialises"),
    ]);
    if let Some(cached) = cached
        && cached.annotations().get(APPLIED_ANNOTATION) == Some(&applied)
    {
        return Ok(cached.clone());
    }
    deployment
        .annotations_mut()
        .insert(APPLIED_ANNOTATION.into(), applied);
    let params = PatchParams::apply(MANAGER).force();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    secrets
        .patch(&build::secret_name(md), &params, &Patch::Apply(&secret))
        .await?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    services
        .patch(&deployment_name(md), &params, &Patch::Apply(&service))
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = cached.and_then(template_run).map(str::to_string);
    let written = deployments
        .patch(&deployment_name(md), &params, &Patch::Apply(&deployment))
        .await?;
    if previous.as_deref() != Some(model.run_id.as_str()) {
        let note = match previous {
            Some(previous) => format!("rolling out run {} (replacing run {previous})", model.run_id),
            None => format!("deploying run {} ({})", model.run_id, model.uri),
        };
        ctx.publish(md, EventType::Normal, "Deploying", note).await;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use miniautoml_api::{
        TrainingJobStatus,
        training_job::{ArtifactStatus, TrainingPhase},
    };

    use super::*;

    fn md() -> ModelDeployment {
        let mut md = build::tests::fixture();
        md.metadata.generation = Some(1);
        md
    }

    fn job(phase: TrainingPhase, run: &str) -> TrainingJob {
        let mut job: TrainingJob =
            serde_yaml::from_str(include_str!("../../../../examples/trainingjob.yaml")).unwrap();
        job.metadata.namespace = Some("team-a".into());
        job.labels_mut().insert(RUN_ID_LABEL.into(), run.into());
        job.status = Some(TrainingJobStatus {
            phase: Some(phase),
            artifact: (phase == TrainingPhase::Succeeded).then(|| ArtifactStatus {
                uri: format!("s3://b/models/team-a/twitter-model/{run}/"),
                version: run.into(),
                ..Default::default()
            }),
            message: Some("test accuracy 0.8".into()),
            ..Default::default()
        });
        job
    }

    fn settings() -> PredictorSettings {
        PredictorSettings {
            image: "miniautoml/predictor:0.1.0".into(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            credentials: ("k".into(), "s".into()),
            image_pull_secrets: Vec::new(),
            image_pull_policy: None,
        }
    }

    fn deployed(run: &str, replicas: i32, updated: i32, available: i32) -> Deployment {
        let model = job(TrainingPhase::Succeeded, run).served_model().unwrap();
        let mut deployment = build_deployment(&md(), &model, &settings());
        deployment.metadata.generation = Some(1);
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..Default::default()
        });
        deployment
    }

    fn condition(status: &ModelDeploymentStatus, type_: &str) -> (String, String) {
        let c = conditions::find(&status.conditions, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn only_a_succeeded_run_with_an_artifact_is_servable() {
        let model = job(TrainingPhase::Succeeded, "3").served_model().unwrap();
        assert_eq!(model.run_id, "3");
        assert_eq!(model.uri, "s3://b/models/team-a/twitter-model/3/");
        assert_eq!(
            job(TrainingPhase::Running, "3").served_model().unwrap_err().0,
            "TrainingNotSucceeded"
        );
        assert_eq!(
            job(TrainingPhase::Failed, "3").served_model().unwrap_err().0,
            "TrainingFailed"
        );
        let mut no_artifact = job(TrainingPhase::Succeeded, "3");
        no_artifact.status.as_mut().unwrap().artifact = None;
        assert_eq!(no_artifact.served_model().unwrap_err().0, "NoArtifact");
    }

    #[test]
    fn nothing_is_deployed_while_training_runs() {
        let model = job(TrainingPhase::Running, "3").served_model();
        let mut status = ModelDeploymentStatus::default();
        let observed = Observed {
            model: &model,
            deployment: None,
            pod_problem: None,
            blocked: None,
        };
        assert!(record(&md(), &mut status, &observed));
        assert_eq!(
            condition(&status, MODEL_READY),
            ("False".into(), "TrainingNotSucceeded".into())
        );
        assert_eq!(
            condition(&status, READY),
            ("False".into(), "TrainingNotSucceeded".into())
        );
        assert_eq!((status.served_run, status.endpoint), (None, None));
        let mut again = ModelDeploymentStatus::default();
        record(&md(), &mut again, &observed);
        assert!(
            !record(&md(), &mut again, &observed),
            "an unchanged status is not written"
        );
    }

    #[test]
    fn served_run_changes_only_when_the_rollout_completes() {
        let md = md();
        let run3 = job(TrainingPhase::Succeeded, "3").served_model();
        let mut status = ModelDeploymentStatus::default();
        fn observe<'a>(
            model: &'a Result<ServedModel, NotServable>,
            deployment: Option<&'a Deployment>,
        ) -> Observed<'a> {
            Observed {
                model,
                deployment,
                pod_problem: None,
                blocked: None,
            }
        }
        record(&md, &mut status, &observe(&run3, Some(&deployed("3", 1, 1, 1))));
        assert_eq!(status.served_run.as_deref(), Some("3"));
        assert_eq!(status.model_version.as_deref(), Some("3"));
        assert_eq!(condition(&status, READY), ("True".into(), "RolledOut".into()));
        assert_eq!(status.ready_replicas, 1);
        assert_eq!(
            status.endpoint.as_ref().unwrap().grpc,
            "twitter-model-predictor.team-a.svc:8081"
        );

        // Switched to run 4: a surge pod starts next to the old one.
        let run4 = job(TrainingPhase::Succeeded, "4").served_model();
        record(&md, &mut status, &observe(&run4, Some(&deployed("4", 2, 1, 1))));
        assert_eq!(status.served_run.as_deref(), Some("3"));
        assert_eq!(condition(&status, READY), ("False".into(), "RollingOut".into()));
        assert_eq!(
            condition(&status, AVAILABLE),
            ("True".into(), "ReplicasReady".into())
        );
        record(&md, &mut status, &observe(&run4, Some(&deployed("4", 1, 1, 1))));
        assert_eq!(status.served_run.as_deref(), Some("4"));
        assert_eq!(condition(&status, READY), ("True".into(), "RolledOut".into()));
    }

    #[test]
    fn a_reference_to_an_unfinished_run_keeps_the_current_model() {
        let running = job(TrainingPhase::Running, "5").served_model();
        let mut status = ModelDeploymentStatus {
            served_run: Some("3".into()),
            ..Default::default()
        };
        let observed = Observed {
            model: &running,
            deployment: Some(&deployed("3", 1, 1, 1)),
            pod_problem: None,
            blocked: None,
        };
        record(&md(), &mut status, &observed);
        assert_eq!(status.served_run.as_deref(), Some("3"));
        assert_eq!(
            condition(&status, READY),
            ("False".into(), "TrainingNotSucceeded".into())
        );
        assert_eq!(condition(&status, AVAILABLE).0, "True");
    }

    #[test]
    fn crash_looping_predictors_are_explained() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p-1"},
            "status": {"containerStatuses": [{
                "name": "predictor", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "model: artifact model.safetensors is corrupt"}}
            }]}
        }))
        .unwrap();
        let problem = pod_problem(&[Arc::new(pod)]).unwrap();
        assert_eq!(
            problem,
            "pod p-1 is CrashLoopBackOff: the predictor exited 1 after 2 restarts (model: artifact model.safetensors is corrupt)"
        );
    }
}
