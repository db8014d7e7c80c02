//! Operator configuration: command-line flags, each also settable through an environment variable.

use std::{collections::BTreeMap, net::SocketAddr};

use clap::Parser;
use k8s_openapi::api::core::v1::SecurityContext;

use crate::run_tokens::RunTokens;

/// Default port of the gRPC API, as in the original system.
pub const DEFAULT_GRPC_PORT: u16 = 51001;

/// MiniAutoML operator: reconciles Datasets, TrainingJobs and ModelDeployments and serves the
/// original system's gRPC API.
#[derive(Clone, Debug, Parser)]
#[command(name = "miniautoml-operator", version)]
pub struct Config {
    /// Address of the admin HTTP server (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "MINIAUTOML_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Address of the gRPC API server (with reflection and health).
    #[arg(long, env = "MINIAUTOML_GRPC_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_GRPC_PORT)))]
    pub grpc_addr: SocketAddr,

    /// Who may call the gRPC API: `kubernetes` (a bearer token the API server accepts, whose
    /// user has the method's permission in the gRPC namespace) or `none` (anyone who reaches
    /// the port, as in the original system: a local lab only).
    #[arg(long, env = "MINIAUTOML_GRPC_AUTH", value_enum, default_value_t = GrpcAuth::Kubernetes)]
    pub grpc_auth: GrpcAuth,

    /// The audience gRPC callers' tokens must be issued for (`kubectl create token NAME
    /// --audience miniautoml`): a token made for the API server itself (any pod's own) is
    /// refused, so a caller never hands the operator a token that could act on the cluster.
    #[arg(long, env = "MINIAUTOML_GRPC_TOKEN_AUDIENCE", default_value = "miniautoml")]
    pub grpc_token_audience: String,

    /// Serve the gRPC and admin listeners over TLS only, with `tls.crt` and `tls.key` from this
    /// directory (a `kubernetes.io/tls` Secret mounted as a volume, as cert-manager writes it),
    /// read again when they change. Trainers and forwarding replicas then call over TLS too,
    /// trusting `ca.crt` (or, without one, `tls.crt`) and checking the certificate names the
    /// host of `--metadata-store-address`.
    #[arg(long, env = "MINIAUTOML_TLS_DIR")]
    pub tls_dir: Option<std::path::PathBuf>,

