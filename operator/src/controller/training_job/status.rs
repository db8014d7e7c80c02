//! The status of a TrainingJob, computed once per reconcile by a pure function from what the
//! reconcile found ([`Found`]). The metadata store writes the other half — what the trainer
//! reports: start time, epochs ([`TrainingJobStatus::merge_epochs`]), message, artifact — and
//! both write read-modify-write against the resourceVersion read (`crate::status`), so neither
//! overwrites the other's fields.

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time};
use miniautoml_api::{
    TrainingJob, TrainingJobStatus,
    training_job::{ADMITTED, DATASET_READY, FAILED, RUNNING, STORAGE_KEY, SUCCEEDED, TrainingPhase},
};
use miniautoml_data::KeyError;

use super::{
    dereference::Queued,
    observe::{self, Observed},
    validate::Invalid,
};
use crate::{
    conditions::{self, ACCEPTED},
    kueue::QueueState,
};

/// What one reconcile of a run found.
#[derive(Clone, Debug, PartialEq)]
pub enum Found<'a> {
    /// The spec cannot be acted on.
    Invalid(&'a Invalid),
    /// The operator has no object storage or metadata store address configured.
    NotConfigured,
    /// The run waits for its Dataset or snapshot.
    WaitingForDataset {
        /// Why, as a condition reason.
        reason: &'static str,
        /// Why, for the user.
        message: &'a str,
    },
    /// The snapshot is ready; the run waits for one of `max` slots.
    WaitingForSlot {
        /// The snapshot it will train on.
        version_hash: &'a str,
        /// Runs queued ahead of this one (as last written, while a new count is not worth a
        /// write: `run_queue::shown_ahead`).
        ahead: usize,
        /// `--max-concurrent-runs`.
        max: u32,
    },
    /// The run's own storage key could not be issued, so it is not launched.
    NoStorageKey(&'a KeyError),
    /// The run ended and its own storage key is revoked.
    KeyRevoked,
    /// An object of one of the run's names (its Job, Secret, Service) exists and is not the
    /// run's: it is not launched (why, for the user).
    NameTaken(&'a str),
    /// The run's Job exists.
    Launched {
        /// The snapshot it trains on.
        version_hash: &'a str,
        /// The Job's name.
        job_name: &'a str,
        /// The trainer image's digest, once the runtime resolved it.
        code_version: Option<&'a str>,
        /// What the Job and its pods say.
        workers: &'a Observed,
        /// The Job's pods, for each rank's status.
        pods: &'a [Pod],
        /// The attempt the Job runs.
        attempt: u32,
        /// What Kueue says, for a run with `queueName`.
        queued: Option<&'a Queued>,
        /// Which storage key its pods hold.
        key: PodKey,
    },
    /// A gang's attempt failed and the gang restarts: its Job is being deleted.
    GangRestart {
        /// The failed attempt.
        failed: u32,
        /// Why it failed (the first failed rank).
        message: &'a str,
        /// Whether the restart counts against `maxRestarts` (not for a disruption).
        counted: bool,
    },
    /// The pods of an earlier attempt are still stopping; the next starts once they are gone.
    GangStopping {
        /// The attempt whose pods are stopping.
        attempt: u32,
    },
}

/// Which storage key a run's pods hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodKey {
    /// Their own (`--storage-credentials=scoped`).
    Own,
    /// A temporary key of their own from STS (`--storage-credentials=sts`), lasting this long.
    Session(std::time::Duration),
    /// The store's shared key (`--storage-credentials=shared`).
    Shared,
}

/// Reason of the `StorageKey` condition while the run's pods hold a key of their own.
pub const OWN_KEY: &str = "Scoped";

/// Whether `job`'s pods were given a key of their own that is not revoked yet.
pub fn holds_own_key(job: &TrainingJob) -> bool {
    job.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, STORAGE_KEY))
        .is_some_and(|c| c.status == "True" && c.reason == OWN_KEY)
}

/// The phase recorded so far.
pub fn phase(job: &TrainingJob) -> Option<TrainingPhase> {
    job.status.as_ref().and_then(|s| s.phase)
}

