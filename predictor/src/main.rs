//! `miniautoml-predictor`: serves one trained model over gRPC and HTTP until SIGTERM.

use clap::Parser;
use miniautoml_predictor::{Config, run};

#[tokio::main]
async fn main() {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(error) = run(config, miniautoml_predictor::termination_signal()).await {
        // The reason is the last line of the log, where `kubectl logs` and the pod's
        // termination message show it.
        tracing::error!("{error}");
        eprintln!("miniautoml-predictor: {error}");
        std::process::exit(1);
    }
}
