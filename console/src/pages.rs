//! The HTML of every page (maud: markup as Rust, escaped by construction). Pages carry their data
//! in the markup; `assets/console.js` only draws curves, streams epochs, refreshes the runs
//! table and sends the try-it box, so every view reads without JavaScript too.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use maud::{DOCTYPE, Markup, html};
use miniautoml_api::{Dataset, ModelDeployment, TrainingJob};

use crate::{
    backend::{ArtifactFile, SystemInfo},
    views::{self, DiffLine, Lineage, Point, RunQuery, RunRow},
};

/// Which top-level section a page belongs to (its nav link is marked current).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Runs,
    Compare,
    Datasets,
    Deployments,
    System,
    None,
}

/// The page around `body`.
pub fn layout(title: &str, section: Section, viewer: Option<&str>, body: Markup) -> Markup {
    let version = env!("CARGO_PKG_VERSION");
    let link = |href: &str, label: &str, this: Section| {
        html! {
            li { a href=(href) aria-current=[(section == this).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · MiniAutoML" }
                link rel="stylesheet" href={"/assets/vendor/pico.min.css?v=" (version)};
                link rel="stylesheet" href={"/assets/vendor/uPlot.min.css?v=" (version)};
                link rel="stylesheet" href={"/assets/console.css?v=" (version)};
                script src={"/assets/vendor/uPlot.iife.min.js?v=" (version)} defer {}
                script src={"/assets/console.js?v=" (version)} defer {}
            }
            body {
                header.container-fluid {
                    nav {
                        ul { li { strong { a href="/runs" { "MiniAutoML" } } } }
                        ul {
                            (link("/runs", "Runs", Section::Runs))
                            (link("/compare", "Compare", Section::Compare))
                            (link("/datasets", "Datasets", Section::Datasets))
                            (link("/deployments", "Deployments", Section::Deployments))
                            (link("/system", "System", Section::System))
                            @if let Some(viewer) = viewer {
                                li {
                                    form.signout method="post" action="/logout" {
                                        small #viewer { (viewer) } " "
                                        button.secondary.outline type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                }
                main.container-fluid { (body) }
            }
        }
    }
}

/// The sign-in page: a token for the console's audience, pasted or passed in the URL's
/// fragment (`/login#token=…`, which never reaches a server log).
pub fn login(audience: &str, next: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        Section::None,
        None,
        html! {
            article {
                h1 { "Sign in" }
                p {
                    "The console shows what Kubernetes lets you get. Paste a token made for the audience "
                    code { (audience) } ":"
                }
                pre { code { "kubectl create token NAME -n NAMESPACE --audience " (audience) } }
                p { "or run " code { "kubectl miniautoml console" } ", which opens a signed-in page." }
                @if let Some(error) = error { p #login-error role="alert" { (error) } }
                form #login method="post" action="/login" {
                    textarea name="token" rows="4" required placeholder="eyJhbGciOi…" aria-label="token" {}
                    input type="hidden" name="next" value=(next);
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// An error page.
pub fn error(title: &str, message: &str, viewer: Option<&str>) -> Markup {
    layout(
        title,
        Section::None,
        viewer,
        html! {
            article {
                h1 { (title) }
                p #error role="alert" { (message) }
            }
        },
    )
}

fn number(value: Option<f64>) -> Markup {
    html! {
        @match value {
            Some(v) => (format!("{v:.4}")),
            None => "–",
        }
    }
}

/// `95s` → `1m 35s`.
pub fn duration(seconds: Option<i64>) -> String {
    match seconds {
        None => "–".to_string(),
        Some(s) if s < 60 => format!("{s}s"),
        Some(s) if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        Some(s) => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn run_href(namespace: &str, name: &str) -> String {
    format!("/runs/{namespace}/{name}")
}

fn sort_href(query: &RunQuery, column: &str) -> String {
    let dir = if query.sort == column && query.dir != "asc" {
        "asc"
    } else {
        "desc"
    };
    let next = RunQuery {
        sort: column.to_string(),
        dir: dir.to_string(),
        fragment: String::new(),
        ..query.clone()
    };
    format!("/runs?{}", serde_urlencoded(&next))
}

/// `a=1&b=2` of the non-empty fields.
fn serde_urlencoded(query: &RunQuery) -> String {
    let value = serde_json::to_value(query).unwrap_or_default();
    let mut pairs = Vec::new();
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                pairs.push(format!("{k}={}", encode(v)));
            }
        }
    }
    pairs.join("&")
}

/// Percent-encodes everything but unreserved characters and `/`, `,`.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b',' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The runs table's body (also the refresh's answer).
pub fn run_rows(rows: &[RunRow]) -> Markup {
    html! {
        @for row in rows {
            @let key = format!("{}/{}", row.namespace, row.name);
            tr data-key=(key) {
                td { input.select-run type="checkbox" value=(key) aria-label={"select " (key)}; }
                td { a href=(run_href(&row.namespace, &row.name)) { (row.name) } br; small { (row.namespace) } }
                td { span class={"phase phase-" (row.phase)} { (row.phase) } }
                td.num {
                    (row.epoch.map(|e| e.to_string()).unwrap_or_else(|| "–".into()))
                    @if let Some(n) = row.epochs { "/" (n) }
                }
                td.num { (row.queue_position.map(|p| p.to_string()).unwrap_or_default()) }
                td { (row.dataset) @if let Some(hash) = &row.version_hash { br; small { code { (hash) } } } }
                td.params { small { (row.parameters.join(" ")) } }
                td.num { (number(row.accuracy)) }
                td.num { (number(row.macro_f1)) }
                td.num { (duration(row.duration)) }
                td { small { (row.code_version.as_deref().unwrap_or("–")) } }
            }
        }
        @if rows.is_empty() {
            tr { td colspan="11" { "No runs you may list match." } }
        }
    }
}

/// The runs table.
pub fn runs(rows: &[RunRow], query: &RunQuery, hidden_namespaces: usize, viewer: Option<&str>) -> Markup {
    let header = |column: &str, label: &str| {
        let mark = if query.sort == column {
            if query.dir == "asc" { " ▲" } else { " ▼" }
        } else {
            ""
        };
        html! { th scope="col" { a href=(sort_href(query, column)) { (label) (mark) } } }
    };
    let phases = [
        "",
        "Pending",
        "Queued",
        "Launching",
        "Running",
        "Succeeded",
        "Failed",
    ];
    layout(
        "Runs",
        Section::Runs,
        viewer,
        html! {
            h1 { "Runs" }
            form #run-filter method="get" action="/runs" {
                fieldset role="group" {
                    input type="search" name="q" value=(query.q) placeholder="name, namespace, dataset, parameter" aria-label="filter";
                    select name="phase" aria-label="phase" {
                        @for phase in phases {
                            option value=(phase) selected[query.phase == phase] {
                                @if phase.is_empty() { "any phase" } @else { (phase) }
                            }
                        }
                    }
                    input type="hidden" name="sort" value=(query.sort);
                    input type="hidden" name="dir" value=(query.dir);
                    button type="submit" { "Filter" }
                }
            }
            p {
                a #compare-link href="/compare" aria-disabled="true" role="button" { "Compare selected" }
                " "
                small { (rows.len()) " runs" }
                @if hidden_namespaces > 0 {
                    small { " · " (hidden_namespaces) " namespaces hidden (you may not list their runs)" }
                }
            }
            p #refresh-error role="alert" hidden {}
            div.overflow-auto {
                table #runs.striped data-refresh="5" {
                    thead {
                        tr {
                            th scope="col" { span.visually-hidden { "select" } }
                            (header("name", "Run"))
                            (header("phase", "Phase"))
                            (header("epoch", "Epoch"))
                            th scope="col" { "Queue" }
                            (header("dataset", "Dataset"))
                            th scope="col" { "Parameters" }
                            (header("accuracy", "Accuracy"))
                            (header("macroF1", "Macro-F1"))
                            (header("duration", "Duration"))
                            th scope="col" { "Code" }
                        }
                    }
                    tbody { (run_rows(rows)) }
                }
            }
        },
    )
}

/// The metric, smoothing and scale controls of a chart.
fn chart_controls(metrics: &[String], chosen: Option<&str>, smooth: f64, scale: &str) -> Markup {
    html! {
        fieldset.grid {
            label {
                "Metric"
                select #metric {
                    @for name in metrics {
                        option value=(name) selected[Some(name.as_str()) == chosen] { (name) }
                    }
                }
            }
            label {
                "Smoothing " output #smooth-value { (format!("{smooth:.2}")) }
                input #smooth type="range" min="0" max="0.99" step="0.01" value=(format!("{smooth}"));
            }
            label {
                "Scale"
                select #scale {
                    option value="linear" selected[scale != "log"] { "linear" }
                    option value="log" selected[scale == "log"] { "log" }
                }
            }
        }
    }
}

/// The epochs as a table: what the chart plots, for readers without a canvas and for tests.
pub fn epoch_table(points: &[Point], metrics: &[String]) -> Markup {
    html! {
        table #epoch-data hidden {
            thead {
                tr {
                    th { "id" } th { "rank" } th { "epoch" }
                    @for name in metrics { th { (name) } }
                }
            }
            tbody {
                @for p in points {
                    tr data-id=(p.id) data-rank=(p.rank) data-epoch=(p.epoch) {
                        td { (p.id) } td { (p.rank) } td { (p.epoch) }
                        @for name in metrics {
                            td data-metric=(name) { (p.metrics.get(name).map(|v| v.to_string()).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

/// What a run page needs besides the run.
pub struct RunPage<'a> {
    pub run: &'a TrainingJob,
    pub points: &'a [Point],
    pub metrics: &'a [String],
    pub chosen: Option<String>,
    pub smooth: f64,
    pub scale: &'a str,
    pub history_error: Option<String>,
    pub artifact: Option<Result<Vec<ArtifactFile>, String>>,
    pub logs: Option<(String, Result<String, String>)>,
    pub lineage: Lineage,
    /// The last epoch the page holds: the stream sends what comes after.
    pub after: u64,
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / 1024.0 / 1024.0),
    }
}

/// A run: summary, live curves, artifact, logs and lineage.
pub fn run(page: RunPage<'_>, viewer: Option<&str>) -> Markup {
    let run = page.run;
    let namespace = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let status = run.status.clone().unwrap_or_default();
    let live = views::is_live(run);
    let row = views::run_row(run, k8s_openapi::jiff::Timestamp::now());
    layout(
        &name,
        Section::Runs,
        viewer,
        html! {
            hgroup {
                h1 { (name) }
                p { "namespace " (namespace) " · run " (status.run_id.as_deref().unwrap_or("–")) }
            }
            div.grid {
                dl #run-live {
                    dt { "Phase" } dd #live-phase { (row.phase) }
                    dt { "Epoch" } dd #live-progress { (status.progress.as_deref().unwrap_or("–")) }
                    @if let Some(position) = status.position_in_queue { dt { "Queue position" } dd { (position) } }
                    dt { "Duration" } dd { (duration(row.duration)) }
                }
                dl {
                    dt { "Accuracy" } dd { (number(row.accuracy)) }
                    dt { "Macro-F1" } dd { (number(row.macro_f1)) }
                    dt { "Code version" } dd { (row.code_version.as_deref().unwrap_or("–")) }
                    @if let Some(message) = &status.message { dt { "Message" } dd #run-message { (message) } }
                }
                dl {
                    dt { "Algorithm" } dd { (run.spec.algorithm.as_deref().or(run.spec.image.as_deref()).unwrap_or("–")) }
                    dt { "Workers" } dd { (run.spec.workers) }
                    dt { "Parameters" }
                    dd { @for p in &row.parameters { code { (p) } " " } }
                }
            }
            section #run-curves data-events={"/api/runs/" (namespace) "/" (name) "/events?after=" (page.after)} data-ended=(if live { "false" } else { "true" }) {
                h2 { "Curves" }
                @if let Some(error) = &page.history_error {
                    p role="alert" { "The store's history is not readable (" (error) "); the curves show the epochs kept in the status." }
                }
                (chart_controls(page.metrics, page.chosen.as_deref(), page.smooth, page.scale))
                div #chart {}
                (epoch_table(page.points, page.metrics))
            }
            @if !status.workers.is_empty() {
                section {
                    h2 { "Workers" }
                    table {
                        thead { tr { th { "rank" } th { "pod" } th { "phase" } th { "node" } th { "restarts" } th { "last epoch" } th { "reason" } } }
                        tbody {
                            @for w in &status.workers {
                                tr {
                                    td { (w.rank) } td { (w.pod) } td { (w.phase.as_deref().unwrap_or("–")) }
                                    td { (w.node.as_deref().unwrap_or("–")) } td { (w.restarts) }
                                    td { (w.last_epoch.as_deref().unwrap_or("–")) } td { (w.reason.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
            }
            section #artifact {
                h2 { "Model artifact" }
                @match (&status.artifact, &page.artifact) {
                    (None, _) => p { "No artifact yet." },
                    (Some(artifact), files) => {
                        p { code { (artifact.uri) } " · version " (artifact.version)
                            @if let Some(sha) = &artifact.sha256 { " · manifest sha256 " code { (sha) } } }
                        @match files {
                            Some(Ok(files)) => table #artifact-files {
                                thead { tr { th { "file" } th { "size" } th { "sha256" } } }
                                tbody { @for f in files { tr { td { (f.name) } td.num { (bytes(f.bytes)) } td { small { code { (f.sha256.as_deref().unwrap_or("–")) } } } } } }
                            },
                            Some(Err(error)) => p role="alert" { "The files cannot be listed: " (error) },
                            None => p { "You may not read this run's files." },
                        }
                    }
                }
            }
            section #logs {
                h2 { "Logs" }
                @match &page.logs {
                    None => p { "No pod yet, or you may not read its log (" code { "get pods/log" } ")." },
                    Some((pod, Ok(text))) => { p { small { "the last lines of " code { (pod) } } } pre.logs { (text) } },
                    Some((pod, Err(error))) => p role="alert" { "The log of " (pod) " is not readable: " (error) },
                }
            }
            section #lineage {
                h2 { "Lineage" }
                ol {
                    li { "Dataset " @match &page.lineage.dataset {
                        Some(key) => a href={"/datasets/" (key)} { (key) },
                        None => { (run.spec.dataset.name) " (not found)" },
                    } }
                    li { "Commits " @if page.lineage.commits.is_empty() { "–" } @else {
                        (page.lineage.commits.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")) } }
                    li { "Snapshot " code { (page.lineage.snapshot.as_deref().unwrap_or("–")) } }
                    li { "Run " (name) }
                    li { "Deployments " @if page.lineage.deployments.is_empty() { "none" } @else {
                        @for key in &page.lineage.deployments { a href={"/deployments/" (key)} { (key) } " " } } }
                }
            }
        },
    )
}

/// Runs side by side: overlaid curves and a parameters/metrics diff.
pub fn compare(
    runs: &[Arc<TrainingJob>],
    lines: &[DiffLine],
    metrics: &[String],
    chosen: Option<&str>,
    smooth: f64,
    scale: &str,
    viewer: Option<&str>,
) -> Markup {
    let keys: Vec<String> = runs.iter().map(|r| views::key(r.as_ref())).collect();
    let sources = serde_json::Value::Array(
        keys.iter()
            .map(|key| serde_json::json!({"key": key, "epochs": format!("/api/runs/{key}/epochs")}))
            .collect(),
    );
    layout(
        "Compare",
        Section::Compare,
        viewer,
        html! {
            h1 { "Compare" }
            @if runs.len() < 2 {
                p #compare-hint { "Select 2 to 10 runs in the " a href="/runs" { "runs table" } " and press Compare selected." }
            } @else {
                section #compare-curves data-runs=(sources.to_string()) {
                    (chart_controls(metrics, chosen, smooth, scale))
                    div #chart {}
                }
                div.overflow-auto {
                    table #diff {
                        thead { tr { th { "" } @for key in &keys { th { a href={"/runs/" (key)} { (key) } } } } }
                        tbody {
                            @for line in lines {
                                tr class=[line.differs.then_some("differs")] {
                                    th scope="row" { (line.name) }
                                    @for value in &line.values { td { (value.as_deref().unwrap_or("–")) } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The datasets table.
pub fn datasets(datasets: &[Arc<Dataset>], viewer: Option<&str>) -> Markup {
    layout(
        "Datasets",
        Section::Datasets,
        viewer,
        html! {
            h1 { "Datasets" }
            table #datasets.striped {
                thead { tr { th { "Dataset" } th { "Type" } th { "Commits" } th { "Examples" } th { "Snapshots" } th { "Rejected" } } }
                tbody {
                    @for d in datasets {
                        @let status = d.status.clone().unwrap_or_default();
                        tr {
                            td { a href={"/datasets/" (views::key(d.as_ref()))} { (d.name_any()) } br; small { (d.namespace().unwrap_or_default()) } }
                            td { (format!("{:?}", d.spec.r#type)) }
                            td.num { (status.commit_count) }
                            td.num { (status.total_examples) }
                            td.num { (status.snapshots.len()) }
                            td.num { (status.rejected.len()) }
                        }
                    }
                    @if datasets.is_empty() { tr { td colspan="6" { "No datasets you may list." } } }
                }
            }
        },
    )
}

/// A dataset: commits with statistics and per-label counts, rejections, snapshots.
pub fn dataset(dataset: &Dataset, viewer: Option<&str>) -> Markup {
    let status = dataset.status.clone().unwrap_or_default();
    layout(
        &dataset.name_any(),
        Section::Datasets,
        viewer,
        html! {
            hgroup {
                h1 { (dataset.name_any()) }
                p { "namespace " (dataset.namespace().unwrap_or_default()) " · id " (status.dataset_id.as_deref().unwrap_or("–"))
                    " · " (status.commit_count) " commits, " (status.total_examples) " examples" }
            }
            @if !dataset.spec.description.is_empty() { p { (dataset.spec.description) } }
            h2 { "Commits" }
            @for commit in &status.commits {
                article.commit data-commit=(commit.id) {
                    header {
                        strong { "Commit " (commit.id) } " · " (commit.message)
                        @for (k, v) in &commit.tags { " " mark { (k) "=" (v) } }
                        br; small { (commit.created_at.0.to_string()) " · " code { (commit.path) } }
                    }
                    p { (commit.statistics.num_examples) " examples, " (commit.statistics.num_labels) " labels, "
                        (commit.statistics.rejected_rows) " rows rejected" }
                    @let most = commit.statistics.per_label.values().copied().max().unwrap_or(1).max(1);
                    div.bars {
                        @for (label, count) in &commit.statistics.per_label {
                            span.label { (label) }
                            progress max=(most) value=(count) aria-label=(label) {}
                            span.count data-label=(label) { (count) }
                        }
                    }
                }
            }
            @if status.commits.is_empty() { p { "No commits ingested yet." } }
            @if !status.rejected.is_empty() {
                h2 { "Rejected commits" }
                table #rejected {
                    thead { tr { th { "spec entry" } th { "when" } th { "why (with the line)" } } }
                    tbody { @for r in &status.rejected { tr { td { (r.entry) } td { (r.rejected_at.0.to_string()) } td { (r.message) } } } }
                }
            }
            h2 { "Snapshots" }
            table #snapshots {
                thead { tr { th { "version hash" } th { "commits" } th { "state" } th { "examples" } th { "message" } } }
                tbody {
                    @for s in &status.snapshots {
                        tr {
                            td { code { (s.version_hash) } }
                            td { (s.commits.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")) }
                            td { (format!("{:?}", s.state)) }
                            td.num { (s.statistics.num_examples) }
                            td { (s.message.as_deref().unwrap_or("")) }
                        }
                    }
                    @if status.snapshots.is_empty() { tr { td colspan="5" { "No snapshots yet." } } }
                }
            }
        },
    )
}

/// The deployments table.
pub fn deployments(deployments: &[Arc<ModelDeployment>], viewer: Option<&str>) -> Markup {
    layout(
        "Deployments",
        Section::Deployments,
        viewer,
        html! {
            h1 { "Deployments" }
            table #deployments.striped {
                thead { tr { th { "Deployment" } th { "Serves run" } th { "Ready" } th { "Endpoint (HTTP)" } } }
                tbody {
                    @for d in deployments {
                        @let status = d.status.clone().unwrap_or_default();
                        tr {
                            td { a href={"/deployments/" (views::key(d.as_ref()))} { (d.name_any()) } br; small { (d.namespace().unwrap_or_default()) } }
                            td { (status.served_run.as_deref().unwrap_or("–")) }
                            td.num { (status.ready_replicas) "/" (d.spec.replicas) }
                            td { small { (status.endpoint.as_ref().map(|e| e.http.as_str()).unwrap_or("–")) } }
                        }
                    }
                    @if deployments.is_empty() { tr { td colspan="4" { "No deployments you may list." } } }
                }
            }
        },
    )
}

/// A deployment: what it serves, its rollout, and the try-it box.
pub fn deployment(
    deployment: &ModelDeployment,
    predictor: Option<&Deployment>,
    may_predict: bool,
    viewer: Option<&str>,
) -> Markup {
    let status = deployment.status.clone().unwrap_or_default();
    let namespace = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let run = deployment
        .spec
        .model
        .training_job
        .clone()
        .map(|job| (format!("/runs/{namespace}/{job}"), job));
    layout(
        &name,
        Section::Deployments,
        viewer,
        html! {
            hgroup { h1 { (name) } p { "namespace " (namespace) } }
            dl {
                dt { "Serves" }
                dd {
                    @if let Some((href, job)) = &run { a href=(href) { (job) } " · " }
                    "run " (status.served_run.as_deref().unwrap_or("–"))
                    @if let Some(version) = &status.model_version { " · model " code { (version) } }
                }
                dt { "Replicas ready" } dd #replicas { (status.ready_replicas) "/" (deployment.spec.replicas) }
                dt { "Rollout" } dd #rollout { (views::rollout(predictor)) }
                dt { "Endpoints" }
                dd { @match &status.endpoint {
                    Some(e) => { "gRPC " code { (e.grpc) } br; "HTTP " code { (e.http) } },
                    None => "–",
                } }
                @for c in &status.conditions {
                    dt { (c.type_) } dd { (c.status) " · " (c.reason) @if !c.message.is_empty() { " · " (c.message) } }
                }
            }
            section {
                h2 { "Try it" }
                @if may_predict {
                    form #try-it data-action={"/api/deployments/" (namespace) "/" (name) "/predict"} {
                        textarea name="text" rows="3" required placeholder="I am so happy today!" aria-label="document" {}
                        button type="submit" { "Predict" }
                    }
                    div #prediction aria-live="polite" {}
                } @else {
                    p { "You may not predict here (" code { "create modeldeployments.miniautoml.io/predict" } ")." }
                }
            }
        },
    )
}

/// The System page.
pub fn system(info: &SystemInfo, queued: usize, viewer: Option<&str>) -> Markup {
    layout(
        "System",
        Section::System,
        viewer,
        html! {
            h1 { "System" }
            dl #system {
                dt { "Version" } dd { (info.version) }
                dt { "Leader" } dd #leader { (info.leader.as_deref().unwrap_or("–")) }
                dt { "This replica" } dd { (info.replica.as_deref().unwrap_or("–")) }
                dt { "Object store" }
                dd #store { "bucket " code { (info.bucket) } " · "
                    @match &info.store { Ok(()) => "reachable", Err(e) => { "unreachable: " (e) } } }
                dt { "Kueue" } dd { (if info.kueue { "admits runs with a queueName" } else { "not used" }) }
                dt { "Runs queued" } dd #queued { (queued) }
            }
            h2 { "Algorithms" }
            table {
                thead { tr { th { "algorithm" } th { "trainer image" } } }
                tbody { @for (name, image) in &info.algorithms { tr { td { (name) } td { code { (image) } } } } }
            }
        },
    )
}
