//! Bad requests to all four gRPC services, generated rather than picked one by one: every id and
//! name field empty, blank, 1 MiB long, a path, with NUL or non-ASCII text, a negative, zero,
//! overflowing or unknown number; every number negative, zero and at its limits; malformed
//! protobuf (invalid UTF-8 in a string, wrong wire types, a truncated message) and a 64 MiB
//! message for every method. Against the operator binary on the local cluster, with a Dataset
//! of two commits and a snapshot already there.
//!
//! Each request must end within 30 s with a gRPC status that is not INTERNAL or UNKNOWN and has
//! a message; afterwards the operator still serves, and the namespace's resources and stored
//! objects are exactly what they were. The counts are printed.

use std::{collections::BTreeMap, time::Duration};

use bytes::{Buf, BufMut};
use futures::future::BoxFuture;
use kube::{Api, api::ListParams};
use miniautoml_api::{Dataset, ModelDeployment, TrainingJob};
use miniautoml_proto::{
    data_management::{self as data, data_management_service_client::DataManagementServiceClient},
    metadata_store::{self as metadata, metadata_store_service_client::MetadataStoreServiceClient},
    prediction::{self as prediction, prediction_service_client::PredictionServiceClient},
    training::{self as training, training_service_client::TrainingServiceClient},
};
use miniautoml_test_support::{LocalCluster, harness, repo_root};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};

/// Longest a refused request may take.
const HANG: Duration = Duration::from_secs(30);

/// Text put in every id and name field.
fn strings() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("blank", " \t ".into()),
        ("1 MiB", "a".repeat(1 << 20)),
        ("a path", "../../etc/passwd".into()),
        ("a slash", "a/b".into()),
        ("NUL", "a\0b".into()),
        ("non-ASCII", "数据🙂".into()),
        ("negative", "-1".into()),
        ("zero", "0".into()),
        ("overflowing", "99999999999999999999999".into()),
        ("i64::MAX", "9223372036854775807".into()),
        ("unknown", "424242".into()),
        ("a selector", "1,app!=x".into()),
        ("an unknown hash", "hashZZZZ==".into()),
    ]
}

/// Numbers put in every number field.
const NUMBERS: [i32; 5] = [-1, 0, i32::MIN, i32::MAX, 424_242];

/// A request that must be refused, or one that may also succeed without changing anything.
struct Case {
    label: String,
    call: BoxFuture<'static, Result<(), Status>>,
    may_succeed: bool,
}

fn refused(label: String, call: impl Future<Output = Result<(), Status>> + Send + 'static) -> Case {
    Case {
        label,
        call: Box::pin(call),
        may_succeed: false,
    }
}

/// Sends raw bytes as a method's request message, and takes any answer as bytes.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// `bytes` as the request of the method at `path`.
async fn raw(channel: Channel, path: &'static str, bytes: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(tonic::Request::new(bytes), path.parse().unwrap(), RawCodec)
        .await
        .map(|_| ())
}

/// A length-delimited protobuf field.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    let mut len = bytes.len();
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(bytes);
    out
}

/// Every method the operator serves with the number of a string field of its request (or of the
/// message in its first field, for Train and LogEpoch).
const METHODS: [(&str, u8); 16] = [
    ("/data_management.DataManagementService/GetDatasetSummary", 1),
    ("/data_management.DataManagementService/ListDatasets", 1),
    ("/data_management.DataManagementService/CreateDataset", 1),
    ("/data_management.DataManagementService/UpdateDataset", 1),
    ("/data_management.DataManagementService/PrepareTrainingDataset", 1),
    ("/data_management.DataManagementService/FetchTrainingDataset", 2),
    ("/data_management.DataManagementService/DeleteDataset", 1),
    ("/training.TrainingService/Train", 1),
    ("/training.TrainingService/GetTrainingStatus", 1),
    ("/metadata_store.MetadataStoreService/LogRunStart", 2),
    ("/metadata_store.MetadataStoreService/LogEpoch", 1),
    ("/metadata_store.MetadataStoreService/LogRunEnd", 1),
    ("/metadata_store.MetadataStoreService/GetRunStatus", 5),
    ("/metadata_store.MetadataStoreService/CreateArtifact", 2),
    ("/metadata_store.MetadataStoreService/GetArtifact", 3),
    ("/prediction.PredictionService/Predict", 3),
];

