//! The console's routes over a fake backend: who sees what, the pages' data, the sign-in and
//! the try-it box. No browser, cluster or store (the e2e suite drives a real browser against the
//! operator on the local cluster).

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use miniautoml_api::{
    Dataset, ModelDeployment, TrainingJob,
    training_job::{EpochStatus, TrainingPhase},
};
use miniautoml_console::{
    Action, ArtifactFile, Backend, Prediction, Refusal, Settings, SystemInfo, Viewer, router,
};
use tower::ServiceExt;

/// `alice` may do everything in `team-a`; `bob` may list runs in `team-b` only.
struct Person {
    name: &'static str,
    allowed: HashSet<(Action, &'static str)>,
}

impl Viewer for Person {
    fn name(&self) -> &str {
        self.name
    }
    fn may<'a>(&'a self, action: Action, namespace: &'a str) -> BoxFuture<'a, Result<bool, Refusal>> {
        let allowed = self
            .allowed
            .iter()
            .any(|(a, ns)| *a == action && *ns == namespace);
        Box::pin(async move { Ok(allowed) })
    }
}

#[derive(Default)]
struct Fake {
    runs: Vec<Arc<TrainingJob>>,
    histories: BTreeMap<String, Vec<EpochStatus>>,
    datasets: Vec<Arc<Dataset>>,
    deployments: Vec<Arc<ModelDeployment>>,
    predicted: Mutex<Vec<String>>,
}

const EVERYTHING: [Action; 8] = [
    Action::ListRuns,
    Action::GetRun,
    Action::RunLogs,
    Action::ListDatasets,
    Action::GetDataset,
    Action::ListDeployments,
    Action::GetDeployment,
    Action::Predict,
];

impl Backend for Fake {
    fn authenticate<'a>(
        &'a self,
        token: Option<&'a str>,
        _peer: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Viewer>, Refusal>> {
        Box::pin(async move {
            match token {
                Some("alice-token") => Ok(Arc::new(Person {
                    name: "alice",
                    allowed: EVERYTHING.iter().map(|a| (*a, "team-a")).collect(),
                }) as Arc<dyn Viewer>),
                Some("bob-token") => Ok(Arc::new(Person {
                    name: "bob",
                    allowed: [(Action::ListRuns, "team-b")].into(),
                }) as Arc<dyn Viewer>),
                Some("down") => Err(Refusal::Unavailable("the API server is down".into())),
                _ => Err(Refusal::Unauthenticated("a token for audience miniautoml".into())),
            }
        })
    }
    fn needs_token(&self) -> bool {
        true
    }
    fn runs(&self) -> Vec<Arc<TrainingJob>> {
        self.runs.clone()
    }
    fn datasets(&self) -> Vec<Arc<Dataset>> {
        self.datasets.clone()
    }
    fn deployments(&self) -> Vec<Arc<ModelDeployment>> {
        self.deployments.clone()
    }
    fn predictor(&self, _: &str, _: &str) -> Option<Arc<Deployment>> {
        None
    }
    fn history<'a>(&'a self, run: &'a TrainingJob) -> BoxFuture<'a, Result<Vec<EpochStatus>, String>> {
        let name = run.metadata.name.clone().unwrap_or_default();
        Box::pin(async move {
            self.histories
                .get(&name)
                .cloned()
                .ok_or_else(|| "no history".to_string())
        })
    }
    fn artifact<'a>(&'a self, _: &'a TrainingJob) -> BoxFuture<'a, Result<Vec<ArtifactFile>, String>> {
        Box::pin(async {
            Ok(vec![ArtifactFile {
                name: "model.safetensors".into(),
                bytes: 4096,
                sha256: Some("ab".repeat(32)),
            }])
        })
    }
    fn logs<'a>(&'a self, _: &'a str, pod: &'a str, _: i64) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { Ok(format!("epoch 3 done in {pod}")) })
    }
    fn predict<'a>(
        &'a self,
        _: &'a ModelDeployment,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, String>> {
        self.predicted.lock().unwrap().push(text.to_string());
        Box::pin(async {
            Ok(Prediction {
                label: "joy".into(),
                scores: [("joy".to_string(), 0.8), ("anger".to_string(), 0.2)].into(),
            })
        })
    }
    fn system(&self) -> BoxFuture<'_, SystemInfo> {
        Box::pin(async {
            SystemInfo {
                version: "0.1.0".into(),
                leader: Some("operator-0".into()),
                replica: Some("operator-0".into()),
                algorithms: [("intent-classification".to_string(), "trainer:1".to_string())].into(),
                bucket: "miniautoml".into(),
                store: Ok(()),
                kueue: false,
            }
        })
    }
}

