//! Snapshot selection and version hashes, as the original system computed them.

use base64::Engine;
use miniautoml_api::{DatasetCommitStatus, Tags};

/// Which commits a training snapshot takes: ids 1 up to `up_to` (the latest when `None`) whose
/// tags include every requested tag (exact key and value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSelector {
    /// Highest commit id taken; `None` takes up to the latest.
    pub up_to: Option<u32>,
    /// Tags every selected commit must carry.
    pub tags: Tags,
}

/// What was wrong with a selection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// `up_to` names a commit that does not exist.
    #[error("commit {requested} does not exist (the dataset has {latest} commits)")]
    NoSuchCommit {
        /// The id asked for.
        requested: u32,
        /// The latest commit id.
        latest: u32,
    },
}

impl SnapshotSelector {
    /// The ids of the selected commits, ascending.
    pub fn select(&self, commits: &[DatasetCommitStatus]) -> Result<Vec<u32>, SelectionError> {
        let latest = commits.iter().map(|c| c.id).max().unwrap_or(0);
        let up_to = match self.up_to {
            Some(requested) if requested > latest || requested == 0 => {
                return Err(SelectionError::NoSuchCommit { requested, latest });
            }
            Some(requested) => requested,
            None => latest,
        };
        let mut ids: Vec<u32> = commits
            .iter()
            .filter(|c| c.id <= up_to)
            .filter(|c| self.tags.iter().all(|(k, v)| c.tags.get(k) == Some(v)))
            .map(|c| c.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

/// The original's version hash: `"hash"` + standard Base64 of the commit-id bit set, bytes in
/// little-endian bit order without trailing zero bytes (Java's `BitSet.toByteArray()`).
pub fn version_hash(ids: &[u32]) -> String {
    let Some(&max) = ids.iter().max() else {
        return "hash".into();
    };
    let mut bytes = vec![0u8; max as usize / 8 + 1];
    for &id in ids {
        bytes[id as usize / 8] |= 1 << (id % 8);
    }
    format!("hash{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn hashes_match_the_original() {
        assert_eq!(version_hash(&[1]), "hashAg==");
        assert_eq!(version_hash(&[1, 2]), "hashBg==");
        assert_eq!(version_hash(&[1, 2, 3]), "hashDg==");
        assert_eq!(version_hash(&[1, 2, 3, 4]), "hashHg==");
        assert_eq!(version_hash(&[4]), "hashEA==");
        assert_eq!(version_hash(&[]), "hash");
        assert_eq!(
            version_hash(&[8]),
            "hashAAE=",
            "bit 8 is the second byte's first bit"
        );
    }

    fn commit(id: u32, tags: &[(&str, &str)]) -> DatasetCommitStatus {
        DatasetCommitStatus {
            id,
            entry: id - 1,
            created_at: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            message: String::new(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            path: String::new(),
            statistics: Default::default(),
        }
    }

    #[test]
    fn selection_takes_ids_up_to_the_commit_with_all_tags() {
        let commits = vec![
            commit(1, &[("source", "web")]),
            commit(2, &[("source", "web"), ("lang", "en")]),
            commit(3, &[("source", "app")]),
            commit(4, &[("lang", "en"), ("source", "web")]),
        ];
        let select = |up_to, tags: &[(&str, &str)]| {
            SnapshotSelector {
                up_to,
                tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            }
            .select(&commits)
        };
        assert_eq!(select(None, &[]), Ok(vec![1, 2, 3, 4]));
        assert_eq!(select(Some(2), &[]), Ok(vec![1, 2]));
        assert_eq!(select(None, &[("source", "web")]), Ok(vec![1, 2, 4]));
        assert_eq!(select(Some(3), &[("source", "web"), ("lang", "en")]), Ok(vec![2]));
        assert_eq!(
            select(None, &[("source", "WEB")]),
            Ok(vec![]),
            "values match exactly"
        );
        assert_eq!(select(None, &[("missing", "x")]), Ok(vec![]));
        assert_eq!(
            select(Some(5), &[]),
            Err(SelectionError::NoSuchCommit {
                requested: 5,
                latest: 4
            })
        );
        assert_eq!(
            version_hash(&select(None, &[("source", "web")]).unwrap()),
            "hashFg=="
        );
    }
}