    /// Algorithm name to training image, `NAME=IMAGE`; repeat the flag or separate with commas.
    /// A TrainingJob naming an algorithm not listed here is rejected with a condition.
    #[arg(
        long = "algorithm",
        env = "MINIAUTOML_ALGORITHMS",
        value_delimiter = ',',
        value_parser = parse_algorithm,
        default_value = "intent-classification=miniautoml/intent-classification:0.1.0,pytorch-intent=miniautoml/pytorch-intent:0.1.0"
    )]
    pub algorithms: Vec<(String, String)>,

    /// Most workers a run of an algorithm may have, `NAME=N`; repeat the flag or separate with
    /// commas. An algorithm whose image does not train data-parallel gets 1, so that `workers:
    /// 3` is refused with a reason instead of running three copies of the same work. Unlisted:
    /// the CRD's limit (64).
    #[arg(
        long = "algorithm-max-workers",
        env = "MINIAUTOML_ALGORITHM_MAX_WORKERS",
        value_delimiter = ',',
        value_parser = parse_algorithm_max_workers,
        default_value = "intent-classification=1"
    )]
    pub algorithm_max_workers: Vec<(String, u32)>,

    /// Predictor image of an algorithm's models, `NAME=IMAGE`; repeat the flag or separate with
    /// commas. A ModelDeployment of such a run that names no image of its own runs it, given the
    /// model's files (downloaded and verified first) in `/mnt/models`; it serves as the default
    /// predictor does (gRPC on 8081, OIP v2 REST and its health on 8080). Unlisted: the default
    /// predictor (`--predictor-image`).
    #[arg(
        long = "algorithm-predictor",
        env = "MINIAUTOML_ALGORITHM_PREDICTORS",
        value_delimiter = ',',
        value_parser = parse_algorithm,
        default_value = "pytorch-intent=miniautoml/pytorch-intent-predictor:0.1.0"
    )]
    pub algorithm_predictors: Vec<(String, String)>,

    /// How an algorithm's trainer reports, `NAME=CONTRACT`: `MiniAutoML` (its run's token; the
    /// default) or `Original` (the original MiniAutoML's images, unchanged: no token, plain text
    /// to `--original-contract-addr`, accepted only from the run's own pods). A TrainingJob's
    /// `spec.contract` wins.
    #[arg(
        long = "algorithm-contract",
        env = "MINIAUTOML_ALGORITHM_CONTRACTS",
        value_delimiter = ',',
        value_parser = parse_algorithm_contract
    )]
    pub algorithm_contracts: Vec<(String, miniautoml_api::training_job::Contract)>,

    /// Where the reports of original-contract runs arrive: a plain-text gRPC listener that
    /// takes only LogRunStart, LogEpoch, CreateArtifact and LogRunEnd, each from a pod of the
    /// run it names (its source IP, in the watch cache). Those runs' `METADATA_STORE_SERVER`
    /// is the host of `--metadata-store-address` with this port. `none`: no such listener
    /// (original-contract runs are not accepted).
    #[arg(
        long,
        env = "MINIAUTOML_ORIGINAL_CONTRACT_ADDR",
        value_parser = parse_optional_addr,
        default_value = "0.0.0.0:51002"
    )]
    pub original_contract_addr: OptionalAddr,

    /// Address of the web console (runs with live curves, datasets, deployments; `none`: off).
    /// It authenticates viewers as the gRPC API does (`--grpc-auth`).
    #[arg(long, env = "MINIAUTOML_CONSOLE_ADDR", default_value = "0.0.0.0:8090", value_parser = parse_optional_addr)]
    pub console_addr: OptionalAddr,

    /// Image pull policy of an algorithm's training pods, `NAME=POLICY` (Always, IfNotPresent or
    /// Never); repeat the flag or separate with commas. Unset: Kubernetes' default for the image.
    #[arg(
        long = "algorithm-pull-policy",
        env = "MINIAUTOML_ALGORITHM_PULL_POLICIES",
        value_delimiter = ',',
        value_parser = parse_algorithm_pull_policy
    )]
    pub algorithm_pull_policies: Vec<(String, String)>,

    /// Namespace of the resources the gRPC API creates and serves (the original API has no
    /// namespaces).
    #[arg(long, env = "MINIAUTOML_GRPC_NAMESPACE", default_value = "default")]
    pub grpc_namespace: String,

    /// `host:port` at which training pods reach this operator's gRPC server (the trainers'
    /// `METADATA_STORE_SERVER`), e.g. `miniautoml-operator.miniautoml.svc:51001`. Without it
    /// TrainingJobs wait with a condition.
    #[arg(long, env = "MINIAUTOML_METADATA_STORE_ADDRESS")]
    pub metadata_store_address: Option<String>,

    /// Whether Kueue admits runs with `spec.queueName`: `auto` uses it where the API server
    /// serves its Workloads and the operator may list them (a refused list is logged), `on`
    /// the same, `off` never asks (runs with a queueName are refused; the chart's
    /// `kueue.enabled: false`, so that an operator without Kueue's RBAC is never refused).
    #[arg(long, env = "MINIAUTOML_KUEUE", value_enum, default_value_t = KueueUse::Auto)]
    pub kueue: KueueUse,

    /// Most TrainingJobs running at once (0: no limit). Further runs wait as `Queued` with
    /// `positionInQueue`, first created first launched.
    #[arg(long, env = "MINIAUTOML_MAX_CONCURRENT_RUNS", default_value_t = 0)]
    pub max_concurrent_runs: u32,

    /// Security context of an algorithm's training containers, `NAME=JSON` (a Kubernetes
    /// container `securityContext`, replacing the restricted default whole); repeat the flag.
    /// Unset: non-root (65532), `RuntimeDefault` seccomp, no privilege escalation, every
    /// capability dropped, read-only root with a writable `/tmp`.
    #[arg(
        long = "algorithm-security-context",
        env = "MINIAUTOML_ALGORITHM_SECURITY_CONTEXTS",
        value_delimiter = ';',
        value_parser = parse_algorithm_security_context
    )]
    pub algorithm_security_contexts: Vec<(String, SecurityContext)>,

    /// Security context of the predictor containers (JSON, a Kubernetes container
    /// `securityContext`, replacing the restricted default whole).
    #[arg(long, env = "MINIAUTOML_PREDICTOR_SECURITY_CONTEXT", value_parser = parse_security_context)]
    pub predictor_security_context: Option<SecurityContext>,

    /// Give each ModelDeployment's predictors a NetworkPolicy that lets in only pods of its own
    /// namespace, of the namespaces its `spec.allowedNamespaces` names, and the operator's pods
    /// (`--operator-pod-label` in POD_NAMESPACE); traffic from the node (kubelet probes, an
    /// operator run outside the cluster) is not subject to it. `false`: the operator writes no
    /// policy (existing ones stay until their ModelDeployment goes).
    #[arg(long, env = "MINIAUTOML_PREDICTOR_NETWORK_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    pub predictor_network_policy: bool,

    /// A label of this operator's pods, `KEY=VALUE`; repeat the flag or separate with commas.
    /// With POD_NAMESPACE it names the pods that predictors' NetworkPolicies let in (the
    /// operator forwards `PredictionService/Predict` to the predictors). Unset: none.
    #[arg(
        long = "operator-pod-label",
        env = "MINIAUTOML_OPERATOR_POD_LABELS",
        value_delimiter = ',',
        value_parser = parse_label
    )]
    pub operator_pod_labels: Vec<(String, String)>,

    /// Image of the start step of a multi-worker run's pods, which waits (up to 5 minutes) until
    /// rank 0's name resolves before the trainer starts: this operator's own image
    /// (`miniautoml-operator wait-for-host`). The chart passes its operator image.
    #[arg(
        long,
        env = "MINIAUTOML_LAUNCHER_IMAGE",
        default_value = concat!("miniautoml/operator:", env!("CARGO_PKG_VERSION"))
    )]
    pub launcher_image: String,

    /// Image of the predictors ModelDeployments run (unless their spec names one).
    #[arg(
        long,
        env = "MINIAUTOML_PREDICTOR_IMAGE",
        default_value = "miniautoml/predictor:0.1.0"
    )]
    pub predictor_image: String,

    /// Image pull policy of the predictor pods (Always, IfNotPresent or Never) when they run
    /// `--predictor-image`. Unset: Kubernetes' default for the image.
    #[arg(long, env = "MINIAUTOML_PREDICTOR_PULL_POLICY", value_parser = parse_pull_policy)]
    pub predictor_pull_policy: Option<String>,

    /// How long `PredictionService/Predict` waits for the model of a run to be deployed and
    /// ready before answering UNAVAILABLE (it deploys one when none serves the run).
    #[arg(long, env = "MINIAUTOML_PREDICT_DEPLOY_TIMEOUT", value_parser = parse_seconds, default_value = "120")]
    pub predict_deploy_timeout: std::time::Duration,

    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "MINIAUTOML_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// S3 endpoint URL (MinIO, the local cluster's s3s-fs, ...); unset: AWS S3. Credentials come
    /// only from the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (in a cluster, from
    /// a Secret). Without them, Datasets wait with a condition saying storage is not configured.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// A namespace that gets an upload key: the Secret `miniautoml-upload` there holds a
    /// storage key that reads, writes and lists only `raw/<namespace>/` (where its Datasets
    /// ingest from), so data engineers upload without the bucket-wide key; repeat the flag or
    /// separate with commas. A namespace taken off the list has its key revoked.
    #[arg(
        long = "upload-key-namespace",
        env = "MINIAUTOML_UPLOAD_KEY_NAMESPACES",
        value_delimiter = ','
    )]
    pub upload_key_namespaces: Vec<String>,

    /// A source a namespace may ingest Datasets from besides its own `raw/<namespace>/` prefix
    /// of the bucket, `NAMESPACE=BUCKET/PREFIX` (`*=…` for every namespace); repeat the flag or
    /// separate with commas. The
    /// operator's own prefixes (`datasets/`, `models/`, `runs/`, `tombstones/`) cannot be granted.
    #[arg(
        long = "dataset-source",
        env = "MINIAUTOML_DATASET_SOURCES",
        value_delimiter = ',',
        value_parser = parse_dataset_source
    )]
    pub dataset_sources: Vec<(String, String)>,

    /// Bucket holding datasets, snapshots and models.
    #[arg(long, env = "MINIAUTOML_BUCKET", default_value = "miniautoml")]
    pub bucket: String,

    /// Image pull Secret given by name to every trainer and predictor pod the operator starts
    /// (it must exist in the pod's namespace); repeat the flag or separate with commas.
    #[arg(
        long = "image-pull-secret",
        env = "MINIAUTOML_IMAGE_PULL_SECRETS",
        value_delimiter = ','
    )]
    pub image_pull_secrets: Vec<String>,

    /// Seconds the operator keeps serving after SIGTERM, reporting not ready, before it stops:
    /// time for Services to stop sending it new calls (the chart sets it; 0 stops at once).
    #[arg(long, env = "MINIAUTOML_SHUTDOWN_DELAY", value_parser = parse_seconds, default_value = "0")]
    pub shutdown_delay: std::time::Duration,

    /// Create the bucket at start when it does not exist (a new object store, such as the one
    /// the Helm chart bundles). Retried in the background until the store answers.
    #[arg(long, env = "MINIAUTOML_CREATE_BUCKET")]
    pub create_bucket: bool,

    /// Elect a leader on a coordination.k8s.io Lease, for running several replicas: every
    /// replica serves reads, only the leader reconciles and writes, and followers forward the
    /// gRPC API's writes to it. Needs POD_NAME and POD_IP (the downward API) in a cluster.
    #[arg(long, env = "MINIAUTOML_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "MINIAUTOML_LEADER_ELECT_LEASE",
        default_value = "miniautoml-operator"
    )]
    pub leader_elect_lease: String,

    /// Namespace of the leader Lease (default: this pod's namespace, POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_elect_namespace: String,

    /// Seconds a Lease holds without renewal: how long the writes pause when a leader dies
    /// without releasing it. The leader renews a third of this before it expires.
    #[arg(long, env = "MINIAUTOML_LEASE_DURATION", value_parser = parse_seconds, default_value = "15")]
    pub lease_duration: std::time::Duration,

    /// Log format.
    #[arg(long, env = "MINIAUTOML_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The storage key the pods of runs and predictors get: `scoped`, a key of their own for
    /// their prefixes only, issued through the store's IAM API and revoked when they end (the
    /// bundled SeaweedFS serves one); `shared`, the operator's own bucket-wide key (an explicit
    /// choice for a store without an IAM API; each run's `StorageKey` condition says so).
    #[arg(
        long,
        env = "MINIAUTOML_STORAGE_CREDENTIALS",
        value_enum,
        default_value_t = CredentialScope::Scoped
    )]
    pub storage_credentials: CredentialScope,

    /// With `--storage-credentials=sts`: the role whose temporary keys pods get (`arn:aws:iam::
    /// <account>:role/<name>`); the operator's key must be allowed to assume it. Unset: a session
    /// of the operator's own identity, where the STS allows that.
    #[arg(long, env = "MINIAUTOML_STS_ROLE_ARN")]
    pub sts_role_arn: Option<String>,

    /// With `--storage-credentials=sts`: the STS endpoint URL (unset: `--s3-endpoint`, else AWS's
    /// regional STS).
    #[arg(long, env = "MINIAUTOML_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,

    /// With `--storage-credentials=sts`: how long a temporary key lasts, in seconds (900–43200;
    /// the role's maximum session duration must allow it). A run must end within it; a
    /// predictor's key is issued again before half of it is gone.
    #[arg(long, env = "MINIAUTOML_STS_DURATION", value_parser = parse_sts_duration, default_value = "3600")]
    pub sts_duration: std::time::Duration,

    /// Object storage credentials, from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY only (never
    /// flags, which `ps` would show); read once, with the configuration.
    #[arg(skip = Credentials::from_env())]
    pub credentials: Option<Credentials>,

    /// The key run tokens are made with, from MINIAUTOML_RUN_TOKEN_KEY only (a Secret; never a
    /// flag); unset: a key derived from the storage secret key.
    #[arg(skip = std::env::var("MINIAUTOML_RUN_TOKEN_KEY").ok().filter(|key| !key.is_empty()).map(|key| RunTokens::new(key.as_bytes())))]
    pub run_token_key: Option<RunTokens>,

    /// This pod's name (POD_NAME, from the downward API): the leader election's identity and the
    /// reporting instance of events.
    #[arg(skip = std::env::var("POD_NAME").ok().filter(|name| !name.is_empty()))]
    pub pod_name: Option<String>,

    /// This pod's ServiceAccount (POD_SERVICE_ACCOUNT, from the downward API): a follower
    /// forwards writes in plain text only to a Lease holder's pod that runs as this account.
    #[arg(skip = std::env::var("POD_SERVICE_ACCOUNT").ok().filter(|name| !name.is_empty()))]
    pub service_account: Option<String>,

    /// This pod's namespace (POD_NAMESPACE, from the downward API), where predictors' NetworkPolicies
    /// let the operator's pods in from.
    #[arg(skip = std::env::var("POD_NAMESPACE").ok().filter(|name| !name.is_empty()))]
    pub pod_namespace: Option<String>,

    /// This pod's IP (POD_IP): where the other replicas forward gRPC writes to the leader.
    #[arg(skip = std::env::var("POD_IP").ok().and_then(|ip| ip.parse().ok()))]
    pub pod_ip: Option<std::net::IpAddr>,
}

