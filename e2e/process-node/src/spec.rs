//! Pure translation of a pod's container into the process that runs it: argv, environment and
//! the Secrets and ConfigMaps it needs.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use crate::mapping::ImageEntry;

/// What a container needs from the API server before it can start.
#[derive(Debug, Default, PartialEq)]
pub struct References {
    /// ConfigMap names.
    pub config_maps: BTreeSet<String>,
    /// Secret names.
    pub secrets: BTreeSet<String>,
}

/// The data of the Secrets and ConfigMaps a container refers to, by name (`None`: not found).
#[derive(Debug, Default)]
pub struct Sources {
    /// ConfigMap data (binaryData is not supported).
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// Secret data, decoded.
    pub secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

/// Facts about the pod's placement the downward API exposes.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The pod's IP.
    pub pod_ip: String,
    /// The node's IP.
    pub host_ip: String,
    /// The node's name.
    pub node_name: String,
    /// `KUBERNETES_SERVICE_HOST` / `_PORT` for in-cluster clients.
    pub api_host: String,
    /// The API server's port.
    pub api_port: u16,
}

/// A container that cannot be started until something changes; the kubelet's reason is
/// `CreateContainerConfigError`.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The Secrets and ConfigMaps `container` reads through env and envFrom.
pub fn references(container: &Container) -> References {
    let mut refs = References::default();
    for var in container.env.iter().flatten() {
        if let Some(from) = &var.value_from {
            if let Some(key) = &from.config_map_key_ref {
                refs.config_maps.insert(key.name.clone());
            }
            if let Some(key) = &from.secret_key_ref {
                refs.secrets.insert(key.name.clone());
            }
        }
    }
    for from in container.env_from.iter().flatten() {
        if let Some(source) = &from.config_map_ref {
            refs.config_maps.insert(source.name.clone());
        }
        if let Some(source) = &from.secret_ref {
            refs.secrets.insert(source.name.clone());
        }
    }
    refs
}

/// The argv that runs `container` under `entry`.
///
/// With `binary`, the binary is the image's entrypoint: it runs with the container's args, or,
/// when the container sets `command`, in place of `command[0]` with the rest of the command
/// before the args; with neither, with the image's default args. With `hostCommands`, the
/// container's command (and args) run as written, `command[0]` from the node's PATH.
/// `$(VAR)` references are expanded from `env` as the kubelet does.
pub fn argv(
    container: &Container,
    entry: &ImageEntry,
    env: &[(String, String)],
) -> Result<Vec<String>, String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let argv: Vec<String> = match &entry.binary {
        Some(binary) => {
            let mut argv = vec![binary.to_string_lossy().into_owned()];
            if !command.is_empty() {
                argv.extend(command.iter().skip(1).map(|c| expand(c, env)));
                argv.extend(args.iter().map(|a| expand(a, env)));
            } else if !args.is_empty() {
                argv.extend(args.iter().map(|a| expand(a, env)));
            } else {
                argv.extend(entry.args.iter().cloned());
            }
            argv
        }
        None => {
            if command.is_empty() {
                return Err(format!(
                    "image {:?} is mapped to the node's own commands (hostCommands), so the \
                     container must set command",
                    container.image.as_deref().unwrap_or_default()
                ));
            }
            command.iter().chain(&args).map(|c| expand(c, env)).collect()
        }
    };
    if argv[0].is_empty() {
        return Err("the container's command[0] is empty".into());
    }
    Ok(argv)
}

