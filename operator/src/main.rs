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

/// `miniautoml-operator fetch-model DIR`: the storage initializer of a custom predictor's pods
/// (not the operator): downloads the model at `MODEL_URI` with the pod's storage key
/// (`AWS_*`), verifies it against `MODEL_SHA256` and its manifest, and writes it into DIR.
#[tokio::main(flavor = "current_thread")]
async fn fetch_model(args: &[String]) -> std::process::ExitCode {
    let (Some(dir), Ok(uri)) = (args.first(), std::env::var("MODEL_URI")) else {
        eprintln!(
            "usage: MODEL_URI=s3://BUCKET/PREFIX/ [MODEL_SHA256=HEX] miniautoml-operator fetch-model DIR"
        );
        return std::process::ExitCode::from(2);
    };
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(access_key), Some(secret_key)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
    else {
        eprintln!(
            "fetch-model: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (the predictor's storage key)"
        );
        return std::process::ExitCode::FAILURE;
    };
    let store = miniautoml_data::Store::with_session_token(
        var("AWS_ENDPOINT_URL").as_deref(),
        &var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
        (&access_key, &secret_key, var("AWS_SESSION_TOKEN").as_deref()),
        "",
    )
    .for_new_pod();
    let expected = var("MODEL_SHA256");
    match miniautoml_data::models::fetch(&store, &uri, std::path::Path::new(dir), expected.as_deref()).await {
        Ok(files) => {
            for (name, bytes) in &files {
                println!("{dir}/{name}: {bytes} bytes");
            }
            println!(
                "fetched {} files of {uri}{}",
                files.len(),
                if expected.is_some() { ", verified" } else { "" }
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot fetch the model {uri}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("wait-for-host") => wait_for_host(&args[1..]),
        Some("fetch-model") => fetch_model(&args[1..]),
        _ => operator(),
    }
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
