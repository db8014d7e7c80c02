//! What only the operator serves, through its console's JSON API: every epoch of a long run
//! (its status keeps 32) and predictions with each label's score. Reached through `kubectl
//! port-forward` to the operator Service (or `--console-url`), with a token for the operator's
//! audience (`--token`, `$MINIAUTOML_TOKEN`, or one made for `--service-account`); the console
//! checks that token's user as it checks a browser's.
//!
//! TLS: the operator's certificate is checked against `--ca-file`, else the chart's CA (the
//! `<release>-tls` Secret's `ca.crt`, where the user may read it). A user who may read neither
//! reaches the operator only through the port-forward's tunnel, which the API server opened to
//! the Service's pod: that connection's certificate is then accepted as the pod's.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Secret, ServiceAccount},
};
use kube::{Api, ResourceExt, api::PostParams};
use miniautoml_api::TrainingJob;
use miniautoml_console::{
    Prediction,
    views::{self, Point},
};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::net::TcpStream;

use crate::{cluster::Target, flags::Global};

/// The console's port on the operator Service (chart `console.port`).
const CONSOLE_PORT: u16 = 8090;
/// The audience tokens are made for (chart `grpc.tokenAudience`).
const AUDIENCE: &str = "miniautoml";

/// A run's epochs as its status keeps them, and whether that is all of them.
pub fn status_epochs(run: &TrainingJob) -> (Vec<Point>, bool) {
    let status = run.status.clone().unwrap_or_default();
    (views::points(&status.epochs).0, views::status_has_all_epochs(run))
}

/// `kubectl port-forward` to a Service's port, stopped when dropped.
pub struct Forward {
    child: Child,
    /// The loopback port forwarded.
    pub port: u16,
}

