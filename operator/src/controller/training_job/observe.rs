//! What a run's Job and pods say, as a TrainingJob outcome (pure). Failure reasons come from the
//! pods: exit codes, OOMKilled, image pull errors, unschedulable pods, and the Job's deadline.

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};

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
    /// At least one worker runs.
    Running,
    /// Every worker exited 0.
    Completed,
    /// The run cannot succeed.
    Failed {
        /// e.g. `Error`, `OOMKilled`, `ImagePullBackOff`, `DeadlineExceeded`.
        reason: String,
        /// Which worker, and what happened.
        message: String,
    },
}

fn job_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("?")
}

fn rank(pod: &Pod) -> String {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("batch.kubernetes.io/job-completion-index"))
        .cloned()
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
            let detail = terminated
                .message
                .as_deref()
                .map(|m| format!(": {}", m.trim()))
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
            if matches!(
                reason.as_str(),
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            ) {
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

/// The outcome of `job` given its `pods`.
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

pub fn observe(job: &Job, pods: &[Pod]) -> Observed {
    if job_condition(job, "Complete").is_some() {
        return Observed::Completed;
    }
    let failure = pods.iter().find_map(pod_failure);
    if let Some(condition) = job_condition(job, "Failed") {
        let reason = condition.reason.clone().unwrap_or_else(|| "Failed".into());
        let message = match (&failure, reason.as_str()) {
            (Some((_, pod)), "BackoffLimitExceeded") => pod.clone(),
            (Some((_, pod)), _) => format!("{}; {pod}", condition.message.clone().unwrap_or_default()),
            (None, _) => condition.message.clone().unwrap_or_else(|| reason.clone()),
        };
        let reason = match (&failure, reason.as_str()) {
            (Some((pod_reason, _)), "BackoffLimitExceeded") => pod_reason.clone(),
            _ => reason,
        };
        return Observed::Failed { reason, message };
    }
    // An image that cannot be pulled never fails the Job by itself: fail the run now.
    if let Some((reason, message)) = failure.filter(|(reason, _)| {
        matches!(
            reason.as_str(),
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
        )
    }) {
        return Observed::Failed { reason, message };
    }
    if pods
        .iter()
        .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    {
        return Observed::Running;
    }
    match pods.iter().find_map(pending_reason) {
        Some((reason, message)) => Observed::Launching { reason, message },
        None if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) => Observed::Launching {
            reason: "Suspended".into(),
            message: "the Job waits for its queue to admit it".into(),
        },
        None => Observed::Launching {
            reason: "PodsStarting".into(),
            message: "the workers' pods are starting".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(conditions: serde_json::Value) -> Job {
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
        let done = job(json!([{"type": "Complete", "status": "True"}]));
        assert_eq!(observe(&done, &[]), Observed::Completed);
    }

    #[test]
    fn a_failed_job_reports_the_worker_exit_code() {
        let failed = job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]));
        let exited = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "trainer", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}),
        );
        let Observed::Failed { reason, message } = observe(&failed, &[exited]) else {
            panic!()
        };
        assert_eq!(reason, "Error");
        assert!(message.contains("exited with code 3"), "{message}");
        let oom = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "trainer", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        let Observed::Failed { reason, .. } = observe(&failed, &[oom]) else {
            panic!()
        };
        assert_eq!(reason, "OOMKilled");
    }

    #[test]
    fn a_deadline_is_the_jobs_reason() {
        let failed = job(
            json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]),
        );
        let Observed::Failed { reason, message } = observe(&failed, &[]) else {
            panic!()
        };
        assert_eq!(reason, "DeadlineExceeded");
        assert!(message.contains("deadline"), "{message}");
    }

    #[test]
    fn an_image_that_cannot_be_pulled_fails_the_run() {
        let active = job(json!([]));
        let waiting = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "trainer", "image": "nope:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}),
        );
        let Observed::Failed { reason, message } = observe(&active, &[waiting]) else {
            panic!()
        };
        assert_eq!(reason, "ImagePullBackOff");
        assert!(message.contains("nope:1"), "{message}");
    }

    #[test]
    fn an_unschedulable_pod_says_why() {
        let active = job(json!([]));
        let pending = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}]}),
        );
        let Observed::Launching { reason, message } = observe(&active, &[pending]) else {
            panic!()
        };
        assert_eq!(reason, "Unschedulable");
        assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
        let running = pod(json!({"phase": "Running"}));
        assert_eq!(observe(&active, &[running]), Observed::Running);
    }
}