/// Object storage credentials. `Debug` shows the access key id, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// AWS_ACCESS_KEY_ID.
    pub access_key_id: String,
    /// AWS_SECRET_ACCESS_KEY.
    pub secret_access_key: String,
    /// AWS_SESSION_TOKEN: only a temporary (STS) key has one.
    pub session_token: Option<String>,
}

impl Credentials {
    /// Both variables from the environment, when both are set.
    pub fn from_env() -> Option<Credentials> {
        Some(Credentials {
            access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok()?,
            secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok()?,
            session_token: None,
        })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("{text}: expected 0 to 86400 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

fn parse_sts_duration(text: &str) -> Result<std::time::Duration, String> {
    let seconds: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))?;
    if !(900..=43_200).contains(&seconds) {
        return Err(format!("{seconds}: STS gives keys lasting 900 to 43200 seconds"));
    }
    Ok(std::time::Duration::from_secs(seconds))
}

/// The storage key the pods of runs and predictors get (`crate::pod_keys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialScope {
    /// A key of their own, for their prefixes only, revoked when they end.
    Scoped,
    /// A temporary key of their own from STS `AssumeRole` with a session policy of their
    /// prefixes (an external S3 without an IAM API the operator may write to).
    Sts,
    /// The operator's own bucket-wide key.
    Shared,
}

