//! Prometheus metrics of the predictor, served on the HTTP port's `/metrics`.

use std::{sync::Mutex, time::Instant};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::Model;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `grpc` or `http`.
    pub api: &'static str,
    /// `ok`, `invalid_argument`, `not_found`, `unavailable` or `internal`.
    pub code: &'static str,
}

/// Labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `grpc` or `http`.
    pub api: &'static str,
}

/// Labels naming the loaded model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model name.
    pub name: String,
    /// Run id (empty when unknown).
    pub run: String,
    /// Artifact version.
    pub version: String,
}

/// All metrics, registered once.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    documents: Counter,
    latency: Family<ApiLabels, Histogram>,
    model: Family<ModelLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("miniautoml_predictor");
        let requests = Family::<RequestLabels, Counter>::default();
        let documents = Counter::default();
        let latency = Family::<ApiLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
            ])
        });
        let model = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "requests",
            "Prediction requests by API and result",
            requests.clone(),
        );
        registry.register("documents", "Documents classified", documents.clone());
        registry.register(
            "request_duration_seconds",
            "Time to answer a prediction request, in the predictor",
            latency.clone(),
        );
        registry.register("model_info", "The loaded model (value 1)", model.clone());
        Metrics {
            registry: Mutex::new(registry),
            requests,
            documents,
            latency,
            model,
        }
    }
}

impl Metrics {
    /// Records a request that started at `start` and classified `documents` documents.
    pub fn observe(&self, api: &'static str, code: &'static str, documents: usize, start: Instant) {
        self.requests.get_or_create(&RequestLabels { api, code }).inc();
        self.documents.inc_by(documents as u64);
        self.latency
            .get_or_create(&ApiLabels { api })
            .observe(start.elapsed().as_secs_f64());
    }

    /// Records the loaded model.
    pub fn set_model(&self, model: &Model) {
        self.model
            .get_or_create(&ModelLabels {
                name: model.name.clone(),
                run: model.run_id.clone().unwrap_or_default(),
                version: model.version.clone(),
            })
            .set(1);
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry.lock().expect("metrics lock")).expect("metrics encode");
        text
    }
}
