//! Training snapshots of a Dataset, for the DataManagementService and the TrainingJob
//! controller: a selection of commits → the original's version hash → the merged data written
//! once under `datasets/<ns>/<name>/snapshots/<hash>/`, tracked in the Dataset's status as
//! Running → Ready or Failed.
//!
//! Asking for a Ready hash costs one read. A Running one is left to the build in progress (a
//! Running entry that no task of this process builds, e.g. after a restart, is built again). A
//! Failed one is retried. Builds run in the background; callers poll the status.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use kube::{Api, Client, ResourceExt};
use miniautoml_api::{Dataset, SnapshotState, SnapshotStatus};
use miniautoml_data::{
    SnapshotSelector, Store, build_snapshot, layout, version::SelectionError, version_hash,
};

use crate::status::modify_status;

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

/// Builds snapshots, each at most once at a time in this process.
#[derive(Clone)]
pub struct Snapshots {
    client: Client,
    store: Option<Store>,
    /// Snapshots being built by this process (`namespace/dataset/hash`).
    building: Arc<Mutex<BTreeSet<String>>>,
}

impl Snapshots {
    /// Snapshots written to `store` (none can be built without one), recorded through `client`.
    pub fn new(client: Client, store: Option<Store>) -> Self {
        Self {
            client,
            store,
            building: Arc::default(),
        }
    }

    fn is_building(&self, key: &str) -> bool {
        self.building.lock().map(|b| b.contains(key)).unwrap_or(false)
    }

    /// Claims `key` for this process; false when a build of it runs already.
    fn claim(&self, key: &str) -> bool {
        self.building
            .lock()
            .map(|mut b| b.insert(key.to_string()))
            .unwrap_or(false)
    }

    fn release(&self, key: &str) {
        if let Ok(mut building) = self.building.lock() {
            building.remove(key);
        }
    }

    /// The snapshot `selector` picks from `dataset`: Ready or Running (being built now).
    pub async fn prepare(
        &self,
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
        match existing {
            Some(snapshot) if snapshot.state == SnapshotState::Ready => return Ok(snapshot.clone()),
            Some(snapshot) if snapshot.state == SnapshotState::Running && self.is_building(&key) => {
                return Ok(snapshot.clone());
            }
            _ => {}
        }
        let store = self.store.clone().ok_or(SnapshotError::NoStorage)?;
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
        let api: Api<Dataset> = Api::namespaced(self.client.clone(), &namespace);
        if !self.claim(&key) {
            return Ok(running);
        }
        let recorded = modify_status(&api, &name, |d: &mut Dataset| {
            d.status
                .get_or_insert_with(Default::default)
                .upsert_snapshot(running.clone());
            true
        })
        .await;
        if let Err(error) = recorded {
            self.release(&key);
            return Err(error.into());
        }
        let prefixes: Vec<String> = ids
            .iter()
            .filter_map(|id| status.commits.iter().find(|c| c.id == *id))
            .map(|c| c.path.clone())
            .collect();
        let dataset_type = dataset.spec.r#type;
        let this = self.clone();
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
                d.status
                    .get_or_insert_with(Default::default)
                    .upsert_snapshot(finished.clone());
                true
            })
            .await
            {
                tracing::warn!(%error, "recording a snapshot");
            }
            this.release(&key);
        });
        Ok(running)
    }
}