/// Malformed messages for every method: invalid UTF-8 where a string goes (inside the nested
/// message for Train and LogEpoch), a truncated field, a field of the wrong wire type, and a
/// 64 MiB message (which must be RESOURCE_EXHAUSTED, gRPC's code for a message over the limit).
fn malformed(channel: &Channel) -> Vec<Case> {
    let mut cases = Vec::new();
    for (path, number) in METHODS {
        let invalid_utf8 = match path {
            "/training.TrainingService/Train" | "/metadata_store.MetadataStoreService/LogEpoch" => {
                field(1, &field(1, &[0xff, 0xfe, b'a']))
            }
            _ => field(number, &[0xff, 0xfe, b'a']),
        };
        let inputs = [
            ("invalid UTF-8", invalid_utf8),
            ("truncated", vec![(number << 3) | 2, 0x05, b'a']),
            ("a group where a string goes", vec![(number << 3) | 3]),
            ("64 MiB", field(number, &vec![b'a'; 64 << 20])),
        ];
        for (what, bytes) in inputs {
            cases.push(refused(
                format!("{path}: {what}"),
                raw(channel.clone(), path, bytes),
            ));
        }
    }
    cases
}

/// Typed requests with bad fields, to every method, around the existing dataset `id`.
fn typed(channel: &Channel, bucket: &str, raw_prefix: &str, id: &str) -> Vec<Case> {
    let data = DataManagementServiceClient::new(channel.clone());
    let training = TrainingServiceClient::new(channel.clone());
    let metadata = MetadataStoreServiceClient::new(channel.clone());
    let prediction = PredictionServiceClient::new(channel.clone());
    let missing_file = format!("{raw_prefix}missing.csv");
    let part = format!("{raw_prefix}part1.csv");
    let mut cases = Vec::new();
    macro_rules! case {
        ($label:expr, $client:ident . $method:ident ($request:expr)) => {{
            let mut client = $client.clone();
            let request = $request;
            cases.push(refused($label, async move {
                client.$method(request).await.map(|_| ())
            }));
        }};
    }
    for (what, s) in strings() {
        let s = &s;
        case!(
            format!("GetDatasetSummary id {what}"),
            data.get_dataset_summary(data::DatasetPointer {
                dataset_id: s.clone()
            })
        );
        case!(
            format!("DeleteDataset id {what}"),
            data.delete_dataset(data::DatasetPointer {
                dataset_id: s.clone()
            })
        );
        case!(
            format!("CreateDataset name {what}, a missing file"),
            data.create_dataset(data::CreateDatasetRequest {
                name: s.clone(),
                dataset_type: data::DatasetType::TextIntent as i32,
                bucket: bucket.into(),
                path: missing_file.clone(),
                ..Default::default()
            })
        );
        case!(
            format!("CreateDataset path {what}"),
            data.create_dataset(data::CreateDatasetRequest {
                name: "tweets-bad".into(),
                dataset_type: data::DatasetType::TextIntent as i32,
                bucket: bucket.into(),
                path: s.clone(),
                ..Default::default()
            })
        );
        case!(
            format!("CreateDataset bucket {what}"),
            data.create_dataset(data::CreateDatasetRequest {
                name: "tweets-bad".into(),
                dataset_type: data::DatasetType::TextIntent as i32,
                bucket: s.clone(),
                path: part.clone(),
                ..Default::default()
            })
        );
        case!(
            format!("UpdateDataset id {what}"),
            data.update_dataset(data::CreateCommitRequest {
                dataset_id: s.clone(),
                bucket: bucket.into(),
                path: part.clone(),
                ..Default::default()
            })
        );
        case!(
            format!("UpdateDataset of dataset {id}, path {what}"),
            data.update_dataset(data::CreateCommitRequest {
                dataset_id: id.into(),
                bucket: bucket.into(),
                path: s.clone(),
                ..Default::default()
            })
        );
        case!(
            format!("UpdateDataset of dataset {id}, bucket {what}"),
            data.update_dataset(data::CreateCommitRequest {
                dataset_id: id.into(),
                bucket: s.clone(),
                path: part.clone(),
                ..Default::default()
            })
        );
        case!(
            format!("PrepareTrainingDataset id {what}"),
            data.prepare_training_dataset(data::DatasetQuery {
                dataset_id: s.clone(),
                ..Default::default()
            })
        );
        if !s.trim().is_empty() {
            // An empty commit id means every commit: the existing snapshot.
            case!(
                format!("PrepareTrainingDataset of dataset {id}, commit {what}"),
                data.prepare_training_dataset(data::DatasetQuery {
                    dataset_id: id.into(),
                    commit_id: s.clone(),
                    ..Default::default()
                })
            );
        }
        case!(
            format!("PrepareTrainingDataset of dataset {id}, a tag {what}"),
            data.prepare_training_dataset(data::DatasetQuery {
                dataset_id: id.into(),
                tags: vec![data::Tag {
                    tag_key: s.clone(),
                    tag_value: s.clone(),
                }],
                ..Default::default()
            })
        );
        // The original answers a selection of no commit with the empty snapshot "hash", which is
        // there already.
        cases.last_mut().unwrap().may_succeed = true;
        case!(
            format!("FetchTrainingDataset id {what}"),
            data.fetch_training_dataset(data::VersionQuery {
                dataset_id: s.clone(),
                version_hash: "hashBg==".into(),
            })
        );
        case!(
            format!("FetchTrainingDataset of dataset {id}, hash {what}"),
            data.fetch_training_dataset(data::VersionQuery {
                dataset_id: id.into(),
                version_hash: s.clone(),
            })
        );
        let metadata_with = |field: &str| {
            let mut metadata = training::TrainingJobMetadata {
                algorithm: "intent-classification".into(),
                dataset_id: "424242".into(),
                name: "intent".into(),
                train_data_version_hash: "hashBg==".into(),
                parameters: BTreeMap::new(),
                output_model_name: "intent".into(),
            };
            match field {
                "algorithm" => metadata.algorithm = s.clone(),
                "name" => metadata.name = s.clone(),
                "hash" => metadata.train_data_version_hash = s.clone(),
                "output" => metadata.output_model_name = s.clone(),
                "parameter" => {
                    metadata.parameters.insert(s.clone(), s.clone());
                }
                "workers" => {
                    metadata.parameters.insert("PARALLEL_INSTANCES".into(), s.clone());
                }
                _ => metadata.dataset_id = s.clone(),
            }
            training::TrainRequest {
                metadata: Some(metadata),
            }
        };
        for field in [
            "dataset",
            "algorithm",
            "name",
            "hash",
            "output",
            "parameter",
            "workers",
        ] {
            case!(
                format!("Train {field} {what}"),
                training.train(metadata_with(field))
            );
        }
        case!(
            format!("GetRunStatus id {what}"),
            metadata.get_run_status(metadata::GetRunStatusRequest { run_id: s.clone() })
        );
        case!(
            format!("GetArtifact id {what}"),
            metadata.get_artifact(metadata::GetArtifactRequest { run_id: s.clone() })
        );
        case!(
            format!("LogRunStart run {what}"),
            metadata.log_run_start(metadata::LogRunStartRequest {
                run_id: s.clone(),
                ..Default::default()
            })
        );
        case!(
            format!("LogRunEnd run {what}"),
            metadata.log_run_end(metadata::LogRunEndRequest {
                run_id: s.clone(),
                ..Default::default()
            })
        );
        case!(
            format!("LogEpoch run {what}"),
            metadata.log_epoch(metadata::LogEpochRequest {
                epoch_info: Some(metadata::EpochInfo {
                    run_id: s.clone(),
                    ..Default::default()
                }),
            })
        );
        case!(
            format!("CreateArtifact run {what}"),
            metadata.create_artifact(metadata::CreateArtifactRequest {
                run_id: s.clone(),
                ..Default::default()
            })
        );
        case!(
            format!("Predict run {what}"),
            prediction.predict(prediction::PredictRequest {
                run_id: s.clone(),
                document: "I am so happy today!".into(),
            })
        );
        case!(
            format!("Predict document {what}, an unknown run"),
            prediction.predict(prediction::PredictRequest {
                run_id: "424242".into(),
                document: s.clone(),
            })
        );
    }
    case!(
        "Train without metadata".into(),
        training.train(training::TrainRequest { metadata: None })
    );
    case!(
        "Train with PARALLEL_INSTANCES=3 of a one-worker algorithm".into(),
        training.train(training::TrainRequest {
            metadata: Some(training::TrainingJobMetadata {
                algorithm: "intent-classification".into(),
                dataset_id: "424242".into(),
                name: "copies".into(),
                train_data_version_hash: "hashBg==".into(),
                parameters: BTreeMap::from([("PARALLEL_INSTANCES".to_string(), "3".to_string())]),
                output_model_name: "intent".into(),
            }),
        })
    );
    case!(
        "LogEpoch without an epoch".into(),
        metadata.log_epoch(metadata::LogEpochRequest { epoch_info: None })
    );
    for number in NUMBERS {
        case!(
            format!("GetTrainingStatus job {number}"),
            training.get_training_status(training::GetTrainingStatusRequest { job_id: number })
        );
        case!(
            format!("CreateDataset type {number}"),
            data.create_dataset(data::CreateDatasetRequest {
                name: "tweets-bad".into(),
                dataset_type: number,
                bucket: bucket.into(),
                path: missing_file.clone(),
                ..Default::default()
            })
        );
        for index in NUMBERS {
            let mut client = data.clone();
            cases.push(Case {
                label: format!("ListDatasets limit {number} index {index}"),
                call: Box::pin(async move {
                    let mut stream = client
                        .list_datasets(data::ListQueryOptions { limit: number, index })
                        .await?
                        .into_inner();
                    while stream.message().await?.is_some() {}
                    Ok(())
                }),
                // Listing changes nothing; only negative numbers must be refused.
                may_succeed: number >= 0 && index >= 0,
            });
        }
    }
    cases
}