fn epoch(rank: u32, n: u64, accuracy: f64) -> EpochStatus {
    EpochStatus {
        id: format!("{rank}-{n}"),
        metrics: [
            ("accuracy".to_string(), accuracy),
            ("loss".to_string(), 1.0 / n as f64),
        ]
        .into(),
        ..EpochStatus::default()
    }
}

fn run(
    namespace: &str,
    name: &str,
    phase: TrainingPhase,
    epochs: Vec<EpochStatus>,
    done: u64,
) -> TrainingJob {
    let mut job: TrainingJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "creationTimestamp": "2026-12-01T10:00:00Z"},
        "spec": {"algorithm": "intent-classification", "dataset": {"name": "tweets"},
                 "parameters": {"EPOCHS": "40", "LR": "4"}, "outputModelName": name},
    }))
    .unwrap();
    let mut status = miniautoml_api::TrainingJobStatus {
        phase: Some(phase),
        progress: Some(format!("{done}/40")),
        run_id: Some("7".into()),
        ..Default::default()
    };
    status.epochs = epochs;
    status.workers = vec![miniautoml_api::training_job::WorkerStatus {
        rank: 0,
        pod: format!("{name}-train-abc"),
        ..Default::default()
    }];
    job.status = Some(status);
    job
}

fn fake() -> Fake {
    // `long` keeps 3 of its 40 epochs in status; the store has them all.
    let history: Vec<EpochStatus> = (1..=40).map(|n| epoch(0, n, n as f64 / 100.0)).collect();
    let long = run(
        "team-a",
        "long",
        TrainingPhase::Running,
        vec![epoch(0, 16, 0.16), epoch(0, 32, 0.32), epoch(0, 40, 0.40)],
        40,
    );
    let short = run(
        "team-a",
        "short",
        TrainingPhase::Succeeded,
        (1..=3).map(|n| epoch(0, n, 0.5 + n as f64 / 10.0)).collect(),
        3,
    );
    let mut long = long;
    long.status.as_mut().unwrap().artifact = Some(miniautoml_api::training_job::ArtifactStatus {
        uri: "s3://miniautoml/models/team-a/long/uid-long/".into(),
        version: "7".into(),
        ..Default::default()
    });
    let secret = run("team-b", "secret-run", TrainingPhase::Running, vec![], 0);
    let deployment: ModelDeployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "short-md", "namespace": "team-a"},
        "spec": {"model": {"trainingJob": "short"}},
        "status": {"servedRun": "7", "readyReplicas": 1, "replicas": 1},
    }))
    .unwrap();
    let dataset: Dataset = serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "tweets", "namespace": "team-a"},
        "spec": {"type": "TextIntent", "commits": [
            {"message": "part 1", "source": {"bucket": "b", "key": "raw/team-a/1.csv"}},
            {"message": "part 2", "source": {"bucket": "b", "key": "raw/team-a/2.csv"}}]},
        "status": {"commitCount": 1, "totalExamples": 2963,
            "commits": [{"id": 1, "entry": 0, "createdAt": "2026-12-01T10:00:00Z", "message": "part 1",
                "tags": {"source": "twitter"}, "path": "datasets/team-a/tweets/commits/1/",
                "statistics": {"numExamples": 2963, "numLabels": 3,
                    "perLabel": {"anger": 1400, "joy": 708, "sadness": 855}}}],
            "rejected": [{"entry": 1, "rejectedAt": "2026-12-01T10:01:00Z",
                "message": "s3://b/raw/team-a/2.csv: line 17: expected 2 columns, found 1"}],
            "snapshots": [{"versionHash": "hashAg==", "commits": [1], "state": "Ready"}]},
    }))
    .unwrap();
    Fake {
        runs: vec![Arc::new(long), Arc::new(short), Arc::new(secret)],
        histories: [("long".to_string(), history)].into(),
        deployments: vec![Arc::new(deployment)],
        datasets: vec![Arc::new(dataset)],
        ..Fake::default()
    }
}

