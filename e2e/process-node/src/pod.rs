//! One pod on the node: its containers run as local processes, supervised like the kubelet
//! does (init containers in order, restart policy with back-off, readiness and liveness probes,
//! `activeDeadlineSeconds`, graceful termination), and its status is written back to the API
//! server.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Container, Pod, PodCondition, Secret},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use tokio::sync::{mpsc, watch};

/// Whether an event is routine or a problem.
#[derive(Clone, Copy, Debug)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Something a user should look at.
    Warning,
}

use crate::{
    config::Config,
    ips::IpPool,
    mapping::{ImageEntry, ImageMapping},
    node::HOST_IP,
    probe,
    spec::{self, ConfigError, Placement, Sources},
    status::{self, PodView, State},
};

/// What every pod worker shares.
pub struct Shared {
    /// The node's client.
    pub client: Client,
    /// The node's configuration.
    pub config: Config,
    /// Where in-cluster clients reach the API server.
    pub api_host: String,
    /// The API server's port.
    pub api_port: u16,
    /// Pod IPs.
    pub ips: Mutex<IpPool>,
    /// Process groups of the running containers, so a stopping node can end them all.
    pub groups: Mutex<BTreeSet<u32>>,
    /// Log files of the running containers.
    pub live: crate::logs::Live,
}

/// A running pod worker.
pub struct Worker {
    delete: watch::Sender<Option<Duration>>,
    /// Ends when the pod is terminal or deleted and its processes are gone.
    pub task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Starts running `pod`.
    pub fn start(shared: Arc<Shared>, pod: Pod) -> Worker {
        let (delete, deleted) = watch::channel(None);
        let task = tokio::spawn(run_pod(shared, pod, deleted));
        Worker { delete, task }
    }

    /// The pod is being deleted: stop its processes (SIGTERM, SIGKILL after `grace`), then
    /// remove the pod object.
    pub fn delete(&self, grace: Duration) {
        self.delete.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(grace);
            }
            first
        });
    }
}

/// Which container a message is about: init containers first, then the pod's containers.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Init(usize),
    Main(usize),
}

enum Update {
    Waiting(Slot, String, Option<String>),
    Started {
        slot: Slot,
        container_id: String,
        image_id: String,
        started_at: Timestamp,
    },
    Ended {
        slot: Slot,
        state: State,
        finished: bool,
    },
    Ready(Slot, bool),
}

/// A container ready to run: what to execute and where.
#[derive(Clone)]
struct Prepared {
    slot: Slot,
    spec: Container,
    argv: Vec<String>,
    program: Option<PathBuf>,
    env: Vec<(String, String)>,
    work_dir: PathBuf,
    log_dir: PathBuf,
    image_id: String,
    pod_ip: String,
}

/// The pod's identity, for API calls and events.
struct Identity {
    pods: Api<Pod>,
    name: String,
    uid: String,
    reference: k8s_openapi::api::core::v1::ObjectReference,
}