/// What the namespace holds: its resources (spec and status) and its stored objects (size and
/// ETag), by name.
async fn contents(
    client: &kube::Client,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    namespace: &str,
) -> BTreeMap<String, String> {
    let mut contents = BTreeMap::new();
    let params = ListParams::default();
    for dataset in Api::<Dataset>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .unwrap()
    {
        let key = format!("Dataset/{}", dataset.metadata.name.clone().unwrap_or_default());
        contents.insert(
            key,
            serde_json::to_string(&(&dataset.spec, &dataset.status)).unwrap(),
        );
    }
    for job in Api::<TrainingJob>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .unwrap()
    {
        let key = format!("TrainingJob/{}", job.metadata.name.clone().unwrap_or_default());
        contents.insert(key, serde_json::to_string(&(&job.spec, &job.status)).unwrap());
    }
    for md in Api::<ModelDeployment>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .unwrap()
    {
        let key = format!("ModelDeployment/{}", md.metadata.name.clone().unwrap_or_default());
        contents.insert(key, serde_json::to_string(&(&md.spec, &md.status)).unwrap());
    }
    for prefix in ["raw", "datasets", "models"] {
        let mut pages = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(format!("{prefix}/{namespace}/"))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for object in page.unwrap().contents() {
                contents.insert(
                    format!("s3://{bucket}/{}", object.key().unwrap_or_default()),
                    format!("{:?} {:?}", object.size(), object.e_tag()),
                );
            }
        }
    }
    contents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_refused_with_a_status_and_changes_nothing() {
    let (cluster, client, ns, operator) =
        harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), "bad-requests", &[])
            .await;
    let _logs = harness::logs_on_failure(cluster, &ns);
    let cluster: &LocalCluster = cluster;
    let s3 = cluster.s3();
    let raw_prefix = format!("raw/{}/", ns.name);
    for part in [1, 2] {
        let body =
            std::fs::read(repo_root().join(format!("testdata/tweet_emotion/tweet_emotion_part{part}.csv")))
                .unwrap();
        s3.put_object()
            .bucket(&cluster.s3_bucket)
            .key(format!("{raw_prefix}part{part}.csv"))
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
    let channel = operator.grpc_channel().await;

    // What is there already: a Dataset of two commits and the snapshot of both.
    let mut data = DataManagementServiceClient::new(channel.clone());
    let created = data
        .create_dataset(data::CreateDatasetRequest {
            name: "tweets".into(),
            dataset_type: data::DatasetType::TextIntent as i32,
            bucket: cluster.s3_bucket.clone(),
            path: format!("{raw_prefix}part1.csv"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let id = created.dataset_id.clone();
    data.update_dataset(data::CreateCommitRequest {
        dataset_id: id.clone(),
        bucket: cluster.s3_bucket.clone(),
        path: format!("{raw_prefix}part2.csv"),
        ..Default::default()
    })
    .await
    .unwrap();
    let version = data
        .prepare_training_dataset(data::DatasetQuery {
            dataset_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.version_hash, "hashBg==");
    let empty = data
        .prepare_training_dataset(data::DatasetQuery {
            dataset_id: id.clone(),
            tags: vec![data::Tag {
                tag_key: "split".into(),
                tag_value: "none".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.version_hash, "hash");
    for hash in ["hashBg==", "hash"] {
        for _ in 0..300 {
            let fetched = data
                .fetch_training_dataset(data::VersionQuery {
                    dataset_id: id.clone(),
                    version_hash: hash.into(),
                })
                .await
                .unwrap()
                .into_inner();
            if fetched.state != data::SnapshotState::Running as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let before = contents(&client, &s3, &cluster.s3_bucket, &ns.name).await;

    let mut cases = typed(&channel, &cluster.s3_bucket, &raw_prefix, &id);
    cases.extend(malformed(&channel));
    let (tried, mut hangs, mut wrong) = (cases.len(), Vec::new(), Vec::new());
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for case in cases {
        match tokio::time::timeout(HANG, case.call).await {
            Err(_) => hangs.push(case.label),
            Ok(Ok(())) if case.may_succeed => *codes.entry("OK".into()).or_default() += 1,
            Ok(Ok(())) => wrong.push(format!("{}: answered OK", case.label)),
            Ok(Err(status)) => {
                *codes.entry(format!("{:?}", status.code())).or_default() += 1;
                let bad_code = matches!(
                    status.code(),
                    Code::Internal
                        | Code::Unknown
                        | Code::Ok
                        | Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::Cancelled
                ) || (case.label.ends_with(": 64 MiB")
                    && status.code() != Code::ResourceExhausted);
                if bad_code || status.message().trim().is_empty() {
                    let mut message = status.message().to_string();
                    message.truncate(300);
                    wrong.push(format!("{}: {:?} {message:?}", case.label, status.code()));
                }
            }
        }
    }

    // Still serving, and nothing changed.
    let alive = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_ok();
    let crashes = usize::from(!alive || !std::path::Path::new(&format!("/proc/{}", operator.pid())).exists());
    let after = contents(&client, &s3, &cluster.s3_bucket, &ns.name).await;
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    println!(
        "bad requests: {tried} inputs tried, {crashes} crashes, {} hangs, {} wrong statuses, {} data changed; \
         statuses {codes:?}; {} resources and objects compared",
        hangs.len(),
        wrong.len(),
        changed.len(),
        before.len()
    );
    assert!(
        crashes == 0 && hangs.is_empty() && wrong.is_empty() && changed.is_empty(),
        "hangs: {hangs:#?}\nwrong statuses: {wrong:#?}\nchanged: {changed:#?}"
    );
}