/// Writes what `found` says into `job`'s status, observed at `now`; returns whether anything
/// changed. `job` is the object as last read (a retry after a conflict calls this again on a
/// fresh read), so fields other writers own are kept.
pub fn record(job: &mut TrainingJob, found: &Found, now: &Time) -> bool {
    let generation = job.metadata.generation;
    let status = job.status.get_or_insert_with(Default::default);
    let before = status.clone();
    status.observed_generation = generation;
    let at = (generation, now);
    if let Found::Invalid(Invalid { reason, message }) = found {
        set(status, at, ACCEPTED, false, reason, message);
    } else {
        set(status, at, ACCEPTED, true, "Valid", "The spec is valid");
    }
    if let Found::WaitingForSlot { version_hash, .. } | Found::Launched { version_hash, .. } = found {
        let ready = format!("snapshot {version_hash} is ready");
        set(status, at, DATASET_READY, true, "Ready", &ready);
    }
    match found {
        Found::Invalid(_) => {}
        Found::NoStorageKey(error) => {
            let reason = match error {
                KeyError::Refused { .. } => "StorageKeyRefused",
                KeyError::Unavailable { .. } => "StorageKeyUnavailable",
            };
            let message =
                format!("the run's own storage key cannot be issued, so it is not launched: {error}");
            set(status, at, STORAGE_KEY, false, reason, &message);
            set(status, at, RUNNING, false, reason, &message);
            status.phase = Some(TrainingPhase::Queued);
        }
        Found::KeyRevoked => {
            set(
                status,
                at,
                STORAGE_KEY,
                false,
                "Revoked",
                "the run ended: its pods' own storage key is revoked",
            );
        }
        Found::NameTaken(message) => {
            set(status, at, RUNNING, false, "NameTaken", message);
            status.phase = Some(TrainingPhase::Queued);
        }
        Found::NotConfigured => {
            set(
                status,
                at,
                RUNNING,
                false,
                "NotConfigured",
                "the operator has no object storage or metadata store address \
                 (--metadata-store-address) configured",
            );
            status.phase = Some(TrainingPhase::Queued);
        }
        Found::WaitingForDataset { reason, message } => {
            set(status, at, DATASET_READY, false, reason, message);
            status.phase = Some(TrainingPhase::Queued);
        }
        Found::WaitingForSlot { ahead, max, .. } => {
            let message = format!(
                "every one of the {max} slots for runs at once is taken; {ahead} queued ahead of this one"
            );
            set(status, at, RUNNING, false, "WaitingForSlot", &message);
            status.phase = Some(TrainingPhase::Queued);
            status.position_in_queue = Some(*ahead as u32);
        }
        Found::Launched {
            version_hash,
            job_name,
            code_version,
            workers,
            pods,
            attempt,
            queued,
            key,
        } => {
            let (reason, message) = match key {
                PodKey::Own => (
                    OWN_KEY,
                    "its pods hold a storage key of their own, which reads only its snapshot and writes only its \
                     model folder; revoked when the run ends"
                        .to_string(),
                ),
                PodKey::Session(lifetime) => (
                    "SessionKey",
                    format!(
                        "its pods hold a temporary key from STS AssumeRole whose session policy reads only its \
                         snapshot and writes only its model folder; it expires {} s after launch (it cannot be \
                         revoked sooner, and a run still going then can no longer reach the store)",
                        lifetime.as_secs()
                    ),
                ),
                PodKey::Shared => (
                    "SharedKey",
                    "its pods hold the store's shared key (--storage-credentials=shared): code running in them \
                     can read and write every namespace's data"
                        .to_string(),
                ),
            };
            set(status, at, STORAGE_KEY, true, reason, &message);
            status.dataset_version_hash = Some(version_hash.to_string());
            status.job_name = Some(job_name.to_string());
            if let Some(digest) = code_version {
                status.code_version = Some(digest.to_string());
            }
            status.position_in_queue = None;
            status.attempt = Some(*attempt);
            status.workers = observe::workers(pods, *attempt, &status.workers);
            if !record_kueue(status, at, *queued, job_name) {
                record_workers(status, at, workers);
            }
        }
        Found::GangRestart {
            failed,
            message,
            counted,
        } => {
            // Once per failed attempt: a retry of this write, or a later reconcile, finds the
            // next attempt recorded already.
            if status.attempt.unwrap_or(1) <= *failed {
                status.attempt = Some(failed + 1);
                if *counted {
                    status.restarts += 1;
                }
                let why = if *counted {
                    format!("restart {} of {}", status.restarts, job.spec.max_restarts)
                } else {
                    "a disruption, not counted against maxRestarts".into()
                };
                let text = format!("attempt {failed} failed: {message}; every rank restarts ({why})");
                status.message = Some(text.clone());
                status.phase = Some(TrainingPhase::Launching);
                set(status, at, RUNNING, false, "GangRestart", &text);
                set(status, at, FAILED, false, "GangRestarted", &text);
                // The status shows the attempt running; the history in storage keeps every
                // epoch reported.
                status.epochs.clear();
                status.progress = None;
                status.workers.clear();
            }
        }
        Found::GangStopping { attempt } => {
            status.phase = Some(TrainingPhase::Launching);
            let text = format!(
                "waiting for every pod of attempt {attempt} to stop before attempt {} starts",
                attempt + 1
            );
            set(status, at, RUNNING, false, "GangRestart", &text);
        }
    }
    *status != before
}

