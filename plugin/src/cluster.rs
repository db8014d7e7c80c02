//! The cluster as the kubeconfig's user sees it: TrainingJobs, their pods' logs, kubeconfig
//! selection (`--kubeconfig`, `--context`) and the namespace (`-n`, `-A`, else the context's).

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, LogParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use miniautoml_api::{TrainingJob, labels::TRAINING_JOB_LABEL};

use crate::flags::Global;

/// A client and the namespace the command is about (`None`: every namespace).
pub struct Target {
    pub client: Client,
    pub namespace: Option<String>,
    /// The kubeconfig flags, for `kubectl port-forward`.
    pub kubectl_flags: Vec<String>,
}

impl Target {
    /// Connects as `--kubeconfig` and `--context` say (else $KUBECONFIG, ~/.kube/config, or
    /// the pod's ServiceAccount).
    pub async fn connect(global: &Global) -> anyhow::Result<Target> {
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &global.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).with_context(|| format!("kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if global.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
            None => kube::Config::infer()
                .await
                .map_err(|e| anyhow!("no usable Kubernetes configuration: {e}"))?,
        };
        let namespace = match (&global.namespace, global.all_namespaces) {
            (_, true) => None,
            (Some(namespace), false) => Some(namespace.clone()),
            (None, false) => Some(config.default_namespace.clone()),
        };
        let client = Client::try_from(config)?;
        let mut kubectl_flags = Vec::new();
        if let Some(path) = &global.kubeconfig {
            kubectl_flags.push(format!("--kubeconfig={}", path.display()));
        }
        if let Some(context) = &global.context {
            kubectl_flags.push(format!("--context={context}"));
        }
        Ok(Target {
            client,
            namespace,
            kubectl_flags,
        })
    }

    /// The one namespace the command is about (`-A` does not apply).
    pub fn namespace(&self) -> anyhow::Result<String> {
        self.namespace
            .clone()
            .ok_or_else(|| anyhow!("this command is about one namespace: -n NAMESPACE, not -A"))
    }

    fn trainingjobs(&self) -> Api<TrainingJob> {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// Every TrainingJob of the namespace (or all).
    pub async fn runs(&self) -> anyhow::Result<Vec<TrainingJob>> {
        Ok(self.trainingjobs().list(&ListParams::default()).await?.items)
    }

    /// One TrainingJob, by name, in the namespace.
    pub async fn run(&self, name: &str) -> anyhow::Result<TrainingJob> {
        let namespace = self.namespace()?;
        let api: Api<TrainingJob> = Api::namespaced(self.client.clone(), &namespace);
        api.get_opt(name)
            .await?
            .ok_or_else(|| anyhow!("no TrainingJob {name:?} in namespace {namespace:?}"))
    }

    /// The last `tail` lines of each of a run's pods, headed by the pod's name.
    pub async fn logs(&self, name: &str, tail: i64) -> anyhow::Result<String> {
        let namespace = self.namespace()?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let mut list = pods
            .list(&ListParams::default().labels(&format!("{TRAINING_JOB_LABEL}={name}")))
            .await?
            .items;
        if list.is_empty() {
            bail!("run {name:?} has no pods in namespace {namespace:?} (not started, or cleaned up)");
        }
        list.sort_by_key(|p| p.name_any());
        let mut out = String::new();
        for pod in list {
            let params = LogParams {
                tail_lines: Some(tail),
                ..LogParams::default()
            };
            let container = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone());
            let text = pods
                .logs(&pod.name_any(), &LogParams { container, ..params })
                .await
                .unwrap_or_else(|e| format!("(no log: {e})\n"));
            out.push_str(&format!("==> {} <==\n{text}", pod.name_any()));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        Ok(out)
    }
}
