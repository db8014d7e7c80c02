//! The Helm chart, rendered by the pinned helm (`helm template`, `helm lint --strict`) for every
//! branch of its values: what each value turns into, and the clear failures for values that
//! cannot work. No cluster needed (the NOTES are checked where a real install prints them: the
//! e2e suite).

use std::process::Command;

use miniautoml_test_support::{repo_root, tools_bin};
use serde_yaml::Value;

const KUBE_VERSION: &str = "1.34.0";

fn helm(args: &[&str]) -> Result<String, String> {
    let helm = tools_bin().join("helm");
    let output = Command::new(&helm)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; run make tools", helm.display()));
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `helm template` of the chart with `--set` values, as documents; `Err` with helm's message.
fn try_render(sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec![
        "template",
        "miniautoml",
        "charts/miniautoml",
        "--namespace",
        "ml",
        "--kube-version",
        KUBE_VERSION,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let text = helm(&args)?;
    Ok(serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("helm renders YAML"))
        .filter(|document: &Value| !document.is_null())
        .collect())
}

fn render(sets: &[&str]) -> Vec<Value> {
    try_render(sets).unwrap_or_else(|e| panic!("helm template {sets:?}: {e}"))
}

fn kinds(documents: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = documents
        .iter()
        .map(|d| format!("{}/{}", str(d, "kind"), str(d, "metadata.name")))
        .collect();
    kinds.sort();
    kinds
}

/// The value at a dotted path (`spec.template.spec`), or Null.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .filter(|p| !p.is_empty())
        .fold(value, |v, key| match key.parse::<usize>() {
            Ok(i) => v.get(i).unwrap_or(&Value::Null),
            Err(_) => v.get(key).unwrap_or(&Value::Null),
        })
}

fn str<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path).as_str().unwrap_or("")
}

/// An annotation (its key may hold dots).
fn annotation<'a>(document: &'a Value, key: &str) -> &'a str {
    at(document, "metadata.annotations")
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| str(d, "kind") == kind && str(d, "metadata.name") == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {:?}", kinds(documents)))
}

fn has_named(documents: &[Value], kind: &str, name: &str) -> bool {
    kinds(documents).contains(&format!("{kind}/{name}"))
}

fn has(documents: &[Value], kind: &str) -> bool {
    documents.iter().any(|d| str(d, "kind") == kind)
}

fn operator(documents: &[Value]) -> &Value {
    at(
        find(documents, "Deployment", "miniautoml"),
        "spec.template.spec.containers.0",
    )
}

fn operator_args(documents: &[Value]) -> Vec<String> {
    at(operator(documents), "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn env(container: &Value) -> Vec<String> {
    at(container, "env")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| serde_yaml::to_string(e).unwrap())
        .collect()
}

#[test]
fn the_chart_lints_strictly() {
    let out = helm(&[
        "lint",
        "--strict",
        "charts/miniautoml",
        "--kube-version",
        KUBE_VERSION,
    ])
    .unwrap();
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn defaults_install_the_operator_its_crds_and_a_bundled_object_store() {
    let documents = render(&[]);
    assert_eq!(
        kinds(&documents),
        [
            "ClusterRole/miniautoml",
            "ClusterRole/miniautoml-app-developer",
            "ClusterRole/miniautoml-data-engineer",
            "ClusterRole/miniautoml-data-scientist",
            "ClusterRoleBinding/miniautoml",
            "CustomResourceDefinition/datasets.miniautoml.io",
            "CustomResourceDefinition/modeldeployments.miniautoml.io",
            "CustomResourceDefinition/trainingjobs.miniautoml.io",
            "Deployment/miniautoml",
            "Lease/miniautoml",
            "NetworkPolicy/miniautoml-object-store",
            "Role/miniautoml-leader-election",
            "RoleBinding/miniautoml-leader-election",
            "Secret/miniautoml-object-store-credentials",
            "Secret/miniautoml-run-token-key",
            "Secret/miniautoml-tls",
            "Service/miniautoml",
            "Service/miniautoml-metrics",
            "Service/miniautoml-object-store",
            "ServiceAccount/miniautoml",
            "StatefulSet/miniautoml-object-store",
        ]
    );
    // CRDs are kept by helm uninstall.
    for crd in documents
        .iter()
        .filter(|d| str(d, "kind") == "CustomResourceDefinition")
    {
        assert_eq!(annotation(crd, "helm.sh/resource-policy"), "keep");
    }
    let args = operator_args(&documents);
    for expected in [
        "--leader-elect",
        "--leader-elect-lease=miniautoml",
        "--lease-duration=15",
        "--create-bucket",
        "--s3-endpoint=http://miniautoml-object-store.ml.svc:8333",
        "--metadata-store-address=miniautoml.ml.svc:51001",
        "--grpc-namespace=ml",
        "--algorithm=intent-classification=docker.io/miniautoml/intent-classification:0.1.0",
        "--algorithm-max-workers=intent-classification=1",
        "--algorithm-predictor=pytorch-intent=docker.io/miniautoml/pytorch-intent-predictor:0.1.0",
        "--original-contract-addr=0.0.0.0:51002",
        "--predictor-image=docker.io/miniautoml/predictor:0.1.0",
        "--shutdown-delay=5",
    ] {
        assert!(args.contains(&expected.to_string()), "{expected} not in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--watch-namespace")),
        "{args:?}"
    );
    let deployment = find(&documents, "Deployment", "miniautoml");
    assert_eq!(at(deployment, "spec.replicas").as_u64(), Some(1));
    assert_eq!(
        str(operator(&documents), "image"),
        "docker.io/miniautoml/operator:0.1.0"
    );
    let env = env(operator(&documents)).join("");
    for variable in [
        "POD_NAME",
        "POD_NAMESPACE",
        "POD_IP",
        "AWS_ACCESS_KEY_ID",
        "miniautoml-object-store-credentials",
    ] {
        assert!(env.contains(variable), "{variable} not in {env}");
    }
    // Secure by default, the object store included.
    let store = find(&documents, "StatefulSet", "miniautoml-object-store");
    for pod in [
        at(deployment, "spec.template.spec"),
        at(store, "spec.template.spec"),
    ] {
        assert_eq!(at(pod, "securityContext.runAsNonRoot").as_bool(), Some(true));
        assert_eq!(str(pod, "securityContext.seccompProfile.type"), "RuntimeDefault");
        let container = at(pod, "containers.0");
        assert_eq!(
            at(container, "securityContext.readOnlyRootFilesystem").as_bool(),
            Some(true)
        );
        assert_eq!(
            at(container, "securityContext.allowPrivilegeEscalation").as_bool(),
            Some(false)
        );
        assert_eq!(str(container, "securityContext.capabilities.drop.0"), "ALL");
    }
    assert_eq!(
        at(store, "spec.template.spec.automountServiceAccountToken").as_bool(),
        Some(false)
    );
    // Only the S3 gateway listens beyond the pod's loopback (the e2e suite tries the others
    // from a pod).
    let store_args: Vec<&str> = at(store, "spec.template.spec.containers.0.args")
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for arg in [
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3.ip.bind=0.0.0.0",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ] {
        assert!(store_args.contains(&arg), "{arg} not in {store_args:?}");
    }
    assert_eq!(
        str(
            store,
            "spec.volumeClaimTemplates.0.spec.resources.requests.storage"
        ),
        "10Gi"
    );
    assert!(
        at(store, "spec.volumeClaimTemplates.0.spec.storageClassName").is_null(),
        "the default class"
    );
    // The credentials are generated, kept across upgrades and uninstall, and never in values.
    let secret = find(&documents, "Secret", "miniautoml-object-store-credentials");
    assert_eq!(annotation(secret, "helm.sh/resource-policy"), "keep");
    assert_eq!(
        str(secret, "data.AWS_SECRET_ACCESS_KEY").len(),
        56,
        "40 random characters, base64"
    );
    for variable in at(operator(&documents), "env").as_sequence().unwrap() {
        if str(variable, "name").starts_with("AWS_") {
            assert!(at(variable, "value").is_null(), "{variable:?} holds a credential");
            assert!(!at(variable, "valueFrom.secretKeyRef").is_null(), "{variable:?}");
        }
    }
}

