//! The pages' data, from the resources as the caches hold them: pure functions, tested without a
//! browser, a cluster or a store.

use std::{cmp::Ordering, collections::BTreeSet, sync::Arc};

use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};
use kube::ResourceExt;
use miniautoml_api::{
    Dataset, ModelDeployment, TrainingJob,
    training_job::{EpochStatus, TrainingPhase},
};
use serde::{Deserialize, Serialize};

/// `namespace/name`, how URLs and selections name a resource.
pub fn key<R: ResourceExt>(resource: &R) -> String {
    format!(
        "{}/{}",
        resource.namespace().unwrap_or_default(),
        resource.name_any()
    )
}

/// One row of the runs table.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    /// Epochs done by rank 0.
    pub epoch: Option<u64>,
    /// Epochs asked for (`EPOCHS`).
    pub epochs: Option<u32>,
    pub queue_position: Option<u32>,
    pub dataset: String,
    pub version_hash: Option<String>,
    /// `NAME=VALUE`, sorted by name.
    pub parameters: Vec<String>,
    pub accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    /// Seconds from start to completion (or to now, while it runs).
    pub duration: Option<i64>,
    pub code_version: Option<String>,
    /// When it was created (RFC 3339), the default order.
    pub created: Option<String>,
}

/// What the runs table shows, from its URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct RunQuery {
    /// Text every shown run's namespace, name, dataset or parameters contain.
    pub q: String,
    /// Only runs in this phase.
    pub phase: String,
    /// The column sorted on.
    pub sort: String,
    /// `asc` or `desc` (the default: newest, best, longest first).
    pub dir: String,
    /// Selected runs (`NS/NAME,…`), for compare.
    pub select: String,
    /// `rows`: only the table's body (the page's refresh).
    pub fragment: String,
}

/// The sortable columns, as `sort=` names them.
pub const SORT_COLUMNS: [&str; 8] = [
    "name", "phase", "epoch", "dataset", "accuracy", "macroF1", "duration", "created",
];

/// The phase as the status says it, or `Pending` before the first status.
pub fn phase(run: &TrainingJob) -> String {
    match run.status.as_ref().and_then(|s| s.phase) {
        Some(phase) => format!("{phase:?}"),
        None => "Pending".to_string(),
    }
}

/// Rank 0's epochs done: `progress` (`3/15`), else the history's highest rank-0 epoch.
pub fn epochs_done(run: &TrainingJob) -> Option<u64> {
    let status = run.status.as_ref()?;
    if let Some(progress) = &status.progress {
        return progress.split('/').next()?.parse().ok();
    }
    status
        .epochs
        .iter()
        .filter_map(point)
        .filter(|p| p.rank == 0)
        .map(|p| p.epoch)
        .max()
}

/// A final metric of the run: the test metric (`testNAME`), else `NAME` in the final metrics,
/// else rank 0's last epoch's.
pub fn final_metric(run: &TrainingJob, name: &str) -> Option<f64> {
    let status = run.status.as_ref()?;
    let test = format!("test{}{}", name[..1].to_uppercase(), &name[1..]);
    status
        .metrics
        .get(&test)
        .or_else(|| status.metrics.get(name))
        .copied()
        .or_else(|| {
            status
                .epochs
                .iter()
                .filter_map(|e| Some((point(e)?, e)))
                .filter(|(p, _)| p.rank == 0)
                .max_by_key(|(p, _)| p.epoch)
                .and_then(|(_, e)| e.metrics.get(name).copied())
        })
}

fn seconds(from: &Timestamp, to: &Timestamp) -> i64 {
    to.as_second() - from.as_second()
}

