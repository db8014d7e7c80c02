//! Readiness of the operator's parts, reported on `/readyz`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// Which parts of the operator are ready. Cloning shares the same state.
#[derive(Clone, Default)]
pub struct Readiness {
    parts: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

/// One part's handle to mark itself ready.
pub struct Part {
    name: &'static str,
    parts: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    /// Registers a part, not ready yet.
    pub fn component(&self, name: &'static str) -> Part {
        self.lock().insert(name, false);
        Part {
            name,
            parts: self.parts.clone(),
        }
    }

    /// Parts not ready yet, in name order; empty when the operator is ready. With no part
    /// registered the operator is not ready either.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let parts = self.lock();
        if parts.is_empty() {
            return vec!["startup"];
        }
        parts
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| *name)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, bool>> {
        self.parts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Part {
    /// Marks this part ready.
    pub fn set_ready(&self) {
        self.parts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(self.name, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_registered_part_is() {
        let readiness = Readiness::default();
        assert_eq!(readiness.not_ready(), ["startup"]);
        let grpc = readiness.component("grpc");
        let dataset = readiness.component("dataset");
        assert_eq!(readiness.not_ready(), ["dataset", "grpc"]);
        grpc.set_ready();
        assert_eq!(readiness.not_ready(), ["dataset"]);
        dataset.set_ready();
        assert!(readiness.not_ready().is_empty());
    }
}