#[test]
fn every_secret_render_is_new_without_a_cluster_to_look_up() {
    let key = |documents: Vec<Value>| {
        str(
            find(&documents, "Secret", "miniautoml-object-store-credentials"),
            "data.AWS_ACCESS_KEY_ID",
        )
        .to_string()
    };
    assert_ne!(key(render(&[])), key(render(&[])));
}

#[test]
fn run_tokens_are_keyed_by_a_generated_secret_or_an_existing_one() {
    let documents = render(&[]);
    let key = str(find(&documents, "Secret", "miniautoml-run-token-key"), "data.key");
    assert_eq!(key.len(), 64, "48 random characters, base64: {key}");
    let variable = |documents: &[Value]| {
        at(operator(documents), "env")
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| str(v, "name") == "MINIAUTOML_RUN_TOKEN_KEY")
            .cloned()
            .expect("the operator gets the run-token key")
    };
    assert_eq!(
        str(&variable(&documents), "valueFrom.secretKeyRef.name"),
        "miniautoml-run-token-key"
    );
    let own = render(&["runTokens.existingSecret=my-token-key"]);
    assert!(!has_named(&own, "Secret", "miniautoml-run-token-key"));
    assert_eq!(
        str(&variable(&own), "valueFrom.secretKeyRef.name"),
        "my-token-key"
    );
}

#[test]
fn dataset_sources_are_granted_per_namespace() {
    assert!(
        !operator_args(&render(&[]))
            .iter()
            .any(|a| a.contains("dataset-source")),
        "only raw/<namespace>/ by default"
    );
    let args = operator_args(&render(&[
        "datasetSources.team-a[0]=shared-data/tweets/",
        "datasetSources.team-a[1]=miniautoml/public/",
    ]));
    for expected in [
        "--dataset-source=team-a=shared-data/tweets/",
        "--dataset-source=team-a=miniautoml/public/",
    ] {
        assert!(args.contains(&expected.to_string()), "{args:?}");
    }
    let error = try_render(&["datasetSources.team-a[0]=/not-a-bucket"]).unwrap_err();
    assert!(error.contains("datasetSources"), "{error}");
}

