//! The status of a ModelDeployment, computed once per reconcile by a pure function from what
//! the reconcile found ([`Observed`]): the model referenced, the predictors' Deployment and
//! their pods. `status.servedRun` changes only once every replica serves the new run.

use std::sync::Arc;

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::ResourceExt;
use miniautoml_api::{
    ModelDeployment, ModelDeploymentStatus,
    model_deployment::{AVAILABLE, MODEL_READY, NotServable, READY, ServedModel},
};

use super::build::{endpoint, rollout, template_run};
use crate::conditions::{self, ACCEPTED};

/// What the controller found, for [`record`].
pub struct Observed<'a> {
    /// The referenced model, or why it cannot be served.
    pub model: &'a Result<ServedModel, NotServable>,
    /// The predictors' Deployment, if any.
    pub deployment: Option<&'a Deployment>,
    /// Why predictor pods are failing, if they are.
    pub pod_problem: Option<String>,
    /// Why nothing can be deployed regardless of the model (e.g. storage not configured).
    pub blocked: Option<NotServable>,
}

/// Records what was observed in `md`'s status; returns whether anything changed.
pub fn record(
    md: &ModelDeployment,
    status: &mut ModelDeploymentStatus,
    observed: &Observed,
    now: &Time,
) -> bool {
    let before = status.clone();
    let generation = md.metadata.generation;
    status.observed_generation = generation;
    let mut set = |type_: &str, ok: bool, reason: &str, message: &str| {
        conditions::At { generation, now }.set(&mut status.conditions, type_, ok, reason, message);
    };
    set(ACCEPTED, true, "Valid", "The spec is valid");
    match observed.model {
        Ok(model) => set(
            MODEL_READY,
            true,
            "Succeeded",
            &format!(
                "run {} of TrainingJob {} ({})",
                model.run_id, model.training_job, model.uri
            ),
        ),
        Err((reason, message)) => set(MODEL_READY, false, reason, message),
    }
    let desired = md.spec.replicas;
    let Some(deployment) = observed.deployment else {
        let (reason, message) = observed
            .blocked
            .clone()
            .or_else(|| observed.model.as_ref().err().cloned())
            .unwrap_or(("Deploying", "creating the predictors".into()));
        set(READY, false, reason, &format!("nothing is deployed: {message}"));
        set(AVAILABLE, false, "NotDeployed", "no predictor exists");
        status.replicas = 0;
        status.ready_replicas = 0;
        status.served_run = None;
        status.model_version = None;
        status.endpoint = None;
        return *status != before;
    };
    let state = rollout(deployment, desired);
    status.replicas = state.replicas;
    status.ready_replicas = state.ready;
    status.endpoint = Some(endpoint(md));
    let deployed = template_run(deployment).map(str::to_string);
    let target = observed.model.as_ref().ok().map(|m| m.run_id.clone());
    let rolled_out = state.complete && (target.is_none() || deployed == target);
    if rolled_out {
        if desired == 0 {
            status.served_run = None;
            status.model_version = None;
        } else {
            status.served_run = deployed.clone();
            status.model_version = deployment
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.env.as_ref())
                .and_then(|env| env.iter().find(|e| e.name == "MODEL_VERSION"))
                .and_then(|e| e.value.clone());
        }
    }
    let run = deployed.as_deref().unwrap_or("-");
    match (&observed.model, rolled_out) {
        (Err((reason, message)), _) => set(
            READY,
            false,
            reason,
            &format!("still serving run {run}: {message}"),
        ),
        (Ok(_), true) if desired == 0 => set(READY, true, "ScaledToZero", "replicas is 0"),
        (Ok(_), true) => set(
            READY,
            true,
            "RolledOut",
            &format!("{desired} of {desired} replicas serve run {run}"),
        ),
        (Ok(model), false) => {
            let problem = observed
                .pod_problem
                .as_ref()
                .map(|p| format!("; {p}"))
                .unwrap_or_default();
            set(
                READY,
                false,
                "RollingOut",
                &format!(
                    "rolling out run {}: {} of {desired} replicas updated, {} ready{problem}",
                    model.run_id, state.updated, state.ready
                ),
            );
        }
    }
    if state.ready > 0 {
        set(
            AVAILABLE,
            true,
            "ReplicasReady",
            &format!("{} of {} replicas ready", state.ready, state.replicas),
        );
    } else {
        set(AVAILABLE, false, "NoReadyReplicas", "no predictor is ready");
    }
    *status != before
}