/// The runs table's row of `run`, `now` for the duration of runs still going.
pub fn run_row(run: &TrainingJob, now: Timestamp) -> RunRow {
    let status = run.status.clone().unwrap_or_default();
    let duration = status.start_time.as_ref().map(|start| {
        let end = status.completion_time.as_ref().map(|t| t.0).unwrap_or(now);
        seconds(&start.0, &end)
    });
    RunRow {
        namespace: run.namespace().unwrap_or_default(),
        name: run.name_any(),
        phase: phase(run),
        epoch: epochs_done(run),
        epochs: run.spec.epochs(),
        queue_position: status.position_in_queue,
        dataset: run.spec.dataset.name.clone(),
        version_hash: status.dataset_version_hash.clone(),
        parameters: run
            .spec
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        accuracy: final_metric(run, "accuracy"),
        macro_f1: final_metric(run, "macroF1"),
        duration,
        code_version: status.code_version.clone(),
        created: run.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
    }
}

fn matches(row: &RunRow, query: &RunQuery) -> bool {
    let text = query.q.trim().to_lowercase();
    let phase_ok = query.phase.is_empty() || row.phase.eq_ignore_ascii_case(&query.phase);
    let text_ok = text.is_empty()
        || [&row.namespace, &row.name, &row.dataset]
            .iter()
            .any(|field| field.to_lowercase().contains(&text))
        || row.parameters.iter().any(|p| p.to_lowercase().contains(&text));
    phase_ok && text_ok
}

fn by_option<T: PartialOrd>(a: &Option<T>, b: &Option<T>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => Ordering::Equal,
    }
}

/// The rows of `runs` the query keeps, in its order. Ties fall back to namespace and name, so
/// the order is stable while the table refreshes.
pub fn run_rows(runs: &[Arc<TrainingJob>], query: &RunQuery, now: Timestamp) -> Vec<RunRow> {
    let mut rows: Vec<RunRow> = runs
        .iter()
        .map(|run| run_row(run, now))
        .filter(|row| matches(row, query))
        .collect();
    let sort = if SORT_COLUMNS.contains(&query.sort.as_str()) {
        query.sort.as_str()
    } else {
        "created"
    };
    let ascending = match query.dir.as_str() {
        "asc" => true,
        "desc" => false,
        // Names A→Z; everything else largest (newest, best, longest) first.
        _ => matches!(sort, "name" | "phase" | "dataset"),
    };
    rows.sort_by(|a, b| {
        let order = match sort {
            "name" => a.name.cmp(&b.name),
            "phase" => a.phase.cmp(&b.phase),
            "epoch" => by_option(&a.epoch, &b.epoch),
            "dataset" => a.dataset.cmp(&b.dataset),
            "accuracy" => by_option(&a.accuracy, &b.accuracy),
            "macroF1" => by_option(&a.macro_f1, &b.macro_f1),
            "duration" => by_option(&a.duration, &b.duration),
            _ => by_option(&a.created, &b.created),
        };
        let order = if ascending { order } else { order.reverse() };
        order
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    });
    rows
}

/// One epoch of one rank, as the curves plot it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// `<rank>-<epoch>`.
    pub id: String,
    pub rank: u32,
    pub epoch: u64,
    pub metrics: std::collections::BTreeMap<String, f64>,
}

/// The epoch of a status entry; `None` for an id that is not `<rank>-<epoch>`.
pub fn point(epoch: &EpochStatus) -> Option<Point> {
    let (rank, number) = epoch.id.split_once('-')?;
    Some(Point {
        id: epoch.id.clone(),
        rank: rank.parse().ok()?,
        epoch: number.parse().ok()?,
        metrics: epoch.metrics.clone(),
    })
}

/// A history as points in (epoch, rank) order, each id once (the later entry wins), and the
/// metric names they carry.
pub fn points(history: &[EpochStatus]) -> (Vec<Point>, Vec<String>) {
    let mut by_id = std::collections::BTreeMap::new();
    for point in history.iter().filter_map(point) {
        by_id.insert((point.epoch, point.rank), point);
    }
    let names: BTreeSet<String> = by_id.values().flat_map(|p| p.metrics.keys().cloned()).collect();
    (by_id.into_values().collect(), names.into_iter().collect())
}