#[test]
fn trainers_and_predictors_are_restricted_unless_an_administrator_says_otherwise() {
    // The defaults pass no security context: the operator's restricted one applies.
    assert!(
        !operator_args(&render(&[]))
            .iter()
            .any(|a| a.contains("security-context")),
        "restricted by default"
    );
    let args = operator_args(&render(&[
        "algorithms.intent-classification.securityContext.runAsUser=0",
        "algorithms.intent-classification.securityContext.runAsNonRoot=false",
        "predictor.securityContext.readOnlyRootFilesystem=false",
    ]));
    assert!(
        args.contains(
            &r#"--algorithm-security-context=intent-classification={"runAsNonRoot":false,"runAsUser":0}"#
                .into()
        ),
        "{args:?}"
    );
    assert!(
        args.contains(&r#"--predictor-security-context={"readOnlyRootFilesystem":false}"#.into()),
        "{args:?}"
    );
    let error = try_render(&["predictor.securityContext=root"]).unwrap_err();
    assert!(error.contains("securityContext"), "{error}");
}

#[test]
fn one_global_registry_moves_every_image() {
    let documents = render(&["global.imageRegistry=registry.example.com/mirror"]);
    assert_eq!(
        str(operator(&documents), "image"),
        "registry.example.com/mirror/miniautoml/operator:0.1.0"
    );
    let args = operator_args(&documents);
    assert!(
        args.contains(&"--predictor-image=registry.example.com/mirror/miniautoml/predictor:0.1.0".into())
    );
    assert!(args.contains(
        &"--algorithm=intent-classification=registry.example.com/mirror/miniautoml/intent-classification:0.1.0".into()
    ));
    let store = find(&documents, "StatefulSet", "miniautoml-object-store");
    assert!(
        str(store, "spec.template.spec.containers.0.image")
            .starts_with("registry.example.com/mirror/miniautoml/seaweedfs:")
    );
}

#[test]
fn images_take_registry_repository_tag_digest_and_pull_policy() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let documents = render(&[
        "image.registry=ghcr.io",
        "image.repository=acme/operator",
        "image.tag=1.2.3",
        "image.pullPolicy=Always",
        "predictor.image.tag=9.9.9",
        "predictor.image.pullPolicy=Always",
        "algorithms.intent-classification.image.pullPolicy=IfNotPresent",
        &format!("algorithms.intent-classification.image.digest={digest}"),
    ]);
    assert_eq!(str(operator(&documents), "image"), "ghcr.io/acme/operator:1.2.3");
    assert_eq!(str(operator(&documents), "imagePullPolicy"), "Always");
    let args = operator_args(&documents);
    assert!(
        args.contains(&"--predictor-image=docker.io/miniautoml/predictor:9.9.9".into()),
        "{args:?}"
    );
    assert!(
        args.contains(&format!(
            "--algorithm=intent-classification=docker.io/miniautoml/intent-classification@{digest}"
        )),
        "{args:?}"
    );
    for expected in [
        "--predictor-pull-policy=Always",
        "--algorithm-pull-policy=intent-classification=IfNotPresent",
    ] {
        assert!(args.contains(&expected.to_string()), "{args:?}");
    }
    let defaults = operator_args(&render(&[]));
    assert!(
        !defaults.iter().any(|a| a.contains("pull-policy")),
        "Kubernetes' defaults: {defaults:?}"
    );
    let documents = render(&[
        "algorithms.random-forest.image.repository=acme/forest",
        "algorithms.random-forest.image.tag=2",
    ]);
    let args = operator_args(&documents);
    assert!(args.contains(&"--algorithm=random-forest=acme/forest:2".into()));
    // An algorithm without maxWorkers: the CRD's limit only.
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--algorithm-max-workers=random-forest")),
        "{args:?}"
    );
    let error = try_render(&["algorithms.intent-classification.maxWorkers=0"]).unwrap_err();
    assert!(error.contains("maxWorkers"), "{error}");
}

#[test]
fn original_contract_algorithms_and_their_port_are_configurable() {
    // By default: the port on the operator and its Service.
    let documents = render(&[]);
    let service = find(&documents, "Service", "miniautoml");
    assert_eq!(str(service, "spec.ports.1.name"), "original");
    // Kubernetes takes port names of at most 15 characters (an IANA service name).
    for port in at(service, "spec.ports").as_sequence().unwrap() {
        let name = port["name"].as_str().unwrap();
        assert!(name.len() <= 15, "port name {name:?} is too long for Kubernetes");
    }
    assert_eq!(at(service, "spec.ports.1.port").as_u64(), Some(51002));
    // An algorithm of the original's images, with a predictor of its own.
    let documents = render(&[
        "algorithms.text-classification.image.repository=orca3/intent",
        "algorithms.text-classification.contract=Original",
        "algorithms.text-classification.predictor.image.repository=orca3/intent-predictor",
    ]);
    let args = operator_args(&documents);
    for expected in [
        "--algorithm-contract=text-classification=Original",
        "--algorithm-predictor=text-classification=orca3/intent-predictor:0.1.0",
    ] {
        assert!(args.contains(&expected.to_string()), "{expected} not in {args:?}");
    }
    let error = try_render(&["algorithms.intent-classification.contract=original"]).unwrap_err();
    assert!(error.contains("contract"), "{error}");
    // No port: the listener off, and nothing on the Service.
    let documents = render(&["grpc.originalContractPort=0"]);
    assert!(operator_args(&documents).contains(&"--original-contract-addr=none".to_string()));
    let service = serde_yaml::to_string(find(&documents, "Service", "miniautoml")).unwrap();
    assert!(!service.contains("name: original"), "{service}");
    assert!(service.contains("name: grpc"), "{service}");
}

#[test]
fn pull_secrets_reach_every_pod_and_the_operators_children() {
    let documents = render(&[
        "imagePullSecrets[0]=regcred",
        "global.imagePullSecrets[0]=regcred",
        "global.imagePullSecrets[1]=mirror",
    ]);
    for (kind, name) in [
        ("Deployment", "miniautoml"),
        ("StatefulSet", "miniautoml-object-store"),
    ] {
        let secrets = at(
            find(&documents, kind, name),
            "spec.template.spec.imagePullSecrets",
        );
        assert_eq!(
            serde_yaml::to_string(secrets).unwrap(),
            "- name: regcred\n- name: mirror\n",
            "{kind}"
        );
    }
    let args = operator_args(&documents);
    assert!(
        args.contains(&"--image-pull-secret=regcred".into())
            && args.contains(&"--image-pull-secret=mirror".into())
    );
    let none = render(&[]);
    assert!(
        at(
            find(&none, "Deployment", "miniautoml"),
            "spec.template.spec.imagePullSecrets"
        )
        .is_null()
    );
}

