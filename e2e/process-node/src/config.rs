//! Command-line configuration.

use std::path::PathBuf;

use clap::Parser;

/// A Kubernetes node whose pods run as local processes (e2e tooling for MiniAutoML's local
/// cluster; not part of the product).
#[derive(Clone, Debug, Parser)]
#[command(name = "process-node", version)]
pub struct Config {
    /// Kubeconfig with the node's credentials (e.g. a client certificate for
    /// `system:node:<name>` in group `system:nodes`).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// The Node's name.
    #[arg(long, default_value = "process-node")]
    pub node_name: String,
    /// The image mapping file (YAML; read again for every pod).
    #[arg(long)]
    pub images: PathBuf,
    /// Where container logs go: `<dir>/<namespace>_<pod>_<uid>/<container>/<restart>.log`.
    #[arg(long)]
    pub log_dir: PathBuf,
    /// Where containers run: `<dir>/<namespace>_<pod>_<uid>/<container>/` is their working
    /// directory and HOME.
    #[arg(long)]
    pub work_dir: PathBuf,
    /// CPU the node advertises (it enforces no limits).
    #[arg(long, default_value = "16")]
    pub cpu: String,
    /// Memory the node advertises.
    #[arg(long, default_value = "64Gi")]
    pub memory: String,
    /// Most pods the node accepts.
    #[arg(long, default_value = "110")]
    pub max_pods: String,
    /// Extra node labels, `key=value`, repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Port of the kubelet endpoint that serves container logs to the API server (`kubectl
    /// logs`) on 127.0.0.1; 0 picks a free port. Needs the three TLS files below.
    #[arg(long, default_value_t = 0)]
    pub kubelet_port: u16,
    /// Serving certificate of the kubelet endpoint (PEM); without it there is no endpoint.
    #[arg(long, requires_all = ["tls_key_file", "client_ca_file"])]
    pub tls_cert_file: Option<PathBuf>,
    /// Key of the serving certificate (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// CA of the client certificates the kubelet endpoint accepts (the API server's).
    #[arg(long, requires = "tls_cert_file")]
    pub client_ca_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?}: expected key=value"))
}
