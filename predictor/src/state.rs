//! What the gRPC and HTTP servers share: the model once loaded, whether the predictor is
//! stopping, the metrics.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use crate::{Config, Model, metrics};

/// What the servers share.
pub struct State {
    model: OnceLock<Arc<Model>>,
    stopping: AtomicBool,
    /// Request counters and latencies.
    pub metrics: metrics::Metrics,
    /// Model name before the model is loaded (the HTTP API answers 503 for it meanwhile).
    pub model_name: String,
    /// Longest document accepted.
    pub max_document_bytes: usize,
}

impl State {
    /// A state with no model loaded yet.
    pub fn new(config: &Config) -> State {
        State {
            model: OnceLock::new(),
            stopping: AtomicBool::new(false),
            metrics: metrics::Metrics::default(),
            model_name: config.model_name.clone(),
            max_document_bytes: config.max_document_bytes,
        }
    }

    /// The model, once loaded and while not shutting down.
    pub fn ready_model(&self) -> Option<&Arc<Model>> {
        if self.stopping.load(Ordering::Relaxed) {
            return None;
        }
        self.model.get()
    }

    /// The model once loaded, shutting down or not (in-flight and late requests are still
    /// served during the shutdown delay).
    pub fn model(&self) -> Option<&Arc<Model>> {
        self.model.get()
    }

    /// Whether the predictor should receive traffic.
    pub fn is_ready(&self) -> bool {
        self.ready_model().is_some()
    }

    /// Reports not ready from now on (the shutdown started).
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_model(&self, model: Model) {
        self.metrics.set_model(&model);
        let _ = self.model.set(Arc::new(model));
    }
}
