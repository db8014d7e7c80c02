//! A simulated trainer for TrainingJob pods that kwok "runs" on simulated (GPU) nodes.
//!
//! Nothing executes there, so [`SimulatedTrainer::finish`] does what the trainer would: with the
//! run's token (from the run's Secret, which only its pods mount) it reports the run start, some
//! epochs, an artifact (a manifest written to the folder LogRunStart names) and the run end
//! through the operator's MetadataStoreService. Then it annotates the pod with an exit code, and
//! the local cluster's kwok stage `training-run-end` (hack/cluster/kwok-stages) terminates the
//! container with it. Pods of TrainingJobs on simulated nodes stay Running until then.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use miniautoml_proto::{
    data_management::FileInfo,
    metadata_store::{
        CreateArtifactRequest, EpochInfo, LogEpochRequest, LogRunEndRequest, LogRunStartRequest,
        metadata_store_service_client::MetadataStoreServiceClient,
    },
};
use tonic::{Request, transport::Channel};

use crate::{Error, Result};

/// The pod annotation kwok's `training-run-end` stage turns into the container's exit code.
pub const EXIT_CODE_ANNOTATION: &str = "kwok.miniautoml.io/exit-code";
/// Label of a run's objects naming its TrainingJob (the operator's `TRAINING_JOB_LABEL`).
const TRAINING_JOB_LABEL: &str = "miniautoml.io/trainingjob";
/// Label of a run's objects carrying its run id.
const RUN_ID_LABEL: &str = "miniautoml.io/run-id";

/// Plays the trainer of runs whose pods kwok simulates.
#[derive(Clone)]
pub struct SimulatedTrainer {
    client: Client,
    s3: aws_sdk_s3::Client,
    metadata: MetadataStoreServiceClient<Channel>,
}

fn failed(what: &str) -> impl FnOnce(tonic::Status) -> Error + '_ {
    move |status| Error::Simulation(format!("{what}: {}: {}", status.code(), status.message()))
}

/// `message` with the run's token, as the trainer sends it.
fn authorized<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("a token is ASCII");
    request.metadata_mut().insert("authorization", value);
    request
}

impl SimulatedTrainer {
    /// Connects to the operator's gRPC API at `grpc_addr`; `s3` writes the artifact.
    pub async fn connect(client: Client, s3: aws_sdk_s3::Client, grpc_addr: SocketAddr) -> Result<Self> {
        let metadata = MetadataStoreServiceClient::connect(format!("http://{grpc_addr}"))
            .await
            .map_err(|e| Error::Simulation(format!("connecting to {grpc_addr}: {e}")))?;
        Ok(SimulatedTrainer { client, s3, metadata })
    }

    /// Reports the run of `pod` (a TrainingJob's worker) as a successful trainer would, with
    /// `epochs` epochs, then lets kwok end the pod with exit code 0.
    pub async fn finish(&self, pod: &Pod, epochs: u32) -> Result<()> {
        let namespace = pod.namespace().unwrap_or_default();
        let training_job = pod
            .labels()
            .get(TRAINING_JOB_LABEL)
            .ok_or_else(|| Error::Simulation(format!("pod {} is no TrainingJob's", pod.name_any())))?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let secret = secrets
            .list(&ListParams::default().labels(&format!("{TRAINING_JOB_LABEL}={training_job}")))
            .await?
            .items
            .into_iter()
            .next()
            .ok_or_else(|| Error::Simulation(format!("TrainingJob {training_job} has no run Secret")))?;
        let run_id = secret.labels().get(RUN_ID_LABEL).cloned().unwrap_or_default();
        let token = secret
            .data
            .as_ref()
            .and_then(|d| d.get("token"))
            .map(|t| String::from_utf8_lossy(&t.0).to_string())
            .ok_or_else(|| Error::Simulation(format!("Secret {} has no token", secret.name_any())))?;
        let mut metadata = self.metadata.clone();
        let now = || k8s_openapi::jiff::Timestamp::now().to_string();

        let started = metadata
            .log_run_start(authorized(
                &token,
                LogRunStartRequest {
                    start_time: now(),
                    run_id: run_id.clone(),
                    run_name: format!("simulated run {run_id}"),
                    tracing: None,
                },
            ))
            .await
            .map_err(failed("LogRunStart"))?
            .into_inner();
        for epoch in 1..=epochs {
            let accuracy = 0.5 + 0.4 * f64::from(epoch) / f64::from(epochs.max(1));
            metadata
                .log_epoch(authorized(
                    &token,
                    LogEpochRequest {
                        epoch_info: Some(EpochInfo {
                            start_time: now(),
                            end_time: now(),
                            run_id: run_id.clone(),
                            epoch_id: format!("0-{epoch}"),
                            metrics: [("accuracy".to_string(), format!("{accuracy:.3}"))].into(),
                        }),
                    },
                ))
                .await
                .map_err(failed("LogEpoch"))?;
        }
        let folder = started.path.trim_matches('/').to_string();
        self.s3
            .put_object()
            .bucket(&started.bucket)
            .key(format!("{folder}/manifest.json"))
            .body(
                format!("{{\"simulated\": true, \"run\": \"{run_id}\"}}\n")
                    .into_bytes()
                    .into(),
            )
            .send()
            .await
            .map_err(|e| Error::Simulation(format!("writing the manifest: {e:?}")))?;
        metadata
            .create_artifact(authorized(
                &token,
                CreateArtifactRequest {
                    artifact: Some(FileInfo {
                        name: "simulated".into(),
                        bucket: started.bucket.clone(),
                        path: folder,
                    }),
                    run_id: run_id.clone(),
                    algorithm: "simulated".into(),
                },
            ))
            .await
            .map_err(failed("CreateArtifact"))?;
        metadata
            .log_run_end(authorized(
                &token,
                LogRunEndRequest {
                    run_id,
                    end_time: now(),
                    success: true,
                    message: "test accuracy 0.900".into(),
                },
            ))
            .await
            .map_err(failed("LogRunEnd"))?;
        self.exit(pod, 0).await
    }

    /// Lets kwok end `pod`'s containers with `code`.
    pub async fn exit(&self, pod: &Pod, code: i32) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch =
            serde_json::json!({"metadata": {"annotations": {EXIT_CODE_ANNOTATION: code.to_string()}}});
        pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}
