//! Ingestion and snapshots against the local cluster's real S3 server (s3s-fs).

use miniautoml_api::{DatasetType, ObjectSource};
use miniautoml_data::{IngestError, Store, build_snapshot, ingest_commit, layout, version_hash};
use miniautoml_test_support::{LocalCluster, repo_root, unique};

async fn upload(store: &Store, key: &str, data: Vec<u8>) -> ObjectSource {
    store.put(key, data, "text/csv").await.unwrap();
    ObjectSource {
        bucket: Some(store.bucket.clone()),
        key: Some(key.into()),
        ..Default::default()
    }
}

fn tweets(part: u32) -> Vec<u8> {
    std::fs::read(repo_root().join(format!("testdata/tweet_emotion/tweet_emotion_part{part}.csv"))).unwrap()
}

#[tokio::test]
async fn tweet_emotion_commits_merge_into_the_originals_snapshots() {
    let cluster = LocalCluster::shared();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let name = unique("tweets");
    let part1 = upload(&store, &format!("raw/{name}/part1.csv"), tweets(1)).await;
    let part2 = upload(&store, &format!("raw/{name}/part2.csv"), tweets(2)).await;

    let first = layout::commit_prefix("test", &name, 1);
    let written = ingest_commit(&store, DatasetType::TextIntent, &part1, &first)
        .await
        .unwrap();
    assert_eq!(
        (written.statistics.num_examples, written.statistics.num_labels),
        (2963, 3)
    );
    let second = layout::commit_prefix("test", &name, 2);
    let written = ingest_commit(&store, DatasetType::TextIntent, &part2, &second)
        .await
        .unwrap();
    assert_eq!(written.statistics.num_examples, 294);

    let labels = String::from_utf8(store.read(&format!("{first}labels.csv")).await.unwrap()).unwrap();
    assert_eq!(labels.lines().count(), 3);
    assert!(
        labels.starts_with("\"1\",\"anger\"\n"),
        "ids in order of first appearance: {labels}"
    );

    assert_eq!(version_hash(&[1]), "hashAg==");
    let only_first = layout::snapshot_prefix("test", &name, "hashAg==");
    let snapshot = build_snapshot(
        &store,
        DatasetType::TextIntent,
        std::slice::from_ref(&first),
        &only_first,
    )
    .await
    .unwrap();
    assert_eq!(
        (snapshot.statistics.num_examples, snapshot.statistics.num_labels),
        (2963, 3)
    );

    let both = layout::snapshot_prefix("test", &name, &version_hash(&[1, 2]));
    assert!(both.ends_with("/snapshots/hashBg==/"));
    let snapshot = build_snapshot(&store, DatasetType::TextIntent, &[first.clone(), second], &both)
        .await
        .unwrap();
    assert_eq!(
        (snapshot.statistics.num_examples, snapshot.statistics.num_labels),
        (3257, 4)
    );
    assert_eq!(snapshot.parts, ["examples.csv", "labels.csv"]);
    let examples = store.read(&format!("{both}examples.csv")).await.unwrap();
    let rows = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(examples.as_slice())
        .records()
        .count();
    assert_eq!(rows, 3257);

    assert!(
        store
            .delete_prefix(&layout::dataset_prefix("test", &name))
            .await
            .unwrap()
            >= 8
    );
    assert!(
        store
            .list(&store.bucket, &layout::dataset_prefix("test", &name))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn large_files_upload_in_parts_and_bad_ones_leave_nothing() {
    let cluster = LocalCluster::shared();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let name = unique("large");
    // About 20 MB: three multipart parts.
    let row = b"\"a moderately long utterance to classify, repeated for size\",\"intent_a;intent_b\"\n";
    let mut data = Vec::with_capacity(20 << 20);
    while data.len() < 20 << 20 {
        data.extend_from_slice(row);
    }
    let rows = data.len() / row.len();
    let source = upload(&store, &format!("raw/{name}/big.csv"), data.clone()).await;
    let prefix = layout::commit_prefix("test", &name, 1);
    let written = ingest_commit(&store, DatasetType::TextIntent, &source, &prefix)
        .await
        .unwrap();
    assert_eq!(
        (written.statistics.num_examples, written.statistics.num_labels),
        (rows as u64, 2)
    );
    let stored = store.read(&format!("{prefix}examples.csv")).await.unwrap();
    assert_eq!(
        stored.len(),
        rows * "\"a moderately long utterance to classify, repeated for size\",\"1;2\"\n".len()
    );

    // The same data broken at the very end: rejected with the line, and no object written.
    data.extend_from_slice(b"no second column\n");
    let broken = upload(&store, &format!("raw/{name}/broken.csv"), data).await;
    let prefix = layout::commit_prefix("test", &name, 2);
    let error = ingest_commit(&store, DatasetType::TextIntent, &broken, &prefix)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        IngestError::Rejected(format!(
            "s3://{}/raw/{name}/broken.csv: line {}: expected 2 columns, found 1",
            store.bucket,
            rows + 1
        ))
    );
    assert!(
        store.list(&store.bucket, &prefix).await.unwrap().is_empty(),
        "nothing left behind"
    );

    // An attempt cut short after examples.csv (the store gone before labels.csv) leaves a
    // finished object; the retry starts from an empty prefix and leaves only its own three.
    let prefix = layout::commit_prefix("test", &name, 3);
    store
        .put(&format!("{prefix}examples.csv"), b"stale".to_vec(), "text/csv")
        .await
        .unwrap();
    store
        .put(&format!("{prefix}part-0"), b"stale".to_vec(), "text/csv")
        .await
        .unwrap();
    ingest_commit(&store, DatasetType::TextIntent, &source, &prefix)
        .await
        .unwrap();
    let mut left = store.list(&store.bucket, &prefix).await.unwrap();
    left.sort();
    assert_eq!(
        left,
        ["examples.csv", "labels.csv", "statistics.json"].map(|file| format!("{prefix}{file}"))
    );
    assert_eq!(
        store.read(&format!("{prefix}examples.csv")).await.unwrap(),
        stored,
        "the retry's rows, not the stale object"
    );
    store.delete_prefix(&format!("raw/{name}/")).await.unwrap();
    store
        .delete_prefix(&layout::dataset_prefix("test", &name))
        .await
        .unwrap();
}

#[tokio::test]
async fn missing_sources_are_rejected_and_refused_credentials_are_not() {
    let cluster = LocalCluster::shared();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let name = unique("missing");
    let prefix = layout::commit_prefix("test", &name, 1);
    let missing = ObjectSource {
        bucket: Some(store.bucket.clone()),
        key: Some(format!("raw/{name}/nothing-here.csv")),
        ..Default::default()
    };
    let error = ingest_commit(&store, DatasetType::TextIntent, &missing, &prefix)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, IngestError::Missing(m) if m.contains("not found")),
        "{error:?}"
    );
    let no_bucket = ObjectSource {
        bucket: Some("no-such-bucket".into()),
        key: Some("x.csv".into()),
        ..Default::default()
    };
    let error = ingest_commit(&store, DatasetType::TextIntent, &no_bucket, &prefix)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, IngestError::Missing(m) if m.contains("not found")),
        "{error:?}"
    );

    let source = upload(&store, &format!("raw/{name}/ok.csv"), b"hi,greeting\n".to_vec()).await;
    let forged = Store::new(
        cluster.s3_with(&cluster.s3_access_key, "wrong"),
        &cluster.s3_bucket,
    );
    let error = ingest_commit(&forged, DatasetType::TextIntent, &source, &prefix)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, IngestError::Denied(m) if m.contains("access denied")),
        "{error:?}"
    );
    store.delete_prefix(&format!("raw/{name}/")).await.unwrap();
}

