//! Every method the gRPC API answers, in one table ([`METHODS`]): what calling it takes
//! ([`Access`]: a permission a Kubernetes user needs, the run's own token, or nothing), whether
//! it writes (a follower forwards a write to the leader) and whether the original contract's
//! plain-text listener serves it too. The auth layer (`auth::access`), the forwarder
//! (`forward::writes`), the original contract's listener and the method table in
//! docs/security.md all read it; a test checks it against the methods the protos define. A
//! leaf: it uses nothing else of the crate.

use std::fmt;

/// The API group every permission is on.
pub const GROUP: &str = "miniautoml.io";

/// A verb on a resource (or a subresource of it), as RBAC rules name them: a `miniautoml.io`
/// one but for the console's pod logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The API group: [`GROUP`], or `""` (core) for pods.
    pub group: &'static str,
    /// `get`, `list`, `create`, `update` or `delete`.
    pub verb: &'static str,
    /// `datasets`, `trainingjobs` or `modeldeployments`.
    pub resource: &'static str,
    /// A subresource only RBAC knows (`snapshots`, `predict`), or none.
    pub subresource: Option<&'static str>,
}

impl Permission {
    const fn on(verb: &'static str, resource: &'static str) -> Permission {
        Permission {
            group: GROUP,
            verb,
            resource,
            subresource: None,
        }
    }

    const fn on_sub(verb: &'static str, resource: &'static str, subresource: &'static str) -> Permission {
        Permission {
            group: GROUP,
            verb,
            resource,
            subresource: Some(subresource),
        }
    }

    /// Reading a run: GetTrainingStatus, GetRunStatus, GetArtifact.
    pub const GET_TRAINING_JOBS: Permission = Permission::on("get", "trainingjobs");
    /// Train.
    pub const CREATE_TRAINING_JOBS: Permission = Permission::on("create", "trainingjobs");
    /// PredictionService/Predict (which deploys the run's model when none serves it).
    pub const PREDICT: Permission = Permission::on_sub("create", "modeldeployments", "predict");
    /// The console's runs table.
    pub const LIST_TRAINING_JOBS: Permission = Permission::on("list", "trainingjobs");
    /// ListDatasets; the console's datasets table.
    pub const LIST_DATASETS: Permission = Permission::on("list", "datasets");
    /// GetDatasetSummary, FetchTrainingDataset; the console's dataset page.
    pub const GET_DATASETS: Permission = Permission::on("get", "datasets");
    /// CreateDataset.
    pub const CREATE_DATASETS: Permission = Permission::on("create", "datasets");
    /// UpdateDataset (appends a commit).
    pub const UPDATE_DATASETS: Permission = Permission::on("update", "datasets");
    /// DeleteDataset.
    pub const DELETE_DATASETS: Permission = Permission::on("delete", "datasets");
    /// PrepareTrainingDataset: a snapshot, without the right to append commits.
    pub const CREATE_SNAPSHOTS: Permission = Permission::on_sub("create", "datasets", "snapshots");
    /// The console's deployments table.
    pub const LIST_MODEL_DEPLOYMENTS: Permission = Permission::on("list", "modeldeployments");
    /// The console's deployment page.
    pub const GET_MODEL_DEPLOYMENTS: Permission = Permission::on("get", "modeldeployments");
    /// A run's pod log lines on its console page (core `pods/log`).
    pub const POD_LOGS: Permission = Permission {
        group: "",
        verb: "get",
        resource: "pods",
        subresource: Some("log"),
    };
}

impl fmt::Display for Permission {
    /// `create datasets.miniautoml.io`, `create modeldeployments.miniautoml.io/predict`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group {
            "" => write!(f, "{} {}", self.verb, self.resource)?,
            group => write!(f, "{} {}.{group}", self.verb, self.resource)?,
        }
        match self.subresource {
            Some(sub) => write!(f, "/{sub}"),
            None => Ok(()),
        }
    }
}

