//! Pure builders of what a TrainingJob runs: the per-run Secret, the batch/v1 Job and, for
//! several workers, the headless Service that gives rank 0 a stable name.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{
            Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
        },
        core::v1::{
            Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec,
            ResourceRequirements, Secret, SecurityContext, Service, ServiceSpec, Toleration,
        },
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{Resource, ResourceExt, api::ObjectMeta};
use miniautoml_api::{
    Dataset, SnapshotStatus, TrainingJob,
    labels::{RUN_ID_LABEL, TRAINING_JOB_LABEL},
    training_job::Contract,
};
use miniautoml_data::{Grants, layout};

use crate::{
    algorithms,
    config::Credentials,
    context::TrainingSettings,
    controller::children::{
        ACCESS_KEY, SECRET_KEY, cpu_and_memory, credential_entries, credential_env, env, from_secret,
        pull_secrets, requests_and_limits, restricted_security_context, scratch_mount, scratch_volume,
    },
    names::{RUN_TOKEN_KEY as TOKEN_KEY, run_secret as secret_name},
};

/// Annotation on a run's Job: the dataset snapshot it trains on.
pub const VERSION_HASH_ANNOTATION: &str = "miniautoml.io/dataset-version-hash";
/// Annotation on a run's Job: which attempt of the run it is (1 the first; a gang restart
/// starts the next).
pub const ATTEMPT_ANNOTATION: &str = "miniautoml.io/attempt";
/// The port rank 0 listens on for the other ranks.
pub const MASTER_PORT: i32 = 23456;
/// The container's name in the workers' pods.
pub const CONTAINER: &str = "trainer";

/// Where the run gets its data and reports: the resolved inputs of [`build_job`].
#[derive(Clone, Debug, PartialEq)]
pub struct RunInputs {
    /// Numeric run id (`JOB_ID`).
    pub run_id: u64,
    /// The training image.
    pub image: String,
    /// `host:port` of the operator's gRPC server, as the pods reach it (`https://host:port`
    /// when it serves TLS).
    pub metadata_store: String,
    /// The CA the trainer trusts for it when it serves TLS (PEM): `METADATA_STORE_CA`.
    pub metadata_store_ca: Option<String>,
    /// How the trainer reports: with the run's token (`MINIAUTOML_RUN_TOKEN`), or as the
    /// original images do (no token, plain text to the original-contract listener, from a
    /// working directory it may write).
    pub contract: Contract,
    /// Dataset id for the contract (its numeric id when it has one, else its name).
    pub dataset_id: String,
    /// The snapshot's version hash.
    pub version_hash: String,
    /// Bucket of data and models.
    pub bucket: String,
    /// The snapshot's folder.
    pub data_path: String,
    /// S3 endpoint URL given to the trainer.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// Image pull Secrets of the run's pods.
    pub image_pull_secrets: Vec<String>,
    /// Pull policy of the training image (`None`: Kubernetes' default).
    pub image_pull_policy: Option<String>,
    /// The trainer container's security context.
    pub security_context: SecurityContext,
    /// Image of the start step of a multi-worker run's pods (the operator's).
    pub launcher_image: String,
}

/// What a run is launched with: its id and image, the snapshot, and the operator's settings.
pub fn run_inputs(
    job: &TrainingJob,
    run_id: u64,
    image: &str,
    (dataset, snapshot): (&Dataset, &SnapshotStatus),
    settings: &TrainingSettings,
) -> RunInputs {
    let contract = algorithms::contract(job, &settings.algorithm_contracts);
    RunInputs {
        run_id,
        image: image.to_string(),
        metadata_store: match contract {
            Contract::MiniAutoML => settings.metadata_store_address.clone(),
            // Validation refuses an original-contract run while the listener is off.
            Contract::Original => settings.original_contract_address.clone().unwrap_or_default(),
        },
        metadata_store_ca: settings
            .metadata_store_ca
            .clone()
            .filter(|_| contract == Contract::MiniAutoML),
        contract,
        dataset_id: dataset
            .dataset_id()
            .map(|id| id.to_string())
            .unwrap_or_else(|| dataset.name_any()),
        version_hash: snapshot.version_hash.clone(),
        bucket: settings.bucket.clone(),
        data_path: snapshot
            .root
            .clone()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string(),
        s3_endpoint: settings.pods.s3_endpoint.clone(),
        s3_region: settings.pods.s3_region.clone(),
        image_pull_secrets: settings.pods.image_pull_secrets.clone(),
        // A spec naming its own image keeps Kubernetes' default policy.
        image_pull_policy: configured_algorithm(job)
            .and_then(|algorithm| settings.algorithm_pull_policies.get(algorithm).cloned()),
        // Only an administrator's configuration loosens the restricted default, never a spec.
        security_context: configured_algorithm(job)
            .and_then(|algorithm| settings.algorithm_security_contexts.get(algorithm).cloned())
            .unwrap_or_else(restricted_security_context),
        launcher_image: settings.pods.launcher_image.clone(),
    }
}

