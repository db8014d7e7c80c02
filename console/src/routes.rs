//! The console's handlers: sign-in, the per-namespace checks, and every page and API route but
//! the event stream (`events`).

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc};

use axum::{
    Form, Json,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use futures::{StreamExt, stream};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use miniautoml_api::{TrainingJob, training_job::TrainingPhase};
use serde::Deserialize;

use crate::{
    backend::{Action, Backend, Refusal, Viewer},
    pages,
    views::{self, Point, RunQuery},
};

/// The cookie the sign-in page sets: the token itself, readable only by the server
/// (`HttpOnly`), sent only by this site's own pages (`SameSite=Strict`).
pub const COOKIE: &str = "miniautoml_token";

/// What every response carries: nothing but this origin's own scripts, styles and requests
/// (Pico's icons are `data:` images), and no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Most runs one compare view overlays.
pub const MAX_COMPARED: usize = 10;

/// Log lines shown on a run's page.
const LOG_LINES: i64 = 60;

/// How the console is served.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The audience tokens are made for (shown on the sign-in page).
    pub audience: String,
    /// Whether the listener serves TLS (the cookie is then `Secure`).
    pub secure: bool,
}

/// What every handler reads.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) settings: Arc<Settings>,
}

pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The bearer token of a request: the `authorization` header, else the sign-in cookie.
pub fn token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    bearer.filter(|t| !t.is_empty()).or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_string())
            .filter(|t| !t.is_empty())
    })
}

/// The address a request came from, as the server that runs the router leaves it (in-flight
/// reviews are bounded per peer).
#[derive(Clone, Debug)]
pub struct Peer(pub String);

fn peer(request: &Request) -> String {
    let extensions = request.extensions();
    extensions
        .get::<Peer>()
        .map(|peer| peer.0.clone())
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The authenticated viewer of a request (left by [`authenticate`]).
#[derive(Clone)]
pub struct Seen(pub Arc<dyn Viewer>);

impl<S: Send + Sync> FromRequestParts<S> for Seen {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Seen>()
            .cloned()
            .ok_or(StatusCode::UNAUTHORIZED)
    }
}

