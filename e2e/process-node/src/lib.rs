//! The local process node: a Kubernetes Node, not simulated by kwok, whose pods run as local
//! processes. It is e2e tooling for MiniAutoML's local cluster (no container runtime, no Docker):
//! the real kube-scheduler binds pods to it, the real kube-controller-manager's Job and
//! Deployment controllers see their pods run, end with real exit codes and turn ready through
//! their readiness probes.
//!
//! - [`mapping`]: which local program stands for which image;
//! - [`spec`]: a container's argv and environment (pure);
//! - [`status`]: the pod status the node writes (pure);
//! - [`node`]: the Node object, its status and lease heartbeat;
//! - [`pod`]: one pod's processes, probes and status;
//! - [`logs`]: container log files and the `kubectl logs` endpoint;
//! - [`agent`]: the watch over the pods bound to the node.

pub mod agent;
pub mod config;
mod error;
pub mod ips;
pub mod logs;
pub mod mapping;
pub mod node;
pub mod pod;
pub mod probe;
pub mod spec;
pub mod status;

pub use agent::run;
pub use error::{Error, Result};
