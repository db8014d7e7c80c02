//! Pure pod status: what the node knows about a pod's processes, turned into the Kubernetes
//! `PodStatus` the kubelet would write (phase, conditions, container states, IPs).

use k8s_openapi::{
    api::core::v1::{
        ContainerState as KubeState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

/// The pod phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, not all containers started.
    Pending,
    /// Bound and at least one container running or restarting.
    Running,
    /// Every container ended with exit code 0 and will not restart.
    Succeeded,
    /// Every container ended and at least one failed, or the pod was failed by the node.
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Whether the phase is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// One container's state.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Not running yet (or between restarts).
    Waiting {
        /// E.g. `ContainerCreating`, `CreateContainerConfigError`, `CrashLoopBackOff`.
        reason: String,
        /// Details.
        message: Option<String>,
    },
    /// Its process runs.
    Running {
        /// When the process started.
        started_at: Timestamp,
    },
    /// Its process ended.
    Terminated {
        /// Exit code (128 + signal for a process killed by a signal).
        exit_code: i32,
        /// The signal that killed it.
        signal: Option<i32>,
        /// `Completed`, `Error`, `DeadlineExceeded`, ...
        reason: String,
        /// Details.
        message: Option<String>,
        /// When the process started.
        started_at: Option<Timestamp>,
        /// When it ended.
        finished_at: Timestamp,
    },
}

impl State {
    /// The state of a process that ended with `exit_code` (or by `signal`).
    pub fn ended(
        exit_code: Option<i32>,
        signal: Option<i32>,
        started_at: Timestamp,
        now: Timestamp,
    ) -> State {
        let exit_code = exit_code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
        State::Terminated {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some(started_at),
            finished_at: now,
        }
    }

    fn to_kube(&self) -> KubeState {
        match self {
            State::Waiting { reason, message } => KubeState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            State::Running { started_at } => KubeState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..Default::default()
            },
            State::Terminated {
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at,
            } => KubeState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(reason.clone()),
                    message: message.clone(),
                    started_at: started_at.map(Time),
                    finished_at: Some(Time(*finished_at)),
                    container_id: None,
                }),
                ..Default::default()
            },
        }
    }
}

/// What the node knows about one container.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    /// Its name in the pod spec.
    pub name: String,
    /// The image as written in the pod spec.
    pub image: String,
    /// What stands for the image (`process-node://<binary>`).
    pub image_id: String,
    /// `process://<node>/<pid>` of the current or last process.
    pub container_id: Option<String>,
    /// Current state.
    pub state: State,
    /// The state before the last restart.
    pub last_state: Option<State>,
    /// Its readiness probe passes (or it has none and runs).
    pub ready: bool,
    /// How often it was restarted.
    pub restart_count: i32,
    /// It ended and will not run again.
    pub finished: bool,
}

impl Container {
    /// A container not started yet.
    pub fn waiting(name: &str, image: &str, reason: &str) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            container_id: None,
            state: State::Waiting {
                reason: reason.into(),
                message: None,
            },
            last_state: None,
            ready: false,
            restart_count: 0,
            finished: false,
        }
    }

    fn exit_code(&self) -> Option<i32> {
        match &self.state {
            State::Terminated { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }

    fn to_kube(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: self.container_id.clone(),
            state: Some(self.state.to_kube()),
            last_state: Some(self.last_state.as_ref().map(State::to_kube).unwrap_or_default()),
            ready: self.ready,
            restart_count: self.restart_count,
            started: Some(matches!(self.state, State::Running { .. })),
            ..Default::default()
        }
    }
}

/// What the node knows about one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    /// Set by the node when it fails the pod as a whole (unmapped image, deadline).
    pub failure: Option<(String, String)>,
    /// The pod's IP.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: String,
    /// When the node accepted the pod.
    pub start_time: Timestamp,
    /// Init containers, run in order before the others.
    pub init_containers: Vec<Container>,
    /// The pod's containers.
    pub containers: Vec<Container>,
}

