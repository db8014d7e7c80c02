//! Writes go to the leader: on a follower replica, a call of a method that writes (creates a
//! Dataset, a commit, a snapshot or a run; records what a trainer reports) is sent on, as it
//! came (headers, run token and body), to the replica holding the leader Lease, and its answer
//! comes back unchanged. Reads are answered where they arrive, from that replica's caches.
//!
//! A follower forwards only to a leader whose identity it verified, never to an address a Lease
//! merely names (anyone who may patch that Lease could name their own): over TLS, the leader's
//! certificate must name the operator's Service; in plain text in a pod, the Lease's holder must
//! be a pod of the operator's namespace, at that IP, running as the operator's ServiceAccount
//! ([`replica_at`]); outside a pod (a developer's processes), only a replica on this machine.
//!
//! A call is forwarded at most once (the header `x-miniautoml-forwarded-by` marks it): a
//! replica that is not the leader either answers UNAVAILABLE, as it does while no leader is
//! elected or the leader cannot be reached, naming the leader, so that clients retry (the
//! trainers do for a minute) while a new leader takes over.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::IpAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};
use tonic::{
    Status,
    body::Body,
    codegen::http,
    transport::{Channel, ClientTlsConfig, Endpoint},
};
use tower::{Layer, Service, ServiceExt};

use crate::leader::{Leader, Leadership};

/// How long a verified leader is trusted before it is checked again.
const VERIFIED_FOR: Duration = Duration::from_secs(10);

/// How a follower makes sure the replica the Lease names is the operator's.
#[derive(Clone, Default)]
pub enum LeaderCheck {
    /// Its TLS certificate, checked by the connection (the operator's Service name).
    Tls(ClientTlsConfig),
    /// In plain text, from inside a pod: the Lease's holder is a pod of `pods`' namespace at
    /// that IP, running as `service_account`.
    Pod {
        /// Pods of the operator's namespace.
        pods: Api<Pod>,
        /// The operator's ServiceAccount.
        service_account: String,
    },
    /// In plain text, outside a pod: the leader's address is one of this machine's.
    #[default]
    SameHost,
}

/// Header naming the replica that forwarded a call.
pub const FORWARDED_BY: &str = "x-miniautoml-forwarded-by";

pub use super::methods::writes;

/// Wraps the gRPC routes so that writes reach the leader.
#[derive(Clone)]
pub struct ForwardWritesLayer {
    leadership: Leadership,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    check: LeaderCheck,
    verified: Verified,
}

/// Leaders verified lately, by Lease identity.
type Verified = Arc<Mutex<HashMap<String, Instant>>>;

impl ForwardWritesLayer {
    /// Forwards on behalf of this replica's `leadership`, to a leader `check` verifies.
    pub fn new(leadership: Leadership, check: LeaderCheck) -> Self {
        ForwardWritesLayer {
            leadership,
            channels: Arc::default(),
            check,
            verified: Arc::default(),
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
            check: self.check.clone(),
            verified: self.verified.clone(),
        }
    }
}