/// The metric a curve shows first: the one asked for when the run has it, else validation
/// accuracy, loss, or the first there is.
pub fn chosen_metric(asked: &str, names: &[String]) -> Option<String> {
    [asked, "accuracy", "loss"]
        .iter()
        .find(|name| names.iter().any(|n| n == *name))
        .map(|name| name.to_string())
        .or_else(|| names.first().cloned())
}

/// Whether the status keeps every epoch there is: then the store need not be read.
pub fn status_has_all_epochs(run: &TrainingJob) -> bool {
    let Some(status) = &run.status else { return true };
    let Some(done) = epochs_done(run) else {
        return status.epochs.is_empty();
    };
    let ranks = status.workers.len().max(1) as u64;
    status.epochs.len() as u64 >= done * ranks
}

/// Where a run came from and what serves it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Lineage {
    /// The Dataset, when it still exists.
    pub dataset: Option<String>,
    /// The commits of the snapshot the run trained on.
    pub commits: Vec<u32>,
    /// The snapshot's version hash.
    pub snapshot: Option<String>,
    /// ModelDeployments serving the run (`namespace/name`).
    pub deployments: Vec<String>,
}

/// `run`'s lineage among `datasets` and `deployments`.
pub fn lineage(
    run: &TrainingJob,
    datasets: &[Arc<Dataset>],
    deployments: &[Arc<ModelDeployment>],
) -> Lineage {
    let namespace = run.namespace().unwrap_or_default();
    let hash = run.status.as_ref().and_then(|s| s.dataset_version_hash.clone());
    let dataset = datasets.iter().find(|d| {
        d.namespace().as_deref() == Some(namespace.as_str()) && d.name_any() == run.spec.dataset.name
    });
    let commits = dataset
        .and_then(|d| d.status.as_ref())
        .and_then(|s| {
            s.snapshots
                .iter()
                .find(|snap| Some(&snap.version_hash) == hash.as_ref())
        })
        .map(|snap| snap.commits.clone())
        .unwrap_or_default();
    let run_id = run.status.as_ref().and_then(|s| s.run_id.clone());
    let deployments = deployments
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|d| {
            let model = &d.spec.model;
            let served = d.status.as_ref().and_then(|s| s.served_run.clone());
            model.training_job.as_deref() == Some(run.name_any().as_str())
                || (run_id.is_some() && (model.run_id == run_id || served == run_id))
        })
        .map(|d| key(d.as_ref()))
        .collect();
    Lineage {
        dataset: dataset.map(|d| key(d.as_ref())),
        commits,
        snapshot: hash,
        deployments,
    }
}

/// One line of the compare view's diff: a parameter or metric and each run's value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffLine {
    pub name: String,
    pub values: Vec<Option<String>>,
    /// Whether the runs' values are not all the same.
    pub differs: bool,
}

/// Parameters (then final metrics, then dataset and code version) of `runs`, side by side.
pub fn compare(runs: &[Arc<TrainingJob>]) -> Vec<DiffLine> {
    let mut lines = Vec::new();
    let mut push = |name: String, values: Vec<Option<String>>| {
        let differs = values.windows(2).any(|w| w[0] != w[1]);
        lines.push(DiffLine {
            name,
            values,
            differs,
        });
    };
    let params: BTreeSet<&String> = runs.iter().flat_map(|r| r.spec.parameters.keys()).collect();
    for name in params {
        push(
            name.clone(),
            runs.iter()
                .map(|r| r.spec.parameters.get(name).cloned())
                .collect(),
        );
    }
    let metrics: BTreeSet<String> = runs
        .iter()
        .filter_map(|r| r.status.as_ref())
        .flat_map(|s| s.metrics.keys().cloned())
        .collect();
    for name in metrics {
        push(
            name.clone(),
            runs.iter()
                .map(|r| {
                    r.status
                        .as_ref()
                        .and_then(|s| s.metrics.get(&name))
                        .map(|v| format!("{v:.4}"))
                })
                .collect(),
        );
    }
    push(
        "dataset".into(),
        runs.iter()
            .map(|r| {
                let hash = r.status.as_ref().and_then(|s| s.dataset_version_hash.clone());
                Some(
                    format!("{} {}", r.spec.dataset.name, hash.unwrap_or_default())
                        .trim()
                        .to_string(),
                )
            })
            .collect(),
    );
    push(
        "code version".into(),
        runs.iter()
            .map(|r| r.status.as_ref().and_then(|s| s.code_version.clone()))
            .collect(),
    );
    push("phase".into(), runs.iter().map(|r| Some(phase(r))).collect());
    lines
}

