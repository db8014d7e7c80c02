//! MiniAutoML's web console: the runs table, a run's live curves, compare, datasets, deployments
//! with a try-it box, and the system's state, served by the operator from its watch caches and
//! the object store (no database).
//!
//! Every request but the sign-in page and the static files needs a viewer the [`Backend`]
//! authenticates (a bearer token for the console's audience, in the `authorization` header or
//! the cookie the sign-in page sets), and every resource shown is checked with Kubernetes'
//! authorization in its namespace: a viewer sees only what Kubernetes lets them get.

pub mod assets;
pub mod backend;
mod events;
pub mod pages;
mod routes;
pub mod views;

use std::sync::Arc;

use axum::{
    Router, middleware,
    response::Redirect,
    routing::{get, post},
};

use crate::routes::{
    App, authenticate, compare_page, dataset_page, datasets_page, deployment_page, deployments_page,
    epochs_json, login, login_page, logout, predict, run_page, runs_json, runs_page, security_headers,
    system_page,
};
pub use crate::{
    backend::{Action, Anyone, ArtifactFile, Backend, Prediction, Refusal, SystemInfo, Viewer},
    routes::{
        CONTENT_SECURITY_POLICY, COOKIE, MAX_COMPARED, MAX_DOCUMENT, Peer, Seen, Settings, allowed, history,
        token,
    },
};

/// The console's routes over `backend`.
pub fn router(backend: Arc<dyn Backend>, settings: Settings) -> Router {
    let app = App {
        backend,
        settings: Arc::new(settings),
    };
    let viewed = Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/runs", get(runs_page))
        .route("/runs/{namespace}/{name}", get(run_page))
        .route("/compare", get(compare_page))
        .route("/datasets", get(datasets_page))
        .route("/datasets/{namespace}/{name}", get(dataset_page))
        .route("/deployments", get(deployments_page))
        .route("/deployments/{namespace}/{name}", get(deployment_page))
        .route("/system", get(system_page))
        .route("/api/runs", get(runs_json))
        .route("/api/runs/{namespace}/{name}/epochs", get(epochs_json))
        .route("/api/runs/{namespace}/{name}/events", get(events::stream))
        .route("/api/deployments/{namespace}/{name}/predict", post(predict))
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
    Router::new()
        .merge(viewed)
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{*path}", get(assets::serve))
        .layer(middleware::map_response(security_headers))
        .with_state(app)
}
