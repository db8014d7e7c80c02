//! The admin and gRPC servers over real sockets: health, reflection, readiness and graceful
//! shutdown.

use std::{sync::Arc, time::Duration};

use miniautoml_operator::{admin, grpc, metrics::Metrics, readiness::Readiness};
use miniautoml_test_support::http_get;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// Guards against a hang; not a performance bound.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// Fires `shutdown` and waits for `server` to return without an error.
async fn stop(
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), miniautoml_operator::StartupError>>,
) {
    shutdown.cancel();
    let finished = tokio::time::timeout(HANG_GUARD, server)
        .await
        .expect("server stops on shutdown");
    finished
        .expect("server task does not panic")
        .expect("server returns without an error");
}

#[tokio::test]
async fn grpc_serves_health_and_reflection_and_shuts_down_gracefully() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(grpc::serve(
        listener,
        readiness.clone(),
        shutdown.clone(),
        grpc::Services::default(),
    ));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
    assert!(
        readiness.not_ready().is_empty(),
        "gRPC marks itself ready once serving"
    );

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = responses
        .message()
        .await
        .unwrap()
        .and_then(|r| r.message_response)
    else {
        panic!("reflection must answer ListServices");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        services.contains(&"grpc.health.v1.Health".to_string()),
        "{services:?}"
    );

    stop(shutdown, server).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn admin_serves_health_readiness_and_metrics_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let readiness = Readiness::default();
    let controllers = readiness.component("dataset");
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(admin::serve(
        listener,
        None,
        metrics.clone(),
        readiness,
        shutdown.clone(),
    ));

    assert!(
        http_get(addr, "/healthz")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    let not_ready = http_get(addr, "/readyz").await.unwrap();
    assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
    assert!(not_ready.ends_with("not ready: dataset\n"), "{not_ready}");
    controllers.set_ready();
    assert!(
        http_get(addr, "/readyz")
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );

    metrics.reconcile_failed("dataset", "apply", "kube");
    let text = http_get(addr, "/metrics").await.unwrap();
    assert!(
        text.contains(
            "miniautoml_operator_reconcile_failures_total{controller=\"dataset\",stage=\"apply\",error=\"kube\"} 1"
        )
    );

    stop(shutdown, server).await;
}

mod tls {
    use std::{path::Path, sync::Arc, time::Duration};

    use miniautoml_operator::{
        admin, grpc,
        metrics::Metrics,
        readiness::Readiness,
        tls::{RELOAD_EVERY, ServerTls},
    };
    use miniautoml_test_support::{TestCa, unique};
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };
    use tokio_util::sync::CancellationToken;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    use super::stop;

    /// A health check over TLS, trusting only `ca_pem` and checking the name `localhost`.
    async fn check_over_tls(addr: std::net::SocketAddr, ca_pem: &str) -> Result<(), String> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("localhost");
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn https_get(addr: std::net::SocketAddr, ca_pem: &str, path: &str) -> Result<String, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        // A peer closing without close_notify still delivered what it sent.
        let _ = stream.read_to_end(&mut response).await;
        Ok(String::from_utf8_lossy(&response).into_owned())
    }

    fn scratch_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(unique("miniautoml-tls"))
    }

    #[tokio::test]
    async fn both_listeners_serve_tls_from_a_secret_directory_and_take_a_renewed_certificate() {
        let dir = scratch_dir();
        let first = TestCa::new("first CA");
        first.write_server_files(&dir, &["localhost", "127.0.0.1"], true);
        let shutdown = CancellationToken::new();
        let tls = ServerTls::load(&dir, Some("localhost".into()), shutdown.clone()).unwrap();
        assert_eq!(tls.ca_pem(), first.pem(), "ca.crt is what clients trust");

        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc_listener.local_addr().unwrap();
        let grpc = tokio::spawn(grpc::serve(
            grpc_listener,
            Readiness::default(),
            shutdown.clone(),
            grpc::Services {
                tls: Some(tls.clone()),
                ..Default::default()
            },
        ));
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin_listener.local_addr().unwrap();
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            Some(tls.clone()),
            Arc::new(Metrics::default()),
            Readiness::default(),
            shutdown.clone(),
        ));

        check_over_tls(grpc_addr, &first.pem()).await.unwrap();
        let health = https_get(admin_addr, &first.pem(), "/healthz").await.unwrap();
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let metrics = https_get(admin_addr, &first.pem(), "/metrics").await.unwrap();
        assert!(metrics.contains("# EOF"), "{metrics}");

        // Plain text is refused on both ports, and so is a client trusting another CA.
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await;
        let refused = match plain {
            Err(_) => true,
            Ok(channel) => HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "a plain-text gRPC call must fail");
        let plain_http = miniautoml_test_support::http_get(admin_addr, "/healthz")
            .await
            .unwrap();
        assert!(!plain_http.contains("200"), "{plain_http}");
        let stranger = TestCa::new("another CA");
        let error = check_over_tls(grpc_addr, &stranger.pem()).await.unwrap_err();
        assert!(error.to_lowercase().contains("certificate"), "{error}");

        // A broken file is ignored: the last good certificate keeps serving.
        std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
        tokio::time::sleep(RELOAD_EVERY + Duration::from_secs(2)).await;
        check_over_tls(grpc_addr, &first.pem()).await.unwrap();

        // A renewed certificate (here from a new CA, to tell them apart) serves new connections
        // without a restart.
        let second = TestCa::new("second CA");
        second.write_server_files(&dir, &["localhost", "127.0.0.1"], true);
        let deadline = tokio::time::Instant::now() + RELOAD_EVERY * 3;
        while check_over_tls(grpc_addr, &second.pem()).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the renewed certificate was not picked up"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(check_over_tls(grpc_addr, &first.pem()).await.is_err());
        let health = https_get(admin_addr, &second.pem(), "/healthz").await.unwrap();
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");

        stop(shutdown.clone(), grpc).await;
        stop(shutdown, admin).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn load_error(dir: &Path) -> String {
        ServerTls::load(dir, None, CancellationToken::new())
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn unusable_tls_files_stop_the_start_with_a_reason() {
        let dir = scratch_dir();
        let missing = load_error(&dir);
        assert!(
            missing.contains("tls.crt") && missing.contains("cannot read"),
            "{missing}"
        );

        let ca = TestCa::new("CA");
        ca.write_server_files(&dir, &["localhost"], false);
        std::fs::write(dir.join("tls.key"), "-----BEGIN NOTHING-----\n").unwrap();
        let no_key = load_error(&dir);
        assert!(
            no_key.contains("tls.key") && no_key.contains("no private key"),
            "{no_key}"
        );

        // A key that is not the certificate's.
        let other = scratch_dir();
        ca.write_server_files(&other, &["localhost"], false);
        std::fs::copy(other.join("tls.key"), dir.join("tls.key")).unwrap();
        let mismatch = load_error(&dir);
        assert!(mismatch.starts_with("TLS: "), "{mismatch}");
        assert!(mismatch.to_lowercase().contains("key"), "{mismatch}");

        std::fs::write(dir.join("tls.crt"), "").unwrap();
        let empty = load_error(&dir);
        assert!(empty.contains("holds no certificate"), "{empty}");

        // Without ca.crt, a self-signed tls.crt is what clients trust.
        let cert = ca.write_server_files(&dir, &["localhost"], false);
        let tls = ServerTls::load(&dir, None, CancellationToken::new()).unwrap();
        assert_eq!(tls.ca_pem(), cert);
        for scratch in [dir, other] {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}