/// The rank whose trainer reported the attempt's first failure (`LogRunEnd(false, "rank N:
/// …")`, kept as the run's message until the attempt ends).
pub fn reported_failure_rank(job: &TrainingJob) -> Option<u32> {
    let status = job.status.as_ref()?;
    conditions::find(&status.conditions, FAILED)
        .filter(|c| c.status == "True" && c.reason == "TrainerFailed")?;
    let (rank, _) = status.message.as_deref()?.split_once(": ")?;
    rank.strip_prefix("rank ")?.parse().ok()
}

/// A trainer's reason without the `rank N: ` the helper puts before it.
fn strip_rank(message: &str) -> &str {
    match message.split_once(": ") {
        Some((rank, rest))
            if rank
                .strip_prefix("rank ")
                .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            rest
        }
        _ => message,
    }
}

/// Sets one condition of `status`, observed for the generation at the time in `at`.
fn set(
    status: &mut TrainingJobStatus,
    (generation, now): (Option<i64>, &Time),
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
) {
    conditions::At { generation, now }.set(&mut status.conditions, type_, ok, reason, message);
}

/// Records what Kueue says of a queued run: `Admitted` (its ClusterQueue and flavors, or Kueue's
/// reason), and while Kueue holds the Job suspended and pending, phase `Queued` with Kueue's
/// reason and the place in the LocalQueue. Returns whether the run waits for Kueue (then its
/// workers have nothing to say).
fn record_kueue(
    status: &mut TrainingJobStatus,
    at: (Option<i64>, &Time),
    queued: Option<&Queued>,
    job_name: &str,
) -> bool {
    let Some(Queued {
        state,
        suspended,
        position,
    }) = queued
    else {
        return false;
    };
    let (reason, message) = match state {
        QueueState::Admitted {
            cluster_queue,
            flavors,
            count,
        } => {
            let message = format!(
                "Kueue admitted all {count} pods in ClusterQueue {cluster_queue} (flavors: {flavors})"
            );
            set(status, at, ADMITTED, true, "Admitted", &message);
            return false;
        }
        QueueState::Pending { reason, message } => (reason.clone(), message.clone()),
        QueueState::NoWorkload => (
            "WaitingForKueue".to_string(),
            format!(
                "Kueue has not made a Workload of Job {job_name} yet; if this lasts, Kueue does not manage \
                 this namespace (its managedJobsNamespaceSelector) or does not run"
            ),
        ),
    };
    set(status, at, ADMITTED, false, &reason, &message);
    if !suspended {
        return false;
    }
    set(status, at, RUNNING, false, &reason, &message);
    status.phase = Some(TrainingPhase::Queued);
    status.position_in_queue = *position;
    true
}

