//! Kueue, where the cluster runs it: a run with `spec.queueName` is a suspended Job that Kueue
//! turns into a Workload, admits against its ClusterQueue's quota (every rank at once: the
//! Workload's one pod set counts them all) and starts by unsuspending. The operator only reads
//! here — the Workloads (their admission, Kueue's reason while pending) and a pending run's
//! place in its LocalQueue from Kueue's visibility API; it never changes `suspend`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Client, CustomResource, Resource, ResourceExt, api::ListParams, core::GroupVersionKind, discovery,
};
use serde::{Deserialize, Serialize};

/// What the operator reads of Kueue's Workload (`kueue.x-k8s.io/v1beta2`); the pod templates
/// are not kept.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "kueue.x-k8s.io",
    version = "v1beta2",
    kind = "Workload",
    namespaced,
    status = "WorkloadStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// The LocalQueue.
    #[serde(default)]
    pub queue_name: Option<String>,
    /// Pods admitted together: a Job's one pod set counts all its ranks.
    #[serde(default)]
    pub pod_sets: Vec<PodSet>,
}

/// One pod set of a Workload.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PodSet {
    /// Its name (`main` for a Job).
    pub name: String,
    /// How many pods it needs.
    pub count: i32,
}

/// A Workload's status.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct WorkloadStatus {
    /// `QuotaReserved`, `Admitted`, `Evicted`, `PodsReady`, `Finished`, ...
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Where it was admitted.
    #[serde(default)]
    pub admission: Option<Admission>,
}

/// A Workload's admission.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    /// The ClusterQueue whose quota it holds.
    pub cluster_queue: String,
    /// Per pod set, the flavor of each resource.
    #[serde(default)]
    pub pod_set_assignments: Vec<PodSetAssignment>,
}

/// The flavors and count admitted for one pod set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PodSetAssignment {
    /// The pod set.
    pub name: String,
    /// Resource name → ResourceFlavor.
    #[serde(default)]
    pub flavors: BTreeMap<String, String>,
    /// Pods admitted.
    #[serde(default)]
    pub count: Option<i32>,
}

/// What Kueue says of a run's Workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// Kueue has not made a Workload of the Job yet.
    NoWorkload,
    /// Waiting for quota (or for a LocalQueue that does not exist): Kueue's reason and message.
    Pending {
        /// Kueue's reason (`Pending`, `Inadmissible`, `Evicted...`).
        reason: String,
        /// Kueue's message.
        message: String,
    },
    /// Admitted: the ClusterQueue and the flavors, as `resource=flavor` pairs.
    Admitted {
        /// The ClusterQueue.
        cluster_queue: String,
        /// `cpu=real-node, nvidia.com/gpu=simulated-gpu`.
        flavors: String,
        /// Pods admitted (all the Job's ranks).
        count: i32,
    },
}

fn condition<'a>(workload: &'a Workload, type_: &str) -> Option<&'a Condition> {
    workload
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn is_true(workload: &Workload, type_: &str) -> bool {
    condition(workload, type_).is_some_and(|c| c.status == "True")
}

/// What `workload` says: admitted (with its ClusterQueue and flavors) or pending with Kueue's
/// own reason — an eviction (waitForPodsReady, preemption) names itself until the Workload is
/// admitted again.
pub fn state(workload: Option<&Workload>) -> QueueState {
    let Some(workload) = workload else {
        return QueueState::NoWorkload;
    };
    if is_true(workload, "Admitted")
        && !is_true(workload, "Evicted")
        && let Some(admission) = workload.status.as_ref().and_then(|s| s.admission.as_ref())
    {
        let mut flavors = BTreeMap::new();
        for assignment in &admission.pod_set_assignments {
            flavors.extend(assignment.flavors.iter());
        }
        return QueueState::Admitted {
            cluster_queue: admission.cluster_queue.clone(),
            flavors: flavors
                .iter()
                .map(|(resource, flavor)| format!("{resource}={flavor}"))
                .collect::<Vec<_>>()
                .join(", "),
            count: admission.pod_set_assignments.iter().filter_map(|a| a.count).sum(),
        };
    }
    let why = condition(workload, "Evicted")
        .filter(|c| c.status == "True")
        .map(|c| (format!("Evicted{}", c.reason), c.message.clone()))
        .or_else(|| {
            condition(workload, "QuotaReserved")
                .filter(|c| c.status == "False")
                .map(|c| (c.reason.clone(), c.message.clone()))
        });
    let (reason, message) = why.unwrap_or_else(|| {
        (
            "Pending".into(),
            format!(
                "Workload {} waits for Kueue to reserve quota",
                workload.name_any()
            ),
        )
    });
    QueueState::Pending { reason, message }
}

