//! `data_management.DataManagementService`, backed by Dataset resources in the gRPC namespace.
//!
//! Numeric `dataset_id`s (as the original's clients use) are each Dataset's `status.datasetId`,
//! allocated from a counter in the ConfigMap `miniautoml-dataset-ids` (compare-and-swap on its
//! resourceVersion), so they survive restarts; CreateDataset gives the Dataset it creates its id,
//! and the Dataset controller gives one to a Dataset made with kubectl. Reads never give ids.

use std::{collections::BTreeMap, pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::wait::await_condition,
};
use miniautoml_api::{
    Dataset, DatasetCommitStatus, DatasetSpec, DatasetStatistics, DatasetType, ObjectSource, SnapshotState,
    Tags, dataset::DatasetCommitSpec,
};
use miniautoml_data::{SnapshotSelector, StorageError};
use miniautoml_proto::data_management::{self as pb, data_management_service_server::DataManagementService};
use tonic::{Request, Response, Status};

use super::{
    errors::{self, internal},
    input,
};
use crate::{
    context::Context,
    ids::{DATASET_ID, DATASET_IDS, find_dataset},
    names::{self, NAME_ANNOTATION},
    snapshots::SnapshotError,
    status::{is_conflict, retry_on_conflict},
};
/// How long CreateDataset and UpdateDataset wait for the commit to be ingested.
const INGEST_WAIT: Duration = Duration::from_secs(300);

/// The service.
pub struct DataManagement {
    ctx: Arc<Context>,
    namespace: String,
}

impl DataManagement {
    /// Serves Datasets of `namespace`.
    pub fn new(ctx: Arc<Context>, namespace: String) -> Self {
        DataManagement { ctx, namespace }
    }

    fn api(&self) -> Api<Dataset> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    /// Allocates the next dataset id.
    async fn allocate_id(&self) -> Result<u64, Status> {
        self.ctx
            .ids
            .allocate(&self.ctx.client, &self.ctx.id_namespace, DATASET_IDS)
            .await
            .map_err(|e| match e {
                crate::Error::IdConflict(_) => {
                    Status::aborted("allocating a dataset id kept conflicting; try again")
                }
                other => errors::operator(other),
            })
    }

    /// Every Dataset of the namespace that has its id, by id. A Dataset made with kubectl gets
    /// its id from the Dataset controller; a read never gives one.
    async fn datasets(&self) -> Result<BTreeMap<u64, Dataset>, Status> {
        let list = self
            .api()
            .list(&ListParams::default())
            .await
            .map_err(errors::kube)?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|dataset| Some((dataset.dataset_id()?, dataset)))
            .collect())
    }

    async fn find(&self, id: &str) -> Result<(u64, Dataset), Status> {
        let id = input::id("dataset_id", id)?;
        find_dataset(&self.api(), id)
            .await
            .map_err(errors::operator)?
            .map(|d| (id, d))
            .ok_or_else(|| Status::not_found(format!("dataset {id} not found")))
    }

    /// Whether the object a commit would read exists, and the operator may read it: checked
    /// before anything is written, so that a wrong bucket or path leaves the datasets as they were
    /// (an entry that cannot be read would be rejected only after it was appended, or wait for
    /// good on a bucket that refuses the operator).
    async fn readable(&self, bucket: &str, path: &str) -> Result<(), Status> {
        let store =
            self.ctx.store.as_ref().ok_or_else(|| {
                Status::failed_precondition("object storage is not configured on the operator")
            })?;
        // A source the namespace may not read is answered as a missing one, and never looked up.
        let unavailable = || {
            Status::not_found(
                self.ctx
                    .sources
                    .unavailable(&self.namespace, bucket, &input::shown(path)),
            )
        };
        if !self.ctx.sources.allows(&self.namespace, bucket, path) {
            return Err(unavailable());
        }
        store.head(bucket, path).await.map(drop).map_err(|error| {
            let object = format!("s3://{bucket}/{}", input::shown(path));
            match error {
                StorageError::NotFound(_) => unavailable(),
                StorageError::Denied(detail) => {
                    Status::failed_precondition(format!("the operator may not read {object}: {detail}"))
                }
                StorageError::Unavailable(detail) => Status::unavailable(format!(
                    "cannot reach the object store to read {object}: {detail}; retry"
                )),
            }
        })
    }

    /// Waits until `spec.commits[entry]` of `name` is ingested or rejected.
    async fn ingested(&self, name: &str, entry: u32) -> Result<Dataset, Status> {
        let done = await_condition(self.api(), name, move |d: Option<&Dataset>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                s.commits.iter().any(|c| c.entry == entry) || s.rejected.iter().any(|r| r.entry == entry)
            }) || d.is_none()
        });
        let dataset = match tokio::time::timeout(INGEST_WAIT, done).await {
            Ok(result) => result.map_err(internal)?,
            Err(_) => {
                let waiting = self
                    .api()
                    .get_status(name)
                    .await
                    .ok()
                    .and_then(|d| d.status)
                    .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
                    .map(|c| c.message)
                    .unwrap_or_default();
                return Err(Status::unavailable(format!(
                    "the commit was not ingested within {}s: {waiting}",
                    INGEST_WAIT.as_secs()
                )));
            }
        };
        let dataset = dataset.ok_or_else(|| Status::not_found(format!("dataset {name} was deleted")))?;
        let status = dataset.status.clone().unwrap_or_default();
        if let Some(rejected) = status.rejected.iter().find(|r| r.entry == entry) {
            return Err(Status::failed_precondition(rejected.message.clone()));
        }
        Ok(dataset)
    }
}