#[test]
fn replicas_above_one_get_a_disruption_budget_and_need_leader_election() {
    let documents = render(&["replicas=3"]);
    assert_eq!(
        at(find(&documents, "Deployment", "miniautoml"), "spec.replicas").as_u64(),
        Some(3)
    );
    let pdb = find(&documents, "PodDisruptionBudget", "miniautoml");
    assert_eq!(at(pdb, "spec.minAvailable").as_u64(), Some(1));
    let error = try_render(&["replicas=2", "leaderElection.enabled=false"]).unwrap_err();
    assert!(
        error.contains("replicas > 1 needs leaderElection.enabled"),
        "{error}"
    );
    let single = render(&["leaderElection.enabled=false"]);
    assert!(!has(&single, "Lease") && !has(&single, "Role") && !has(&single, "PodDisruptionBudget"));
    assert!(
        !operator_args(&single)
            .iter()
            .any(|a| a.starts_with("--leader-elect"))
    );
    let longer = render(&["leaderElection.leaseDurationSeconds=30"]);
    assert!(operator_args(&longer).contains(&"--lease-duration=30".into()));
}

#[test]
fn crds_can_be_left_to_the_cluster_admin() {
    let documents = render(&["crds.install=false"]);
    assert!(!has(&documents, "CustomResourceDefinition"));
    assert!(has(&documents, "Deployment"));
}

#[test]
fn an_existing_object_store_takes_an_endpoint_and_an_existing_secret() {
    let error = try_render(&["objectStore.enabled=false"]).unwrap_err();
    assert!(error.contains("storage.existingSecret"), "{error}");
    let documents = render(&[
        "objectStore.enabled=false",
        "storage.endpoint=https://s3.example.com",
        "storage.existingSecret=s3-keys",
        "storage.bucket=ml-data",
        "storage.region=eu-west-1",
    ]);
    assert!(!has(&documents, "StatefulSet"));
    assert!(!has_named(
        &documents,
        "Secret",
        "miniautoml-object-store-credentials"
    ));
    assert!(!kinds(&documents).contains(&"Service/miniautoml-object-store".to_string()));
    let args = operator_args(&documents);
    for expected in [
        "--s3-endpoint=https://s3.example.com",
        "--bucket=ml-data",
        "--s3-region=eu-west-1",
    ] {
        assert!(args.contains(&expected.to_string()), "{args:?}");
    }
    assert!(
        !args.contains(&"--create-bucket".into()),
        "an existing bucket is not created by default"
    );
    assert!(env(operator(&documents)).join("").contains("s3-keys"));
    let creating = render(&[
        "objectStore.enabled=false",
        "storage.existingSecret=s3-keys",
        "storage.createBucket=true",
    ]);
    assert!(operator_args(&creating).contains(&"--create-bucket".into()));
    assert!(
        !operator_args(&creating)
            .iter()
            .any(|a| a.starts_with("--s3-endpoint")),
        "AWS S3 when no endpoint"
    );
}

#[test]
fn the_object_store_takes_its_storage_class_size_and_placement() {
    let documents = render(&[
        "objectStore.persistence.storageClass=fast",
        "objectStore.persistence.size=50Gi",
        "objectStore.nodeSelector.disk=ssd",
        "objectStore.image.tag=custom",
    ]);
    let store = find(&documents, "StatefulSet", "miniautoml-object-store");
    assert_eq!(
        str(store, "spec.volumeClaimTemplates.0.spec.storageClassName"),
        "fast"
    );
    assert_eq!(
        str(
            store,
            "spec.volumeClaimTemplates.0.spec.resources.requests.storage"
        ),
        "50Gi"
    );
    assert_eq!(str(store, "spec.template.spec.nodeSelector.disk"), "ssd");
    assert_eq!(
        str(store, "spec.template.spec.containers.0.image"),
        "docker.io/miniautoml/seaweedfs:custom"
    );
}

#[test]
fn the_object_store_image_is_the_one_make_images_builds() {
    // hack/lib.sh's seaweedfs_image_tag: the pinned pseudo-version's date and commit.
    let versions = std::fs::read_to_string(repo_root().join("hack/versions.env")).unwrap();
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix("SEAWEEDFS_VERSION="))
        .unwrap();
    let stamp = version.trim_start_matches("v0.0.0-");
    let tag = format!("{}-{}", &stamp[..8], stamp.rsplit('-').next().unwrap());
    let documents = render(&[]);
    let store = find(&documents, "StatefulSet", "miniautoml-object-store");
    assert_eq!(
        str(store, "spec.template.spec.containers.0.image"),
        format!("docker.io/miniautoml/seaweedfs:{tag}")
    );
}

#[test]
fn metrics_get_a_service_and_optionally_a_service_monitor() {
    let documents = render(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prom",
    ]);
    let monitor = find(&documents, "ServiceMonitor", "miniautoml");
    assert_eq!(str(monitor, "metadata.labels.release"), "prom");
    assert_eq!(str(monitor, "spec.endpoints.0.port"), "metrics");
    assert_eq!(str(monitor, "spec.endpoints.0.path"), "/metrics");
    let service = find(&documents, "Service", "miniautoml-metrics");
    assert_eq!(str(service, "spec.ports.0.name"), "metrics");
    let none = render(&["metrics.service.enabled=false"]);
    assert!(!kinds(&none).contains(&"Service/miniautoml-metrics".to_string()));
    let error = try_render(&[
        "metrics.service.enabled=false",
        "metrics.serviceMonitor.enabled=true",
    ])
    .unwrap_err();
    assert!(error.contains("needs metrics.service.enabled"), "{error}");
}

/// `openssl ARGS` in `dir`: its output, or why it failed.
fn openssl(dir: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "openssl {args:?}: {text}");
    text
}