/// The Workload Kueue made of the Job whose uid is `job_uid`, among `workloads`.
pub fn of_job<'a>(workloads: impl IntoIterator<Item = &'a Workload>, job_uid: &str) -> Option<&'a Workload> {
    workloads.into_iter().find(|w| {
        w.owner_references()
            .iter()
            .any(|o| o.kind == "Job" && o.uid == job_uid && o.controller == Some(true))
    })
}

/// Whether the API server serves Kueue's Workloads at the version read here and this operator
/// may list them in `workloads` (the chart grants it with `kueue.enabled`); says why not.
pub async fn served(client: &Client, workloads: &Api<Workload>) -> bool {
    let gvk = GroupVersionKind::gvk(
        &Workload::group(&()),
        &Workload::version(&()),
        &Workload::kind(&()),
    );
    if discovery::pinned_kind(client, &gvk).await.is_err() {
        tracing::info!(
            "the cluster serves no Kueue (kueue.x-k8s.io/v1beta2 Workloads): runs with queueName are refused"
        );
        return false;
    }
    match workloads.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(
                %error,
                "the cluster serves Kueue but the operator cannot list its Workloads (chart value \
                 kueue.enabled=true grants it): runs with queueName are refused"
            );
            false
        }
    }
}

/// How long a LocalQueue's pending list from the visibility API is reused: positions of many
/// runs of one queue cost one request per interval.
const POSITIONS_FRESH_FOR: Duration = Duration::from_secs(2);

/// Pending runs' places in their LocalQueues, from Kueue's visibility API
/// (`visibility.kueue.x-k8s.io/v1beta2 …/localqueues/<lq>/pendingworkloads`), each queue's list
/// fetched at most once per [`POSITIONS_FRESH_FOR`].
pub struct Positions {
    client: Client,
    /// (namespace, LocalQueue) → its list.
    lists: Mutex<HashMap<(String, String), Fetched>>,
}

/// A LocalQueue's pending list: when fetched, and Job name → `positionInLocalQueue`.
type Fetched = (Instant, HashMap<String, u32>);

