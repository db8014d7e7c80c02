//! gRPC statuses the services share.

use tonic::Status;

/// INTERNAL with `error`'s message: a failure of the operator or the cluster, not of the request.
pub fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}

/// A failed Kubernetes API call as a status: UNAVAILABLE when another try may succeed (the API
/// server unreachable, restarting, overloaded or timing out: what a client should retry),
/// INTERNAL otherwise.
pub fn kube(error: kube::Error) -> Status {
    if transient(&error) {
        Status::unavailable(format!(
            "the Kubernetes API server is unavailable, try again: {error}"
        ))
    } else {
        internal(error)
    }
}

/// An operator error as a status, UNAVAILABLE when its cause is a transient API failure.
pub fn operator(error: crate::Error) -> Status {
    let transient_cause = match error.root() {
        crate::Error::Kube(cause) | crate::Error::Finalizer { source: cause, .. } => transient(cause),
        crate::Error::IdAllocation(inner) => {
            matches!(&**inner, crate::Error::Kube(cause) if transient(cause))
        }
        _ => false,
    };
    if transient_cause {
        Status::unavailable(format!(
            "the Kubernetes API server is unavailable, try again: {error}"
        ))
    } else {
        internal(error)
    }
}

fn transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("the server says no", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn what_another_try_may_fix_is_unavailable() {
        for code in [429, 500, 503, 504] {
            assert_eq!(kube(api(code)).code(), Code::Unavailable, "{code}");
        }
        for code in [400, 403, 404, 409, 422] {
            assert_eq!(kube(api(code)).code(), Code::Internal, "{code}");
        }
        assert_eq!(operator(crate::Error::Kube(api(503))).code(), Code::Unavailable);
        assert_eq!(
            operator(crate::Error::IdConflict("ids".into())).code(),
            Code::Internal
        );
    }
}
