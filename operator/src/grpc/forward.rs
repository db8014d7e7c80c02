//! Writes go to the leader: on a follower replica, a call of a method that writes (creates a
//! Dataset, a commit, a snapshot or a run; records what a trainer reports) is sent on, as it
//! came (headers, run token and body), to the replica holding the leader Lease, and its answer
//! comes back unchanged. Reads are answered where they arrive, from that replica's caches.
//!
//! A call is forwarded at most once (the header `x-miniautoml-forwarded-by` marks it): a
//! replica that is not the leader either answers UNAVAILABLE, as it does while no leader is
//! elected or the leader cannot be reached, naming the leader, so that clients retry (the
//! trainers do for a minute) while a new leader takes over.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tonic::{
    Status,
    body::Body,
    codegen::http,
    transport::{Channel, ClientTlsConfig, Endpoint},
};
use tower::{Layer, Service, ServiceExt};

use crate::leader::Leadership;

/// Header naming the replica that forwarded a call.
pub const FORWARDED_BY: &str = "x-miniautoml-forwarded-by";

/// The methods of the original API that write, by gRPC path. Every other method reads.
pub const WRITE_METHODS: &[&str] = &[
    "/data_management.DataManagementService/CreateDataset",
    "/data_management.DataManagementService/UpdateDataset",
    "/data_management.DataManagementService/PrepareTrainingDataset",
    "/data_management.DataManagementService/DeleteDataset",
    "/training.TrainingService/Train",
    "/metadata_store.MetadataStoreService/LogRunStart",
    "/metadata_store.MetadataStoreService/LogEpoch",
    "/metadata_store.MetadataStoreService/LogRunEnd",
    "/metadata_store.MetadataStoreService/CreateArtifact",
];

/// Whether the method at gRPC `path` writes.
pub fn writes(path: &str) -> bool {
    WRITE_METHODS.contains(&path)
}

/// Wraps the gRPC routes so that writes reach the leader.
#[derive(Clone)]
pub struct ForwardWritesLayer {
    leadership: Leadership,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClientTlsConfig>,
}

impl ForwardWritesLayer {
    /// Forwards on behalf of this replica's `leadership`, over TLS when `tls` is given.
    pub fn new(leadership: Leadership, tls: Option<ClientTlsConfig>) -> Self {
        ForwardWritesLayer {
            leadership,
            channels: Arc::default(),
            tls,
        }
    }
}

impl<S> Layer<S> for ForwardWritesLayer {
    type Service = ForwardWrites<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ForwardWrites {
            inner,
            leadership: self.leadership.clone(),
            channels: self.channels.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// See [`ForwardWritesLayer`].
#[derive(Clone)]
pub struct ForwardWrites<S> {
    inner: S,
    leadership: Leadership,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClientTlsConfig>,
}

impl<S> Service<http::Request<Body>> for ForwardWrites<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if self.leadership.is_leading() || !writes(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let leadership = self.leadership.clone();
        let channels = self.channels.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let me = leadership.name().unwrap_or("this replica").to_string();
            if let Some(by) = request.headers().get(FORWARDED_BY) {
                let by = by.to_str().unwrap_or("another replica");
                return Ok(unavailable(format!(
                    "{me} is not the leader either (the call came from {by}, which took it for the leader): \
                     leadership is changing hands; retry"
                )));
            }
            let leader = match leadership.leader().await {
                Ok(Some(leader)) if leader.name != me => leader,
                Ok(_) => {
                    return Ok(unavailable(format!(
                        "no leader is elected yet and only the leader writes ({me} follows): retry in a few seconds"
                    )));
                }
                Err(error) => {
                    return Ok(unavailable(format!(
                        "{me} follows and cannot read the leader lease to forward this write: {error}; retry"
                    )));
                }
            };
            let channel = match channel(&channels, &leader.grpc_address, tls) {
                Ok(channel) => channel,
                Err(error) => return Ok(Status::internal(error).into_http()),
            };
            if let Ok(value) = http::HeaderValue::from_str(&me) {
                request.headers_mut().insert(FORWARDED_BY, value);
            }
            let path = request.uri().path().to_string();
            tracing::debug!(
                method = path,
                leader = leader.name,
                "forwarding a write to the leader"
            );
            match channel.oneshot(request).await {
                Ok(response) => Ok(response),
                Err(error) => Ok(unavailable(format!(
                    "the leader {} at {} did not take the call: {error}; retry",
                    leader.name, leader.grpc_address
                ))),
            }
        })
    }
}

fn unavailable(message: String) -> http::Response<Body> {
    Status::unavailable(message).into_http()
}

/// A lazily connected channel to `address` (over TLS when `tls` is given), reused across calls.
fn channel(
    channels: &Mutex<HashMap<String, Channel>>,
    address: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, String> {
    let mut channels = channels.lock().expect("channel cache lock");
    if let Some(channel) = channels.get(address) {
        return Ok(channel.clone());
    }
    let unusable =
        |error: tonic::transport::Error| format!("the leader's address {address:?} is not usable: {error}");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(unusable)?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(unusable)?;
    }
    let channel = endpoint.connect_lazy();
    channels.insert(address.to_string(), channel.clone());
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_original_api_is_a_read_or_a_write() {
        for path in WRITE_METHODS {
            assert!(writes(path), "{path}");
        }
        for read in [
            "/data_management.DataManagementService/GetDatasetSummary",
            "/data_management.DataManagementService/ListDatasets",
            "/data_management.DataManagementService/FetchTrainingDataset",
            "/training.TrainingService/GetTrainingStatus",
            "/metadata_store.MetadataStoreService/GetRunStatus",
            "/metadata_store.MetadataStoreService/GetArtifact",
            "/prediction.PredictionService/Predict",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(!writes(read), "{read}");
        }
    }

    #[test]
    fn the_write_list_names_only_methods_the_protos_define() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(miniautoml_proto::FILE_DESCRIPTOR_SET).unwrap();
        let defined: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service.method.iter().map(move |method| {
                        format!("/{}.{}/{}", file.package(), service.name(), method.name())
                    })
                })
            })
            .collect();
        for path in WRITE_METHODS {
            assert!(
                defined.iter().any(|d| d == path),
                "{path} is not in the protos: {defined:?}"
            );
        }
        // Each method the protos define is classified on purpose: these are the reads.
        let reads = defined.iter().filter(|path| !writes(path)).count();
        assert_eq!(reads + WRITE_METHODS.len(), defined.len());
        assert_eq!(reads, 8, "{defined:?}");
    }
}
