//! Object storage: the bucket the datasets live in, streaming reads and multipart writes.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::{
    error::{ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart, ObjectIdentifier},
};
use bytes::Bytes;
use tokio::task::JoinHandle;

/// Why a storage call failed, sorted by what the caller should do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The object or bucket does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The credentials are refused (wrong keys, or no access to the bucket).
    #[error("{0}")]
    Denied(String),
    /// Anything else (network, server error): retry later.
    #[error("{0}")]
    Unavailable(String),
}

impl StorageError {
    /// Sorts an SDK error for the object `what`.
    pub fn from_sdk<E>(what: &str, error: SdkError<E, HttpResponse>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        // HEAD responses have no body, so no error code: fall back to the HTTP status.
        let code = error.code().map(str::to_string).or_else(|| {
            match error.raw_response().map(|r| r.status().as_u16()) {
                Some(404) => Some("NotFound".into()),
                Some(403) => Some("Forbidden".into()),
                _ => None,
            }
        });
        let message = error.message().map(str::to_string);
        let detail = match (&code, &message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&error)),
        };
        match code.as_deref() {
            Some("NoSuchKey" | "NoSuchBucket" | "NotFound") => {
                StorageError::NotFound(format!("{what}: not found ({detail})"))
            }
            Some(
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "Forbidden"
                | "InvalidSecurity",
            ) => StorageError::Denied(format!("{what}: access denied ({detail})")),
            _ => StorageError::Unavailable(format!("{what}: {detail}")),
        }
    }
}

/// The bucket datasets and models are stored in.
#[derive(Clone, Debug)]
pub struct Store {
    /// S3 client.
    pub client: aws_sdk_s3::Client,
    /// The bucket.
    pub bucket: String,
}

/// Size of a multipart part (S3's smallest is 5 MiB, for all but the last).
pub const PART_SIZE: usize = 5 << 20;

