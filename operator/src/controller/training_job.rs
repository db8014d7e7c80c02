//! TrainingJob controller.
//!
//! Beyond the schema and CEL rules, a TrainingJob is valid only when its algorithm is one the
//! operator is configured to run. Launching Jobs and tracking runs are its next stages.

use std::{collections::BTreeMap, sync::Arc};

use kube::{core::DeserializeGuard, runtime::controller::Action};
use miniautoml_api::{TrainingJob, TrainingJobSpec};

use super::{Context, Verdict, reconcile_validated, reconciled};
use crate::Result;

reconciled!(TrainingJob, "trainingjob");

/// The image a TrainingJob runs: `spec.image`, or its algorithm's configured image.
pub fn resolve_image<'a>(
    spec: &'a TrainingJobSpec,
    algorithm_images: &'a BTreeMap<String, String>,
) -> Result<&'a str, Verdict> {
    if let Some(image) = &spec.image {
        return Ok(image);
    }
    let Some(algorithm) = &spec.algorithm else {
        // The CEL rule requires one of the two; an object stored before that rule still gets a
        // clear answer.
        return Err(Verdict::Invalid {
            reason: "NoImage",
            message: "set exactly one of spec.algorithm and spec.image".into(),
        });
    };
    algorithm_images
        .get(algorithm)
        .map(String::as_str)
        .ok_or_else(|| {
            let known: Vec<&str> = algorithm_images.keys().map(String::as_str).collect();
            Verdict::Invalid {
                reason: "UnknownAlgorithm",
                message: format!(
                    "algorithm {algorithm:?} is not configured in the operator (configured: {}); \
                 use one of those, set spec.image instead, or add it to the operator with \
                 --algorithm {algorithm}=IMAGE",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            }
        })
}

/// Validation beyond the schema: the image must be resolvable.
pub fn validate(job: &TrainingJob, ctx: &Context) -> Verdict {
    match resolve_image(&job.spec, &ctx.algorithm_images) {
        Ok(_) => Verdict::Valid,
        Err(invalid) => invalid,
    }
}

/// Reconciles one TrainingJob.
#[tracing::instrument(skip_all, fields(trainingjob = %kube::runtime::reflector::ObjectRef::from_obj(guard.as_ref())))]
pub async fn reconcile(guard: Arc<DeserializeGuard<TrainingJob>>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_validated(guard, ctx, validate).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> TrainingJob {
        serde_yaml::from_str(include_str!("../../../examples/trainingjob.yaml")).unwrap()
    }

    fn images() -> BTreeMap<String, String> {
        BTreeMap::from([(
            "intent-classification".into(),
            "miniautoml/intent-classification:0.1.0".into(),
        )])
    }

    #[test]
    fn a_configured_algorithm_resolves_to_its_image() {
        let job = fixture();
        assert_eq!(
            resolve_image(&job.spec, &images()),
            Ok("miniautoml/intent-classification:0.1.0")
        );
    }

    #[test]
    fn an_explicit_image_is_used_as_is() {
        let mut job = fixture();
        job.spec.algorithm = None;
        job.spec.image = Some("registry.example/custom:7".into());
        assert_eq!(
            resolve_image(&job.spec, &BTreeMap::new()),
            Ok("registry.example/custom:7")
        );
    }

    #[test]
    fn an_unknown_algorithm_names_the_configured_ones_and_the_fixes() {
        let mut job = fixture();
        job.spec.algorithm = Some("random-forest".into());
        let Err(Verdict::Invalid { reason, message }) = resolve_image(&job.spec, &images()) else {
            panic!("an unknown algorithm must be rejected");
        };
        assert_eq!(reason, "UnknownAlgorithm");
        assert!(message.contains("\"random-forest\""), "{message}");
        assert!(message.contains("configured: intent-classification"), "{message}");
        assert!(message.contains("spec.image"), "{message}");

        let Err(Verdict::Invalid { message, .. }) = resolve_image(&job.spec, &BTreeMap::new()) else {
            panic!("an unknown algorithm must be rejected");
        };
        assert!(message.contains("configured: none"), "{message}");
    }

    #[test]
    fn neither_algorithm_nor_image_is_rejected() {
        let mut job = fixture();
        job.spec.algorithm = None;
        assert_eq!(
            resolve_image(&job.spec, &images()).unwrap_err(),
            Verdict::Invalid {
                reason: "NoImage",
                message: "set exactly one of spec.algorithm and spec.image".into(),
            }
        );
    }
}
