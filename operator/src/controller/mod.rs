//! Controllers of the three resources, and what runs them.
//!
//! Each reconcile is a pipeline: dereference → validate (pure) → build desired objects (pure) →
//! server-side apply → status. `watches` starts the watches whose caches the context shares,
//! `runner` runs the three controllers on them (reconciling only while this replica leads), and
//! `reconciled` holds what the three controllers share; `uploads` keeps the data engineers'
//! upload keys.

pub mod children;
pub mod dataset;
pub mod model_deployment;
pub mod reconciled;
pub mod runner;
pub mod training_job;
pub mod uploads;
pub mod watches;

pub use runner::run;
pub use watches::watch;
