//! Dataset controller: ingests each `spec.commits` entry exactly once, in order, and removes a
//! deleted Dataset's objects. Each reconcile runs the stages in order:
//!
//! 1. the dataset id (`Ids::assign`, once in a Dataset's life; no API call once given);
//! 2. [`validate`]: what comes next, from the cached Dataset (pure);
//! 3. [`dereference`]: before an ingestion, the Dataset as the API server has it now, and the
//!    decision taken again on it (the cache may lack the write that recorded the entry);
//! 4. [`apply`]: the ingestion of the next entry — only once the status says it started;
//! 5. [`status`]: one write of what was found ([`status::record`], pure), then its event.
//!
//! An entry takes two reconciles: one writes `Ready=False Ingesting` (the user sees it start),
//! the next ingests it and records the commit (with the next entry's `Ingesting`, so the one
//! after ingests at once) or the rejection. A crash between the objects and the status write
//! re-ingests the entry into the same prefix, so a commit appears exactly once and only
//! complete. Storage that refuses the credentials or is down is retried; data that cannot be used
//! is rejected for good (append a corrected entry).

pub mod apply;
pub mod dereference;
pub mod status;
pub mod validate;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use miniautoml_api::Dataset;

use self::{
    status::{Found, source_text},
    validate::{Step, announced, next_step},
};
use super::reconciled::report_unreadable;
use crate::{
    Error, Result,
    context::Context,
    error::{Stage, at},
    ids::DATASET_ID,
    status::modify_cached_status,
};

/// Finalizer that removes a Dataset's objects before the Dataset goes.
pub const FINALIZER: &str = "miniautoml.io/dataset-storage";

/// Reconciles one Dataset.
#[tracing::instrument(skip_all, fields(dataset = %kube::runtime::reflector::ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<Dataset>>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started("dataset");
    let dataset = match &guard.0 {
        Err(error) => return report_unreadable(&guard, error, &ctx).await,
        Ok(dataset) => Arc::new(dataset.clone()),
    };
    let namespace = dataset.namespace().ok_or_else(|| Error::MissingField {
        kind: "Dataset",
        name: dataset.name_any(),
        field: "metadata.namespace",
    })?;
    let api: Api<Dataset> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, dataset, |event| async {
        match event {
            Finalizer::Apply(dataset) => reconcile_dataset(&api, &dataset, &ctx).await,
            Finalizer::Cleanup(dataset) => apply::cleanup(&dataset, &ctx).await.map_err(at(Stage::Cleanup)),
        }
    })
    .await
    .map_err(Error::from_finalizer)
}

async fn reconcile_dataset(api: &Api<Dataset>, dataset: &Dataset, ctx: &Context) -> Result<Action> {
    let (_, dataset) = ctx
        .ids
        .assign(&ctx.client, &ctx.id_namespace, (api, dataset), &DATASET_ID)
        .await
        .map_err(at(Stage::Id))?;
    let namespace = dataset.namespace().unwrap_or_default();
    let decide = |dataset: &Dataset| next_step(dataset, &namespace, ctx.store.is_some(), &ctx.sources);
    let (base, found) = match decide(&dataset) {
        Step::Next { .. } => {
            let fresh = dereference::fresh(api, &dataset.name_any())
                .await
                .map_err(at(Stage::Dereference))?;
            let found = match (decide(&fresh), &ctx.store) {
                (Step::Next { entry, id }, Some(store)) if announced(&fresh, entry, id) => {
                    apply::ingest(store, &ctx.sources, &fresh, entry, id).await
                }
                (Step::Next { entry, id }, _) => Found::Ingesting { entry, id },
                (settled, _) => found(settled),
            };
            (fresh, found)
        }
        settled => (dataset, found(settled)),
    };
    let now = Time(Timestamp::now());
    let written = modify_cached_status(api, &base, |current: &mut Dataset| {
        status::record(current, &found, &now)
    })
    .await
    .map_err(at(Stage::Status))?;
    if written.status != base.status {
        announce(ctx, &base, &found).await;
    }
    Ok(match found {
        Found::Done => Action::await_change(),
        Found::NotConfigured => Action::requeue(Duration::from_secs(300)),
        Found::Waiting { .. } => Action::requeue(Duration::from_secs(10)),
        Found::Ingesting { .. } | Found::Committed { .. } | Found::Rejected { .. } => {
            Action::requeue(Duration::ZERO)
        }
    })
}

/// What a step that ingests nothing finds.
fn found(step: Step) -> Found {
    match step {
        Step::Done => Found::Done,
        Step::NotConfigured => Found::NotConfigured,
        Step::Refused { entry, message } => Found::Rejected { entry, message },
        Step::Next { entry, id } => Found::Ingesting { entry, id },
    }
}

/// The event a user wants for what changed: a commit, a rejection, storage that blocks.
async fn announce(ctx: &Context, dataset: &Dataset, found: &Found) {
    let (type_, reason, note) = match found {
        Found::Committed { entry, commit } => (
            EventType::Normal,
            "Ingested",
            format!(
                "Commit {} from {}: {} examples, {} labels",
                commit.id,
                source_text(dataset, *entry),
                commit.statistics.num_examples,
                commit.statistics.num_labels
            ),
        ),
        Found::Rejected { entry, message } => (
            EventType::Warning,
            "Rejected",
            format!("spec.commits[{entry}] rejected: {message}"),
        ),
        Found::Waiting {
            entry,
            reason,
            message,
        } => (
            EventType::Warning,
            *reason,
            format!("spec.commits[{entry}] waits: {message}"),
        ),
        Found::Done | Found::NotConfigured | Found::Ingesting { .. } => return,
    };
    ctx.publish(dataset, type_, reason, note).await;
}