impl PodView {
    /// Every init container finished with exit code 0.
    pub fn initialized(&self) -> bool {
        self.init_containers
            .iter()
            .all(|c| c.finished && c.exit_code() == Some(0))
    }

    /// The phase the kubelet would report.
    pub fn phase(&self) -> Phase {
        if self.failure.is_some() {
            return Phase::Failed;
        }
        if self
            .init_containers
            .iter()
            .any(|c| c.finished && c.exit_code() != Some(0))
        {
            return Phase::Failed;
        }
        if !self.initialized() {
            return Phase::Pending;
        }
        if !self.containers.is_empty() && self.containers.iter().all(|c| c.finished) {
            return if self.containers.iter().all(|c| c.exit_code() == Some(0)) {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
        }
        let started = |c: &Container| {
            c.restart_count > 0 || !matches!(c.state, State::Waiting { .. }) || c.container_id.is_some()
        };
        if self.containers.iter().any(started) {
            Phase::Running
        } else {
            Phase::Pending
        }
    }

    /// The `PodStatus` to write; conditions keep their transition time when unchanged in
    /// `previous`.
    pub fn to_status(&self, previous: &[PodCondition], now: Timestamp) -> PodStatus {
        let phase = self.phase();
        let ready = !phase.is_terminal() && self.containers.iter().all(|c| c.ready);
        let condition = |type_: &str, value: bool, reason: Option<&str>| {
            let status = if value { "True" } else { "False" }.to_string();
            let unchanged = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone());
            PodCondition {
                type_: type_.into(),
                status,
                reason: reason.map(Into::into),
                last_transition_time: Some(unchanged.unwrap_or(Time(now))),
                ..Default::default()
            }
        };
        let not_ready_reason = match phase {
            Phase::Succeeded | Phase::Failed => Some("PodCompleted"),
            _ if !ready => Some("ContainersNotReady"),
            _ => None,
        };
        let mut conditions = vec![
            condition(
                "PodReadyToStartContainers",
                self.pod_ip.is_some() && !phase.is_terminal(),
                None,
            ),
            condition(
                "Initialized",
                self.initialized(),
                (!self.initialized()).then_some("ContainersNotInitialized"),
            ),
            condition("ContainersReady", ready, not_ready_reason),
            condition("Ready", ready, not_ready_reason),
        ];
        if let Some(scheduled) = previous.iter().find(|c| c.type_ == "PodScheduled") {
            conditions.insert(0, scheduled.clone());
        }
        let (reason, message) = match &self.failure {
            Some((reason, message)) => (Some(reason.clone()), Some(message.clone())),
            None => (None, None),
        };
        PodStatus {
            phase: Some(phase.as_str().into()),
            reason,
            message,
            conditions: Some(conditions),
            host_ip: Some(self.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.host_ip.clone(),
            }]),
            pod_ip: self.pod_ip.clone(),
            pod_ips: self.pod_ip.as_ref().map(|ip| vec![PodIP { ip: ip.clone() }]),
            start_time: Some(Time(self.start_time)),
            init_container_statuses: (!self.init_containers.is_empty())
                .then(|| self.init_containers.iter().map(Container::to_kube).collect()),
            container_statuses: Some(self.containers.iter().map(Container::to_kube).collect()),
            ..Default::default()
        }
    }
}