/// Whether to use Kueue (`--kueue`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KueueUse {
    /// Where the cluster serves it and the operator may read it.
    Auto,
    /// As `auto` (the chart's `kueue.enabled: true`).
    On,
    /// Never: runs with a queueName are refused.
    Off,
}

/// Who may call the gRPC API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GrpcAuth {
    /// A TokenReview of the caller's bearer token and a SubjectAccessReview of each method.
    Kubernetes,
    /// Anyone who reaches the port.
    None,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

impl Config {
    /// The algorithm-to-image table; a name given twice keeps its last image.
    pub fn algorithm_images(&self) -> BTreeMap<String, String> {
        self.algorithms.iter().cloned().collect()
    }
}

fn parse_pull_policy(text: &str) -> Result<String, String> {
    match text.trim() {
        policy @ ("Always" | "IfNotPresent" | "Never") => Ok(policy.to_string()),
        other => Err(format!(
            "{other:?} is not an image pull policy: Always, IfNotPresent or Never"
        )),
    }
}

/// Splits `NAME=VALUE` (the flag's `form`, e.g. `NAME=IMAGE`) into its trimmed, non-empty parts.
fn pair<'a>(text: &'a str, form: &str) -> Result<(&'a str, &'a str), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not {form}"))?;
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() || value.is_empty() {
        return Err(format!("{text:?} is not {form}: both parts must be non-empty"));
    }
    Ok((name, value))
}