#[tokio::test]
async fn generic_commits_copy_every_object_under_a_prefix() {
    let cluster = LocalCluster::shared();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let name = unique("generic");
    for file in ["a.bin", "b.bin", "c.bin"] {
        upload(&store, &format!("raw/{name}/{file}"), file.as_bytes().to_vec()).await;
    }
    let source = ObjectSource {
        bucket: Some(store.bucket.clone()),
        prefix: Some(format!("raw/{name}/")),
        ..Default::default()
    };
    let prefix = layout::commit_prefix("test", &name, 1);
    let written = ingest_commit(&store, DatasetType::Generic, &source, &prefix)
        .await
        .unwrap();
    assert_eq!(written.statistics.num_examples, 3);
    assert_eq!(store.read(&format!("{prefix}part-1")).await.unwrap(), b"b.bin");
    let snapshot_prefix = layout::snapshot_prefix("test", &name, "hashAg==");
    let snapshot = build_snapshot(&store, DatasetType::Generic, &[prefix], &snapshot_prefix)
        .await
        .unwrap();
    assert_eq!(snapshot.parts, ["part-0", "part-1", "part-2"]);
    store.delete_prefix(&format!("raw/{name}/")).await.unwrap();
    store
        .delete_prefix(&layout::dataset_prefix("test", &name))
        .await
        .unwrap();
}