/// The strategic merge patch that sets `status`: container states say `null` for the kinds
/// they are not, so a container moving from waiting to running does not keep both.
pub fn status_patch(status: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    for list in ["containerStatuses", "initContainerStatuses"] {
        let Some(containers) = value.get_mut(list).and_then(|v| v.as_array_mut()) else {
            continue;
        };
        for container in containers {
            for field in ["state", "lastState"] {
                if let Some(state) = container.get_mut(field).and_then(|v| v.as_object_mut()) {
                    for kind in ["waiting", "running", "terminated"] {
                        state.entry(kind).or_insert(serde_json::Value::Null);
                    }
                }
            }
        }
    }
    for field in ["reason", "message"] {
        if let Some(object) = value.as_object_mut() {
            object.entry(field).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn view(containers: Vec<Container>) -> PodView {
        PodView {
            failure: None,
            pod_ip: Some("127.0.0.2".into()),
            host_ip: "127.0.0.1".into(),
            start_time: now(),
            init_containers: vec![],
            containers,
        }
    }

    fn ended(code: i32, finished: bool) -> Container {
        Container {
            state: State::ended(Some(code), None, now(), now()),
            finished,
            container_id: Some("process://n/1".into()),
            ..Container::waiting("c", "img", "ContainerCreating")
        }
    }

    #[test]
    fn phases_follow_the_containers() {
        assert_eq!(
            view(vec![Container::waiting("c", "i", "ContainerCreating")]).phase(),
            Phase::Pending
        );
        let running = Container {
            state: State::Running { started_at: now() },
            container_id: Some("process://n/1".into()),
            ..Container::waiting("c", "i", "")
        };
        assert_eq!(view(vec![running.clone()]).phase(), Phase::Running);
        assert_eq!(view(vec![ended(0, true)]).phase(), Phase::Succeeded);
        assert_eq!(view(vec![ended(0, true), ended(3, true)]).phase(), Phase::Failed);
        assert_eq!(view(vec![ended(0, true), running]).phase(), Phase::Running);
        assert_eq!(view(vec![ended(1, false)]).phase(), Phase::Running, "restarting");
        let mut failed = view(vec![Container::waiting("c", "i", "ErrImagePull")]);
        failed.failure = Some(("UnmappedImage".into(), "no mapping".into()));
        assert_eq!(failed.phase(), Phase::Failed);
        let mut init = view(vec![Container::waiting("c", "i", "PodInitializing")]);
        init.init_containers = vec![Container::waiting("init", "i", "ContainerCreating")];
        assert_eq!(init.phase(), Phase::Pending);
        init.init_containers = vec![ended(2, true)];
        assert_eq!(init.phase(), Phase::Failed);
    }

    #[test]
    fn status_reports_exit_codes_and_keeps_transition_times() {
        let earlier = Timestamp::from_second(1_700_000_000).unwrap();
        let previous = vec![
            PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(Time(earlier)),
                ..Default::default()
            },
            PodCondition {
                type_: "Initialized".into(),
                status: "True".into(),
                last_transition_time: Some(Time(earlier)),
                ..Default::default()
            },
        ];
        let status = view(vec![ended(3, true)]).to_status(&previous, now());
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let terminated = status.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(
            (terminated.exit_code, terminated.reason.as_deref()),
            (3, Some("Error"))
        );
        let conditions = status.conditions.unwrap();
        let find = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(find("PodScheduled").last_transition_time, Some(Time(earlier)));
        assert_eq!(find("Initialized").last_transition_time, Some(Time(earlier)));
        assert_eq!(find("Ready").status, "False");
        assert_eq!(find("Ready").reason.as_deref(), Some("PodCompleted"));
        assert_eq!(find("Ready").last_transition_time, Some(Time(now())));
        assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.2"));
    }

    #[test]
    fn the_patch_clears_the_state_kinds_a_container_left() {
        let status = view(vec![ended(0, true)]).to_status(&[], now());
        let patch = status_patch(&status);
        let state = &patch["status"]["containerStatuses"][0]["state"];
        assert!(state["waiting"].is_null() && state["running"].is_null());
        assert_eq!(state["terminated"]["exitCode"], 0);
        assert!(patch["status"].get("reason").is_some_and(|r| r.is_null()));
    }

    #[test]
    fn a_signal_reads_as_128_plus_its_number() {
        let State::Terminated { exit_code, .. } = State::ended(None, Some(9), now(), now()) else {
            panic!()
        };
        assert_eq!(exit_code, 137);
    }
}
