//! TLS for the operator's listeners, from a directory laid out as a `kubernetes.io/tls` Secret
//! mounted as a volume (`tls.crt`, `tls.key`, and `ca.crt` when cert-manager or the user adds
//! one). The files are read again every [`RELOAD_EVERY`]: a renewed certificate serves new
//! connections without a restart, and a broken one is reported and ignored (the last good one
//! stays).
//!
//! Handshakes run in their own tasks with a deadline, so a client that never finishes one holds
//! nothing but its own connection.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;

/// How often the certificate files are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// How long a client has to finish its handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The certificate (chain) file of a `kubernetes.io/tls` Secret.
pub const CERT_FILE: &str = "tls.crt";
/// The private key file of a `kubernetes.io/tls` Secret.
pub const KEY_FILE: &str = "tls.key";
/// The issuing CA, as cert-manager writes it (optional).
pub const CA_FILE: &str = "ca.crt";

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("TLS: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A file holds no usable PEM data.
    #[error("TLS: {path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The key and the certificate do not belong together, or rustls refuses them.
    #[error("TLS: {dir}: {why}")]
    Config {
        /// The directory.
        dir: PathBuf,
        /// What rustls said.
        why: String,
    },
}

/// TLS for the gRPC and admin listeners, from one directory.
#[derive(Clone)]
pub struct ServerTls {
    grpc: TlsAcceptor,
    admin: TlsAcceptor,
    ca_pem: String,
    server_name: Option<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `dir`, and keeps reading it again until `shutdown` fires. `server_name` is the
    /// name the certificate must cover for this operator's own clients (trainers and
    /// forwarding replicas), the host of `--metadata-store-address`.
    pub fn load(
        dir: &Path,
        server_name: Option<String>,
        shutdown: CancellationToken,
    ) -> Result<ServerTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = read_pair(dir)?;
        let key = certified_key(dir, &files, &provider)?;
        let ca_pem = ca_pem(dir)?;
        let resolver = Arc::new(Reloading(RwLock::new(Arc::new(key))));
        let acceptor = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| config_error(dir, e))?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        let tls = ServerTls {
            grpc: acceptor(&[b"h2"])?,
            admin: acceptor(&[b"h2", b"http/1.1"])?,
            ca_pem,
            server_name,
        };
        tokio::spawn(reload(dir.to_path_buf(), provider, resolver, files, shutdown));
        Ok(tls)
    }

    /// The PEM a client of this operator trusts: `ca.crt` when the directory has one, else
    /// `tls.crt` (a self-signed certificate is its own CA).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The name clients verify the certificate against, when configured.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// How this operator's own clients (a follower forwarding to the leader) verify it.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        match &self.server_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }

    /// The gRPC listener's connections, TLS (ALPN `h2`) after a finished handshake.
    pub fn grpc_incoming(
        &self,
        listener: TcpListener,
    ) -> impl futures::Stream<Item = io::Result<TlsStream<tokio::net::TcpStream>>> + use<> {
        let connections = handshakes(listener, self.grpc.clone());
        futures::stream::unfold(connections, |mut connections| async move {
            let (stream, _) = connections.recv().await?;
            Some((Ok(stream), connections))
        })
    }

    /// The admin listener, for `axum::serve`.
    pub fn admin_listener(&self, listener: TcpListener) -> io::Result<AdminListener> {
        let local_addr = listener.local_addr()?;
        Ok(AdminListener {
            connections: handshakes(listener, self.admin.clone()),
            local_addr,
        })
    }
}

/// A TLS listener for the admin server.
pub struct AdminListener {
    connections: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for AdminListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop ends only when this receiver is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts on `listener` and hands over each connection whose handshake finished in time;
/// stops when the receiver is dropped.
fn handshakes(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send((stream, peer)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, "TLS handshake failed: {error}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time"),
                }
            });
        }
    });
    receiver
}

/// Serves whichever certificate was loaded last.
#[derive(Debug)]
struct Reloading(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

/// Reads the files every [`RELOAD_EVERY`] and swaps in a changed certificate that loads.
async fn reload(
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Reloading>,
    mut loaded: Pair,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RELOAD_EVERY) => {}
        }
        let Ok(files) = read_pair(&dir) else {
            tracing::warn!(dir = %dir.display(), "TLS files unreadable; serving the last certificate loaded");
            continue;
        };
        if files == loaded {
            continue;
        }
        match certified_key(&dir, &files, &provider) {
            Ok(key) => {
                *resolver.0.write().expect("certificate lock") = Arc::new(key);
                loaded = files;
                tracing::info!(dir = %dir.display(), "TLS certificate changed: new connections get the new one");
            }
            Err(error) => {
                tracing::warn!("{error}; serving the last certificate loaded");
            }
        }
    }
}

/// The host of `address` (`host:port`, `[v6]:port` or a URL), what a client of it verifies
/// a certificate against.
pub fn host_of(address: &str) -> Option<String> {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// `address` as the URL trainers are given: `https://` when the listener serves TLS.
pub fn metadata_store_url(address: &str, tls: bool) -> String {
    if address.contains("://") || !tls {
        address.to_string()
    } else {
        format!("https://{address}")
    }
}

fn read(path: PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(&path).map_err(|source| TlsError::Read { path, source })
}

/// The contents of the certificate and key files.
type Pair = (Vec<u8>, Vec<u8>);

fn read_pair(dir: &Path) -> Result<Pair, TlsError> {
    Ok((read(dir.join(CERT_FILE))?, read(dir.join(KEY_FILE))?))
}

/// The certificate chain and key read from `dir`, checked to belong together.
fn certified_key(
    dir: &Path,
    (cert_pem, key_pem): &Pair,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(&dir.join(CERT_FILE), cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        path: dir.join(KEY_FILE),
        why: format!("no private key in PEM form: {e}"),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| config_error(dir, e))
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            why: format!("not PEM certificates: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            why: "holds no certificate".into(),
        });
    }
    Ok(chain)
}

/// `ca.crt` when present and holding certificates, else `tls.crt`.
fn ca_pem(dir: &Path) -> Result<String, TlsError> {
    let ca = dir.join(CA_FILE);
    let path = if ca.exists() { ca } else { dir.join(CERT_FILE) };
    let pem = read(path.clone())?;
    certificates(&path, &pem)?;
    String::from_utf8(pem).map_err(|_| TlsError::Pem {
        path,
        why: "not UTF-8 text".into(),
    })
}

fn config_error(dir: &Path, error: rustls::Error) -> TlsError {
    TlsError::Config {
        dir: dir.to_path_buf(),
        why: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_clients_verify_is_the_address_without_scheme_port_or_path() {
        for (address, host) in [
            (
                "miniautoml-operator.miniautoml.svc:51001",
                Some("miniautoml-operator.miniautoml.svc"),
            ),
            ("https://operator.example:443/x", Some("operator.example")),
            ("198.18.0.1:51001", Some("198.18.0.1")),
            ("[fd00::1]:51001", Some("fd00::1")),
            ("operator", Some("operator")),
            (":51001", None),
            ("[fd00::1", None),
        ] {
            assert_eq!(host_of(address).as_deref(), host, "{address}");
        }
    }

    #[test]
    fn trainers_get_https_only_when_the_listener_serves_tls() {
        assert_eq!(metadata_store_url("op:51001", true), "https://op:51001");
        assert_eq!(metadata_store_url("op:51001", false), "op:51001");
        assert_eq!(metadata_store_url("http://op:51001", true), "http://op:51001");
    }
}
