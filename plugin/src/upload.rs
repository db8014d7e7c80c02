//! `dataset upload FILE --dataset NAME`: the tenant's upload path, with a progress bar. The file
//! goes to `raw/<namespace>/<dataset>/<file name>` with the namespace's upload key (the Secret
//! `miniautoml-upload` the operator keeps there, which writes only `raw/<namespace>/`), through
//! a port-forward to the bundled store's S3 port (or `--s3-endpoint`); then a commit reading it
//! is appended to the Dataset (a JSON patch adding to `spec.commits`, which only grows), and
//! with `--wait` the command waits for the operator to ingest it or say why not.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use miniautoml_api::Dataset;
use tokio::io::AsyncReadExt;

use crate::{api::Forward, cluster::Target};

/// The Secret holding a namespace's upload key.
const UPLOAD_SECRET: &str = "miniautoml-upload";
/// Bytes read and sent at a time.
const CHUNK: usize = 1 << 20;

/// Where the upload goes.
pub struct Store {
    /// S3 endpoint; `None`: the bundled store through a port-forward.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub release_namespace: String,
    pub release: String,
}

/// The object key of `file` for `dataset` in `namespace`.
pub fn raw_key(namespace: &str, dataset: &str, file: &Path) -> anyhow::Result<String> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        .ok_or_else(|| {
            anyhow!(
                "{}: name the file with letters, digits, '.', '_' and '-' only",
                file.display()
            )
        })?;
    Ok(format!("raw/{namespace}/{dataset}/{name}"))
}

fn decoded(secret: &Secret, key: &str) -> anyhow::Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| anyhow!("Secret {UPLOAD_SECRET} has no {key}"))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// Uploads `file` and appends its commit to `dataset`.
pub async fn upload(
    target: &Target,
    store: &Store,
    file: &Path,
    dataset: &str,
    message: &str,
    wait: bool,
) -> anyhow::Result<()> {
    let namespace = target.namespace()?;
    let datasets: Api<Dataset> = Api::namespaced(target.client.clone(), &namespace);
    datasets.get_opt(dataset).await?.ok_or_else(|| {
        anyhow!("no Dataset {dataset:?} in namespace {namespace:?}: kubectl apply one first")
    })?;
    let key = raw_key(&namespace, dataset, file)?;
    let secrets: Api<Secret> = Api::namespaced(target.client.clone(), &namespace);
    let secret = secrets
        .get_opt(UPLOAD_SECRET)
        .await
        .with_context(|| format!("the upload key of namespace {namespace} (get secrets/{UPLOAD_SECRET})"))?;
    let secret = secret.ok_or_else(|| {
        anyhow!(
            "namespace {namespace} has no upload key (Secret {UPLOAD_SECRET}): the chart's uploads.namespaces lists \
             the namespaces that get one"
        )
    })?;
    let (access, secret_key) = (
        decoded(&secret, "AWS_ACCESS_KEY_ID")?,
        decoded(&secret, "AWS_SECRET_ACCESS_KEY")?,
    );
    let (_forward, endpoint) = match &store.endpoint {
        Some(endpoint) => (None, endpoint.clone()),
        None => {
            let forward = Forward::start(
                target,
                &store.release_namespace,
                &format!("{}-object-store", store.release),
                8333,
                0,
            )?;
            let endpoint = format!("http://127.0.0.1:{}", forward.port);
            (Some(forward), endpoint)
        }
    };
    let s3 = miniautoml_data::Store::with_credentials(
        Some(&endpoint),
        "us-east-1",
        &access,
        &secret_key,
        &store.bucket,
    );

    let mut reader = tokio::fs::File::open(file)
        .await
        .with_context(|| file.display().to_string())?;
    let size = reader.metadata().await?.len();
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("s3://{}/{key}", store.bucket));
    let mut writer = s3.writer(&key, "text/csv");
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        if let Err(error) = writer.write(&buffer[..n]).await {
            writer.abort().await;
            bail!("uploading to s3://{}/{key}: {error}", store.bucket);
        }
        bar.inc(n as u64);
    }
    writer
        .finish()
        .await
        .map_err(|e| anyhow!("uploading to s3://{}/{key}: {e}", store.bucket))?;
    bar.finish();

    let entry = append_commit(&datasets, dataset, &store.bucket, &key, message).await?;
    println!(
        "Dataset {namespace}/{dataset}: commit entry {entry} appended (s3://{}/{key})",
        store.bucket
    );
    if wait {
        wait_for_commit(&datasets, dataset, entry as u32).await?;
    }
    Ok(())
}

/// Appends a commit reading `key` to the Dataset's `spec.commits` (the list as read, plus one,
/// written only over that version: another writer's commit in between means reading again):
/// the new entry's index.
async fn append_commit(
    datasets: &Api<Dataset>,
    dataset: &str,
    bucket: &str,
    key: &str,
    message: &str,
) -> anyhow::Result<u32> {
    let commit = serde_json::json!({"message": message, "source": {"bucket": bucket, "key": key}});
    for _ in 0..5 {
        let current = datasets.get(dataset).await?;
        let mut commits = serde_json::to_value(&current.spec.commits)?;
        let entry = current.spec.commits.len() as u32;
        commits.as_array_mut().expect("a list").push(commit.clone());
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"commits": commits},
        });
        match datasets
            .patch(dataset, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(entry),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => {
                return Err(anyhow!(error).context(format!("appending the commit to Dataset {dataset}")));
            }
        }
    }
    bail!("Dataset {dataset} kept changing: the commit was not appended (the file is uploaded: run again)")
}

/// Waits until spec entry `entry` of the Dataset is ingested (its statistics) or rejected (why).
async fn wait_for_commit(datasets: &Api<Dataset>, dataset: &str, entry: u32) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let status = datasets.get(dataset).await?.status.unwrap_or_default();
        if let Some(commit) = status.commits.iter().find(|c| c.entry == entry) {
            println!(
                "commit {}: {} examples, {} labels, {} rows rejected",
                commit.id,
                commit.statistics.num_examples,
                commit.statistics.num_labels,
                commit.statistics.rejected_rows
            );
            return Ok(());
        }
        if let Some(rejected) = status.rejected.iter().find(|r| r.entry == entry) {
            bail!("the commit was rejected: {}", rejected.message);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the commit was not ingested within 10 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_go_under_the_namespaces_raw_prefix_with_a_plain_name() {
        assert_eq!(
            raw_key("team-a", "tweets", Path::new("/tmp/part_2.csv")).unwrap(),
            "raw/team-a/tweets/part_2.csv"
        );
        assert!(raw_key("team-a", "tweets", Path::new("/tmp/a b.csv")).is_err());
        assert!(raw_key("team-a", "tweets", Path::new("/")).is_err());
    }
}
