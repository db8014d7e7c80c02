use clap::Parser;
use miniautoml_operator::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// `miniautoml-operator wait-for-host HOST SECONDS`: the start step of a multi-worker run's
/// pods (not the operator): exits 0 once HOST resolves, non-zero with the reason after SECONDS.
fn wait_for_host(args: &[String]) -> std::process::ExitCode {
    use std::net::ToSocketAddrs;
    let (Some(host), Some(Ok(seconds))) = (args.first(), args.get(1).map(|s| s.parse::<u64>())) else {
        eprintln!("usage: miniautoml-operator wait-for-host HOST SECONDS");
        return std::process::ExitCode::from(2);
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let mut announced = false;
    loop {
        let why = match (host.as_str(), 0).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => {
                println!("{host} resolves to {}", addr.ip());
                return std::process::ExitCode::SUCCESS;
            }
            Ok(None) => "no addresses".to_string(),
            Err(error) => error.to_string(),
        };
        if std::time::Instant::now() >= deadline {
            eprintln!("MASTER_ADDR {host} did not resolve within {seconds} s: {why}");
            return std::process::ExitCode::FAILURE;
        }
        if !announced {
            println!("waiting for {host} to resolve ({why})");
            announced = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("wait-for-host") {
        return wait_for_host(&args[1..]);
    }
    operator()
}

#[tokio::main]
async fn operator() -> std::process::ExitCode {
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