fn app(fake: Fake) -> Router {
    router(
        Arc::new(fake),
        Settings {
            audience: "miniautoml".into(),
            secure: true,
        },
    )
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path).header(header::ACCEPT, "text/html");
    if let Some(token) = token {
        request = request.header(header::COOKIE, format!("miniautoml_token={token}"));
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_page_without_a_token_sends_the_browser_to_sign_in() {
    let app = app(fake());
    let (status, headers, _) = send(&app, get("/runs?phase=Running", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login?next=/runs%3Fphase%3DRunning");
    // An API call gets a 401 with the reason, not a redirect.
    let request = Request::get("/api/runs").body(Body::empty()).unwrap();
    let (status, _, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("audience miniautoml"), "{body}");
    // The table's refresh gets the reason, not a sign-in page to put in a row.
    let (status, _, body) = send(&app, get("/runs?fragment=rows", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.starts_with("{\"error\""), "{body}");
    // The API server unreachable: 503, nothing shown on a guess.
    let (status, _, _) = send(&app, get("/runs", Some("down"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn signing_in_sets_a_cookie_only_this_site_sends_and_scripts_cannot_read() {
    let app = app(fake());
    let form = |token: &str, next: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}&next={next}")))
            .unwrap()
    };
    let (status, headers, _) = send(&app, form("alice-token", "%2Fdatasets")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/datasets");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    for part in [
        "miniautoml_token=alice-token",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    // Never sent elsewhere after signing in.
    let (_, headers, _) = send(&app, form("alice-token", "https%3A%2F%2Fevil.example")).await;
    assert_eq!(headers[header::LOCATION], "/runs");
    let (_, headers, _) = send(&app, form("alice-token", "%2F%2Fevil.example")).await;
    assert_eq!(headers[header::LOCATION], "/runs");
    // A token the API server refuses: the sign-in page again, with why.
    let (status, headers, body) = send(&app, form("made-up", "%2Fruns")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!headers.contains_key(header::SET_COOKIE));
    assert!(body.contains("audience miniautoml"), "{body}");
}

#[tokio::test]
async fn every_response_forbids_other_origins_scripts_and_framing() {
    let app = app(fake());
    for path in ["/runs", "/login", "/assets/console.js"] {
        let (_, headers, _) = send(&app, get(path, Some("alice-token"))).await;
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.starts_with("default-src 'self'"), "{path}: {policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{path}: {policy}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
    let (status, headers, body) = send(&app, get("/assets/vendor/uPlot.iife.min.js", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(body.contains("uPlot"));
}

#[tokio::test]
async fn a_viewer_sees_only_the_runs_of_namespaces_kubernetes_lets_them_list() {
    let app = app(fake());
    let (status, _, alice) = send(&app, get("/runs", Some("alice-token"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(alice.contains("data-key=\"team-a/long\"") && alice.contains("data-key=\"team-a/short\""));
    assert!(!alice.contains("secret-run"), "team-b's run shown to alice");
    assert!(alice.contains("1 namespaces hidden"), "{alice}");
    let (_, _, bob) = send(&app, get("/runs", Some("bob-token"))).await;
    assert!(bob.contains("secret-run") && !bob.contains("team-a/long"));
    // A run page in a namespace the viewer may not get: 403 naming the permission.
    let (status, _, body) = send(&app, get("/runs/team-b/secret-run", Some("alice-token"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("may not get trainingjobs.miniautoml.io in namespace &quot;team-b&quot;"),
        "{body}"
    );
    // Its epochs and stream neither.
    for path in [
        "/api/runs/team-b/secret-run/epochs",
        "/api/runs/team-b/secret-run/events",
    ] {
        let request = Request::get(path)
            .header(header::AUTHORIZATION, "Bearer alice-token")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, request).await.0, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn the_runs_table_filters_sorts_and_refreshes_its_rows_alone() {
    let app = app(fake());
    let (_, _, body) = send(&app, get("/runs?sort=accuracy&dir=desc", Some("alice-token"))).await;
    let short = body.find("data-key=\"team-a/short\"").unwrap();
    let long = body.find("data-key=\"team-a/long\"").unwrap();
    assert!(short < long, "short's accuracy 0.8 sorts above long's 0.4");
    let (_, _, body) = send(&app, get("/runs?phase=Succeeded", Some("alice-token"))).await;
    assert!(body.contains("team-a/short") && !body.contains("data-key=\"team-a/long\""));
    let (_, _, rows) = send(&app, get("/runs?fragment=rows", Some("alice-token"))).await;
    assert!(rows.trim_start().starts_with("<tr data-key="), "{rows}");
    assert!(!rows.contains("<html"));
}

#[tokio::test]
async fn a_run_page_has_every_epoch_from_the_store_when_the_status_keeps_a_few() {
    let app = app(fake());
    let (status, _, body) = send(
        &app,
        get(
            "/runs/team-a/long?metric=loss&scale=log&smooth=0.6",
            Some("alice-token"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body.matches("<tr data-id=\"0-").count(),
        40,
        "40 epochs in the data table"
    );
    assert!(
        body.contains("<option value=\"loss\" selected>"),
        "the URL's metric is selected"
    );
    assert!(body.contains("<option value=\"log\" selected>"));
    assert!(
        body.contains("events?after=40"),
        "the stream resumes after the page's last epoch"
    );
    assert!(body.contains("data-ended=\"false\""));
    assert!(body.contains("model.safetensors") && body.contains("4.0 KiB"));
    assert!(
        body.contains("epoch 3 done in long-train-abc"),
        "the pod's log lines"
    );
    // The epochs as JSON, for compare.
    let request = Request::get("/api/runs/team-a/long/epochs")
        .header(header::AUTHORIZATION, "Bearer alice-token")
        .body(Body::empty())
        .unwrap();
    let (_, _, json) = send(&app, request).await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["epochs"].as_array().unwrap().len(), 40);
    assert_eq!(json["epochs"][39]["metrics"]["accuracy"], 0.4);
}

#[tokio::test]
async fn the_stream_of_an_ended_run_sends_its_epochs_and_ends() {
    let app = app(fake());
    let request = Request::get("/api/runs/team-a/short/events?after=2")
        .header(header::AUTHORIZATION, "Bearer alice-token")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    assert!(
        !body.contains("id: 0-1\n"),
        "epochs before ?after= are the page's already: {body}"
    );
    assert!(
        body.contains("event: epoch\nid: 0-2\ndata: {\"id\":\"0-2\""),
        "{body}"
    );
    assert!(body.contains("id: 0-3"), "{body}");
    assert!(
        body.contains("event: end\ndata: {\"phase\":\"Succeeded\""),
        "{body}"
    );
    // A reconnect resumes from its Last-Event-ID.
    let request = Request::get("/api/runs/team-a/short/events?after=1")
        .header(header::AUTHORIZATION, "Bearer alice-token")
        .header("last-event-id", "0-3")
        .body(Body::empty())
        .unwrap();
    let (_, _, body) = send(&app, request).await;
    assert!(!body.contains("id: 0-2\n") && body.contains("id: 0-3"), "{body}");
}

#[tokio::test]
async fn compare_overlays_two_to_ten_runs_and_diffs_what_differs() {
    let app = app(fake());
    let (status, _, body) = send(
        &app,
        get("/compare?runs=team-a/long,team-a/short", Some("alice-token")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("/api/runs/team-a/long/epochs") && body.contains("/api/runs/team-a/short/epochs"));
    assert!(
        body.contains("<tr class=\"differs\"><th scope=\"row\">phase</th>"),
        "{body}"
    );
    assert!(
        !body.contains("<tr class=\"differs\"><th scope=\"row\">LR</th>"),
        "same LR is not marked"
    );
    let (status, _, _) = send(
        &app,
        get("/compare?runs=team-a/long,team-b/secret-run", Some("alice-token")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let many = (0..11)
        .map(|i| format!("team-a/r{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (status, _, _) = send(&app, get(&format!("/compare?runs={many}"), Some("alice-token"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_try_it_box_takes_json_from_viewers_who_may_predict() {
    let fake = fake();
    let app = app(fake);
    let predict = |token: &str, content_type: &str, body: &str| {
        Request::post("/api/deployments/team-a/short-md/predict")
            .header(header::COOKIE, format!("miniautoml_token={token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (status, _, body) = send(
        &app,
        predict("alice-token", "application/json", r#"{"text":"so happy"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["label"], "joy");
    assert_eq!(answer["scores"]["anger"], 0.2);
    // A form another site could post is not JSON.
    let (status, _, _) = send(
        &app,
        predict("alice-token", "application/x-www-form-urlencoded", "text=x"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(
        &app,
        predict("alice-token", "application/json", r#"{"text":"  "}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = send(&app, predict("bob-token", "application/json", r#"{"text":"hi"}"#)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("create modeldeployments.miniautoml.io/predict"),
        "{body}"
    );
}

#[tokio::test]
async fn the_deployment_and_system_pages_show_their_state() {
    let app = app(fake());
    let (status, _, body) = send(&app, get("/deployments/team-a/short-md", Some("alice-token"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("id=\"try-it\"") && body.contains("1/1"), "{body}");
    assert!(body.contains("no predictor Deployment"));
    let (_, _, body) = send(&app, get("/system", Some("alice-token"))).await;
    assert!(
        body.contains("operator-0") && body.contains("intent-classification") && body.contains("reachable")
    );
}

#[tokio::test]
async fn a_dataset_page_shows_commits_label_counts_rejections_and_snapshots() {
    let app = app(fake());
    let (status, _, body) = send(&app, get("/datasets/team-a/tweets", Some("alice-token"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("<progress max=\"1400\" value=\"1400\" aria-label=\"anger\">"),
        "{body}"
    );
    assert!(
        body.contains("<span class=\"count\" data-label=\"joy\">708</span>"),
        "{body}"
    );
    assert!(
        body.contains("line 17: expected 2 columns, found 1"),
        "the rejection with its line"
    );
    assert!(body.contains("hashAg==") && body.contains("source=twitter"));
    let (_, _, list) = send(&app, get("/datasets", Some("bob-token"))).await;
    assert!(!list.contains("tweets"), "bob may not list team-a's datasets");
}