async fn run_pod(shared: Arc<Shared>, pod: Pod, mut deleted: watch::Receiver<Option<Duration>>) {
    let namespace = pod.namespace().unwrap_or_default();
    let identity = Identity {
        pods: Api::namespaced(shared.client.clone(), &namespace),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        reference: pod.object_ref(&()),
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_ip = shared
        .ips
        .lock()
        .map(|mut ips| ips.allocate(&identity.uid))
        .ok()
        .flatten();
    let mut view = PodView {
        failure: None,
        pod_ip: pod_ip.map(|ip| ip.to_string()),
        host_ip: HOST_IP.into(),
        start_time: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now),
        init_containers: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                status::Container::waiting(&c.name, c.image.as_deref().unwrap_or_default(), "PodInitializing")
            })
            .collect(),
        containers: spec
            .containers
            .iter()
            .map(|c| {
                let reason = if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                };
                status::Container::waiting(&c.name, c.image.as_deref().unwrap_or_default(), reason)
            })
            .collect(),
    };
    let mut reporter = Reporter {
        conditions: pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default(),
    };

    if view.pod_ip.is_none() {
        view.failure = Some((
            "OutOfAddresses".into(),
            "the process node has no free pod IP".into(),
        ));
    } else if let Err((slot, reason, message)) = check_images(&shared.config.images, &pod) {
        set_waiting(&mut view, slot, "ErrImagePull", Some(message.clone()));
        view.failure = Some((reason.into(), message.clone()));
        event(&shared, &identity, EventType::Warning, "Failed", message).await;
    }
    reporter.report(&identity, &view).await;

    let prepared = if view.failure.is_none() {
        prepare_until_ready(&shared, &pod, &identity, &mut view, &mut reporter, &mut deleted).await
    } else {
        None
    };

    let mut deleting = deleted.borrow().is_some();
    if let Some(prepared) = prepared {
        let (kill_tx, kill_rx) = watch::channel::<Option<Duration>>(None);
        let (updates_tx, mut updates) = mpsc::channel(64);
        let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let supervisor = tokio::spawn(supervise(
            shared.clone(),
            identity.reference.clone(),
            prepared,
            restart_policy,
            updates_tx,
            kill_rx,
        ));
        let deadline = spec.active_deadline_seconds.map(|seconds| {
            let elapsed = Timestamp::now().duration_since(view.start_time);
            let left = Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
                .saturating_sub(Duration::try_from(elapsed).unwrap_or_default());
            tokio::time::Instant::now() + left
        });
        let deadline_sleep = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline_sleep);
        let termination_grace = Duration::from_secs(
            u64::try_from(spec.termination_grace_period_seconds.unwrap_or(30)).unwrap_or(30),
        );
        loop {
            tokio::select! {
                update = updates.recv() => {
                    let Some(update) = update else { break };
                    apply(&mut view, update);
                    while let Ok(update) = updates.try_recv() {
                        apply(&mut view, update);
                    }
                    reporter.report(&identity, &view).await;
                }
                changed = deleted.changed(), if !deleting => {
                    if changed.is_ok() {
                        deleting = true;
                        let grace = deleted.borrow().unwrap_or(termination_grace);
                        event(&shared, &identity, EventType::Normal, "Killing", "Stopping the pod's processes".into()).await;
                        let _ = kill_tx.send(Some(grace));
                    }
                }
                () = &mut deadline_sleep, if view.failure.is_none() && !view.phase().is_terminal() => {
                    view.failure = Some((
                        "DeadlineExceeded".into(),
                        "Pod was active on the node longer than the specified deadline".into(),
                    ));
                    event(&shared, &identity, EventType::Normal, "DeadlineExceeded",
                        "Pod was active on the node longer than the specified deadline".into()).await;
                    let _ = kill_tx.send(Some(termination_grace));
                }
            }
        }
        let _ = supervisor.await;
        reporter.report(&identity, &view).await;
    }

    if let Ok(mut ips) = shared.ips.lock() {
        ips.release(&identity.uid);
    }
    if !deleting {
        // Terminal: the pod object stays (its owner or a user deletes it); wait for that.
        if deleted.changed().await.is_err() {
            return;
        }
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(identity.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match identity.pods.delete(&identity.name, &params).await {
        Ok(_) => tracing::info!(pod = identity.name, "deleted"),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => tracing::warn!(pod = identity.name, %error, "removing the pod failed"),
    }
}

/// Every container's image resolves in the mapping, or the first that does not with the reason.
fn check_images(path: &Path, pod: &Pod) -> Result<(), (Slot, &'static str, String)> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mapping =
        ImageMapping::load(path).map_err(|e| (Slot::Main(0), "ImageMappingError", e.to_string()))?;
    for (slot, container) in containers(&spec) {
        let image = container.image.clone().unwrap_or_default();
        if mapping.resolve(&image).is_none() {
            return Err((
                slot,
                "UnmappedImage",
                format!(
                    "image {image:?} of container {:?} has no mapping in {} (patterns: {}); \
                     add one or use a mapped image",
                    container.name,
                    path.display(),
                    mapping.patterns().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn containers(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<(Slot, Container)> {
    let init = spec.init_containers.iter().flatten().cloned().enumerate();
    let main = spec.containers.iter().cloned().enumerate();
    init.map(|(i, c)| (Slot::Init(i), c))
        .chain(main.map(|(i, c)| (Slot::Main(i), c)))
        .collect()
}

/// Resolves every container's argv and environment, retrying every 5 s while a Secret or
/// ConfigMap is missing (`CreateContainerConfigError`, as the kubelet does). `None`: the pod was
/// deleted meanwhile.
async fn prepare_until_ready(
    shared: &Shared,
    pod: &Pod,
    identity: &Identity,
    view: &mut PodView,
    reporter: &mut Reporter,
    deleted: &mut watch::Receiver<Option<Duration>>,
) -> Option<Vec<Prepared>> {
    let mut reported: Option<String> = None;
    loop {
        match prepare(shared, pod, view).await {
            Ok(prepared) => return Some(prepared),
            Err((slot, ConfigError(message))) => {
                if reported.as_ref() != Some(&message) {
                    set_waiting(view, slot, "CreateContainerConfigError", Some(message.clone()));
                    reporter.report(identity, view).await;
                    event(
                        shared,
                        identity,
                        EventType::Warning,
                        "Failed",
                        format!("Error: {message}"),
                    )
                    .await;
                    reported = Some(message);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = deleted.changed() => return None,
        }
    }
}

async fn prepare(shared: &Shared, pod: &Pod, view: &PodView) -> Result<Vec<Prepared>, (Slot, ConfigError)> {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.namespace().unwrap_or_default();
    let mapping =
        ImageMapping::load(&shared.config.images).map_err(|e| (Slot::Main(0), ConfigError(e.to_string())))?;
    let placement = Placement {
        pod_ip: view.pod_ip.clone().unwrap_or_default(),
        host_ip: HOST_IP.into(),
        node_name: shared.config.node_name.clone(),
        api_host: shared.api_host.clone(),
        api_port: shared.api_port,
    };
    let pod_dir = crate::logs::pod_dir(&namespace, &pod.name_any(), &pod.uid().unwrap_or_default());
    let mut prepared = Vec::new();
    for (slot, container) in containers(&spec) {
        let fail = |message: String| (slot, ConfigError(message));
        let image = container.image.clone().unwrap_or_default();
        let entry: ImageEntry = mapping
            .resolve(&image)
            .cloned()
            .ok_or_else(|| fail(format!("image {image:?} has no mapping")))?;
        let sources = fetch_sources(&shared.client, &namespace, &container)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let env = spec::environment(pod, &container, &entry, &placement, &sources).map_err(|e| (slot, e))?;
        let (argv, program) = match spec::argv(&container, &entry, &env) {
            Ok(argv) => {
                let path = env
                    .iter()
                    .find(|(k, _)| k == "PATH")
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var("PATH").ok())
                    .unwrap_or_default();
                let program = spec::executable(&argv[0], &path);
                (argv, program)
            }
            // Reported as the container's start error, like a runtime that cannot exec.
            Err(message) => (vec![message], None),
        };
        prepared.push(Prepared {
            slot,
            argv,
            program,
            env,
            work_dir: shared.config.work_dir.join(&pod_dir).join(&container.name),
            log_dir: shared.config.log_dir.join(&pod_dir).join(&container.name),
            image_id: match &entry.binary {
                Some(binary) => format!("process-node://{}", binary.display()),
                None => "process-node://host".into(),
            },
            pod_ip: placement.pod_ip.clone(),
            spec: container,
        });
    }
    Ok(prepared)
}

async fn fetch_sources(client: &Client, namespace: &str, container: &Container) -> kube::Result<Sources> {
    let references = spec::references(container);
    let mut sources = Sources::default();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    for name in references.config_maps {
        let data = config_maps
            .get_opt(&name)
            .await?
            .map(|c| c.data.unwrap_or_default());
        sources.config_maps.insert(name, data);
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    for name in references.secrets {
        let data = secrets
            .get_opt(&name)
            .await?
            .map(|s| decode(s.data.unwrap_or_default()));
        sources.secrets.insert(name, data);
    }
    Ok(sources)
}

fn decode(data: BTreeMap<String, ByteString>) -> BTreeMap<String, String> {
    data.into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

fn container_mut(view: &mut PodView, slot: Slot) -> Option<&mut status::Container> {
    match slot {
        Slot::Init(i) => view.init_containers.get_mut(i),
        Slot::Main(i) => view.containers.get_mut(i),
    }
}

fn set_waiting(view: &mut PodView, slot: Slot, reason: &str, message: Option<String>) {
    if let Some(container) = container_mut(view, slot) {
        container.state = State::Waiting {
            reason: reason.into(),
            message,
        };
    }
}

fn apply(view: &mut PodView, update: Update) {
    match update {
        Update::Waiting(slot, reason, message) => {
            if let Some(c) = container_mut(view, slot)
                && matches!(c.state, State::Terminated { .. })
            {
                c.last_state = Some(c.state.clone());
            }
            set_waiting(view, slot, &reason, message);
        }
        Update::Started {
            slot,
            container_id,
            image_id,
            started_at,
        } => {
            if let Some(c) = container_mut(view, slot) {
                if c.container_id.is_some() {
                    c.restart_count += 1;
                }
                if matches!(c.state, State::Terminated { .. }) {
                    c.last_state = Some(c.state.clone());
                }
                c.container_id = Some(container_id);
                c.image_id = image_id;
                c.state = State::Running { started_at };
            }
        }
        Update::Ended {
            slot,
            state,
            finished,
        } => {
            if let Some(c) = container_mut(view, slot) {
                c.state = state;
                c.ready = false;
                c.finished = finished;
            }
            if let Slot::Init(i) = slot
                && finished
                && view.initialized()
                && i + 1 == view.init_containers.len()
            {
                for c in &mut view.containers {
                    c.state = State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: None,
                    };
                }
            }
        }
        Update::Ready(slot, ready) => {
            if let Some(c) = container_mut(view, slot)
                && matches!(c.state, State::Running { .. })
            {
                c.ready = ready;
            }
        }
    }
}

/// Runs the init containers one after another, then the pod's containers side by side.
async fn supervise(
    shared: Arc<Shared>,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    prepared: Vec<Prepared>,
    restart_policy: String,
    updates: mpsc::Sender<Update>,
    kill: watch::Receiver<Option<Duration>>,
) {
    let (init, main): (Vec<_>, Vec<_>) = prepared
        .into_iter()
        .partition(|p| matches!(p.slot, Slot::Init(_)));
    // Init containers restart on failure unless the policy is Never.
    let init_policy = if restart_policy == "Never" {
        "Never"
    } else {
        "OnFailure"
    };
    for container in init {
        let succeeded = run_container(
            &shared,
            &reference,
            container,
            init_policy,
            &updates,
            kill.clone(),
        )
        .await;
        if !succeeded {
            return;
        }
    }
    let runs = main.into_iter().map(|container| {
        let (shared, reference, updates, kill) =
            (shared.clone(), reference.clone(), updates.clone(), kill.clone());
        let policy = restart_policy.clone();
        async move { run_container(&shared, &reference, container, &policy, &updates, kill).await }
    });
    futures::future::join_all(runs).await;
}

/// Runs one container under `policy` until it is finished or killed; true when it ended with
/// exit code 0.
async fn run_container(
    shared: &Shared,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    container: Prepared,
    policy: &str,
    updates: &mpsc::Sender<Update>,
    mut kill: watch::Receiver<Option<Duration>>,
) -> bool {
    let slot = container.slot;
    let mut restarts = 0u32;
    loop {
        if kill.borrow().is_some() {
            return false;
        }
        let started_at = Timestamp::now();
        let log_path = container.log_dir.join(format!("{restarts}.log"));
        let (state, killed) = match spawn(&container, &log_path) {
            Err(message) => {
                let state = State::Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(message.clone()),
                    started_at: None,
                    finished_at: Timestamp::now(),
                };
                publish(
                    shared,
                    reference,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                )
                .await;
                (state, false)
            }
            Ok(mut child) => {
                let pid = child.id().unwrap_or_default();
                if let Ok(mut groups) = shared.groups.lock() {
                    groups.insert(pid);
                }
                if let Ok(mut live) = shared.live.lock() {
                    live.insert(log_path.clone());
                }
                let _ = updates
                    .send(Update::Started {
                        slot,
                        container_id: format!("process://{}/{pid}", shared.config.node_name),
                        image_id: container.image_id.clone(),
                        started_at,
                    })
                    .await;
                publish(
                    shared,
                    reference,
                    EventType::Normal,
                    "Started",
                    format!("Started container {} (pid {pid})", container.spec.name),
                )
                .await;
                let (liveness_tx, mut liveness_failed) = mpsc::channel::<String>(1);
                let probes = start_probes(&container, updates.clone(), liveness_tx);
                let (exit, killed) = tokio::select! {
                    status = child.wait() => (status, false),
                    grace = async { kill.wait_for(|k| k.is_some()).await.ok().and_then(|k| *k) } => {
                        (terminate(&mut child, pid, grace.unwrap_or_default()).await, true)
                    }
                    Some(reason) = liveness_failed.recv() => {
                        publish(shared, reference, EventType::Normal, "Killing",
                            format!("Container {} failed liveness probe, will be restarted: {reason}", container.spec.name)).await;
                        (terminate(&mut child, pid, Duration::from_secs(30)).await, false)
                    }
                };
                for probe in probes {
                    probe.abort();
                }
                // Whatever the container left behind in its process group goes with it.
                signal_group(pid, libc::SIGKILL);
                if let Ok(mut groups) = shared.groups.lock() {
                    groups.remove(&pid);
                }
                if let Ok(mut live) = shared.live.lock() {
                    live.remove(&log_path);
                }
                let state = match exit {
                    Ok(status) => State::ended(status.code(), status.signal(), started_at, Timestamp::now()),
                    Err(error) => State::Terminated {
                        exit_code: 128,
                        signal: None,
                        reason: "Error".into(),
                        message: Some(format!("waiting for the process: {error}")),
                        started_at: Some(started_at),
                        finished_at: Timestamp::now(),
                    },
                };
                (state, killed)
            }
        };
        let succeeded = matches!(state, State::Terminated { exit_code: 0, .. });
        let finished = killed
            || match policy {
                "Never" => true,
                "OnFailure" => succeeded,
                _ => false,
            };
        let _ = updates
            .send(Update::Ended {
                slot,
                state,
                finished,
            })
            .await;
        if finished {
            return succeeded;
        }
        // The kubelet backs off 10 s doubling to 5 min; here 1 s doubling to 30 s, so tests
        // that kill a process see it come back quickly.
        let backoff = Duration::from_secs(1u64 << restarts.min(5)).min(Duration::from_secs(30));
        restarts += 1;
        let _ = updates
            .send(Update::Waiting(
                slot,
                "CrashLoopBackOff".into(),
                Some(format!(
                    "back-off {}s restarting failed container",
                    backoff.as_secs()
                )),
            ))
            .await;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = async { kill.wait_for(|k| k.is_some()).await.is_ok() } => {
                let _ = updates.send(Update::Ended {
                    slot,
                    state: State::ended(Some(137), None, started_at, Timestamp::now()),
                    finished: true,
                }).await;
                return false;
            }
        }
    }
}

fn spawn(container: &Prepared, log_path: &Path) -> Result<tokio::process::Child, String> {
    let Some(program) = &container.program else {
        return Err(match container.argv.first() {
            Some(first) if container.argv.len() == 1 && first.contains(' ') => first.clone(),
            Some(first) => format!("exec: {first:?}: executable file not found in $PATH"),
            None => "no command".into(),
        });
    };
    for dir in [&container.work_dir, &container.log_dir] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let stderr = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut command = tokio::process::Command::new(program);
    command
        .arg0(&container.argv[0])
        .args(&container.argv[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &container.work_dir)
        .envs(container.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&container.work_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child if the
    // node's thread that spawned it goes away, so a crashed node leaves no orphans behind.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| format!("exec {}: {e}", program.display()))
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// SIGTERM to the container's process group, SIGKILL after `grace`.
async fn terminate(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    signal_group(pid, libc::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            signal_group(pid, libc::SIGKILL);
            child.wait().await
        }
    }
}

/// Starts the readiness and liveness probe loops of a freshly started container.
fn start_probes(
    container: &Prepared,
    updates: mpsc::Sender<Update>,
    liveness: mpsc::Sender<String>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let slot = container.slot;
    let mut tasks = Vec::new();
    match container.spec.readiness_probe.clone() {
        None => {
            let updates = updates.clone();
            tasks.push(tokio::spawn(async move {
                let _ = updates.send(Update::Ready(slot, true)).await;
            }));
        }
        Some(probe) => {
            let container = container.clone();
            tasks.push(tokio::spawn(async move {
                probe_loop(&probe, &container, |passing, _| {
                    let updates = updates.clone();
                    async move {
                        let _ = updates.send(Update::Ready(slot, passing)).await;
                    }
                })
                .await;
            }));
        }
    }
    if let Some(probe) = container.spec.liveness_probe.clone() {
        let container = container.clone();
        tasks.push(tokio::spawn(async move {
            probe_loop(&probe, &container, |passing, reason| {
                let liveness = liveness.clone();
                async move {
                    if !passing {
                        let _ = liveness.send(reason).await;
                    }
                }
            })
            .await;
        }));
    }
    tasks
}

/// Probes forever, calling `on_change(passing, last_error)` each time the result flips after
/// its threshold (the first result counts as a flip).
async fn probe_loop<F, Fut>(probe: &k8s_openapi::api::core::v1::Probe, container: &Prepared, on_change: F)
where
    F: Fn(bool, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let timing = probe::Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut passing: Option<bool> = None;
    loop {
        match probe::run(probe, &container.spec, &container.pod_ip, &container.env).await {
            Ok(()) => {
                successes += 1;
                failures = 0;
                if successes >= timing.success_threshold && passing != Some(true) {
                    passing = Some(true);
                    on_change(true, String::new()).await;
                }
            }
            Err(reason) => {
                failures += 1;
                successes = 0;
                if failures >= timing.failure_threshold && passing != Some(false) {
                    passing = Some(false);
                    tracing::debug!(container = container.spec.name, %reason, "probe failing");
                    on_change(false, reason).await;
                }
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

/// Writes the pod's status, keeping condition transition times.
struct Reporter {
    conditions: Vec<PodCondition>,
}

impl Reporter {
    async fn report(&mut self, identity: &Identity, view: &PodView) {
        let status = view.to_status(&self.conditions, Timestamp::now());
        let patch = status::status_patch(&status);
        match identity
            .pods
            .patch_status(&identity.name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(pod) => {
                self.conditions = pod.status.and_then(|s| s.conditions).unwrap_or_default();
            }
            Err(error) => tracing::warn!(pod = identity.name, %error, "writing the pod status failed"),
        }
    }
}

async fn event(shared: &Shared, identity: &Identity, type_: EventType, reason: &str, note: String) {
    publish(shared, &identity.reference, type_, reason, note).await;
}

async fn publish(
    shared: &Shared,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    // A node may write core/v1 Events (the Node authorizer grants no events.k8s.io), so this
    // writes them the way the kubelet does rather than through kube-runtime's Recorder.
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
    let namespace = reference.namespace.clone().unwrap_or_default();
    let event = k8s_openapi::api::core::v1::Event {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("{}.", reference.name.clone().unwrap_or_default())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: reference.clone(),
        reason: Some(reason.into()),
        message: Some(note),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("process-node".into()),
            host: Some(shared.config.node_name.clone()),
        }),
        reporting_component: Some("process-node".into()),
        reporting_instance: Some(shared.config.node_name.clone()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(shared.client.clone(), &namespace);
    if let Err(error) = events.create(&Default::default(), &event).await {
        tracing::warn!(%error, "publishing an event failed");
    }
}
