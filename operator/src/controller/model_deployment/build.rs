//! Pure builders of what a ModelDeployment runs: the predictors' storage Secret, their
//! Deployment, the Service in front of them and the NetworkPolicy that says who may call them,
//! and the rollout state read back from the Deployment.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvVar, GRPCAction, HTTPGetAction, Lifecycle,
            LifecycleHandler, PodSpec, PodTemplateSpec, Probe, Secret, Service, ServicePort, ServiceSpec,
            SleepAction, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};
use miniautoml_api::{
    ModelDeployment,
    labels::{MODEL_DEPLOYMENT_LABEL, RUN_ID_LABEL},
    model_deployment::{Endpoint, GRPC_PORT, HTTP_PORT, PredictorProtocol, ServedModel},
};
use sha2::{Digest, Sha256};

use miniautoml_data::Grants;

use crate::{
    config::Credentials,
    context::{PredictorIngress, PredictorSettings},
    controller::children::{
        cpu_and_memory, credential_entries, credential_env, env, pull_secrets, requests_and_limits,
        restricted_security_context, scratch_mount, scratch_volume,
    },
    pod_keys::Holder,
};

/// Annotation on the Deployment: digest of what the operator last applied, so an unchanged
/// spec is not applied again.
pub const APPLIED_ANNOTATION: &str = "miniautoml.io/applied-digest";
/// Annotation on predictor pods: the artifact URI they load.
pub const MODEL_URI_ANNOTATION: &str = "miniautoml.io/model-uri";
/// The predictor container's name.
pub const CONTAINER: &str = "predictor";
/// How long a stopping predictor keeps serving while it reports not ready, in seconds (the
/// time endpoints need to drop it); well inside the termination grace period.
pub const SHUTDOWN_DELAY_SECONDS: i64 = 5;
/// The pods' termination grace period.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;

/// Name of the predictors' Deployment and of their Service.
pub fn deployment_name(md: &ModelDeployment) -> String {
    crate::names::derived(&md.name_any(), "predictor")
}

/// Name of the predictors' Secret (storage credentials).
pub fn secret_name(md: &ModelDeployment) -> String {
    crate::names::derived(&md.name_any(), "predictor-s3")
}

/// The Service's in-cluster addresses.
pub fn endpoint(md: &ModelDeployment) -> Endpoint {
    let host = format!(
        "{}.{}.svc",
        deployment_name(md),
        md.namespace().unwrap_or_default()
    );
    Endpoint {
        grpc: format!("{host}:{GRPC_PORT}"),
        http: format!("http://{host}:{HTTP_PORT}"),
    }
}

fn selector(md: &ModelDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([(MODEL_DEPLOYMENT_LABEL.to_string(), md.name_any())])
}

fn owned_meta(md: &ModelDeployment, name: String) -> ObjectMeta {
    let mut labels = selector(md);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "miniautoml-operator".into(),
    );
    labels.insert("app.kubernetes.io/component".into(), "predictor".into());
    ObjectMeta {
        name: Some(name),
        namespace: md.namespace(),
        labels: Some(labels),
        owner_references: md.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}

/// What the predictors' own storage key may do: read the model they serve, and the one the
/// current predictors serve (so that one of them restarting mid-rollout still loads). Models
/// are `s3://<bucket>/<prefix>/` URIs.
pub fn predictor_grants(model: &ServedModel, serving: Option<&str>) -> Grants {
    let split = |uri: &str| -> Option<(String, String)> {
        let (bucket, prefix) = uri.strip_prefix("s3://")?.split_once('/')?;
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        Some((bucket.to_string(), prefix))
    };
    let (bucket, prefix) = split(&model.uri).unwrap_or_default();
    let mut read = vec![prefix];
    if let Some((same_bucket, previous)) = serving.and_then(split)
        && same_bucket == bucket
        && !read.contains(&previous)
    {
        read.push(previous);
    }
    Grants {
        bucket,
        read,
        write: vec![],
    }
}

