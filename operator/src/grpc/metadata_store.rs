//! `metadata_store.MetadataStoreService`: what a running trainer reports (run start, epochs,
//! artifact, end), written into its TrainingJob's status, and read back by run id.
//!
//! **Who may write.** Every run has a Secret `<trainingjob>-run` (owned by the TrainingJob)
//! holding a random token; only the run's pods mount it (`MINIAUTOML_RUN_TOKEN`), and the
//! trainer sends it as `authorization: Bearer <token>`. A write naming a run checks the token
//! against that run's Secret: none is UNAUTHENTICATED, another run's (or a made-up) token is
//! PERMISSION_DENIED. Reads (GetRunStatus, GetArtifact) need no token, as in the original.
//!
//! **Coalescing.** Epochs are buffered per run and written to the status at most once a
//! second, so a trainer reporting hundreds of epochs a second costs a few status writes. Every
//! epoch is also stored in the bucket (`runs/<ns>/<trainingjob>/<uid>/epochs/<id>.json`): the
//! status keeps the 32 most recent. LogRunEnd and CreateArtifact write the buffered epochs in
//! their own status write, so the status never shows a run's end before its last epochs, and
//! a run that reports its last epochs, its model and its end in a second writes them in two.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Api, ResourceExt};
use miniautoml_api::{
    TrainingJob,
    labels::RUN_ID_LABEL,
    training_job::{ArtifactStatus, EpochStatus, FAILED, TrainingPhase},
};
use miniautoml_data::{Store, layout};
use miniautoml_proto::data_management::FileInfo;
use miniautoml_proto::metadata_store::{self as pb, metadata_store_service_server::MetadataStoreService};
use tonic::{Request, Response, Status};

use super::{
    auth::{self, Permission},
    errors::{self, internal},
    input,
};
use crate::{conditions, context::Context};

/// The most metrics an epoch records (the status schema's bound).
const MAX_METRICS: usize = 32;
/// The longest metric name, in bytes.
const MAX_METRIC_NAME: usize = 63;
/// The longest run message kept (LogRunEnd's, e.g. the trainer's last error line), in bytes.
const MAX_MESSAGE: usize = 1024;

/// A trainer's message, cut to [`MAX_MESSAGE`] bytes (at a character boundary, marked with
/// `…`): the reason a run failed is kept, however long the trainer made it.
fn bounded_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Header naming the pod an original-contract report came from (set by that contract's
/// listener, `original_contract`; named when the report is refused).
pub const REPORTING_POD: &str = "x-miniautoml-reporting-pod";

/// How long epochs wait to be written together.
const COALESCE: Duration = Duration::from_secs(1);

type RunKey = (String, String);

/// The service.
#[derive(Clone)]
pub struct MetadataStore {
    ctx: Arc<Context>,
    pending: Arc<Mutex<HashMap<RunKey, Vec<EpochStatus>>>>,
}

/// An epoch's metrics as numbers. The original stored them as strings; status holds numbers, so
/// a value that is not a number is refused, and one that is a number but not finite (`NaN`,
/// `inf`: a diverging trainer's loss) is accepted and left out, since JSON has no such number.
/// The call succeeds either way for a number, so a trainer reporting its last, diverged epoch is
/// not failed by the report itself.
///
/// Bounded, so that a status stays small whatever a trainer reports: at most [`MAX_METRICS`]
/// metrics an epoch, names of at most [`MAX_METRIC_NAME`] bytes.
fn epoch_metrics(reported: &BTreeMap<String, String>) -> Result<BTreeMap<String, f64>, Status> {
    if reported.len() > MAX_METRICS {
        return Err(Status::invalid_argument(format!(
            "{} metrics in one epoch; at most {MAX_METRICS} are recorded",
            reported.len()
        )));
    }
    let mut metrics = BTreeMap::new();
    for (name, value) in reported {
        if name.is_empty() || name.len() > MAX_METRIC_NAME || name.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "metric name {} must be 1 to {MAX_METRIC_NAME} bytes without control characters",
                input::shown(name)
            )));
        }
        let number = value
            .trim()
            .parse::<f64>()
            .map_err(|_| Status::invalid_argument(format!("metric {name}={value:?} is not a number")))?;
        if number.is_finite() {
            metrics.insert(name.clone(), number);
        }
    }
    Ok(metrics)
}

