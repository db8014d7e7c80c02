//! Start-up checks against the cluster.

use kube::Client;
use miniautoml_api::{GROUP, VERSION};

use crate::StartupError;

/// Names (`<plural>.<group>`) of the CRDs the operator needs that are not among `served`, the
/// plural resource names the apiserver serves for `miniautoml.io/v1alpha1`.
pub fn missing_crds(served: &[String]) -> Vec<String> {
    miniautoml_api::crd::crds()
        .into_iter()
        .filter(|crd| !served.contains(&crd.spec.names.plural))
        .filter_map(|crd| crd.metadata.name)
        .collect()
}

/// Fails with the names of the missing CRDs and how to install them, unless the apiserver serves
/// every MiniAutoML resource. Uses discovery, which needs no extra RBAC.
pub async fn check_crds(client: &Client) -> Result<(), StartupError> {
    let served = match client
        .list_api_group_resources(&format!("{GROUP}/{VERSION}"))
        .await
    {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        // A group nothing serves answers a plain-text 404, not a Status with reason NotFound.
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(other) => return Err(other.into()),
    };
    let missing = missing_crds(&served);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StartupError::CrdsMissing(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_crd_and_how_to_install_it() {
        assert_eq!(
            missing_crds(&[]),
            [
                "datasets.miniautoml.io",
                "trainingjobs.miniautoml.io",
                "modeldeployments.miniautoml.io"
            ]
        );
        let served = vec![
            "datasets".to_string(),
            "datasets/status".to_string(),
            "modeldeployments".into(),
        ];
        let missing = missing_crds(&served);
        assert_eq!(missing, ["trainingjobs.miniautoml.io"]);
        let message = StartupError::CrdsMissing(missing).to_string();
        assert!(message.contains("trainingjobs.miniautoml.io"), "{message}");
        assert!(message.contains("kubectl apply -f crds/"), "{message}");
    }

    #[test]
    fn nothing_is_missing_when_all_are_served() {
        let served: Vec<String> = ["datasets", "trainingjobs", "modeldeployments"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(missing_crds(&served).is_empty());
    }
}
