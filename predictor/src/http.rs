//! The HTTP API: the Open Inference Protocol v2 (KServe's REST protocol) for the one model
//! served, and `/metrics`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v2/health/live` | 200 while the process runs |
//! | `GET /v2/health/ready` | 200 once the model is loaded, 503 before and while stopping |
//! | `GET /v2` | server metadata |
//! | `GET /v2/models/{name}` | model metadata: versions, inputs, outputs |
//! | `GET /v2/models/{name}/ready` | as `/v2/health/ready`, 404 for another name |
//! | `POST /v2/models/{name}/infer` | one BYTES input of documents → `label` (BYTES) and `probabilities` (FP32) |
//! | `GET /metrics` | Prometheus text |
//!
//! Errors are `{"error": "<message>"}` with 400 (bad request), 404 (unknown model), 413 (body
//! over the limit) or 503 (not ready).

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State as Shared},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{Error, Model, Rejection, Result, State};

/// Name of the model's one input.
pub const INPUT_NAME: &str = "text";

/// Most documents in one infer request.
pub const MAX_BATCH: usize = 256;

/// Largest request body: enough for a batch of long documents; beyond it the answer is 413.
pub fn body_limit(max_document_bytes: usize) -> usize {
    max_document_bytes.saturating_mul(16).max(64 * 1024)
}

/// The routes.
pub fn router(state: Arc<State>) -> Router {
    let limit = body_limit(state.max_document_bytes);
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves HTTP on `listener` until `close` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    close: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(close)
        .await
        .map_err(|source| Error::Serve {
            server: "HTTP",
            addr,
            source,
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn not_ready() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the model is not loaded yet")
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "miniautoml-predictor",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

async fn ready(Shared(state): Shared<Arc<State>>) -> Response {
    if state.is_ready() {
        Json(json!({"ready": true})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false}))).into_response()
    }
}

/// The model named `name`, or the error to answer.
fn named(state: &State, name: &str) -> Result<Arc<Model>, Box<Response>> {
    if name != state.model_name {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!(
                "model {name:?} not found: this predictor serves {:?}",
                state.model_name
            ),
        )));
    }
    state.model().cloned().ok_or_else(|| Box::new(not_ready()))
}

async fn model_metadata(Shared(state): Shared<Arc<State>>, Path(name): Path<String>) -> Response {
    let model = match named(&state, &name) {
        Ok(model) => model,
        Err(response) => return *response,
    };
    let manifest = model.manifest();
    Json(json!({
        "name": model.name,
        "versions": [model.version],
        "platform": format!("miniautoml/{}", manifest.algorithm),
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, model.labels().len()]},
        ],
        "parameters": {
            "run_id": model.run_id,
            "architecture": manifest.architecture.name(),
            "code_version": manifest.code_version,
            "labels": model.labels(),
        },
    }))
    .into_response()
}

async fn model_ready(Shared(state): Shared<Arc<State>>, Path(name): Path<String>) -> Response {
    if let Err(response) = named(&state, &name) {
        return *response;
    }
    ready(Shared(state)).await
}

/// An infer request (the fields this model uses; others are ignored).
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
}

#[derive(Debug, Deserialize)]
struct InferInput {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    data: Value,
}

impl InferRequest {
    /// Reads a request body, or says why it is not an infer request.
    pub fn parse(body: &[u8]) -> Result<InferRequest, String> {
        serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))
    }

    /// The documents of the request, or why it is bad.
    pub fn documents(&self) -> Result<Vec<&str>, String> {
        documents(self)
    }
}

fn documents(request: &InferRequest) -> Result<Vec<&str>, String> {
    let [input] = request.inputs.as_slice() else {
        return Err(format!(
            "expected exactly one input ({INPUT_NAME:?}), got {}",
            request.inputs.len()
        ));
    };
    if input.name != INPUT_NAME {
        return Err(format!(
            "unknown input {:?}: the model's input is {INPUT_NAME:?}",
            input.name
        ));
    }
    if input.datatype != "BYTES" {
        return Err(format!(
            "input {INPUT_NAME:?} has datatype {}; expected BYTES",
            input.datatype
        ));
    }
    let mut documents = Vec::new();
    flatten(&input.data, &mut documents)?;
    // Checked: dimensions a client sends may multiply past i64.
    let elements = input.shape.iter().try_fold(
        1i64,
        |product, d| if *d < 0 { None } else { product.checked_mul(*d) },
    );
    if elements != Some(documents.len() as i64) {
        return Err(format!(
            "shape {:?} does not match the {} documents in data",
            input.shape,
            documents.len()
        ));
    }
    if documents.is_empty() {
        return Err("no documents in data".into());
    }
    if documents.len() > MAX_BATCH {
        return Err(format!(
            "{} documents; at most {MAX_BATCH} per request",
            documents.len()
        ));
    }
    Ok(documents)
}

fn flatten<'a>(data: &'a Value, out: &mut Vec<&'a str>) -> Result<(), String> {
    match data {
        Value::String(text) => out.push(text),
        Value::Array(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        other => return Err(format!("BYTES data must be strings, got {other}")),
    }
    Ok(())
}

async fn infer(Shared(state): Shared<Arc<State>>, Path(name): Path<String>, body: Bytes) -> Response {
    let start = Instant::now();
    let (code, documents, response) = answer(&state, &name, &body);
    state.metrics.observe("http", code, documents, start);
    response
}

fn answer(state: &State, name: &str, body: &[u8]) -> (&'static str, usize, Response) {
    let model = match named(state, name) {
        Ok(model) => model,
        Err(response) => {
            let code = if response.status() == StatusCode::NOT_FOUND {
                "not_found"
            } else {
                "unavailable"
            };
            return (code, 0, *response);
        }
    };
    let request = match InferRequest::parse(body) {
        Ok(request) => request,
        Err(message) => return bad(message),
    };
    let documents = match request.documents() {
        Ok(documents) => documents,
        Err(message) => return bad(message),
    };
    for (i, document) in documents.iter().enumerate() {
        if let Err(rejection) = model.check_document(document) {
            let message = match rejection {
                Rejection::Empty => format!("document {i} is empty"),
                other => format!("document {i}: {other}"),
            };
            return bad(message);
        }
    }
    let classified = match model.classify(&documents) {
        Ok(classified) => classified,
        Err(e) => {
            return (
                "internal",
                0,
                error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            );
        }
    };
    let labels: Vec<&str> = classified
        .iter()
        .map(|c| model.labels()[c.class].as_str())
        .collect();
    let probabilities: Vec<f32> = classified
        .iter()
        .flat_map(|c| c.probabilities.iter().copied())
        .collect();
    let n = documents.len();
    let mut body = json!({
        "model_name": model.name,
        "model_version": model.version,
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [n], "data": labels},
            {"name": "probabilities", "datatype": "FP32", "shape": [n, model.labels().len()], "data": probabilities},
        ],
    });
    if let Some(id) = &request.id {
        body["id"] = json!(id);
    }
    ("ok", n, Json(body).into_response())
}

fn bad(message: String) -> (&'static str, usize, Response) {
    ("invalid_argument", 0, error(StatusCode::BAD_REQUEST, message))
}

async fn metrics(Shared(state): Shared<Arc<State>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
