//! One training job under the training-image contract: `LogRunStart` → download the snapshot →
//! train (`LogEpoch` per epoch) → upload the artifacts → `CreateArtifact` → `LogRunEnd(true,
//! "test accuracy 0.xxx")`. Any failure after the run has started is reported with
//! `LogRunEnd(false, reason)` before the process exits non-zero.
//!
//! It trains on one worker (`WORLD_SIZE=1`; more is refused with a reason, since every rank
//! would train the same model on the same data) and reports its epochs as `"<rank>-<epoch>"`,
//! as the original contract's ranks do.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use miniautoml_data::{StorageError, Store};
use miniautoml_intent_model::ARTIFACT_FILES;
use miniautoml_proto::data_management::FileInfo;
use miniautoml_proto::metadata_store::metadata_store_service_client::MetadataStoreServiceClient;
use miniautoml_proto::metadata_store::{
    CreateArtifactRequest, EpochInfo, LogEpochRequest, LogRunEndRequest, LogRunStartRequest,
    TracingInformation,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::contract::{JobConfig, endpoint_url};
use crate::data::Examples;
use crate::package::{CODE_VERSION, Provenance, package};
use crate::train::{EpochReport, describe_epoch, describe_refit, train, training_device};
use crate::{Error, Result};

/// Sends the run's token with every call.
#[derive(Clone)]
struct RunToken(Option<MetadataValue<Ascii>>);

impl Interceptor for RunToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Client = MetadataStoreServiceClient<InterceptedService<Channel, RunToken>>;

/// How the run ended, for the caller's exit status and log.
#[derive(Debug)]
pub struct Outcome {
    /// The message given to `LogRunEnd` (rank 0), or a summary.
    pub message: String,
}

/// RFC 3339 time, as the original's `datetime.isoformat()` strings.
fn timestamp(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Whether a failed call may be sent again: the server was unreachable, or the connection broke
/// mid-call (an operator restarting). Every metadata write is idempotent on the server (an epoch
/// id, an artifact and a run's end are recorded once), so a repeat is harmless.
fn retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::Cancelled => true,
        Code::Unknown | Code::Internal => {
            let message = status.message().to_lowercase();
            ["transport", "connection", "h2 protocol", "broken pipe", "reset"]
                .iter()
                .any(|sign| message.contains(sign))
        }
        _ => false,
    }
}

/// Calls the metadata store, retrying while it is unreachable or the connection breaks (an
/// operator restarting) for up to about a minute.
async fn call<R, T, F, Fut>(what: &str, client: &Client, request: R, send: F) -> Result<T>
where
    R: Clone,
    F: Fn(Client, R) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    // 250 ms doubling to 4 s, for at most about a minute in all.
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(4))
        .with_total_delay(Some(Duration::from_secs(60)))
        .without_max_times();
    let response = (|| send(client.clone(), request.clone()))
        .retry(backoff)
        .when(retryable)
        .await
        .map_err(|status| {
            Error::Metadata(format!(
                "metadata store {what}: {:?}: {}",
                status.code(),
                status.message()
            ))
        })?;
    Ok(response.into_inner())
}

/// Runs one training job from the environment.
pub fn run_from_env() -> Result<()> {
    let config = match JobConfig::from_lookup(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            if let (Ok(job_id), Ok(server)) =
                (std::env::var("JOB_ID"), std::env::var("METADATA_STORE_SERVER"))
            {
                let ca = std::env::var(crate::contract::CA_VARIABLE).ok();
                report_early_failure(&job_id, &server, ca.as_deref(), &error.to_string());
            }
            return Err(error);
        }
    };
    let outcome = run(&config)?;
    println!("run {} done: {}", config.job_id, outcome.message);
    Ok(())
}

/// Runs the job described by `config`.
pub fn run(config: &JobConfig) -> Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Metadata(format!("cannot start the runtime: {e}")))?;
    // The lazy channel spawns its connection task on this runtime.
    let _entered = runtime.enter();
    let client = connect(config)?;
    let start = runtime.block_on(call(
        "LogRunStart",
        &client,
        LogRunStartRequest {
            start_time: timestamp(SystemTime::now()),
            run_id: config.job_id.clone(),
            run_name: format!("training job {}", config.job_id),
            tracing: Some(TracingInformation {
                dataset_id: config.dataset_id.clone(),
                version_hash: config.version_hash.clone(),
                code_version: CODE_VERSION.into(),
            }),
        },
        |mut c, r| async move { c.log_run_start(r).await },
    ))?;
    let bucket = Some(start.bucket)
        .filter(|b| !b.is_empty())
        .or_else(|| config.model_bucket.clone());
    let outcome = match bucket {
        None => Err(Error::Contract(
            "LogRunStart named no artifact bucket and MODEL_BUCKET is not set".into(),
        )),
        Some(bucket) => run_started(config, &runtime, &client, &bucket, start.path.trim_matches('/')),
    };
    match outcome {
        Ok(outcome) => Ok(outcome),
        Err(error) => {
            let reason = error.to_string();
            // The run is reported failed even when the failure was the metadata store itself;
            // if that call fails too, the exit status still tells the operator.
            let _ = runtime.block_on(call(
                "LogRunEnd",
                &client,
                LogRunEndRequest {
                    run_id: config.job_id.clone(),
                    end_time: timestamp(SystemTime::now()),
                    success: false,
                    message: reason.clone(),
                },
                |mut c, r| async move { c.log_run_end(r).await },
            ));
            Err(error)
        }
    }
}