fn tags(tags: &[pb::Tag]) -> Tags {
    tags.iter()
        .map(|t| (t.tag_key.clone(), t.tag_value.clone()))
        .collect()
}

fn pb_tags(tags: &Tags) -> Vec<pb::Tag> {
    tags.iter()
        .map(|(k, v)| pb::Tag {
            tag_key: k.clone(),
            tag_value: v.clone(),
        })
        .collect()
}

fn statistics(stats: &DatasetStatistics) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = [
        ("numExamples".to_string(), stats.num_examples.to_string()),
        ("numLabels".to_string(), stats.num_labels.to_string()),
    ]
    .into();
    for (label, count) in &stats.per_label {
        map.insert(format!("label.{label}"), count.to_string());
    }
    map
}

fn commit_info(id: u64, commit: &DatasetCommitStatus) -> pb::CommitInfo {
    pb::CommitInfo {
        dataset_id: id.to_string(),
        commit_id: commit.id.to_string(),
        created_at: commit.created_at.0.to_string(),
        commit_message: commit.message.clone(),
        tags: pb_tags(&commit.tags),
        path: commit.path.clone(),
        statistics: statistics(&commit.statistics),
    }
}

fn dataset_type(dataset: &Dataset) -> i32 {
    match dataset.spec.r#type {
        DatasetType::Generic => pb::DatasetType::Generic as i32,
        DatasetType::TextIntent => pb::DatasetType::TextIntent as i32,
    }
}

fn summary(id: u64, dataset: &Dataset) -> pb::DatasetSummary {
    let status = dataset.status.clone().unwrap_or_default();
    pb::DatasetSummary {
        dataset_id: id.to_string(),
        name: caller_name(dataset),
        description: dataset.spec.description.clone(),
        dataset_type: dataset_type(dataset),
        last_updated_at: status
            .last_updated_at
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        commits: status.commits.iter().map(|c| commit_info(id, c)).collect(),
    }
}

fn entry(message: &str, bucket: &str, path: &str, tags: Tags) -> Result<DatasetCommitSpec, Status> {
    input::bucket(bucket)?;
    input::key("path", path)?;
    Ok(DatasetCommitSpec {
        message: message.into(),
        source: ObjectSource {
            bucket: Some(bucket.into()),
            key: Some(path.into()),
            ..Default::default()
        },
        tags,
    })
}

/// The name the caller gave `dataset` (kept verbatim in an annotation), else its object name
/// (a Dataset made with kubectl).
fn caller_name(dataset: &Dataset) -> String {
    dataset
        .annotations()
        .get(NAME_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| dataset.name_any())
}

type PointerStream = Pin<Box<dyn Stream<Item = Result<pb::DatasetPointer, Status>> + Send>>;

#[tonic::async_trait]
impl DataManagementService for DataManagement {
    async fn get_dataset_summary(
        &self,
        request: Request<pb::DatasetPointer>,
    ) -> Result<Response<pb::DatasetSummary>, Status> {
        // An id is known only once assigned (at creation or by ListDatasets), so no listing here.
        let (id, dataset) = self.find(&request.into_inner().dataset_id).await?;
        Ok(Response::new(summary(id, &dataset)))
    }

