//! ModelDeployment controller. Each reconcile runs the stages in order:
//!
//! 1. [`dereference`]: the referenced TrainingJob (by name or run id), the predictors'
//!    Deployment and pods (reads only);
//! 2. [`validate`]: whether that run can be served, and whether anything can be deployed;
//! 3. [`build`]: the predictors' Secret, Deployment, Service and NetworkPolicy (pure);
//! 4. [`apply`]: server-side apply, skipped when nothing changed;
//! 5. [`status`]: the status, computed once from what the stages found (pure), then the events a
//!    user wants (a new model served, a model that cannot be).
//!
//! Nothing is deployed until the referenced TrainingJob has Succeeded with an artifact; the
//! `ModelReady` condition says what it waits for. Switching to another model changes only the
//! Deployment's pod template, so it rolls out one surge pod at a time with `maxUnavailable: 0`,
//! gated on the predictors' readiness (the model loaded and verified): the previous model keeps
//! serving until its replacement is ready, and `status.servedRun` changes only once every
//! replica serves the new run. A reference to a model that is not (yet) servable leaves the
//! current predictors running.

pub mod apply;
pub mod build;
pub mod dereference;
pub mod status;
pub mod validate;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::PartialObjectMeta,
    core::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{self, ObjectRef},
    },
};
use miniautoml_api::{
    ModelDeployment, ModelDeploymentStatus, TrainingJob,
    labels::{MODEL_DEPLOYMENT_LABEL, RUN_ID_LABEL},
    model_deployment::{MODEL_READY, READY},
};
use miniautoml_data::KeyError;

use self::status::{Observed, pod_problem};
use super::{reconciled::report_unreadable, watches::Events};
use crate::{
    Error, Result, conditions,
    context::Context,
    error::{Stage, at},
    status::modify_cached_status,
};

/// Reconciles one ModelDeployment.
#[tracing::instrument(skip_all, fields(modeldeployment = %ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<ModelDeployment>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("modeldeployment");
    let md = match &guard.0 {
        Err(error) => return report_unreadable(&guard, error, &ctx).await,
        Ok(md) => md,
    };
    // Owner references let the garbage collector remove the predictors; their own storage key
    // is revoked under the finalizer.
    let own_keys = ctx.serving.as_ref().is_some_and(|s| s.pods.keys.scoped());
    if !own_keys {
        if md.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        return reconcile_deployment(md, &ctx).await;
    }
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, Arc::new(md.clone()), |event| async {
        match event {
            Finalizer::Apply(md) => reconcile_deployment(&md, &ctx).await,
            Finalizer::Cleanup(md) => {
                apply::revoke_key(&md, &ctx).await.map_err(at(Stage::Cleanup))?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(Error::from_finalizer)
}

/// Finalizer of ModelDeployments whose predictors hold a storage key of their own.
pub const FINALIZER: &str = "miniautoml.io/predictor-storage-key";

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
            // Only a trigger (the watch carries metadata): a wrong label wakes a ModelDeployment,
            // whose reconcile finds the run by its status.
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

async fn reconcile_deployment(md: &ModelDeployment, ctx: &Context) -> Result<Action> {
    let job = dereference::training_job(md, ctx)
        .await
        .map_err(at(Stage::Dereference))?;
    let (cached, taken) = match dereference::deployment(md, ctx)
        .await
        .map_err(at(Stage::Dereference))?
    {
        Ok(cached) => (cached, None),
        Err(taken) => (None, Some(taken)),
    };
    let model = validate::model(&job);
    let blocked = taken.or_else(|| validate::blocked(ctx.serving.as_ref()));
    let (deployment, key_problem) = match (&model, &ctx.serving) {
        // Nothing is applied under a name another object holds.
        (Ok(_), Some(_)) if blocked.is_some() => (None, None),
        (Ok(model), Some(settings)) => {
            let desired = build::desired(md, model, settings);
            match apply::apply(md, model, &desired, cached.as_ref(), ctx).await {
                Ok(deployment) => (Some(deployment), None),
                // Nothing new is applied without a key that works: said in the status.
                Err(Error::StorageKey(error)) => (cached, Some(error)),
                Err(error) => return Err(at(Stage::Apply)(error)),
            }
        }
        _ => (cached, None),
    };
    let key_blocked = key_problem.as_ref().map(|error| {
        let reason = match error {
            KeyError::Refused { .. } => "StorageKeyRefused",
            KeyError::Unavailable { .. } => "StorageKeyUnavailable",
        };
        (
            reason,
            format!("the predictors' own storage key cannot be issued: {error}"),
        )
    });
    let observed = Observed {
        model: &model,
        deployment: deployment.as_ref(),
        pod_problem: pod_problem(&dereference::predictor_pods(md, ctx)),
        blocked: blocked.or(key_blocked).filter(|_| model.is_ok()),
    };
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
    let now = Time(Timestamp::now());
    let written = modify_cached_status(&api, md, |current: &mut ModelDeployment| {
        let mut status = current.status.clone().unwrap_or_default();
        let changed = status::record(current, &mut status, &observed, &now);
        current.status = Some(status);
        changed
    })
    .await
    .map_err(at(Stage::Status))?;
    let before = md.status.clone().unwrap_or_default();
    let after = written.status.unwrap_or_default();
    announce(ctx, md, &before, &after).await;
    let ready = conditions::find(&after.conditions, READY).is_some_and(|c| c.status == "True");
    if let Some(error) = &key_problem {
        ctx.publish(md, EventType::Warning, "StorageKey", error.to_string())
            .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let renewal = ctx.serving.as_ref().and_then(|s| s.pods.keys.session_duration());
    Ok(if let (Some(lifetime), Ok(_)) = (renewal, &model) {
        // A temporary storage key is issued again before half its lifetime is gone.
        Action::requeue((lifetime / 4).min(Duration::from_secs(30 * 60)))
    } else if ready || model.is_err() {
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
