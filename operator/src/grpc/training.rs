//! `training.TrainingService`: the original's Train / GetTrainingStatus over TrainingJobs.
//!
//! Train validates in the original's order (`outputModelName`, `datasetId`,
//! `trainDataVersionHash`, `algorithm`: `"<field>" is required.`), resolves the dataset id and
//! the prepared snapshot's version hash, allocates the run id (the same durable counter the
//! controller uses, so ids survive restarts), creates a TrainingJob named with it in the gRPC
//! namespace and writes the id into its status (where only the operator writes). GetTrainingStatus maps the TrainingJob's phase to the original's statuses.

use std::sync::Arc;

use kube::{
    Api, ResourceExt,
    api::{ListParams, ObjectMeta, PostParams},
};
use miniautoml_api::{
    Dataset, TrainingJob, TrainingJobSpec,
    labels::{DATASET_ID_ANNOTATION, IDEMPOTENCY_KEY_LABEL},
    training_job::{MAX_WORKERS, TrainingPhase},
};
use miniautoml_proto::training::{
    self as pb, TrainingStatus, training_service_server::TrainingService as Service,
};
use tonic::{Request, Response, Status};

use super::{
    auth::{self, Permission},
    errors::{self, internal},
    input,
};
use crate::{
    algorithms::too_many_workers,
    context::Context,
    ids::{RUN_ID, RUN_IDS},
    names::{self, NAME_ANNOTATION},
};

/// The service.
pub struct Training {
    ctx: Arc<Context>,
    namespace: String,
}

/// The worker count `PARALLEL_INSTANCES` asks for (the original lab's parameter; 1 when unset).
pub fn parallel_instances(parameters: &std::collections::BTreeMap<String, String>) -> Result<i32, Status> {
    let Some(value) = parameters.get("PARALLEL_INSTANCES") else {
        return Ok(1);
    };
    match value.trim().parse::<i32>() {
        Ok(count @ 1..=MAX_WORKERS) => Ok(count),
        _ => Err(Status::invalid_argument(format!(
            "PARALLEL_INSTANCES={}: a whole number of workers from 1 to {MAX_WORKERS}",
            input::shown(value)
        ))),
    }
}

/// The commit a snapshot's commits `1..=n` amount to, when they are exactly that.
pub fn contiguous_upper(commits: &[u32]) -> Option<u32> {
    let n = *commits.iter().max()?;
    (commits.len() == n as usize && commits.iter().enumerate().all(|(i, &c)| c == i as u32 + 1)).then_some(n)
}

impl Training {
    /// Creates TrainingJobs in `namespace`.
    pub fn new(ctx: Arc<Context>, namespace: String) -> Self {
        Training { ctx, namespace }
    }

    async fn find(&self, run_id: i32) -> Result<TrainingJob, Status> {
        // Checked before it reaches a label selector, which would refuse `-1` as a label value.
        if run_id <= 0 {
            return Err(Status::invalid_argument(format!(
                "job_id {run_id} is not a run id: run ids are positive numbers, as Train returns them"
            )));
        }
        self.ctx
            .find_run(run_id as u64, |_| false)
            .await
            .map_err(errors::operator)?
            .ok_or_else(|| Status::not_found(format!("Job {run_id} doesn't exist")))
    }

    /// The run id of `job`, which Train created (the id promised to it), written into its
    /// status as the controller would.
    async fn assign(&self, job: &TrainingJob) -> Result<i32, Status> {
        let api: Api<TrainingJob> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let (id, _) = self
            .ctx
            .ids
            .assign(&self.ctx.client, &self.ctx.id_namespace, (&api, job), &RUN_ID)
            .await
            .map_err(errors::operator)?;
        i32::try_from(id).map_err(|_| internal(format!("run id {id} does not fit the original API's int32")))
    }

