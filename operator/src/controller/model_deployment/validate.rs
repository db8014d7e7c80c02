//! Whether what a ModelDeployment references can be deployed: a TrainingJob that Succeeded with
//! a model artifact, and an operator that can give predictors storage credentials. A reference
//! that cannot be served (yet) leaves the current predictors running.

use miniautoml_api::{
    TrainingJob,
    model_deployment::{NotServable, ServedModel},
};

use crate::context::PredictorSettings;

/// The model to serve, or why the referenced one cannot be.
pub fn model(job: &Result<TrainingJob, NotServable>) -> Result<ServedModel, NotServable> {
    job.as_ref()
        .map_err(Clone::clone)
        .and_then(|job| job.served_model())
}

/// Why nothing can be deployed whatever the model (the operator has no storage credentials).
pub fn blocked(settings: Option<&PredictorSettings>) -> Option<NotServable> {
    settings.is_none().then(|| {
        (
            "StorageNotConfigured",
            "the operator has no storage credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), \
             so predictors could not load models"
                .to_string(),
        )
    })
}

#[cfg(test)]
pub(super) mod tests {
    use kube::ResourceExt;
    use miniautoml_api::{
        TrainingJobStatus,
        labels::RUN_ID_LABEL,
        training_job::{ArtifactStatus, TrainingPhase},
    };

    use super::*;

    /// A TrainingJob in `phase` with run id `run` (and, once Succeeded, its artifact).
    pub fn job(phase: TrainingPhase, run: &str) -> TrainingJob {
        let mut job: TrainingJob =
            serde_yaml::from_str(include_str!("../../../../examples/trainingjob.yaml")).unwrap();
        job.metadata.namespace = Some("team-a".into());
        job.labels_mut().insert(RUN_ID_LABEL.into(), run.into());
        job.status = Some(TrainingJobStatus {
            run_id: Some(run.into()),
            phase: Some(phase),
            artifact: (phase == TrainingPhase::Succeeded).then(|| ArtifactStatus {
                uri: format!("s3://b/models/team-a/twitter-model/{run}/"),
                version: run.into(),
                ..Default::default()
            }),
            message: Some("test accuracy 0.8".into()),
            ..Default::default()
        });
        job
    }

    #[test]
    fn only_a_succeeded_run_with_an_artifact_is_servable() {
        let served = model(&Ok(job(TrainingPhase::Succeeded, "3"))).unwrap();
        assert_eq!(served.run_id, "3");
        assert_eq!(served.uri, "s3://b/models/team-a/twitter-model/3/");
        let reason = |job| model(&Ok(job)).unwrap_err().0;
        assert_eq!(reason(job(TrainingPhase::Running, "3")), "TrainingNotSucceeded");
        assert_eq!(reason(job(TrainingPhase::Failed, "3")), "TrainingFailed");
        let mut no_artifact = job(TrainingPhase::Succeeded, "3");
        no_artifact.status.as_mut().unwrap().artifact = None;
        // A run-id label the user set is not the run's id.
        let mut labelled_only = job(TrainingPhase::Succeeded, "3");
        labelled_only.status.as_mut().unwrap().run_id = None;
        assert_eq!(reason(labelled_only), "NoRunId");
        assert_eq!(reason(no_artifact), "NoArtifact");
        let missing = Err(("RunNotFound", "no run 9".to_string()));
        assert_eq!(model(&missing).unwrap_err().0, "RunNotFound");
    }

    #[test]
    fn without_storage_nothing_is_deployed() {
        assert_eq!(blocked(None).unwrap().0, "StorageNotConfigured");
    }
}