impl Store {
    /// A store over `bucket`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Store {
        Store {
            client,
            bucket: bucket.into(),
        }
    }

    /// A store over `bucket` with static credentials, path-style addressing (MinIO and other
    /// S3-compatible servers) and, unless `endpoint` is `None`, a custom endpoint URL.
    pub fn with_credentials(
        endpoint: Option<&str>,
        region: &str,
        access_key: &str,
        secret_key: &str,
        bucket: impl Into<String>,
    ) -> Store {
        Store::with_session_token(endpoint, region, (access_key, secret_key, None), bucket)
    }

    /// [`Store::with_credentials`] for a key that may be temporary: `(access key, secret key,
    /// session token)` (an STS key's token goes with every request).
    pub fn with_session_token(
        endpoint: Option<&str>,
        region: &str,
        (access_key, secret_key, session_token): (&str, &str, Option<&str>),
        bucket: impl Into<String>,
    ) -> Store {
        let credentials = aws_sdk_s3::config::Credentials::new(
            access_key,
            secret_key,
            session_token.map(str::to_string),
            None,
            "static",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(region.to_string()))
            .credentials_provider(credentials)
            .force_path_style(true);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        Store::new(aws_sdk_s3::Client::from_conf(config.build()), bucket)
    }

    /// This store, for a pod that has just started (a trainer, a predictor): a request that
    /// cannot connect or times out is tried up to 10 times with backoff (1 s doubling to 10 s,
    /// jittered; about half a minute in all). Its first connection may come before the
    /// cluster's NetworkPolicy engine admits the new pod's address (kube-router on the local
    /// node refused a trainer's first read in one CI run), or while the store restarts.
    /// Refusals by the store itself are not retried.
    pub fn for_new_pod(self) -> Store {
        let patient = aws_sdk_s3::config::retry::RetryConfig::standard()
            .with_max_attempts(10)
            .with_initial_backoff(std::time::Duration::from_secs(1))
            .with_max_backoff(std::time::Duration::from_secs(10));
        let config = self.client.config().to_builder().retry_config(patient).build();
        Store::new(aws_sdk_s3::Client::from_conf(config), self.bucket)
    }

    /// Streams an object of any bucket.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<ByteStream, StorageError> {
        let object = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(&format!("s3://{bucket}/{key}"), e))?;
        Ok(object.body)
    }

    /// The size of an object of any bucket, which must exist.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<u64, StorageError> {
        let head = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(&format!("s3://{bucket}/{key}"), e))?;
        Ok(u64::try_from(head.content_length().unwrap_or(0)).unwrap_or(0))
    }

    /// Reads a small object of this bucket whole.
    pub async fn read(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let body = self.get(&self.bucket.clone(), key).await?;
        let data = body
            .collect()
            .await
            .map_err(|e| StorageError::Unavailable(format!("s3://{}/{key}: {e}", self.bucket)))?;
        Ok(data.into_bytes().to_vec())
    }

    /// Creates the bucket unless it exists (a new object store, e.g. the Helm chart's bundled
    /// one). Returns whether it was created.
    pub async fn ensure_bucket(&self) -> Result<bool, StorageError> {
        let what = format!("s3://{}", self.bucket);
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(false),
            Err(error) => match StorageError::from_sdk(&what, error) {
                StorageError::NotFound(_) => {}
                other => return Err(other),
            },
        }
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(true),
            // Another replica created it first.
            Err(error)
                if matches!(
                    error.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(StorageError::from_sdk(&what, error)),
        }
    }

    /// Writes a small object whole.
    pub async fn put(&self, key: &str, data: Vec<u8>, content_type: &str) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(&format!("s3://{}/{key}", self.bucket), e))?;
        Ok(())
    }

    /// Keys under `prefix` in `bucket` (every page).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StorageError::from_sdk(&format!("s3://{bucket}/{prefix}"), e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        Ok(keys)
    }

    /// Copies an object of any bucket into this one.
    pub async fn copy(&self, bucket: &str, key: &str, to: &str) -> Result<(), StorageError> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(copy_source(bucket, key))
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(&format!("s3://{bucket}/{key}"), e))?;
        Ok(())
    }

    /// Aborts every multipart upload in progress under `prefix` of this bucket (what a writer
    /// that died mid-object left: invisible to listings, but holding the parts' space); returns
    /// how many.
    pub async fn abort_uploads(&self, prefix: &str) -> Result<usize, StorageError> {
        let what = format!("s3://{}/{prefix}", self.bucket);
        let mut aborted = 0;
        let (mut key_marker, mut upload_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_marker.take())
                .send()
                .await
                .map_err(|e| StorageError::from_sdk(&what, e))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| StorageError::from_sdk(&format!("s3://{}/{key}", self.bucket), e))?;
                aborted += 1;
            }
            if page.is_truncated() != Some(true) {
                return Ok(aborted);
            }
            key_marker = page.next_key_marker().map(String::from);
            upload_marker = page.next_upload_id_marker().map(String::from);
            if key_marker.is_none() && upload_marker.is_none() {
                return Ok(aborted);
            }
        }
    }

    /// Deletes every object under `prefix` of this bucket, and aborts the multipart uploads in
    /// progress there; returns how many objects.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StorageError> {
        self.abort_uploads(prefix).await?;
        let keys = self.list(&self.bucket.clone(), prefix).await?;
        self.delete_keys(&keys).await?;
        Ok(keys.len())
    }

    /// Deletes these objects of this bucket (one already gone is fine).
    pub async fn delete_keys(&self, keys: &[String]) -> Result<(), StorageError> {
        for batch in keys.chunks(1000) {
            let objects: Vec<ObjectIdentifier> = batch
                .iter()
                .filter_map(|key| ObjectIdentifier::builder().key(key).build().ok())
                .collect();
            let delete = aws_sdk_s3::types::Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::Unavailable(e.to_string()))?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| StorageError::from_sdk(&format!("s3://{}/{}", self.bucket, batch[0]), e))?;
        }
        Ok(())
    }

    /// A writer for a new object `key` of this bucket.
    pub fn writer(&self, key: &str, content_type: &str) -> ObjectWriter {
        ObjectWriter {
            store: self.clone(),
            key: key.into(),
            content_type: content_type.into(),
            upload_id: None,
            buffer: Vec::new(),
            in_flight: Vec::new(),
            parts: Vec::new(),
            written: 0,
        }
    }
}

type PartUpload = JoinHandle<Result<CompletedPart, StorageError>>;

/// Writes one object in parts as data arrives: at most [`PART_SIZE`] buffered plus two parts
/// uploading, whatever the object's size. Small objects go up in one `PutObject`. The object
/// exists only after [`ObjectWriter::finish`]; [`ObjectWriter::abort`] (or an error) leaves
/// nothing behind.
pub struct ObjectWriter {
    store: Store,
    key: String,
    content_type: String,
    upload_id: Option<String>,
    buffer: Vec<u8>,
    in_flight: Vec<PartUpload>,
    parts: Vec<CompletedPart>,
    written: u64,
}

impl ObjectWriter {
    fn what(&self) -> String {
        format!("s3://{}/{}", self.store.bucket, self.key)
    }

