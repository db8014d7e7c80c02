//! What a run's Job and pods say, as a TrainingJob outcome (pure). Failure reasons come from the
//! pods: exit codes, OOMKilled, image pull errors, unschedulable pods, and the Job's deadline.

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use miniautoml_api::training_job::WorkerStatus;

/// The state of the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Pods not running yet (`reason`/`message` say why when something is in the way).
    Launching {
        /// e.g. `Unschedulable`, `ContainerCreating`.
        reason: String,
        /// Details for the user.
        message: String,
    },
    /// At least one worker runs (or exited 0 before the Job says Complete).
    Running,
    /// Every worker exited 0.
    Completed,
    /// The run (this attempt of it) cannot succeed.
    Failed {
        /// e.g. `Error`, `OOMKilled`, `ImagePullBackOff`, `DeadlineExceeded`.
        reason: String,
        /// Which worker, and what happened.
        message: String,
        /// A pod was evicted or preempted (its `DisruptionTarget` condition failed the Job by
        /// the pod failure policy): the workload did not fail, the cluster took its place.
        disrupted: bool,
    },
}

fn job_condition<'a>(
    batch_job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    batch_job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("?")
}

/// The pod's rank: its completion index, a label of an Indexed Job's pods (the pod caches
/// keep labels, not annotations), else the annotation of the same name; 0 for a lone worker.
fn rank(pod: &Pod) -> String {
    const INDEX: &str = "batch.kubernetes.io/job-completion-index";
    [&pod.metadata.labels, &pod.metadata.annotations]
        .into_iter()
        .find_map(|map| map.as_ref()?.get(INDEX).cloned())
        .unwrap_or_else(|| "0".into())
}

/// Why a pod failed, when it did: a container's termination or an image that cannot be pulled.
fn pod_failure(pod: &Pod) -> Option<(String, String)> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    for status in statuses {
        let state = status.state.as_ref();
        if let Some(terminated) = state.and_then(|s| s.terminated.as_ref())
            && terminated.exit_code != 0
        {
            let reason = terminated.reason.clone().unwrap_or_else(|| "Error".into());
            // A termination message, or (FallbackToLogsOnError) the log's tail: its last line
            // is the trainer's own error.
            let detail = terminated
                .message
                .as_deref()
                .and_then(|m| m.lines().rev().map(str::trim).find(|l| !l.is_empty()))
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Some((
                reason.clone(),
                format!(
                    "worker rank {} (pod {}) exited with code {} ({reason}){detail}",
                    rank(pod),
                    pod_name(pod),
                    terminated.exit_code
                ),
            ));
        }
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.clone().unwrap_or_default();
            if cannot_pull(&reason) {
                return Some((
                    reason.clone(),
                    format!(
                        "worker rank {} (pod {}) cannot get its image {}: {}",
                        rank(pod),
                        pod_name(pod),
                        status.image,
                        waiting.message.clone().unwrap_or(reason)
                    ),
                ));
            }
        }
    }
    let status = pod.status.as_ref()?;
    (status.phase.as_deref() == Some("Failed")).then(|| {
        let reason = status.reason.clone().unwrap_or_else(|| "Failed".into());
        (
            reason.clone(),
            format!(
                "worker rank {} (pod {}) failed ({reason}){}",
                rank(pod),
                pod_name(pod),
                status
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        )
    })
}

/// Why a pending pod is not running yet.
fn pending_reason(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    if let Some(unschedulable) = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return Some((
            unschedulable
                .reason
                .clone()
                .unwrap_or_else(|| "Unschedulable".into()),
            format!(
                "worker rank {} (pod {}) cannot be scheduled: {}",
                rank(pod),
                pod_name(pod),
                unschedulable.message.clone().unwrap_or_default()
            ),
        ));
    }
    None
}