    type ListDatasetsStream = PointerStream;

    async fn list_datasets(
        &self,
        request: Request<pb::ListQueryOptions>,
    ) -> Result<Response<PointerStream>, Status> {
        let options = request.into_inner();
        if options.limit < 0 || options.index < 0 {
            return Err(Status::invalid_argument("limit and index must not be negative"));
        }
        let limit = if options.limit == 0 {
            usize::MAX
        } else {
            options.limit as usize
        };
        let ids: Vec<Result<pb::DatasetPointer, Status>> = self
            .datasets()
            .await?
            .into_keys()
            .skip(options.index as usize)
            .take(limit)
            .map(|id| {
                Ok(pb::DatasetPointer {
                    dataset_id: id.to_string(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(ids))))
    }

    async fn create_dataset(
        &self,
        request: Request<pb::CreateDatasetRequest>,
    ) -> Result<Response<pb::DatasetSummary>, Status> {
        let request = request.into_inner();
        names::check("name", &request.name).map_err(Status::invalid_argument)?;
        let r#type = match pb::DatasetType::try_from(request.dataset_type) {
            Ok(pb::DatasetType::Generic) => DatasetType::Generic,
            Ok(pb::DatasetType::TextIntent) => DatasetType::TextIntent,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown dataset_type {}",
                    request.dataset_type
                )));
            }
        };
        let first = entry(
            "Initial commit",
            &request.bucket,
            &request.path,
            tags(&request.tags),
        )?;
        self.readable(&request.bucket, &request.path).await?;
        let api = self.api();
        let id = self.allocate_id().await?;
        // As the original, a name may be given to several datasets: each gets its own id, and
        // its object the first free name derived from the caller's.
        let mut created = None;
        for candidate in names::dataset_candidates(&request.name, id) {
            let mut dataset = Dataset::new(
                &candidate,
                DatasetSpec {
                    r#type,
                    description: request.description.clone(),
                    commits: vec![first.clone()],
                    retain_policy: Default::default(),
                },
            );
            dataset.metadata.annotations = Some([(NAME_ANNOTATION.to_string(), request.name.clone())].into());
            // The controller may see the Dataset before this call writes its id: either gives
            // it this one.
            self.ctx.ids.promise(&DATASET_ID, &self.namespace, &candidate, id);
            let outcome = api.create(&PostParams::default(), &dataset).await;
            if outcome.is_err() {
                self.ctx.ids.forget(&DATASET_ID, &self.namespace, &candidate);
            }
            match outcome {
                Ok(object) => {
                    created = Some(object);
                    break;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(kube::Error::Api(s)) if s.code == 422 => return Err(Status::invalid_argument(s.message)),
                Err(error) => return Err(errors::kube(error)),
            }
        }
        let created = created.ok_or_else(|| {
            Status::aborted(format!(
                "every object name derived from {} is taken; try again",
                input::shown(&request.name)
            ))
        })?;
        // Its id into its status now (unless the controller was first, with the same id).
        let (id, _) = self
            .ctx
            .ids
            .assign(
                &self.ctx.client,
                &self.ctx.id_namespace,
                (&api, &created),
                &DATASET_ID,
            )
            .await
            .map_err(errors::operator)?;
        let name = created.name_any();
        match self.ingested(&name, 0).await {
            Ok(dataset) => Ok(Response::new(summary(id, &dataset))),
            Err(status) => {
                if status.code() == tonic::Code::FailedPrecondition {
                    // A dataset whose first commit was rejected holds nothing: do not keep it.
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                }
                Err(status)
            }
        }
    }

    async fn update_dataset(
        &self,
        request: Request<pb::CreateCommitRequest>,
    ) -> Result<Response<pb::DatasetSummary>, Status> {
        let request = request.into_inner();
        let (id, _) = self.find(&request.dataset_id).await?;
        let new = entry(
            &request.commit_message,
            &request.bucket,
            &request.path,
            tags(&request.tags),
        )?;
        self.readable(&request.bucket, &request.path).await?;
        let api = self.api();
        let (name, entry) = retry_on_conflict(|| async {
            let (_, mut dataset) = self.find(&request.dataset_id).await?;
            let index = dataset.spec.commits.len() as u32;
            dataset.spec.commits.push(new.clone());
            match api
                .replace(&dataset.name_any(), &PostParams::default(), &dataset)
                .await
            {
                Ok(written) => Ok((written.name_any(), index)),
                Err(error) if is_conflict(&error) => Err(Status::aborted(format!(
                    "dataset {} kept changing while the commit was added; try again",
                    request.dataset_id
                ))),
                Err(kube::Error::Api(s)) if s.code == 422 => Err(Status::invalid_argument(s.message)),
                Err(error) => Err(errors::kube(error)),
            }
        })
        .await?;
        let dataset = self.ingested(&name, entry).await?;
        Ok(Response::new(summary(id, &dataset)))
    }

    async fn prepare_training_dataset(
        &self,
        request: Request<pb::DatasetQuery>,
    ) -> Result<Response<pb::SnapshotVersion>, Status> {
        let request = request.into_inner();
        let (id, dataset) = self.find(&request.dataset_id).await?;
        let up_to = match request.commit_id.trim() {
            "" => None,
            _ => Some(
                u32::try_from(input::id("commit_id", &request.commit_id)?).map_err(|_| {
                    Status::not_found(format!(
                        "commit {} does not exist",
                        input::shown(&request.commit_id)
                    ))
                })?,
            ),
        };
        let selector = SnapshotSelector {
            up_to,
            tags: tags(&request.tags),
        };
        let snapshot =
            self.ctx
                .snapshots
                .prepare(&dataset, &selector)
                .await
                .map_err(|error| match error {
                    SnapshotError::Selection(e) => Status::not_found(e.to_string()),
                    SnapshotError::NoStorage => Status::failed_precondition(error.to_string()),
                    SnapshotError::Operator(e) => errors::operator(e),
                })?;
        let base = summary(id, &dataset);
        let status = dataset.status.clone().unwrap_or_default();
        Ok(Response::new(pb::SnapshotVersion {
            dataset_id: base.dataset_id,
            name: base.name,
            description: base.description,
            dataset_type: base.dataset_type,
            last_updated_at: base.last_updated_at,
            version_hash: snapshot.version_hash,
            commits: status
                .commits
                .iter()
                .filter(|c| snapshot.commits.contains(&c.id))
                .map(|c| commit_info(id, c))
                .collect(),
        }))
    }

    async fn fetch_training_dataset(
        &self,
        request: Request<pb::VersionQuery>,
    ) -> Result<Response<pb::VersionedSnapshot>, Status> {
        let request = request.into_inner();
        let (id, dataset) = self.find(&request.dataset_id).await?;
        input::version_hash("version_hash", &request.version_hash)?;
        let status = dataset.status.clone().unwrap_or_default();
        let snapshot = status
            .snapshots
            .iter()
            .find(|s| s.version_hash == request.version_hash)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "dataset {id} has no snapshot {}; ask PrepareTrainingDataset for it",
                    input::shown(&request.version_hash)
                ))
            })?;
        let bucket = self
            .ctx
            .store
            .as_ref()
            .map(|s| s.bucket.clone())
            .unwrap_or_default();
        let root = snapshot.root.clone().unwrap_or_default();
        let state = match snapshot.state {
            SnapshotState::Running => pb::SnapshotState::Running,
            SnapshotState::Ready => pb::SnapshotState::Ready,
            SnapshotState::Failed => pb::SnapshotState::Failed,
        };
        let mut stats = statistics(&snapshot.statistics);
        if let Some(message) = &snapshot.message {
            stats.insert("message".into(), message.clone());
        }
        Ok(Response::new(pb::VersionedSnapshot {
            dataset_id: id.to_string(),
            version_hash: snapshot.version_hash.clone(),
            state: state as i32,
            parts: snapshot
                .parts
                .iter()
                .map(|part| pb::FileInfo {
                    name: part.clone(),
                    bucket: bucket.clone(),
                    path: format!("{root}{part}"),
                })
                .collect(),
            root: Some(pb::FileInfo {
                name: snapshot.version_hash.clone(),
                bucket,
                path: root,
            }),
            statistics: stats,
        }))
    }

    async fn delete_dataset(&self, request: Request<pb::DatasetPointer>) -> Result<Response<()>, Status> {
        let (_, dataset) = self.find(&request.into_inner().dataset_id).await?;
        self.api()
            .delete(&dataset.name_any(), &DeleteParams::default())
            .await
            .map_err(errors::kube)?;
        Ok(Response::new(()))
    }
}
