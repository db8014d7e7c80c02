//! The original contract's listener (`--original-contract-addr`, port 51002): where the
//! original MiniAutoML's training images report, unchanged. They call
//! `grpc.insecure_channel(METADATA_STORE_SERVER)` and send no token, so a report here proves
//! where it comes from by its source address instead: the caller's IP must be that of a live pod
//! of a run whose contract is `Original` ([`run_of_pod`], from the watch caches). The listener
//! then writes that run's token into the request and hands it to the same metadata store (and,
//! on a follower, the same forwarding to the leader) as a token-carrying report: a report that
//! names any other run is refused exactly as a report with another run's token is.
//!
//! Only the four report methods are served; every other call is refused here (reads need a
//! Kubernetes identity, on the gRPC port).

use std::{
    convert::Infallible,
    net::IpAddr,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use futures::future::BoxFuture;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{Resource, ResourceExt};
use miniautoml_api::{TrainingJob, labels::TRAINING_JOB_LABEL, training_job::Contract};
use tonic::{
    Status,
    body::Body,
    codegen::http,
    transport::server::{TcpConnectInfo, TcpIncoming},
};
use tower::{Layer, Service};

use super::{
    forward,
    metadata_store::{MetadataStore, REPORTING_POD},
    methods,
};
use crate::{StartupError, algorithms, context::Context, leader::Leadership, readiness::Readiness};

/// The pod at `ip` among the runs' `pods`: a live pod (not finished: a finished pod's address
/// may already be another pod's) on the pod network (a host-network pod shares its node's
/// address with every process there). Two live pods claiming one address (a cache that has not
/// seen one end yet) answer nothing.
pub fn pod_at<'a>(ip: IpAddr, pods: impl IntoIterator<Item = &'a Pod>) -> Result<&'a Pod, String> {
    let matching: Vec<&Pod> = pods
        .into_iter()
        .filter(|pod| {
            let status = pod.status.as_ref();
            let live = !matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
            let has_ip = status.is_some_and(|s| {
                s.pod_ip.as_deref().and_then(|a| a.parse::<IpAddr>().ok()) == Some(ip)
                    || s.pod_ips
                        .iter()
                        .flatten()
                        .any(|a| a.ip.parse::<IpAddr>().ok() == Some(ip))
            });
            live && !host_network && has_ip
        })
        .collect();
    match matching.as_slice() {
        [pod] => Ok(pod),
        [] => Err(format!("no pod of a training run has the address {ip}")),
        more => Err(format!(
            "{} pods of training runs claim the address {ip} (one has just ended); retry",
            more.len()
        )),
    }
}

/// The run whose report `pod` may send here: its TrainingJob (the pod's label names it, in the
/// pod's namespace), whose Job is the pod's controller (by uid) and is controlled by that
/// TrainingJob (by uid), and whose contract is `Original`.
pub fn run_of_pod(
    pod: &Pod,
    training_job: impl Fn(&str, &str) -> Option<TrainingJob>,
    run_job: impl Fn(&str, &str) -> Option<Job>,
    algorithm_contracts: &std::collections::BTreeMap<String, Contract>,
) -> Result<TrainingJob, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let shown = format!("pod {namespace}/{}", pod.name_any());
    let not_a_run = || format!("{shown} is not a pod of a training run's Job");
    let name = pod.labels().get(TRAINING_JOB_LABEL).ok_or_else(not_a_run)?;
    let job = training_job(&namespace, name).ok_or_else(not_a_run)?;
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Job")
        .ok_or_else(not_a_run)?;
    let run = run_job(&namespace, &owner.name).ok_or_else(not_a_run)?;
    let owned_by_the_run = run.uid().as_deref() == Some(owner.uid.as_str())
        && run
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == job.meta().uid.as_deref());
    if !owned_by_the_run {
        return Err(not_a_run());
    }
    if algorithms::contract(&job, algorithm_contracts) != Contract::Original {
        return Err(format!(
            "{shown} belongs to run {} of TrainingJob {namespace}/{name}, which reports with its token \
             (contract MiniAutoML) on the operator's gRPC port, not here",
            job.run_id().map(|id| id.to_string()).unwrap_or_default(),
        ));
    }
    Ok(job)
}

/// Turns a report arriving here into its run's token-carrying report, or refuses it.
#[derive(Clone)]
pub struct PodIdentityLayer {
    ctx: Arc<Context>,
}