fn parse_time(text: &str) -> Option<Time> {
    text.parse::<Timestamp>()
        .ok()
        .or_else(|| {
            // The original's Python trainer sends naive `datetime.isoformat()` strings.
            text.parse::<k8s_openapi::jiff::civil::DateTime>()
                .ok()
                .and_then(|t| t.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC).ok())
                .map(|z| z.timestamp())
        })
        .map(Time)
}

fn time_text(time: &Option<Time>) -> String {
    time.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
}

/// `0.712` from the original's `"test accuracy 0.712"`.
pub fn accuracy_in(message: &str) -> Option<f64> {
    message
        .strip_prefix("test accuracy")?
        .split_whitespace()
        .next()?
        .trim_end_matches([',', ';', ')'])
        .parse()
        .ok()
}

impl MetadataStore {
    /// Serves runs of every namespace the operator watches.
    pub fn new(ctx: Arc<Context>) -> Self {
        MetadataStore {
            ctx,
            pending: Arc::default(),
        }
    }

    /// The TrainingJob of `run_id`, read from the API server.
    async fn find(&self, run_id: &str) -> Result<TrainingJob, Status> {
        self.lookup(run_id, false).await
    }

    /// The TrainingJob of `run_id` from the controller's watch cache (which may lag a write by
    /// a moment: writes based on it are compare-and-swapped), else from the API server.
    async fn find_cached(&self, run_id: &str) -> Result<TrainingJob, Status> {
        self.lookup(run_id, true).await
    }

    async fn lookup(&self, run_id: &str, cached: bool) -> Result<TrainingJob, Status> {
        let run_id = input::id("run_id", run_id)?;
        self.ctx
            .find_run(run_id, |_| cached)
            .await
            .map_err(errors::operator)?
            .ok_or_else(|| Status::not_found(format!("run {run_id} does not exist")))
    }

    /// Whether the run's TrainingJob is being deleted or gone, as the cache sees it now.
    async fn deleting(&self, run_id: &str) -> bool {
        match self.find_cached(run_id).await {
            Ok(job) => job.metadata.deletion_timestamp.is_some(),
            Err(status) => status.code() == tonic::Code::NotFound,
        }
    }

