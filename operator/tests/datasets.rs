//! The Dataset controller on the local cluster with its real S3 server: commits ingested once
//! with the original's statistics, bad input rejected with its reason while earlier commits stay,
//! refused credentials waited out, a killed operator leaving no partial commit, deletion
//! removing the objects (and a write landing after it swept; a new Dataset of the same name kept).

use std::time::Duration;

use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
    runtime::wait::await_condition,
};
use miniautoml_api::{Dataset, DatasetStatus};
use miniautoml_data::{Store, layout};
use miniautoml_test_support::{
    LocalCluster, OperatorProcess, SWEPT_WITHIN, TestNamespace, WAIT, install_crds, repo_root,
};

fn start_operator(cluster: &LocalCluster, namespace: &str, secret_key: &str) -> OperatorProcess {
    OperatorProcess::start(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        namespace,
        secret_key,
    )
}

async fn put(store: &Store, key: &str, data: impl Into<Vec<u8>>) {
    store.put(key, data.into(), "text/csv").await.unwrap();
}

fn entry(bucket: &str, key: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"message": message, "source": {"bucket": bucket, "key": key}})
}

fn dataset(name: &str, commits: Vec<serde_json::Value>) -> Dataset {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {"type": "TextIntent", "description": "test", "commits": commits},
    }))
    .unwrap()
}

async fn append(api: &Api<Dataset>, name: &str, commits: Vec<serde_json::Value>) {
    let mut current = api.get(name).await.unwrap();
    let mut all = serde_json::to_value(&current.spec.commits)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    all.extend(commits);
    current.spec.commits = serde_json::from_value(serde_json::Value::Array(all)).unwrap();
    api.replace(name, &PostParams::default(), &current).await.unwrap();
}

/// Waits until `done` holds for the Dataset's status.
async fn wait_status(
    api: &Api<Dataset>,
    name: &str,
    what: &str,
    done: impl Fn(&DatasetStatus) -> bool,
) -> Dataset {
    let condition = await_condition(api.clone(), name, move |d: Option<&Dataset>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(&done)
    });
    tokio::time::timeout(WAIT * 2, condition)
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out waiting for {what}"))
        .unwrap()
        .unwrap()
}

fn condition<'a>(
    status: &'a DatasetStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn tweets(part: u32) -> Vec<u8> {
    std::fs::read(repo_root().join(format!("testdata/tweet_emotion/tweet_emotion_part{part}.csv"))).unwrap()
}

