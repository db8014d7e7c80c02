//! The Node object and its heartbeat: registration, status with Ready conditions, and a Lease in
//! `kube-node-lease` renewed every 10 s (the node lifecycle controller marks a node whose lease
//! lapses NotReady and evicts its pods).

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, Time},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};

use crate::{Result, config::Config};

/// The address the node and its pods' host IP report.
pub const HOST_IP: &str = "127.0.0.1";
/// Seconds a lease is valid.
const LEASE_SECONDS: i32 = 40;
/// How often the lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often the node status is re-posted (the kubelet's nodeStatusReportFrequency is 5 min;
/// the lease is the heartbeat).
const STATUS_REPORT: Duration = Duration::from_secs(60);

/// Labels that mark this node; pods select it with `miniautoml.io/pool: process`.
pub fn labels(config: &Config) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", config.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", std::env::consts::ARCH),
        ("type", "process"),
        ("miniautoml.io/pool", "process"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(config.labels.iter().cloned());
    labels
}

/// The Node to register.
pub fn build_node(config: &Config) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels(config)),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The node's status: capacity, addresses, the log endpoint's port, Ready and no pressure.
pub fn build_status(config: &Config, kubelet_port: u16, now: Timestamp) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", config.cpu.clone()),
        ("memory", config.memory.clone()),
        ("pods", config.max_pods.clone()),
        ("ephemeral-storage", "100Gi".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: None,
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![NodeAddress {
            type_: "InternalIP".into(),
            address: HOST_IP.into(),
        }]),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "no memory pressure",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "sufficient PIDs",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "process node is posting ready status",
            ),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            operating_system: "linux".into(),
            os_image: "MiniAutoML process node".into(),
            kernel_version: String::new(),
            container_runtime_version: format!("process://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: format!("v0.0.0-process-node-{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            machine_id: config.node_name.clone(),
            system_uuid: config.node_name.clone(),
            boot_id: config.node_name.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node's Lease, renewed at `now`.
pub fn build_lease(node_name: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node_name.into()),
            namespace: Some("kube-node-lease".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node_name.into()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// Creates the Node (or takes over one left by an earlier run) and posts its status.
pub async fn register(client: &Client, config: &Config, kubelet_port: u16) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let node = build_node(config);
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = config.node_name, "registered"),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let labels = serde_json::json!({"metadata": {"labels": labels(config)}});
            nodes
                .patch(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Strategic(labels),
                )
                .await?;
            tracing::info!(node = config.node_name, "node exists; taking it over");
        }
        Err(error) => return Err(error.into()),
    }
    post_status(client, config, kubelet_port).await?;
    renew_lease(client, &config.node_name).await
}

async fn post_status(client: &Client, config: &Config, kubelet_port: u16) -> Result<()> {
    let status = serde_json::json!({"status": build_status(config, kubelet_port, Timestamp::now())});
    Api::<Node>::all(client.clone())
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Strategic(status),
        )
        .await?;
    Ok(())
}

async fn renew_lease(client: &Client, node_name: &str) -> Result<()> {
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    let lease = build_lease(node_name, Timestamp::now());
    match leases.create(&PostParams::default(), &lease).await {
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let spec = serde_json::json!({"spec": lease.spec});
            leases
                .patch(node_name, &PatchParams::default(), &Patch::Merge(spec))
                .await?;
            Ok(())
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// Renews the lease and re-posts the status forever; failures are logged and retried.
pub async fn heartbeat(client: Client, config: Config, kubelet_port: u16) {
    let mut lease = tokio::time::interval(LEASE_RENEW);
    let mut status = tokio::time::interval(STATUS_REPORT);
    loop {
        tokio::select! {
            _ = lease.tick() => {
                if let Err(error) = renew_lease(&client, &config.node_name).await {
                    tracing::warn!(%error, "renewing the node lease failed");
                }
            }
            _ = status.tick() => {
                if let Err(error) = post_status(&client, &config, kubelet_port).await {
                    tracing::warn!(%error, "posting the node status failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_node_is_ready_selectable_and_has_capacity() {
        let config = Config::parse_from([
            "process-node",
            "--kubeconfig=k",
            "--images=i",
            "--log-dir=l",
            "--work-dir=w",
            "--label=team=a",
        ]);
        let node = build_node(&config);
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["miniautoml.io/pool"], "process");
        assert_eq!(labels["team"], "a");
        let status = build_status(&config, 10250, Timestamp::now());
        assert_eq!(status.allocatable.unwrap()["cpu"], Quantity("16".into()));
        assert_eq!(
            status.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let lease = build_lease("process-node", Timestamp::now());
        assert_eq!(
            lease.spec.unwrap().holder_identity.as_deref(),
            Some("process-node")
        );
    }
}