/// See [`ForwardWritesLayer`].
#[derive(Clone)]
pub struct ForwardWrites<S> {
    inner: S,
    leadership: Leadership,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    check: LeaderCheck,
    verified: Verified,
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
        let (check, verified) = (self.check.clone(), self.verified.clone());
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
            if let Err(why) = verify(&check, &verified, &leader).await {
                tracing::warn!(
                    leader = leader.name,
                    address = leader.grpc_address,
                    "not forwarding: {why}"
                );
                return Ok(unavailable(format!(
                    "{me} follows and does not forward to the leader the Lease names ({} at {}): {why}; retry",
                    leader.name, leader.grpc_address
                )));
            }
            let tls = match check {
                LeaderCheck::Tls(tls) => Some(tls),
                _ => None,
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

/// Whether `leader` is the operator's own replica, as `check` verifies it (kept for
/// [`VERIFIED_FOR`]); the reason when it is not.
async fn verify(check: &LeaderCheck, verified: &Verified, leader: &Leader) -> Result<(), String> {
    let identity = format!("{}_{}", leader.name, leader.grpc_address);
    if verified
        .lock()
        .expect("verified leaders lock")
        .get(&identity)
        .is_some_and(|at| at.elapsed() < VERIFIED_FOR)
    {
        return Ok(());
    }
    let ip: IpAddr = leader
        .grpc_address
        .parse::<std::net::SocketAddr>()
        .map_err(|_| "its address is not ip:port".to_string())?
        .ip();
    match check {
        // The handshake checks the certificate.
        LeaderCheck::Tls(_) => return Ok(()),
        LeaderCheck::Pod {
            pods,
            service_account,
        } => {
            let found = pods
                .list(&ListParams::default().fields(&format!("metadata.name={}", leader.name)))
                .await
                .map_err(|error| format!("its pod cannot be read: {error}"))?;
            replica_at(found.items.first(), ip, service_account)?;
        }
        LeaderCheck::SameHost => {
            std::net::UdpSocket::bind((ip, 0))
                .map_err(|_| format!("{ip} is not an address of this machine"))?;
        }
    }
    verified
        .lock()
        .expect("verified leaders lock")
        .insert(identity, Instant::now());
    Ok(())
}

/// Whether `pod` (the Lease holder's, as read from the API server) is an operator replica at
/// `ip`: it exists, has that IP and runs as `service_account`. Only who may run pods as the
/// operator's ServiceAccount, and so act as the operator anyway, passes.
pub fn replica_at(pod: Option<&Pod>, ip: IpAddr, service_account: &str) -> Result<(), String> {
    let pod = pod.ok_or("no pod of that name in the operator's namespace")?;
    let account = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref());
    if account != Some(service_account) {
        return Err(format!(
            "its pod runs as ServiceAccount {}, not the operator's {service_account}",
            account.unwrap_or("(none)")
        ));
    }
    let ips: Vec<&str> = pod
        .status
        .iter()
        .flat_map(|s| {
            s.pod_ips
                .iter()
                .flatten()
                .map(|p| p.ip.as_str())
                .chain(s.pod_ip.as_deref())
        })
        .collect();
    if !ips.iter().any(|candidate| candidate.parse::<IpAddr>() == Ok(ip)) {
        return Err(format!("its pod's IP is not {ip}"));
    }
    Ok(())
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

    fn pod(account: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "operator-0", "namespace": "miniautoml"},
            "spec": {"serviceAccountName": account, "containers": []},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
        }))
        .unwrap()
    }

    #[test]
    fn only_a_pod_of_the_operators_account_at_that_ip_is_a_replica() {
        let ip: IpAddr = "198.18.0.12".parse().unwrap();
        assert_eq!(
            replica_at(Some(&pod("miniautoml", "198.18.0.12")), ip, "miniautoml"),
            Ok(())
        );
        let other = replica_at(Some(&pod("default", "198.18.0.12")), ip, "miniautoml").unwrap_err();
        assert!(other.contains("ServiceAccount default"), "{other}");
        let moved = replica_at(Some(&pod("miniautoml", "198.18.0.13")), ip, "miniautoml").unwrap_err();
        assert!(moved.contains("not 198.18.0.12"), "{moved}");
        assert!(replica_at(None, ip, "miniautoml").is_err());
    }

    #[tokio::test]
    async fn outside_a_pod_only_a_replica_on_this_machine_is_trusted() {
        let verified = Verified::default();
        let leader = |address: &str| Leader {
            name: "dev".into(),
            grpc_address: address.into(),
        };
        assert_eq!(
            verify(&LeaderCheck::SameHost, &verified, &leader("127.0.0.1:51001")).await,
            Ok(())
        );
        // TEST-NET-3: never an address of this machine.
        let away = verify(&LeaderCheck::SameHost, &verified, &leader("203.0.113.9:51001")).await;
        assert!(away.unwrap_err().contains("not an address of this machine"));
        let garbled = verify(&LeaderCheck::SameHost, &verified, &leader("somewhere")).await;
        assert!(garbled.is_err());
    }
}