/// A writer that dies mid-object (its process killed) leaves a multipart upload nobody lists;
/// the next attempt at the same prefix, and deleting the prefix, abort it.
#[tokio::test]
async fn uploads_a_dead_writer_left_are_aborted() {
    let cluster = LocalCluster::shared();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let name = unique("dead-writer");
    let prefix = layout::commit_prefix("test", &name, 1);
    let uploads = |prefix: String| {
        let s3 = cluster.s3();
        let bucket = cluster.s3_bucket.clone();
        async move {
            let listed = s3
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .send()
                .await
                .unwrap();
            listed.uploads().len()
        }
    };
    // More than a part: the upload has begun. Then the writer is gone without a word.
    let abandon = || async {
        let mut writer = store.writer(&format!("{prefix}examples.csv"), "text/csv");
        writer
            .write(&vec![b'x'; miniautoml_data::store::PART_SIZE + 1])
            .await
            .unwrap();
        std::mem::forget(writer);
    };
    for attempt in 0..2 {
        abandon().await;
        assert_eq!(uploads(prefix.clone()).await, attempt + 1);
    }
    assert_eq!(store.abort_uploads(&prefix).await.unwrap(), 2);
    assert_eq!(uploads(prefix.clone()).await, 0);

    // Deleting a prefix aborts what is in progress there too.
    abandon().await;
    assert_eq!(uploads(prefix.clone()).await, 1);
    store
        .delete_prefix(&layout::dataset_prefix("test", &name))
        .await
        .unwrap();
    assert_eq!(uploads(prefix).await, 0);
}

/// A listener on a free loopback port that, after `closed_for`, starts passing connections to
/// `target` (the store): a new pod's first seconds, before the network admits it.
async fn opens_after(closed_for: std::time::Duration, target: std::net::SocketAddr) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tokio::spawn(async move {
        tokio::time::sleep(closed_for).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        // Bounded: the test makes a handful of connections.
        for _ in 0..16 {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_new_pods_store_waits_for_the_network_a_plain_one_does_not() {
    let cluster = LocalCluster::shared();
    let key = format!("raw/{}/hello.txt", unique("patient"));
    Store::new(cluster.s3(), &cluster.s3_bucket)
        .put(&key, b"hello".to_vec(), "text/plain")
        .await
        .unwrap();
    let target: std::net::SocketAddr = cluster
        .s3_endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let store = |endpoint: &str, patient: bool| {
        let store = Store::with_credentials(
            Some(endpoint),
            "us-east-1",
            &cluster.s3_access_key,
            &cluster.s3_secret_key,
            cluster.s3_bucket.clone(),
        );
        if patient { store.for_new_pod() } else { store }
    };
    let closed_for = std::time::Duration::from_secs(6);
    // Refused for its first 6 s: a plain store gives up, a new pod's store reads the object.
    let plain = opens_after(closed_for, target).await;
    let refused = store(&plain, false).read(&key).await;
    assert!(refused.is_err(), "a plain store waited: {refused:?}");
    let patient = opens_after(closed_for, target).await;
    let started = std::time::Instant::now();
    let read = store(&patient, true)
        .read(&key)
        .await
        .expect("a new pod's store waits");
    assert_eq!(read, b"hello");
    assert!(started.elapsed() >= closed_for, "{:?}", started.elapsed());
}
