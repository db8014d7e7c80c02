//! Test support for integration tests against real components: the local cluster (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, a real kubelet + containerd node,
//! kwok nodes) and its S3 store (SeaweedFS), started
//! on demand by `hack/cluster.sh up` once per test run and reused, and a fresh namespace per test.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

pub mod harness;
pub mod simulated;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use k8s_openapi::{
    api::core::v1::{Namespace, ServiceAccount},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};

/// What can go wrong setting up a test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `hack/cluster.sh up` failed (its output says why, e.g. "run make tools").
    #[error("starting the local cluster failed: {0}")]
    ClusterUp(String),
    /// The env file lacks a variable.
    #[error("{file}: no {variable}")]
    EnvFile {
        /// The file read.
        file: PathBuf,
        /// The variable missing.
        variable: &'static str,
    },
    /// Reading a file failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The cluster did not reach a state in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A Kubernetes call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A simulated run could not report like a trainer.
    #[error("simulated run: {0}")]
    Simulation(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ sits in the repository root")
}

/// The directory of the pinned tools (`hack/tools.sh`), built or not, without starting anything.
pub fn tools_bin() -> PathBuf {
    let output = Command::new("bash")
        .arg("-c")
        .arg(r#". hack/lib.sh && printf %s "$TOOLS_BIN""#)
        .current_dir(repo_root())
        .output()
        .expect("bash runs");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An example manifest from `examples/`, deserialized.
pub fn example<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = repo_root().join("examples").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `<prefix>-<pid>-<nanoseconds>`: a name no other test run uses (for object keys).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Connection details of the running local cluster, from its env file.
#[derive(Clone, Debug)]
pub struct LocalCluster {
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// S3 endpoint URL.
    pub s3_endpoint: String,
    /// S3 access key.
    pub s3_access_key: String,
    /// S3 secret key.
    pub s3_secret_key: String,
    /// The bucket created at start.
    pub s3_bucket: String,
    /// Directory of the pinned tools (kubectl, ...).
    pub tools_bin: PathBuf,
    /// Where the node's kubelet writes container logs
    /// (`<namespace>_<pod>_<uid>/<container>/<restart>.log`, CRI format).
    pub pod_logs: PathBuf,
    /// The node's IP on the pod network (its bridge): host processes that pods must reach
    /// (the operator's gRPC API, S3) listen here.
    pub node_ip: std::net::IpAddr,
    /// The real node's name.
    pub node_name: String,
    /// The node's containerd socket (for `ctr` and `crictl`).
    pub containerd: PathBuf,
    /// The API server's audit log: every request a ServiceAccount made (JSON lines).
    pub audit_log: PathBuf,
}

impl LocalCluster {
    /// The local cluster, started on first use in this process (`hack/cluster.sh up` is
    /// idempotent, so a cluster already running is reused) and shared by every test.
    pub fn shared() -> &'static LocalCluster {
        static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| LocalCluster::up().unwrap_or_else(|e| panic!("{e}")))
    }

    fn up() -> Result<LocalCluster> {
        let output = Command::new(repo_root().join("hack/cluster.sh"))
            .arg("up")
            .output()
            .map_err(|e| Error::ClusterUp(e.to_string()))?;
        if !output.status.success() {
            return Err(Error::ClusterUp(
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ));
        }
        let env_file = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        LocalCluster::from_env_file(&env_file)
    }

    /// Installs Kueue on the cluster (`hack/cluster.sh kueue`, idempotent) once in this
    /// process, for the tests of queued runs; an operator started afterwards uses it.
    pub fn with_kueue(&self) -> &Self {
        static KUEUE: OnceLock<()> = OnceLock::new();
        KUEUE.get_or_init(|| {
            let output = Command::new(repo_root().join("hack/cluster.sh"))
                .arg("kueue")
                .output()
                .unwrap_or_else(|e| panic!("hack/cluster.sh kueue: {e}"));
            assert!(
                output.status.success(),
                "hack/cluster.sh kueue failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        });
        self
    }

    /// `kubectl apply --server-side` of `yaml` (panics with kubectl's error).
    pub fn apply(&self, yaml: &str) {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(["apply", "--server-side", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        child
            .stdin
            .take()
            .expect("a piped stdin")
            .write_all(yaml.as_bytes())
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        assert!(
            output.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A ClusterQueue `name` of `gpus` GPUs (and room for any CPU and memory) on the
    /// `simulated-gpu` flavor for namespace `namespace` only, and its LocalQueue `queue` there
    /// (Kueue must be installed: [`LocalCluster::with_kueue`]).
    pub fn gpu_queue(&self, name: &str, namespace: &str, queue: &str, gpus: u32) {
        self.apply(&format!(
            "apiVersion: kueue.x-k8s.io/v1beta2\nkind: ClusterQueue\nmetadata: {{name: {name}}}\nspec:\n  \
             namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {namespace}}}}}\n  resourceGroups:\n  \
             - coveredResources: [cpu, memory, nvidia.com/gpu]\n    flavors:\n    - name: simulated-gpu\n      \
             resources:\n      - {{name: cpu, nominalQuota: \"100000\"}}\n      - {{name: memory, nominalQuota: 1Pi}}\n      \
             - {{name: nvidia.com/gpu, nominalQuota: \"{gpus}\"}}\n---\n\
             apiVersion: kueue.x-k8s.io/v1beta2\nkind: LocalQueue\nmetadata: {{name: {queue}, namespace: {namespace}}}\n\
             spec: {{clusterQueue: {name}}}\n"
        ));
    }

    /// Reads the `export NAME=value` lines of `hack/cluster.sh`'s env file.
    pub fn from_env_file(path: &Path) -> Result<LocalCluster> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
        let vars: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .collect();
        let get = |variable: &'static str| {
            vars.get(variable)
                .map(|v| v.to_string())
                .ok_or_else(|| Error::EnvFile {
                    file: path.to_path_buf(),
                    variable,
                })
        };
        Ok(LocalCluster {
            kubeconfig: get("KUBECONFIG")?.into(),
            s3_endpoint: get("S3_ENDPOINT")?,
            s3_access_key: get("AWS_ACCESS_KEY_ID")?,
            s3_secret_key: get("AWS_SECRET_ACCESS_KEY")?,
            s3_bucket: get("S3_BUCKET")?,
            tools_bin: get("MINIAUTOML_TOOLS_BIN")?.into(),
            pod_logs: get("MINIAUTOML_POD_LOGS")?.into(),
            node_ip: get("MINIAUTOML_NODE_IP")?
                .parse()
                .map_err(|e| Error::Kubeconfig(format!("MINIAUTOML_NODE_IP: {e}")))?,
            node_name: get("MINIAUTOML_NODE_NAME")?,
            containerd: get("CONTAINERD_ADDRESS")?.into(),
            audit_log: get("MINIAUTOML_AUDIT_LOG")?.into(),
        })
    }

    /// A client with the admin kubeconfig.
    pub async fn client(&self) -> Result<Client> {
        let kubeconfig =
            Kubeconfig::read_from(&self.kubeconfig).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(Client::try_from(config)?)
    }

    /// An S3 client for the local S3 server with the given credentials.
    pub fn s3_with(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.s3_endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "local-cluster",
            ))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// An S3 client with the cluster's generated credentials.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        self.s3_with(&self.s3_access_key, &self.s3_secret_key)
    }

    /// The keys under `prefix` of the test bucket once none are left, or what is still there
    /// after `within` (polled every second: the operator sweeps deleted resources' prefixes
    /// every 15 s).
    pub async fn keys_left(&self, prefix: &str, within: std::time::Duration) -> Vec<String> {
        let s3 = self.s3();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let listed = s3
                .list_objects_v2()
                .bucket(&self.s3_bucket)
                .prefix(prefix)
                .send()
                .await
                .unwrap_or_else(|e| panic!("listing {prefix}: {e:?}"));
            let keys: Vec<String> = listed
                .contents()
                .iter()
                .filter_map(|o| o.key().map(String::from))
                .collect();
            if keys.is_empty() || tokio::time::Instant::now() >= deadline {
                return keys;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// An address on the node IP with a port nothing listens on now: where a host process that
    /// pods call (the operator's gRPC API) listens.
    pub fn free_addr(&self) -> std::net::SocketAddr {
        unused_port(self.node_ip)
    }

    /// `crictl` against the node's containerd.
    pub fn crictl(&self) -> Command {
        let mut command = Command::new(self.tools_bin.join("crictl"));
        command.arg(format!("--runtime-endpoint=unix://{}", self.containerd.display()));
        command
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.tools_bin.join("kubectl"));
        command.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        command
    }
}

/// The operator's log for `namespace`'s tests: `$TMPDIR/miniautoml-operator-<namespace>.log`.
pub fn operator_log_path(namespace: &str) -> PathBuf {
    std::env::temp_dir().join(format!("miniautoml-operator-{namespace}.log"))
}

fn operator_log(namespace: &str) -> std::process::Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(operator_log_path(namespace))
        .map(std::process::Stdio::from)
        .unwrap_or_else(|_| std::process::Stdio::null())
}

/// An operator binary running against the local cluster and its S3 server, scoped to one
/// namespace (`--watch-namespace` and `--grpc-namespace`); killed when dropped.
pub struct OperatorProcess {
    child: std::process::Child,
    /// Where its gRPC API listens.
    pub grpc_addr: std::net::SocketAddr,
    /// Where its admin server (`/metrics`, `/readyz`) listens.
    pub admin_addr: std::net::SocketAddr,
    /// Where its original contract's listener is (unless the test's flags named another).
    pub original_contract_addr: std::net::SocketAddr,
}

/// A loopback address with a port nothing listens on now (bound, noted and freed).
pub fn free_addr() -> std::net::SocketAddr {
    unused_port(std::net::Ipv4Addr::LOCALHOST.into())
}

/// The ports [`unused_port`] hands out: below Linux's ephemeral range (32768–60999), so no
/// outgoing connection (the kubelet's probes, our own clients) can take one between the test
/// noting it and the process it names binding it — as happened with port 0's ephemeral ports.
const TEST_PORTS: std::ops::Range<u16> = 20000..32000;

/// An address on `ip` with a port from [`TEST_PORTS`] that nothing holds now (bound, noted and
/// freed). Each call starts at a point drawn from the process id and the clock, so parallel
/// tests and test binaries rarely try the same port; a port found taken is skipped.
fn unused_port(ip: std::net::IpAddr) -> std::net::SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let start = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let addr = std::net::SocketAddr::new(ip, TEST_PORTS.start + offset as u16);
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port on {ip} in {TEST_PORTS:?}")
}

impl OperatorProcess {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_miniautoml-operator")`) for `namespace`,
    /// with the cluster's S3 credentials but `secret_key` as the secret (to test refused ones).
    pub fn start(binary: &str, cluster: &LocalCluster, namespace: &str, secret_key: &str) -> OperatorProcess {
        OperatorProcess::start_at(binary, cluster, namespace, secret_key, cluster.free_addr(), &[])
    }

    /// As [`OperatorProcess::start`], serving gRPC on `grpc_addr` (on the node IP, so training
    /// pods reach it; a restarted operator keeps its address, as a Service would), with `extra`
    /// flags.
    pub fn start_at(
        binary: &str,
        cluster: &LocalCluster,
        namespace: &str,
        secret_key: &str,
        grpc_addr: std::net::SocketAddr,
        extra: &[&str],
    ) -> OperatorProcess {
        let kubeconfig = &cluster.kubeconfig;
        OperatorProcess::start_as(
            binary, cluster, namespace, secret_key, grpc_addr, extra, kubeconfig,
        )
    }

    /// As [`OperatorProcess::start_at`], talking to the API server as `kubeconfig` says (a
    /// ServiceAccount's, whose requests the audit log records).
    pub fn start_as(
        binary: &str,
        cluster: &LocalCluster,
        namespace: &str,
        secret_key: &str,
        grpc_addr: std::net::SocketAddr,
        extra: &[&str],
        kubeconfig: &Path,
    ) -> OperatorProcess {
        OperatorProcess::start_with_env(
            binary,
            cluster,
            namespace,
            secret_key,
            grpc_addr,
            extra,
            kubeconfig,
            &[],
        )
    }

    /// As [`OperatorProcess::start_as`], with `env` added to its environment (e.g. the downward
    /// API's POD_NAME, to play a replica in a pod).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_env(
        binary: &str,
        cluster: &LocalCluster,
        namespace: &str,
        secret_key: &str,
        grpc_addr: std::net::SocketAddr,
        extra: &[&str],
        kubeconfig: &Path,
        env: &[(&str, &str)],
    ) -> OperatorProcess {
        let admin_addr = free_addr();
        // Original-contract runs report to a port of their own, also on the node IP (each test's
        // operator its own, unless the test names one).
        let original_contract_addr = cluster.free_addr();
        let original_contract = (!extra
            .iter()
            .any(|flag| flag.starts_with("--original-contract-addr")))
        .then(|| format!("--original-contract-addr={original_contract_addr}"));
        // The console on a port of its own too, unless the test names one.
        let console = (!extra.iter().any(|flag| flag.starts_with("--console-addr")))
            .then(|| "--console-addr=127.0.0.1:0".to_string());
        let child = Command::new(binary)
            .args([
                format!("--admin-addr={admin_addr}"),
                format!("--grpc-addr={grpc_addr}"),
                format!("--watch-namespace={namespace}"),
                format!("--grpc-namespace={namespace}"),
                format!("--s3-endpoint={}", cluster.s3_endpoint),
                format!("--bucket={}", cluster.s3_bucket),
                // Training pods reach it over the pod network, at the node IP.
                format!("--metadata-store-address={grpc_addr}"),
            ])
            .args(original_contract)
            .args(console)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            // The tests' clients call without tokens; a test of the reviews passes
            // --grpc-auth=kubernetes, which wins over the environment.
            .env("MINIAUTOML_GRPC_AUTH", "none")
            .env("AWS_ACCESS_KEY_ID", &cluster.s3_access_key)
            .env("AWS_SECRET_ACCESS_KEY", secret_key)
            .envs(env.iter().copied())
            // Its tracing output goes to stdout, panics and start-up errors to stderr.
            .stdout(operator_log(namespace))
            .stderr(operator_log(namespace))
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}"));
        OperatorProcess {
            child,
            grpc_addr,
            admin_addr,
            original_contract_addr,
        }
    }

    /// A channel to its gRPC API, once the port opens (tried for 20 s).
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc_addr))
            .expect("a socket address is a URI");
        for _ in 0..200 {
            if let Ok(channel) = endpoint.connect().await {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the operator's gRPC port {} did not open", self.grpc_addr);
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Applies every CRD in `crds/` (server-side, taking ownership) and waits until each is
/// established.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let dir = repo_root().join("crds");
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::Io(dir.clone(), e))?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(path.clone(), e))?;
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&text).map_err(|e| Error::Io(path.clone(), std::io::Error::other(e)))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        let params = PatchParams::apply("miniautoml-tests").force();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(WAIT, established)
            .await
            .map_err(|_| Error::Timeout(format!("CRD {name} to be established")))?
            .map_err(|e| Error::Timeout(format!("CRD {name}: {e}")))?;
    }
    Ok(())
}