/// The binary to execute for `argv[0]`: absolute or relative paths as they are, bare names
/// looked up on `path` (the node's PATH).
pub fn executable(program: &str, path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let candidate = PathBuf::from(program);
        return candidate.is_file().then_some(candidate);
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The container's environment, in the kubelet's order: the image's ENV, the Kubernetes
/// service variables and `HOSTNAME`, envFrom sources, then `env` (later wins; `$(VAR)`
/// expands from what is defined before it).
pub fn environment(
    pod: &Pod,
    container: &Container,
    entry: &ImageEntry,
    placement: &Placement,
    sources: &Sources,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(existing, _)| *existing != name);
        env.push((name, value));
    };
    for (name, value) in &entry.env {
        set(&mut env, name.clone(), value.clone());
    }
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    set(&mut env, "HOSTNAME".into(), pod_name);
    set(
        &mut env,
        "KUBERNETES_SERVICE_HOST".into(),
        placement.api_host.clone(),
    );
    set(
        &mut env,
        "KUBERNETES_SERVICE_PORT".into(),
        placement.api_port.to_string(),
    );

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(source) = &from.config_map_ref {
            lookup_source("configmap", &source.name, source.optional, &sources.config_maps)?
        } else if let Some(source) = &from.secret_ref {
            lookup_source("secret", &source.name, source.optional, &sources.secrets)?
        } else {
            None
        };
        for (key, value) in data.into_iter().flatten() {
            set(&mut env, format!("{prefix}{key}"), value);
        }
    }

    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    Some(field_value(pod, field, placement)?)
                } else if let Some(resource) = &from.resource_field_ref {
                    Some(resource_value(container, resource)?)
                } else if let Some(key) = &from.config_map_key_ref {
                    let data = lookup_source("configmap", &key.name, key.optional, &sources.config_maps)?;
                    key_value("configmap", &key.name, &key.key, key.optional, data)?
                } else if let Some(key) = &from.secret_key_ref {
                    let data = lookup_source("secret", &key.name, key.optional, &sources.secrets)?;
                    key_value("secret", &key.name, &key.key, key.optional, data)?
                } else {
                    return Err(ConfigError(format!("env {}: unsupported valueFrom", var.name)));
                }
            }
            (Some(value), None) => Some(expand(value, &env)),
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

fn lookup_source(
    kind: &str,
    name: &str,
    optional: Option<bool>,
    data: &BTreeMap<String, Option<BTreeMap<String, String>>>,
) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
    match data.get(name) {
        Some(Some(data)) => Ok(Some(data.clone())),
        _ if optional == Some(true) => Ok(None),
        _ => Err(ConfigError(format!("{kind} \"{name}\" not found"))),
    }
}

fn key_value(
    kind: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
    data: Option<BTreeMap<String, String>>,
) -> Result<Option<String>, ConfigError> {
    match data.and_then(|data| data.get(key).cloned()) {
        Some(value) => Ok(Some(value)),
        None if optional == Some(true) => Ok(None),
        None => Err(ConfigError(format!(
            "couldn't find key {key} in {kind} \"{name}\""
        ))),
    }
}

fn field_value(pod: &Pod, field: &ObjectFieldSelector, placement: &Placement) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let path = field.field_path.as_str();
    let from_map = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .unwrap_or_default();
        map.as_ref().and_then(|m| m.get(key).cloned()).unwrap_or_default()
    };
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => placement.node_name.clone(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => placement.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => placement.host_ip.clone(),
        _ if path.starts_with("metadata.labels['") => from_map(&meta.labels, "metadata.labels['"),
        _ if path.starts_with("metadata.annotations['") => {
            from_map(&meta.annotations, "metadata.annotations['")
        }
        _ => return Err(ConfigError(format!("unsupported fieldRef {path}"))),
    })
}

fn resource_value(container: &Container, field: &ResourceFieldSelector) -> Result<String, ConfigError> {
    let resources = container.resources.as_ref();
    let (map, name) = match field.resource.split_once('.') {
        Some(("limits", name)) => (resources.and_then(|r| r.limits.as_ref()), name),
        Some(("requests", name)) => (resources.and_then(|r| r.requests.as_ref()), name),
        _ => {
            return Err(ConfigError(format!(
                "unsupported resourceFieldRef {}",
                field.resource
            )));
        }
    };
    // Like the kubelet, an unset limit reads as the node's capacity; this node reports "0"
    // because it enforces no limits.
    Ok(map
        .and_then(|m| m.get(name))
        .map(|quantity| quantity.0.clone())
        .unwrap_or_else(|| "0".into()))
}

/// Expands `$(VAR)` from `env` the way the kubelet does: `$$` escapes, an unknown reference
/// stays as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_yaml::from_str(
            r#"
metadata:
  name: train-0-abcde
  namespace: team-a
  uid: 1234
  labels: {app: trainer}
  annotations: {batch.kubernetes.io/job-completion-index: "3"}
spec:
  nodeName: process-node
  containers:
  - name: main
    image: miniautoml/intent-classification:0.1.0
    envFrom:
    - configMapRef: {name: settings}
      prefix: CFG_
    env:
    - {name: RANK, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: AWS_SECRET_ACCESS_KEY, valueFrom: {secretKeyRef: {name: s3, key: secret}}}
    - {name: MISSING_OK, valueFrom: {secretKeyRef: {name: absent, key: x, optional: true}}}
    - {name: ADDR, value: "$(POD_IP):8080 $$(POD_IP) $(UNKNOWN)"}
    - {name: LR, value: "0.1"}
