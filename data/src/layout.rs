//! Where things live in the bucket (docs/datasets.md, "Storage").

/// Everything of one Dataset.
pub fn dataset_prefix(namespace: &str, name: &str) -> String {
    format!("datasets/{namespace}/{name}/")
}

/// One commit's files.
pub fn commit_prefix(namespace: &str, name: &str, id: u32) -> String {
    format!("datasets/{namespace}/{name}/commits/{id}/")
}

/// One training snapshot's files (the trainer's `TRAINING_DATA_PATH`).
pub fn snapshot_prefix(namespace: &str, name: &str, version_hash: &str) -> String {
    format!("datasets/{namespace}/{name}/snapshots/{version_hash}/")
}

/// A training run's model artifacts (immutable: one folder per run).
pub fn model_prefix(namespace: &str, training_job: &str, run_uid: &str) -> String {
    format!("models/{namespace}/{training_job}/{run_uid}/")
}

/// Everything a training run records besides its model (today its epoch history).
pub fn run_prefix(namespace: &str, training_job: &str, run_uid: &str) -> String {
    format!("runs/{namespace}/{training_job}/{run_uid}/")
}

/// A training run's full epoch history, one object per epoch (`<rank>-<epoch>.json`).
pub fn run_history_prefix(namespace: &str, training_job: &str, run_uid: &str) -> String {
    format!("{}epochs/", run_prefix(namespace, training_job, run_uid))
}

/// The tombstones of deleted resources whose storage was cleared: all of them, or one
/// namespace's.
pub fn tombstones_prefix(namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("tombstones/{namespace}/"),
        None => "tombstones/".to_string(),
    }
}

/// The tombstone of the deleted resource `uid` (a JSON object naming the resource, whose
/// prefixes were cleared).
pub fn tombstone(namespace: &str, uid: &str) -> String {
    format!("{}{uid}.json", tombstones_prefix(Some(namespace)))
}

/// Files of a TextIntent commit or snapshot.
pub const EXAMPLES: &str = "examples.csv";
/// Label ids and names.
pub const LABELS: &str = "labels.csv";
/// Full statistics (every label's count).
pub const STATISTICS: &str = "statistics.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_layout() {
        assert_eq!(
            commit_prefix("team", "tweets", 2),
            "datasets/team/tweets/commits/2/"
        );
        assert_eq!(
            snapshot_prefix("team", "tweets", "hashBg=="),
            "datasets/team/tweets/snapshots/hashBg==/"
        );
        assert!(commit_prefix("team", "tweets", 2).starts_with(&dataset_prefix("team", "tweets")));
        assert_eq!(tombstone("team", "u-1"), "tombstones/team/u-1.json");
        assert!(tombstone("team", "u-1").starts_with(&tombstones_prefix(Some("team"))));
        assert!(tombstone("team", "u-1").starts_with(&tombstones_prefix(None)));
    }
}