fn parse_algorithm_pull_policy(text: &str) -> Result<(String, String), String> {
    let (name, policy) = pair(text, "NAME=POLICY")?;
    Ok((name.to_string(), parse_pull_policy(policy)?))
}

fn parse_security_context(text: &str) -> Result<SecurityContext, String> {
    serde_json::from_str(text)
        .map_err(|e| format!("{text:?} is not a container securityContext in JSON: {e}"))
}

fn parse_algorithm_security_context(text: &str) -> Result<(String, SecurityContext), String> {
    let (name, context) = pair(text, "NAME=JSON")?;
    Ok((name.to_string(), parse_security_context(context)?))
}

fn parse_dataset_source(text: &str) -> Result<(String, String), String> {
    let (namespace, location) = pair(text, "NAMESPACE=BUCKET/PREFIX")?;
    if location.starts_with('/') {
        return Err(format!(
            "{text:?} is not NAMESPACE=BUCKET/PREFIX: the bucket is empty"
        ));
    }
    Ok((namespace.to_string(), location.to_string()))
}

fn parse_algorithm(text: &str) -> Result<(String, String), String> {
    let (name, image) = pair(text, "NAME=IMAGE")?;
    Ok((name.to_string(), image.to_string()))
}

fn parse_algorithm_max_workers(text: &str) -> Result<(String, u32), String> {
    let (name, count) = pair(text, "NAME=N")?;
    match count.parse::<u32>() {
        Ok(count @ 1..=64) => Ok((name.to_string(), count)),
        _ => Err(format!("{text:?}: N must be a whole number from 1 to 64")),
    }
}