/// What calling a method takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health checking and reflection.
    Open,
    /// The run's own token, checked by the metadata store (the trainers' writes).
    RunToken,
    /// A Kubernetes user with this permission in the gRPC namespace.
    Needs(Permission),
    /// Not a method of this server (answered UNIMPLEMENTED without looking at the caller).
    Unknown,
}

/// One method of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method {
    /// Its gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    /// What calling it takes.
    pub access: Access,
    /// Whether it writes: a follower forwards it to the leader.
    pub writes: bool,
    /// Whether the original contract's plain-text listener serves it too (a run's reports).
    pub original_contract: bool,
}

const fn read(path: &'static str, permission: Permission) -> Method {
    Method {
        path,
        access: Access::Needs(permission),
        writes: false,
        original_contract: false,
    }
}

const fn write(path: &'static str, permission: Permission) -> Method {
    Method {
        path,
        access: Access::Needs(permission),
        writes: true,
        original_contract: false,
    }
}

const fn report(path: &'static str) -> Method {
    Method {
        path,
        access: Access::RunToken,
        writes: true,
        original_contract: true,
    }
}

/// Every method the operator's gRPC API answers, besides health checking and reflection.
pub const METHODS: &[Method] = &[
    write(
        "/data_management.DataManagementService/CreateDataset",
        Permission::CREATE_DATASETS,
    ),
    write(
        "/data_management.DataManagementService/UpdateDataset",
        Permission::UPDATE_DATASETS,
    ),
    write(
        "/data_management.DataManagementService/DeleteDataset",
        Permission::DELETE_DATASETS,
    ),
    write(
        "/data_management.DataManagementService/PrepareTrainingDataset",
        Permission::CREATE_SNAPSHOTS,
    ),
    read(
        "/data_management.DataManagementService/GetDatasetSummary",
        Permission::GET_DATASETS,
    ),
    read(
        "/data_management.DataManagementService/FetchTrainingDataset",
        Permission::GET_DATASETS,
    ),
    read(
        "/data_management.DataManagementService/ListDatasets",
        Permission::LIST_DATASETS,
    ),
    write(
        "/training.TrainingService/Train",
        Permission::CREATE_TRAINING_JOBS,
    ),
    read(
        "/training.TrainingService/GetTrainingStatus",
        Permission::GET_TRAINING_JOBS,
    ),
    read(
        "/metadata_store.MetadataStoreService/GetRunStatus",
        Permission::GET_TRAINING_JOBS,
    ),
    read(
        "/metadata_store.MetadataStoreService/GetArtifact",
        Permission::GET_TRAINING_JOBS,
    ),
    report("/metadata_store.MetadataStoreService/LogRunStart"),
    report("/metadata_store.MetadataStoreService/LogEpoch"),
    report("/metadata_store.MetadataStoreService/CreateArtifact"),
    report("/metadata_store.MetadataStoreService/LogRunEnd"),
    read("/prediction.PredictionService/Predict", Permission::PREDICT),
];

/// Methods the protos define that the operator does not serve: the predictors' own.
pub const SERVED_ELSEWHERE: &[&str] = &["/prediction.Predictor/PredictorPredict"];

/// The method at gRPC `path`, when the operator serves it.
pub fn find(path: &str) -> Option<&'static Method> {
    METHODS.iter().find(|method| method.path == path)
}

/// What calling the method at gRPC `path` takes: open for health checking and reflection,
/// [`Access::Unknown`] for a path the table lacks.
pub fn access(path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        return Access::Open;
    }
    find(path).map_or(Access::Unknown, |method| method.access)
}

/// Whether the method at gRPC `path` writes (a follower forwards it to the leader).
pub fn writes(path: &str) -> bool {
    find(path).is_some_and(|method| method.writes)
}

