//! The node's main loop: register, heartbeat, and run every pod bound to the node.

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Preconditions},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};

use crate::{
    Error, Result,
    config::Config,
    ips::IpPool,
    logs::{self, Live, Tls},
    node,
    pod::{Shared, Worker},
};

/// Runs the node until `shutdown` resolves; then stops every process (the pods stay, as when a
/// kubelet stops).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let kubeconfig =
        Kubeconfig::read_from(&config.kubeconfig).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let api_host = kube_config.cluster_url.host().unwrap_or("127.0.0.1").to_string();
    let api_port = kube_config.cluster_url.port_u16().unwrap_or(443);
    let client = Client::try_from(kube_config)?;

    let live = Live::default();
    let kubelet_port = match (
        &config.tls_cert_file,
        &config.tls_key_file,
        &config.client_ca_file,
    ) {
        (Some(cert), Some(key), Some(client_ca)) => {
            let tls = Tls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
            };
            let address = SocketAddr::from(([127, 0, 0, 1], config.kubelet_port));
            let bound = logs::serve(address, &tls, config.log_dir.clone(), live.clone()).await?;
            tracing::info!(%bound, "serving container logs");
            bound.port()
        }
        _ => 0,
    };
    node::register(&client, &config, kubelet_port).await?;
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), config.clone(), kubelet_port));
    let shared = Arc::new(Shared {
        client: client.clone(),
        config: config.clone(),
        api_host,
        api_port,
        ips: Mutex::new(IpPool::default()),
        groups: Mutex::new(BTreeSet::new()),
        live,
    });

    let selector = format!("spec.nodeName={}", config.node_name);
    let pods = watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields(&selector),
    )
    .default_backoff();
    futures::pin_mut!(pods);
    futures::pin_mut!(shutdown);
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut removing: BTreeSet<String> = BTreeSet::new();
    tracing::info!(node = config.node_name, "running pods bound to this node");
    loop {
        let event = tokio::select! {
            event = pods.next() => event,
            () = &mut shutdown => break,
        };
        match event {
            Some(Ok(watcher::Event::Init)) => listed.clear(),
            Some(Ok(watcher::Event::InitApply(pod))) => {
                listed.insert(pod.uid().unwrap_or_default());
                handle(&shared, &mut workers, &mut removing, pod);
            }
            Some(Ok(watcher::Event::InitDone)) => {
                for (uid, worker) in &workers {
                    if !listed.contains(uid) {
                        worker.delete(Duration::ZERO);
                    }
                }
            }
            Some(Ok(watcher::Event::Apply(pod))) => handle(&shared, &mut workers, &mut removing, pod),
            Some(Ok(watcher::Event::Delete(pod))) => {
                let uid = pod.uid().unwrap_or_default();
                removing.remove(&uid);
                if let Some(worker) = workers.get(&uid) {
                    worker.delete(Duration::ZERO);
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "watching pods"),
            None => break,
        }
        workers.retain(|_, worker| !worker.task.is_finished());
    }

    tracing::info!("stopping every pod's processes");
    heartbeat.abort();
    let groups: Vec<u32> = shared
        .groups
        .lock()
        .map(|g| g.iter().copied().collect())
        .unwrap_or_default();
    for group in &groups {
        crate::pod::signal_group(*group, libc::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shared.groups.lock().map(|g| !g.is_empty()).unwrap_or(false)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for group in &groups {
        crate::pod::signal_group(*group, libc::SIGKILL);
    }
    for (_, worker) in workers {
        worker.task.abort();
    }
    Ok(())
}

/// Starts a worker for a new pod, tells a worker its pod is being deleted, or removes a
/// deleted pod that has no processes.
fn handle(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, Worker>,
    removing: &mut BTreeSet<String>,
    pod: Pod,
) {
    let uid = pod.uid().unwrap_or_default();
    let grace = Duration::from_secs(
        u64::try_from(pod.metadata.deletion_grace_period_seconds.unwrap_or(0)).unwrap_or(0),
    );
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if let Some(worker) = workers.get(&uid) {
        if deleting {
            worker.delete(grace);
        }
        return;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let terminal = phase == "Succeeded" || phase == "Failed";
    if deleting {
        if removing.insert(uid.clone()) {
            let pods = Api::<Pod>::namespaced(shared.client.clone(), &pod.namespace().unwrap_or_default());
            let name = pod.name_any();
            tokio::spawn(async move {
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                if let Err(error) = pods.delete(&name, &params).await {
                    tracing::debug!(pod = name, %error, "removing a deleted pod");
                }
            });
        }
        return;
    }
    if terminal {
        return;
    }
    tracing::info!(pod = pod.name_any(), namespace = pod.namespace(), "starting");
    workers.insert(uid, Worker::start(shared.clone(), pod));
}
