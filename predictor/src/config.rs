//! Predictor configuration: command-line flags, each also settable through an environment
//! variable (the ModelDeployment controller sets the environment).

use std::time::Duration;

use clap::Parser;

/// Port of the gRPC API (`prediction.Predictor`, `prediction.PredictionService`, health,
/// reflection).
pub const DEFAULT_GRPC_PORT: u16 = 8081;
/// Port of the HTTP API (Open Inference Protocol v2, `/metrics`).
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Longest document accepted, in bytes of UTF-8.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// MiniAutoML predictor: serves one trained model over gRPC and HTTP.
#[derive(Clone, Parser)]
#[command(name = "miniautoml-predictor", version)]
pub struct Config {
    /// Where the model's artifacts are: `s3://BUCKET/PREFIX/` (the TrainingJob's
    /// `status.artifact.uri`) or a local directory (`file:///path` or a plain path).
    #[arg(long, env = "MODEL_URI")]
    pub model_uri: String,

    /// The model's name in the HTTP API (`/v2/models/{name}`).
    #[arg(long, env = "MODEL_NAME", default_value = "model")]
    pub model_name: String,

    /// The run id whose model this is. Requests naming another run are refused with NOT_FOUND;
    /// requests naming none are served.
    #[arg(long, env = "RUN_ID")]
    pub run_id: Option<String>,

    /// The sha256 (hex) of `manifest.json` that the run recorded (the TrainingJob's
    /// `status.artifact.sha256`): a model whose manifest differs was changed since it was
    /// trained, and is refused. Unset: not checked (a model served from a directory).
    #[arg(long, env = "MODEL_SHA256")]
    pub model_sha256: Option<String>,

    /// The artifact version reported by the HTTP API (default: the run id, else `1`).
    #[arg(long, env = "MODEL_VERSION")]
    pub model_version: Option<String>,

    /// Address to listen on: every interface by default, loopback included, so that `kubectl
    /// port-forward` (which connects inside the pod to localhost) reaches the predictor.
    #[arg(long, env = "PREDICTOR_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// gRPC port.
    #[arg(long, env = "PREDICTOR_GRPC_PORT", default_value_t = DEFAULT_GRPC_PORT)]
    pub grpc_port: u16,

    /// HTTP port.
    #[arg(long, env = "PREDICTOR_HTTP_PORT", default_value_t = DEFAULT_HTTP_PORT)]
    pub http_port: u16,

    /// Longest document accepted, in bytes; a longer one is refused with INVALID_ARGUMENT
    /// (HTTP 400). Whole requests larger than four times this are refused by the transport.
    #[arg(long, env = "PREDICTOR_MAX_DOCUMENT_BYTES", default_value_t = DEFAULT_MAX_DOCUMENT_BYTES)]
    pub max_document_bytes: usize,

    /// After SIGTERM, how long to keep serving while reporting not ready, so that endpoints
    /// stop routing here before the listeners close; in-flight requests then finish.
    #[arg(long, env = "PREDICTOR_SHUTDOWN_DELAY", value_parser = parse_seconds, default_value = "5")]
    pub shutdown_delay: Duration,

    /// S3 endpoint URL (MinIO, s3s-fs, ...); unset: AWS S3.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// S3 access key (environment only in a pod: from a Secret).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key: Option<String>,

    /// S3 secret key (environment only in a pod: from a Secret).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,

    /// S3 session token of a temporary key (environment only in a pod: from a Secret).
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.0..=3600.0).contains(&seconds) {
        return Err(format!("{text}: expected 0 to 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl Config {
    /// The artifact version to report.
    pub fn version(&self) -> String {
        self.model_version
            .clone()
            .or_else(|| self.run_id.clone())
            .unwrap_or_else(|| "1".into())
    }
}