#[tokio::test]
async fn commits_are_ingested_once_and_bad_input_is_rejected_with_its_reason() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "datasets").await.unwrap();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let bucket = cluster.s3_bucket.clone();
    let raw = format!("raw/{}/", ns.name);
    put(&store, &format!("{raw}part1.csv"), tweets(1)).await;
    put(&store, &format!("{raw}part2.csv"), tweets(2)).await;
    let _operator = start_operator(cluster, &ns.name, &cluster.s3_secret_key);

    let api = Api::<Dataset>::namespaced(client.clone(), &ns.name);
    let part1 = entry(&bucket, &format!("{raw}part1.csv"), "part 1");
    api.create(&PostParams::default(), &dataset("tweets", vec![part1]))
        .await
        .unwrap();
    let first = wait_status(&api, "tweets", "commit 1", |s| s.commit_count == 1).await;
    let status = first.status.unwrap();
    let commit = &status.commits[0];
    assert_eq!((commit.id, commit.entry), (1, 0));
    assert_eq!(
        (commit.statistics.num_examples, commit.statistics.num_labels),
        (2963, 3)
    );
    assert_eq!(commit.path, layout::commit_prefix(&ns.name, "tweets", 1));
    assert!(
        first
            .metadata
            .finalizers
            .unwrap()
            .contains(&"miniautoml.io/dataset-storage".to_string())
    );
    let examples_before = store.read(&format!("{}examples.csv", commit.path)).await.unwrap();

    // Eight kinds of broken input, then a good commit: each broken entry is rejected with its
    // reason and takes no id; the good one becomes commit 2.
    let broken: Vec<(&str, Option<&[u8]>, &str)> = vec![
        (
            "columns.csv",
            Some(b"a,joy\nb,sad\nonly one column\n"),
            "line 3: expected 2 columns, found 1",
        ),
        (
            "extra.csv",
            Some(b"a,joy,extra\n"),
            "line 1: expected 2 columns, found 3",
        ),
        ("empty.csv", Some(b""), "the file is empty"),
        (
            "latin1.csv",
            Some(b"ok,joy\ncaf\xe9,joy\n"),
            "line 2: text is not UTF-8",
        ),
        ("blank-text.csv", Some(b"ok,joy\n   ,sad\n"), "line 2: empty text"),
        ("no-labels.csv", Some(b"ok,\n"), "line 1: no labels"),
        (
            "open-quote.csv",
            Some(b"ok,joy\n\"never closed,joy\n"),
            "line 2: unterminated quoted field",
        ),
        ("missing.csv", None, "does not exist or is not a source namespace"),
    ];
    let mut entries = Vec::new();
    for (file, content, _) in &broken {
        if let Some(content) = content {
            put(&store, &format!("{raw}{file}"), content.to_vec()).await;
        }
        entries.push(entry(&bucket, &format!("{raw}{file}"), file));
    }
    entries.push(
        serde_json::json!({"message": "no bucket", "source": {"bucket": "no-such-bucket", "key": "x.csv"}}),
    );
    entries.push(entry(&bucket, &format!("{raw}part2.csv"), "part 2"));
    append(&api, "tweets", entries).await;
    let done = wait_status(&api, "tweets", "every entry processed", |s| {
        s.commit_count == 2
            && s.rejected.len() == 9
            && condition(s, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    let status = done.status.unwrap();
    for (index, (file, _, reason)) in broken.iter().enumerate() {
        let rejected = status
            .rejected
            .iter()
            .find(|r| r.entry as usize == index + 1)
            .unwrap();
        assert!(rejected.message.contains(reason), "{file}: {}", rejected.message);
        assert!(
            rejected.message.contains(file),
            "the message names the file: {}",
            rejected.message
        );
    }
    assert!(status.rejected[8].message.contains("no-such-bucket"));
    let second = &status.commits[1];
    assert_eq!(
        (second.id, second.entry, second.statistics.num_examples),
        (2, 10, 294)
    );
    assert_eq!(status.total_examples, 3257);
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Ingested")
    );
    assert_eq!(
        store
            .read(&format!("{}examples.csv", status.commits[0].path))
            .await
            .unwrap(),
        examples_before,
        "commit 1 is intact"
    );
    assert!(
        store
            .list(&bucket, &layout::commit_prefix(&ns.name, "tweets", 3))
            .await
            .unwrap()
            .is_empty()
    );

    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    let rejected_events = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Rejected"))
        .filter_map(|e| e.note.clone())
        .collect::<Vec<_>>();
    assert!(
        rejected_events
            .iter()
            .any(|n| n.contains("line 3: expected 2 columns, found 1")),
        "{rejected_events:?}"
    );

    // Deleting the Dataset removes its objects.
    api.delete("tweets", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "tweets", |d: Option<&Dataset>| d.is_none()),
    )
    .await
    .expect("the Dataset goes once its objects are deleted")
    .unwrap();
    assert!(
        store
            .list(&bucket, &layout::dataset_prefix(&ns.name, "tweets"))
            .await
            .unwrap()
            .is_empty()
    );

    // A part a killed operator had sent lands after the clean-up: the tombstone it left has
    // the sweep delete it.
    let late = format!("{}examples.csv", layout::commit_prefix(&ns.name, "tweets", 1));
    put(&store, &late, tweets(1)).await;
    let left = cluster.keys_left(&late, SWEPT_WITHIN).await;
    assert!(left.is_empty(), "a late write was not swept: {left:?}");

    // A new Dataset of the same name owns the prefix: the sweep drops the old tombstone and
    // leaves the new commit alone.
    let tombstones = layout::tombstones_prefix(Some(&ns.name));
    assert_eq!(store.list(&bucket, &tombstones).await.unwrap().len(), 1);
    let part1 = entry(&bucket, &format!("{raw}part1.csv"), "part 1 again");
    api.create(&PostParams::default(), &dataset("tweets", vec![part1]))
        .await
        .unwrap();
    wait_status(&api, "tweets", "the new commit", |s| s.commits.len() == 1).await;
    let dropped = cluster.keys_left(&tombstones, SWEPT_WITHIN).await;
    assert!(dropped.is_empty(), "the old tombstone stays: {dropped:?}");
    let kept = store
        .list(&bucket, &layout::dataset_prefix(&ns.name, "tweets"))
        .await
        .unwrap();
    assert!(
        kept.iter().any(|k| k.ends_with("commits/1/examples.csv")),
        "{kept:?}"
    );
    api.delete("tweets", &DeleteParams::default()).await.unwrap();
    store.delete_prefix(&raw).await.unwrap();
}

