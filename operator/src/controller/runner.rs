//! Runs the three controllers on every replica: each keeps its caches current, but only the
//! leader reconciles; a replica that becomes the leader reconciles every object.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, future};
use kube::{
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{dataset, model_deployment, reconciled::Reconciled, training_job, watches::Triggers};
use crate::{Error, Result, context::Context, readiness::Readiness, status::is_conflict};

/// Runs the three controllers on `triggers` until `shutdown` fires.
pub async fn run(ctx: Arc<Context>, triggers: Triggers, readiness: Readiness, shutdown: CancellationToken) {
    let datasets = Controller::for_stream(triggers.datasets, ctx.caches.datasets.clone());
    let training_jobs = training_job::controller(
        triggers.training_jobs,
        ctx.caches.training_jobs.clone(),
        triggers.run_jobs,
        triggers.run_pods,
        triggers
            .workloads
            .map(|events| (events, ctx.caches.run_jobs.clone())),
    );
    let model_deployments = model_deployment::controller(
        triggers.model_deployments,
        ctx.caches.model_deployments.clone(),
        triggers.predictor_deployments,
        triggers.predictor_pods,
        triggers.training_job_changes,
    );
    tokio::join!(
        run_controller(
            ctx.clone(),
            datasets,
            dataset::reconcile,
            readiness.clone(),
            shutdown.clone()
        ),
        run_controller(
            ctx.clone(),
            training_jobs,
            training_job::reconcile,
            readiness.clone(),
            shutdown.clone()
        ),
        run_controller(
            ctx,
            model_deployments,
            model_deployment::reconcile,
            readiness,
            shutdown
        ),
    );
}

/// How long to wait before retrying a reconcile that failed.
fn backoff<K: Reconciled>(object: Arc<DeserializeGuard<K>>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(controller = K::CONTROLLER, object = %ObjectRef::from_obj(object.as_ref()), %error, "reconcile failed");
    let stage = error.stage().map_or("other", |stage| stage.label());
    ctx.metrics
        .reconcile_failed(K::CONTROLLER, stage, error.metric_label());
    match error.root() {
        // A write against a version another writer replaced: try again from the new one soon.
        Error::Kube(error) if is_conflict(error) => Action::requeue(Duration::from_secs(1)),
        _ => Action::requeue(Duration::from_secs(15)),
    }
}

/// Runs one controller until `shutdown` fires, marking `readiness` once its cache is synced.
async fn run_controller<K, F, Fut>(
    ctx: Arc<Context>,
    controller: Controller<DeserializeGuard<K>>,
    reconcile: F,
    readiness: Readiness,
    shutdown: CancellationToken,
) where
    K: Reconciled,
    F: FnMut(Arc<DeserializeGuard<K>>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
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