/// Each rank of the attempt: the newest pod of each completion index (a lone worker's retries
/// leave older ones behind), where it runs, how it is doing, and how often the rank was
/// started again (gang restarts before this `attempt`, and earlier pods of its index). The
/// latest epoch each rank reported is kept from `before` while its pod is the same.
pub fn workers(pods: &[Pod], attempt: u32, before: &[WorkerStatus]) -> Vec<WorkerStatus> {
    let mut by_rank: std::collections::BTreeMap<u32, Vec<&Pod>> = Default::default();
    for pod in pods {
        if let Ok(rank) = rank(pod).parse::<u32>() {
            by_rank.entry(rank).or_default().push(pod);
        }
    }
    by_rank
        .into_iter()
        .map(|(rank, mut pods)| {
            pods.sort_by_key(|p| {
                (
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    pod_name(p).to_string(),
                )
            });
            let pod = pods[pods.len() - 1];
            let status = pod.status.as_ref();
            let trainer = status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.iter().find(|c| c.name == super::build::CONTAINER));
            let terminated = trainer.and_then(|c| c.state.as_ref()?.terminated.as_ref());
            let waiting = trainer.and_then(|c| c.state.as_ref()?.waiting.as_ref());
            let reason = terminated
                .and_then(|t| t.reason.clone())
                .or_else(|| waiting.and_then(|w| w.reason.clone()))
                .or_else(|| pending_reason(pod).map(|(reason, _)| reason))
                .or_else(|| status.and_then(|s| s.reason.clone()));
            let name = pod_name(pod).to_string();
            WorkerStatus {
                rank,
                phase: status.and_then(|s| s.phase.clone()),
                node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                restarts: attempt.saturating_sub(1) + (pods.len() as u32 - 1),
                exit_code: terminated.map(|t| t.exit_code),
                reason,
                last_epoch: before
                    .iter()
                    .find(|w| w.rank == rank && w.pod == name)
                    .and_then(|w| w.last_epoch.clone()),
                pod: name,
            }
        })
        .collect()
}

/// The trainer image's digest reference (`repo@sha256:…`) as the kubelet resolved it, when a
/// worker has started and its runtime reports one.
pub fn image_digest(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter_map(|pod| pod.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .map(|status| status.image_id.as_str())
        .find(|id| id.contains("@sha256:"))
        .map(|id| id.trim_start_matches("docker-pullable://").to_string())
}

/// When `pod`'s trainer exited, for ordering failures (the first failed rank is the cause; the
/// ranks the Job controller stopped after it are not).
fn finished_at(pod: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|s| s.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .min()
}

/// Whether the cluster disrupted `pod` (eviction, preemption, a node going away).
fn disrupted(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        })
}

/// The outcome of the run's batch Job `batch_job` given its `pods`. `reported`: the rank whose trainer reported its
/// failure first (`LogRunEnd(false, "rank N: …")`), which wins over exit times: ranks that lose
/// a peer fail in the same second, and the kubelet reports whole seconds.
pub fn observe(batch_job: &Job, pods: &[Pod], reported: Option<u32>) -> Observed {
    if job_condition(batch_job, "Complete").is_some() {
        return Observed::Completed;
    }
    // The first pod to fail: by when its trainer exited (one that never ran, e.g. an image
    // that cannot be pulled, counts as first).
    let mut failed: Vec<&Pod> = pods.iter().filter(|p| pod_failure(p).is_some()).collect();
    failed.sort_by_key(|p| (Some(rank(p)) != reported.map(|r| r.to_string()), finished_at(p)));
    let mut failure = failed.first().and_then(|p| pod_failure(p));
    // The rank that reported the failure may not show its exit yet (the kubelet's status lags
    // the trainer's report by a moment) while a peer that lost it already does: the reporting
    // rank is still the cause.
    if let Some(reported) = reported
        && failed.first().is_none_or(|p| rank(p) != reported.to_string())
        && let Some(pod) = pods
            .iter()
            .filter(|p| rank(p) == reported.to_string())
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
    {
        failure = Some((
            "Error".into(),
            format!(
                "worker rank {reported} (pod {}) reported its failure",
                pod_name(pod)
            ),
        ));
    }
    if let Some(condition) = job_condition(batch_job, "Failed") {
        let reason = condition.reason.clone().unwrap_or_else(|| "Failed".into());
        let message = match (&failure, reason.as_str()) {
            (Some((_, pod)), "BackoffLimitExceeded") => pod.clone(),
            (Some((_, pod)), _) => format!("{}; {pod}", condition.message.clone().unwrap_or_default()),
            (None, _) => condition.message.clone().unwrap_or_else(|| reason.clone()),
        };
        let disrupted = reason == "PodFailurePolicy" || pods.iter().any(disrupted);
        let reason = match (&failure, reason.as_str()) {
            (Some((pod_reason, _)), "BackoffLimitExceeded") => pod_reason.clone(),
            (_, "PodFailurePolicy") => "Disrupted".into(),
            _ => reason,
        };
        return Observed::Failed {
            reason,
            message,
            disrupted,
        };
    }
    // An image that cannot be pulled never fails the Job by itself: fail the run now.
    if let Some((reason, message)) = failure.filter(|(reason, _)| cannot_pull(reason)) {
        return Observed::Failed {
            reason,
            message,
            disrupted: false,
        };
    }
    // A worker that exited 0 ran: the Job says Complete a moment later (its controller lags
    // the pods), and until then the run is still running, not starting again.
    if pods.iter().any(|p| {
        matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running" | "Succeeded")
        )
    }) {
        return Observed::Running;
    }
    match pods.iter().find_map(pending_reason) {
        Some((reason, message)) => Observed::Launching { reason, message },
        None if batch_job.spec.as_ref().and_then(|s| s.suspend) == Some(true) => Observed::Launching {
            reason: "Suspended".into(),
            message: "the Job waits for its queue to admit it".into(),
        },
        None => Observed::Launching {
            reason: "PodsStarting".into(),
            message: "the workers' pods are starting".into(),
        },
    }
}

