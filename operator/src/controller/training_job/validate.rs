//! Validation beyond the CRD schema and its CEL rules: what only the operator knows, namely the
//! algorithms it is configured with.

use std::collections::BTreeMap;

use miniautoml_api::{TrainingJob, TrainingJobSpec, training_job::Contract};

use crate::{
    algorithms::{self, too_many_workers},
    context::Context,
};

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

/// Validation beyond the schema: the image must be resolvable, and the algorithm must train
/// with that many workers; returns the image.
pub fn validate<'a>(job: &'a TrainingJob, ctx: &'a Context) -> Result<&'a str, Invalid> {
    let spec = &job.spec;
    if let Some(message) = too_many_workers(
        spec.algorithm.as_deref(),
        spec.workers,
        &ctx.algorithm_max_workers,
    ) {
        return Err(Invalid {
            reason: "TooManyWorkers",
            message,
        });
    }
    if let Some(training) = &ctx.training
        && training.original_contract_address.is_none()
        && algorithms::contract(job, &training.algorithm_contracts) == Contract::Original
    {
        return Err(Invalid {
            reason: "NoOriginalContractListener",
            message: "this run reports by the original contract (no token, plain text), but the operator \
                      runs no listener for it (--original-contract-addr=none); set contract: MiniAutoML \
                      for an image that sends its run's token, or ask an administrator to turn the listener on"
                .into(),
        });
    }
    if let Some(queue) = &spec.queue_name
        && ctx.kueue.is_none()
    {
        return Err(Invalid {
            reason: "NoKueue",
            message: format!(
                "queueName {queue:?} asks Kueue to admit this run, but this operator does not use Kueue: \
                 the cluster serves no kueue.x-k8s.io/v1beta2 Workloads, the operator may not read them \
                 (chart value kueue.enabled=true), or Kueue was installed after the operator started \
                 (restart it); remove queueName to run it in the operator's own queue"
            ),
        });
    }
    resolve_image(&job.spec, &ctx.algorithm_images)
}
