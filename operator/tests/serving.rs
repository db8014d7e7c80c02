//! Serving on the local cluster: TrainingJobs train with the trainer image, ModelDeployments run
//! the predictor image (`miniautoml/predictor`, from `make images`) as containers on the local
//! node, and predictions go through the operator's PredictionService and through the
//! ModelDeployment's Service's endpoints, as a cluster client would reach them.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector, wait::await_condition, watcher},
};
use miniautoml_api::{
    Dataset, ModelDeployment, ModelDeploymentStatus, TrainingJob, training_job::TrainingPhase,
};
use miniautoml_proto::prediction::{
    PredictRequest, PredictorPredictRequest, prediction_service_client::PredictionServiceClient,
    predictor_client::PredictorClient,
};
use miniautoml_test_support::{
    LocalCluster,
    harness::{
        self, finished, http, logs_on_failure, model_deployment, predictor_pid, training_job, tweet_emotion,
        wait_for,
    },
    operator_log_path,
};
use tonic::{Code, transport::Channel};

/// Starting a predictor container (download, verify, load) takes seconds.
const SERVE_WAIT: Duration = Duration::from_secs(180);

async fn namespace_with_operator(prefix: &str) -> harness::WithOperator {
    harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), prefix, &[]).await
}

async fn wait_deployed(
    api: &Api<ModelDeployment>,
    name: &str,
    namespace: &str,
    what: &str,
    done: impl Fn(&ModelDeploymentStatus) -> bool,
) -> ModelDeployment {
    let condition = await_condition(api.clone(), name, move |m: Option<&ModelDeployment>| {
        m.and_then(|m| m.status.as_ref()).is_some_and(&done)
    });
    match tokio::time::timeout(SERVE_WAIT, condition).await {
        Ok(found) => found.unwrap().unwrap(),
        Err(_) => panic!(
            "{name}: timed out waiting for {what}; status {:#?}\noperator log: {}",
            api.get(name).await.ok().and_then(|m| m.status),
            std::fs::read_to_string(operator_log_path(namespace)).unwrap_or_default()
        ),
    }
}

fn condition(status: &ModelDeploymentStatus, type_: &str) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn ready_serving(run: String) -> impl Fn(&ModelDeploymentStatus) -> bool {
    move |s| {
        s.served_run.as_deref() == Some(run.as_str())
            && condition(s, "Ready").is_some_and(|(status, _)| status == "True")
    }
}

/// The labels a run's model predicts, from its `labels.json` in S3.
async fn run_labels(cluster: &LocalCluster, job: &TrainingJob) -> Vec<String> {
    let uri = &job.status.as_ref().unwrap().artifact.as_ref().unwrap().uri;
    let key = uri
        .strip_prefix(&format!("s3://{}/", cluster.s3_bucket))
        .unwrap()
        .to_string()
        + "labels.json";
    let object = cluster
        .s3()
        .get_object()
        .bucket(&cluster.s3_bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&object.body.collect().await.unwrap().into_bytes()).unwrap()
}

fn label_of(response: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(response).unwrap();
    value["result"].as_str().unwrap().to_string()
}

/// A client of a ModelDeployment's Service that sends every request to one of the Service's
/// ready endpoints, as kube-proxy would: the ready, not terminating pods its selector matches.
/// (The EndpointSlice controller computes the same set; this client watches the pods so that it
/// sees a pod stop being ready at the same moment the test does.)
struct ServiceClient {
    pods: reflector::Store<Pod>,
    channels: Mutex<HashMap<String, Channel>>,
    next: AtomicUsize,
}

impl ServiceClient {
    async fn new(client: kube::Client, namespace: &str, service: &str) -> Arc<ServiceClient> {
        let selector = Api::<Service>::namespaced(client.clone(), namespace)
            .get(service)
            .await
            .unwrap()
            .spec
            .unwrap()
            .selector
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let (pods, writer) = reflector::store();
        let stream = watcher(
            Api::<Pod>::namespaced(client, namespace),
            watcher::Config::default().labels(&selector),
        )
        .default_backoff()
        .reflect(writer)
        .applied_objects();
        tokio::spawn(stream.for_each(|_| futures::future::ready(())));
        pods.wait_until_ready().await.unwrap();
        Arc::new(ServiceClient {
            pods,
            channels: Mutex::default(),
            next: AtomicUsize::new(0),
        })
    }

