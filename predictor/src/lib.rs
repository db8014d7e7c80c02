//! The MiniAutoML predictor: one trained model served over gRPC (`prediction.Predictor` and
//! `prediction.PredictionService`, with health and reflection) and HTTP (Open Inference Protocol
//! v2, `/metrics`).
//!
//! Start-up: both listeners open at once and report not ready; the artifacts are fetched and
//! verified against the manifest's checksums; only then does the predictor report ready. A
//! missing or corrupt artifact ends the process with a non-zero exit and the reason.
//!
//! Shut-down (SIGTERM): readiness turns false at once while requests are still served for
//! `--shutdown-delay`, so endpoints stop routing here first; then the listeners close and
//! in-flight requests finish.

pub mod config;
mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod model;
mod state;

use std::{net::SocketAddr, sync::Arc};

pub use config::Config;
pub use error::{Error, Result};
pub use miniautoml_proto::shutdown::termination_signal;
pub use model::{Model, Rejection, Source};
pub use state::State;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The bound listeners, so that tests can use port 0.
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &Config) -> Result<Listeners> {
        Ok(Listeners {
            grpc: bind("gRPC", &config.host, config.grpc_port).await?,
            http: bind("HTTP", &config.host, config.http_port).await?,
        })
    }
}

async fn bind(server: &'static str, host: &str, port: u16) -> Result<TcpListener> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    TcpListener::bind(&addr)
        .await
        .map_err(|source| Error::Serve { server, addr, source })
}

fn local_addr(server: &'static str, listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Serve {
        server,
        addr: "?".into(),
        source,
    })
}

/// Runs the predictor until `stop` resolves (or the model fails to load).
pub async fn run(config: Config, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let listeners = Listeners::bind(&config).await?;
    serve(config, listeners, stop).await
}

/// Serves on `listeners`: loads the model, reports ready, serves until `stop`, then drains.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let source = Source::parse(&config.model_uri)?;
    let state = Arc::new(State::new(&config));
    let close = CancellationToken::new();
    let grpc_addr = local_addr("gRPC", &listeners.grpc)?;
    let http_addr = local_addr("HTTP", &listeners.http)?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let mut grpc = tokio::spawn(grpc::serve(
        listeners.grpc,
        state.clone(),
        health,
        close.clone().cancelled_owned(),
    ));
    let mut http = tokio::spawn(http::serve(
        listeners.http,
        state.clone(),
        close.clone().cancelled_owned(),
    ));
    tracing::info!(%grpc_addr, %http_addr, model = %config.model_uri, "loading the model");

    let started = std::time::Instant::now();
    let loaded = tokio::select! {
        loaded = load(&source, &config) => loaded,
        result = &mut grpc => return server_ended("gRPC", result),
        result = &mut http => return server_ended("HTTP", result),
    };
    let model = match loaded {
        Ok(model) => model,
        Err(error) => {
            close.cancel();
            let _ = tokio::join!(grpc, http);
            return Err(error);
        }
    };
    tracing::info!(
        labels = model.labels().len(),
        architecture = model.manifest().architecture.name(),
        run = model.run_id.as_deref().unwrap_or("-"),
        version = %model.version,
        seconds = started.elapsed().as_secs_f64(),
        "model loaded and verified; ready"
    );
    state.set_model(model);
    grpc::set_serving(&health_reporter, true).await;

    tokio::select! {
        _ = stop => {}
        result = &mut grpc => return server_ended("gRPC", result),
        result = &mut http => return server_ended("HTTP", result),
    }
    state.stop();
    grpc::set_serving(&health_reporter, false).await;
    tracing::info!(
        delay_seconds = config.shutdown_delay.as_secs_f64(),
        "stopping: not ready, serving on until endpoints drop this predictor"
    );
    tokio::time::sleep(config.shutdown_delay).await;
    close.cancel();
    let (grpc, http) = tokio::join!(grpc, http);
    server_result("gRPC", grpc)?;
    server_result("HTTP", http)?;
    tracing::info!("in-flight requests finished; stopped");
    Ok(())
}

async fn load(source: &Source, config: &Config) -> Result<Model> {
    let files = model::fetch(source, config).await?;
    let config = config.clone();
    tokio::task::spawn_blocking(move || Model::new(&files, &config))
        .await
        .expect("loading a model does not panic")
}

type Joined = std::result::Result<Result<()>, tokio::task::JoinError>;

fn server_result(server: &'static str, result: Joined) -> Result<()> {
    match result {
        Ok(result) => result,
        Err(e) => Err(Error::Serve {
            server,
            addr: "-".into(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

fn server_ended(server: &'static str, result: Joined) -> Result<()> {
    server_result(server, result)?;
    Err(Error::Serve {
        server,
        addr: "-".into(),
        source: std::io::Error::other("stopped unexpectedly"),
    })
}
