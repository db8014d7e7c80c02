//! The MiniAutoML operator: controllers for Dataset, TrainingJob and ModelDeployment, the admin
//! HTTP server and the gRPC API server, in one process.

pub mod admin;
pub mod conditions;
pub mod config;
pub mod controller;
mod error;
pub mod grpc;
pub mod ids;
pub mod metrics;
pub mod names;
pub mod preflight;
pub mod readiness;
pub mod snapshots;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

pub use crate::error::{Error, Result};
use crate::{config::Config, controller::Context, metrics::Metrics, readiness::Readiness};

/// Runs the operator until `shutdown` fires or a server fails: claims its ports, checks the CRDs
/// are installed, then serves admin and gRPC and runs the controllers. Every part stops gracefully on shutdown.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let admin_listener = bind("admin", config.admin_addr).await?;
    let grpc_listener = bind("gRPC", config.grpc_addr).await?;
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| Error::KubeConfig(e.to_string()))?;
    let api_url = kube_config.cluster_url.to_string();
    let metrics = Arc::new(Metrics::default());
    // Every API request is counted (`miniautoml_operator_kube_api_requests_total`).
    let counted = metrics.clone();
    let counting =
        tower::util::MapRequestLayer::new(move |request: axum::http::Request<kube::client::Body>| {
            counted.api_request(metrics::api_verb(request.method(), request.uri().query()));
            request
        });
    let client = kube::client::ClientBuilder::try_from(kube_config)
        .map_err(|e| Error::KubeConfig(e.to_string()))?
        .with_layer(&counting)
        .build();
    preflight::check_crds(&client)
        .await
        .map_err(|error| match error {
            Error::Kube(source @ (kube::Error::Service(_) | kube::Error::HyperError(_))) => {
                Error::Unreachable { url: api_url, source }
            }
            other => other,
        })?;
    info!("CRDs installed");

    let readiness = Readiness::default();
    let store = storage(&config);
    let mut ctx = Context::new(
        client,
        metrics.clone(),
        config.algorithm_images(),
        store,
        std::env::var("POD_NAME").ok(),
    );
    ctx.watch_namespace = config.watch_namespace.clone();
    ctx.training = training_settings(&config);
    ctx.serving = predictor_settings(&config);
    let ctx = Arc::new(ctx);

    // A server that cannot start stops everything, so the process exits with its error.
    let stop_on_error = |result: Result<()>| {
        if result.is_err() {
            shutdown.cancel();
        }
        result
    };
    let admin = async {
        stop_on_error(admin::serve(admin_listener, metrics, readiness.clone(), shutdown.clone()).await)
    };
    let data = grpc::data_management::DataManagement::new(ctx.clone(), config.grpc_namespace.clone());
    let metadata = grpc::metadata_store::MetadataStore::new(ctx.clone());
    let training = grpc::training::Training::new(ctx.clone(), config.grpc_namespace.clone());
    let prediction = grpc::prediction::Prediction::new(ctx.clone(), config.predict_deploy_timeout);
    let grpc = async {
        stop_on_error(
            grpc::serve(
                grpc_listener,
                readiness.clone(),
                shutdown.clone(),
                grpc::Services {
                    data: Some(data),
                    metadata: Some(metadata),
                    training: Some(training),
                    prediction: Some(prediction),
                },
            )
            .await,
        )
    };
    let controllers = controller::run(ctx, readiness.clone(), shutdown.clone());
    let (admin, grpc, ()) = tokio::join!(admin, grpc, controllers);
    admin.and(grpc)
}

/// What training runs need, when storage credentials and the metadata store address are set.
fn training_settings(config: &Config) -> Option<controller::TrainingSettings> {
    let (Ok(access_key), Ok(secret_key)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        return None;
    };
    let Some(address) = config.metadata_store_address.clone() else {
        tracing::warn!("no --metadata-store-address: TrainingJobs will wait until one is configured");
        return None;
    };
    Some(controller::TrainingSettings {
        metadata_store_address: address,
        s3_endpoint: config.s3_endpoint.clone(),
        s3_region: config.s3_region.clone(),
        bucket: config.bucket.clone(),
        credentials: (access_key, secret_key),
        id_namespace: config.grpc_namespace.clone(),
        max_concurrent_runs: config.max_concurrent_runs,
    })
}

/// What predictors need, when storage credentials are set.
fn predictor_settings(config: &Config) -> Option<controller::model_deployment::build::PredictorSettings> {
    let (Ok(access_key), Ok(secret_key)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        return None;
    };
    Some(controller::model_deployment::build::PredictorSettings {
        image: config.predictor_image.clone(),
        s3_endpoint: config.s3_endpoint.clone(),
        s3_region: config.s3_region.clone(),
        credentials: (access_key, secret_key),
    })
}

/// The bucket, when credentials are in the environment (AWS_ACCESS_KEY_ID and
/// AWS_SECRET_ACCESS_KEY; never flags, which `ps` would show).
fn storage(config: &Config) -> Option<miniautoml_data::Store> {
    let (Ok(access_key), Ok(secret_key)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        tracing::warn!("no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: object storage is not configured");
        return None;
    };
    info!(endpoint = ?config.s3_endpoint, bucket = config.bucket, "object storage configured");
    Some(miniautoml_data::Store::with_credentials(
        config.s3_endpoint.as_deref(),
        &config.s3_region,
        &access_key,
        &secret_key,
        &config.bucket,
    ))
}

async fn bind(server: &'static str, addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { server, addr, source })
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received, shutting down"),
                _ = int.recv() => info!("SIGINT received, shutting down"),
            }
        }
        _ => {
            // Without signal handlers the default action (exit) still stops the process.
            std::future::pending::<()>().await;
        }
    }
}
