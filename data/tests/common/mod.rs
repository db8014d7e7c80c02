//! What the tests of pods' keys (scoped and session) share.

use miniautoml_data::StorageError;

/// Fails the test with `what` unless `result` is the store's access denied.
pub fn denied<T: std::fmt::Debug>(result: Result<T, StorageError>, what: &str) {
    match result {
        Err(StorageError::Denied(_)) => {}
        other => panic!("{what}: expected access denied, got {other:?}"),
    }
}
