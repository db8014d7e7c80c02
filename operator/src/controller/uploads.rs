//! Upload keys: data engineers upload raw data without the bucket-wide key.
//!
//! Each namespace an administrator lists (`--upload-key-namespace`, the chart's
//! `uploads.namespaces`) gets a Secret [`SECRET`] holding a storage key of its own that reads,
//! writes and lists only `raw/<namespace>/` of the release bucket — the prefix that namespace's
//! Datasets ingest from by default. Kubernetes decides who may upload: whoever may read that
//! Secret. The leader makes sure every listed namespace has its key and Secret at start and
//! every [`EVERY`], and revokes the key of a namespace taken off the list (and deletes its
//! Secret); the namespaces given a key are recorded in the ConfigMap [`RECORD`] in the
//! operator's namespace, so a restart with a shorter list still finds them.
//!
//! With `--storage-credentials=shared` there are no upload keys (they would be the bucket-wide
//! key): data engineers get that key from the administrator, as before.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use miniautoml_data::Grants;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    Result,
    config::Credentials,
    context::{Context, MANAGER},
    controller::children::credential_entries,
    pod_keys::Holder,
    sources::RAW,
};

/// The Secret each listed namespace gets.
pub const SECRET: &str = "miniautoml-upload";
/// The ConfigMap (in the operator's namespace) recording the namespaces given an upload key.
pub const RECORD: &str = "miniautoml-upload-keys";
/// How often the leader makes sure the listed namespaces have their keys.
pub const EVERY: Duration = Duration::from_secs(300);
/// How soon a failed pass is tried again.
pub const RETRY: Duration = Duration::from_secs(5);

/// A namespace's raw-data prefix: where it uploads, and what its Datasets read by default.
pub fn raw_prefix(namespace: &str) -> String {
    format!("{RAW}/{namespace}/")
}

/// What `namespace`'s upload key may do in `bucket`: read, write and list its raw-data prefix.
pub fn grants(bucket: &str, namespace: &str) -> Grants {
    Grants {
        bucket: bucket.to_string(),
        read: vec![],
        write: vec![raw_prefix(namespace)],
    }
}

/// The upload Secret of `namespace`: the key, and where it writes (`S3_BUCKET`, `S3_PREFIX`,
/// and `S3_ENDPOINT` as the operator reaches the store).
pub fn build_secret(
    namespace: &str,
    credentials: &Credentials,
    bucket: &str,
    endpoint: Option<&str>,
) -> Secret {
    let mut entries = credential_entries(credentials);
    entries.insert("S3_BUCKET".into(), bucket.into());
    entries.insert("S3_PREFIX".into(), raw_prefix(namespace));
    if let Some(endpoint) = endpoint {
        entries.insert("S3_ENDPOINT".into(), endpoint.into());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".into(),
                    "miniautoml-operator".into(),
                ),
                ("app.kubernetes.io/component".into(), "upload-key".into()),
            ])),
            ..Default::default()
        },
        string_data: Some(entries),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The namespaces `recorded` as given a key that `listed` no longer names.
pub fn dropped(recorded: &[String], listed: &[String]) -> Vec<String> {
    recorded
        .iter()
        .filter(|namespace| !listed.contains(namespace))
        .cloned()
        .collect()
}

/// Keeps the upload keys of `listed` namespaces until `shutdown`, on the leader only.
pub async fn run(ctx: Arc<Context>, listed: Vec<String>, shutdown: CancellationToken) {
    if listed.is_empty() {
        return;
    }
    let mut gained = ctx.leadership.gained();
    loop {
        let mut wait = EVERY;
        if ctx.leadership.is_leading()
            && let Err(error) = pass(&ctx, &listed).await
        {
            // The store may still be starting (a fresh install): soon again.
            warn!(%error, retry_in = ?RETRY, "upload keys: a pass failed; trying again soon");
            wait = RETRY;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = gained.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass: every listed namespace's key issued and Secret applied; the keys of namespaces
/// taken off the list revoked and their Secrets deleted; the record written.
async fn pass(ctx: &Context, listed: &[String]) -> Result<()> {
    let Some(settings) = &ctx.training else {
        return Ok(());
    };
    if !settings.pods.keys.scoped() {
        warn!(
            "upload keys are made only with --storage-credentials=scoped (the store's IAM API): with shared they \
             would be the bucket-wide key, with sts they would expire; data engineers upload with keys the \
             store's administrator gives them"
        );
        return Ok(());
    }
    let records: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.id_namespace);
    let recorded: Vec<String> = records
        .get_opt(RECORD)
        .await?
        .and_then(|map| map.data)
        .and_then(|data| data.get("namespaces").cloned())
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let apply = PatchParams::apply(MANAGER).force();
    // Recorded first, so a key is never issued without a record to revoke it by.
    let mut keep: Vec<String> = recorded.iter().chain(listed).cloned().collect();
    keep.sort();
    keep.dedup();
    write_record(&records, &keep).await?;
    for namespace in listed {
        let credentials = settings
            .pods
            .keys
            .issue(Holder::Upload, namespace, &grants(&settings.bucket, namespace))
            .await?;
        let secret = build_secret(
            namespace,
            &credentials,
            &settings.bucket,
            settings.pods.s3_endpoint.as_deref(),
        );
        Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .patch(SECRET, &apply, &Patch::Apply(&secret))
            .await?;
    }
    for namespace in dropped(&recorded, listed) {
        settings.pods.keys.revoke(Holder::Upload, &namespace).await?;
        let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
        match secrets.delete(SECRET, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        info!(namespace, "upload key revoked: the namespace is no longer listed");
    }
    write_record(&records, listed).await
}

/// Records `namespaces` as given a key (read, then replaced with its resourceVersion, or
/// created).
async fn write_record(records: &Api<ConfigMap>, namespaces: &[String]) -> Result<()> {
    let data = Some(BTreeMap::from([("namespaces".into(), namespaces.join("\n"))]));
    match records.get_opt(RECORD).await? {
        Some(map) if map.data == data => {}
        Some(mut map) => {
            map.data = data;
            records.replace(RECORD, &PostParams::default(), &map).await?;
        }
        None => {
            let map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(RECORD.into()),
                    ..Default::default()
                },
                data,
                ..Default::default()
            };
            records.create(&PostParams::default(), &map).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::children::{ACCESS_KEY, SECRET_KEY};

    #[test]
    fn a_namespace_uploads_into_its_own_raw_prefix_only() {
        let grants = grants("miniautoml", "team-a");
        assert_eq!(grants.write, vec!["raw/team-a/".to_string()]);
        assert!(grants.read.is_empty());
        let credentials = Credentials {
            access_key_id: "MAKEY".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        };
        let secret = build_secret("team-a", &credentials, "miniautoml", Some("http://store:8333"));
        let entries = secret.string_data.unwrap();
        assert_eq!(entries[ACCESS_KEY], "MAKEY");
        assert_eq!(entries[SECRET_KEY], "secret");
        assert_eq!(entries["S3_PREFIX"], "raw/team-a/");
        assert_eq!(entries["S3_ENDPOINT"], "http://store:8333");
        assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
    }

    #[test]
    fn a_namespace_taken_off_the_list_is_dropped() {
        let recorded = vec!["a".to_string(), "b".to_string()];
        assert_eq!(dropped(&recorded, &["a".to_string()]), vec!["b".to_string()]);
        assert!(dropped(&recorded, &["a".into(), "b".into(), "c".into()]).is_empty());
    }
}