/// The algorithm whose configured image the run uses (`None` for a spec's own image).
fn configured_algorithm(job: &TrainingJob) -> Option<&String> {
    match (&job.spec.image, &job.spec.algorithm) {
        (None, Some(algorithm)) => Some(algorithm),
        _ => None,
    }
}

/// Name of the run's Job (and of its headless Service).
pub fn job_name(job: &TrainingJob) -> String {
    crate::names::derived(&job.name_any(), "train")
}

fn labels(job: &TrainingJob, run_id: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TRAINING_JOB_LABEL.to_string(), job.name_any()),
        (RUN_ID_LABEL.to_string(), run_id.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "miniautoml-operator".to_string(),
        ),
    ])
}

fn owned_meta(job: &TrainingJob, name: String, run_id: u64) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: job.namespace(),
        labels: Some(labels(job, run_id)),
        owner_references: job.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

/// What the run's own storage key may do: read its snapshot, write its model folder (where
/// `CreateArtifact` tells the trainer to upload). The epoch history is the operator's to write.
pub fn run_grants(job: &TrainingJob, inputs: &RunInputs) -> Grants {
    Grants {
        bucket: inputs.bucket.clone(),
        read: vec![inputs.data_path.clone()],
        write: vec![layout::model_prefix(
            &job.namespace().unwrap_or_default(),
            &job.name_any(),
            &job.uid().unwrap_or_default(),
        )],
    }
}

/// `host:port` of an `http(s)://host[:port][/…]` URL (the port its scheme implies when none is
/// given), as the original training images take `MINIO_SERVER`.
pub fn host_and_port(url: &str) -> String {
    let (rest, port) = match url.split_once("://") {
        Some(("https", rest)) => (rest, 443),
        Some((_, rest)) => (rest, 80),
        None => (url, 80),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{port}")
    }
}

