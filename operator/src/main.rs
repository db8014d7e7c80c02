use clap::Parser;
use miniautoml_operator::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    limit_heap_retention();
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            miniautoml_operator::termination_signal().await;
            shutdown.cancel();
        }
    });
    match miniautoml_operator::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("miniautoml-operator: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Ingestion moves data through buffers of a few MiB. glibc raises its mmap threshold after such
/// buffers are freed and then keeps later ones in its heaps, so the resident size creeps up to
/// several times what is in use; a fixed 1 MiB threshold returns every large buffer to the OS.
fn limit_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called once at start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        // One heap per thread fragments under many concurrent reconciles; two are plenty.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
