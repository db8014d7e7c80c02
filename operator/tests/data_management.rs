//! `data_management.DataManagementService` through a real gRPC client against the operator
//! binary on the local cluster: the original's workflow, snapshot hashes and tag filters, error
//! codes, and numeric ids that survive a restart.

use std::time::Duration;

use miniautoml_data::Store;
use miniautoml_proto::data_management::{
    self as pb, data_management_service_client::DataManagementServiceClient,
};
use miniautoml_test_support::{LocalCluster, OperatorProcess, TestNamespace, install_crds, repo_root};
use tonic::{Code, transport::Channel};

async fn start(
    cluster: &LocalCluster,
    namespace: &str,
) -> (OperatorProcess, DataManagementServiceClient<Channel>) {
    let operator = OperatorProcess::start(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        namespace,
        &cluster.s3_secret_key,
    );
    let client = DataManagementServiceClient::new(operator.grpc_channel().await);
    (operator, client)
}

fn tag(key: &str, value: &str) -> pb::Tag {
    pb::Tag {
        tag_key: key.into(),
        tag_value: value.into(),
    }
}

/// Prepares a snapshot and polls until it is no longer RUNNING.
async fn snapshot(
    client: &mut DataManagementServiceClient<Channel>,
    id: &str,
    commit: &str,
    tags: Vec<pb::Tag>,
) -> (String, pb::VersionedSnapshot) {
    let version = client
        .prepare_training_dataset(pb::DatasetQuery {
            dataset_id: id.into(),
            commit_id: commit.into(),
            tags,
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..300 {
        let fetched = client
            .fetch_training_dataset(pb::VersionQuery {
                dataset_id: id.into(),
                version_hash: version.version_hash.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if fetched.state != pb::SnapshotState::Running as i32 {
            return (version.version_hash, fetched);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("snapshot {} stayed RUNNING", version.version_hash);
}

#[tokio::test]
async fn the_original_dataset_workflow_over_grpc() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "grpc-data").await.unwrap();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let raw = format!("raw/{}/", ns.name);
    for part in [1, 2] {
        let data =
            std::fs::read(repo_root().join(format!("testdata/tweet_emotion/tweet_emotion_part{part}.csv")))
                .unwrap();
        store
            .put(&format!("{raw}part{part}.csv"), data, "text/csv")
            .await
            .unwrap();
    }
    store
        .put(
            &format!("{raw}broken.csv"),
            b"fine,joy\nbroken\n".to_vec(),
            "text/csv",
        )
        .await
        .unwrap();
    let (operator, mut grpc) = start(cluster, &ns.name).await;

    let created = grpc
        .create_dataset(pb::CreateDatasetRequest {
            name: "tweets".into(),
            description: "tweet emotions".into(),
            dataset_type: pb::DatasetType::TextIntent as i32,
            bucket: cluster.s3_bucket.clone(),
            path: format!("{raw}part1.csv"),
            tags: vec![tag("split", "train"), tag("part", "1")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.dataset_id, "1");
    assert_eq!(created.commits.len(), 1);
    assert_eq!(created.commits[0].statistics["numExamples"], "2963");
    assert_eq!(created.commits[0].statistics["numLabels"], "3");
    let id = created.dataset_id.clone();

    let updated = grpc
        .update_dataset(pb::CreateCommitRequest {
            dataset_id: id.clone(),
            commit_message: "part 2".into(),
            bucket: cluster.s3_bucket.clone(),
            path: format!("{raw}part2.csv"),
            tags: vec![tag("split", "train"), tag("part", "2")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.commits.len(), 2);
    assert_eq!(updated.commits[1].commit_id, "2");

    let (hash, first) = snapshot(&mut grpc, &id, "1", vec![]).await;
    assert_eq!(hash, "hashAg==");
    assert_eq!(first.state, pb::SnapshotState::Ready as i32);
    assert_eq!(first.statistics["numExamples"], "2963");
    let (hash, both) = snapshot(&mut grpc, &id, "", vec![]).await;
    assert_eq!(hash, "hashBg==");
    assert_eq!(
        (
            both.statistics["numExamples"].as_str(),
            both.statistics["numLabels"].as_str()
        ),
        ("3257", "4")
    );
    let names: Vec<&str> = both.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["examples.csv", "labels.csv"]);
    let examples = store.read(&both.parts[0].path).await.unwrap();
    assert!(examples.iter().filter(|&&b| b == b'\n').count() >= 3257);
    // Asking again for a Ready hash returns it as it is.
    let (_, again) = snapshot(&mut grpc, &id, "", vec![]).await;
    assert_eq!(again, both);

    // Tag filters: every requested tag must match; ids up to commit_id.
    assert_eq!(
        snapshot(&mut grpc, &id, "", vec![tag("part", "2")]).await.0,
        "hashBA=="
    );
    assert_eq!(
        snapshot(&mut grpc, &id, "", vec![tag("split", "train")]).await.0,
        "hashBg=="
    );
    assert_eq!(
        snapshot(&mut grpc, &id, "", vec![tag("split", "train"), tag("part", "1")])
            .await
            .0,
        "hashAg=="
    );
    assert_eq!(
        snapshot(&mut grpc, &id, "1", vec![tag("part", "2")]).await.0,
        "hash"
    );
    assert_eq!(
        snapshot(&mut grpc, &id, "", vec![tag("part", "3")]).await.0,
        "hash"
    );

    // Errors carry their codes and messages.
    let code = |result: Result<tonic::Response<pb::DatasetSummary>, tonic::Status>| {
        let status = result.unwrap_err();
        (status.code(), status.message().to_string())
    };
    let (c, m) = code(
        grpc.get_dataset_summary(pb::DatasetPointer {
            dataset_id: "999".into(),
        })
        .await,
    );
    assert_eq!((c, m.as_str()), (Code::NotFound, "dataset 999 not found"));
    let (c, _) = code(
        grpc.get_dataset_summary(pb::DatasetPointer {
            dataset_id: "abc".into(),
        })
        .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    let unknown_commit = grpc
        .prepare_training_dataset(pb::DatasetQuery {
            dataset_id: id.clone(),
            commit_id: "7".into(),
            tags: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_commit.code(), Code::NotFound);
    let unknown_hash = grpc
        .fetch_training_dataset(pb::VersionQuery {
            dataset_id: id.clone(),
            version_hash: "hashZZ==".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_hash.code(), Code::NotFound);
    let request = |name: &str, bucket: &str| pb::CreateDatasetRequest {
        name: name.into(),
        description: String::new(),
        dataset_type: pb::DatasetType::TextIntent as i32,
        bucket: bucket.into(),
        path: format!("{raw}part1.csv"),
        tags: vec![],
    };
    let (c, m) = code(grpc.create_dataset(request("no-bucket", "")).await);
    assert_eq!(
        (c, m.as_str()),
        (Code::InvalidArgument, "\"bucket\" is required.")
    );
    // Any name the original accepted, kept verbatim; the object gets a name derived from it.
    let too_long = "é".repeat(127);
    let (c, m) = code(grpc.create_dataset(request(&too_long, &cluster.s3_bucket)).await);
    assert_eq!(
        (c, m.as_str()),
        (
            Code::InvalidArgument,
            "name is 254 bytes long; at most 253 bytes are accepted"
        )
    );
    let longest = format!("Tweet Emotion v2.1 (copy) {}", "情".repeat(75));
    assert_eq!(longest.len(), 251);
    let datasets: kube::Api<miniautoml_api::Dataset> = kube::Api::namespaced(client.clone(), &ns.name);
    let mut extra = Vec::new();
    for (name, object) in [
        ("tweet_emotion", "tweet-emotion"),
        ("tweet_emotion", "tweet-emotion-3"),
        ("tweets", "tweets-4"),
        (longest.as_str(), "tweet-emotion-v2-1-copy"),
        ("", "dataset-6"),
    ] {
        let created = grpc
            .create_dataset(request(name, &cluster.s3_bucket))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.name, name);
        let by_id = datasets
            .list(
                &kube::api::ListParams::default()
                    .labels(&format!("miniautoml.io/dataset-id={}", created.dataset_id)),
            )
            .await
            .unwrap();
        let names: Vec<String> = by_id.items.iter().map(kube::ResourceExt::name_any).collect();
        assert_eq!(names, [object], "{name:?}");
        let summary = grpc
            .get_dataset_summary(pb::DatasetPointer {
                dataset_id: created.dataset_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(summary.name, name);
        extra.push(created.dataset_id);
    }
    assert_eq!(extra, ["2", "3", "4", "5", "6"]);
    let (c, m) = code(
        grpc.update_dataset(pb::CreateCommitRequest {
            dataset_id: id.clone(),
            commit_message: "broken".into(),
            bucket: cluster.s3_bucket.clone(),
            path: format!("{raw}broken.csv"),
            tags: vec![],
        })
        .await,
    );
    assert_eq!(c, Code::FailedPrecondition);
    assert!(m.contains("line 2: expected 2 columns, found 1"), "{m}");
    let summary = grpc
        .get_dataset_summary(pb::DatasetPointer {
            dataset_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.commits.len(), 2, "earlier commits stay");

    // Ids are durable: a restarted operator serves the same dataset under the same id. And a
    // read gives no id and writes no label: the ids as the Datasets hold them are the same
    // before and after ListDatasets and GetDatasetSummary.
    let datasets = kube::Api::<miniautoml_api::Dataset>::namespaced(client.clone(), &ns.name);
    let ids = || async {
        let list = datasets.list(&Default::default()).await.unwrap();
        list.items
            .iter()
            .map(|d| {
                let label = d.metadata.labels.clone().unwrap_or_default();
                let label = label.get(miniautoml_api::labels::DATASET_ID_LABEL).cloned();
                (d.metadata.name.clone().unwrap_or_default(), d.dataset_id(), label)
            })
            .collect::<Vec<_>>()
    };
    let before_reads = ids().await;
    drop(operator);
    let (_operator, mut grpc) = start(cluster, &ns.name).await;
    let listed: Vec<String> = {
        let mut stream = grpc
            .list_datasets(pb::ListQueryOptions { limit: 0, index: 0 })
            .await
            .unwrap()
            .into_inner();
        let mut ids = Vec::new();
        while let Some(pointer) = stream.message().await.unwrap() {
            ids.push(pointer.dataset_id);
        }
        ids
    };
    assert_eq!(listed, ["1", "2", "3", "4", "5", "6"]);
    let summary = grpc
        .get_dataset_summary(pb::DatasetPointer {
            dataset_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.name.as_str(), summary.commits.len()), ("tweets", 2));
    assert_eq!(ids().await, before_reads, "reads changed no id and no label");

    grpc.delete_dataset(pb::DatasetPointer {
        dataset_id: id.clone(),
    })
    .await
    .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        let result = grpc
            .get_dataset_summary(pb::DatasetPointer {
                dataset_id: id.clone(),
            })
            .await;
        if result.as_ref().is_err_and(|s| s.code() == Code::NotFound) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "deleted");
    store.delete_prefix(&raw).await.unwrap();
}

#[tokio::test]
async fn a_failed_snapshot_is_built_again_when_asked_again() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "grpc-retry").await.unwrap();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let raw = format!("raw/{}/", ns.name);
    store
        .put(
            &format!("{raw}small.csv"),
            b"hello,greeting\nbye,farewell\n".to_vec(),
            "text/csv",
        )
        .await
        .unwrap();
    let (_operator, mut grpc) = start(cluster, &ns.name).await;
    let created = grpc
        .create_dataset(pb::CreateDatasetRequest {
            name: "small".into(),
            description: String::new(),
            dataset_type: pb::DatasetType::TextIntent as i32,
            bucket: cluster.s3_bucket.clone(),
            path: format!("{raw}small.csv"),
            tags: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let id = created.dataset_id;
    let labels_key = format!("{}labels.csv", created.commits[0].path);
    let labels = store.read(&labels_key).await.unwrap();

    // With a commit's file gone the build fails, and says why.
    store.delete_prefix(&labels_key).await.unwrap();
    let (hash, failed) = snapshot(&mut grpc, &id, "", vec![]).await;
    assert_eq!(hash, "hashAg==");
    assert_eq!(failed.state, pb::SnapshotState::Failed as i32);
    assert!(
        failed.statistics["message"].contains("not found"),
        "{:?}",
        failed.statistics
    );

    // Asked again once the file is back, it is built again and ends Ready.
    store.put(&labels_key, labels, "text/csv").await.unwrap();
    let (_, ready) = snapshot(&mut grpc, &id, "", vec![]).await;
    assert_eq!(ready.state, pb::SnapshotState::Ready as i32);
    assert_eq!(ready.statistics["numExamples"], "2");
    store.delete_prefix(&raw).await.unwrap();
}