#[test]
fn tls_is_on_by_default_with_a_generated_certificate_for_the_service() {
    let documents = render(&[]);
    let container = operator(&documents);
    assert!(operator_args(&documents).contains(&"--tls-dir=/etc/miniautoml/tls".to_string()));
    assert_eq!(str(container, "volumeMounts.0.mountPath"), "/etc/miniautoml/tls");
    let pod = at(find(&documents, "Deployment", "miniautoml"), "spec.template.spec");
    assert_eq!(str(pod, "volumes.0.secret.secretName"), "miniautoml-tls");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(str(container, &format!("{probe}.httpGet.scheme")), "HTTPS");
    }
    assert!(!has(&documents, "Certificate"));

    // The generated Secret: a CA, and a certificate it signed for the host trainers are given
    // and for port-forwards; no CA private key.
    let secret = find(&documents, "Secret", "miniautoml-tls");
    assert_eq!(str(secret, "type"), "kubernetes.io/tls");
    let data = at(secret, "data").as_mapping().unwrap();
    let mut keys: Vec<&str> = data.keys().filter_map(Value::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let dir = std::env::temp_dir().join(format!("miniautoml-chart-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for key in keys {
        let encoded = data[key].as_str().unwrap();
        std::fs::write(dir.join(format!("{key}.b64")), encoded).unwrap();
        openssl(
            &dir,
            &["base64", "-d", "-A", "-in", &format!("{key}.b64"), "-out", key],
        );
    }
    let verified = openssl(&dir, &["verify", "-CAfile", "ca.crt", "tls.crt"]);
    assert!(verified.contains("tls.crt: OK"), "{verified}");
    let names = openssl(
        &dir,
        &["x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"],
    );
    let address = operator_args(&documents)
        .into_iter()
        .find_map(|a| a.strip_prefix("--metadata-store-address=").map(str::to_string))
        .unwrap();
    let host = address.rsplit_once(':').unwrap().0.to_string();
    for name in [
        format!("DNS:{host}"),
        "DNS:localhost".into(),
        "IP Address:127.0.0.1".into(),
    ] {
        assert!(names.contains(&name), "{name} not in {names}");
    }
    let key = openssl(&dir, &["pkey", "-in", "tls.key", "-pubout"]);
    let certified = openssl(&dir, &["x509", "-in", "tls.crt", "-noout", "-pubkey"]);
    assert_eq!(key, certified, "tls.key is the certificate's key");
    std::fs::remove_dir_all(&dir).unwrap();

    // Plain text only when asked for (the NOTES warn); then nothing TLS is rendered.
    let plain = render(&["tls.enabled=false"]);
    assert!(!operator_args(&plain).iter().any(|a| a.starts_with("--tls-dir")));
    assert_eq!(str(operator(&plain), "livenessProbe.httpGet.scheme"), "HTTP");
    assert!(!has_named(&plain, "Secret", "miniautoml-tls"));
    let error = try_render(&["tls.enabled=false", "tls.secretName=operator-tls"]).unwrap_err();
    assert!(error.contains("need tls.enabled=true"), "{error}");
}

#[test]
fn tls_from_a_secret_covers_both_ports_and_cert_manager_can_issue_it() {
    let documents = render(&[
        "tls.secretName=operator-tls",
        "metrics.serviceMonitor.enabled=true",
    ]);
    let container = operator(&documents);
    assert!(operator_args(&documents).contains(&"--tls-dir=/etc/miniautoml/tls".to_string()));
    assert_eq!(str(container, "volumeMounts.0.mountPath"), "/etc/miniautoml/tls");
    let pod = at(find(&documents, "Deployment", "miniautoml"), "spec.template.spec");
    assert_eq!(str(pod, "volumes.0.secret.secretName"), "operator-tls");
    assert!(
        !has_named(&documents, "Secret", "miniautoml-tls"),
        "nothing generated"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(str(container, &format!("{probe}.httpGet.scheme")), "HTTPS");
    }
    let monitor = find(&documents, "ServiceMonitor", "miniautoml");
    assert_eq!(str(monitor, "spec.endpoints.0.scheme"), "https");
    assert_eq!(
        str(monitor, "spec.endpoints.0.tlsConfig.serverName"),
        "miniautoml.ml.svc"
    );
    assert_eq!(
        str(monitor, "spec.endpoints.0.tlsConfig.ca.secret.name"),
        "operator-tls"
    );
    assert!(!has(&documents, "Certificate"));

    let issued = render(&[
        "tls.secretName=operator-tls",
        "tls.certManager.issuerRef.name=lab-ca",
        "tls.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    let certificate = find(&issued, "Certificate", "miniautoml");
    assert_eq!(str(certificate, "spec.secretName"), "operator-tls");
    assert_eq!(str(certificate, "spec.issuerRef.name"), "lab-ca");
    // It names what the trainers are given: the Service's host.
    let address = operator_args(&issued)
        .into_iter()
        .find_map(|a| a.strip_prefix("--metadata-store-address=").map(str::to_string))
        .unwrap();
    let host = address.rsplit_once(':').unwrap().0;
    let names = serde_yaml::to_string(at(certificate, "spec.dnsNames")).unwrap();
    assert!(names.lines().any(|line| line == format!("- {host}")), "{names}");
    let error = try_render(&["tls.certManager.issuerRef.name=lab-ca"]).unwrap_err();
    assert!(error.contains("needs tls.secretName"), "{error}");
}

#[test]
fn the_store_takes_s3_traffic_only_from_the_operator_and_miniautoml_pods() {
    let documents = render(&[]);
    let policy = find(&documents, "NetworkPolicy", "miniautoml-object-store");
    let store = find(&documents, "StatefulSet", "miniautoml-object-store");
    assert_eq!(
        at(policy, "spec.podSelector.matchLabels"),
        at(store, "spec.selector.matchLabels")
    );
    assert_eq!(
        serde_yaml::to_string(at(policy, "spec.policyTypes")).unwrap(),
        "- Ingress\n"
    );
    let rule = at(policy, "spec.ingress.0");
    assert!(at(policy, "spec.ingress.1").is_null(), "one rule only");
    assert_eq!(at(rule, "ports.0.port").as_u64(), Some(8333));
    assert!(at(rule, "ports.1").is_null(), "the S3 port only");
    let operator_pods = at(
        find(&documents, "Deployment", "miniautoml"),
        "spec.selector.matchLabels",
    );
    assert_eq!(at(rule, "from.0.podSelector.matchLabels"), operator_pods);
    assert!(
        at(rule, "from.0.namespaceSelector").is_null(),
        "the operator's own namespace"
    );
    for (i, label) in ["miniautoml.io/trainingjob", "miniautoml.io/modeldeployment"]
        .iter()
        .enumerate()
    {
        let peer = at(rule, &format!("from.{}", i + 1));
        assert!(
            at(peer, "namespaceSelector")
                .as_mapping()
                .is_some_and(|m| m.is_empty())
        );
        assert_eq!(str(peer, "podSelector.matchExpressions.0.key"), *label);
        assert_eq!(str(peer, "podSelector.matchExpressions.0.operator"), "Exists");
    }
    assert!(at(rule, "from.3").is_null());

    let extra = render(&["objectStore.networkPolicy.extraFrom[0].namespaceSelector.matchLabels.team=data"]);
    let rule = at(
        find(&extra, "NetworkPolicy", "miniautoml-object-store"),
        "spec.ingress.0",
    );
    assert_eq!(str(rule, "from.3.namespaceSelector.matchLabels.team"), "data");

    for off in [
        &["objectStore.networkPolicy.enabled=false"][..],
        &[
            "objectStore.enabled=false",
            "storage.endpoint=http://s3.example:9000",
            "storage.existingSecret=s3",
        ][..],
    ] {
        assert!(!has(&render(off), "NetworkPolicy"), "{off:?}");
    }
}

/// The rules of the operator's ClusterRole for `resource`, as `group/resource: verbs` lines.
fn cluster_role_rules(documents: &[Value], resource: &str) -> Vec<String> {
    at(find(documents, "ClusterRole", "miniautoml"), "rules")
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|rule| {
            at(rule, "resources")
                .as_sequence()
                .unwrap()
                .iter()
                .any(|r| r.as_str() == Some(resource))
        })
        .map(|rule| serde_yaml::to_string(at(rule, "verbs")).unwrap())
        .collect()
}

#[test]
fn predictors_let_in_the_operators_own_pods_unless_policies_are_off() {
    let documents = render(&[]);
    let args = operator_args(&documents);
    assert!(
        args.contains(&"--predictor-network-policy=true".to_string()),
        "{args:?}"
    );
    // Exactly the labels the operator's Deployment selects its pods by.
    let selector = at(
        find(&documents, "Deployment", "miniautoml"),
        "spec.selector.matchLabels",
    )
    .as_mapping()
    .unwrap();
    let mut labels: Vec<String> = args
        .iter()
        .filter_map(|a| a.strip_prefix("--operator-pod-label="))
        .map(str::to_string)
        .collect();
    let mut expected: Vec<String> = selector
        .iter()
        .map(|(k, v)| format!("{}={}", k.as_str().unwrap(), v.as_str().unwrap()))
        .collect();
    labels.sort();
    expected.sort();
    assert_eq!(labels, expected);
    assert!(
        env(operator(&documents))
            .iter()
            .any(|e| e.contains("POD_NAMESPACE") && e.contains("metadata.namespace")),
        "the operator learns its namespace from the downward API"
    );
    assert_eq!(
        cluster_role_rules(&documents, "networkpolicies"),
        ["- create\n- patch\n"]
    );

    let off = render(&["predictor.networkPolicy.enabled=false"]);
    let args = operator_args(&off);
    assert!(
        args.contains(&"--predictor-network-policy=false".to_string()),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--operator-pod-label")),
        "{args:?}"
    );
    assert!(cluster_role_rules(&off, "networkpolicies").is_empty());
}

#[test]
fn placement_and_pod_metadata_reach_the_operator_pods() {
    let documents = render(&[
        "nodeSelector.pool=system",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "priorityClassName=system-cluster-critical",
        "podAnnotations.team=ml",
        "podLabels.tier=control",
        "resources.limits.memory=1Gi",
        "watchNamespace=team-a",
        "grpc.namespace=lab",
        "training.maxConcurrentRuns=4",
        "logFormat=text",
    ]);
    let pod = at(find(&documents, "Deployment", "miniautoml"), "spec.template");
    assert_eq!(str(pod, "spec.nodeSelector.pool"), "system");
    assert_eq!(str(pod, "spec.tolerations.0.key"), "dedicated");
    assert!(!at(pod, "spec.affinity.nodeAffinity").is_null());
    assert_eq!(
        str(pod, "spec.topologySpreadConstraints.0.topologyKey"),
        "kubernetes.io/hostname"
    );
    assert_eq!(str(pod, "spec.priorityClassName"), "system-cluster-critical");
    assert_eq!(str(pod, "metadata.annotations.team"), "ml");
    assert_eq!(str(pod, "metadata.labels.tier"), "control");
    assert_eq!(str(pod, "spec.containers.0.resources.limits.memory"), "1Gi");
    let args = operator_args(&documents);
    for expected in [
        "--watch-namespace=team-a",
        "--grpc-namespace=lab",
        "--max-concurrent-runs=4",
        "--log-format=text",
    ] {
        assert!(args.contains(&expected.to_string()), "{expected}: {args:?}");
    }
}

/// Every `verb resource` a ClusterRole grants, sorted.
fn grants(role: &Value) -> Vec<String> {
    let mut grants = Vec::new();
    for rule in at(role, "rules").as_sequence().unwrap() {
        for resource in at(rule, "resources").as_sequence().unwrap() {
            for verb in at(rule, "verbs").as_sequence().unwrap() {
                grants.push(format!(
                    "{} {}",
                    verb.as_str().unwrap(),
                    resource.as_str().unwrap()
                ));
            }
        }
    }
    grants.sort();
    grants
}

#[test]
fn the_grpc_api_checks_callers_by_default_and_the_users_roles_are_shipped() {
    let documents = render(&[]);
    assert!(operator_args(&documents).contains(&"--grpc-auth=kubernetes".to_string()));
    // Callers' tokens are for the operator's audience, not the API server's.
    assert!(operator_args(&documents).contains(&"--grpc-token-audience=miniautoml".to_string()));
    let other = operator_args(&render(&["grpc.tokenAudience=ml-platform"]));
    assert!(
        other.contains(&"--grpc-token-audience=ml-platform".to_string()),
        "{other:?}"
    );
    let operator_role = grants(find(&documents, "ClusterRole", "miniautoml"));
    for review in ["create tokenreviews", "create subjectaccessreviews"] {
        assert!(operator_role.contains(&review.to_string()), "{operator_role:?}");
    }
    // What each person's role grants is what the gRPC methods they call are checked against.
    assert_eq!(
        grants(find(&documents, "ClusterRole", "miniautoml-data-engineer")),
        [
            "create datasets",
            "create datasets/snapshots",
            "delete datasets",
            "get datasets",
            "list datasets",
            "patch datasets",
            "update datasets",
            "watch datasets",
        ]
    );
    let scientist = grants(find(&documents, "ClusterRole", "miniautoml-data-scientist"));
    assert!(
        scientist.contains(&"create trainingjobs".to_string()),
        "{scientist:?}"
    );
    assert!(
        scientist.contains(&"create datasets/snapshots".to_string()),
        "{scientist:?}"
    );
    assert!(
        !scientist.contains(&"create datasets".to_string()),
        "{scientist:?}"
    );
    let developer = grants(find(&documents, "ClusterRole", "miniautoml-app-developer"));
    assert!(
        developer.contains(&"create modeldeployments/predict".to_string()),
        "{developer:?}"
    );
    assert!(
        !developer.contains(&"create trainingjobs".to_string()),
        "{developer:?}"
    );

    // A local lab: open, and the operator asks the API server nothing about callers.
    let open = render(&["grpc.auth=none", "userRoles.create=false"]);
    assert!(operator_args(&open).contains(&"--grpc-auth=none".to_string()));
    let operator_role = grants(find(&open, "ClusterRole", "miniautoml"));
    assert!(
        !operator_role.iter().any(|grant| grant.contains("review")),
        "{operator_role:?}"
    );
    assert_eq!(
        kinds(&open)
            .iter()
            .filter(|kind| kind.starts_with("ClusterRole/"))
            .count(),
        1
    );
    let wrong = try_render(&["grpc.auth=token"]).unwrap_err();
    assert!(wrong.contains("/grpc/auth"), "{wrong}");
}

#[test]
fn rbac_and_the_service_account_can_come_from_elsewhere() {
    let documents = render(&[
        "rbac.create=false",
        "userRoles.create=false",
        "serviceAccount.create=false",
        "serviceAccount.name=ops",
    ]);
    assert!(!has(&documents, "ClusterRole") && !has(&documents, "ServiceAccount"));
    let pod = at(find(&documents, "Deployment", "miniautoml"), "spec.template.spec");
    assert_eq!(str(pod, "serviceAccountName"), "ops");
    let named = render(&[
        "serviceAccount.name=miniautoml-operator",
        "fullnameOverride=mlops",
    ]);
    assert_eq!(
        str(find(&named, "ServiceAccount", "miniautoml-operator"), "kind"),
        "ServiceAccount"
    );
    assert_eq!(str(find(&named, "Deployment", "mlops"), "kind"), "Deployment");
    let binding = find(&named, "ClusterRoleBinding", "mlops");
    assert_eq!(str(binding, "subjects.0.name"), "miniautoml-operator");
    assert_eq!(str(binding, "subjects.0.namespace"), "ml");
}

#[test]
fn wrong_keys_and_types_fail_with_the_path_of_the_value() {
    for (set, expected) in [
        ("replica=2", "replica"),
        ("replicas=two", "replicas"),
        ("objectStore.persistance.size=1Gi", "persistance"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("logFormat=xml", "logFormat"),
        ("storage.bucket=Not_A_Bucket", "bucket"),
        ("image.digest=latest", "digest"),
        ("leaderElection.enabled=yes-please", "enabled"),
    ] {
        let error = try_render(&[set]).expect_err(set);
        assert!(
            error.contains("values don't meet the specifications of the schema"),
            "{set}: {error}"
        );
        assert!(error.contains(expected), "{set}: {error}");
    }
}

#[test]
fn pods_get_storage_keys_of_their_own_unless_shared_is_chosen() {
    let documents = render(&[]);
    assert!(operator_args(&documents).contains(&"--storage-credentials=scoped".to_string()));
    // The bundled store takes the operator's IAM writes and no self-made keys.
    let store = find(&documents, "StatefulSet", "miniautoml-object-store");
    let store_args: Vec<&str> = at(store, "spec.template.spec.containers.0.args")
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for arg in ["-s3.iam.readOnly=false", "-s3.iam.selfServiceRequiresGrant=true"] {
        assert!(store_args.contains(&arg), "{arg} not in {store_args:?}");
    }
    // Finalizers on ModelDeployments revoke their predictors' keys: the operator may patch them.
    let role = find(&documents, "ClusterRole", "miniautoml");
    let rules = serde_yaml::to_string(at(role, "rules")).unwrap();
    assert!(
        rules.contains("- modeldeployments\n  verbs:\n  - list\n  - watch\n  - create\n  - patch"),
        "{rules}"
    );

    let shared = render(&[
        "objectStore.enabled=false",
        "storage.endpoint=https://s3.example.com",
        "storage.existingSecret=s3-keys",
        "storage.credentialScope=shared",
    ]);
    assert!(operator_args(&shared).contains(&"--storage-credentials=shared".to_string()));
    assert!(
        !operator_args(&shared).iter().any(|a| a.starts_with("--sts-")),
        "STS values only with credentialScope=sts"
    );

    // An external S3 with STS: temporary keys from the role named, for the time set.
    let sts = render(&[
        "objectStore.enabled=false",
        "storage.endpoint=https://s3.example.com",
        "storage.existingSecret=s3-keys",
        "storage.credentialScope=sts",
        "storage.sts.roleArn=arn:aws:iam::123456789012:role/miniautoml-pods",
        "storage.sts.durationSeconds=7200",
    ]);
    let args = operator_args(&sts);
    for arg in [
        "--storage-credentials=sts",
        "--sts-role-arn=arn:aws:iam::123456789012:role/miniautoml-pods",
        "--sts-duration=7200",
    ] {
        assert!(args.contains(&arg.to_string()), "{arg} not in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--sts-endpoint")), "{args:?}");
    for bad in [
        "storage.sts.durationSeconds=60",
        "storage.sts.durationSeconds=86400",
        "storage.sts.roleArn=my-role",
    ] {
        let error = try_render(&[
            "objectStore.enabled=false",
            "storage.existingSecret=s3-keys",
            "storage.credentialScope=sts",
            bad,
        ])
        .unwrap_err();
        assert!(error.contains("/storage/sts/"), "{bad}: {error}");
    }
    let error = try_render(&["storage.credentialScope=sts"]).unwrap_err();
    assert!(error.contains("for an external S3"), "{error}");
    let error = try_render(&["storage.credentialScope=everyone"]).unwrap_err();
    assert!(error.contains("credentialScope"), "{error}");
}

#[test]
fn the_listed_namespaces_and_the_grpc_namespace_get_upload_keys() {
    let upload_flag = |sets: &[&str]| {
        operator_args(&render(sets))
            .into_iter()
            .find(|a| a.starts_with("--upload-key-namespace"))
    };
    for (sets, expected) in [
        (&[][..], Some("--upload-key-namespace=default,ml")),
        (
            &[
                "uploads.namespaces={team-a,team-b}",
                "uploads.grpcNamespace=false",
            ][..],
            Some("--upload-key-namespace=team-a,team-b"),
        ),
        (
            &["uploads.namespaces=null", "uploads.grpcNamespace=false"][..],
            None,
        ),
    ] {
        assert_eq!(upload_flag(sets).as_deref(), expected, "{sets:?}");
    }
    let error = try_render(&["uploads.namespaces={Not_A_Namespace}"]).unwrap_err();
    assert!(error.contains("uploads"), "{error}");
}

#[test]
fn kueue_permissions_are_granted_only_where_kueue_is_enabled() {
    let rules = |documents: &[Value]| -> Vec<(String, String)> {
        let role = documents
            .iter()
            .find(|d| str(d, "kind") == "ClusterRole" && str(d, "metadata.name") == "miniautoml")
            .expect("the operator's ClusterRole");
        at(role, "rules")
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|rule| {
                let groups = at(rule, "apiGroups").as_sequence().unwrap().clone();
                let resources = at(rule, "resources").as_sequence().unwrap().clone();
                groups.into_iter().flat_map(move |g| {
                    resources
                        .clone()
                        .into_iter()
                        .map(move |r| (g.as_str().unwrap().to_string(), r.as_str().unwrap().to_string()))
                })
            })
            .collect()
    };
    let kueue = |rules: &[(String, String)]| -> Vec<String> {
        rules
            .iter()
            .filter(|(group, _)| group.contains("kueue"))
            .map(|(group, resource)| format!("{group}/{resource}"))
            .collect()
    };
    assert!(kueue(&rules(&render(&[]))).is_empty());
    // Without the grant the operator never asks (an operator refused would be a failed check).
    assert!(operator_args(&render(&[])).contains(&"--kueue=off".to_string()));
    assert!(operator_args(&render(&["kueue.enabled=true"])).contains(&"--kueue=on".to_string()));
    assert_eq!(
        kueue(&rules(&render(&["kueue.enabled=true"]))),
        [
            "kueue.x-k8s.io/workloads",
            "visibility.kueue.x-k8s.io/localqueues/pendingworkloads"
        ]
    );
}

#[test]
fn the_console_has_its_port_and_reads_pod_logs_only_where_it_is_enabled() {
    let on = render(&[]);
    assert!(operator_args(&on).contains(&"--console-addr=0.0.0.0:8090".to_string()));
    let service = serde_yaml::to_string(find(&on, "Service", "miniautoml")).unwrap();
    assert!(service.contains("name: console"), "{service}");
    let operator = grants(find(&on, "ClusterRole", "miniautoml"));
    assert!(operator.contains(&"get pods/log".to_string()), "{operator:?}");
    // The data scientist reads their runs' logs (kubectl logs, the console); nobody else.
    let scientist = grants(find(&on, "ClusterRole", "miniautoml-data-scientist"));
    assert!(scientist.contains(&"get pods/log".to_string()), "{scientist:?}");
    let developer = grants(find(&on, "ClusterRole", "miniautoml-app-developer"));
    assert!(!developer.contains(&"get pods/log".to_string()), "{developer:?}");

    let off = render(&["console.enabled=false"]);
    assert!(operator_args(&off).contains(&"--console-addr=none".to_string()));
    let service = serde_yaml::to_string(find(&off, "Service", "miniautoml")).unwrap();
    assert!(!service.contains("name: console"), "{service}");
    let operator = grants(find(&off, "ClusterRole", "miniautoml"));
    assert!(!operator.contains(&"get pods/log".to_string()), "{operator:?}");
}