/// The run's Secret: the token only this run's pods can read (the metadata store checks it) and
/// the storage credentials the trainer uses.
pub fn build_secret(job: &TrainingJob, run_id: u64, token: &str, credentials: &Credentials) -> Secret {
    Secret {
        metadata: owned_meta(job, secret_name(job), run_id),
        string_data: Some({
            let mut entries = credential_entries(credentials);
            entries.insert(TOKEN_KEY.to_string(), token.to_string());
            entries
        }),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The contract's environment (docs/training.md, "The training-image contract"), hyperparameters
/// last.
pub fn contract_env(job: &TrainingJob, inputs: &RunInputs) -> Vec<EnvVar> {
    let secret = secret_name(job);
    let mut vars = vec![
        env("JOB_ID", inputs.run_id.to_string()),
        env(
            "ALGORITHM_NAME",
            job.spec.algorithm.clone().unwrap_or_else(|| "custom".into()),
        ),
        env("METADATA_STORE_SERVER", &inputs.metadata_store),
    ];
    // A CA is public: it travels in the pod spec, not the run's Secret.
    if let Some(ca) = &inputs.metadata_store_ca {
        vars.push(env("METADATA_STORE_CA", ca));
    }
    vars.extend([
        env("TRAINING_DATASET_ID", &inputs.dataset_id),
        env("TRAINING_DATASET_VERSION_HASH", &inputs.version_hash),
        env("TRAINING_DATA_BUCKET", &inputs.bucket),
        env("TRAINING_DATA_PATH", &inputs.data_path),
        env("MODEL_BUCKET", &inputs.bucket),
        env("MODEL_NAME", &job.spec.output_model_name),
        env("AWS_REGION", &inputs.s3_region),
    ]);
    vars.extend(credential_env(&secret));
    vars.extend([
        from_secret("MINIO_SERVER_ACCESS_KEY", &secret, ACCESS_KEY),
        from_secret("MINIO_SERVER_SECRET_KEY", &secret, SECRET_KEY),
    ]);
    // An original-contract trainer has no token: its pod's address is what the listener trusts.
    if inputs.contract == Contract::MiniAutoML {
        vars.push(from_secret("MINIAUTOML_RUN_TOKEN", &secret, TOKEN_KEY));
    }
    if let Some(endpoint) = &inputs.s3_endpoint {
        vars.push(env("AWS_ENDPOINT_URL", endpoint));
        // The original images pass it to `Minio(MINIO_SERVER, secure=False)`: `host:port`.
        vars.push(env("MINIO_SERVER", host_and_port(endpoint)));
    }
    vars.extend(launcher_env(job));
    vars.extend(job.spec.parameters.iter().map(|(k, v)| env(k, v)));
    vars
}

/// Where each worker stands, for both launchers: `torch.distributed`'s (and the original
/// contract's) `WORLD_SIZE`, `RANK`, `MASTER_ADDR`, `MASTER_PORT`, and torchrun's `PET_*`
/// (one process per pod, the node rank the pod's completion index), so that `python train.py`
/// and a bare `torchrun train.py` both work unchanged.
fn launcher_env(job: &TrainingJob) -> Vec<EnvVar> {
    let workers = job.spec.workers.max(1);
    let rank = |name: &str| {
        if workers > 1 {
            EnvVar {
                name: name.into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.annotations['batch.kubernetes.io/job-completion-index']".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        } else {
            env(name, "0")
        }
    };
    let master = if workers > 1 {
        let name = job_name(job);
        format!("{name}-0.{name}")
    } else {
        "localhost".into()
    };
    vec![
        // Which attempt this is (1 the first; a gang restart starts the next).
        env("MINIAUTOML_ATTEMPT", attempt(job).to_string()),
        env("WORLD_SIZE", workers.to_string()),
        rank("RANK"),
        env("MASTER_ADDR", &master),
        env("MASTER_PORT", MASTER_PORT.to_string()),
        env("PET_NNODES", workers.to_string()),
        rank("PET_NODE_RANK"),
        env("PET_NPROC_PER_NODE", "1"),
        env("PET_MASTER_ADDR", &master),
        env("PET_MASTER_PORT", MASTER_PORT.to_string()),
    ]
}

fn resources(job: &TrainingJob) -> Option<ResourceRequirements> {
    let spec = &job.spec.resources;
    let mut quantities = cpu_and_memory(&spec.cpu, &spec.memory);
    if spec.gpus > 0 {
        quantities.insert("nvidia.com/gpu".to_string(), Quantity(spec.gpus.to_string()));
    }
    requests_and_limits(quantities)
}

fn tolerations(job: &TrainingJob) -> Option<Vec<Toleration>> {
    let mut tolerations = job.spec.tolerations.clone();
    if job.spec.resources.gpus > 0
        && !tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("nvidia.com/gpu"))
    {
        tolerations.push(Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }
    (!tolerations.is_empty()).then_some(tolerations)
}

/// The run's current attempt (1 until a gang restart).
pub fn attempt(job: &TrainingJob) -> u32 {
    job.status.as_ref().and_then(|s| s.attempt).unwrap_or(1)
}

/// The batch/v1 Job running every worker: one pod per rank (an Indexed Job for several), never
/// restarted in place, suspended under Kueue. One worker: `backoffLimit` retries its failed
/// pod. Several form a gang: the first failed pod fails the Job (`backoffLimit` 0), whose
/// controller then stops the others, and the operator restarts the whole gang; a pod's
/// disruption (eviction, preemption) fails it by the pod failure policy, so that the Job's
/// reason (`PodFailurePolicy`) tells the operator not to count that restart.
pub fn build_job(job: &TrainingJob, inputs: &RunInputs) -> Job {
    let workers = job.spec.workers.max(1);
    let mut meta = owned_meta(job, job_name(job), inputs.run_id);
    meta.annotations = Some(BTreeMap::from([
        (VERSION_HASH_ANNOTATION.to_string(), inputs.version_hash.clone()),
        (ATTEMPT_ANNOTATION.to_string(), attempt(job).to_string()),
    ]));
    let mut pod_labels = labels(job, inputs.run_id);
    if let Some(queue) = &job.spec.queue_name {
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert("kueue.x-k8s.io/queue-name".into(), queue.clone());
        pod_labels.insert("kueue.x-k8s.io/queue-name".into(), queue.clone());
    }
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            completions: Some(workers),
            parallelism: Some(workers),
            completion_mode: Some(if workers > 1 { "Indexed" } else { "NonIndexed" }.into()),
            backoff_limit: Some(if workers > 1 { 0 } else { job.spec.backoff_limit }),
            pod_failure_policy: (workers > 1).then(|| PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                    ..Default::default()
                }],
            }),
            active_deadline_seconds: job.spec.active_deadline_seconds,
            suspend: job.spec.queue_name.as_ref().map(|_| true),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // The trainer talks to the metadata store with its run token, never to the
                    // Kubernetes API: no service-account token in its pods.
                    automount_service_account_token: Some(false),
                    subdomain: (workers > 1).then(|| job_name(job)),
                    node_selector: (!job.spec.node_selector.is_empty())
                        .then(|| job.spec.node_selector.clone()),
                    tolerations: tolerations(job),
                    image_pull_secrets: pull_secrets(&inputs.image_pull_secrets),
                    volumes: Some(vec![scratch_volume()]),
                    init_containers: (workers > 1).then(|| vec![wait_for_master(job, inputs)]),
                    containers: vec![Container {
                        name: CONTAINER.into(),
                        image: Some(inputs.image.clone()),
                        image_pull_policy: inputs.image_pull_policy.clone(),
                        env: Some(contract_env(job, inputs)),
                        resources: resources(job),
                        security_context: Some(inputs.security_context.clone()),
                        volume_mounts: Some(vec![scratch_mount()]),
                        // The original images download into and save their model under their
                        // working directory: the writable scratch volume, not a read-only root.
                        working_dir: (inputs.contract == Contract::Original)
                            .then(|| scratch_mount().mount_path),
                        // A trainer that exits non-zero without a termination message leaves
                        // its last log lines there: the run's message ends with its own error.
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The start step of a multi-worker run's pods: waits, up to 5 minutes, until rank 0's name
/// (`MASTER_ADDR`) resolves. Rank 0's pod may be created or scheduled after the others, and
/// torch 1.13 (the original images' `init_process_group`) treats a failed lookup as fatal.
fn wait_for_master(job: &TrainingJob, inputs: &RunInputs) -> Container {
    let name = job_name(job);
    Container {
        name: "wait-for-master".into(),
        image: Some(inputs.launcher_image.clone()),
        command: Some(vec![
            "/usr/local/bin/miniautoml-operator".into(),
            "wait-for-host".into(),
            format!("{name}-0.{name}"),
            "300".into(),
        ]),
        security_context: Some(restricted_security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// The attempt a run's Job runs (1 for Jobs of before gang restarts).
pub fn launched_attempt(batch_job: &Job) -> u32 {
    batch_job
        .annotations()
        .get(ATTEMPT_ANNOTATION)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
}

/// The snapshot a run's Job was launched on.
pub fn launched_version_hash(batch_job: &Job) -> Option<String> {
    batch_job.annotations().get(VERSION_HASH_ANNOTATION).cloned()
}

/// The headless Service that names rank 0 (`<job>-0.<job>`) for the other ranks.
pub fn build_service(job: &TrainingJob, run_id: u64) -> Service {
    Service {
        metadata: owned_meta(job, job_name(job), run_id),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(BTreeMap::from([(TRAINING_JOB_LABEL.to_string(), job.name_any())])),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> TrainingJob {
        let mut job: TrainingJob =
            serde_yaml::from_str(include_str!("../../../../examples/trainingjob.yaml")).unwrap();
        job.metadata.namespace = Some("team-a".into());
        job.metadata.uid = Some("0a1b".into());
        job
    }

    fn inputs() -> RunInputs {
        RunInputs {
            run_id: 7,
            image: "miniautoml/intent-classification:0.1.0".into(),
            metadata_store: "miniautoml-operator.miniautoml:51001".into(),
            metadata_store_ca: None,
            contract: Contract::MiniAutoML,
            dataset_id: "3".into(),
            version_hash: "hashBg==".into(),
            bucket: "miniautoml".into(),
            data_path: "datasets/team-a/tweet-emotion/snapshots/hashBg==".into(),
            s3_endpoint: Some("http://minio:9000".into()),
            s3_region: "us-east-1".into(),
            image_pull_secrets: Vec::new(),
            image_pull_policy: None,
            security_context: restricted_security_context(),
            launcher_image: "miniautoml/operator:0.1.0".into(),
        }
    }

    fn env_of(job: &Job) -> BTreeMap<String, EnvVar> {
        let container = &job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        container
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn minio_server_is_the_hosts_address_and_port() {
        assert_eq!(host_and_port("http://minio:9000"), "minio:9000");
        assert_eq!(host_and_port("http://198.18.0.1:39000/"), "198.18.0.1:39000");
        assert_eq!(host_and_port("https://s3.example.com"), "s3.example.com:443");
        assert_eq!(host_and_port("http://store.ns.svc/path"), "store.ns.svc:80");
        assert_eq!(host_and_port("http://[fd00::1]:8333"), "[fd00::1]:8333");
        assert_eq!(host_and_port("http://[fd00::1]"), "[fd00::1]:80");
    }

    #[test]
    fn a_single_worker_job_carries_the_contract() {
        let built = build_job(&fixture(), &inputs());
        assert_eq!(built.metadata.name.as_deref(), Some("twitter-model-train"));
        // The snapshot it was launched on stays readable whatever the Dataset gets later.
        assert_eq!(launched_version_hash(&built).as_deref(), Some("hashBg=="));
        assert_eq!(
            built.metadata.owner_references.as_ref().unwrap()[0].kind,
            "TrainingJob"
        );
        let spec = built.spec.as_ref().unwrap();
        assert_eq!(
            (spec.completions, spec.parallelism, spec.backoff_limit),
            (Some(1), Some(1), Some(0))
        );
        assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
        let env = env_of(&built);
        let value = |name: &str| env[name].value.clone().unwrap_or_default();
        assert_eq!(value("JOB_ID"), "7");
        assert_eq!(
            value("TRAINING_DATA_PATH"),
            "datasets/team-a/tweet-emotion/snapshots/hashBg=="
        );
        assert_eq!(value("TRAINING_DATASET_VERSION_HASH"), "hashBg==");
        assert_eq!(value("MODEL_NAME"), "twitter-model");
        assert_eq!(value("MINIO_SERVER"), "minio:9000");
        assert_eq!(value("AWS_ENDPOINT_URL"), "http://minio:9000");
        assert_eq!((value("RANK"), value("WORLD_SIZE")), ("0".into(), "1".into()));
        assert_eq!(
            (value("PET_NODE_RANK"), value("PET_NNODES")),
            ("0".into(), "1".into())
        );
        assert_eq!(value("EPOCHS"), "15");
        let token = env["MINIAUTOML_RUN_TOKEN"]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (token.name.as_str(), token.key.as_str()),
            ("twitter-model-run", TOKEN_KEY)
        );
        // No credentials in the Job itself.
        assert!(env.values().all(|e| e.value.as_deref() != Some("secret")));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false), "no API access");
        let resources = pod.containers[0].resources.clone().unwrap();
        assert_eq!(resources.limits.unwrap()["cpu"], Quantity("1".into()));
        // Restricted: non-root, no escalation, no capabilities, RuntimeDefault seccomp, a
        // read-only root with /tmp writable.
        let context = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(
            (
                context.run_as_non_root,
                context.allow_privilege_escalation,
                context.read_only_root_filesystem
            ),
            (Some(true), Some(false), Some(true))
        );
        assert_eq!(context.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert_eq!(context.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(
            pod.containers[0].volume_mounts.as_ref().unwrap()[0].mount_path,
            "/tmp"
        );
        assert!(pod.volumes.as_ref().unwrap()[0].empty_dir.is_some());
    }

    #[test]
    fn only_a_configured_algorithm_loosens_the_security_context() {
        let settings = TrainingSettings {
            metadata_store_address: "op:51001".into(),
            metadata_store_ca: Some("CA".into()),
            original_contract_address: Some("op:51002".into()),
            algorithm_contracts: BTreeMap::from([("original".to_string(), Contract::Original)]),
            pods: crate::context::PodSettings {
                s3_endpoint: None,
                s3_region: "us-east-1".into(),
                keys: crate::pod_keys::PodKeys::Shared(Credentials {
                    access_key_id: "a".into(),
                    secret_access_key: "s".into(),
                    session_token: None,
                }),
                image_pull_secrets: Vec::new(),
                launcher_image: "miniautoml/operator:0.1.0".into(),
            },
            bucket: "b".into(),
            max_concurrent_runs: 0,
            algorithm_pull_policies: BTreeMap::new(),
            run_tokens: crate::run_tokens::RunTokens::new(b"k"),
            algorithm_security_contexts: BTreeMap::from([(
                "intent-classification".to_string(),
                SecurityContext {
                    run_as_user: Some(0),
                    ..Default::default()
                },
            )]),
        };
        let dataset: Dataset =
            serde_yaml::from_str(include_str!("../../../../examples/dataset.yaml")).unwrap();
        let snapshot = SnapshotStatus::default();
        let configured = run_inputs(&fixture(), 7, "img", (&dataset, &snapshot), &settings);
        assert_eq!(configured.security_context.run_as_user, Some(0));
        let mut own_image = fixture();
        own_image.spec.algorithm = None;
        own_image.spec.image = Some("example.com/mine:1".into());
        let own = run_inputs(&own_image, 7, "img", (&dataset, &snapshot), &settings);
        assert_eq!(own.security_context, restricted_security_context());
        assert_eq!(
            (
                own.contract,
                own.metadata_store.as_str(),
                own.metadata_store_ca.as_deref()
            ),
            (Contract::MiniAutoML, "op:51001", Some("CA"))
        );

        // An original-contract run reports to the plain-text listener, without a CA.
        let mut original = fixture();
        original.spec.algorithm = Some("original".into());
        let original = run_inputs(&original, 7, "img", (&dataset, &snapshot), &settings);
        assert_eq!(
            (
                original.contract,
                original.metadata_store.as_str(),
                original.metadata_store_ca
            ),
            (Contract::Original, "op:51002", None)
        );
    }

    #[test]
    fn an_original_contract_trainer_gets_no_token_and_a_writable_working_directory() {
        let ours = build_job(&fixture(), &inputs());
        let container = &ours
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        assert_eq!(container.working_dir, None);
        assert!(env_of(&ours).contains_key("MINIAUTOML_RUN_TOKEN"));

        let mut original = inputs();
        original.contract = Contract::Original;
        original.metadata_store = "miniautoml-operator.miniautoml:51002".into();
        let job = build_job(&fixture(), &original);
        let env = env_of(&job);
        assert!(!env.contains_key("MINIAUTOML_RUN_TOKEN"));
        assert_eq!(
            env["METADATA_STORE_SERVER"].value.as_deref(),
            Some("miniautoml-operator.miniautoml:51002")
        );
        // Its storage key still comes from the run's Secret, under the original's names.
        assert!(env["MINIO_SERVER_ACCESS_KEY"].value_from.is_some());
        let container = &job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        assert_eq!(container.working_dir.as_deref(), Some("/tmp"));
    }

    #[test]
    fn over_tls_the_trainer_is_given_the_https_address_and_its_ca() {
        assert!(!env_of(&build_job(&fixture(), &inputs())).contains_key("METADATA_STORE_CA"));
        let mut tls = inputs();
        tls.metadata_store = "https://miniautoml-operator.miniautoml:51001".into();
        tls.metadata_store_ca = Some("-----BEGIN CERTIFICATE-----\n...".into());
        let env = env_of(&build_job(&fixture(), &tls));
        assert_eq!(
            env["METADATA_STORE_SERVER"].value.as_deref(),
            Some("https://miniautoml-operator.miniautoml:51001")
        );
        assert_eq!(
            env["METADATA_STORE_CA"].value.as_deref(),
            Some("-----BEGIN CERTIFICATE-----\n...")
        );
    }

    #[test]
    fn pull_secrets_and_policy_reach_the_trainer_pods() {
        let mut configured = inputs();
        configured.image_pull_secrets = vec!["regcred".into()];
        configured.image_pull_policy = Some("Always".into());
        let built = build_job(&fixture(), &configured);
        let pod = built.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
        assert_eq!(pod.containers[0].image_pull_policy.as_deref(), Some("Always"));
        let default = build_job(&fixture(), &inputs());
        let pod = default.spec.unwrap().template.spec.unwrap();
        assert!(pod.image_pull_secrets.is_none() && pod.containers[0].image_pull_policy.is_none());
    }

    #[test]
    fn gpus_become_limits_and_a_toleration() {
        let mut job = fixture();
        job.spec.resources.gpus = 2;
        job.spec.node_selector = BTreeMap::from([("pool".into(), "gpu".into())]);
        let built = build_job(&job, &inputs());
        let pod = built.spec.unwrap().template.spec.unwrap();
        let limits = pod.containers[0].resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["nvidia.com/gpu"], Quantity("2".into()));
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("nvidia.com/gpu"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "gpu");
    }

    #[test]
    fn several_workers_run_an_indexed_job_behind_a_headless_service() {
        let mut job = fixture();
        job.spec.workers = 3;
        let built = build_job(&job, &inputs());
        let spec = built.spec.as_ref().unwrap();
        assert_eq!((spec.completions, spec.parallelism), (Some(3), Some(3)));
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(
            spec.template.spec.as_ref().unwrap().subdomain.as_deref(),
            Some("twitter-model-train")
        );
        let env = env_of(&built);
        assert_eq!(env["WORLD_SIZE"].value.as_deref(), Some("3"));
        assert_eq!(
            env["MASTER_ADDR"].value.as_deref(),
            Some("twitter-model-train-0.twitter-model-train")
        );
        let rank = env["RANK"]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert!(rank.field_path.contains("job-completion-index"));
        // torchrun reads the same from its PET_ variables: one process per pod.
        let value = |name: &str| env[name].value.clone().unwrap_or_default();
        assert_eq!(value("PET_NNODES"), "3");
        assert_eq!(value("PET_NPROC_PER_NODE"), "1");
        assert_eq!(value("PET_MASTER_ADDR"), value("MASTER_ADDR"));
        assert_eq!(value("PET_MASTER_PORT"), value("MASTER_PORT"));
        assert_eq!(env["PET_NODE_RANK"].value_from, env["RANK"].value_from);
        // Every rank waits for rank 0's name before its trainer starts.
        let pod = built.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let wait = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(wait.image.as_deref(), Some("miniautoml/operator:0.1.0"));
        assert_eq!(
            wait.command.as_ref().unwrap()[1..],
            [
                "wait-for-host",
                "twitter-model-train-0.twitter-model-train",
                "300"
            ]
        );
        let service = build_service(&job, 7);
        let spec = service.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
    }

    #[test]
    fn a_gang_is_never_retried_pod_by_pod_and_a_disruption_fails_it_by_policy() {
        let mut job = fixture();
        job.spec.backoff_limit = 4;
        let alone = build_job(&job, &inputs());
        let spec = alone.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(4), "one worker: its pod is retried");
        assert!(spec.pod_failure_policy.is_none());
        assert_eq!(launched_attempt(&alone), 1);

        job.spec.workers = 2;
        job.status = Some(miniautoml_api::TrainingJobStatus {
            attempt: Some(3),
            ..Default::default()
        });
        let gang = build_job(&job, &inputs());
        let spec = gang.spec.as_ref().unwrap();
        assert_eq!(
            spec.backoff_limit,
            Some(0),
            "the first failed rank fails the attempt"
        );
        let rule = &spec.pod_failure_policy.as_ref().unwrap().rules[0];
        assert_eq!(rule.action, "FailJob");
        assert_eq!(
            rule.on_pod_conditions.as_ref().unwrap()[0].type_,
            "DisruptionTarget"
        );
        assert_eq!(launched_attempt(&gang), 3);
        let container = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            container.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }

    #[test]
    fn a_queue_name_suspends_the_job_for_kueue() {
        let mut job = fixture();
        job.spec.queue_name = Some("team-a-queue".into());
        let built = build_job(&job, &inputs());
        assert_eq!(
            built.metadata.labels.unwrap()["kueue.x-k8s.io/queue-name"],
            "team-a-queue"
        );
        assert_eq!(built.spec.unwrap().suspend, Some(true));
    }

    #[test]
    fn long_names_stay_within_kubernetes_limits() {
        let mut job = fixture();
        job.metadata.name = Some("a".repeat(200));
        assert!(job_name(&job).len() <= 63);
        assert!(secret_name(&job).len() <= 63);
    }
}