impl Seen {
    fn name(&self) -> Option<&str> {
        Some(self.0.name())
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// A refusal as a page (HTML) or `{"error": …}` (anything else), with its status code.
fn refused(refusal: &Refusal, html: bool) -> Response {
    let code = match refusal {
        Refusal::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
    };
    failure(code, &refusal.to_string(), html, None)
}

fn failure(code: StatusCode, message: &str, html: bool, viewer: Option<&str>) -> Response {
    if html {
        let title = code.canonical_reason().unwrap_or("Error");
        (code, pages::error(title, message, viewer)).into_response()
    } else {
        (code, Json(serde_json::json!({"error": message}))).into_response()
    }
}

pub(crate) async fn authenticate(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let token = token(request.headers());
    let peer = peer(&request);
    match app.backend.authenticate(token.as_deref(), &peer).await {
        Ok(viewer) => {
            request.extensions_mut().insert(Seen(viewer));
            next.run(request).await
        }
        Err(Refusal::Unauthenticated(message))
            if request.method() == axum::http::Method::GET
                && wants_html(request.headers())
                // The runs table's refresh shows the reason rather than a sign-in page in a row.
                && !request.uri().query().is_some_and(|q| q.contains("fragment=")) =>
        {
            let next = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/runs".into());
            let mut response = Redirect::to(&format!("/login?next={}", pages::encode(&next))).into_response();
            if token.is_some() {
                tracing::info!(peer, "console sign-in refused: {message}");
            }
            response.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static("miniautoml_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
            );
            response
        }
        Err(refusal) => {
            let fragment = request.uri().query().is_some_and(|q| q.contains("fragment="));
            refused(&refusal, wants_html(request.headers()) && !fragment)
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LoginQuery {
    next: String,
    error: String,
}

/// Where to go after signing in: a path of this site only.
fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_string()
    } else {
        "/runs".to_string()
    }
}

pub(crate) async fn login_page(State(app): State<App>, Query(query): Query<LoginQuery>) -> Response {
    if !app.backend.needs_token() {
        return Redirect::to(&safe_next(&query.next)).into_response();
    }
    let error = (!query.error.is_empty()).then_some(query.error.as_str());
    pages::login(&app.settings.audience, &safe_next(&query.next), error).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

pub(crate) async fn login(State(app): State<App>, request: Request) -> Response {
    let peer = peer(&request);
    let Ok(Form(form)) = Form::<LoginForm>::from_request(request, &()).await else {
        return (StatusCode::BAD_REQUEST, "a form with a token\n").into_response();
    };
    let token = form.token.trim().to_string();
    let next = safe_next(&form.next);
    match app.backend.authenticate(Some(&token), &peer).await {
        Ok(viewer) => {
            tracing::info!(user = viewer.name(), peer, "console sign-in");
            let secure = if app.settings.secure { "; Secure" } else { "" };
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
            let mut response = Redirect::to(&next).into_response();
            match HeaderValue::from_str(&cookie) {
                Ok(value) => {
                    response.headers_mut().insert(header::SET_COOKIE, value);
                    response
                }
                Err(_) => failure(
                    StatusCode::BAD_REQUEST,
                    "the token has characters no token has",
                    true,
                    None,
                ),
            }
        }
        Err(refusal) => {
            let code = match refusal {
                Refusal::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                Refusal::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            };
            (
                code,
                pages::login(&app.settings.audience, &next, Some(&refusal.to_string())),
            )
                .into_response()
        }
    }
}

pub(crate) async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("miniautoml_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    response
}

/// The namespaces among `namespaces` where `viewer` may do `action` (four reviews at a time,
/// within the per-caller limit of reviews in flight).
pub async fn allowed(
    viewer: &dyn Viewer,
    action: Action,
    namespaces: BTreeSet<String>,
) -> Result<BTreeSet<String>, Refusal> {
    let answers: Vec<(String, Result<bool, Refusal>)> = stream::iter(namespaces)
        .map(|namespace| async move {
            let answer = viewer.may(action, &namespace).await;
            (namespace, answer)
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut allowed = BTreeSet::new();
    for (namespace, answer) in answers {
        if answer? {
            allowed.insert(namespace);
        }
    }
    Ok(allowed)
}

/// `items` in namespaces where the viewer may do `action`, and how many namespaces were hidden.
async fn visible<R: ResourceExt>(
    viewer: &Seen,
    action: Action,
    items: Vec<Arc<R>>,
) -> Result<(Vec<Arc<R>>, usize), Refusal> {
    let namespaces: BTreeSet<String> = items.iter().map(|i| i.namespace().unwrap_or_default()).collect();
    let total = namespaces.len();
    let allowed = allowed(viewer.0.as_ref(), action, namespaces).await?;
    let kept = items
        .into_iter()
        .filter(|i| allowed.contains(&i.namespace().unwrap_or_default()))
        .collect();
    Ok((kept, total - allowed.len()))
}

/// Whether the viewer may do `action` in `namespace`: a refusal or a 403 response when not.
pub(crate) async fn check(
    viewer: &Seen,
    action: Action,
    namespace: &str,
    html: bool,
) -> Result<(), Response> {
    match viewer.0.may(action, namespace).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(failure(
            StatusCode::FORBIDDEN,
            &format!(
                "{} may not {} in namespace {namespace:?}: bind a Role granting it (the chart ships \
                 the ClusterRoles data-engineer, data-scientist and app-developer)",
                viewer.0.name(),
                action.permission()
            ),
            html,
            viewer.name(),
        )),
        Err(refusal) => Err(refused(&refusal, html)),
    }
}

fn not_found(what: &str, namespace: &str, name: &str, html: bool, viewer: &Seen) -> Response {
    failure(
        StatusCode::NOT_FOUND,
        &format!("no {what} {name:?} in namespace {namespace:?}"),
        html,
        viewer.name(),
    )
}

pub(crate) async fn runs_page(
    State(app): State<App>,
    viewer: Seen,
    Query(query): Query<RunQuery>,
) -> Response {
    let (runs, hidden) = match visible(&viewer, Action::ListRuns, app.backend.runs()).await {
        Ok(kept) => kept,
        Err(refusal) => return refused(&refusal, true),
    };
    let rows = views::run_rows(&runs, &query, Timestamp::now());
    if query.fragment == "rows" {
        return pages::run_rows(&rows).into_response();
    }
    pages::runs(&rows, &query, hidden, viewer.name()).into_response()
}

pub(crate) async fn runs_json(
    State(app): State<App>,
    viewer: Seen,
    Query(query): Query<RunQuery>,
) -> Response {
    match visible(&viewer, Action::ListRuns, app.backend.runs()).await {
        Ok((runs, _)) => Json(views::run_rows(&runs, &query, Timestamp::now())).into_response(),
        Err(refusal) => refused(&refusal, false),
    }
}

/// The chart's state, from the URL.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ChartQuery {
    metric: String,
    smooth: Option<f64>,
    scale: String,
    /// `NS/NAME,…` (compare).
    runs: String,
}

impl ChartQuery {
    fn smooth(&self) -> f64 {
        self.smooth
            .filter(|s| s.is_finite())
            .unwrap_or(0.0)
            .clamp(0.0, 0.99)
    }
    fn scale(&self) -> &str {
        if self.scale == "log" { "log" } else { "linear" }
    }
}

/// A run's whole history: the status when it keeps every epoch, else the store's merged with
/// the status (which may be ahead of it by the epochs just reported).
pub async fn history(backend: &dyn Backend, run: &TrainingJob) -> (Vec<Point>, Vec<String>, Option<String>) {
    let status = run.status.clone().unwrap_or_default();
    if views::status_has_all_epochs(run) {
        let (points, names) = views::points(&status.epochs);
        return (points, names, None);
    }
    match backend.history(run).await {
        Ok(mut all) => {
            all.extend(status.epochs);
            let (points, names) = views::points(&all);
            (points, names, None)
        }
        Err(error) => {
            let (points, names) = views::points(&status.epochs);
            (points, names, Some(error))
        }
    }
}

pub(crate) async fn run_page(
    State(app): State<App>,
    viewer: Seen,
    Path((namespace, name)): Path<(String, String)>,
    Query(chart): Query<ChartQuery>,
) -> Response {
    if let Err(response) = check(&viewer, Action::GetRun, &namespace, true).await {
        return response;
    }
    let Some(run) = app.backend.run(&namespace, &name) else {
        return not_found("TrainingJob", &namespace, &name, true, &viewer);
    };
    let backend = app.backend.as_ref();
    let (points, metrics, history_error) = history(backend, &run).await;
    let status = run.status.clone().unwrap_or_default();
    let artifact = match &status.artifact {
        Some(_) => Some(backend.artifact(&run).await),
        None => None,
    };
    let pod = status
        .workers
        .first()
        .map(|w| w.pod.clone())
        .filter(|p| !p.is_empty());
    let logs = match pod {
        Some(pod) if matches!(viewer.0.may(Action::RunLogs, &namespace).await, Ok(true)) => {
            let text = backend.logs(&namespace, &pod, LOG_LINES).await;
            Some((pod, text))
        }
        _ => None,
    };
    let datasets = if matches!(viewer.0.may(Action::GetDataset, &namespace).await, Ok(true)) {
        backend.datasets()
    } else {
        Vec::new()
    };
    let deployments = if matches!(viewer.0.may(Action::ListDeployments, &namespace).await, Ok(true)) {
        backend.deployments()
    } else {
        Vec::new()
    };
    let lineage = views::lineage(&run, &datasets, &deployments);
    let chosen = views::chosen_metric(&chart.metric, &metrics);
    let after = points.iter().map(|p| p.epoch).max().unwrap_or(0);
    let page = pages::RunPage {
        run: &run,
        points: &points,
        metrics: &metrics,
        chosen,
        smooth: chart.smooth(),
        scale: chart.scale(),
        history_error,
        artifact,
        logs,
        lineage,
        after,
    };
    pages::run(page, viewer.name()).into_response()
}

pub(crate) async fn epochs_json(
    State(app): State<App>,
    viewer: Seen,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if let Err(response) = check(&viewer, Action::GetRun, &namespace, false).await {
        return response;
    }
    let Some(run) = app.backend.run(&namespace, &name) else {
        return not_found("TrainingJob", &namespace, &name, false, &viewer);
    };
    let (points, _, error) = history(app.backend.as_ref(), &run).await;
    Json(serde_json::json!({"key": format!("{namespace}/{name}"), "epochs": points, "error": error}))
        .into_response()
}

pub(crate) async fn compare_page(
    State(app): State<App>,
    viewer: Seen,
    Query(chart): Query<ChartQuery>,
) -> Response {
    let keys: Vec<&str> = chart
        .runs
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    if keys.len() > MAX_COMPARED {
        return failure(
            StatusCode::BAD_REQUEST,
            &format!(
                "compare overlays at most {MAX_COMPARED} runs; {} were asked for",
                keys.len()
            ),
            true,
            viewer.name(),
        );
    }
    let mut runs = Vec::new();
    let mut metrics = BTreeSet::new();
    for key in keys {
        let Some((namespace, name)) = key.split_once('/') else {
            return failure(
                StatusCode::BAD_REQUEST,
                &format!("{key:?} is not NAMESPACE/NAME"),
                true,
                viewer.name(),
            );
        };
        if let Err(response) = check(&viewer, Action::GetRun, namespace, true).await {
            return response;
        }
        let Some(run) = app.backend.run(namespace, name) else {
            return not_found("TrainingJob", namespace, name, true, &viewer);
        };
        let status = run.status.clone().unwrap_or_default();
        metrics.extend(status.epochs.iter().flat_map(|e| e.metrics.keys().cloned()));
        runs.push(run);
    }
    let metrics: Vec<String> = metrics.into_iter().collect();
    let chosen = views::chosen_metric(&chart.metric, &metrics);
    let lines = views::compare(&runs);
    pages::compare(
        &runs,
        &lines,
        &metrics,
        chosen.as_deref(),
        chart.smooth(),
        chart.scale(),
        viewer.name(),
    )
    .into_response()
}

pub(crate) async fn datasets_page(State(app): State<App>, viewer: Seen) -> Response {
    match visible(&viewer, Action::ListDatasets, app.backend.datasets()).await {
        Ok((mut datasets, _)) => {
            datasets.sort_by_key(|d| views::key(d.as_ref()));
            pages::datasets(&datasets, viewer.name()).into_response()
        }
        Err(refusal) => refused(&refusal, true),
    }
}

pub(crate) async fn dataset_page(
    State(app): State<App>,
    viewer: Seen,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if let Err(response) = check(&viewer, Action::GetDataset, &namespace, true).await {
        return response;
    }
    let found = app
        .backend
        .datasets()
        .into_iter()
        .find(|d| d.namespace().as_deref() == Some(namespace.as_str()) && d.name_any() == name);
    match found {
        Some(dataset) => pages::dataset(&dataset, viewer.name()).into_response(),
        None => not_found("Dataset", &namespace, &name, true, &viewer),
    }
}

pub(crate) async fn deployments_page(State(app): State<App>, viewer: Seen) -> Response {
    match visible(&viewer, Action::ListDeployments, app.backend.deployments()).await {
        Ok((mut deployments, _)) => {
            deployments.sort_by_key(|d| views::key(d.as_ref()));
            pages::deployments(&deployments, viewer.name()).into_response()
        }
        Err(refusal) => refused(&refusal, true),
    }
}

fn find_deployment(app: &App, namespace: &str, name: &str) -> Option<Arc<miniautoml_api::ModelDeployment>> {
    app.backend
        .deployments()
        .into_iter()
        .find(|d| d.namespace().as_deref() == Some(namespace) && d.name_any() == name)
}

pub(crate) async fn deployment_page(
    State(app): State<App>,
    viewer: Seen,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if let Err(response) = check(&viewer, Action::GetDeployment, &namespace, true).await {
        return response;
    }
    let Some(deployment) = find_deployment(&app, &namespace, &name) else {
        return not_found("ModelDeployment", &namespace, &name, true, &viewer);
    };
    let predictor = app.backend.predictor(&namespace, &name);
    let may_predict = matches!(viewer.0.may(Action::Predict, &namespace).await, Ok(true));
    pages::deployment(&deployment, predictor.as_deref(), may_predict, viewer.name()).into_response()
}

#[derive(Deserialize)]
pub(crate) struct PredictBody {
    text: String,
}

/// Longest document the try-it box sends.
pub const MAX_DOCUMENT: usize = 10_000;

pub(crate) async fn predict(
    State(app): State<App>,
    viewer: Seen,
    Path((namespace, name)): Path<(String, String)>,
    body: Result<Json<PredictBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // JSON only: a form another site posts cannot be one (and the cookie is SameSite=Strict).
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return failure(
                StatusCode::BAD_REQUEST,
                &format!("send {{\"text\": \"…\"}} as application/json: {rejection}"),
                false,
                None,
            );
        }
    };
    if body.text.trim().is_empty() || body.text.len() > MAX_DOCUMENT {
        return failure(
            StatusCode::BAD_REQUEST,
            &format!("the text must be 1 to {MAX_DOCUMENT} bytes"),
            false,
            None,
        );
    }
    if let Err(response) = check(&viewer, Action::Predict, &namespace, false).await {
        return response;
    }
    let Some(deployment) = find_deployment(&app, &namespace, &name) else {
        return not_found("ModelDeployment", &namespace, &name, false, &viewer);
    };
    match app.backend.predict(&deployment, &body.text).await {
        Ok(prediction) => Json(prediction).into_response(),
        Err(error) => failure(StatusCode::BAD_GATEWAY, &error, false, None),
    }
}

pub(crate) async fn system_page(State(app): State<App>, viewer: Seen) -> Response {
    let info = app.backend.system().await;
    let queued = match visible(&viewer, Action::ListRuns, app.backend.runs()).await {
        Ok((runs, _)) => runs
            .iter()
            .filter(|r| {
                matches!(
                    r.status.as_ref().and_then(|s| s.phase),
                    Some(TrainingPhase::Queued)
                )
            })
            .count(),
        Err(refusal) => return refused(&refusal, true),
    };
    pages::system(&info, queued, viewer.name()).into_response()
}
