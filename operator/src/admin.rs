//! The admin HTTP server: `/healthz` (the process is alive), `/readyz` (every part is ready)
//! and `/metrics` (Prometheus text format).

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{StartupError, metrics::Metrics, readiness::Readiness, tls::ServerTls};

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// The admin routes.
pub fn router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, readiness })
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    let waiting = state.readiness.not_ready();
    if waiting.is_empty() {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", waiting.join(", ")),
        )
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Serves the admin routes on `listener` (over TLS when `tls` is given) until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Option<ServerTls>,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(), StartupError> {
    let addr = listener.local_addr().map_err(|source| StartupError::Serve {
        server: "admin",
        source,
    })?;
    tracing::info!(%addr, "admin server listening");
    let router = router(metrics, readiness);
    match tls {
        Some(tls) => {
            let listener = tls
                .admin_listener(listener)
                .map_err(|source| StartupError::Serve {
                    server: "admin",
                    source,
                })?;
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    }
    .map_err(|source| StartupError::Serve {
        server: "admin",
        source,
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get_text(router: Router, path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_names_what_is_not_ready_until_everything_is() {
        let readiness = Readiness::default();
        let metrics = Arc::new(Metrics::default());
        let grpc = readiness.component("grpc");
        let app = router(metrics, readiness);
        assert_eq!(
            get_text(app.clone(), "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(
            get_text(app.clone(), "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: grpc\n".into())
        );
        grpc.set_ready();
        assert_eq!(get_text(app, "/readyz").await, (StatusCode::OK, "ok\n".into()));
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_prometheus_format() {
        let metrics = Arc::new(Metrics::default());
        drop(metrics.reconcile_started("trainingjob"));
        let (status, text) = get_text(router(metrics, Readiness::default()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("miniautoml_operator_reconciles_total{controller=\"trainingjob\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
