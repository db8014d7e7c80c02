//! `cargo bench -p miniautoml-console --bench runs_page`: how long the console takes to answer
//! the runs table with 500 runs, its refresh, and the page of a run with 1500 epochs, through
//! its router over a backend holding them in memory. A side path: it leaves out the network,
//! TLS, the reviews (answered from their 10 s cache on a page's second load) and the browser's
//! own drawing; the e2e suite measures sign-in to the runs table in chromium on the cluster.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{Request, header},
};
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use miniautoml_api::{
    Dataset, ModelDeployment, TrainingJob,
    training_job::{EpochStatus, TrainingPhase},
};
use miniautoml_console::{
    Anyone, ArtifactFile, Backend, Prediction, Refusal, Settings, SystemInfo, Viewer, router,
};
use tower::ServiceExt;

const RUNS: usize = 500;
const NAMESPACES: usize = 10;
const LONG_EPOCHS: u64 = 1500;
const REQUESTS: usize = 40;

struct Held {
    runs: Vec<Arc<TrainingJob>>,
    history: Vec<EpochStatus>,
}

impl Backend for Held {
    fn authenticate<'a>(
        &'a self,
        _: Option<&'a str>,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Viewer>, Refusal>> {
        Box::pin(async { Ok(Arc::new(Anyone) as Arc<dyn Viewer>) })
    }
    fn needs_token(&self) -> bool {
        false
    }
    fn runs(&self) -> Vec<Arc<TrainingJob>> {
        self.runs.clone()
    }
    fn datasets(&self) -> Vec<Arc<Dataset>> {
        Vec::new()
    }
    fn deployments(&self) -> Vec<Arc<ModelDeployment>> {
        Vec::new()
    }
    fn predictor(&self, _: &str, _: &str) -> Option<Arc<Deployment>> {
        None
    }
    fn history<'a>(&'a self, _: &'a TrainingJob) -> BoxFuture<'a, Result<Vec<EpochStatus>, String>> {
        Box::pin(async { Ok(self.history.clone()) })
    }
    fn artifact<'a>(&'a self, _: &'a TrainingJob) -> BoxFuture<'a, Result<Vec<ArtifactFile>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn logs<'a>(&'a self, _: &'a str, _: &'a str, _: i64) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Ok(String::new()) })
    }
    fn predict<'a>(
        &'a self,
        _: &'a ModelDeployment,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Prediction, String>> {
        Box::pin(async { Err("no predictors here".to_string()) })
    }
    fn system(&self) -> BoxFuture<'_, SystemInfo> {
        Box::pin(async {
            SystemInfo {
                version: String::new(),
                leader: None,
                replica: None,
                algorithms: Default::default(),
                bucket: String::new(),
                store: Ok(()),
                kueue: false,
            }
        })
    }
}

fn epoch(n: u64) -> EpochStatus {
    EpochStatus {
        id: format!("0-{n}"),
        metrics: [
            ("accuracy".to_string(), 0.5 + (n % 40) as f64 / 100.0),
            ("macroF1".to_string(), 0.45 + (n % 30) as f64 / 100.0),
            ("loss".to_string(), 1.0 / n as f64),
            ("trainLoss".to_string(), 1.2 / n as f64),
        ]
        .into(),
        ..EpochStatus::default()
    }
}

/// A run as the operator's cache holds one after 15 or more epochs: parameters, a status with
/// its (bounded) epochs, final metrics, an artifact.
fn run(i: usize, epochs: u64) -> TrainingJob {
    let phases = [
        TrainingPhase::Succeeded,
        TrainingPhase::Running,
        TrainingPhase::Queued,
        TrainingPhase::Failed,
    ];
    let mut job: TrainingJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": format!("run-{i:04}"), "namespace": format!("team-{}", i % NAMESPACES),
                     "uid": format!("uid-{i}"), "creationTimestamp": "2026-12-01T10:00:00Z"},
        "spec": {"algorithm": "intent-classification", "dataset": {"name": "tweets"},
                 "parameters": {"EPOCHS": epochs.to_string(), "LR": format!("{}", 1 + i % 5), "SEED": i.to_string()},
                 "outputModelName": format!("run-{i:04}")},
    }))
    .unwrap();
    let mut status = miniautoml_api::TrainingJobStatus {
        phase: Some(phases[i % phases.len()]),
        run_id: Some(i.to_string()),
        code_version: Some("docker.io/miniautoml/intent-classification@sha256:5935e8154ab5".into()),
        dataset_version_hash: Some("hashAg==".into()),
        metrics: [("accuracy".to_string(), 0.7), ("testMacroF1".to_string(), 0.69)].into(),
        ..Default::default()
    };
    let all: Vec<EpochStatus> = (1..=epochs).map(epoch).collect();
    status.merge_epochs(&all, Some(epochs as u32));
    job.status = Some(status);
    job
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn measure(app: &axum::Router, path: &str) -> (Duration, Duration, usize) {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..REQUESTS {
        let request = Request::get(path)
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap();
        let started = Instant::now();
        let response = app.clone().oneshot(request).await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        times.push(started.elapsed());
        bytes = body.len();
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.95), bytes)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut runs: Vec<Arc<TrainingJob>> = (1..RUNS).map(|i| Arc::new(run(i, 15))).collect();
    runs.push(Arc::new(run(0, LONG_EPOCHS)));
    let history = (1..=LONG_EPOCHS).map(epoch).collect();
    let app = router(
        Arc::new(Held { runs, history }),
        Settings {
            audience: "miniautoml".into(),
            secure: false,
        },
    );
    println!(
        "| what ({RUNS} runs in {NAMESPACES} namespaces; {REQUESTS} requests each) | p50 | p95 | bytes |"
    );
    println!("|---|---|---|---|");
    for (what, path) in [
        ("the runs table", "/runs"),
        (
            "the runs table sorted by accuracy",
            "/runs?sort=accuracy&dir=desc",
        ),
        ("its refresh (the rows)", "/runs?fragment=rows"),
        ("a run page with 1500 epochs", "/runs/team-0/run-0000"),
    ] {
        let (p50, p95, bytes) = measure(&app, path).await;
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {bytes} |",
            p50.as_secs_f64() * 1000.0,
            p95.as_secs_f64() * 1000.0
        );
    }
}