"#,
        )
        .unwrap()
    }

    fn entry() -> ImageEntry {
        ImageEntry {
            image: "miniautoml/*".into(),
            binary: Some("/bin/trainer".into()),
            args: vec!["train".into()],
            env: [
                ("LR".to_string(), "1".to_string()),
                ("MODE".to_string(), "x".to_string()),
            ]
            .into(),
            host_commands: false,
        }
    }

    fn placement() -> Placement {
        Placement {
            pod_ip: "127.0.0.7".into(),
            host_ip: "127.0.0.1".into(),
            node_name: "process-node".into(),
            api_host: "127.0.0.1".into(),
            api_port: 36443,
        }
    }

    fn sources() -> Sources {
        Sources {
            config_maps: [(
                "settings".to_string(),
                Some([("A".to_string(), "1".to_string())].into()),
            )]
            .into(),
            secrets: [
                (
                    "s3".to_string(),
                    Some([("secret".to_string(), "hunter2".to_string())].into()),
                ),
                ("absent".to_string(), None),
            ]
            .into(),
        }
    }

    fn container(pod: &Pod) -> Container {
        pod.spec.as_ref().unwrap().containers[0].clone()
    }

    #[test]
    fn environment_follows_the_kubelet() {
        let pod = pod();
        let env = environment(&pod, &container(&pod), &entry(), &placement(), &sources()).unwrap();
        let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("RANK"), Some("3"));
        assert_eq!(get("POD_IP"), Some("127.0.0.7"));
        assert_eq!(get("POD_NAME"), Some("train-0-abcde"));
        assert_eq!(get("HOSTNAME"), Some("train-0-abcde"));
        assert_eq!(get("APP"), Some("trainer"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), Some("hunter2"));
        assert_eq!(get("MISSING_OK"), None);
        assert_eq!(get("CFG_A"), Some("1"));
        assert_eq!(get("ADDR"), Some("127.0.0.7:8080 $(POD_IP) $(UNKNOWN)"));
        assert_eq!(
            get("LR"),
            Some("0.1"),
            "the container's env overrides the image's"
        );
        assert_eq!(get("MODE"), Some("x"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("36443"));
    }

    #[test]
    fn a_missing_secret_or_key_is_a_config_error() {
        let pod = pod();
        let mut missing = sources();
        missing.secrets.insert("s3".into(), None);
        let error = environment(&pod, &container(&pod), &entry(), &placement(), &missing).unwrap_err();
        assert_eq!(error.0, "secret \"s3\" not found");
        let mut no_key = sources();
        no_key.secrets.insert("s3".into(), Some(BTreeMap::new()));
        let error = environment(&pod, &container(&pod), &entry(), &placement(), &no_key).unwrap_err();
        assert!(error.0.contains("couldn't find key secret in secret"), "{error}");
    }

    #[test]
    fn references_name_every_source() {
        let pod = pod();
        let refs = references(&container(&pod));
        assert_eq!(refs.config_maps, ["settings".to_string()].into());
        assert_eq!(refs.secrets, ["absent".to_string(), "s3".to_string()].into());
    }

    #[test]
    fn argv_follows_docker_entrypoint_and_cmd_rules() {
        let env = vec![("N".to_string(), "5".to_string())];
        let mut c = Container {
            name: "c".into(),
            image: Some("miniautoml/x:1".into()),
            ..Default::default()
        };
        assert_eq!(argv(&c, &entry(), &env).unwrap(), ["/bin/trainer", "train"]);
        c.args = Some(vec!["eval".into(), "--n=$(N)".into()]);
        assert_eq!(
            argv(&c, &entry(), &env).unwrap(),
            ["/bin/trainer", "eval", "--n=5"]
        );
        c.command = Some(vec!["/app/trainer".into(), "serve".into()]);
        assert_eq!(
            argv(&c, &entry(), &env).unwrap(),
            ["/bin/trainer", "serve", "eval", "--n=5"]
        );
        let host = ImageEntry {
            binary: None,
            host_commands: true,
            ..entry()
        };
        c.command = Some(vec!["sh".into(), "-c".into()]);
        c.args = Some(vec!["exit $(N)".into()]);
        assert_eq!(argv(&c, &host, &env).unwrap(), ["sh", "-c", "exit 5"]);
        c.command = None;
        assert!(argv(&c, &host, &env).unwrap_err().contains("must set command"));
    }

    #[test]
    fn executables_come_from_the_path() {
        let path = std::env::var("PATH").unwrap();
        assert!(executable("sh", &path).is_some());
        assert!(executable("no-such-program-here", &path).is_none());
        assert!(executable("/no/such/file", &path).is_none());
    }
}