/// The visibility API's answer (only what is read).
#[derive(Deserialize)]
struct PendingWorkloads {
    #[serde(default)]
    items: Vec<PendingWorkload>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingWorkload {
    metadata: kube::api::ObjectMeta,
    position_in_local_queue: u32,
}

impl Positions {
    /// Positions read through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            lists: Mutex::default(),
        }
    }

    /// The place (from 0) of Job `job` in LocalQueue `queue` of `namespace`; `None` when Kueue
    /// does not list it as pending (admitted meanwhile, or its API cannot be read — logged).
    pub async fn position(&self, namespace: &str, queue: &str, job: &str) -> Option<u32> {
        let key = (namespace.to_string(), queue.to_string());
        if let Some((fetched, positions)) = self.lists.lock().ok()?.get(&key)
            && fetched.elapsed() < POSITIONS_FRESH_FOR
        {
            return positions.get(job).copied();
        }
        let positions = match self.fetch(namespace, queue).await {
            Ok(positions) => positions,
            Err(error) => {
                tracing::warn!(namespace, queue, %error, "cannot read Kueue's pending workloads");
                return None;
            }
        };
        let found = positions.get(job).copied();
        self.lists.lock().ok()?.insert(key, (Instant::now(), positions));
        found
    }

    async fn fetch(&self, namespace: &str, queue: &str) -> kube::Result<HashMap<String, u32>> {
        let path = format!(
            "/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/{namespace}/localqueues/{queue}/pendingworkloads?limit=1000"
        );
        let request = axum::http::Request::get(path)
            .body(Vec::new())
            .map_err(kube::Error::HttpError)?;
        let answer: PendingWorkloads = self.client.request(request).await?;
        Ok(answer
            .items
            .into_iter()
            .flat_map(|item| {
                let position = item.position_in_local_queue;
                item.metadata
                    .owner_references
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| o.kind == "Job")
                    .map(move |o| (o.name, position))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn workload(status: serde_json::Value) -> Workload {
        serde_json::from_value(json!({
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
            "metadata": {"name": "job-run-train-1a2b3", "namespace": "team-a",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "run-train",
                    "uid": "job-uid", "controller": true}]},
            "spec": {"queueName": "gpus", "podSets": [{"name": "main", "count": 4,
                "template": {"spec": {"containers": [{"name": "trainer"}]}}}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_pending_workload_says_kueues_reason() {
        let pending = workload(json!({"conditions": [{"type": "QuotaReserved", "status": "False",
            "reason": "Pending", "message": "couldn't assign flavors to pod set main: insufficient quota",
            "lastTransitionTime": "2026-12-06T22:58:35Z"}]}));
        assert_eq!(
            state(Some(&pending)),
            QueueState::Pending {
                reason: "Pending".into(),
                message: "couldn't assign flavors to pod set main: insufficient quota".into()
            }
        );
        assert_eq!(pending.spec.pod_sets[0].count, 4);
        let missing = workload(json!({"conditions": [{"type": "QuotaReserved", "status": "False",
            "reason": "Inadmissible", "message": "LocalQueue nope doesn't exist",
            "lastTransitionTime": "2026-12-06T22:58:35Z"}]}));
        assert!(
            matches!(state(Some(&missing)), QueueState::Pending { reason, .. } if reason == "Inadmissible")
        );
        assert!(
            matches!(state(Some(&workload(json!({})))), QueueState::Pending { reason, .. } if reason == "Pending")
        );
        assert_eq!(state(None), QueueState::NoWorkload);
    }

    #[test]
    fn an_admitted_workload_names_its_cluster_queue_and_flavors() {
        let admitted = workload(json!({
            "conditions": [
                {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "",
                 "lastTransitionTime": "2026-12-06T22:58:35Z"},
                {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "",
                 "lastTransitionTime": "2026-12-06T22:58:35Z"}],
            "admission": {"clusterQueue": "team-gpus", "podSetAssignments": [{"name": "main", "count": 4,
                "flavors": {"nvidia.com/gpu": "simulated-gpu", "cpu": "simulated-gpu"}}]},
        }));
        assert_eq!(
            state(Some(&admitted)),
            QueueState::Admitted {
                cluster_queue: "team-gpus".into(),
                flavors: "cpu=simulated-gpu, nvidia.com/gpu=simulated-gpu".into(),
                count: 4,
            }
        );
    }

    #[test]
    fn an_evicted_workload_is_pending_again_and_says_why() {
        let evicted = workload(json!({
            "conditions": [
                {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "",
                 "lastTransitionTime": "2026-12-06T22:58:35Z"},
                {"type": "Evicted", "status": "True", "reason": "PodsReadyTimeout",
                 "message": "Exceeded the PodsReady timeout", "lastTransitionTime": "2026-12-06T22:58:35Z"}],
            "admission": {"clusterQueue": "team-gpus", "podSetAssignments": []},
        }));
        assert_eq!(
            state(Some(&evicted)),
            QueueState::Pending {
                reason: "EvictedPodsReadyTimeout".into(),
                message: "Exceeded the PodsReady timeout".into()
            }
        );
    }

    #[test]
    fn a_runs_workload_is_the_one_its_job_controls() {
        let mine = workload(json!({}));
        let mut other = workload(json!({}));
        other.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        let all = [other, mine.clone()];
        assert_eq!(of_job(&all, "job-uid").map(|w| &w.metadata), Some(&mine.metadata));
        assert!(of_job(&all, "nobody").is_none());
    }
}