    /// Appends `data`. Each part is filled in a buffer of exactly [`PART_SIZE`], so no part
    /// holds more memory than its bytes.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StorageError> {
        self.written += data.len() as u64;
        while !data.is_empty() {
            if self.buffer.capacity() == 0 {
                self.buffer.reserve_exact(PART_SIZE);
            }
            let (now, rest) = data.split_at((PART_SIZE - self.buffer.len()).min(data.len()));
            self.buffer.extend_from_slice(now);
            data = rest;
            if self.buffer.len() == PART_SIZE {
                let part = std::mem::take(&mut self.buffer);
                self.upload_part(part).await?;
            }
        }
        Ok(())
    }

    async fn upload_part(&mut self, data: Vec<u8>) -> Result<(), StorageError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .store
                    .client
                    .create_multipart_upload()
                    .bucket(&self.store.bucket)
                    .key(&self.key)
                    .content_type(&self.content_type)
                    .send()
                    .await
                    .map_err(|e| StorageError::from_sdk(&self.what(), e))?;
                let id = created
                    .upload_id()
                    .ok_or_else(|| StorageError::Unavailable(format!("{}: no upload id", self.what())))?
                    .to_string();
                self.upload_id = Some(id.clone());
                id
            }
        };
        // Two parts in flight: the next one is being filled meanwhile.
        while self.in_flight.len() >= 2 {
            let oldest = self.in_flight.remove(0);
            self.parts.push(join(oldest).await?);
        }
        let number = (self.parts.len() + self.in_flight.len() + 1) as i32;
        let (client, bucket, key, what) = (
            self.store.client.clone(),
            self.store.bucket.clone(),
            self.key.clone(),
            self.what(),
        );
        self.in_flight.push(tokio::spawn(async move {
            let uploaded = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(Bytes::from(data)))
                // The SDK's CRC32 checksum guards the content; hashing every part again with
                // SHA-256 for the signature would cost more CPU than parsing it.
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| StorageError::from_sdk(&what, e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(uploaded.e_tag().map(str::to_string))
                .build())
        }));
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Completes the object.
    pub async fn finish(mut self) -> Result<u64, StorageError> {
        let result = self.complete().await;
        if result.is_err() {
            self.abort_upload().await;
        }
        result
    }

    async fn complete(&mut self) -> Result<u64, StorageError> {
        if self.upload_id.is_none() {
            let data = std::mem::take(&mut self.buffer);
            self.store.put(&self.key, data, &self.content_type).await?;
            return Ok(self.written);
        }
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer);
            self.upload_part(last).await?;
        }
        for upload in std::mem::take(&mut self.in_flight) {
            self.parts.push(join(upload).await?);
        }
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(std::mem::take(&mut self.parts)))
            .build();
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .multipart_upload(upload)
            .send()
            .await
            .map_err(|e| StorageError::from_sdk(&self.what(), e))?;
        self.upload_id = None;
        Ok(self.written)
    }

    /// Drops what was written.
    pub async fn abort(mut self) {
        self.abort_upload().await;
    }

    async fn abort_upload(&mut self) {
        for upload in self.in_flight.drain(..) {
            upload.abort();
        }
        if let Some(upload_id) = self.upload_id.take() {
            let aborted = self
                .store
                .client
                .abort_multipart_upload()
                .bucket(&self.store.bucket)
                .key(&self.key)
                .upload_id(upload_id)
                .send()
                .await;
            if let Err(error) = aborted {
                tracing::warn!(key = self.key, error = %StorageError::from_sdk(&self.what(), error), "aborting an upload");
            }
        }
    }
}

async fn join(upload: PartUpload) -> Result<CompletedPart, StorageError> {
    upload
        .await
        .map_err(|e| StorageError::Unavailable(format!("part upload: {e}")))?
}

/// `x-amz-copy-source` for `key` of `bucket`: the key URL-encoded (its `/` kept), so that a key
/// holding `?versionId=` names that key, not a version of another.
fn copy_source(bucket: &str, key: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEY: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!("{bucket}/{}", utf8_percent_encode(key, KEY))
}

#[cfg(test)]
mod tests {
    use super::copy_source;

    #[test]
    fn a_copy_source_names_the_key_and_nothing_else() {
        assert_eq!(copy_source("b", "raw/a b/x.csv"), "b/raw/a%20b/x.csv");
        assert_eq!(
            copy_source("b", "raw/x.csv?versionId=3"),
            "b/raw/x.csv%3FversionId%3D3"
        );
        assert_eq!(copy_source("b", "raw/%41&é"), "b/raw/%2541%26%C3%A9");
    }
}