    /// `ip:8081` of every ready endpoint.
    fn ready(&self) -> Vec<String> {
        let mut ready: Vec<String> = self
            .pods
            .state()
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none() && pod_ready(pod))
            .filter_map(|pod| pod.status.as_ref()?.pod_ip.clone())
            .map(|ip| format!("{ip}:8081"))
            .collect();
        ready.sort();
        ready
    }
    async fn predict(&self, document: &str) -> Result<String, String> {
        let ready = self.ready();
        if ready.is_empty() {
            return Err("no ready endpoint".into());
        }
        let address = ready[self.next.fetch_add(1, Ordering::Relaxed) % ready.len()].clone();
        let channel = {
            let mut channels = self.channels.lock().unwrap();
            channels
                .entry(address.clone())
                .or_insert_with(|| {
                    Channel::from_shared(format!("http://{address}"))
                        .unwrap()
                        .connect_lazy()
                })
                .clone()
        };
        let request = PredictorPredictRequest {
            run_id: String::new(),
            document: document.into(),
        };
        PredictorClient::new(channel)
            .predictor_predict(request)
            .await
            .map(|r| r.into_inner().response)
            .map_err(|status| format!("{address}: {status}"))
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn predictor_pods(client: &kube::Client, namespace: &str, deployment: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("miniautoml.io/modeldeployment={deployment}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_deployment_serves_its_run_switches_runs_without_a_failed_request_and_recovers() {
    let (cluster, client, ns, operator) = namespace_with_operator("serving").await;
    let _logs = logs_on_failure(cluster, &ns);
    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns.name);
    tweet_emotion(cluster, &datasets, &ns.name).await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let deployments = Api::<ModelDeployment>::namespaced(client.clone(), &ns.name);
    let post = PostParams::default();
    for name in ["first", "second"] {
        jobs.create(&post, &training_job(name, serde_json::json!({})))
            .await
            .unwrap();
    }
    jobs.create(
        &post,
        &training_job(
            "broken",
            serde_json::json!({"algorithm": null, "image": "miniautoml/test-exit:1"}),
        ),
    )
    .await
    .unwrap();
    deployments
        .create(&post, &model_deployment("tweets", "first"))
        .await
        .unwrap();

    // While the run trains, a condition says so and nothing is deployed.
    wait_deployed(&deployments, "tweets", &ns.name, "ModelReady=False", |s| {
        condition(s, "ModelReady")
            .is_some_and(|(status, reason)| status == "False" && reason == "TrainingNotSucceeded")
    })
    .await;
    let predictor_deployments = Api::<Deployment>::namespaced(client.clone(), &ns.name);
    let first = wait_for(&jobs, "first", &ns.name, finished).await;
    assert_eq!(
        first.status.as_ref().unwrap().phase,
        Some(TrainingPhase::Succeeded),
        "{:#?}",
        first.status
    );
    let first_run = first.status.as_ref().unwrap().run_id.clone().unwrap();

    // Deployed once it Succeeded: the Deployment, Service and status.
    let served = wait_deployed(
        &deployments,
        "tweets",
        &ns.name,
        "run 1 served",
        ready_serving(first_run.clone()),
    )
    .await;
    let status = served.status.unwrap();
    assert_eq!((status.ready_replicas, status.replicas), (1, 1));
    assert_eq!(status.model_version.as_deref(), Some(first_run.as_str()));
    let endpoint = status.endpoint.unwrap();
    assert_eq!(endpoint.grpc, format!("tweets-predictor.{}.svc:8081", ns.name));
    assert_eq!(
        endpoint.http,
        format!("http://tweets-predictor.{}.svc:8080", ns.name)
    );
    let deployment = predictor_deployments.get("tweets-predictor").await.unwrap();
    assert_eq!(deployment.owner_references()[0].name, "tweets");
    // Its NetworkPolicy (kube-router enforces it): this operator, outside the cluster, reaches
    // the predictors from the node, which policies do not cover (the e2e suite proves the rest).
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), &ns.name)
        .get("tweets-predictor")
        .await
        .unwrap();
    assert_eq!(policy.owner_references()[0].name, "tweets");
    let selected = policy.spec.unwrap().pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(selected["miniautoml.io/modeldeployment"], "tweets");

    // PredictionService/Predict through the operator: a label of the run's label set.
    let mut predict = PredictionServiceClient::connect(format!("http://{}", operator.grpc_addr))
        .await
        .unwrap();
    let first_labels = run_labels(cluster, &first).await;
    let ask = |run: &str, document: &str| PredictRequest {
        run_id: run.into(),
        document: document.into(),
    };
    let response = predict
        .predict(ask(&first_run, "I am so happy today, what a joy"))
        .await
        .unwrap()
        .into_inner()
        .response;
    assert!(
        first_labels.contains(&label_of(&response)),
        "{response} not in {first_labels:?}"
    );

    // Bad requests, each with a clear status.
    let error = predict.predict(ask(&first_run, "")).await.unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        (Code::InvalidArgument, "document is empty")
    );
    let error = predict
        .predict(ask(&first_run, &"x".repeat(64 * 1024 + 1)))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(
        error.message().contains("more than the limit of 65536"),
        "{}",
        error.message()
    );
    let error = predict.predict(ask("987654321", "hello")).await.unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        (Code::NotFound, "run 987654321 does not exist")
    );
    let broken = wait_for(&jobs, "broken", &ns.name, finished).await;
    let broken_run = broken.status.as_ref().unwrap().run_id.clone().unwrap();
    let error = predict.predict(ask(&broken_run, "hello")).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(
        error.message().starts_with(&format!(
            "run {broken_run} cannot serve predictions: TrainingJob broken failed"
        )),
        "{}",
        error.message()
    );

    // The REST API of the predictor pod: an unknown model name is 404.
    let pods = predictor_pods(&client, &ns.name, "tweets").await;
    let pod_ip = pods[0].status.as_ref().unwrap().pod_ip.clone().unwrap();
    let (code, body) = http(&format!("{pod_ip}:8080"), "GET", "/v2/models/nope", None)
        .await
        .unwrap();
    assert_eq!(code, 404, "{body}");
    let (code, body) = http(&format!("{pod_ip}:8080"), "GET", "/v2/models/tweets", None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");

    // Switch to the second run while a client loops predictions through the Service.
    let second = wait_for(&jobs, "second", &ns.name, finished).await;
    assert_eq!(
        second.status.as_ref().unwrap().phase,
        Some(TrainingPhase::Succeeded)
    );
    let second_run = second.status.as_ref().unwrap().run_id.clone().unwrap();
    let service = ServiceClient::new(client.clone(), &ns.name, "tweets-predictor").await;
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let (service, stop) = (service.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failures) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match service.predict("the rain makes me so sad").await {
                    Ok(_) => ok += 1,
                    Err(error) => failures.push(error),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failures)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let switch = serde_json::json!({"spec": {"model": {"trainingJob": "second"}}});
    deployments
        .patch("tweets", &PatchParams::default(), &Patch::Merge(&switch))
        .await
        .unwrap();
    let switching = Instant::now();
    wait_deployed(
        &deployments,
        "tweets",
        &ns.name,
        "run 2 served",
        ready_serving(second_run.clone()),
    )
    .await;
    let rollout = switching.elapsed();
    // Until the old predictor has stopped (its shutdown delay is 5 s).
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = looping.await.unwrap();
    eprintln!(
        "rollout took {rollout:?}: {ok} predictions through the Service, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests during the rollout: {failures:#?}"
    );
    assert!(ok >= 50, "only {ok} requests during the rollout");
    let pods = predictor_pods(&client, &ns.name, "tweets").await;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].labels()["miniautoml.io/run-id"], second_run);
    let second_labels = run_labels(cluster, &second).await;
    let response = predict
        .predict(ask(&second_run, "so angry"))
        .await
        .unwrap()
        .into_inner()
        .response;
    assert!(second_labels.contains(&label_of(&response)));

    // A killed predictor process: the pod restarts it and serving recovers.
    let pod_name = pods[0].name_any();
    let pid = predictor_pid(&pod_name).unwrap_or_else(|| panic!("no predictor process in pod {pod_name}"));
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let restarted = await_condition(pods_api, &pod_name, |p: Option<&Pod>| {
        p.is_some_and(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .map_or(0, |c| c.restart_count);
            restarts >= 1 && pod_ready(p)
        })
    });
    tokio::time::timeout(SERVE_WAIT, restarted)
        .await
        .expect("the predictor restarted")
        .unwrap();
    let response = predict
        .predict(ask(&second_run, "so angry"))
        .await
        .unwrap()
        .into_inner()
        .response;
    assert!(second_labels.contains(&label_of(&response)));

    // The first run is served by nobody now: Predict deploys it (run-<id>) and answers.
    let response = predict
        .predict(ask(&first_run, "what a lovely day"))
        .await
        .unwrap()
        .into_inner()
        .response;
    assert!(first_labels.contains(&label_of(&response)));
    let created = deployments.get(&format!("run-{first_run}")).await.unwrap();
    assert_eq!(created.spec.model.run_id.as_deref(), Some(first_run.as_str()));
    assert_eq!(created.labels()["miniautoml.io/created-by"], "prediction-service");
}