    /// Queued runs created before `job` (FIFO by creation time, then name).
    async fn position(&self, job: &TrainingJob) -> Result<i32, Status> {
        if let Some(position) = job.status.as_ref().and_then(|s| s.position_in_queue) {
            return Ok(position as i32);
        }
        let api: Api<TrainingJob> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let key = |j: &TrainingJob| (j.creation_timestamp().map(|t| t.0), j.name_any());
        let mine = key(job);
        let ahead = api
            .list(&ListParams::default())
            .await
            .map_err(errors::kube)?
            .items
            .iter()
            .filter(|j| j.status.as_ref().and_then(|s| s.phase) == Some(TrainingPhase::Queued))
            .filter(|j| key(j) < mine)
            .count();
        Ok(ahead as i32)
    }
}

#[tonic::async_trait]
impl Service for Training {
    async fn train(&self, request: Request<pb::TrainRequest>) -> Result<Response<pb::TrainResponse>, Status> {
        let idempotency = input::idempotency_key(request.metadata())?;
        let metadata = request.into_inner().metadata.unwrap_or_default();
        for (field, value) in [
            ("outputModelName", &metadata.output_model_name),
            ("datasetId", &metadata.dataset_id),
            ("trainDataVersionHash", &metadata.train_data_version_hash),
            ("algorithm", &metadata.algorithm),
        ] {
            if value.trim().is_empty() {
                return Err(Status::invalid_argument(format!("\"{field}\" is required.")));
            }
        }
        names::check("name", &metadata.name).map_err(Status::invalid_argument)?;
        names::check("outputModelName", &metadata.output_model_name).map_err(Status::invalid_argument)?;
        let dataset_id = input::id("datasetId", &metadata.dataset_id)?;
        input::version_hash("trainDataVersionHash", &metadata.train_data_version_hash)?;
        if !self.ctx.algorithm_images.contains_key(&metadata.algorithm) {
            let known: Vec<&str> = self.ctx.algorithm_images.keys().map(String::as_str).collect();
            return Err(Status::invalid_argument(format!(
                "algorithm {} is not configured (configured: {})",
                input::shown(&metadata.algorithm),
                known.join(", ")
            )));
        }
        // The original's PARALLEL_INSTANCES is the run's worker count (and stays a parameter,
        // as the original passed it on to the trainer's environment).
        let workers = parallel_instances(&metadata.parameters)?;
        if let Some(message) = too_many_workers(
            Some(&metadata.algorithm),
            workers,
            &self.ctx.algorithm_max_workers,
        ) {
            return Err(Status::invalid_argument(message));
        }
        let datasets: Api<Dataset> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let dataset = crate::ids::find_dataset(&datasets, dataset_id)
            .await
            .map_err(errors::operator)?
            .ok_or_else(|| Status::not_found(format!("dataset {dataset_id} doesn't exist")))?;
        let snapshot = dataset
            .status
            .as_ref()
            .and_then(|s| {
                s.snapshots
                    .iter()
                    .find(|s| s.version_hash == metadata.train_data_version_hash)
            })
            .ok_or_else(|| {
                Status::not_found(format!(
                    "dataset {dataset_id} has no snapshot {}; prepare it first with PrepareTrainingDataset",
                    metadata.train_data_version_hash
                ))
            })?;
        let commit = contiguous_upper(&snapshot.commits).ok_or_else(|| {
            Status::failed_precondition(format!(
                "snapshot {} selects commits {:?}; a TrainingJob selects commits 1..n (use a TrainingJob with dataset tags for other selections)",
                metadata.train_data_version_hash, snapshot.commits
            ))
        })?;
        let api: Api<TrainingJob> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        if let Some(key) = &idempotency {
            // A retry of a call that created its run already (its answer was lost): that run.
            let earlier = api
                .list(&ListParams::default().labels(&format!("{IDEMPOTENCY_KEY_LABEL}={key}")))
                .await
                .map_err(errors::kube)?;
            if let Some(job) = earlier.items.first() {
                let job_id = self.assign(job).await?;
                return Ok(Response::new(pb::TrainResponse { job_id }));
            }
        }
        let run_id = self
            .ctx
            .ids
            .allocate(&self.ctx.client, &self.ctx.id_namespace, RUN_IDS)
            .await
            .map_err(errors::operator)?;
        let mut labels = std::collections::BTreeMap::new();
        if let Some(key) = idempotency {
            labels.insert(IDEMPOTENCY_KEY_LABEL.to_string(), key);
        }
        let name = names::with_id(&metadata.name, run_id, "run");
        // The controller may see the run before this call writes its id: either gives it this one.
        self.ctx.ids.promise(&RUN_ID, &self.namespace, &name, run_id);
        let job = TrainingJob {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                annotations: Some(
                    [
                        (DATASET_ID_ANNOTATION.to_string(), metadata.dataset_id.clone()),
                        (NAME_ANNOTATION.to_string(), metadata.name.clone()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: serde_json::from_value::<TrainingJobSpec>(serde_json::json!({
                "algorithm": metadata.algorithm,
                "dataset": {"name": dataset.name_any(), "commit": commit},
                "parameters": metadata.parameters,
                "outputModelName": metadata.output_model_name,
                "workers": workers,
            }))
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
            status: None,
        };
        let created = api.create(&PostParams::default(), &job).await.map_err(|e| {
            self.ctx.ids.forget(&RUN_ID, &self.namespace, &name);
            match e {
                kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
                    Status::invalid_argument(status.message)
                }
                other => errors::kube(other),
            }
        })?;
        let job_id = self.assign(&created).await?;
        Ok(Response::new(pb::TrainResponse { job_id }))
    }

    async fn get_training_status(
        &self,
        request: Request<pb::GetTrainingStatusRequest>,
    ) -> Result<Response<pb::GetTrainingStatusResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        let job_id = request.job_id;
        let job = self.find(job_id).await?;
        // The run may live outside the gRPC namespace (a TrainingJob applied with kubectl).
        auth::require(
            &extensions,
            Permission::GET_TRAINING_JOBS,
            &job.namespace().unwrap_or_default(),
        )
        .await?;
        let status = job.status.clone().unwrap_or_default();
        let metadata = pb::TrainingJobMetadata {
            algorithm: job.spec.algorithm.clone().unwrap_or_default(),
            dataset_id: job.caller_dataset_id(),
            name: job
                .annotations()
                .get(NAME_ANNOTATION)
                .cloned()
                .unwrap_or_else(|| job.name_any()),
            train_data_version_hash: status.dataset_version_hash.clone().unwrap_or_default(),
            parameters: job.spec.parameters.clone(),
            output_model_name: job.spec.output_model_name.clone(),
        };
        let (state, message, position) = match status.phase {
            None | Some(TrainingPhase::Queued) => {
                let position = self.position(&job).await?;
                (
                    TrainingStatus::Queuing,
                    format!("Queueing, there are {position} training jobs waiting before this."),
                    position,
                )
            }
            Some(TrainingPhase::Launching) => (
                TrainingStatus::Launch,
                status.message.clone().unwrap_or_default(),
                0,
            ),
            Some(TrainingPhase::Running) => (
                TrainingStatus::Running,
                status.message.clone().unwrap_or_default(),
                0,
            ),
            Some(TrainingPhase::Succeeded) => (
                TrainingStatus::Succeed,
                status.message.clone().unwrap_or_default(),
                0,
            ),
            Some(TrainingPhase::Failed) => (
                TrainingStatus::Failure,
                status.message.clone().unwrap_or_default(),
                0,
            ),
        };
        Ok(Response::new(pb::GetTrainingStatusResponse {
            status: state as i32,
            job_id,
            message,
            metadata: Some(metadata),
            position_in_queue: position,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_instances_is_the_worker_count() {
        let with =
            |value: &str| parallel_instances(&[("PARALLEL_INSTANCES".to_string(), value.to_string())].into());
        assert_eq!(parallel_instances(&Default::default()).unwrap(), 1);
        assert_eq!(with("3").unwrap(), 3);
        assert_eq!(with(" 64 ").unwrap(), 64);
        for bad in ["0", "65", "-1", "two", ""] {
            let error = with(bad).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert!(error.message().contains("PARALLEL_INSTANCES"), "{error}");
        }
    }

    #[test]
    fn only_commits_one_to_n_map_to_a_commit() {
        assert_eq!(contiguous_upper(&[1, 2, 3]), Some(3));
        assert_eq!(contiguous_upper(&[1]), Some(1));
        assert_eq!(contiguous_upper(&[2, 3]), None);
        assert_eq!(contiguous_upper(&[]), None);
    }
}