fn parse_algorithm_contract(text: &str) -> Result<(String, miniautoml_api::training_job::Contract), String> {
    let (name, contract) = pair(text, "NAME=CONTRACT")?;
    Ok((name.to_string(), contract.parse()?))
}

/// A listener's address, or none (`none`: the listener is off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    match text.trim() {
        "none" => Ok(OptionalAddr(None)),
        addr => addr
            .parse()
            .map(|addr| OptionalAddr(Some(addr)))
            .map_err(|e| format!("{addr:?} is not HOST:PORT or none: {e}")),
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = pair(text, "KEY=VALUE")?;
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret_key() {
        let credentials = Credentials {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: None,
        };
        let shown = format!("{credentials:?}");
        assert!(shown.contains("AKIAEXAMPLE"), "{shown}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        let mut config = Config::try_parse_from(["miniautoml-operator"]).unwrap();
        config.credentials = Some(credentials);
        assert!(!format!("{config:?}").contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn defaults_serve_grpc_on_51001() {
        let config = Config::try_parse_from(["miniautoml-operator"]).unwrap();
        assert_eq!(config.grpc_addr.port(), 51001);
        assert_eq!(config.admin_addr.port(), 8080);
        assert_eq!(
            config
                .algorithm_images()
                .get("intent-classification")
                .map(String::as_str),
            Some("miniautoml/intent-classification:0.1.0")
        );
    }

    #[test]
    fn ports_and_algorithms_are_configurable() {
        let config = Config::try_parse_from([
            "miniautoml-operator",
            "--grpc-addr=127.0.0.1:6000",
            "--admin-addr=127.0.0.1:6001",
            "--algorithm=a=img/a:1,b=img/b:2",
            "--algorithm",
            "a=img/a:3",
        ])
        .unwrap();
        assert_eq!(config.grpc_addr, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(config.admin_addr, "127.0.0.1:6001".parse().unwrap());
        let images = config.algorithm_images();
        assert_eq!(images.len(), 2);
        assert_eq!(images["a"], "img/a:3");
        assert_eq!(images["b"], "img/b:2");
        assert_eq!(
            config.original_contract_addr,
            OptionalAddr(Some("0.0.0.0:51002".parse().unwrap()))
        );
    }

    #[test]
    fn contracts_are_checked_and_the_original_listener_can_be_off() {
        use miniautoml_api::training_job::Contract;
        let config = Config::try_parse_from([
            "miniautoml-operator",
            "--algorithm-contract=orig=Original,ours=MiniAutoML",
            "--original-contract-addr=none",
        ])
        .unwrap();
        assert_eq!(
            config.algorithm_contracts,
            [
                ("orig".to_string(), Contract::Original),
                ("ours".to_string(), Contract::MiniAutoML)
            ]
        );
        assert_eq!(config.original_contract_addr, OptionalAddr(None));
        let error = Config::try_parse_from(["miniautoml-operator", "--algorithm-contract=orig=original"])
            .unwrap_err();
        assert!(error.to_string().contains("is not a contract"), "{error}");
        let error =
            Config::try_parse_from(["miniautoml-operator", "--original-contract-addr=51002"]).unwrap_err();
        assert!(error.to_string().contains("is not HOST:PORT or none"), "{error}");
    }

    #[test]
    fn pull_policies_are_checked() {
        let config = Config::try_parse_from([
            "miniautoml-operator",
            "--predictor-pull-policy=Always",
            "--algorithm-pull-policy=intent-classification=Never",
        ])
        .unwrap();
        assert_eq!(config.predictor_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            config.algorithm_pull_policies,
            [("intent-classification".to_string(), "Never".to_string())]
        );
        let error =
            Config::try_parse_from(["miniautoml-operator", "--predictor-pull-policy=Sometimes"]).unwrap_err();
        assert!(
            error.to_string().contains("is not an image pull policy"),
            "{error}"
        );
        let error =
            Config::try_parse_from(["miniautoml-operator", "--algorithm-pull-policy=Always"]).unwrap_err();
        assert!(error.to_string().contains("is not NAME=POLICY"), "{error}");
    }

    #[test]
    fn security_contexts_are_json() {
        let config = Config::try_parse_from([
            "miniautoml-operator",
            r#"--algorithm-security-context=legacy={"runAsUser":0,"runAsNonRoot":false}"#,
            r#"--predictor-security-context={"readOnlyRootFilesystem":false}"#,
        ])
        .unwrap();
        let (name, context) = &config.algorithm_security_contexts[0];
        assert_eq!((name.as_str(), context.run_as_user), ("legacy", Some(0)));
        assert_eq!(
            config
                .predictor_security_context
                .unwrap()
                .read_only_root_filesystem,
            Some(false)
        );
        let error = Config::try_parse_from(["miniautoml-operator", "--algorithm-security-context=legacy={"])
            .unwrap_err();
        assert!(
            error.to_string().contains("is not a container securityContext"),
            "{error}"
        );
    }

    #[test]
    fn predictor_policies_are_on_by_default_and_name_the_operators_pods_by_label() {
        let config = Config::try_parse_from(["miniautoml-operator"]).unwrap();
        assert!(config.predictor_network_policy);
        assert!(config.operator_pod_labels.is_empty());
        let config = Config::try_parse_from([
            "miniautoml-operator",
            "--predictor-network-policy=false",
            "--operator-pod-label=app.kubernetes.io/name=miniautoml,app.kubernetes.io/instance=ml",
        ])
        .unwrap();
        assert!(!config.predictor_network_policy);
        assert_eq!(
            config.operator_pod_labels,
            [
                ("app.kubernetes.io/name".to_string(), "miniautoml".to_string()),
                ("app.kubernetes.io/instance".to_string(), "ml".to_string()),
            ]
        );
        let error = Config::try_parse_from(["miniautoml-operator", "--operator-pod-label=name"]).unwrap_err();
        assert!(error.to_string().contains("is not KEY=VALUE"), "{error}");
    }

    #[test]
    fn the_built_in_algorithm_trains_on_one_worker_and_others_may_say_how_many() {
        let config = Config::try_parse_from(["miniautoml-operator"]).unwrap();
        assert_eq!(
            config.algorithm_max_workers,
            [("intent-classification".to_string(), 1)]
        );
        let config = Config::try_parse_from([
            "miniautoml-operator",
            "--algorithm-max-workers=intent-classification=1,pytorch-intent=8",
        ])
        .unwrap();
        assert_eq!(config.algorithm_max_workers[1], ("pytorch-intent".to_string(), 8));
        for bad in [
            "--algorithm-max-workers=a=0",
            "--algorithm-max-workers=a=65",
            "--algorithm-max-workers=a",
        ] {
            let error = Config::try_parse_from(["miniautoml-operator", bad]).unwrap_err();
            assert!(error.to_string().contains("--algorithm-max-workers"), "{error}");
        }
    }

    #[test]
    fn sts_keys_last_what_sts_gives() {
        let config = Config::try_parse_from(["miniautoml-operator"]).unwrap();
        assert_eq!(config.sts_duration.as_secs(), 3600);
        let config = Config::try_parse_from([
            "miniautoml-operator",
            "--storage-credentials=sts",
            "--sts-duration=43200",
            "--sts-role-arn=arn:aws:iam::1:role/pods",
        ])
        .unwrap();
        assert_eq!(config.storage_credentials, CredentialScope::Sts);
        assert_eq!(config.sts_duration.as_secs(), 43_200);
        for bad in ["--sts-duration=899", "--sts-duration=43201", "--sts-duration=1h"] {
            let error = Config::try_parse_from(["miniautoml-operator", bad]).unwrap_err();
            assert!(error.to_string().contains("--sts-duration"), "{error}");
        }
    }

    #[test]
    fn malformed_flags_are_rejected_with_a_reason() {
        let error = Config::try_parse_from(["miniautoml-operator", "--algorithm=just-a-name"]).unwrap_err();
        assert!(error.to_string().contains("is not NAME=IMAGE"), "{error}");
        let error = Config::try_parse_from(["miniautoml-operator", "--algorithm==img"]).unwrap_err();
        assert!(error.to_string().contains("non-empty"), "{error}");
        let error = Config::try_parse_from(["miniautoml-operator", "--grpc-addr=51001"]).unwrap_err();
        assert!(error.to_string().contains("--grpc-addr"), "{error}");
    }
}
