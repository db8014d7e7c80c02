//! What the operator is told about its algorithms beyond their images, shared by the
//! TrainingJob controller and the gRPC `Train`.

use std::collections::BTreeMap;

use miniautoml_api::{TrainingJob, training_job::Contract};

/// Why a run of `algorithm` cannot have `workers` workers, given the configured maxima (an
/// algorithm that does not train data-parallel has 1, so it refuses more rather than run copies
/// of the same work); `None` when it can. An image of the spec's own (`algorithm: None`) and an
/// unlisted algorithm have no maximum but the CRD's.
pub fn too_many_workers(
    algorithm: Option<&str>,
    workers: i32,
    max_workers: &BTreeMap<String, u32>,
) -> Option<String> {
    let algorithm = algorithm?;
    let max = *max_workers.get(algorithm)?;
    (workers > max as i32).then(|| {
        if max == 1 {
            format!(
                "algorithm {algorithm:?} trains on one worker (it has no data-parallel training, so {workers} workers \
                 would each do the same work); set workers: 1, or use an image that trains data-parallel"
            )
        } else {
            format!("algorithm {algorithm:?} trains on at most {max} workers; set workers to {max} or fewer")
        }
    })
}

/// How `job`'s trainer reports: its spec's contract, else its algorithm's as configured, else
/// with its run's token.
pub fn contract(job: &TrainingJob, algorithm_contracts: &BTreeMap<String, Contract>) -> Contract {
    job.spec
        .contract
        .or_else(|| {
            let algorithm = job.spec.algorithm.as_ref().filter(|_| job.spec.image.is_none())?;
            algorithm_contracts.get(algorithm).copied()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_contract_wins_over_its_algorithms() {
        let configured = BTreeMap::from([("orig".to_string(), Contract::Original)]);
        let job = |spec: serde_json::Value| -> TrainingJob {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "miniautoml.io/v1alpha1", "kind": "TrainingJob",
                "metadata": {"name": "t", "namespace": "n"},
                "spec": spec,
            }))
            .unwrap()
        };
        let base = serde_json::json!({"dataset": {"name": "d"}, "outputModelName": "m"});
        let with = |extra: serde_json::Value| {
            let mut spec = base.clone();
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            job(spec)
        };
        assert_eq!(
            contract(&with(serde_json::json!({"algorithm": "orig"})), &configured),
            Contract::Original
        );
        assert_eq!(
            contract(&with(serde_json::json!({"algorithm": "other"})), &configured),
            Contract::MiniAutoML
        );
        assert_eq!(
            contract(
                &with(serde_json::json!({"algorithm": "orig", "contract": "MiniAutoML"})),
                &configured
            ),
            Contract::MiniAutoML
        );
        assert_eq!(
            contract(
                &with(serde_json::json!({"image": "me/original:1", "contract": "Original"})),
                &configured
            ),
            Contract::Original
        );
        assert_eq!(
            contract(&with(serde_json::json!({"image": "me/ours:1"})), &configured),
            Contract::MiniAutoML
        );
    }

    #[test]
    fn an_algorithm_without_data_parallel_training_refuses_more_workers() {
        let max = BTreeMap::from([("intent-classification".to_string(), 1), ("ddp".to_string(), 4)]);
        assert_eq!(too_many_workers(Some("intent-classification"), 1, &max), None);
        let refused = too_many_workers(Some("intent-classification"), 3, &max).unwrap();
        assert!(refused.contains("trains on one worker"), "{refused}");
        assert_eq!(too_many_workers(Some("ddp"), 4, &max), None);
        assert!(
            too_many_workers(Some("ddp"), 5, &max)
                .unwrap()
                .contains("at most 4")
        );
        // Unlisted algorithms and images of the spec's own: the CRD's limit only.
        assert_eq!(too_many_workers(Some("other"), 64, &max), None);
        assert_eq!(too_many_workers(None, 64, &max), None);
    }
}