impl<S> Layer<S> for PodIdentityLayer {
    type Service = PodIdentity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PodIdentity {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// See [`PodIdentityLayer`].
#[derive(Clone)]
pub struct PodIdentity<S> {
    inner: S,
    ctx: Arc<Context>,
}

/// How long a report from an address no run's pod has waits for the watch cache to catch up
/// (a trainer may report within a moment of its pod getting its address).
const CACHE_LAG: std::time::Duration = std::time::Duration::from_secs(10);

/// The token of the run whose pod sent a report to `path` from `ip`, and that pod's name.
async fn identify(ctx: &Context, path: &str, ip: Option<IpAddr>) -> Result<(String, String), Status> {
    if !methods::find(path).is_some_and(|method| method.original_contract) {
        return Err(Status::permission_denied(format!(
            "{} is not served on the original contract's port, which takes only the reports of \
             original-contract runs (LogRunStart, LogEpoch, CreateArtifact, LogRunEnd); call the \
             operator's gRPC port",
            path.trim_start_matches('/')
        )));
    }
    let training = ctx.training.as_ref().ok_or_else(|| {
        Status::failed_precondition("the operator runs no training: it takes no run reports")
    })?;
    let ip = ip.ok_or_else(|| Status::permission_denied("the caller's address is unknown"))?;
    let refused = |reason: String| {
        Status::permission_denied(format!(
            "{reason}: the original contract's port takes a report only from a pod of the run it names"
        ))
    };
    let caches = &ctx.caches;
    let deadline = tokio::time::Instant::now() + CACHE_LAG;
    let pod = loop {
        let pods = caches.run_pods.state();
        match pod_at(ip, pods.iter().map(|pod| pod.as_ref())) {
            Ok(pod) => break pod.clone(),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(reason) => return Err(refused(reason)),
        }
    };
    let job = run_of_pod(
        &pod,
        |namespace, name| {
            caches.training_jobs.state().iter().find_map(|guard| {
                let job = guard.0.as_ref().ok()?;
                (job.namespace().as_deref() == Some(namespace) && job.name_any() == name).then(|| job.clone())
            })
        },
        |namespace, name| {
            caches
                .run_jobs
                .state()
                .iter()
                .find(|job| job.namespace().as_deref() == Some(namespace) && job.name_any() == name)
                .map(|job| job.as_ref().clone())
        },
        &training.algorithm_contracts,
    )
    .map_err(refused)?;
    let shown = format!(
        "{}/{} (run {})",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        job.run_id().map(|id| id.to_string()).unwrap_or_default()
    );
    Ok((training.run_tokens.token(&job.uid().unwrap_or_default()), shown))
}

impl<S> Service<http::Request<Body>> for PodIdentity<S>
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

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let ctx = self.ctx.clone();
        // The service that was made ready takes the call; a clone stands in for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let path = request.uri().path().to_string();
            let ip = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
                .map(|addr| addr.ip().to_canonical());
            let (token, pod) = match identify(&ctx, &path, ip).await {
                Ok(identity) => identity,
                Err(status) => {
                    tracing::info!(
                        peer = super::in_flight::peer(request.extensions()),
                        "original-contract report refused: {}",
                        status.message()
                    );
                    return Ok(status.into_http());
                }
            };
            let headers = request.headers_mut();
            // Whatever the caller sent is replaced: here, only the pod's address speaks for it.
            headers.remove(forward::FORWARDED_BY);
            match (
                http::HeaderValue::from_str(&format!("Bearer {token}")),
                http::HeaderValue::from_str(&pod),
            ) {
                (Ok(bearer), Ok(pod)) => {
                    headers.insert(http::header::AUTHORIZATION, bearer);
                    headers.insert(REPORTING_POD, pod);
                }
                _ => return Ok(Status::internal("a run token is not a header value").into_http()),
            }
            inner.call(request).await
        })
    }
}

