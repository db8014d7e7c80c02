//! Gang restarts of a multi-worker run (pure): whether an attempt that failed starts again.
//!
//! Ranks of a data-parallel run wait for each other in every collective, so one failed rank
//! stalls the rest: the gang fails and restarts as one. The Job fails at its first failed pod
//! (`backoffLimit` 0) and its controller stops the others; the operator then deletes the Job
//! (foreground, so it is gone only once its pods are) and launches the next attempt.

use miniautoml_api::TrainingJob;

use super::observe::Observed;

/// Failures a restart cannot fix: the same image or deadline would fail the same way.
const FINAL: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "DeadlineExceeded",
];

/// `Some(counted)` when `job`'s failed attempt (`observed`) restarts: a disruption (eviction,
/// preemption) restarts without counting; a failure counts, while restarts are left of
/// `spec.maxRestarts`. `None`: the run fails (or it has one worker, whose pod the Job retries).
pub fn restart(job: &TrainingJob, observed: &Observed) -> Option<bool> {
    if job.spec.workers <= 1 {
        return None;
    }
    let Observed::Failed {
        reason, disrupted, ..
    } = observed
    else {
        return None;
    };
    if FINAL.contains(&reason.as_str()) {
        return None;
    }
    if *disrupted {
        return Some(false);
    }
    let counted = job.status.as_ref().map(|s| s.restarts).unwrap_or(0);
    (counted < job.spec.max_restarts.max(0) as u32).then_some(true)
}

#[cfg(test)]
mod tests {
    use miniautoml_api::TrainingJobStatus;

    use super::*;

    fn gang(max_restarts: i32, restarts: u32) -> TrainingJob {
        let mut job: TrainingJob =
            serde_yaml::from_str(include_str!("../../../../examples/trainingjob.yaml")).unwrap();
        job.spec.workers = 3;
        job.spec.max_restarts = max_restarts;
        job.status = Some(TrainingJobStatus {
            restarts,
            ..Default::default()
        });
        job
    }

    fn failed(reason: &str, disrupted: bool) -> Observed {
        Observed::Failed {
            reason: reason.into(),
            message: "worker rank 1 exited with code 1".into(),
            disrupted,
        }
    }

    #[test]
    fn a_failed_rank_restarts_the_gang_while_restarts_are_left() {
        assert_eq!(restart(&gang(2, 0), &failed("Error", false)), Some(true));
        assert_eq!(restart(&gang(2, 1), &failed("OOMKilled", false)), Some(true));
        assert_eq!(restart(&gang(2, 2), &failed("Error", false)), None);
        assert_eq!(restart(&gang(0, 0), &failed("Error", false)), None);
    }

    #[test]
    fn a_disruption_restarts_without_counting_and_some_failures_never_restart() {
        assert_eq!(restart(&gang(0, 0), &failed("Disrupted", true)), Some(false));
        assert_eq!(restart(&gang(3, 0), &failed("ImagePullBackOff", false)), None);
        assert_eq!(restart(&gang(3, 0), &failed("DeadlineExceeded", false)), None);
        assert_eq!(restart(&gang(3, 0), &Observed::Running), None);
        let mut alone = gang(3, 0);
        alone.spec.workers = 1;
        assert_eq!(
            restart(&alone, &failed("Error", false)),
            None,
            "its pod is retried by the Job"
        );
    }
}