/// The predictors' storage credentials (`None`: a temporary key, filled in once issued).
pub fn build_secret(md: &ModelDeployment, credentials: Option<&Credentials>) -> Secret {
    Secret {
        metadata: owned_meta(md, secret_name(md)),
        string_data: credentials.map(credential_entries),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Annotation on the Deployment: when the temporary storage key in the predictors' Secret
/// expires (RFC 3339); the key is issued again once less than half its lifetime is left.
pub const KEY_EXPIRES_ANNOTATION: &str = "miniautoml.io/storage-key-expires";

/// Whether the temporary key the `deployment`'s annotation dates must be issued again at `now`
/// (less than half of `lifetime` left, or no date); `false` for keys that do not expire.
pub fn key_renewal_due(
    deployment: &Deployment,
    lifetime: Option<std::time::Duration>,
    now: Timestamp,
) -> bool {
    let Some(lifetime) = lifetime else {
        return false;
    };
    let expires = deployment
        .annotations()
        .get(KEY_EXPIRES_ANNOTATION)
        .and_then(|at| at.parse::<Timestamp>().ok());
    match (expires, SignedDuration::try_from(lifetime / 2)) {
        (Some(expires), Ok(half)) => now.checked_add(half).is_ok_and(|later| later >= expires),
        _ => true,
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Which predictor a ModelDeployment runs and how it is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredictorImage {
    /// The image.
    pub image: String,
    /// Its pull policy (`None`: Kubernetes' default; a spec's own image always).
    pub pull_policy: Option<String>,
    /// How it serves.
    pub kind: PredictorKind,
}

/// How a predictor serves, and whether it is given its model's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictorKind {
    /// The default predictor: reads its model from S3 itself; gRPC on 8081, OIP v2 and its
    /// health on 8080.
    Default,
    /// An algorithm's predictor (`--algorithm-predictor`): served as the default one, given the
    /// model's files.
    Algorithm,
    /// The spec's own image: given the model's files, serving `protocol` on `port`.
    Custom {
        /// What it serves.
        protocol: PredictorProtocol,
        /// Where.
        port: i32,
    },
}

impl PredictorKind {
    /// Whether the pods get the model's files from a storage initializer.
    pub fn fetches_model(self) -> bool {
        self != PredictorKind::Default
    }
}

/// The predictor `md` runs for `model`: the spec's image, else the model's algorithm's
/// predictor, else the default one.
pub fn predictor_image(
    md: &ModelDeployment,
    model: &ServedModel,
    settings: &PredictorSettings,
) -> PredictorImage {
    if let Some(image) = &md.spec.image {
        let protocol = md.spec.protocol.unwrap_or_default();
        return PredictorImage {
            image: image.clone(),
            pull_policy: None,
            kind: PredictorKind::Custom {
                protocol,
                port: md.spec.port.unwrap_or(protocol.default_port()),
            },
        };
    }
    match model
        .algorithm
        .as_ref()
        .and_then(|algorithm| settings.algorithm_predictors.get(algorithm))
    {
        Some(image) => PredictorImage {
            image: image.clone(),
            pull_policy: settings.image_pull_policy.clone(),
            kind: PredictorKind::Algorithm,
        },
        None => PredictorImage {
            image: settings.image.clone(),
            pull_policy: settings.image_pull_policy.clone(),
            kind: PredictorKind::Default,
        },
    }
}

/// Where a custom or algorithm predictor finds its model's files (also `$MODEL_DIR/<run id>`).
pub const MODEL_MOUNT: &str = "/mnt/models";
/// `MODEL_DIR`, as the original predictor reads it: the files are in `MODEL_DIR/<run id>/`.
pub const MODEL_DIR: &str = "/models";
/// The volume holding the model's files.
const MODEL_VOLUME: &str = "model";

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// Ports, readiness and liveness of a predictor of `kind` serving model `name`.
fn serving(kind: PredictorKind, name: &str) -> (Vec<ContainerPort>, Probe, Probe) {
    match kind {
        PredictorKind::Default | PredictorKind::Algorithm => (
            vec![port("grpc", GRPC_PORT), port("http", HTTP_PORT)],
            // Ready only once the model is loaded and verified; not ready again as soon as it
            // starts stopping.
            http_probe("/v2/health/ready", 1, 1),
            http_probe("/v2/health/live", 10, 3),
        ),
        PredictorKind::Custom {
            protocol: PredictorProtocol::Predictor,
            port: number,
        } => {
            let grpc = |period, failures| Probe {
                grpc: Some(GRPCAction {
                    port: number,
                    service: None,
                }),
                period_seconds: Some(period),
                timeout_seconds: Some(2),
                failure_threshold: Some(failures),
                ..Default::default()
            };
            (vec![port("grpc", number)], grpc(1, 1), grpc(10, 3))
        }
        PredictorKind::Custom {
            protocol: PredictorProtocol::OpenInference,
            port: number,
        } => (
            vec![port("http", number)],
            http_probe(&format!("/v2/models/{name}/ready"), 1, 1),
            http_probe("/v2/health/live", 10, 3),
        ),
    }
}

/// The storage initializer of a predictor given its model's files: the operator's image
/// (`fetch-model`) downloads the model with the pods' own storage key and verifies it against
/// the sha256 the run recorded and the manifest's checksums, before the predictor starts.
fn storage_initializer(settings: &PredictorSettings, mut vars: Vec<EnvVar>) -> Container {
    vars.retain(|var| var.name.starts_with("AWS_") || var.name == "MODEL_URI" || var.name == "MODEL_SHA256");
    Container {
        name: "storage-initializer".into(),
        image: Some(settings.pods.launcher_image.clone()),
        command: Some(vec![
            "/usr/local/bin/miniautoml-operator".into(),
            "fetch-model".into(),
            MODEL_MOUNT.into(),
        ]),
        env: Some(vars),
        security_context: Some(restricted_security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(vec![VolumeMount {
            name: MODEL_VOLUME.into(),
            mount_path: MODEL_MOUNT.into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// The predictors' Deployment. The pod template names the model (run label, URI annotation,
/// environment), so a new model rolls out as a new ReplicaSet: one surge pod at a time, none
/// taken down before its replacement is ready (`maxUnavailable: 0`), and a stopping predictor
/// keeps serving until endpoints have dropped it (ours by itself; another image's pod waits
/// [`SHUTDOWN_DELAY_SECONDS`] before it is told to stop).
pub fn build_deployment(
    md: &ModelDeployment,
    model: &ServedModel,
    settings: &PredictorSettings,
) -> Deployment {
    let predictor = predictor_image(md, model, settings);
    let kind = predictor.kind;
    let secret = secret_name(md);
    let (grpc_port, http_port) = match kind {
        PredictorKind::Custom {
            protocol: PredictorProtocol::Predictor,
            port,
        } => (port, HTTP_PORT),
        PredictorKind::Custom {
            protocol: PredictorProtocol::OpenInference,
            port,
        } => (GRPC_PORT, port),
        _ => (GRPC_PORT, HTTP_PORT),
    };
    let mut vars = vec![
        env("MODEL_URI", &model.uri),
        env("MODEL_NAME", md.name_any()),
        env("RUN_ID", &model.run_id),
        env("MODEL_VERSION", &model.version),
        env("PREDICTOR_GRPC_PORT", grpc_port.to_string()),
        env("PREDICTOR_HTTP_PORT", http_port.to_string()),
        env("PREDICTOR_SHUTDOWN_DELAY", SHUTDOWN_DELAY_SECONDS.to_string()),
        env("AWS_REGION", &settings.pods.s3_region),
    ];
    vars.extend(credential_env(&secret));
    if let Some(endpoint) = &settings.pods.s3_endpoint {
        vars.push(env("AWS_ENDPOINT_URL", endpoint));
    }
    if let Some(sha256) = &model.sha256 {
        vars.push(env("MODEL_SHA256", sha256));
    }
    let mut volumes = vec![scratch_volume()];
    let mut mounts = vec![scratch_mount()];
    let mut init_containers = None;
    if kind.fetches_model() {
        init_containers = Some(vec![storage_initializer(settings, vars.clone())]);
        vars.push(env("MODEL_DIR", MODEL_DIR));
        volumes.push(Volume {
            name: MODEL_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        for path in [MODEL_MOUNT.to_string(), format!("{MODEL_DIR}/{}", model.run_id)] {
            mounts.push(VolumeMount {
                name: MODEL_VOLUME.into(),
                mount_path: path,
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    let (ports, readiness, liveness) = serving(kind, &md.name_any());
    // The default predictor drains by itself (PREDICTOR_SHUTDOWN_DELAY); another image is
    // given the time endpoints need to drop it before it is asked to stop.
    let lifecycle = kind.fetches_model().then(|| Lifecycle {
        pre_stop: Some(LifecycleHandler {
            sleep: Some(SleepAction {
                seconds: SHUTDOWN_DELAY_SECONDS,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut pod_labels = selector(md);
    pod_labels.insert(RUN_ID_LABEL.into(), model.run_id.clone());
    pod_labels.insert("app.kubernetes.io/component".into(), "predictor".into());
    Deployment {
        metadata: owned_meta(md, deployment_name(md)),
        spec: Some(DeploymentSpec {
            replicas: Some(md.spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(md)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        MODEL_URI_ANNOTATION.to_string(),
                        model.uri.clone(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    // Predictors read their model from S3 and never call the Kubernetes API.
                    automount_service_account_token: Some(false),
                    image_pull_secrets: pull_secrets(&settings.pods.image_pull_secrets),
                    volumes: Some(volumes),
                    init_containers,
                    containers: vec![Container {
                        name: CONTAINER.into(),
                        image: Some(predictor.image),
                        image_pull_policy: predictor.pull_policy,
                        env: Some(vars),
                        ports: Some(ports),
                        resources: requests_and_limits(cpu_and_memory(
                            &md.spec.resources.cpu,
                            &md.spec.resources.memory,
                        )),
                        // Where the kubelet supports it, a failed start-up's reason (the
                        // log's last lines) reaches the pod status and the Ready condition.
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        readiness_probe: Some(readiness),
                        liveness_probe: Some(liveness),
                        lifecycle,
                        security_context: Some(settings.security_context.clone()),
                        volume_mounts: Some(mounts),
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

/// The Service in front of the predictors: gRPC and HTTP.
pub fn build_service(md: &ModelDeployment) -> Service {
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: Some(if name == "grpc" { "grpc" } else { "http" }.into()),
        ..Default::default()
    };
    Service {
        metadata: owned_meta(md, deployment_name(md)),
        spec: Some(ServiceSpec {
            selector: Some(selector(md)),
            ports: Some(vec![port("grpc", GRPC_PORT), port("http", HTTP_PORT)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The label every namespace carries with its name (set by the API server).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A selector of the namespaces named `names`.
fn namespaces_named(names: Vec<String>) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.into(),
            operator: "In".into(),
            values: Some(names),
        }]),
        ..Default::default()
    }
}

/// Who may call the predictors, on their two ports: pods of the ModelDeployment's namespace, of
/// the namespaces its `allowedNamespaces` names (`*`: every one), and the operator's pods.
/// Traffic from nodes (kubelet probes) is not subject to NetworkPolicies.
pub fn build_network_policy(md: &ModelDeployment, ingress: &PredictorIngress) -> NetworkPolicy {
    let mut from = vec![NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..Default::default()
    }];
    let mut allowed = md.spec.allowed_namespaces.clone();
    allowed.sort();
    allowed.dedup();
    if allowed.iter().any(|name| name == "*") {
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..Default::default()
        });
    } else if !allowed.is_empty() {
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(namespaces_named(allowed)),
            ..Default::default()
        });
    }
    if let Some((namespace, labels)) = &ingress.operator {
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(namespaces_named(vec![namespace.clone()])),
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // By name: a custom predictor's ports are its own numbers.
    let port = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: owned_meta(md, deployment_name(md)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(md)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![port("grpc"), port("http")]),
            }]),
            ..Default::default()
        }),
    }
}

/// The metadata of `deployment`'s pod template.
fn template_meta(deployment: &Deployment) -> Option<&ObjectMeta> {
    deployment.spec.as_ref()?.template.metadata.as_ref()
}

/// The model URI the predictors of `deployment` load (their pod template's annotation).
pub fn template_model_uri(deployment: &Deployment) -> Option<&str> {
    template_meta(deployment)?
        .annotations
        .as_ref()?
        .get(MODEL_URI_ANNOTATION)
        .map(String::as_str)
}

/// The run a Deployment's pod template serves.
pub fn template_run(deployment: &Deployment) -> Option<&str> {
    template_meta(deployment)?
        .labels
        .as_ref()?
        .get(RUN_ID_LABEL)
        .map(String::as_str)
}

/// Where a Deployment's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// Pods (old and new).
    pub replicas: i32,
    /// Ready pods (old and new).
    pub ready: i32,
    /// Pods of the current template.
    pub updated: i32,
    /// Every replica runs the current template and is available, and no old pod is left.
    pub complete: bool,
}

/// Reads a Deployment's rollout state; `desired` is the ModelDeployment's replica count.
pub fn rollout(deployment: &Deployment, desired: i32) -> Rollout {
    let status = deployment.status.clone().unwrap_or_default();
    let current = status.observed_generation >= deployment.metadata.generation;
    let replicas = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    Rollout {
        replicas,
        ready: status.ready_replicas.unwrap_or(0),
        updated,
        complete: current && updated == desired && replicas == desired && available == desired,
    }
}

/// Everything a ModelDeployment runs, to apply together.
#[derive(Clone, Debug)]
pub struct Desired {
    /// The predictors' storage credentials.
    pub secret: Secret,
    /// The Service in front of the predictors.
    pub service: Service,
    /// Who may call the predictors (`None`: the operator writes no policy).
    pub network_policy: Option<NetworkPolicy>,
    /// The predictors, annotated with the digest of all four ([`APPLIED_ANNOTATION`]).
    pub deployment: Deployment,
}

impl Desired {
    /// The digest of what was applied, as the Deployment carries it.
    pub fn digest(&self) -> Option<&String> {
        self.deployment.annotations().get(APPLIED_ANNOTATION)
    }
}

/// The predictors' Secret, Service, NetworkPolicy and Deployment for serving `model`.
pub fn desired(md: &ModelDeployment, model: &ServedModel, settings: &PredictorSettings) -> Desired {
    let credentials = settings
        .pods
        .keys
        .credentials(Holder::Predictor, &md.uid().unwrap_or_default());
    let secret = build_secret(md, credentials.as_ref());
    let service = build_service(md);
    let network_policy = settings
        .ingress
        .as_ref()
        .map(|ingress| build_network_policy(md, ingress));
    let mut deployment = build_deployment(md, model, settings);
    let mut hasher = Sha256::new();
    for object in [
        serde_json::to_value(&secret).expect("a Secret serialises"),
        serde_json::to_value(&service).expect("a Service serialises"),
        serde_json::to_value(&network_policy).expect("a NetworkPolicy serialises"),
        serde_json::to_value(&deployment).expect("a Deployment serialises"),
    ] {
        hasher.update(object.to_string().as_bytes());
    }
    let digest = hex::encode(&hasher.finalize()[..12]);
    deployment
        .annotations_mut()
        .insert(APPLIED_ANNOTATION.into(), digest);
    Desired {
        secret,
        service,
        network_policy,
        deployment,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    use super::*;

    /// `examples/modeldeployment.yaml` in namespace `team-a`.
    pub(in crate::controller::model_deployment) fn fixture() -> ModelDeployment {
        let mut md: ModelDeployment =
            serde_yaml::from_str(include_str!("../../../../examples/modeldeployment.yaml")).unwrap();
        md.metadata.namespace = Some("team-a".into());
        md.metadata.uid = Some("0a1b".into());
        md
    }

    fn model(run: &str) -> ServedModel {
        ServedModel {
            run_id: run.into(),
            training_job: "twitter-model".into(),
            uri: format!("s3://miniautoml/models/team-a/twitter-model/uid-{run}/"),
            version: run.into(),
            sha256: Some(format!("{run:0>64}")),
            algorithm: Some("intent-classification".into()),
        }
    }

    fn settings() -> PredictorSettings {
        PredictorSettings {
            pods: crate::context::PodSettings {
                launcher_image: "miniautoml/operator:0.1.0".into(),
                s3_endpoint: Some("http://minio:9000".into()),
                s3_region: "us-east-1".into(),
                keys: crate::pod_keys::PodKeys::Shared(Credentials {
                    access_key_id: "key".into(),
                    secret_access_key: "secret".into(),
                    session_token: None,
                }),
                image_pull_secrets: Vec::new(),
            },
            image: "miniautoml/predictor:0.1.0".into(),
            algorithm_predictors: BTreeMap::from([(
                "pytorch-intent".to_string(),
                "miniautoml/pytorch-intent-predictor:0.1.0".to_string(),
            )]),
            image_pull_policy: None,
            security_context: crate::controller::children::restricted_security_context(),
            ingress: Some(crate::context::PredictorIngress {
                operator: Some((
                    "miniautoml".into(),
                    BTreeMap::from([("app.kubernetes.io/name".into(), "miniautoml".into())]),
                )),
            }),
        }
    }

    fn env_of(deployment: &Deployment) -> BTreeMap<String, k8s_openapi::api::core::v1::EnvVar> {
        let spec = deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        spec.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn predictors_may_read_the_model_they_load_and_the_one_being_replaced_only() {
        let first = predictor_grants(&model("1"), None);
        assert_eq!(first.bucket, "miniautoml");
        assert_eq!(first.read, vec!["models/team-a/twitter-model/uid-1/".to_string()]);
        assert!(first.write.is_empty());
        let rolling = predictor_grants(
            &model("2"),
            Some("s3://miniautoml/models/team-a/twitter-model/uid-1/"),
        );
        assert_eq!(
            rolling.read,
            vec![
                "models/team-a/twitter-model/uid-2/".to_string(),
                "models/team-a/twitter-model/uid-1/".to_string()
            ]
        );
        let elsewhere = predictor_grants(&model("2"), Some("s3://other/models/x/"));
        assert_eq!(elsewhere.read.len(), 1, "never another bucket");
    }

    #[test]
    fn own_keys_go_into_the_secret_and_stay_the_same_for_the_same_deployment() {
        let mut scoped = settings();
        scoped.pods.keys = crate::pod_keys::PodKeys::Scoped {
            issuer: miniautoml_data::KeyIssuer::new(Some("http://store:8333"), "op", "op-secret"),
            derivation: crate::pod_keys::Derivation::new(b"operator secret"),
        };
        let md = fixture();
        let first = desired(&md, &model("1"), &scoped);
        let again = desired(&md, &model("1"), &scoped);
        assert_eq!(first.digest(), again.digest());
        let entries = first.secret.string_data.unwrap();
        use crate::controller::children::{ACCESS_KEY, SECRET_KEY};
        assert!(entries[ACCESS_KEY].starts_with("MA"), "{:?}", entries[ACCESS_KEY]);
        assert_ne!(entries[ACCESS_KEY], "op");
        assert_ne!(entries[SECRET_KEY], "op-secret");
    }

    #[test]
    fn the_deployment_serves_the_model_from_the_spec() {
        let deployment = build_deployment(&fixture(), &model("3"), &settings());
        assert_eq!(
            deployment.metadata.name.as_deref(),
            Some("twitter-model-predictor")
        );
        let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ModelDeployment", Some(true))
        );
        let spec = deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let rolling = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false), "no API access");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("miniautoml/predictor:0.1.0"));
        let resources = container.resources.as_ref().unwrap();
        assert_eq!(resources.limits.as_ref().unwrap()["cpu"].0, "500m");
        assert_eq!(resources.requests.as_ref().unwrap()["memory"].0, "256Mi");
        let probe = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/v2/health/ready"));
        let env = env_of(&deployment);
        assert_eq!(
            env["MODEL_URI"].value.as_deref(),
            Some("s3://miniautoml/models/team-a/twitter-model/uid-3/")
        );
        assert_eq!(env["RUN_ID"].value.as_deref(), Some("3"));
        // The predictor refuses a model whose manifest is not the one the run recorded.
        assert_eq!(
            env["MODEL_SHA256"].value.as_deref(),
            Some(format!("{:0>64}", 3).as_str())
        );
        assert_eq!(env["MODEL_NAME"].value.as_deref(), Some("twitter-model"));
        assert_eq!(
            env["AWS_ENDPOINT_URL"].value.as_deref(),
            Some("http://minio:9000")
        );
        let key = env["AWS_SECRET_ACCESS_KEY"].value_from.as_ref().unwrap();
        assert_eq!(
            key.secret_key_ref.as_ref().unwrap().name,
            "twitter-model-predictor-s3"
        );
        assert!(env.values().all(|e| e.value.as_deref() != Some("secret")));
        // The predictor listens on every interface (kubectl port-forward reaches it).
        assert!(!env.contains_key("PREDICTOR_HOST") && !env.contains_key("POD_IP"));
        let labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels[RUN_ID_LABEL], "3");
        // The selector must not name the run, or a new model could not take over the pods.
        let selector = spec.selector.match_labels.as_ref().unwrap();
        assert!(!selector.contains_key(RUN_ID_LABEL));
        assert_eq!(template_run(&deployment), Some("3"));
    }

    #[test]
    fn the_predictor_images_pull_policy_and_secrets_apply_to_the_configured_image_only() {
        let mut configured = settings();
        configured.image_pull_policy = Some("IfNotPresent".into());
        configured.pods.image_pull_secrets = vec!["regcred".into()];
        let pod = |md: &ModelDeployment| {
            build_deployment(md, &model("3"), &configured)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
        };
        let default = pod(&fixture());
        assert_eq!(
            default.containers[0].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        assert_eq!(default.image_pull_secrets.unwrap()[0].name, "regcred");
        let mut own = fixture();
        own.spec.image = Some("registry.example/predictor:2".into());
        let own = pod(&own);
        assert_eq!(
            own.containers[0].image.as_deref(),
            Some("registry.example/predictor:2")
        );
        assert!(own.containers[0].image_pull_policy.is_none());
    }

    #[test]
    fn a_new_model_changes_only_the_pod_template() {
        let md = fixture();
        let first = build_deployment(&md, &model("3"), &settings());
        let second = build_deployment(&md, &model("4"), &settings());
        assert_eq!(first.metadata, second.metadata);
        let (first, second) = (first.spec.unwrap(), second.spec.unwrap());
        assert_eq!(first.selector, second.selector);
        assert_ne!(first.template, second.template);
        assert_eq!(
            build_deployment(&md, &model("3"), &settings()).spec.unwrap(),
            first
        );
    }

    fn pod_spec(deployment: &Deployment) -> PodSpec {
        deployment.spec.clone().unwrap().template.spec.unwrap()
    }

    #[test]
    fn the_default_predictor_reads_its_model_itself_and_others_get_verified_files() {
        let md = fixture();
        let settings = settings();
        // The default predictor: no initializer, both ports, HTTP probes.
        let default = pod_spec(&build_deployment(&md, &model("3"), &settings));
        assert!(default.init_containers.is_none());
        assert_eq!(
            default.containers[0].image.as_deref(),
            Some("miniautoml/predictor:0.1.0")
        );
        assert!(default.containers[0].lifecycle.is_none());

        // A pytorch-intent run: its algorithm's predictor, given the files.
        let mut torch = model("4");
        torch.algorithm = Some("pytorch-intent".into());
        let spec = pod_spec(&build_deployment(&md, &torch, &settings));
        let main = &spec.containers[0];
        assert_eq!(
            main.image.as_deref(),
            Some("miniautoml/pytorch-intent-predictor:0.1.0")
        );
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.name, "storage-initializer");
        assert_eq!(init.image.as_deref(), Some("miniautoml/operator:0.1.0"));
        assert_eq!(
            init.command.as_deref().unwrap()[1..],
            ["fetch-model".to_string(), "/mnt/models".to_string()]
        );
        let init_env: Vec<&str> = init.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert!(
            init_env.contains(&"MODEL_SHA256") && init_env.contains(&"AWS_ACCESS_KEY_ID"),
            "{init_env:?}"
        );
        assert!(
            !init_env.contains(&"MODEL_NAME"),
            "only what fetching needs: {init_env:?}"
        );
        assert_eq!(init.security_context, Some(restricted_security_context()));
        let mounts: Vec<(String, Option<bool>)> = main
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.clone(), m.read_only))
            .collect();
        assert!(mounts.contains(&("/mnt/models".into(), Some(true))), "{mounts:?}");
        assert!(mounts.contains(&("/models/4".into(), Some(true))), "{mounts:?}");
        let env = env_of(&build_deployment(&md, &torch, &settings));
        assert_eq!(env["MODEL_DIR"].value.as_deref(), Some("/models"));
        assert_eq!(
            main.lifecycle
                .as_ref()
                .unwrap()
                .pre_stop
                .as_ref()
                .unwrap()
                .sleep
                .as_ref()
                .unwrap()
                .seconds,
            SHUTDOWN_DELAY_SECONDS
        );
        assert_eq!(main.ports.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn a_custom_predictor_serves_its_protocol_on_its_port() {
        let mut md = fixture();
        md.spec.image = Some("example.com/orca3/predictor:1".into());
        md.spec.port = Some(51001);
        let spec = pod_spec(&build_deployment(&md, &model("3"), &settings()));
        let main = &spec.containers[0];
        assert!(spec.init_containers.is_some());
        let ports: Vec<(Option<String>, i32)> = main
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.container_port))
            .collect();
        assert_eq!(ports, [(Some("grpc".into()), 51001)]);
        let ready = main.readiness_probe.as_ref().unwrap();
        assert_eq!(ready.grpc.as_ref().unwrap().port, 51001);
        assert_eq!(
            main.image_pull_policy, None,
            "a spec's own image keeps Kubernetes' default"
        );

        md.spec.protocol = Some(PredictorProtocol::OpenInference);
        md.spec.port = None;
        let spec = pod_spec(&build_deployment(&md, &model("3"), &settings()));
        let main = &spec.containers[0];
        let ports: Vec<(Option<String>, i32)> = main
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.container_port))
            .collect();
        assert_eq!(ports, [(Some("http".into()), 8080)]);
        let ready = main.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(ready.path.as_deref(), Some("/v2/models/twitter-model/ready"));
        // The spec's image wins over the algorithm's predictor.
        let mut torch = model("4");
        torch.algorithm = Some("pytorch-intent".into());
        let image = predictor_image(&md, &torch, &settings());
        assert_eq!(image.image, "example.com/orca3/predictor:1");
    }

    #[test]
    fn the_spec_image_and_replicas_win() {
        let mut md = fixture();
        md.spec.image = Some("registry.example/predictor:2".into());
        md.spec.replicas = 3;
        let deployment = build_deployment(&md, &model("3"), &settings());
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.template.spec.unwrap().containers[0].image.as_deref(),
            Some("registry.example/predictor:2")
        );
    }

    #[test]
    fn the_service_and_endpoint_match() {
        let md = fixture();
        let service = build_service(&md);
        assert_eq!(service.metadata.name.as_deref(), Some("twitter-model-predictor"));
        let ports = service.spec.as_ref().unwrap().ports.clone().unwrap();
        assert_eq!(
            ports
                .iter()
                .map(|p| (p.name.clone().unwrap(), p.port))
                .collect::<Vec<_>>(),
            [("grpc".to_string(), 8081), ("http".to_string(), 8080)]
        );
        assert_eq!(
            endpoint(&md),
            Endpoint {
                grpc: "twitter-model-predictor.team-a.svc:8081".into(),
                http: "http://twitter-model-predictor.team-a.svc:8080".into(),
            }
        );
        let credentials = Credentials {
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            session_token: None,
        };
        let secret = build_secret(&md, Some(&credentials));
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("twitter-model-predictor-s3")
        );
        let long = ModelDeployment::new(&"m".repeat(253), md.spec.clone());
        assert!(deployment_name(&long).len() <= 63);
    }

    /// The policy's peers as `(namespaces, pods)` selectors in JSON, for comparing.
    fn peers(policy: &NetworkPolicy) -> Vec<serde_json::Value> {
        let rule = &policy.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0];
        rule.from
            .iter()
            .flatten()
            .map(|peer| serde_json::to_value(peer).unwrap())
            .collect()
    }

    #[test]
    fn predictors_let_in_their_namespace_the_allowed_ones_and_the_operator_only() {
        let mut md = fixture();
        let ingress = settings().ingress.unwrap();
        let policy = build_network_policy(&md, &ingress);
        assert_eq!(policy.metadata.name.as_deref(), Some("twitter-model-predictor"));
        assert_eq!(policy.metadata.namespace.as_deref(), Some("team-a"));
        let spec = policy.spec.clone().unwrap();
        assert_eq!(
            serde_json::to_value(&spec.pod_selector).unwrap(),
            serde_json::json!({"matchLabels": {"miniautoml.io/modeldeployment": "twitter-model"}})
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let ports: Vec<_> = spec.ingress.unwrap()[0]
            .ports
            .iter()
            .flatten()
            .map(|p| p.port.clone().unwrap())
            .collect();
        // By name: a custom predictor's numbers are its own.
        assert_eq!(
            ports,
            [
                IntOrString::String("grpc".into()),
                IntOrString::String("http".into())
            ]
        );
        let own = serde_json::json!({"podSelector": {}});
        let operator = serde_json::json!({
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["miniautoml"]}]},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "miniautoml"}},
        });
        assert_eq!(peers(&policy), [own.clone(), operator.clone()]);

        md.spec.allowed_namespaces = vec!["web".into(), "batch".into(), "web".into()];
        let named = serde_json::json!({
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["batch", "web"]}]},
        });
        assert_eq!(
            peers(&build_network_policy(&md, &ingress)),
            [own.clone(), named, operator.clone()]
        );

        md.spec.allowed_namespaces = vec!["web".into(), "*".into()];
        let every = serde_json::json!({"namespaceSelector": {}});
        assert_eq!(
            peers(&build_network_policy(&md, &ingress)),
            [own.clone(), every, operator]
        );

        // An operator outside the cluster reaches predictors from a node: no peer for it.
        md.spec.allowed_namespaces.clear();
        let outside = PredictorIngress { operator: None };
        assert_eq!(peers(&build_network_policy(&md, &outside)), [own]);
    }

    #[test]
    fn without_ingress_settings_no_policy_is_written_and_a_changed_policy_is_applied_again() {
        let mut md = fixture();
        let before = desired(&md, &model("3"), &settings());
        assert!(before.network_policy.is_some());
        md.spec.allowed_namespaces = vec!["web".into()];
        let after = desired(&md, &model("3"), &settings());
        assert_ne!(before.digest(), after.digest());
        let off = PredictorSettings {
            ingress: None,
            ..settings()
        };
        assert!(desired(&md, &model("3"), &off).network_policy.is_none());
    }

    #[test]
    fn a_temporary_key_is_issued_again_once_half_its_lifetime_is_gone() {
        let lifetime = Some(std::time::Duration::from_secs(3600));
        let issued: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let mut deployment = build_deployment(&fixture(), &model("3"), &settings());
        // Keys that do not expire never are; an undated temporary key always is.
        assert!(!key_renewal_due(&deployment, None, issued));
        assert!(key_renewal_due(&deployment, lifetime, issued));
        deployment
            .annotations_mut()
            .insert(KEY_EXPIRES_ANNOTATION.into(), "2026-12-06T11:00:00Z".into());
        let at = |time: &str| key_renewal_due(&deployment, lifetime, time.parse().unwrap());
        assert!(!at("2026-12-06T10:00:00Z"));
        assert!(!at("2026-12-06T10:29:59Z"));
        assert!(at("2026-12-06T10:30:00Z"));
        assert!(at("2026-12-06T12:00:00Z"));
    }

    #[test]
    fn a_temporary_keys_secret_carries_its_session_token_and_the_pods_read_it_if_there() {
        let md = fixture();
        let credentials = Credentials {
            access_key_id: "ASIA1".into(),
            secret_access_key: "s".into(),
            session_token: Some("token".into()),
        };
        let secret = build_secret(&md, Some(&credentials));
        assert_eq!(secret.string_data.unwrap()["AWS_SESSION_TOKEN"], "token");
        // Filled in only once issued: no entries, so the digest does not change with each key.
        assert!(build_secret(&md, None).string_data.is_none());
        let vars = env_of(&build_deployment(&md, &model("3"), &settings()));
        let token = vars["AWS_SESSION_TOKEN"].value_from.clone().unwrap();
        let selector = token.secret_key_ref.unwrap();
        assert_eq!(
            (selector.name.as_str(), selector.key.as_str(), selector.optional),
            ("twitter-model-predictor-s3", "AWS_SESSION_TOKEN", Some(true))
        );
    }

    #[test]
    fn a_rollout_is_complete_when_every_replica_is_new_and_available() {
        let mut deployment = build_deployment(&fixture(), &model("3"), &settings());
        deployment.metadata.generation = Some(2);
        let status = |observed, replicas, updated, available| DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ready_replicas: Some(available),
            ..Default::default()
        };
        deployment.status = Some(status(2, 2, 1, 2));
        assert!(!rollout(&deployment, 1).complete, "an old pod is left");
        deployment.status = Some(status(1, 1, 1, 1));
        assert!(
            !rollout(&deployment, 1).complete,
            "the new generation is not observed"
        );
        deployment.status = Some(status(2, 1, 1, 0));
        assert!(!rollout(&deployment, 1).complete, "not available");
        deployment.status = Some(status(2, 1, 1, 1));
        assert_eq!(
            rollout(&deployment, 1),
            Rollout {
                replicas: 1,
                ready: 1,
                updated: 1,
                complete: true
            }
        );
    }
}