/// Serves the original contract's reports on `listener` (plain text: the original images
/// cannot speak TLS) until `shutdown` fires; writes on a follower go to the leader as on the
/// gRPC port (verified by `leader_check`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    readiness: Readiness,
    shutdown: tokio_util::sync::CancellationToken,
    metadata: MetadataStore,
    (ctx, leadership, leader_check): (Arc<Context>, Leadership, forward::LeaderCheck),
) -> Result<(), StartupError> {
    let part = readiness.component("original-contract");
    let addr = listener.local_addr().map_err(|source| StartupError::Serve {
        server: "original contract",
        source,
    })?;
    tracing::info!(%addr, "original contract's report listener (plain text) listening");
    part.set_ready();
    tonic::transport::Server::builder()
        .layer(PodIdentityLayer { ctx })
        .layer(forward::ForwardWritesLayer::new(leadership, leader_check))
        .add_service(
            miniautoml_proto::metadata_store::metadata_store_service_server::MetadataStoreServiceServer::new(
                metadata,
            ),
        )
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pod(name: &str, ip: &str, phase: &str, host_network: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "team-a",
                "labels": {"miniautoml.io/trainingjob": "orig"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "orig-train",
                                     "uid": "job-uid", "controller": true}],
            },
            "spec": {"containers": [], "hostNetwork": host_network},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]},
        }))
        .unwrap()
    }

    fn training_job(contract: Option<&str>) -> TrainingJob {
        let mut spec =
            serde_json::json!({"image": "me/original:1", "dataset": {"name": "d"}, "outputModelName": "m"});
        if let Some(contract) = contract {
            spec["contract"] = contract.into();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "miniautoml.io/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "orig", "namespace": "team-a", "uid": "tj-uid"},
            "spec": spec,
            "status": {"runId": "7"},
        }))
        .unwrap()
    }

    fn run_job(owner_uid: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "orig-train", "namespace": "team-a", "uid": "job-uid",
                         "ownerReferences": [{"apiVersion": "miniautoml.io/v1alpha1", "kind": "TrainingJob",
                                              "name": "orig", "uid": owner_uid, "controller": true}]},
        }))
        .unwrap()
    }

    #[test]
    fn only_one_live_pod_on_the_pod_network_answers_for_an_address() {
        let ip: IpAddr = "198.18.0.7".parse().unwrap();
        let running = pod("r", "198.18.0.7", "Running", false);
        let finished = pod("f", "198.18.0.7", "Failed", false);
        let host = pod("h", "198.18.0.7", "Running", true);
        let other = pod("o", "198.18.0.8", "Running", false);
        assert_eq!(
            pod_at(ip, [&running, &finished, &host, &other])
                .unwrap()
                .name_any(),
            "r"
        );
        // A finished pod's address may be another pod's now; a host-network pod's is its node's.
        assert!(
            pod_at(ip, [&finished, &host, &other])
                .unwrap_err()
                .contains("no pod")
        );
        let twin = pod("t", "198.18.0.7", "Pending", false);
        assert!(pod_at(ip, [&running, &twin]).unwrap_err().contains("2 pods"));
    }

    #[test]
    fn a_pod_answers_only_for_the_original_contract_run_whose_job_owns_it() {
        let contracts = BTreeMap::new();
        let pod = pod("r", "198.18.0.7", "Running", false);
        let found = |contract: Option<&'static str>| move |_: &str, _: &str| Some(training_job(contract));
        let job = |uid: &'static str| move |_: &str, _: &str| Some(run_job(uid));
        let run = run_of_pod(&pod, found(Some("Original")), job("tj-uid"), &contracts).unwrap();
        assert_eq!(run.run_id(), Some(7));
        // The algorithm's configured contract counts too.
        let mut by_algorithm = training_job(None);
        by_algorithm.spec.image = None;
        by_algorithm.spec.algorithm = Some("original".into());
        let configured = BTreeMap::from([("original".to_string(), Contract::Original)]);
        assert!(
            run_of_pod(
                &pod,
                |_, _| Some(by_algorithm.clone()),
                job("tj-uid"),
                &configured
            )
            .is_ok()
        );
        // A run that reports with its token.
        let token_run = run_of_pod(&pod, found(None), job("tj-uid"), &contracts).unwrap_err();
        assert!(token_run.contains("reports with its token"), "{token_run}");
        // A Job that is not the run's (another TrainingJob's uid), or none, or no TrainingJob.
        assert!(run_of_pod(&pod, found(Some("Original")), job("other"), &contracts).is_err());
        assert!(run_of_pod(&pod, found(Some("Original")), |_, _| None, &contracts).is_err());
        assert!(run_of_pod(&pod, |_, _| None, job("tj-uid"), &contracts).is_err());
        // A pod the run's Job does not control.
        let mut stray = pod.clone();
        stray.metadata.owner_references = None;
        assert!(run_of_pod(&stray, found(Some("Original")), job("tj-uid"), &contracts).is_err());
    }
}