/// Records what the workers do.
fn record_workers(status: &mut TrainingJobStatus, at: (Option<i64>, &Time), observed: &Observed) {
    let now = at.1;
    match observed {
        Observed::Launching { reason, message } => {
            status.phase = Some(TrainingPhase::Launching);
            set(status, at, RUNNING, false, reason, message);
        }
        Observed::Running => {
            status.phase = Some(TrainingPhase::Running);
            status.start_time.get_or_insert_with(|| now.clone());
            set(status, at, RUNNING, true, "WorkersRunning", "the workers run");
        }
        Observed::Completed => {
            status.start_time.get_or_insert_with(|| now.clone());
            status.completion_time.get_or_insert_with(|| now.clone());
            set(status, at, RUNNING, false, "Completed", "every worker exited 0");
            if status.artifact.is_some() {
                status.phase = Some(TrainingPhase::Succeeded);
                let message = status
                    .message
                    .clone()
                    .unwrap_or_else(|| "the model is recorded".into());
                set(status, at, SUCCEEDED, true, "ArtifactRecorded", &message);
            } else {
                status.phase = Some(TrainingPhase::Failed);
                let message = "every worker exited 0 but no model artifact was recorded (the trainer never called CreateArtifact)";
                status.message = Some(message.into());
                set(status, at, FAILED, true, "NoArtifact", message);
            }
        }
        Observed::Failed { reason, message, .. } => {
            status.phase = Some(TrainingPhase::Failed);
            status.completion_time.get_or_insert_with(|| now.clone());
            // The trainer's own reason (LogRunEnd(false, …)) says more than an exit code, unless
            // the pod's message already ends with it (its log's last line).
            let trainer = status.message.clone().filter(|trainer| {
                conditions::find(&status.conditions, FAILED).is_some_and(|c| c.reason == "TrainerFailed")
                    && !message.contains(strip_rank(trainer))
            });
            let message = match trainer {
                Some(trainer) => format!("{message}: {trainer}"),
                None => message.clone(),
            };
            status.message = Some(message.clone());
            set(status, at, RUNNING, false, reason, &message);
            set(status, at, FAILED, true, reason, &message);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use miniautoml_api::training_job::ArtifactStatus;

    use super::*;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn job() -> TrainingJob {
        let mut job: TrainingJob =
            serde_yaml::from_str(include_str!("../../../../examples/trainingjob.yaml")).unwrap();
        job.metadata.generation = Some(1);
        // Given by the operator before the first record; a record keeps it.
        job.status = Some(TrainingJobStatus {
            run_id: Some("7".into()),
            ..Default::default()
        });
        job
    }

    fn condition(job: &TrainingJob, type_: &str) -> (String, String) {
        let c = conditions::find(&job.status.as_ref().unwrap().conditions, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn an_invalid_spec_only_sets_accepted() {
        let mut job = job();
        let invalid = Invalid {
            reason: "UnknownAlgorithm",
            message: "no".into(),
        };
        assert!(record(&mut job, &Found::Invalid(&invalid), &at(1)));
        assert_eq!(
            condition(&job, ACCEPTED),
            ("False".into(), "UnknownAlgorithm".into())
        );
        let status = job.status.as_ref().unwrap();
        assert_eq!((status.phase, status.run_id.as_deref()), (None, Some("7")));
        assert!(
            !record(&mut job, &Found::Invalid(&invalid), &at(2)),
            "nothing new"
        );
    }

    #[test]
    fn a_run_whose_name_is_taken_stays_queued_and_says_whose_it_is() {
        let mut job = job();
        let taken = "Job tweets-train in namespace team-a was not made by the operator, so …";
        assert!(record(&mut job, &Found::NameTaken(taken), &at(1)));
        assert_eq!(condition(&job, RUNNING), ("False".into(), "NameTaken".into()));
        let status = job.status.as_ref().unwrap();
        assert_eq!(status.phase, Some(TrainingPhase::Queued));
        let running = status.conditions.iter().find(|c| c.type_ == RUNNING).unwrap();
        assert_eq!(running.message, taken);
    }

    #[test]
    fn a_waiting_run_is_queued_with_its_reason_and_place() {
        let mut job = job();
        let waiting = Found::WaitingForDataset {
            reason: "SnapshotBuilding",
            message: "snapshot h is being built",
        };
        assert!(record(&mut job, &waiting, &at(1)));
        assert_eq!(phase(&job), Some(TrainingPhase::Queued));
        assert_eq!(
            condition(&job, DATASET_READY),
            ("False".into(), "SnapshotBuilding".into())
        );
        let slot = Found::WaitingForSlot {
            version_hash: "h",
            ahead: 1,
            max: 2,
        };
        assert!(record(&mut job, &slot, &at(2)));
        assert_eq!(condition(&job, DATASET_READY), ("True".into(), "Ready".into()));
        assert_eq!(
            condition(&job, RUNNING),
            ("False".into(), "WaitingForSlot".into())
        );
        assert_eq!(job.status.as_ref().unwrap().position_in_queue, Some(1));
    }

    #[test]
    fn the_storage_key_condition_says_which_key_the_pods_hold_until_it_is_revoked() {
        let mut job = job();
        let launched = |key| Found::Launched {
            version_hash: "h",
            job_name: "j",
            code_version: None,
            workers: &Observed::Running,
            pods: &[],
            attempt: 1,
            queued: None,
            key,
        };
        record(&mut job, &launched(PodKey::Own), &at(1));
        assert!(holds_own_key(&job));
        record(&mut job, &Found::KeyRevoked, &at(2));
        assert!(!holds_own_key(&job));
        let condition = conditions::find(&job.status.as_ref().unwrap().conditions, STORAGE_KEY).unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "Revoked")
        );

        let mut shared = self::job();
        record(&mut shared, &launched(PodKey::Shared), &at(1));
        assert!(!holds_own_key(&shared), "nothing to revoke");
        let condition = conditions::find(&shared.status.as_ref().unwrap().conditions, STORAGE_KEY).unwrap();
        assert_eq!(condition.reason, "SharedKey");
        assert!(condition.message.contains("every namespace's data"));

        let mut refused = self::job();
        let error = KeyError::Refused {
            action: "CreateUser",
            user: "run-u".into(),
            message: "AccessDenied: IAM write operations are disabled on this server".into(),
        };
        record(&mut refused, &Found::NoStorageKey(&error), &at(1));
        let status = refused.status.unwrap();
        assert_eq!(status.phase, Some(TrainingPhase::Queued));
        let running = conditions::find(&status.conditions, RUNNING).unwrap();
        assert_eq!(running.reason, "StorageKeyRefused");
        assert!(
            running.message.contains("IAM write operations are disabled"),
            "{}",
            running.message
        );
    }

    #[test]
    fn a_launched_run_follows_its_workers_to_the_end() {
        let mut job = job();
        job.status.get_or_insert_with(Default::default).position_in_queue = Some(3);
        let launched = |workers| Found::Launched {
            version_hash: "h",
            job_name: "twitter-model-train",
            code_version: Some("repo@sha256:ab"),
            workers,
            pods: &[],
            attempt: 1,
            queued: None,
            key: PodKey::Own,
        };
        assert!(record(&mut job, &launched(&Observed::Running), &at(1)));
        let status = job.status.clone().unwrap();
        assert_eq!(status.phase, Some(TrainingPhase::Running));
        assert_eq!(status.position_in_queue, None);
        assert_eq!(status.job_name.as_deref(), Some("twitter-model-train"));
        assert_eq!(status.code_version.as_deref(), Some("repo@sha256:ab"));
        assert_eq!(status.start_time, Some(at(1)));

        // Completed without an artifact: the trainer never reported its model.
        let mut no_model = job.clone();
        record(&mut no_model, &launched(&Observed::Completed), &at(2));
        assert_eq!(phase(&no_model), Some(TrainingPhase::Failed));
        assert_eq!(condition(&no_model, FAILED), ("True".into(), "NoArtifact".into()));

        job.status.as_mut().unwrap().artifact = Some(ArtifactStatus::default());
        job.status.as_mut().unwrap().message = Some("test accuracy 0.8".into());
        record(&mut job, &launched(&Observed::Completed), &at(2));
        assert!(job.has_ended());
        assert_eq!(
            condition(&job, SUCCEEDED),
            ("True".into(), "ArtifactRecorded".into())
        );
        let status = job.status.unwrap();
        assert_eq!(
            (status.start_time, status.completion_time),
            (Some(at(1)), Some(at(2)))
        );
    }

    #[test]
    fn a_failed_worker_keeps_the_trainers_own_reason() {
        let mut job = job();
        let status = job.status.get_or_insert_with(Default::default);
        status.message = Some("loss diverged".into());
        status.conditions.push(conditions::condition(
            FAILED,
            true,
            "TrainerFailed",
            "loss diverged",
            Some(1),
            at(0),
        ));
        let failed = Observed::Failed {
            reason: "Error".into(),
            message: "worker rank 0 exited with code 1".into(),
            disrupted: false,
        };
        let found = Found::Launched {
            version_hash: "h",
            job_name: "j",
            code_version: None,
            workers: &failed,
            pods: &[],
            attempt: 1,
            queued: None,
            key: PodKey::Shared,
        };
        let mut again = job.clone();
        record(&mut job, &found, &at(1));
        assert_eq!(
            job.status.unwrap().message.as_deref(),
            Some("worker rank 0 exited with code 1: loss diverged")
        );
        // The pod's message already ends with the trainer's last line: said once.
        let status = again.status.as_mut().unwrap();
        status.message = Some("rank 1: ValueError: loss diverged".into());
        let failed = Observed::Failed {
            reason: "Error".into(),
            message: "worker rank 1 exited with code 1 (Error): ValueError: loss diverged".into(),
            disrupted: false,
        };
        let found = Found::Launched {
            version_hash: "h",
            job_name: "j",
            code_version: None,
            workers: &failed,
            pods: &[],
            attempt: 1,
            queued: None,
            key: PodKey::Shared,
        };
        record(&mut again, &found, &at(1));
        assert_eq!(
            again.status.unwrap().message.as_deref(),
            Some("worker rank 1 exited with code 1 (Error): ValueError: loss diverged")
        );
    }

    #[test]
    fn a_run_kueue_holds_is_queued_with_kueues_reason_and_place_then_admitted() {
        let mut job = job();
        let launching = Observed::Launching {
            reason: "Suspended".into(),
            message: "the Job waits for its queue to admit it".into(),
        };
        let pending = Queued {
            state: QueueState::Pending {
                reason: "Pending".into(),
                message: "insufficient unused quota for nvidia.com/gpu".into(),
            },
            suspended: true,
            position: Some(2),
        };
        let found = |queued| Found::Launched {
            version_hash: "h",
            job_name: "j",
            code_version: None,
            workers: &launching,
            pods: &[],
            attempt: 1,
            queued: Some(queued),
            key: PodKey::Shared,
        };
        record(&mut job, &found(&pending), &at(1));
        let status = job.status.clone().unwrap();
        assert_eq!(status.phase, Some(TrainingPhase::Queued));
        assert_eq!(status.position_in_queue, Some(2));
        let running = conditions::find(&status.conditions, RUNNING).unwrap();
        assert_eq!(
            (running.reason.as_str(), running.status.as_str()),
            ("Pending", "False")
        );
        assert!(running.message.contains("nvidia.com/gpu"), "{running:?}");
        assert_eq!(
            conditions::find(&status.conditions, ADMITTED).unwrap().status,
            "False"
        );

        let admitted = Queued {
            state: QueueState::Admitted {
                cluster_queue: "gpus".into(),
                flavors: "nvidia.com/gpu=simulated-gpu".into(),
                count: 4,
            },
            suspended: false,
            position: None,
        };
        record(&mut job, &found(&admitted), &at(2));
        let status = job.status.unwrap();
        assert_eq!(status.phase, Some(TrainingPhase::Launching));
        assert_eq!(status.position_in_queue, None);
        let condition = conditions::find(&status.conditions, ADMITTED).unwrap();
        assert_eq!(condition.status, "True");
        assert_eq!(
            condition.message,
            "Kueue admitted all 4 pods in ClusterQueue gpus (flavors: nvidia.com/gpu=simulated-gpu)"
        );
    }

    #[test]
    fn a_gang_restart_starts_the_next_attempt_once_and_counts_only_failures() {
        let mut job = job();
        job.spec.workers = 2;
        job.spec.max_restarts = 2;
        let status = job.status.get_or_insert_with(Default::default);
        status.epochs.push(Default::default());
        status.progress = Some("1/3".into());
        let restart = Found::GangRestart {
            failed: 1,
            message: "worker rank 1 exited with code 1",
            counted: true,
        };
        assert!(record(&mut job, &restart, &at(1)));
        assert!(
            !record(&mut job, &restart, &at(2)),
            "the same failed attempt restarts once"
        );
        let status = job.status.clone().unwrap();
        assert_eq!((status.attempt, status.restarts), (Some(2), 1));
        assert_eq!(status.phase, Some(TrainingPhase::Launching));
        assert!(status.epochs.is_empty() && status.progress.is_none());
        let message = status.message.unwrap();
        assert!(
            message.contains("attempt 1 failed: worker rank 1") && message.contains("restart 1 of 2"),
            "{message}"
        );
        assert_eq!(condition(&job, RUNNING), ("False".into(), "GangRestart".into()));

        record(&mut job, &Found::GangStopping { attempt: 1 }, &at(3));
        let disrupted = Found::GangRestart {
            failed: 2,
            message: "worker rank 0 was evicted",
            counted: false,
        };
        record(&mut job, &disrupted, &at(4));
        let status = job.status.clone().unwrap();
        assert_eq!((status.attempt, status.restarts), (Some(3), 1));
        assert!(status.message.unwrap().contains("not counted"));
    }
}