/// A predictor Deployment's rollout, in words.
pub fn rollout(deployment: Option<&Deployment>) -> String {
    let Some(deployment) = deployment else {
        return "no predictor Deployment".to_string();
    };
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or_default();
    if status.observed_generation.unwrap_or_default() < generation {
        return "rolling out (the Deployment controller has not seen the change yet)".to_string();
    }
    let updated = status.updated_replicas.unwrap_or_default();
    let available = status.available_replicas.unwrap_or_default();
    let total = status.replicas.unwrap_or_default();
    if updated < desired {
        format!("rolling out: {updated} of {desired} replicas updated")
    } else if total > updated {
        format!("rolling out: {} old replicas terminating", total - updated)
    } else if available < desired {
        format!("rolling out: {available} of {desired} updated replicas available")
    } else {
        "complete".to_string()
    }
}

/// Whether a run is still going (its curves stream).
pub fn is_live(run: &TrainingJob) -> bool {
    !matches!(
        run.status.as_ref().and_then(|s| s.phase),
        Some(TrainingPhase::Succeeded | TrainingPhase::Failed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(id: &str) -> EpochStatus {
        EpochStatus {
            id: id.into(),
            metrics: [("accuracy".to_string(), 0.5)].into(),
            ..EpochStatus::default()
        }
    }

    #[test]
    fn points_are_in_epoch_then_rank_order_each_once() {
        let history = [
            epoch("1-2"),
            epoch("0-10"),
            epoch("0-2"),
            epoch("0-2"),
            epoch("bad"),
            epoch("0-1"),
        ];
        let (points, names) = points(&history);
        let ids: Vec<&str> = points.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["0-1", "0-2", "1-2", "0-10"]);
        assert_eq!(names, ["accuracy"]);
    }

    #[test]
    fn the_metric_shown_is_the_one_asked_for_else_accuracy_else_loss() {
        let names: Vec<String> = ["loss", "macroF1"].map(String::from).to_vec();
        assert_eq!(chosen_metric("macroF1", &names).as_deref(), Some("macroF1"));
        assert_eq!(chosen_metric("nope", &names).as_deref(), Some("loss"));
        assert_eq!(chosen_metric("", &[]), None);
    }

    #[test]
    fn a_rollout_is_complete_only_when_every_replica_is_updated_and_available() {
        let deployment = |generation, observed, replicas, updated, available, total| Deployment {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::apps::v1::DeploymentStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                replicas: Some(total),
                ..Default::default()
            }),
        };
        assert_eq!(rollout(None), "no predictor Deployment");
        assert!(rollout(Some(&deployment(2, 1, 2, 2, 2, 2))).contains("has not seen"));
        assert_eq!(
            rollout(Some(&deployment(2, 2, 2, 1, 1, 3))),
            "rolling out: 1 of 2 replicas updated"
        );
        assert_eq!(
            rollout(Some(&deployment(2, 2, 2, 2, 2, 3))),
            "rolling out: 1 old replicas terminating"
        );
        assert_eq!(
            rollout(Some(&deployment(2, 2, 2, 2, 1, 2))),
            "rolling out: 1 of 2 updated replicas available"
        );
        assert_eq!(rollout(Some(&deployment(2, 2, 2, 2, 2, 2))), "complete");
    }
}
