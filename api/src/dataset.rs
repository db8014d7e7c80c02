//! The `Dataset` resource: raw data becomes versioned commits, and sets of commits become
//! immutable, hash-named training snapshots.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{ObjectSource, RetainPolicy, Tags, conditions_schema, tags_schema};

/// Condition: every entry of `spec.commits` is processed and storage works.
pub const READY: &str = "Ready";
/// Condition: the outcome of the latest ingestion.
pub const INGESTED: &str = "Ingested";

/// The most commits one Dataset holds. Commit ids are bits of the snapshot version hash, and the
/// CEL append-only rule compares every old commit, so the list is bounded.
pub const MAX_COMMITS: u64 = 256;
/// The most snapshots a Dataset's status lists (most recent first out of the window; the
/// snapshots themselves stay in object storage).
pub const MAX_STATUS_SNAPSHOTS: u64 = 32;

/// A versioned data set: an append-only list of commits, each ingested once into object storage.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "miniautoml.io",
    version = "v1alpha1",
    kind = "Dataset",
    namespaced,
    status = "DatasetStatus",
    shortname = "dset",
    category = "miniautoml",
    cel,
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Commits",
        type_ = "integer",
        json_path = ".status.commitCount",
        description = "Commits ingested"
    ),
    printcolumn(
        name = "Examples",
        type_ = "integer",
        json_path = ".status.totalExamples",
        description = "Examples over all commits"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'Generic' || self.commits.all(c, !has(c.source.prefix))").message("a TextIntent commit reads one CSV file: give source.key or source.url, not source.prefix"))]
pub struct DatasetSpec {
    /// Kind of data. TextIntent: CSV rows of text and `;`-separated labels. Generic: opaque files.
    /// Cannot be changed after creation.
    #[x_kube(validation = Rule::new("self == oldSelf").message("type is immutable"))]
    pub r#type: DatasetType,

    /// Free-text description of the data set.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub description: String,

    /// Commits in order; commit ids are positions from 1. Append-only: entries may be added at the
    /// end, never edited, reordered or removed.
    #[serde(default)]
    #[schemars(length(max = MAX_COMMITS))]
    #[x_kube(validation = Rule::new(
        "size(self) >= size(oldSelf) && oldSelf.all(i, c, self[i] == c)"
    ).message("commits are append-only: existing entries cannot be edited, reordered or removed"))]
    pub commits: Vec<DatasetCommitSpec>,

    /// What happens to the objects in storage when the Dataset is deleted: Delete removes them,
    /// Retain keeps them.
    #[serde(default)]
    pub retain_policy: RetainPolicy,
}

/// Kind of data a Dataset holds: `TextIntent` (CSV without header, column 0 the text, column 1
/// labels split on `;`) or `Generic` (any files, stored as parts without parsing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DatasetType {
    // Intent classification: CSV without header, column 0 the text, column 1 labels split on `;`.
    #[default]
    TextIntent,
    // Any files, stored as parts without parsing.
    Generic,
}

/// One commit requested by the user: where the data is and how to describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetCommitSpec {
    /// Commit message.
    #[serde(default)]
    #[schemars(length(max = 512))]
    pub message: String,
    /// Where the data of this commit is read from.
    pub source: ObjectSource,
    /// Tags used to select commits for a training snapshot (all requested tags must match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "tags_schema")]
    pub tags: Tags,
}

/// Observed state of a Dataset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, one per type, each with a reason and message. `Accepted`: whether the operator
    /// validated the current generation of the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Numeric dataset id of the gRPC API (`dataset_id`), given by the operator once; the label
    /// `miniautoml.io/dataset-id` mirrors it for selection, but only this field counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    /// Commits ingested, in id order. A commit appears only when all its objects are written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMMITS))]
    pub commits: Vec<DatasetCommitStatus>,
    /// Number of commits ingested (the id of the latest commit).
    #[serde(default)]
    pub commit_count: u32,
    /// Examples over all ingested commits.
    #[serde(default)]
    pub total_examples: u64,
    /// Training snapshots built from this Dataset, most recent last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STATUS_SNAPSHOTS))]
    pub snapshots: Vec<SnapshotStatus>,
    /// `spec.commits` entries that were rejected (malformed data, empty or missing file); they
    /// took no commit id. Append a corrected entry to ingest the data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMMITS))]
    pub rejected: Vec<RejectedCommit>,
    /// When a commit or snapshot last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<Time>,
}