/// The table as docs/security.md shows it (Markdown), between its markers.
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| Method | Who may call | Writes (a follower forwards it to the leader) |\n|---|---|---|\n",
    );
    for method in METHODS {
        let name = method.path.trim_start_matches('/');
        let name = name.split_once('.').map_or(name, |(_, rest)| rest);
        let who = match method.access {
            // A method naming a run checks again in the run's namespace.
            Access::Needs(permission @ (Permission::GET_TRAINING_JOBS | Permission::PREDICT)) => {
                format!("a user who may `{permission}`, in the gRPC namespace and in the run's")
            }
            Access::Needs(permission) => format!("a user who may `{permission}`"),
            Access::RunToken => {
                "the run's own pods, with its token (or, plain text, from its pod's address)".to_string()
            }
            Access::Open => "anyone".to_string(),
            Access::Unknown => "nobody".to_string(),
        };
        let writes = if method.writes { "yes" } else { "no" };
        table.push_str(&format!("| `{name}` | {who} | {writes} |\n"));
    }
    table.push_str("| `grpc.health.v1.Health/*`, server reflection | anyone (no data) | no |\n");
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defined_methods() -> Vec<String> {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(miniautoml_proto::FILE_DESCRIPTOR_SET).unwrap();
        set.file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service.method.iter().map(move |method| {
                        format!("/{}.{}/{}", file.package(), service.name(), method.name())
                    })
                })
            })
            .collect()
    }

    #[test]
    fn the_table_holds_every_method_the_protos_define_and_no_other() {
        let defined = defined_methods();
        for path in &defined {
            assert!(
                find(path).is_some() || SERVED_ELSEWHERE.contains(&path.as_str()),
                "{path} is in the protos but not in METHODS: say who may call it"
            );
        }
        for method in METHODS {
            assert!(
                defined.iter().any(|path| path == method.path),
                "{} is in METHODS but not in the protos",
                method.path
            );
            assert_eq!(
                METHODS.iter().filter(|m| m.path == method.path).count(),
                1,
                "{} twice",
                method.path
            );
        }
    }

    #[test]
    fn only_reports_go_by_run_token_and_every_report_writes() {
        for method in METHODS {
            let by_token = method.access == Access::RunToken;
            assert_eq!(by_token, method.original_contract, "{}", method.path);
            if by_token {
                assert!(method.writes, "{}", method.path);
            }
        }
    }

    #[test]
    fn a_read_needs_get_or_list_and_a_write_another_verb() {
        for method in METHODS {
            if let Access::Needs(permission) = method.access {
                let reads = matches!(permission.verb, "get" | "list");
                // Predict only reads a model (it may create a ModelDeployment on the way).
                let predict = method.path == "/prediction.PredictionService/Predict";
                assert_eq!(reads || predict, !method.writes, "{}: {permission}", method.path);
            }
        }
    }

    #[test]
    fn health_and_reflection_are_open_and_anything_else_unknown() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
        assert_eq!(
            access("/data_management.DataManagementService/Drop"),
            Access::Unknown
        );
        assert_eq!(access("/other.Service/Call"), Access::Unknown);
        assert_eq!(access("nonsense"), Access::Unknown);
        assert!(!writes("/data_management.DataManagementService/Drop"));
        assert_eq!(
            access("/data_management.DataManagementService/PrepareTrainingDataset"),
            Access::Needs(Permission::CREATE_SNAPSHOTS)
        );
        assert_eq!(
            Permission::PREDICT.to_string(),
            "create modeldeployments.miniautoml.io/predict"
        );
        assert_eq!(Permission::POD_LOGS.to_string(), "get pods/log");
    }

    /// docs/security.md shows the table as [`markdown_table`] makes it; `make generate` writes
    /// it there (MINIAUTOML_WRITE_DOCS=1).
    #[test]
    fn docs_security_md_shows_this_table() {
        const BEGIN: &str = "<!-- methods table: generated from operator/src/grpc/methods.rs -->\n";
        const END: &str = "<!-- end of methods table -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text
            .find(BEGIN)
            .expect("the table's begin marker in docs/security.md")
            + BEGIN.len();
        let end = start + text[start..].find(END).expect("the table's end marker");
        let table = markdown_table();
        if text[start..end] != table && std::env::var_os("MINIAUTOML_WRITE_DOCS").is_some() {
            std::fs::write(path, format!("{}{table}{}", &text[..start], &text[end..])).unwrap();
            return;
        }
        assert_eq!(
            text[start..end],
            table,
            "docs/security.md's methods table is stale: run `make generate`"
        );
    }
}