    /// The run's TrainingJob, when the request carries that run's token. The token is checked
    /// first, without any Kubernetes API call: a caller without a valid token costs a hash. An
    /// id that names no run and an id that names another run get the same answer.
    async fn authorize<T>(&self, request: &Request<T>, run_id: &str) -> Result<TrainingJob, Status> {
        let run = input::id("run_id", run_id)?;
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "writing to run {run} needs the run's token (authorization: Bearer <MINIAUTOML_RUN_TOKEN>)"
                ))
            })?;
        let tokens = &self
            .ctx
            .training
            .as_ref()
            .ok_or_else(|| {
                Status::failed_precondition("the operator runs no training: it takes no run reports")
            })?
            .run_tokens;
        // A report through the original contract's listener: the pod it came from.
        let pod = request
            .metadata()
            .get(REPORTING_POD)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let denied = || {
            Status::permission_denied(match &pod {
                Some(pod) => format!(
                    "pod {pod} may report only to its own run, not to run {run}: only the run's own pods may \
                     write to it"
                ),
                None => format!("the token is not run {run}'s: only the run's own pods may write to it"),
            })
        };
        let uid = tokens.verify(presented).ok_or_else(denied)?;
        let job = self
            .ctx
            .find_run_with_uid(run, uid)
            .await
            .map_err(errors::operator)?
            .ok_or_else(denied)?;
        if job.metadata.deletion_timestamp.is_some() {
            // Its storage is being cleaned: a late report would leave objects behind.
            return Err(Status::failed_precondition(format!(
                "run {run} is being deleted (TrainingJob {}): it takes no more reports",
                job.name_any()
            )));
        }
        Ok(job)
    }

    /// Refuses a report to a run that has ended: its token is spent.
    fn still_running(job: &TrainingJob) -> Result<(), Status> {
        match job.status.as_ref().and_then(|s| s.phase) {
            Some(phase @ (TrainingPhase::Succeeded | TrainingPhase::Failed)) => {
                Err(Status::failed_precondition(format!(
                    "run {} has ended ({phase:?}): its token takes no more reports",
                    job.run_id().unwrap_or_default()
                )))
            }
            _ => Ok(()),
        }
    }

    async fn update(
        &self,
        job: &TrainingJob,
        change: impl FnMut(&mut TrainingJob) -> bool,
    ) -> Result<TrainingJob, Status> {
        let api: Api<TrainingJob> =
            Api::namespaced(self.ctx.client.clone(), &job.namespace().unwrap_or_default());
        // The name may have been reused by a new TrainingJob since: never write into another run.
        let uid = job.uid();
        let mut change = change;
        // After any write of the run this process has under way, from its result.
        let written = self
            .ctx
            .written_runs
            .write(&api, job, |current| {
                current.uid() == uid && !current.has_ended() && change(current)
            })
            .await
            .map_err(errors::operator)?;
        if written.uid() != job.uid() {
            return Err(Status::not_found(format!(
                "run {} no longer exists",
                job.labels().get(RUN_ID_LABEL).cloned().unwrap_or_default()
            )));
        }
        Ok(written)
    }

    /// Writes the run's buffered epochs now.
    async fn flush(&self, job: &TrainingJob) -> Result<(), Status> {
        self.update_with_epochs(job, |_| false).await.map(drop)
    }

    /// [`MetadataStore::update`] with the run's buffered epochs merged in: one write for both
    /// (none when neither changes anything). Epochs taken here and not written (the write
    /// failed) are put back for the next write.
    async fn update_with_epochs(
        &self,
        job: &TrainingJob,
        mut change: impl FnMut(&mut TrainingJob) -> bool,
    ) -> Result<TrainingJob, Status> {
        let key = (job.namespace().unwrap_or_default(), job.name_any());
        let epochs = self
            .pending
            .lock()
            .expect("pending epochs")
            .remove(&key)
            .unwrap_or_default();
        let requested = job.spec.epochs();
        let written = self
            .update(job, |current| {
                if !epochs.is_empty() {
                    current
                        .status
                        .get_or_insert_with(Default::default)
                        .merge_epochs(&epochs, requested);
                }
                // Both run, whatever the first says.
                let changed = change(current);
                changed || !epochs.is_empty()
            })
            .await;
        if written.is_err() && !epochs.is_empty() {
            let mut pending = self.pending.lock().expect("pending epochs");
            let entry = pending.entry(key).or_default();
            let later = std::mem::replace(entry, epochs);
            entry.extend(later);
        }
        written
    }

    fn store(&self, bucket: &str) -> Result<Store, Status> {
        let store =
            self.ctx.store.as_ref().ok_or_else(|| {
                Status::failed_precondition("the operator has no object storage configured")
            })?;
        Ok(Store::new(store.client.clone(), bucket))
    }

    fn model_path(job: &TrainingJob) -> String {
        layout::model_prefix(
            &job.namespace().unwrap_or_default(),
            &job.name_any(),
            &job.uid().unwrap_or_default(),
        )
        .trim_end_matches('/')
        .to_string()
    }

    fn bucket(&self) -> String {
        self.ctx
            .store
            .as_ref()
            .map(|s| s.bucket.clone())
            .unwrap_or_default()
    }
}