/// A `spec.commits` entry whose data was rejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectedCommit {
    /// Index of the entry in `spec.commits` (from 0).
    pub entry: u32,
    /// Why, naming the file and the line (e.g. `line 17: expected 2 columns, found 1`).
    #[schemars(length(max = 2048))]
    pub message: String,
    /// When it was rejected.
    pub rejected_at: Time,
}

/// One ingested commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetCommitStatus {
    /// Commit id: 1, 2, ... in ingestion order. Entries rejected for bad data take no id, so ids
    /// have no gaps.
    pub id: u32,
    /// Index of the `spec.commits` entry this commit was ingested from (from 0).
    #[serde(default)]
    pub entry: u32,
    /// When the commit finished ingesting.
    pub created_at: Time,
    /// Commit message, copied from the spec.
    #[serde(default)]
    pub message: String,
    /// Tags, copied from the spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "tags_schema")]
    pub tags: Tags,
    /// Object-storage prefix holding the commit's files.
    pub path: String,
    /// Statistics computed while ingesting.
    #[serde(default)]
    pub statistics: DatasetStatistics,
}

/// Statistics of a commit or snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStatistics {
    /// Rows (TextIntent) or files (Generic) accepted.
    #[serde(default)]
    pub num_examples: u64,
    /// Distinct labels (TextIntent).
    #[serde(default)]
    pub num_labels: u32,
    /// Examples per label, for at most 64 labels (the full table is stored beside the data).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub per_label: BTreeMap<String, u64>,
    /// Rows rejected as malformed.
    #[serde(default)]
    pub rejected_rows: u64,
}

/// One training snapshot: a selection of commits merged into one immutable data set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// Version hash naming the selection, as in the original system (`hash` + Base64 of the
    /// commit-id bit set), e.g. `hashBg==` for commits 1 and 2.
    pub version_hash: String,
    /// Commit ids merged into the snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMMITS))]
    pub commits: Vec<u32>,
    /// Build state.
    pub state: SnapshotState,
    /// Object-storage prefix of the snapshot (the trainer's `TRAINING_DATA_PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Files of the snapshot, relative to `root`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub parts: Vec<String>,
    /// Statistics of the merged data.
    #[serde(default)]
    pub statistics: DatasetStatistics,
    /// Why the snapshot failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Build state of a training snapshot: `Running` (being written), `Ready` (complete and
/// readable) or `Failed` (asking for it again retries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SnapshotState {
    // Being written.
    #[default]
    Running,
    // Complete and readable.
    Ready,
    // Failed; asking for it again retries.
    Failed,
}

impl Dataset {
    /// The numeric dataset id the operator gave this Dataset (`status.datasetId`); labels do not
    /// count, since anyone who may edit the Dataset may set them.
    pub fn dataset_id(&self) -> Option<u64> {
        self.status.as_ref()?.dataset_id.as_deref()?.parse().ok()
    }

    /// The first `spec.commits` entry neither ingested nor rejected.
    pub fn next_entry(&self) -> Option<usize> {
        let status = self.status.as_ref();
        let processed = |index: u32| {
            status.is_some_and(|s| {
                s.commits.iter().any(|c| c.entry == index) || s.rejected.iter().any(|r| r.entry == index)
            })
        };
        (0..self.spec.commits.len()).find(|&index| !processed(index as u32))
    }
}

impl DatasetStatus {
    /// Puts `snapshot` in (replacing the entry of its hash), dropping the oldest finished entries
    /// beyond [`MAX_STATUS_SNAPSHOTS`].
    pub fn upsert_snapshot(&mut self, snapshot: SnapshotStatus) {
        self.snapshots.retain(|s| s.version_hash != snapshot.version_hash);
        self.snapshots.push(snapshot);
        while self.snapshots.len() > MAX_STATUS_SNAPSHOTS as usize {
            match self
                .snapshots
                .iter()
                .position(|s| s.state != SnapshotState::Running)
            {
                Some(oldest) => {
                    self.snapshots.remove(oldest);
                }
                None => break,
            }
        }
        self.last_updated_at = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    }
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
        status.upsert_snapshot(snapshot("hashAg==", SnapshotState::Running));
        status.upsert_snapshot(snapshot("hashAg==", SnapshotState::Ready));
        assert_eq!(status.snapshots.len(), 1, "one entry per hash");
        assert_eq!(status.snapshots[0].state, SnapshotState::Ready);
        for i in 0..40 {
            status.upsert_snapshot(snapshot(&format!("h{i}"), SnapshotState::Ready));
        }
        assert_eq!(status.snapshots.len(), MAX_STATUS_SNAPSHOTS as usize);
        assert_eq!(
            status.snapshots.last().unwrap().version_hash,
            "h39",
            "most recent last"
        );
    }
}