#[tokio::test]
async fn refused_credentials_wait_and_a_killed_operator_leaves_no_partial_commit() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "ingest-crash")
        .await
        .unwrap();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let bucket = cluster.s3_bucket.clone();
    let raw = format!("raw/{}/", ns.name);
    // About 60 MB, so the ingestion takes long enough to be interrupted.
    let row =
        b"\"an utterance long enough to make the file big in few rows, forty-odd more chars\",\"a;b\"\n";
    let rows = (60 << 20) / row.len();
    put(&store, &format!("{raw}big.csv"), row.repeat(rows)).await;

    let api = Api::<Dataset>::namespaced(client.clone(), &ns.name);
    let mut wrong = start_operator(cluster, &ns.name, "not-the-secret");
    let mut big = dataset("big", vec![entry(&bucket, &format!("{raw}big.csv"), "big")]);
    big.spec.retain_policy = miniautoml_api::RetainPolicy::Retain;
    api.create(&PostParams::default(), &big).await.unwrap();
    let denied = wait_status(&api, "big", "StorageDenied", |s| {
        condition(s, "Ready").is_some_and(|c| c.reason == "StorageDenied")
    })
    .await;
    let status = denied.status.unwrap();
    assert!(
        condition(&status, "Ready")
            .unwrap()
            .message
            .contains("access denied")
    );
    assert_eq!(
        (status.commit_count, status.rejected.len()),
        (0, 0),
        "refused credentials reject nothing"
    );
    wrong.kill();

    let mut operator = start_operator(cluster, &ns.name, &cluster.s3_secret_key);
    wait_status(&api, "big", "Ingesting", |s| {
        condition(s, "Ready").is_some_and(|c| c.reason == "Ingesting")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    operator.kill();
    let status = api.get_status("big").await.unwrap().status.unwrap();
    assert_eq!(status.commit_count, 0, "killed mid-ingestion: no commit yet");
    let commit = layout::commit_prefix(&ns.name, "big", 1);
    assert!(
        !store
            .list(&bucket, &commit)
            .await
            .unwrap()
            .iter()
            .any(|k| k.ends_with("labels.csv")),
        "no partial commit"
    );

    let _restarted = start_operator(cluster, &ns.name, &cluster.s3_secret_key);
    let done = wait_status(&api, "big", "commit 1 after the restart", |s| s.commit_count == 1).await;
    let status = done.status.unwrap();
    assert_eq!(status.commits[0].statistics.num_examples, rows as u64);
    assert_eq!(status.commits.len(), 1);

    // Retain keeps the objects when the Dataset goes.
    api.delete("big", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "big", |d: Option<&Dataset>| d.is_none()),
    )
    .await
    .expect("deleted")
    .unwrap();
    assert!(
        !store.list(&bucket, &commit).await.unwrap().is_empty(),
        "retained"
    );
    store
        .delete_prefix(&layout::dataset_prefix(&ns.name, "big"))
        .await
        .unwrap();
    store.delete_prefix(&raw).await.unwrap();
}
