//! Validation beyond the CRD schema and its CEL rules: what only the operator knows, namely the
//! algorithms it is configured with.

use std::collections::BTreeMap;

use miniautoml_api::{TrainingJob, TrainingJobSpec};

use crate::context::Context;

/// A spec the operator cannot act on until the user changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// CamelCase reason for the `Accepted` condition and the event.
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The image a TrainingJob runs: `spec.image`, or its algorithm's configured image.
pub fn resolve_image<'a>(
    spec: &'a TrainingJobSpec,
    algorithm_images: &'a BTreeMap<String, String>,
) -> Result<&'a str, Invalid> {
    if let Some(image) = &spec.image {
        return Ok(image);
    }
    let Some(algorithm) = &spec.algorithm else {
        // The CEL rule requires one of the two; an object stored before that rule still gets a
        // clear answer.
        return Err(Invalid {
            reason: "NoImage",
            message: "set exactly one of spec.algorithm and spec.image".into(),
        });
    };
    algorithm_images
        .get(algorithm)
        .map(String::as_str)
        .ok_or_else(|| {
            let known: Vec<&str> = algorithm_images.keys().map(String::as_str).collect();
            Invalid {
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

/// Validation beyond the schema: the image must be resolvable; returns it.
pub fn validate<'a>(job: &'a TrainingJob, ctx: &'a Context) -> Result<&'a str, Invalid> {
    resolve_image(&job.spec, &ctx.algorithm_images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> TrainingJob {
        serde_yaml::from_str(include_str!("../../../../examples/trainingjob.yaml")).unwrap()
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
        let Err(Invalid { reason, message }) = resolve_image(&job.spec, &images()) else {
            panic!("an unknown algorithm must be rejected");
        };
        assert_eq!(reason, "UnknownAlgorithm");
        assert!(message.contains("\"random-forest\""), "{message}");
        assert!(message.contains("configured: intent-classification"), "{message}");
        assert!(message.contains("spec.image"), "{message}");

        let Err(Invalid { message, .. }) = resolve_image(&job.spec, &BTreeMap::new()) else {
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
            Invalid {
                reason: "NoImage",
                message: "set exactly one of spec.algorithm and spec.image".into(),
            }
        );
    }
}
