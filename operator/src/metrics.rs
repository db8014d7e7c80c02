//! Prometheus metrics of the operator, served on the admin port's `/metrics`.

use std::time::Instant;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `dataset`, `trainingjob` or `modeldeployment`.
    pub controller: &'static str,
}

/// Labels naming a controller and the kind of error a reconcile ended with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `dataset`, `trainingjob` or `modeldeployment`.
    pub controller: &'static str,
    /// The stage that failed (see `Stage::label`; `other` outside a stage: a finalizer patch).
    pub stage: &'static str,
    /// Error kind (see `Error::metric_label`).
    pub error: &'static str,
}

/// Labels naming the kind of a Kubernetes API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// `get` (a get or a list), `watch`, `create`, `update`, `patch`, `delete` or `other`.
    pub verb: &'static str,
    /// The resource, and its subresource where there is one: `trainingjobs/status`, `jobs`.
    pub resource: String,
}

/// The resource a Kubernetes API path names, with its subresource (`trainingjobs/status`), or
/// `other` for a path that names none (discovery, `/version`).
pub fn api_resource(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // `/api/v1/...` or `/apis/<group>/<version>/...`
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return "other".into(),
    };
    // A namespaced path (`namespaces/<ns>/<resource>...`), unless it names the namespace itself.
    let rest = match rest {
        ["namespaces", _namespace, resource, more @ ..] => [&[*resource][..], more].concat(),
        other => other.to_vec(),
    };
    match rest.as_slice() {
        [resource] | [resource, _] => (*resource).to_string(),
        [resource, _name, subresource, ..] => format!("{resource}/{subresource}"),
        [] => "other".into(),
    }
}

/// The verb of a Kubernetes API request, from its method and query.
pub fn api_verb(method: &axum::http::Method, query: Option<&str>) -> &'static str {
    use axum::http::Method;
    let watch = query.is_some_and(|q| q.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// All metrics, registered once.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    durations: Family<ControllerLabels, Histogram>,
    api_requests: Family<ApiRequestLabels, Counter>,
    leader: Gauge,
    late_objects: Counter,
    queue_lookups: Counter,
    queue_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("miniautoml_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let durations = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])
        });
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that ended in an error",
            failures.clone(),
        );
        let api_requests = Family::<ApiRequestLabels, Counter>::default();
        registry.register(
            "kube_api_requests",
            "Requests sent to the Kubernetes API server (a watch counts once, when opened)",
            api_requests.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            durations.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica is the leader (reconciles and takes the gRPC API's writes), else 0",
            leader.clone(),
        );
        let late_objects = Counter::default();
        registry.register(
            "late_objects_deleted",
            "Objects found under a deleted resource's cleared prefixes (written after its clean-up) and deleted",
            late_objects.clone(),
        );
        let queue_lookups = Counter::default();
        registry.register(
            "run_queue_lookups",
            "Places in the operator's run queue (--max-concurrent-runs) looked up by reconciles",
            queue_lookups.clone(),
        );
        let queue_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "run_queue_seconds",
            "Time spent looking up places in the run queue, recomputing its order included",
            queue_seconds.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            durations,
            api_requests,
            leader,
            late_objects,
            queue_lookups,
            queue_seconds,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `controller` and times it until the guard is dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: Instant::now(),
        }
    }

    /// Counts a request to the Kubernetes API server.
    pub fn api_request(&self, verb: &'static str, resource: String) {
        self.api_requests
            .get_or_create(&ApiRequestLabels { verb, resource })
            .inc();
    }

    /// Counts a lookup in the run queue that took `seconds`.
    pub fn run_queue_lookup(&self, seconds: f64) {
        self.queue_lookups.inc();
        self.queue_seconds.inc_by(seconds);
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts objects deleted by a tombstone sweep.
    pub fn late_objects_deleted(&self, count: usize) {
        self.late_objects.inc_by(count as u64);
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, controller: &'static str, stage: &'static str, error: &'static str) {
        self.failures
            .get_or_create(&FailureLabels {
                controller,
                stage,
                error,
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let seconds = self.start.elapsed().as_secs_f64();
        self.metrics
            .durations
            .get_or_create(&self.labels)
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_verbs_come_from_the_method_and_the_watch_parameter() {
        use axum::http::Method;
        assert_eq!(
            api_verb(
                &Method::GET,
                Some("labelSelector=a&watch=true&timeoutSeconds=290")
            ),
            "watch"
        );
        assert_eq!(api_verb(&Method::GET, Some("labelSelector=a")), "get");
        assert_eq!(api_verb(&Method::GET, None), "get");
        assert_eq!(api_verb(&Method::PATCH, Some("fieldManager=x")), "patch");
        assert_eq!(api_verb(&Method::PUT, None), "update");
        assert_eq!(api_verb(&Method::POST, None), "create");
        assert_eq!(api_verb(&Method::DELETE, None), "delete");
    }

    #[test]
    fn api_resources_come_from_the_path() {
        let cases = [
            (
                "/apis/miniautoml.io/v1alpha1/namespaces/a/trainingjobs/r1/status",
                "trainingjobs/status",
            ),
            (
                "/apis/miniautoml.io/v1alpha1/namespaces/a/trainingjobs/r1",
                "trainingjobs",
            ),
            ("/apis/miniautoml.io/v1alpha1/trainingjobs", "trainingjobs"),
            ("/apis/batch/v1/namespaces/a/jobs", "jobs"),
            ("/api/v1/namespaces/a/pods/p/log", "pods/log"),
            ("/api/v1/namespaces/a", "namespaces"),
            ("/api/v1/namespaces", "namespaces"),
            ("/api/v1/nodes/n1", "nodes"),
            ("/apis/coordination.k8s.io/v1/namespaces/a/leases/l", "leases"),
            ("/version", "other"),
            ("/apis/batch/v1", "other"),
        ];
        for (path, resource) in cases {
            assert_eq!(api_resource(path), resource, "{path}");
        }
    }

    #[test]
    fn reconciles_failures_and_durations_are_exported() {
        let metrics = Metrics::default();
        drop(metrics.reconcile_started("dataset"));
        drop(metrics.reconcile_started("dataset"));
        metrics.reconcile_failed("dataset", "apply", "kube");
        let text = metrics.encode();
        assert!(
            text.contains("miniautoml_operator_reconciles_total{controller=\"dataset\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "miniautoml_operator_reconcile_failures_total{controller=\"dataset\",stage=\"apply\",error=\"kube\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("miniautoml_operator_reconcile_duration_seconds_count{controller=\"dataset\"} 2"),
            "{text}"
        );
        metrics.api_request("patch", "trainingjobs/status".into());
        assert!(metrics.encode().contains(
            "miniautoml_operator_kube_api_requests_total{verb=\"patch\",resource=\"trainingjobs/status\"} 1"
        ));
    }
}