/// How long a test waits for the cluster to reach a state before failing.
pub const WAIT: Duration = Duration::from_secs(60);

/// How soon an object written under a deleted resource's cleared prefixes is gone: the
/// operator sweeps every 15 s.
pub const SWEPT_WITHIN: Duration = Duration::from_secs(45);

/// A namespace of its own for one test, deleted when dropped.
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    cluster: LocalCluster,
}

impl TestNamespace {
    /// Creates a namespace named `<prefix>-<random>` in `cluster`, once its default
    /// ServiceAccount exists (pods are admitted only then).
    pub async fn new(cluster: &LocalCluster, client: &Client, prefix: &str) -> Result<TestNamespace> {
        let name = format!("{prefix}-{:08x}", rand_u32());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        let created = TestNamespace {
            name,
            cluster: cluster.clone(),
        };
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &created.name);
        let exists = await_condition(accounts, "default", |account: Option<&ServiceAccount>| {
            account.is_some()
        });
        tokio::time::timeout(WAIT, exists)
            .await
            .map_err(|_| Error::Timeout(format!("ServiceAccount default in {}", created.name)))?
            .map_err(|e| Error::Timeout(e.to_string()))?;
        Ok(created)
    }

    /// Takes the finalizers off the namespace's MiniAutoML objects. The test's operator, which
    /// would have run them, has been stopped by now: left on, they would keep the namespace
    /// Terminating, and its runs (whose ids another operator watching every namespace gives
    /// too) in that operator's caches.
    fn strip_finalizers(&self) -> std::result::Result<(), String> {
        const KINDS: &str =
            "trainingjobs.miniautoml.io,modeldeployments.miniautoml.io,datasets.miniautoml.io";
        let kubectl = |args: &[&str]| {
            let output = self
                .cluster
                .kubectl()
                .args(args)
                .args(["-n", &self.name])
                .output()
                .map_err(|e| e.to_string())?;
            if output.status.success() {
                Ok(output.stdout)
            } else {
                Err(String::from_utf8_lossy(&output.stderr).into_owned())
            }
        };
        let listed = kubectl(&["get", KINDS, "-o", "json"])?;
        let list: serde_json::Value = serde_json::from_slice(&listed).map_err(|e| e.to_string())?;
        for item in list["items"].as_array().into_iter().flatten() {
            let finalized = item["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            let (Some(kind), Some(name)) = (item["kind"].as_str(), item["metadata"]["name"].as_str()) else {
                continue;
            };
            if finalized {
                let object = format!("{}.miniautoml.io/{name}", kind.to_lowercase());
                kubectl(&[
                    "patch",
                    &object,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ])?;
            }
        }
        Ok(())
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and a kube Client cannot be driven from here (its connection task
        // lives on the test's runtime, which this call blocks), so ask kubectl.
        if let Err(error) = self.strip_finalizers() {
            eprintln!("cleanup: finalizers in {}: {error}", self.name);
        }
        let deleted = self
            .cluster
            .kubectl()
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
        match deleted {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "cleanup: deleting namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("cleanup: deleting namespace {}: {error}", self.name),
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() as u32
}

/// A plain HTTP/1.1 GET of `path` at `addr` (an operator's admin port): the whole response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// A throwaway CA for tests of TLS: it signs server certificates written as the files of a
/// mounted `kubernetes.io/tls` Secret.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("a CA key");
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("a self-signed CA"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes `tls.crt` and `tls.key` of a fresh key and a certificate for `names` (DNS names or
    /// IP addresses) into `dir`, and `ca.crt` when `with_ca`; returns the certificate's PEM.
    pub fn write_server_files(&self, dir: &Path, names: &[&str], with_ca: bool) -> String {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).expect("server certificate parameters");
        let key = rcgen::KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate")
            .pem();
        std::fs::create_dir_all(dir).expect("the TLS directory");
        // As the kubelet updates a mounted Secret: each file replaced whole.
        let write = |name: &str, contents: &str| {
            let staged = dir.join(format!(".{name}.new"));
            std::fs::write(&staged, contents).expect("a TLS file");
            std::fs::rename(&staged, dir.join(name)).expect("a TLS file");
        };
        write("tls.key", &key.serialize_pem());
        write("tls.crt", &cert);
        if with_ca {
            write("ca.crt", &self.pem());
        }
        cert
    }
}
