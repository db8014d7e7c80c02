//! The descriptor set carries the original API's services and methods, and the generated messages
//! encode and decode.

use std::collections::BTreeMap;

use miniautoml_proto::{FILE_DESCRIPTOR_SET, data_management, metadata_store, prediction, training};
use prost::Message;
use prost_types::FileDescriptorSet;

/// `package.Service` → method names, in declaration order.
fn services() -> BTreeMap<String, Vec<String>> {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes");
    set.file
        .iter()
        .flat_map(|file| {
            file.service.iter().map(move |service| {
                (
                    format!("{}.{}", file.package(), service.name()),
                    service.method.iter().map(|m| m.name().to_owned()).collect(),
                )
            })
        })
        .collect()
}

#[test]
fn descriptor_set_has_the_four_apis() {
    let want: BTreeMap<String, Vec<String>> = [
        (
            "data_management.DataManagementService",
            &[
                "GetDatasetSummary",
                "ListDatasets",
                "CreateDataset",
                "UpdateDataset",
                "PrepareTrainingDataset",
                "FetchTrainingDataset",
                "DeleteDataset",
            ][..],
        ),
        ("training.TrainingService", &["Train", "GetTrainingStatus"][..]),
        (
            "metadata_store.MetadataStoreService",
            &[
                "LogRunStart",
                "LogEpoch",
                "LogRunEnd",
                "GetRunStatus",
                "CreateArtifact",
                "GetArtifact",
            ][..],
        ),
        ("prediction.PredictionService", &["Predict"][..]),
        ("prediction.Predictor", &["PredictorPredict"][..]),
    ]
    .into_iter()
    .map(|(service, methods)| {
        (
            service.to_owned(),
            methods.iter().map(|m| (*m).to_owned()).collect(),
        )
    })
    .collect();
    assert_eq!(services(), want);
}

#[test]
fn descriptor_set_has_the_imports_reflection_needs() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes");
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    for name in [
        "google/protobuf/empty.proto",
        "data_management.proto",
        "training.proto",
        "metadata_store.proto",
        "prediction.proto",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

#[test]
fn reflection_accepts_the_descriptor_set() {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("a reflection service over FILE_DESCRIPTOR_SET");
}

#[test]
fn list_datasets_streams_and_delete_returns_empty() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes");
    let service = set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "DataManagementService")
        .expect("DataManagementService");
    let method = |name: &str| service.method.iter().find(|m| m.name() == name).expect(name);
    assert!(method("ListDatasets").server_streaming());
    assert_eq!(
        method("ListDatasets").output_type(),
        ".data_management.DatasetPointer"
    );
    assert_eq!(method("DeleteDataset").output_type(), ".google.protobuf.Empty");
}

/// Field names as the original spelled them, which grpcurl's JSON uses.
#[test]
fn original_field_names_and_numbers_are_kept() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes");
    let field = |message: &str, number: i32| {
        set.file
            .iter()
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == message)
            .unwrap_or_else(|| panic!("{message} missing"))
            .field
            .iter()
            .find(|f| f.number() == number)
            .unwrap_or_else(|| panic!("{message} has no field {number}"))
            .name()
            .to_owned()
    };
    assert_eq!(field("GetTrainingStatusResponse", 5), "positionInQueue");
    assert_eq!(field("PredictRequest", 3), "runId");
    assert_eq!(field("PredictRequest", 4), "document");
    assert_eq!(field("PredictorPredictRequest", 1), "runId");
    assert_eq!(field("GetRunStatusRequest", 5), "run_id");
    assert_eq!(field("VersionedSnapshot", 7), "statistics");
}

#[test]
fn commit_with_tags_and_statistics_round_trips() {
    let commit = data_management::CommitInfo {
        dataset_id: "1".into(),
        commit_id: "2".into(),
        created_at: "2024-01-02T03:04:05Z".into(),
        commit_message: "more intents".into(),
        tags: vec![
            data_management::Tag {
                tag_key: "source".into(),
                tag_value: "crawl".into(),
            },
            data_management::Tag {
                tag_key: "lang".into(),
                tag_value: "en".into(),
            },
        ],
        path: "dataset/1/commit/2".into(),
        statistics: [("numExamples", "120"), ("numLabels", "4")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    let decoded = data_management::CommitInfo::decode(commit.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(decoded, commit);
}

#[test]
fn run_with_epochs_round_trips() {
    let epoch = metadata_store::EpochInfo {
        run_id: "7".into(),
        epoch_id: "0".into(),
        metrics: [("loss".to_owned(), "0.5".to_owned())].into(),
        ..Default::default()
    };
    let run = metadata_store::RunInfo {
        run_id: "7".into(),
        success: true,
        tracing: Some(metadata_store::TracingInformation {
            dataset_id: "1".into(),
            version_hash: "hashDg==".into(),
            code_version: "v1".into(),
        }),
        epochs: [("0".to_owned(), epoch)].into(),
        ..Default::default()
    };
    let decoded = metadata_store::RunInfo::decode(run.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(decoded, run);
}

#[test]
fn messages_have_the_original_wire_numbers() {
    // Field 3 (runId) and 4 (document) of PredictRequest, as the original clients send them.
    let bytes = prediction::PredictRequest {
        run_id: "1".into(),
        document: "hi".into(),
    }
    .encode_to_vec();
    assert_eq!(bytes, [0x1a, 1, b'1', 0x22, 2, b'h', b'i']);
    let status = training::GetTrainingStatusResponse {
        position_in_queue: 2,
        ..Default::default()
    };
    assert_eq!(status.encode_to_vec(), [0x28, 2]);
}
