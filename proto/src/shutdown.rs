//! What every server of this API (the operator, the predictor) stops on.

/// Resolves on the first SIGTERM or SIGINT. Without signal handlers it never resolves, and the
/// default action (exit) still stops the process.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
        }
        _ => std::future::pending().await,
    }
}
