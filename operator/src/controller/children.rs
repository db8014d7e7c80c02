//! Pure pieces the controllers' object builders share: environment variables, compute requests,
//! the storage credentials put into Secrets, and whether an object of a derived name is the
//! controller's own.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, EmptyDirVolumeSource, EnvVar, EnvVarSource, LocalObjectReference, ResourceRequirements,
        SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};

use crate::config::Credentials;

/// `name=value`.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// `name` from key `key` of Secret `secret` (which must exist).
pub fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    secret_entry(name, secret, key, false)
}

/// `name` from key `key` of Secret `secret`, unset when the Secret has no such key.
pub fn from_secret_if_there(name: &str, secret: &str, key: &str) -> EnvVar {
    secret_entry(name, secret, key, true)
}

fn secret_entry(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `cpu` and `memory` quantities that are set.
pub fn cpu_and_memory(cpu: &Option<Quantity>, memory: &Option<Quantity>) -> BTreeMap<String, Quantity> {
    let mut quantities = BTreeMap::new();
    if let Some(cpu) = cpu {
        quantities.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = memory {
        quantities.insert("memory".to_string(), memory.clone());
    }
    quantities
}

/// `quantities` as both requests and limits; `None` when there are none.
pub fn requests_and_limits(quantities: BTreeMap<String, Quantity>) -> Option<ResourceRequirements> {
    (!quantities.is_empty()).then(|| ResourceRequirements {
        requests: Some(quantities.clone()),
        limits: Some(quantities),
        ..Default::default()
    })
}

/// Key of the S3 access key in the Secrets the operator writes.
pub const ACCESS_KEY: &str = "AWS_ACCESS_KEY_ID";
/// Key of the S3 secret key in the Secrets the operator writes.
pub const SECRET_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// Key of the S3 session token (a temporary key's) in the Secrets the operator writes.
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// The Secret entries holding the storage credentials: access key, secret key and, for a
/// temporary key, its session token.
pub fn credential_entries(credentials: &Credentials) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::from([
        (ACCESS_KEY.to_string(), credentials.access_key_id.clone()),
        (SECRET_KEY.to_string(), credentials.secret_access_key.clone()),
    ]);
    if let Some(token) = &credentials.session_token {
        entries.insert(SESSION_TOKEN.to_string(), token.clone());
    }
    entries
}

/// The storage credentials' environment variables, from Secret `secret` (the session token
/// only where the Secret has one).
pub fn credential_env(secret: &str) -> Vec<EnvVar> {
    vec![
        from_secret(ACCESS_KEY, secret, ACCESS_KEY),
        from_secret(SECRET_KEY, secret, SECRET_KEY),
        from_secret_if_there(SESSION_TOKEN, secret, SESSION_TOKEN),
    ]
}

/// A pod spec's `imagePullSecrets` for the Secrets named (the operator's `--image-pull-secret`),
/// `None` when there are none.
pub fn pull_secrets(names: &[String]) -> Option<Vec<LocalObjectReference>> {
    (!names.is_empty()).then(|| {
        names
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    })
}

/// The user our images run as (distroless' `nonroot`).
pub const NONROOT: i64 = 65532;

/// The container security context trainer and predictor pods get unless configured otherwise:
/// the Pod Security Standards' `restricted` profile (non-root, `RuntimeDefault` seccomp, no
/// privilege escalation, every capability dropped) and a read-only root file system. A root
/// image runs as [`NONROOT`] instead of being refused.
pub fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        run_as_group: Some(NONROOT),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// Name of the writable scratch volume mounted at `/tmp` (the root file system is read-only).
const SCRATCH: &str = "tmp";

/// The scratch volume of a trainer or predictor pod: an `emptyDir` for `/tmp`.
pub fn scratch_volume() -> Volume {
    Volume {
        name: SCRATCH.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// Where the scratch volume is mounted.
pub fn scratch_mount() -> VolumeMount {
    VolumeMount {
        name: SCRATCH.into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }
}

/// Whether `child` is controlled by the object with uid `owner` (its controller owner
/// reference names that uid). A controller uses an object of a derived name only then: one
/// that someone else made, or another object's, is never adopted or overwritten.
pub fn controlled_by(child: &ObjectMeta, owner: Option<&str>) -> bool {
    let Some(owner) = owner else { return false };
    child
        .owner_references
        .iter()
        .flatten()
        .any(|reference| reference.controller == Some(true) && reference.uid == owner)
}

/// Why a child cannot be used: `<kind> <name>` exists in `namespace` but belongs to another
/// object or to nobody. The message names its controller and what the user can do.
pub fn name_taken(kind: &str, child: &ObjectMeta, parent: &str) -> String {
    let name = child.name.as_deref().unwrap_or_default();
    let namespace = child.namespace.as_deref().unwrap_or_default();
    let holder = child
        .owner_references
        .iter()
        .flatten()
        .find(|reference| reference.controller == Some(true))
        .map(|reference| format!("belongs to {} {}", reference.kind, reference.name))
        .unwrap_or_else(|| "was not made by the operator".to_string());
    format!(
        "{kind} {name} in namespace {namespace} {holder}, so {parent} cannot use the name: \
         the operator never adopts or overwrites it; delete or rename that {kind}, or give \
         {parent} another name"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_quantity_means_no_requirements() {
        assert_eq!(requests_and_limits(cpu_and_memory(&None, &None)), None);
        let set = requests_and_limits(cpu_and_memory(&Some(Quantity("1".into())), &None)).unwrap();
        assert_eq!(set.requests, set.limits);
        assert_eq!(set.limits.unwrap()["cpu"].0, "1");
    }

    #[test]
    fn only_an_object_this_owner_controls_is_its_own() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owned_by = |uid: &str, controller: Option<bool>| ObjectMeta {
            name: Some("tweets-train".into()),
            namespace: Some("team-a".into()),
            owner_references: Some(vec![OwnerReference {
                kind: "TrainingJob".into(),
                name: "other".into(),
                uid: uid.into(),
                controller,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(controlled_by(&owned_by("u1", Some(true)), Some("u1")));
        assert!(!controlled_by(&owned_by("u2", Some(true)), Some("u1")));
        assert!(
            !controlled_by(&owned_by("u1", None), Some("u1")),
            "an owner, not the controller"
        );
        assert!(!controlled_by(&owned_by("u1", Some(true)), None), "no uid yet");
        let stranger = ObjectMeta {
            name: Some("tweets-train".into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        };
        assert!(!controlled_by(&stranger, Some("u1")));
        assert!(
            name_taken("Job", &stranger, "TrainingJob tweets")
                .starts_with("Job tweets-train in namespace team-a was not made by the operator")
        );
        assert!(
            name_taken("Job", &owned_by("u2", Some(true)), "TrainingJob tweets")
                .contains("belongs to TrainingJob other")
        );
    }
}