/// Whether a container waits for good for an image it cannot get (the kubelet's reasons).
fn cannot_pull(reason: &str) -> bool {
    matches!(reason, "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn batch_job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": {"template": {}}, "status": {"conditions": conditions}})).unwrap()
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "j-abc"}, "status": status})).unwrap()
    }

    #[test]
    fn the_code_version_is_the_digest_the_runtime_resolved() {
        let started = |image_id: &str| {
            pod(json!({"containerStatuses": [{
                "name": "trainer", "image": "miniautoml/intent-classification:0.1.0", "imageID": image_id,
                "ready": true, "restartCount": 0,
            }]}))
        };
        let digest = "docker.io/miniautoml/intent-classification@sha256:0123abcd";
        assert_eq!(
            image_digest(&[started(&format!("docker-pullable://{digest}"))]).as_deref(),
            Some(digest)
        );
        assert_eq!(image_digest(&[started("process-node:///bin/trainer")]), None);
        assert_eq!(image_digest(&[]), None);
    }

    #[test]
    fn a_complete_job_completed() {
        let done = batch_job(json!([{"type": "Complete", "status": "True"}]));
        assert_eq!(observe(&done, &[], None), Observed::Completed);
    }

    #[test]
    fn a_failed_job_reports_the_worker_exit_code() {
        let failed =
            batch_job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]));
        let exited = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "trainer", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}),
        );
        let Observed::Failed { reason, message, .. } = observe(&failed, &[exited], None) else {
            panic!()
        };
        assert_eq!(reason, "Error");
        assert!(message.contains("exited with code 3"), "{message}");
        let oom = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "trainer", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        let Observed::Failed { reason, .. } = observe(&failed, &[oom], None) else {
            panic!()
        };
        assert_eq!(reason, "OOMKilled");
    }

    #[test]
    fn a_deadline_is_the_jobs_reason() {
        let failed = batch_job(
            json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]),
        );
        let Observed::Failed { reason, message, .. } = observe(&failed, &[], None) else {
            panic!()
        };
        assert_eq!(reason, "DeadlineExceeded");
        assert!(message.contains("deadline"), "{message}");
    }

    #[test]
    fn an_image_that_cannot_be_pulled_fails_the_run() {
        let active = batch_job(json!([]));
        let waiting = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "trainer", "image": "nope:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}),
        );
        let Observed::Failed { reason, message, .. } = observe(&active, &[waiting], None) else {
            panic!()
        };
        assert_eq!(reason, "ImagePullBackOff");
        assert!(message.contains("nope:1"), "{message}");
    }

    #[test]
    fn an_unschedulable_pod_says_why() {
        let active = batch_job(json!([]));
        let pending = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}]}),
        );
        let Observed::Launching { reason, message } = observe(&active, &[pending], None) else {
            panic!()
        };
        assert_eq!(reason, "Unschedulable");
        assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
        let running = pod(json!({"phase": "Running"}));
        assert_eq!(observe(&active, &[running], None), Observed::Running);
    }

    #[test]
    fn a_worker_that_exited_0_before_the_job_says_complete_still_runs() {
        let active = batch_job(json!([{"type": "SuccessCriteriaMet", "status": "True"}]));
        let exited = pod(json!({"phase": "Succeeded"}));
        assert_eq!(observe(&active, &[exited], None), Observed::Running);
    }

    fn ranked(name: &str, rank: u32, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"batch.kubernetes.io/job-completion-index": rank.to_string()},
                         "creationTimestamp": "2026-12-06T05:00:00Z"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "trainer"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn exited(code: i32, finished: &str, message: &str) -> serde_json::Value {
        json!({"phase": "Failed", "containerStatuses": [{"name": "trainer", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": "Error", "finishedAt": finished,
            "message": message}}}]})
    }

    #[test]
    fn the_reporting_rank_is_the_cause_before_its_exit_shows() {
        let failed =
            batch_job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]));
        // Rank 1 reported its failure; its pod still shows it running while rank 0, which lost
        // its peer, shows its exit already.
        let peer = ranked(
            "j-0-a",
            0,
            exited(
                1,
                "2026-12-06T05:01:00Z",
                "RuntimeError: Connection closed by peer",
            ),
        );
        let reporter = ranked("j-1-b", 1, json!({"phase": "Running"}));
        let Observed::Failed { message, .. } = observe(&failed, &[peer.clone(), reporter], Some(1)) else {
            panic!()
        };
        assert_eq!(message, "worker rank 1 (pod j-1-b) reported its failure");
        // Once its exit shows, it is the reason as ever.
        let exited_too = ranked(
            "j-1-b",
            1,
            exited(1, "2026-12-06T05:01:01Z", "RuntimeError: on purpose"),
        );
        let Observed::Failed { message, .. } = observe(&failed, &[peer, exited_too], Some(1)) else {
            panic!()
        };
        assert!(
            message.starts_with("worker rank 1 (pod j-1-b) exited with code 1"),
            "{message}"
        );
    }

    #[test]
    fn the_first_failed_rank_is_the_cause_and_its_last_log_line_the_reason() {
        let failed =
            batch_job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]));
        // Rank 0 was stopped by the Job controller after rank 1 failed.
        let stopped = ranked("j-0-a", 0, exited(143, "2026-12-06T05:01:05Z", ""));
        let cause = ranked(
            "j-1-b",
            1,
            exited(
                1,
                "2026-12-06T05:01:00Z",
                "Traceback (most recent call last):\n  ...\nValueError: loss diverged\n",
            ),
        );
        let Observed::Failed {
            reason,
            message,
            disrupted,
        } = observe(&failed, &[stopped.clone(), cause.clone()], None)
        else {
            panic!()
        };
        assert_eq!(reason, "Error");
        assert_eq!(
            message,
            "worker rank 1 (pod j-1-b) exited with code 1 (Error): ValueError: loss diverged"
        );
        assert!(!disrupted);
        let ranks = workers(&[stopped, cause.clone()], 2, &[]);
        assert_eq!(ranks.len(), 2);
        assert_eq!(
            (
                ranks[1].rank,
                ranks[1].pod.as_str(),
                ranks[1].exit_code,
                ranks[1].restarts
            ),
            (1, "j-1-b", Some(1), 1)
        );
        assert_eq!(ranks[0].node.as_deref(), Some("node-a"));
        assert_eq!(ranks[0].phase.as_deref(), Some("Failed"));

        // Both exited in the same second: the rank whose trainer reported first is the cause.
        let lost_peer = ranked(
            "j-0-a",
            0,
            exited(
                1,
                "2026-12-06T05:01:00Z",
                "RuntimeError: Connection closed by peer",
            ),
        );
        let Observed::Failed { message, .. } = observe(&failed, &[lost_peer.clone(), cause.clone()], Some(1))
        else {
            panic!()
        };
        assert!(message.starts_with("worker rank 1 (pod j-1-b)"), "{message}");
        let Observed::Failed { message, .. } = observe(&failed, &[lost_peer, cause], Some(0)) else {
            panic!()
        };
        assert!(message.starts_with("worker rank 0 (pod j-0-a)"), "{message}");
    }

    #[test]
    fn an_eviction_fails_the_attempt_as_a_disruption() {
        let failed = batch_job(
            json!([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
            "message": "Pod ns/j-1-b has condition DisruptionTarget matching FailJob rule at index 0"}]),
        );
        let Observed::Failed {
            reason, disrupted, ..
        } = observe(&failed, &[], None)
        else {
            panic!()
        };
        assert_eq!(reason, "Disrupted");
        assert!(disrupted);
    }

    #[test]
    fn each_rank_shows_its_newest_pod_and_keeps_its_latest_epoch() {
        let running = json!({"phase": "Running"});
        let old = ranked("j-0-a", 0, exited(1, "2026-12-06T05:01:00Z", ""));
        let mut new = ranked("j-0-z", 0, running);
        new.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-12-06T05:02:00Z".parse().unwrap(),
        ));
        let before = [WorkerStatus {
            rank: 0,
            pod: "j-0-z".into(),
            last_epoch: Some("0-4".into()),
            ..Default::default()
        }];
        let ranks = workers(&[new, old], 1, &before);
        assert_eq!(ranks.len(), 1);
        assert_eq!(ranks[0].pod, "j-0-z");
        assert_eq!(ranks[0].restarts, 1, "one earlier pod of its index");
        assert_eq!(ranks[0].last_epoch.as_deref(), Some("0-4"));
        assert_eq!(ranks[0].phase.as_deref(), Some("Running"));
    }
}
