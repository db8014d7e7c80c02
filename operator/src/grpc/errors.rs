//! gRPC statuses the services share.

use tonic::Status;

/// INTERNAL with `error`'s message: a failure of the operator or the cluster, not of the request.
pub fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}