/// Reports a failure that happened before the job could start (a contract error) when the
/// environment at least names the run and the metadata store.
pub fn report_early_failure(job_id: &str, metadata_store: &str, ca: Option<&str>, reason: &str) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    let Ok(endpoint) = endpoint_url(metadata_store) else {
        return;
    };
    let _ = runtime.block_on(async {
        let channel = metadata_endpoint(endpoint, ca)
            .ok()?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .ok()?;
        let token = std::env::var(crate::contract::RUN_TOKEN_VARIABLE).ok();
        let mut client =
            MetadataStoreServiceClient::with_interceptor(channel, RunToken(bearer(token.as_deref())));
        client
            .log_run_end(LogRunEndRequest {
                run_id: job_id.into(),
                end_time: timestamp(SystemTime::now()),
                success: false,
                message: reason.into(),
            })
            .await
            .ok()
    });
}

fn bearer(token: Option<&str>) -> Option<MetadataValue<Ascii>> {
    token.and_then(|t| format!("Bearer {t}").parse().ok())
}

/// The metadata store's endpoint, checking its certificate against `ca` when given.
fn metadata_endpoint(
    url: String,
    ca: Option<&str>,
) -> std::result::Result<Endpoint, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url)?;
    match ca {
        Some(ca) => endpoint.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca))),
        None => Ok(endpoint),
    }
}

fn connect(config: &JobConfig) -> Result<Client> {
    let endpoint = endpoint_url(&config.metadata_store).map_err(Error::Contract)?;
    let channel = metadata_endpoint(endpoint, config.metadata_store_ca.as_deref())
        .map_err(|e| Error::Contract(format!("METADATA_STORE_SERVER={:?}: {e}", config.metadata_store)))?
        .connect_timeout(Duration::from_secs(10))
        .connect_lazy();
    if config.run_token.is_some() && bearer(config.run_token.as_deref()).is_none() {
        return Err(Error::Contract(format!(
            "{}: not a valid header value",
            crate::contract::RUN_TOKEN_VARIABLE
        )));
    }
    Ok(MetadataStoreServiceClient::with_interceptor(
        channel,
        RunToken(bearer(config.run_token.as_deref())),
    ))
}