/// A TrainingJob `name` of the PyTorch example (one worker, two epochs, one thread).
fn pytorch_run(name: &str) -> TrainingJob {
    training_job(
        name,
        serde_json::json!({"algorithm": "pytorch-intent", "parameters": {"EPOCHS": "2", "THREADS": "1"}}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn algorithm_and_custom_predictors_get_verified_files_and_serve_through_predict_by_their_protocol() {
    let (cluster, client, ns, operator) = namespace_with_operator("custom-predictors").await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(
        cluster,
        &Api::<Dataset>::namespaced(client.clone(), &ns.name),
        &ns.name,
    )
    .await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let deployments = Api::<ModelDeployment>::namespaced(client.clone(), &ns.name);
    let post = PostParams::default();
    for name in ["first", "second"] {
        jobs.create(&post, &pytorch_run(name)).await.unwrap();
    }
    let mut runs = Vec::new();
    for name in ["first", "second"] {
        let done = wait_for(&jobs, name, &ns.name, finished).await;
        let status = done.status.clone().unwrap();
        assert_eq!(
            status.phase,
            Some(TrainingPhase::Succeeded),
            "{name}: {status:#?}"
        );
        runs.push((status.run_id.clone().unwrap(), run_labels(cluster, &done).await));
    }
    let (first_run, labels) = runs[0].clone();
    let second_run = runs[1].0.clone();

    // No image: the run's algorithm's predictor, given the model's files by the initializer.
    deployments
        .create(&post, &model_deployment("torch", "first"))
        .await
        .unwrap();
    // An image of one's own serving the Open Inference Protocol on a port of its own.
    let mut oip = model_deployment("oip", "second");
    oip.spec.image = Some("miniautoml/pytorch-intent-predictor:0.1.0".into());
    oip.spec.protocol = Some(miniautoml_api::model_deployment::PredictorProtocol::OpenInference);
    oip.spec.port = Some(9000);
    deployments.create(&post, &oip).await.unwrap();
    wait_deployed(
        &deployments,
        "torch",
        &ns.name,
        "the first run served",
        ready_serving(first_run.clone()),
    )
    .await;
    wait_deployed(
        &deployments,
        "oip",
        &ns.name,
        "the second run served",
        ready_serving(second_run.clone()),
    )
    .await;

    let torch = predictor_pods(&client, &ns.name, "torch").await.remove(0);
    let spec = torch.spec.clone().unwrap();
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("miniautoml/pytorch-intent-predictor:0.1.0")
    );
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "storage-initializer");
    let mounts: Vec<String> = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.clone())
        .collect();
    assert!(
        mounts.contains(&"/mnt/models".to_string()) && mounts.contains(&format!("/models/{first_run}")),
        "{mounts:?}"
    );
    let fetched = cluster
        .kubectl()
        .args([
            "logs",
            "-n",
            &ns.name,
            &torch.name_any(),
            "-c",
            "storage-initializer",
        ])
        .output()
        .unwrap();
    let fetched = String::from_utf8_lossy(&fetched.stdout);
    assert!(
        fetched.contains("fetched 4 files") && fetched.contains("verified"),
        "{fetched}"
    );
    let oip_pod = predictor_pods(&client, &ns.name, "oip").await.remove(0);
    let ports = oip_pod.spec.unwrap().containers[0].ports.clone().unwrap();
    assert_eq!(
        ports
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect::<Vec<_>>(),
        [("http".to_string(), 9000)]
    );

    // PredictionService/Predict: gRPC to the algorithm's predictor, OIP v2 to the custom one.
    let mut predict = PredictionServiceClient::connect(format!("http://{}", operator.grpc_addr))
        .await
        .unwrap();
    for run in [&first_run, &second_run] {
        let response = predict
            .predict(PredictRequest {
                run_id: run.clone(),
                document: "I am so happy today, what a joy".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .response;
        assert!(labels.contains(&label_of(&response)), "run {run}: {response}");
    }
    // The predictor's refusal passes through as INVALID_ARGUMENT, over either protocol.
    for run in [&first_run, &second_run] {
        let refused = predict
            .predict(PredictRequest {
                run_id: run.clone(),
                document: "x".repeat(70_000),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "run {run}: {refused:?}");
    }

    // Switching the algorithm predictor to the second run, with requests flowing through the
    // Service's ready endpoints: not one fails.
    let service = ServiceClient::new(client.clone(), &ns.name, "torch-predictor").await;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (service, failures, stop) = (service.clone(), failures.clone(), stop.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) && sent < 5_000 && started.elapsed() < SERVE_WAIT {
                if let Err(error) = service.predict("what a day").await {
                    failures.lock().unwrap().push(error);
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    deployments
        .patch(
            "torch",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"model": {"trainingJob": "second"}}})),
        )
        .await
        .unwrap();
    wait_deployed(
        &deployments,
        "torch",
        &ns.name,
        "the second run served",
        ready_serving(second_run.clone()),
    )
    .await;
    // Let the old pod's drain end while requests still flow.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(sent > 50, "{sent} requests");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
}
