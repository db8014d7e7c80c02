//! The store's own pace for the bytes an ingestion moves, the baseline of `hack/bench-ingest.sh`:
//! reads one object in ranged GETs and writes the same bytes back as a new object by multipart
//! upload, with nothing in between (no parsing), then deletes the copy.
//!
//!     S3_ENDPOINT=… AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… S3_BUCKET=… \
//!       cargo run --release -p miniautoml-data --example raw_copy -- SOURCE_KEY COPY_KEY
//!
//! Prints `bytes seconds peak_rss_kib`. Ranges of 8 MiB, each uploaded as one part, four reads
//! and four uploads in flight: a plain, well-tuned copy with the same SDK, not our code path.

use std::time::Instant;

use aws_sdk_s3::{
    Client,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use futures::{StreamExt, TryStreamExt};

const RANGE: u64 = 8 << 20;
const IN_FLIGHT: usize = 4;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    let (Some(source), Some(copy)) = (args.next(), args.next()) else {
        return Err("usage: raw_copy SOURCE_KEY COPY_KEY".into());
    };
    let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let bucket = env("S3_BUCKET")?;
    // The operator's own client settings (static keys, path-style addressing).
    let client = miniautoml_data::Store::with_credentials(
        Some(&env("S3_ENDPOINT")?),
        &std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        &env("AWS_ACCESS_KEY_ID")?,
        &env("AWS_SECRET_ACCESS_KEY")?,
        bucket.as_str(),
    )
    .client;

    let start = Instant::now();
    let bytes = copy_object(&client, &bucket, &source, &copy).await?;
    let seconds = start.elapsed().as_secs_f64();
    client.delete_object().bucket(&bucket).key(&copy).send().await?;
    println!("{bytes} {seconds:.3} {}", peak_rss_kib());
    Ok(())
}

async fn copy_object(client: &Client, bucket: &str, source: &str, copy: &str) -> Result<u64, Failure> {
    let head = client
        .head_object()
        .bucket(bucket)
        .key(source)
        .send()
        .await
        .map_err(|e| miniautoml_data::StorageError::from_sdk(&format!("s3://{bucket}/{source}"), e))?;
    let length = u64::try_from(head.content_length().unwrap_or(0))?;
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(copy)
        .send()
        .await?;
    let id = upload.upload_id().ok_or("no upload id")?.to_string();
    let reads = futures::stream::iter((0..length).step_by(RANGE as usize))
        .map(|start| async move {
            let end = (start + RANGE).min(length) - 1;
            let part = client
                .get_object()
                .bucket(bucket)
                .key(source)
                .range(format!("bytes={start}-{end}"))
                .send()
                .await?;
            Ok::<_, Failure>(part.body.collect().await?.into_bytes())
        })
        .buffered(IN_FLIGHT);
    let id_ref = &id;
    let parts: Vec<CompletedPart> = reads
        .enumerate()
        .map(|(index, data)| async move {
            let number = i32::try_from(index + 1)?;
            let uploaded = client
                .upload_part()
                .bucket(bucket)
                .key(copy)
                .upload_id(id_ref)
                .part_number(number)
                .body(ByteStream::from(data?))
                .customize()
                .disable_payload_signing()
                .send()
                .await?;
            Ok::<_, Failure>(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .build(),
            )
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(copy)
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await?;
    Ok(length)
}

/// This process's peak resident size (VmHWM), in KiB; 0 where /proc does not say.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