impl Forward {
    /// Forwards loopback `local` (0: any free port) to `service`'s port `remote`.
    pub fn start(
        target: &Target,
        namespace: &str,
        service: &str,
        remote: u16,
        local: u16,
    ) -> anyhow::Result<Forward> {
        let mut child = Command::new("kubectl")
            .args(&target.kubectl_flags)
            .args([
                "port-forward",
                "-n",
                namespace,
                &format!("svc/{service}"),
                &format!("{local}:{remote}"),
                "--address=127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("kubectl port-forward (kubectl must be on PATH)")?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        // "Forwarding from 127.0.0.1:41234 -> 8090"
        stdout.read_line(&mut line)?;
        std::thread::spawn(move || for _ in stdout.lines().map_while(Result::ok) {});
        let port = line
            .split_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|port| port.parse().ok());
        match port {
            Some(port) => Ok(Forward { child, port }),
            None => {
                let _ = child.kill();
                let output = child.wait_with_output()?;
                bail!(
                    "kubectl port-forward -n {namespace} svc/{service} failed: {}{}",
                    line.trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                )
            }
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Accepts the certificate of the pod the port-forward's tunnel reaches (see the module docs).
#[derive(Debug)]
struct TunnelledPeer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for TunnelledPeer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The console's JSON API, as one user.
pub struct Console {
    _forward: Option<Forward>,
    host: String,
    port: u16,
    /// TLS, or plain text (a chart with `tls.enabled: false`).
    tls: Option<tokio_rustls::TlsConnector>,
    token: String,
}

/// A token for the operator's audience: `--token` / `$MINIAUTOML_TOKEN`, else one made for
/// `--service-account NAMESPACE/NAME` (an hour), else none.
pub async fn token(target: &Target, global: &Global) -> anyhow::Result<Option<String>> {
    if let Some(token) = &global.token {
        return Ok(Some(token.trim().to_string()));
    }
    let Some(account) = &global.service_account else {
        return Ok(None);
    };
    let (namespace, name) = account
        .split_once('/')
        .ok_or_else(|| anyhow!("--service-account NAMESPACE/NAME, not {account:?}"))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(target.client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![AUDIENCE.to_string()],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let made: TokenRequest = accounts
        .create_subresource(
            "token",
            name,
            &PostParams::default(),
            &serde_json::to_vec(&request)?,
        )
        .await
        .with_context(|| format!("a token for ServiceAccount {account} (create serviceaccounts/token)"))?;
    made.status
        .map(|s| Some(s.token))
        .ok_or_else(|| anyhow!("the API server made no token for {account}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The chart's CA, where the user may read its Secret.
async fn chart_ca(target: &Target, global: &Global) -> Option<Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(target.client.clone(), &global.release_namespace);
    let secret = secrets.get_opt(&format!("{}-tls", global.release)).await.ok()??;
    let data = secret.data?;
    data.get("ca.crt")
        .or_else(|| data.get("tls.crt"))
        .map(|b| b.0.clone())
}

fn verified_by(ca: &[u8]) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca) {
        roots.add(certificate.context("a PEM certificate")?)?;
    }
    if roots.is_empty() {
        bail!("no certificate in the CA file");
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Console {
    /// The console as the token's user, when there is a token.
    pub async fn open_if_token(target: &Target, global: &Global) -> anyhow::Result<Option<Console>> {
        match token(target, global).await? {
            Some(token) => Ok(Some(Console::connect(target, global, token).await?)),
            None => Ok(None),
        }
    }

    /// The console as the token's user; an error saying how to get a token when there is none.
    pub async fn open(target: &Target, global: &Global) -> anyhow::Result<Console> {
        let token = token(target, global).await?.ok_or_else(|| {
            anyhow!(
                "this needs a token for audience {AUDIENCE}: --token \"$(kubectl create token NAME -n NAMESPACE \
                 --audience {AUDIENCE})\", $MINIAUTOML_TOKEN, or --service-account NAMESPACE/NAME"
            )
        })?;
        Console::connect(target, global, token).await
    }

    async fn connect(target: &Target, global: &Global, token: String) -> anyhow::Result<Console> {
        let forward = Forward::start(
            target,
            &global.release_namespace,
            &global.release,
            CONSOLE_PORT,
            0,
        )?;
        let port = forward.port;
        let ca = match &global.ca_file {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?),
            None => chart_ca(target, global).await,
        };
        let config = match ca {
            Some(ca) => verified_by(&ca)?,
            None => ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(TunnelledPeer(provider())))
                .with_no_client_auth(),
        };
        let mut console = Console {
            _forward: Some(forward),
            host: "127.0.0.1".into(),
            port,
            tls: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
            token,
        };
        // A console without TLS (tls.enabled: false) answers a handshake with plain HTTP.
        if console.handshake().await.is_err() {
            console.tls = None;
        }
        Ok(console)
    }

    async fn handshake(&self) -> anyhow::Result<()> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        if let Some(tls) = &self.tls {
            let name = ServerName::try_from("localhost")?.to_owned();
            tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp)).await??;
        }
        Ok(())
    }

    /// One request; the status and the body.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("the console at 127.0.0.1:{}", self.port))?;
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = match &self.tls {
            Some(tls) => {
                // The chart's certificate names localhost and 127.0.0.1 for port-forwards.
                let name = ServerName::try_from("localhost")?.to_owned();
                let stream = tls.connect(name, tcp).await.context("TLS with the console")?;
                send(hyper_util::rt::TokioIo::new(stream), request).await?
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), request).await?,
        };
        Ok(response)
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self
            .request(method, path, body.map(|b| b.to_string().into_bytes()))
            .await?;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            anyhow!(
                "the console answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )
        })?;
        if status != 200 {
            bail!(
                "the console answered {status}: {}",
                value["error"].as_str().unwrap_or(&value.to_string())
            );
        }
        Ok(value)
    }

    /// Every epoch of `run` (the store's history, through the operator).
    pub async fn epochs(&self, run: &TrainingJob) -> anyhow::Result<Vec<Point>> {
        let path = format!(
            "/api/runs/{}/{}/epochs",
            run.namespace().unwrap_or_default(),
            run.name_any()
        );
        let value = self.json("GET", &path, None).await?;
        let mut points = Vec::new();
        for epoch in value["epochs"].as_array().into_iter().flatten() {
            points.push(Point {
                id: epoch["id"].as_str().unwrap_or_default().to_string(),
                rank: epoch["rank"].as_u64().unwrap_or_default() as u32,
                epoch: epoch["epoch"].as_u64().unwrap_or_default(),
                metrics: serde_json::from_value(epoch["metrics"].clone()).unwrap_or_default(),
            });
        }
        Ok(points)
    }

    /// `text` through a predictor of the ModelDeployment.
    pub async fn predict(&self, namespace: &str, deployment: &str, text: &str) -> anyhow::Result<Prediction> {
        let value = self
            .json(
                "POST",
                &format!("/api/deployments/{namespace}/{deployment}/predict"),
                Some(serde_json::json!({"text": text})),
            )
            .await?;
        Ok(Prediction {
            label: value["label"].as_str().unwrap_or_default().to_string(),
            scores: serde_json::from_value(value["scores"].clone()).unwrap_or_default(),
        })
    }
}

async fn send<S>(io: S, request: hyper::Request<Full<Bytes>>) -> anyhow::Result<(u16, Vec<u8>)>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .map_err(|_| anyhow!("the console did not answer within 60 s"))??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, body))
}

/// `console`: port-forwards the operator and prints the URL, signed in when there is a token
/// (its fragment, which the browser never sends to a server), until interrupted.
pub async fn open_console(target: &Target, global: &Global, port: u16) -> anyhow::Result<()> {
    let forward = Forward::start(
        target,
        &global.release_namespace,
        &global.release,
        CONSOLE_PORT,
        port,
    )?;
    let url = format!("https://127.0.0.1:{}", forward.port);
    match token(target, global).await? {
        Some(token) => println!("{url}/login#token={token}"),
        None => {
            println!("{url}/  (sign in with: kubectl create token NAME -n NAMESPACE --audience {AUDIENCE})")
        }
    }
    println!(
        "Forwarding to svc/{} in {}; Ctrl-C stops.",
        global.release, global.release_namespace
    );
    tokio::signal::ctrl_c().await?;
    drop(forward);
    Ok(())
}
