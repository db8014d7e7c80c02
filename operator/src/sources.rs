//! Where each namespace may ingest data from. The operator reads sources with its own,
//! bucket-wide credentials, so without a rule it would copy into namespace `a`'s Dataset
//! whatever `a` names — another namespace's raw data, models or datasets (a confused deputy).
//!
//! A namespace may read its own raw-data prefix of the release bucket, `raw/<namespace>/`, and
//! the bucket prefixes an administrator adds for it (`--dataset-source NAMESPACE=BUCKET/PREFIX`,
//! `*` for every namespace).
//! The operator's own prefixes of the release bucket (`datasets/`, `models/`, `runs/`,
//! `tombstones/`) are never sources. A source that is not allowed gets the same answer as one
//! that does not exist, so nothing about it is revealed. A leaf module.

use std::collections::BTreeMap;

/// Prefixes of the release bucket that hold what the operator wrote: never a source.
const OPERATOR_PREFIXES: [&str; 4] = ["datasets/", "models/", "runs/", "tombstones/"];

/// The grantee that stands for every namespace.
pub const EVERY_NAMESPACE: &str = "*";

/// Every namespace's own raw-data prefix (`raw/<namespace>/`).
pub const RAW: &str = "raw";

/// The sources each namespace may ingest from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcePolicy {
    /// The release bucket (where `raw/<namespace>/` is).
    bucket: String,
    /// Namespace (`*`: every one) → extra `(bucket, prefix)` an administrator allowed.
    extra: BTreeMap<String, Vec<(String, String)>>,
}

impl SourcePolicy {
    /// The policy of release bucket `bucket` with `extra` grants (`namespace`, `bucket/prefix`);
    /// refuses a grant of the operator's own prefixes.
    pub fn new(bucket: &str, extra: &[(String, String)]) -> Result<SourcePolicy, String> {
        let mut policy = SourcePolicy {
            bucket: bucket.to_string(),
            extra: BTreeMap::new(),
        };
        for (namespace, location) in extra {
            let (source_bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
            if source_bucket == bucket && (prefix.is_empty() || is_operators(prefix)) {
                return Err(format!(
                    "--dataset-source {namespace}={location}: the operator's own prefixes of s3://{bucket}/ \
                     ({}) are never dataset sources",
                    OPERATOR_PREFIXES.join(", ")
                ));
            }
            policy
                .extra
                .entry(namespace.clone())
                .or_default()
                .push((source_bucket.to_string(), prefix.to_string()));
        }
        Ok(policy)
    }

    /// The `(bucket, prefix)` pairs `namespace` may ingest from.
    pub fn allowed(&self, namespace: &str) -> Vec<(String, String)> {
        let mut allowed = vec![(self.bucket.clone(), format!("{RAW}/{namespace}/"))];
        for grantee in [namespace, EVERY_NAMESPACE] {
            allowed.extend(self.extra.get(grantee).into_iter().flatten().cloned());
        }
        allowed
    }

    /// Whether `namespace` may read `key` (an object, or a prefix) of `bucket`.
    pub fn allows(&self, namespace: &str, bucket: &str, key: &str) -> bool {
        let plain = !key.starts_with('/')
            && !key.chars().any(char::is_control)
            && !key.split('/').any(|segment| segment == "." || segment == "..");
        plain
            && !(bucket == self.bucket && is_operators(key))
            && self
                .allowed(namespace)
                .iter()
                .any(|(allowed_bucket, prefix)| allowed_bucket == bucket && key.starts_with(prefix.as_str()))
    }

    /// What a source that does not exist, or that `namespace` may not read, is told: the same
    /// words for both, with where the namespace may ingest from.
    pub fn unavailable(&self, namespace: &str, bucket: &str, key: &str) -> String {
        let allowed: Vec<String> = self
            .allowed(namespace)
            .iter()
            .map(|(bucket, prefix)| format!("s3://{bucket}/{prefix}"))
            .collect();
        format!(
            "s3://{bucket}/{key} does not exist or is not a source namespace {namespace} may read \
             (its sources: {}); upload the data there",
            allowed.join(", ")
        )
    }
}

fn is_operators(key: &str) -> bool {
    OPERATOR_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_reads_its_raw_prefix_and_what_it_was_granted_only() {
        let policy = SourcePolicy::new(
            "miniautoml",
            &[
                ("a".into(), "shared-data/tweets/".into()),
                ("a".into(), "miniautoml/public/".into()),
                ("*".into(), "mini-automl-dm/upload/".into()),
            ],
        )
        .unwrap();
        assert!(policy.allows("a", "miniautoml", "raw/a/part1.csv"));
        assert!(policy.allows("a", "shared-data", "tweets/2026/x.csv"));
        assert!(policy.allows("a", "miniautoml", "public/x.csv"));
        for (bucket, key) in [
            ("miniautoml", "raw/b/part1.csv"),
            ("miniautoml", "raw/a/../b/part1.csv"),
            ("miniautoml", "raw/a"),
            ("miniautoml", "models/a/run/uid/model.safetensors"),
            ("miniautoml", "datasets/b/tweets/commits/1/examples.csv"),
            ("miniautoml", "runs/a/x/uid/epochs/0-1.json"),
            ("shared-data", "other/x.csv"),
            ("elsewhere", "raw/a/x.csv"),
        ] {
            assert!(!policy.allows("a", bucket, key), "s3://{bucket}/{key}");
        }
        assert!(
            !policy.allows("b", "shared-data", "tweets/x.csv"),
            "a grant is per namespace"
        );
        assert!(
            policy.allows("b", "mini-automl-dm", "upload/x.csv"),
            "`*` grants every namespace"
        );
        // Missing and not allowed read alike.
        let told = policy.unavailable("a", "miniautoml", "models/b/x");
        assert!(
            told.contains("does not exist or is not a source namespace a may read"),
            "{told}"
        );
        assert!(
            told.contains("s3://miniautoml/raw/a/, s3://shared-data/tweets/, s3://miniautoml/public/, s3://mini-automl-dm/upload/"),
            "{told}"
        );
    }

    #[test]
    fn the_operators_own_prefixes_cannot_be_granted() {
        for location in [
            "miniautoml/models/",
            "miniautoml/datasets/b/",
            "miniautoml",
            "miniautoml/",
        ] {
            let error = SourcePolicy::new("miniautoml", &[("a".into(), location.into())]).unwrap_err();
            assert!(error.contains("never dataset sources"), "{location}: {error}");
        }
    }
}
