//! The flags every command takes (krew's conventions and where MiniAutoML is installed), and
//! the `-o` format.

use std::path::PathBuf;

use clap::Args;

/// Flags every command takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The namespace (default: the context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace (where a command lists).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// The kubeconfig context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format: table, wide, json or yaml; for `curves`, the PNG file to write.
    #[arg(short = 'o', long, global = true, default_value = "table")]
    pub output: String,
    /// The namespace MiniAutoML is installed in (its operator Service).
    #[arg(
        long,
        global = true,
        default_value = "miniautoml",
        env = "MINIAUTOML_NAMESPACE"
    )]
    pub release_namespace: String,
    /// The Helm release (the operator Service's name).
    #[arg(long, global = true, default_value = "miniautoml", env = "MINIAUTOML_RELEASE")]
    pub release: String,
    /// A token for the operator's audience, for what only the operator serves (every epoch of
    /// a long run, predictions, the console): `kubectl create token NAME --audience miniautoml`.
    #[arg(long, global = true, env = "MINIAUTOML_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Make that token for this ServiceAccount (`NAMESPACE/NAME`), as `kubectl create token` does.
    #[arg(long, global = true)]
    pub service_account: Option<String>,
    /// The CA to check the operator's certificate with (default: the chart's `<release>-tls`
    /// Secret's ca.crt where readable, else the port-forward's tunnel is trusted).
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

impl Global {
    /// The `-o` format.
    pub fn format(&self) -> anyhow::Result<Format> {
        Ok(match self.output.as_str() {
            "table" => Format::Table,
            "wide" => Format::Wide,
            "json" => Format::Json,
            "yaml" => Format::Yaml,
            other => anyhow::bail!("-o {other:?}: use table, wide, json or yaml"),
        })
    }
}
