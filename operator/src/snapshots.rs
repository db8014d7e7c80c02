//! Training snapshots of a Dataset, for the DataManagementService and the TrainingJob
//! controller: a selection of commits → the original's version hash → the merged data written
//! once under `datasets/<ns>/<name>/snapshots/<hash>/`, tracked in the Dataset's status as
//! Running → Ready or Failed.
//!
//! Asking for a Ready hash costs one read. A Running one is left to the build in progress (a
//! Running entry that no task of this process builds, e.g. after a restart, is built again). A
//! Failed one is retried. Builds run in the background; callers poll the status.

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Api, ResourceExt};
use miniautoml_api::{Dataset, DatasetStatus, SnapshotState, SnapshotStatus, dataset::MAX_STATUS_SNAPSHOTS};
use miniautoml_data::{SnapshotSelector, build_snapshot, layout, version::SelectionError, version_hash};

use crate::controller::{Context, modify_status};

/// Why a snapshot cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The selection names a commit that does not exist.
    #[error("{0}")]
    Selection(#[from] SelectionError),
    /// No object storage is configured.
    #[error("object storage is not configured")]
    NoStorage,
    /// Writing the Dataset's status failed.
    #[error("{0}")]
    Operator(#[from] crate::Error),
}

/// Puts `snapshot` into `status` (replacing the entry of its hash), dropping the oldest finished
/// entries beyond the status's bound.
pub fn upsert_snapshot(status: &mut DatasetStatus, snapshot: SnapshotStatus) {
    status
        .snapshots
        .retain(|s| s.version_hash != snapshot.version_hash);
    status.snapshots.push(snapshot);
    while status.snapshots.len() > MAX_STATUS_SNAPSHOTS as usize {
        match status
            .snapshots
            .iter()
            .position(|s| s.state != SnapshotState::Running)
        {
            Some(oldest) => {
                status.snapshots.remove(oldest);
            }
            None => break,
        }
    }
    status.last_updated_at = Some(Time(Timestamp::now()));
}

/// The snapshot `selector` picks from `dataset`: Ready or Running (being built now).
pub async fn prepare(
    ctx: &Arc<Context>,
    dataset: &Dataset,
    selector: &SnapshotSelector,
) -> Result<SnapshotStatus, SnapshotError> {
    let status = dataset.status.clone().unwrap_or_default();
    let ids = selector.select(&status.commits)?;
    let hash = version_hash(&ids);
    let namespace = dataset.namespace().unwrap_or_default();
    let name = dataset.name_any();
    let key = format!("{namespace}/{name}/{hash}");
    let existing = status.snapshots.iter().find(|s| s.version_hash == hash);
    let building = ctx
        .snapshot_builds
        .lock()
        .map(|b| b.contains(&key))
        .unwrap_or(false);
    match existing {
        Some(snapshot) if snapshot.state == SnapshotState::Ready => return Ok(snapshot.clone()),
        Some(snapshot) if snapshot.state == SnapshotState::Running && building => return Ok(snapshot.clone()),
        _ => {}
    }
    let store = ctx.store.clone().ok_or(SnapshotError::NoStorage)?;
    let root = layout::snapshot_prefix(&namespace, &name, &hash);
    let running = SnapshotStatus {
        version_hash: hash.clone(),
        commits: ids.clone(),
        state: SnapshotState::Running,
        root: Some(root.clone()),
        parts: Vec::new(),
        statistics: Default::default(),
        message: None,
    };
    let api: Api<Dataset> = Api::namespaced(ctx.client.clone(), &namespace);
    {
        let Ok(mut builds) = ctx.snapshot_builds.lock() else {
            return Ok(running);
        };
        if !builds.insert(key.clone()) {
            return Ok(running);
        }
    }
    let recorded = modify_status(&api, &name, |d: &mut Dataset| {
        upsert_snapshot(d.status.get_or_insert_with(Default::default), running.clone());
        true
    })
    .await;
    if let Err(error) = recorded {
        if let Ok(mut builds) = ctx.snapshot_builds.lock() {
            builds.remove(&key);
        }
        return Err(error.into());
    }
    let prefixes: Vec<String> = ids
        .iter()
        .filter_map(|id| status.commits.iter().find(|c| c.id == *id))
        .map(|c| c.path.clone())
        .collect();
    let dataset_type = dataset.spec.r#type;
    let task_ctx = ctx.clone();
    let done = running.clone();
    tokio::spawn(async move {
        let built = build_snapshot(&store, dataset_type, &prefixes, &root).await;
        let finished = match built {
            Ok(written) => SnapshotStatus {
                state: SnapshotState::Ready,
                parts: written.parts,
                statistics: written.statistics,
                ..done
            },
            Err(error) => SnapshotStatus {
                state: SnapshotState::Failed,
                message: Some(error.to_string()),
                ..done
            },
        };
        tracing::info!(dataset = name, hash = finished.version_hash, state = ?finished.state, "snapshot built");
        if let Err(error) = modify_status(&api, &name, |d: &mut Dataset| {
            upsert_snapshot(d.status.get_or_insert_with(Default::default), finished.clone());
            true
        })
        .await
        {
            tracing::warn!(%error, "recording a snapshot");
        }
        if let Ok(mut builds) = task_ctx.snapshot_builds.lock() {
            builds.remove(&key);
        }
    });
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(hash: &str, state: SnapshotState) -> SnapshotStatus {
        SnapshotStatus {
            version_hash: hash.into(),
            state,
            ..Default::default()
        }
    }

    #[test]
    fn the_status_keeps_a_bounded_window_of_snapshots() {
        let mut status = DatasetStatus::default();
        upsert_snapshot(&mut status, snapshot("hashAg==", SnapshotState::Running));
        upsert_snapshot(&mut status, snapshot("hashAg==", SnapshotState::Ready));
        assert_eq!(status.snapshots.len(), 1, "one entry per hash");
        assert_eq!(status.snapshots[0].state, SnapshotState::Ready);
        for i in 0..40 {
            upsert_snapshot(&mut status, snapshot(&format!("h{i}"), SnapshotState::Ready));
        }
        assert_eq!(status.snapshots.len(), MAX_STATUS_SNAPSHOTS as usize);
        assert_eq!(
            status.snapshots.last().unwrap().version_hash,
            "h39",
            "most recent last"
        );
    }
}
