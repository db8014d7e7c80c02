//! Container logs: files on disk, and the kubelet's `/containerLogs` endpoint over TLS so that
//! `kubectl logs` (which the API server proxies to the node) works.
//!
//! Layout: `<log dir>/<namespace>_<pod>_<uid>/<container>/<restart>.log`, stdout and stderr
//! interleaved as written. Only clients with a certificate signed by the cluster CA (the API
//! server's kubelet client certificate) are served.

use std::{
    collections::BTreeSet,
    io::SeekFrom,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Path as UrlPath, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, RootCertStore, server::WebPkiClientVerifier},
};

use crate::{Error, Result};

/// Log files being written by a live process (a follower stops at the end of any other).
pub type Live = Arc<Mutex<BTreeSet<PathBuf>>>;

/// The directory of a pod's logs.
pub fn pod_dir(namespace: &str, pod: &str, uid: &str) -> String {
    format!("{namespace}_{pod}_{uid}")
}

/// The log file of `container` in the newest pod named `pod` (`previous`: of its run before the
/// last restart).
pub fn find(root: &Path, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<PathBuf> {
    let prefix = format!("{namespace}_{pod}_");
    let pod_dir = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())?
        .path();
    let mut runs: Vec<u32> = std::fs::read_dir(pod_dir.join(container))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".log")?.parse().ok())
        .collect();
    runs.sort_unstable();
    let run = if previous {
        runs.iter().rev().nth(1)?
    } else {
        runs.last()?
    };
    Some(pod_dir.join(container).join(format!("{run}.log")))
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> &str {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    match trimmed.rmatch_indices('\n').nth(lines.saturating_sub(1)) {
        Some((at, _)) if lines > 0 => &text[at + 1..],
        _ if lines == 0 => "",
        _ => text,
    }
}

#[derive(Clone)]
struct Logs {
    root: PathBuf,
    live: Live,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    previous: Option<String>,
    #[serde(default)]
    tail_lines: Option<usize>,
    #[serde(default)]
    limit_bytes: Option<u64>,
}

fn flag(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| v == "true" || v == "1")
}

async fn container_logs(
    State(logs): State<Logs>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let previous = flag(&query.previous);
    let Some(path) = find(&logs.root, &namespace, &pod, &container, previous) else {
        let what = if previous {
            "previous terminated container"
        } else {
            "container"
        };
        return (
            StatusCode::NOT_FOUND,
            format!("{what} \"{container}\" in pod \"{pod}\" not found"),
        )
            .into_response();
    };
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return (StatusCode::NOT_FOUND, format!("{}: unreadable", path.display())).into_response();
    };
    if let Some(lines) = query.tail_lines {
        let mut text = String::new();
        if file.read_to_string(&mut text).await.is_err() {
            return (StatusCode::INTERNAL_SERVER_ERROR, "reading the log failed").into_response();
        }
        let start = text.len() - tail(&text, lines).len();
        let _ = file.seek(SeekFrom::Start(start as u64)).await;
    }
    let follow = flag(&query.follow);
    let limit = query.limit_bytes.unwrap_or(u64::MAX);
    let chunks = futures::stream::unfold((file, limit), move |(mut file, left)| {
        let (live, path) = (logs.live.clone(), path.clone());
        async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                if left == 0 {
                    return None;
                }
                let wanted = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                match file.read(&mut buffer[..wanted]).await {
                    Ok(0) if follow && live.lock().is_ok_and(|l| l.contains(&path)) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(0) | Err(_) => return None,
                    Ok(n) => {
                        buffer.truncate(n);
                        let chunk: Result<Vec<u8>, std::io::Error> = Ok(buffer);
                        return Some((chunk, (file, left - n as u64)));
                    }
                }
            }
        }
    });
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// TLS files of the log endpoint.
#[derive(Clone, Debug)]
pub struct Tls {
    /// Serving certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// CA whose client certificates are accepted (PEM).
    pub client_ca: PathBuf,
}

fn tls_config(tls: &Tls) -> Result<rustls::ServerConfig> {
    let pem_error = |path: &Path, e: rustls_pki_types::pem::Error| {
        Error::Io(path.to_path_buf(), std::io::Error::other(e))
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| pem_error(&tls.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&tls.cert, e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| pem_error(&tls.key, e))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&tls.client_ca).map_err(|e| pem_error(&tls.client_ca, e))? {
        roots
            .add(ca.map_err(|e| pem_error(&tls.client_ca, e))?)
            .map_err(|e| Error::Io(tls.client_ca.clone(), std::io::Error::other(e)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: rustls::Error| Error::Io(tls.cert.clone(), std::io::Error::other(e));
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Io(tls.client_ca.clone(), std::io::Error::other(e)))?;
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(tls_error)
}

/// Binds the log endpoint; serving runs on a spawned task.
pub async fn serve(address: SocketAddr, tls: &Tls, root: PathBuf, live: Live) -> Result<SocketAddr> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(tls)?));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::Io(PathBuf::from(address.to_string()), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Io(PathBuf::from(address.to_string()), e))?;
    let router = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Logs { root, live });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let stream = match acceptor.accept(stream).await {
                    Ok(stream) => stream,
                    Err(error) => return tracing::debug!(%error, "TLS handshake"),
                };
                let service = TowerToHyperService::new(router);
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "log connection");
                }
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\nb\n", 5), "a\nb\n");
        assert_eq!(tail("a\nb\n", 0), "");
    }

    #[test]
    fn the_newest_run_or_the_one_before_is_found() {
        let root = std::env::temp_dir().join(format!("process-node-logs-{}", std::process::id()));
        let dir = root.join(pod_dir("ns", "web", "uid-1")).join("main");
        std::fs::create_dir_all(&dir).unwrap();
        for run in [0, 1, 10] {
            std::fs::write(dir.join(format!("{run}.log")), "x").unwrap();
        }
        assert_eq!(find(&root, "ns", "web", "main", false), Some(dir.join("10.log")));
        assert_eq!(find(&root, "ns", "web", "main", true), Some(dir.join("1.log")));
        assert_eq!(find(&root, "ns", "web", "other", false), None);
        assert_eq!(
            find(&root, "ns", "we", "main", false),
            None,
            "a pod name is not a prefix"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
