//! The admin and gRPC servers over real sockets: health, reflection, readiness and graceful
//! shutdown.

use std::{sync::Arc, time::Duration};

use miniautoml_operator::{admin, grpc, metrics::Metrics, readiness::Readiness};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
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

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
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
        metrics.clone(),
        readiness,
        shutdown.clone(),
    ));

    assert!(http_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    let not_ready = http_get(addr, "/readyz").await;
    assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
    assert!(not_ready.ends_with("not ready: dataset\n"), "{not_ready}");
    controllers.set_ready();
    assert!(http_get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));

    metrics.reconcile_failed("dataset", "kube");
    let text = http_get(addr, "/metrics").await;
    assert!(
        text.contains(
            "miniautoml_operator_reconcile_failures_total{controller=\"dataset\",error=\"kube\"} 1"
        )
    );

    stop(shutdown, server).await;
}