/// Why a predictor pod is failing, if one is: a crash loop, an exit, a pull error — of its
/// storage initializer (a model that could not be fetched or verified) or of the predictor.
pub fn pod_problem(pods: &[Arc<Pod>]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let statuses = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        statuses.into_iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref();
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let waiting_reason = waiting.and_then(|w| w.reason.clone());
            match (waiting_reason, last) {
                (Some(reason), Some(last)) if c.restart_count > 0 => Some(format!(
                    "pod {} is {reason}: the {} exited {} after {} restarts{}",
                    pod.name_any(),
                    c.name,
                    last.exit_code,
                    c.restart_count,
                    last.message
                        .as_deref()
                        .map(|m| format!(" ({})", m.trim()))
                        .unwrap_or_default()
                )),
                (Some(reason), _) if reason != "ContainerCreating" && reason != "PodInitializing" => {
                    Some(format!(
                        "pod {} is {reason}{}",
                        pod.name_any(),
                        waiting
                            .and_then(|w| w.message.as_deref())
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ))
                }
                _ => None,
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{api::apps::v1::DeploymentStatus, jiff::Timestamp};
    use miniautoml_api::training_job::TrainingPhase;

    use super::*;
    use crate::controller::model_deployment::{
        build::{self, build_deployment},
        validate::tests::job,
    };
    use crate::{config::Credentials, context::PredictorSettings};

    fn now() -> Time {
        Time(Timestamp::from_second(100).unwrap())
    }

    /// What a reconcile finds: `model` and `deployment`, no pod problem, nothing blocking.
    fn observe<'a>(
        model: &'a Result<ServedModel, NotServable>,
        deployment: Option<&'a Deployment>,
    ) -> Observed<'a> {
        Observed {
            model,
            deployment,
            pod_problem: None,
            blocked: None,
        }
    }

    fn md() -> ModelDeployment {
        let mut md = build::tests::fixture();
        md.metadata.generation = Some(1);
        md
    }

    fn settings() -> PredictorSettings {
        PredictorSettings {
            pods: crate::context::PodSettings {
                launcher_image: "miniautoml/operator:0.1.0".into(),
                s3_endpoint: None,
                s3_region: "us-east-1".into(),
                keys: crate::pod_keys::PodKeys::Shared(Credentials {
                    access_key_id: "k".into(),
                    secret_access_key: "s".into(),
                    session_token: None,
                }),
                image_pull_secrets: Vec::new(),
            },
            image: "miniautoml/predictor:0.1.0".into(),
            algorithm_predictors: Default::default(),
            image_pull_policy: None,
            security_context: crate::controller::children::restricted_security_context(),
            ingress: Some(crate::context::PredictorIngress {
                operator: Some((
                    "miniautoml".into(),
                    std::collections::BTreeMap::from([(
                        "app.kubernetes.io/name".into(),
                        "miniautoml".into(),
                    )]),
                )),
            }),
        }
    }

    fn deployed(run: &str, replicas: i32, updated: i32, available: i32) -> Deployment {
        let model = job(TrainingPhase::Succeeded, run).served_model().unwrap();
        let mut deployment = build_deployment(&md(), &model, &settings());
        deployment.metadata.generation = Some(1);
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..Default::default()
        });
        deployment
    }

    fn condition(status: &ModelDeploymentStatus, type_: &str) -> (String, String) {
        let c = conditions::find(&status.conditions, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn nothing_is_deployed_while_training_runs() {
        let model = job(TrainingPhase::Running, "3").served_model();
        let mut status = ModelDeploymentStatus::default();
        let observed = observe(&model, None);
        assert!(record(&md(), &mut status, &observed, &now()));
        assert_eq!(
            condition(&status, MODEL_READY),
            ("False".into(), "TrainingNotSucceeded".into())
        );
        assert_eq!(
            condition(&status, READY),
            ("False".into(), "TrainingNotSucceeded".into())
        );
        assert_eq!((status.served_run, status.endpoint), (None, None));
        let mut again = ModelDeploymentStatus::default();
        record(&md(), &mut again, &observed, &now());
        assert!(
            !record(&md(), &mut again, &observed, &now()),
            "an unchanged status is not written"
        );
    }

    #[test]
    fn served_run_changes_only_when_the_rollout_completes() {
        let md = md();
        let run3 = job(TrainingPhase::Succeeded, "3").served_model();
        let mut status = ModelDeploymentStatus::default();
        record(
            &md,
            &mut status,
            &observe(&run3, Some(&deployed("3", 1, 1, 1))),
            &now(),
        );
        assert_eq!(status.served_run.as_deref(), Some("3"));
        assert_eq!(status.model_version.as_deref(), Some("3"));
        assert_eq!(condition(&status, READY), ("True".into(), "RolledOut".into()));
        assert_eq!(status.ready_replicas, 1);
        assert_eq!(
            status.endpoint.as_ref().unwrap().grpc,
            "twitter-model-predictor.team-a.svc:8081"
        );

        // Switched to run 4: a surge pod starts next to the old one.
        let run4 = job(TrainingPhase::Succeeded, "4").served_model();
        record(
            &md,
            &mut status,
            &observe(&run4, Some(&deployed("4", 2, 1, 1))),
            &now(),
        );
        assert_eq!(status.served_run.as_deref(), Some("3"));
        assert_eq!(condition(&status, READY), ("False".into(), "RollingOut".into()));
        assert_eq!(
            condition(&status, AVAILABLE),
            ("True".into(), "ReplicasReady".into())
        );
        record(
            &md,
            &mut status,
            &observe(&run4, Some(&deployed("4", 1, 1, 1))),
            &now(),
        );
        assert_eq!(status.served_run.as_deref(), Some("4"));
        assert_eq!(condition(&status, READY), ("True".into(), "RolledOut".into()));
    }

    #[test]
    fn a_reference_to_an_unfinished_run_keeps_the_current_model() {
        let running = job(TrainingPhase::Running, "5").served_model();
        let mut status = ModelDeploymentStatus {
            served_run: Some("3".into()),
            ..Default::default()
        };
        let deployment = deployed("3", 1, 1, 1);
        let observed = observe(&running, Some(&deployment));
        record(&md(), &mut status, &observed, &now());
        assert_eq!(status.served_run.as_deref(), Some("3"));
        assert_eq!(
            condition(&status, READY),
            ("False".into(), "TrainingNotSucceeded".into())
        );
        assert_eq!(condition(&status, AVAILABLE).0, "True");
    }

    #[test]
    fn crash_looping_predictors_are_explained() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p-1"},
            "status": {"containerStatuses": [{
                "name": "predictor", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "model: artifact model.safetensors is corrupt"}}
            }]}
        }))
        .unwrap();
        let problem = pod_problem(&[Arc::new(pod)]).unwrap();
        assert_eq!(
            problem,
            "pod p-1 is CrashLoopBackOff: the predictor exited 1 after 2 restarts (model: artifact model.safetensors is corrupt)"
        );
        // A custom predictor whose model could not be fetched: the initializer's reason.
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p-2"},
            "status": {
                "initContainerStatuses": [{
                    "name": "storage-initializer", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "cannot fetch the model s3://b/m/: the model changed since it was trained"}}
                }],
                "containerStatuses": [{
                    "name": "predictor", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}
                }]
            }
        }))
        .unwrap();
        let problem = pod_problem(&[Arc::new(pod)]).unwrap();
        assert!(
            problem.starts_with(
                "pod p-2 is CrashLoopBackOff: the storage-initializer exited 1 after 3 restarts"
            ) && problem.contains("changed since it was trained"),
            "{problem}"
        );
    }
}