fn run_started(
    config: &JobConfig,
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    model_bucket: &str,
    model_path: &str,
) -> Result<Outcome> {
    let hyperparameters = &config.hyperparameters;
    let data = Store::with_session_token(
        Some(&config.s3_endpoint),
        &config.s3_region,
        (
            &config.access_key,
            &config.secret_key,
            config.session_token.as_deref(),
        ),
        &config.data_bucket,
    )
    .for_new_pod();
    let read = |name: &str| {
        let key = format!("{}/{name}", config.data_path);
        runtime
            .block_on(data.read(&key))
            .map_err(|e| Error::Storage(format!("training data {name}: {e}")))
    };
    let examples = Examples::from_snapshot(&read("examples.csv")?, &read("labels.csv")?)?;
    let split = hyperparameters.split(examples.len())?;
    let device = training_device()?;
    println!(
        "run {} rank {}/{}: {} on {} examples ({} train, {} validation, {} test), {} labels, on {device:?}",
        config.job_id,
        config.rank,
        config.world_size,
        hyperparameters.architecture.name(),
        examples.len(),
        split.train.len(),
        split.validation.len(),
        split.test.len(),
        examples.labels.len()
    );
    let trained = train(&examples, &split, hyperparameters, &device, |report| {
        println!("{}", describe_epoch(report));
        runtime.block_on(call(
            "LogEpoch",
            client,
            LogEpochRequest {
                epoch_info: Some(epoch_info(config, report)),
            },
            |mut c, r| async move { c.log_epoch(r).await },
        ))?;
        Ok(())
    })?;
    if let Some(refit) = trained.refit {
        println!("{}", describe_refit(&refit));
    }
    let provenance = Provenance {
        algorithm: config.algorithm.clone(),
        data: BTreeMap::from([
            ("datasetId".to_string(), config.dataset_id.clone()),
            ("versionHash".to_string(), config.version_hash.clone()),
            (
                "source".to_string(),
                format!("s3://{}/{}", config.data_bucket, config.data_path),
            ),
        ]),
    };
    let packaged = package(&trained, &examples, &split, hyperparameters, &provenance)?;
    let models = Store::with_session_token(
        Some(&config.s3_endpoint),
        &config.s3_region,
        (
            &config.access_key,
            &config.secret_key,
            config.session_token.as_deref(),
        ),
        model_bucket,
    )
    .for_new_pod();
    runtime.block_on(upload(&models, model_path, &packaged.files.files))?;
    runtime.block_on(call(
        "CreateArtifact",
        client,
        CreateArtifactRequest {
            artifact: Some(FileInfo {
                name: config.model_name.clone(),
                bucket: model_bucket.to_string(),
                path: model_path.to_string(),
            }),
            run_id: config.job_id.clone(),
            algorithm: config.algorithm.clone(),
        },
        |mut c, r| async move { c.create_artifact(r).await },
    ))?;
    let message = match (packaged.test, trained.epochs.last().and_then(|e| e.validation)) {
        (Some(test), _) => match trained.refit {
            Some(refit) => format!(
                "test accuracy {:.3} macro-F1 {:.3}, refit on train + validation ({} examples, {} epochs)",
                test.accuracy, test.macro_f1, refit.examples, refit.epochs
            ),
            None => format!("test accuracy {:.3} macro-F1 {:.3}", test.accuracy, test.macro_f1),
        },
        (None, Some((validation, _))) => format!("validation accuracy {:.3}", validation.accuracy),
        (None, None) => format!("trained {} epochs", trained.epochs.len()),
    };
    runtime.block_on(call(
        "LogRunEnd",
        client,
        LogRunEndRequest {
            run_id: config.job_id.clone(),
            end_time: timestamp(SystemTime::now()),
            success: true,
            message: message.clone(),
        },
        |mut c, r| async move { c.log_run_end(r).await },
    ))?;
    Ok(Outcome { message })
}

/// The epoch as the original reported it (`accuracy` is validation accuracy), plus loss and
/// macro-F1.
fn epoch_info(config: &JobConfig, report: &EpochReport) -> EpochInfo {
    let mut metrics = BTreeMap::from([("trainLoss".to_string(), format!("{:.6}", report.train_loss))]);
    if let Some((scores, loss)) = report.validation {
        metrics.insert("accuracy".into(), format!("{:.6}", scores.accuracy));
        metrics.insert("macroF1".into(), format!("{:.6}", scores.macro_f1));
        metrics.insert("loss".into(), format!("{loss:.6}"));
    }
    EpochInfo {
        start_time: timestamp(report.started),
        end_time: timestamp(report.finished),
        run_id: config.job_id.clone(),
        epoch_id: format!("{}-{}", config.rank, report.epoch),
        metrics,
    }
}

/// Uploads the artifacts under `path`, manifest last, refusing to touch a folder that already
/// holds objects: a run's artifacts are immutable.
async fn upload(store: &Store, path: &str, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    let prefix = format!("{path}/");
    let existing = while_unavailable(|| store.list(&store.bucket, &prefix))
        .await
        .map_err(|e| Error::Storage(format!("artifacts: {e}")))?;
    if !existing.is_empty() {
        return Err(Error::Storage(format!(
            "s3://{}/{prefix} already holds {} objects (e.g. {}); a run's artifacts are never overwritten",
            store.bucket,
            existing.len(),
            existing[0]
        )));
    }
    for name in ARTIFACT_FILES {
        let content_type = if name.ends_with(".json") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let key = format!("{prefix}{name}");
        while_unavailable(|| store.put(&key, files[name].clone(), content_type))
            .await
            .map_err(|e| Error::Storage(format!("artifact {name}: {e}")))?;
    }
    Ok(())
}

/// Runs a storage call again while the store is unreachable (restarting, or overloaded for a
/// moment) for up to about a minute, as [`call`] does for the metadata store: a trained model is
/// not lost to a short outage. Refusals (denied, not found) are final at once.
async fn while_unavailable<T, F, Fut>(attempt: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(4))
        .with_total_delay(Some(Duration::from_secs(60)))
        .without_max_times();
    attempt
        .retry(backoff)
        .when(|error| matches!(error, StorageError::Unavailable(_)))
        .await
}