/// Whether the caller may read `job` where it lives (it may be outside the gRPC namespace).
async fn readable<T>(request: &Request<T>, job: &TrainingJob) -> Result<(), Status> {
    auth::require(
        request.extensions(),
        Permission::GET_TRAINING_JOBS,
        &job.namespace().unwrap_or_default(),
    )
    .await
}

/// The original's RunInfo of a TrainingJob.
pub fn run_info(job: &TrainingJob) -> pb::RunInfo {
    let status = job.status.clone().unwrap_or_default();
    let run_id = status.run_id.clone().unwrap_or_default();
    pb::RunInfo {
        start_time: time_text(&status.start_time),
        end_time: time_text(&status.completion_time),
        success: status.phase == Some(miniautoml_api::training_job::TrainingPhase::Succeeded),
        message: status.message.clone().unwrap_or_default(),
        run_id: run_id.clone(),
        run_name: format!("training job {run_id}"),
        tracing: Some(pb::TracingInformation {
            dataset_id: job.caller_dataset_id(),
            version_hash: status.dataset_version_hash.clone().unwrap_or_default(),
            code_version: status.code_version.clone().unwrap_or_default(),
        }),
        epochs: status
            .epochs
            .iter()
            .map(|e| {
                (
                    e.id.clone(),
                    pb::EpochInfo {
                        start_time: time_text(&e.start_time),
                        end_time: time_text(&e.end_time),
                        run_id: run_id.clone(),
                        epoch_id: e.id.clone(),
                        metrics: e
                            .metrics
                            .iter()
                            .map(|(k, v)| (k.clone(), v.to_string()))
                            .collect(),
                    },
                )
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl MetadataStoreService for MetadataStore {
    async fn log_run_start(
        &self,
        request: Request<pb::LogRunStartRequest>,
    ) -> Result<Response<pb::LogRunStartResponse>, Status> {
        let run_id = request.get_ref().run_id.clone();
        let job = self.authorize(&request, &run_id).await?;
        Self::still_running(&job)?;
        let request = request.into_inner();
        let code_version = request.tracing.map(|t| t.code_version).filter(|v| !v.is_empty());
        let start = parse_time(&request.start_time).unwrap_or_else(|| Time(Timestamp::now()));
        let job = self
            .update(&job, |current| {
                let status = current.status.get_or_insert_with(Default::default);
                let before = status.clone();
                status.start_time.get_or_insert_with(|| start.clone());
                // The image digest, when the runtime reported one, names the code more exactly.
                let digest = status
                    .code_version
                    .as_deref()
                    .is_some_and(|v| v.contains("@sha256:"));
                if let Some(version) = code_version.as_ref().filter(|_| !digest) {
                    status.code_version = Some(version.clone());
                }
                *status != before
            })
            .await?;
        Ok(Response::new(pb::LogRunStartResponse {
            run_info: Some(run_info(&job)),
            bucket: self.bucket(),
            path: Self::model_path(&job),
        }))
    }

    async fn log_epoch(
        &self,
        request: Request<pb::LogEpochRequest>,
    ) -> Result<Response<pb::LogEpochResponse>, Status> {
        let epoch = request
            .get_ref()
            .epoch_info
            .clone()
            .ok_or_else(|| Status::invalid_argument("\"epochInfo\" is required."))?;
        let job = self.authorize(&request, &epoch.run_id).await?;
        Self::still_running(&job)?;
        input::key_segment("epoch_id", &epoch.epoch_id)?;
        let metrics = epoch_metrics(&epoch.metrics)?;
        let status = EpochStatus {
            id: epoch.epoch_id.clone(),
            start_time: parse_time(&epoch.start_time),
            end_time: parse_time(&epoch.end_time),
            metrics,
        };
        // The full history, one object per epoch.
        let history = layout::run_history_prefix(
            &job.namespace().unwrap_or_default(),
            &job.name_any(),
            &job.uid().unwrap_or_default(),
        );
        let store = self.store(&self.bucket())?;
        let body = serde_json::to_vec(&status).map_err(internal)?;
        let object = format!("{history}{}.json", epoch.epoch_id);
        store
            .put(&object, body, "application/json")
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // Deleted while this was written (a put held up by a slow store): the cleanup, which
        // starts only once the deletion is in the cache, may have listed the history already.
        if self.deleting(&epoch.run_id).await {
            store
                .delete_prefix(&object)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            return Err(Status::failed_precondition(format!(
                "run {} was deleted while epoch {} was being recorded",
                epoch.run_id, epoch.epoch_id
            )));
        }
        let key = (job.namespace().unwrap_or_default(), job.name_any());
        let first = {
            let mut pending = self.pending.lock().expect("pending epochs");
            let entry = pending.entry(key).or_default();
            entry.push(status);
            entry.len() == 1
        };
        if first {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(COALESCE).await;
                if let Err(error) = this.flush(&job).await {
                    tracing::warn!(%error, "writing epochs failed");
                }
            });
        }
        Ok(Response::new(pb::LogEpochResponse {
            epoch_info: Some(epoch),
        }))
    }

    async fn log_run_end(
        &self,
        request: Request<pb::LogRunEndRequest>,
    ) -> Result<Response<pb::LogRunEndResponse>, Status> {
        let run_id = request.get_ref().run_id.clone();
        let job = self.authorize(&request, &run_id).await?;
        if job.has_ended() {
            // A late retry of the report that ended it: answered as before, nothing changes.
            return Ok(Response::new(pb::LogRunEndResponse {
                run_info: Some(run_info(&job)),
            }));
        }
        let request = request.into_inner();
        let message = bounded_message(&request.message);
        let job = self
            .update_with_epochs(&job, |current| {
                let generation = current.metadata.generation;
                let status = current.status.get_or_insert_with(Default::default);
                let before = status.clone();
                // The first failure reported in an attempt is its cause (a gang's other ranks
                // report losing their peer after it): a later one does not replace it.
                let failure_reported = conditions::find(&status.conditions, FAILED)
                    .is_some_and(|c| c.status == "True" && c.reason == "TrainerFailed");
                if request.success || !failure_reported {
                    status.message = Some(message.clone());
                }
                if request.success {
                    if let Some(accuracy) = accuracy_in(&message) {
                        status.metrics.insert("accuracy".into(), accuracy);
                    }
                } else if !failure_reported {
                    let now = Time(Timestamp::now());
                    let conditions = &mut status.conditions;
                    conditions::At {
                        generation,
                        now: &now,
                    }
                    .set(conditions, FAILED, true, "TrainerFailed", message.clone());
                }
                *status != before
            })
            .await?;
        Ok(Response::new(pb::LogRunEndResponse {
            run_info: Some(run_info(&job)),
        }))
    }

    async fn get_run_status(
        &self,
        request: Request<pb::GetRunStatusRequest>,
    ) -> Result<Response<pb::GetRunStatusResponse>, Status> {
        let job = self.find(&request.get_ref().run_id).await?;
        readable(&request, &job).await?;
        Ok(Response::new(pb::GetRunStatusResponse {
            run_info: Some(run_info(&job)),
        }))
    }

    async fn create_artifact(
        &self,
        request: Request<pb::CreateArtifactRequest>,
    ) -> Result<Response<pb::CreateArtifactResponse>, Status> {
        let run_id = request.get_ref().run_id.clone();
        let job = self.authorize(&request, &run_id).await?;
        Self::still_running(&job)?;
        let request = request.into_inner();
        let artifact = request
            .artifact
            .clone()
            .ok_or_else(|| Status::invalid_argument("\"artifact\" is required."))?;
        let expected = Self::model_path(&job);
        let path = artifact.path.trim_matches('/').to_string();
        if artifact.bucket != self.bucket() || path != expected {
            return Err(Status::permission_denied(format!(
                "run {run_id}'s artifacts belong in s3://{}/{expected}/, not s3://{}/{}/",
                self.bucket(),
                input::shown(&artifact.bucket),
                input::shown(&path)
            )));
        }
        let store = self.store(&artifact.bucket)?;
        let mut files: Vec<String> = store
            .list(&artifact.bucket, &format!("{path}/"))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .into_iter()
            .filter_map(|key| key.strip_prefix(&format!("{path}/")).map(str::to_string))
            .collect();
        files.sort();
        if !files.iter().any(|f| f == "manifest.json") {
            return Err(Status::failed_precondition(format!(
                "s3://{}/{path}/ has no manifest.json: write every file, manifest last, before CreateArtifact",
                artifact.bucket
            )));
        }
        let manifest = store
            .read(&format!("{path}/manifest.json"))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let sha256 = {
            use sha2::{Digest, Sha256};
            Sha256::digest(&manifest)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let recorded = ArtifactStatus {
            uri: format!("s3://{}/{path}/", artifact.bucket),
            version: run_id.clone(),
            sha256: Some(sha256),
            files,
        };
        self.update_with_epochs(&job, |current| {
            let status = current.status.get_or_insert_with(Default::default);
            let changed = status.artifact.as_ref() != Some(&recorded);
            status.artifact = Some(recorded.clone());
            changed
        })
        .await?;
        Ok(Response::new(pb::CreateArtifactResponse {
            version: run_id.clone(),
            artifact: Some(artifact),
            run_id,
            name: job.spec.output_model_name.clone(),
            algorithm: request.algorithm,
        }))
    }

    async fn get_artifact(
        &self,
        request: Request<pb::GetArtifactRequest>,
    ) -> Result<Response<pb::GetArtifactResponse>, Status> {
        let run_id = request.get_ref().run_id.clone();
        let job = self.find(&run_id).await?;
        readable(&request, &job).await?;
        let artifact = job
            .status
            .as_ref()
            .and_then(|s| s.artifact.clone())
            .ok_or_else(|| Status::not_found(format!("run {run_id} has no artifact yet")))?;
        let path = artifact
            .uri
            .strip_prefix(&format!("s3://{}/", self.bucket()))
            .unwrap_or(&artifact.uri)
            .trim_end_matches('/')
            .to_string();
        Ok(Response::new(pb::GetArtifactResponse {
            name: job.spec.output_model_name.clone(),
            version: artifact.version.clone(),
            artifact: Some(FileInfo {
                name: job.spec.output_model_name.clone(),
                bucket: self.bucket(),
                path,
            }),
            run_id,
            algorithm: job.spec.algorithm.clone().unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_numbers_and_non_finite_ones_are_left_out() {
        let reported = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let kept = epoch_metrics(&reported(&[
            ("accuracy", " 0.71 "),
            ("loss", "NaN"),
            ("trainLoss", "inf"),
            ("macroF1", "-Infinity"),
        ]))
        .unwrap();
        assert_eq!(kept, BTreeMap::from([("accuracy".to_string(), 0.71)]));
        let refused = epoch_metrics(&reported(&[("accuracy", "high")])).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(refused.message(), "metric accuracy=\"high\" is not a number");
    }

    #[test]
    fn the_original_message_carries_the_accuracy() {
        assert_eq!(accuracy_in("test accuracy 0.712"), Some(0.712));
        assert_eq!(accuracy_in("test accuracy    0.712"), Some(0.712));
        assert_eq!(accuracy_in("test accuracy 0.637, macro-F1 0.581"), Some(0.637));
        assert_eq!(accuracy_in("trained 3 epochs"), None);
    }

    #[test]
    fn python_and_rfc3339_times_parse() {
        assert!(parse_time("2026-11-27T02:00:00Z").is_some());
        assert!(parse_time("2026-11-27T02:00:00.123456").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
