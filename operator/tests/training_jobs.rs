//! TrainingJobs on the local cluster: the operator binary launches the trainer image
//! (`miniautoml/intent-classification`, from `make images`) as containers on the local node,
//! which report back over the pod network through the operator's MetadataStoreService.

use std::time::Duration;

use kube::{Api, api::PostParams};
use miniautoml_api::{Dataset, TrainingJob, training_job::TrainingPhase};
use miniautoml_data::{Store, layout};
use miniautoml_proto::metadata_store::{
    EpochInfo, GetRunStatusRequest, LogEpochRequest,
    metadata_store_service_client::MetadataStoreServiceClient,
};
use miniautoml_test_support::{
    LocalCluster, OperatorProcess, SWEPT_WITHIN, TestNamespace,
    harness::{
        self, RUN_WAIT, finished, logs_on_failure, succeeded_run, training_job, tweet_emotion, tweets,
        wait_for,
    },
    repo_root,
    simulated::SimulatedTrainer,
};

/// A fresh namespace with its own operator binary (started with `flags`), for one test.
async fn namespace_with_operator(prefix: &str, flags: &[&str]) -> harness::WithOperator {
    harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), prefix, flags).await
}

/// As [`namespace_with_operator`], with the tweet_emotion Dataset ingested (its pods' and the
/// operator's logs printed if the test fails): the namespace's TrainingJobs.
async fn with_tweets(
    prefix: &str,
    flags: &[&str],
) -> (
    &'static LocalCluster,
    kube::Client,
    TestNamespace,
    OperatorProcess,
    Api<TrainingJob>,
    harness::LogsOnFailure<'static>,
) {
    let (cluster, client, ns, operator) = namespace_with_operator(prefix, flags).await;
    let logs = logs_on_failure(cluster, &ns);
    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns.name);
    tweet_emotion(cluster, &datasets, &ns.name).await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    (cluster, client, ns, operator, jobs, logs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_training_job_runs_the_trainer_image_and_records_its_run() {
    let (cluster, _client, ns, operator, jobs, _logs) = with_tweets("training", &[]).await;
    let done = succeeded_run(&jobs, "intent", &ns.name).await;
    let status = done.status.clone().unwrap();
    let run_id = status.run_id.clone().unwrap();
    run_id.parse::<u64>().unwrap();
    assert_eq!(status.dataset_version_hash.as_deref(), Some("hashBg=="));
    assert_eq!(status.job_name.as_deref(), Some("intent-train"));
    assert_eq!(status.progress.as_deref(), Some("3/3"));
    let ids: Vec<&str> = status.epochs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["0-1", "0-2", "0-3"]);
    assert!(
        status
            .epochs
            .iter()
            .all(|e| e.metrics["accuracy"] > 0.5 && e.start_time.is_some())
    );
    let message = status.message.clone().unwrap();
    assert!(message.starts_with("test accuracy "), "{message}");
    assert!(status.metrics["accuracy"] > 0.6, "{status:#?}");
    // The code version is the image the node ran, by the digest `make images` wrote.
    assert_eq!(
        status.code_version.as_deref(),
        Some(harness::image_ref("miniautoml/intent-classification").as_str()),
        "{status:#?}"
    );
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    // `kubectl logs` of the training pod shows the trainer's epochs.
    let logs = cluster
        .kubectl()
        .args(["logs", "-n", &ns.name, "job/intent-train"])
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    for epoch in 1..=3 {
        assert!(logs.contains(&format!("epoch {epoch:>3}  train loss")), "{logs}");
    }
    let artifact = status.artifact.clone().unwrap();
    assert_eq!(artifact.version, run_id);
    assert_eq!(
        artifact.files,
        ["labels.json", "manifest.json", "model.safetensors", "vocab.json"]
    );
    let uid = done.metadata.uid.clone().unwrap();
    assert_eq!(
        artifact.uri,
        format!("s3://{}/models/{}/intent/{uid}/", cluster.s3_bucket, ns.name)
    );
    let succeeded = status.conditions.iter().find(|c| c.type_ == "Succeeded").unwrap();
    assert_eq!(
        (succeeded.status.as_str(), succeeded.reason.as_str()),
        ("True", "ArtifactRecorded")
    );

    // The run through the original API, and writes without this run's token refused.
    let mut metadata = MetadataStoreServiceClient::connect(format!("http://{}", operator.grpc_addr))
        .await
        .unwrap();
    let info = metadata
        .get_run_status(GetRunStatusRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .run_info
        .unwrap();
    assert!(info.success);
    assert_eq!(info.message, message);
    assert_eq!(info.epochs.len(), 3);
    let forged = || LogEpochRequest {
        epoch_info: Some(EpochInfo {
            run_id: run_id.clone(),
            epoch_id: "0-99".into(),
            metrics: [("accuracy".to_string(), "1.0".to_string())].into(),
            ..Default::default()
        }),
    };
    let status = metadata.log_epoch(forged()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut request = tonic::Request::new(forged());
    request
        .metadata_mut()
        .insert("authorization", "Bearer 0123456789abcdef".parse().unwrap());
    let status = metadata.log_epoch(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("only the run's own pods"), "{status:?}");
    let after = jobs.get("intent").await.unwrap().status.unwrap();
    assert!(after.epochs.iter().all(|e| e.id != "0-99"));

    // The default artifactRetainPolicy (Retain) keeps the model when the TrainingJob goes.
    jobs.delete("intent", &Default::default()).await.unwrap();
    let gone = kube::runtime::wait::await_condition(
        jobs.clone(),
        "intent",
        kube::runtime::wait::conditions::is_deleted(&uid),
    );
    tokio::time::timeout(RUN_WAIT, gone).await.unwrap().unwrap();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let kept = store
        .list(&cluster.s3_bucket, &format!("models/{}/intent/{uid}/", ns.name))
        .await
        .unwrap();
    assert_eq!(kept.len(), 4, "{kept:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_deleted_mid_training_with_its_storage_stops_first_and_leaves_nothing() {
    let (cluster, client, ns, _operator, jobs, _logs) = with_tweets("deleted-run", &[]).await;
    jobs.create(
        &PostParams::default(),
        &training_job(
            "doomed",
            serde_json::json!({"parameters": {"EPOCHS": "5000"}, "artifactRetainPolicy": "Delete"}),
        ),
    )
    .await
    .unwrap();
    // Deleted while the trainer reports epochs.
    let running = wait_for(&jobs, "doomed", &ns.name, |s| s.epochs.len() >= 2).await;
    let uid = running.metadata.uid.clone().unwrap();
    jobs.delete("doomed", &Default::default()).await.unwrap();
    let gone = kube::runtime::wait::await_condition(
        jobs.clone(),
        "doomed",
        kube::runtime::wait::conditions::is_deleted(&uid),
    );
    tokio::time::timeout(RUN_WAIT, gone).await.unwrap().unwrap();

    // By the time the TrainingJob is gone its trainer has stopped (the garbage collector alone
    // would stop it only now), so nothing wrote after the cleanup.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns.name)
        .list(&kube::api::ListParams::default().labels("job-name=doomed-train"))
        .await
        .unwrap();
    for pod in &pods.items {
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        assert!(
            matches!(phase.as_deref(), Some("Succeeded" | "Failed")),
            "pod {:?} still {phase:?}",
            pod.metadata.name
        );
    }
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    for prefix in [
        format!("runs/{}/doomed/{uid}/", ns.name),
        format!("models/{}/doomed/{uid}/", ns.name),
    ] {
        let left = store.list(&cluster.s3_bucket, &prefix).await.unwrap();
        assert!(left.is_empty(), "{prefix}: {left:?}");
    }

    // A write that was on its way when the run was deleted (an epoch a killed operator had
    // sent, a model upload held up by a frozen store) lands now: the tombstone the clean-up
    // left has the sweep delete it.
    let tombstone = store.read(&layout::tombstone(&ns.name, &uid)).await.unwrap();
    let tombstone: serde_json::Value = serde_json::from_slice(&tombstone).unwrap();
    assert_eq!(tombstone["kind"], "TrainingJob", "{tombstone}");
    let late = [
        format!("runs/{}/doomed/{uid}/epochs/0-9.json", ns.name),
        format!("models/{}/doomed/{uid}/model.safetensors", ns.name),
    ];
    for key in &late {
        store.put(key, b"{}".to_vec(), "application/json").await.unwrap();
    }
    for key in &late {
        let left = cluster.keys_left(key, SWEPT_WITHIN).await;
        assert!(left.is_empty(), "a late write was not swept: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_the_trainer_reports_to_the_operator_it_verified() {
    // The operator serves TLS from a Secret-like directory whose certificate names the node
    // address the trainer is given; the trainer trusts only the CA the operator hands it.
    let cluster = LocalCluster::shared();
    let tls_dir = std::env::temp_dir().join(miniautoml_test_support::unique("operator-tls"));
    let ca = miniautoml_test_support::TestCa::new("MiniAutoML test CA");
    let node_ip = cluster.free_addr().ip().to_string();
    ca.write_server_files(&tls_dir, &[node_ip.as_str()], true);
    let flag = format!("--tls-dir={}", tls_dir.display());
    let (_cluster, client, ns, operator, jobs, _logs) = with_tweets("tls", &[flag.as_str()]).await;
    jobs.create(
        &PostParams::default(),
        &training_job("secure", serde_json::json!({"parameters": {"EPOCHS": "1"}})),
    )
    .await
    .unwrap();

    let done = wait_for(&jobs, "secure", &ns.name, finished).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Some(TrainingPhase::Succeeded), "{status:#?}");
    assert_eq!(status.epochs.len(), 1, "{status:#?}");
    // The pod was told to call https:// and given the CA, not a key.
    let job = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), &ns.name)
        .get("secure-train")
        .await
        .unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(
        value("METADATA_STORE_SERVER"),
        Some(format!("https://{}", operator.grpc_addr))
    );
    assert_eq!(value("METADATA_STORE_CA"), Some(ca.pem()));

    // A client of the API reads the run over TLS; plain text is refused.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()));
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", operator.grpc_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let info = MetadataStoreServiceClient::new(channel)
        .get_run_status(GetRunStatusRequest {
            run_id: status.run_id.clone().unwrap(),
        })
        .await
        .unwrap()
        .into_inner()
        .run_info
        .unwrap();
    assert!(info.success, "{info:?}");
    let plain = MetadataStoreServiceClient::connect(format!("http://{}", operator.grpc_addr)).await;
    if let Ok(mut plain) = plain {
        let refused = plain
            .get_run_status(GetRunStatusRequest {
                run_id: status.run_id.clone().unwrap(),
            })
            .await;
        assert!(refused.is_err(), "a plain-text call must fail: {refused:?}");
    }
    let _ = std::fs::remove_dir_all(&tls_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_dataset_queues_and_a_trainer_without_an_artifact_fails() {
    let (cluster, client, ns, _operator) = namespace_with_operator("training-bad", &[]).await;
    let _logs = logs_on_failure(cluster, &ns);
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    jobs.create(
        &PostParams::default(),
        &training_job("waits", serde_json::json!({})),
    )
    .await
    .unwrap();
    let waiting = wait_for(&jobs, "waits", &ns.name, |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "DatasetReady" && c.reason == "DatasetNotFound")
    })
    .await;
    assert_eq!(waiting.status.unwrap().phase, Some(TrainingPhase::Queued));

    // An image that exits 0 without reporting anything: miniautoml/test-env runs env.
    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns.name);
    tweet_emotion(cluster, &datasets, &ns.name).await;
    jobs.create(
        &PostParams::default(),
        &training_job(
            "silent",
            serde_json::json!({"algorithm": null, "image": "miniautoml/test-env:1"}),
        ),
    )
    .await
    .unwrap();
    let failed = wait_for(&jobs, "silent", &ns.name, finished)
        .await
        .status
        .unwrap();
    assert_eq!(failed.phase, Some(TrainingPhase::Failed), "{failed:#?}");
    let condition = failed.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(condition.reason, "NoArtifact");
    // The first TrainingJob goes on once its Dataset exists.
    let ran = wait_for(&jobs, "waits", &ns.name, finished).await.status.unwrap();
    assert_eq!(ran.phase, Some(TrainingPhase::Succeeded), "{ran:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_names_sharing_a_prefix_get_their_own_objects_and_a_stranger_s_job_is_never_adopted() {
    let (_cluster, client, ns, _operator, jobs, _logs) = with_tweets("training-names", &[]).await;
    // Two names longer than a derived name's stem (50), alike for their first 55 characters
    // (a TrainingJob's name is at most 63: it is a label value on its Job and pods).
    let prefix = "a-training-job-whose-name-runs-beyond-fifty-characters";
    let names = [format!("{prefix}-one"), format!("{prefix}-two")];
    // miniautoml/test-env runs `env` and exits 0: each run ends Failed (NoArtifact) at once.
    let quick = serde_json::json!({"algorithm": null, "image": "miniautoml/test-env:1"});
    let too_long = format!("{prefix}-and-then-some");
    let refused = jobs
        .create(&PostParams::default(), &training_job(&too_long, quick.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("must be at most 63 characters"), "{refused}");
    for name in &names {
        jobs.create(&PostParams::default(), &training_job(name, quick.clone()))
            .await
            .unwrap();
    }
    let batch = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), &ns.name);
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns.name);
    let mut launched = Vec::new();
    for name in &names {
        let run = wait_for(&jobs, name, &ns.name, finished).await;
        let status = run.status.clone().unwrap();
        assert_eq!(status.phase, Some(TrainingPhase::Failed), "{status:#?}");
        let job_name = status.job_name.clone().expect("the run's Job name");
        // Its own Job and its own Secret, each controlled by this TrainingJob.
        let uid = run.metadata.uid.clone();
        let job = batch.get(&job_name).await.unwrap();
        let owner = |meta: &kube::api::ObjectMeta| {
            meta.owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone())
        };
        assert_eq!(owner(&job.metadata), uid, "{job_name}");
        let secret_name = miniautoml_operator::names::run_secret(&run);
        let secret = secrets.get(&secret_name).await.unwrap();
        assert_eq!(owner(&secret.metadata), uid, "{secret_name}");
        assert!(job_name.len() <= 63 && secret_name.len() <= 63);
        launched.push((job_name, secret_name));
    }
    assert_ne!(launched[0].0, launched[1].0, "two Jobs");
    assert_ne!(launched[0].1, launched[1].1, "two Secrets");

    // A Job someone made under the name a TrainingJob would give its own: never adopted.
    let stranger: k8s_openapi::api::batch::v1::Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "taken-train"},
        "spec": {
            "suspend": true,
            "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "image": "miniautoml/test-env:1"}
            ]}}
        }
    }))
    .unwrap();
    batch.create(&PostParams::default(), &stranger).await.unwrap();
    jobs.create(&PostParams::default(), &training_job("taken", quick.clone()))
        .await
        .unwrap();
    let waiting = wait_for(&jobs, "taken", &ns.name, |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Running" && c.reason == "NameTaken")
    })
    .await;
    let status = waiting.status.unwrap();
    assert_eq!(status.phase, Some(TrainingPhase::Queued), "{status:#?}");
    let running = status.conditions.iter().find(|c| c.type_ == "Running").unwrap();
    assert!(
        running.message.starts_with("Job taken-train in namespace"),
        "{status:#?}"
    );
    let untouched = batch.get("taken-train").await.unwrap();
    assert!(untouched.metadata.owner_references.is_none(), "{untouched:#?}");
    assert_eq!(untouched.spec.unwrap().suspend, Some(true));
    // Once the stranger's Job goes, the run launches under its name.
    batch
        .delete("taken-train", &kube::api::DeleteParams::foreground())
        .await
        .unwrap();
    let ran = wait_for(&jobs, "taken", &ns.name, finished).await.status.unwrap();
    assert_eq!(ran.job_name.as_deref(), Some("taken-train"), "{ran:#?}");
}

/// A run's end, which must be Failed: its `Failed` condition's reason and the status message.
fn failure(status: &miniautoml_api::TrainingJobStatus) -> (String, String) {
    assert_eq!(status.phase, Some(TrainingPhase::Failed), "{status:#?}");
    let condition = status.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    (
        condition.reason.clone(),
        status.message.clone().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_trainers_end_failed_with_the_reason_the_node_reports() {
    let (_cluster, _client, ns, _operator, jobs, _logs) = with_tweets("training-fail", &[]).await;
    for (name, extra) in [
        // Exits 3.
        ("exits", serde_json::json!({"image": "miniautoml/test-exit:1"})),
        // Holds ever more memory: the kernel kills it at its cgroup's limit.
        (
            "hog",
            serde_json::json!({"image": "miniautoml/test-oom:1", "resources": {"memory": "32Mi"}}),
        ),
        // Not imported into the node (and never pulled).
        ("missing", serde_json::json!({"image": "miniautoml/not-built:1"})),
    ] {
        let mut spec = extra;
        spec["algorithm"] = serde_json::Value::Null;
        jobs.create(&PostParams::default(), &training_job(name, spec))
            .await
            .unwrap();
    }
    let status = |name: &'static str| {
        let (jobs, ns) = (jobs.clone(), ns.name.clone());
        async move { wait_for(&jobs, name, &ns, finished).await.status.unwrap() }
    };

    let (reason, message) = failure(&status("exits").await);
    assert_eq!(reason, "Error");
    assert!(message.contains("exited with code 3"), "{message}");

    let (reason, message) = failure(&status("hog").await);
    assert_eq!(reason, "OOMKilled", "{message}");
    assert!(message.contains("exited with code 137 (OOMKilled)"), "{message}");

    let missing = status("missing").await;
    let (reason, _) = failure(&missing);
    assert!(
        matches!(reason.as_str(), "ErrImagePull" | "ImagePullBackOff"),
        "{missing:#?}"
    );
    let condition = missing.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert!(
        condition
            .message
            .contains("cannot get its image miniautoml/not-built:1"),
        "{condition:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_original_training_api_and_an_operator_restart_mid_run() {
    use miniautoml_proto::{
        data_management::{
            CreateDatasetRequest, DatasetQuery, DatasetType,
            data_management_service_client::DataManagementServiceClient,
        },
        training::{
            GetTrainingStatusRequest, TrainRequest, TrainingJobMetadata, TrainingStatus,
            training_service_client::TrainingServiceClient,
        },
    };
    let (cluster, client, ns, mut operator) = namespace_with_operator("training-grpc", &[]).await;
    let _logs = logs_on_failure(cluster, &ns);
    let endpoint = format!("http://{}", operator.grpc_addr);
    let connect = || async {
        for _ in 0..100 {
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(endpoint.clone())
                .unwrap()
                .connect()
                .await
            {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the operator's gRPC server never came up")
    };
    let channel = connect().await;
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let key = format!("raw/{}/part1.csv", ns.name);
    store.put(&key, tweets(1), "text/csv").await.unwrap();
    let mut data = DataManagementServiceClient::new(channel.clone());
    let summary = data
        .create_dataset(CreateDatasetRequest {
            name: "tweets".into(),
            description: "part 1".into(),
            dataset_type: DatasetType::TextIntent as i32,
            bucket: cluster.s3_bucket.clone(),
            path: key,
            tags: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let version = data
        .prepare_training_dataset(DatasetQuery {
            dataset_id: summary.dataset_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let mut training = TrainingServiceClient::new(channel.clone());
    let mut metadata = TrainingJobMetadata {
        algorithm: "intent-classification".into(),
        dataset_id: summary.dataset_id.clone(),
        name: "Intent Classifier".into(),
        train_data_version_hash: version.version_hash.clone(),
        parameters: [("EPOCHS".to_string(), "3".to_string())].into(),
        output_model_name: String::new(),
    };
    // The original's validation order and message.
    let refused = training
        .train(TrainRequest {
            metadata: Some(metadata.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(refused.message(), "\"outputModelName\" is required.");
    metadata.output_model_name = "é".repeat(127);
    let refused = training
        .train(TrainRequest {
            metadata: Some(metadata.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::InvalidArgument,
            "outputModelName is 254 bytes long; at most 253 bytes are accepted"
        )
    );
    metadata.output_model_name = "twitter_model v1.0".into();
    let job_id = training
        .train(TrainRequest {
            metadata: Some(metadata),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    assert!(job_id > 0);
    let missing = training
        .get_training_status(GetTrainingStatusRequest {
            job_id: job_id + 1000,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(missing.message(), format!("Job {} doesn't exist", job_id + 1000));
    // Not a run id at all: refused before it reaches a label selector (it was INTERNAL).
    for bad in [-1, 0, i32::MIN] {
        let refused = training
            .get_training_status(GetTrainingStatusRequest { job_id: bad })
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), refused.message()),
            (
                tonic::Code::InvalidArgument,
                format!("job_id {bad} is not a run id: run ids are positive numbers, as Train returns them")
                    .as_str()
            )
        );
    }

    // Kill the operator while the run is under way, start another: one Job, and the run ends.
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let name = format!("intent-classifier-{job_id}");
    wait_for(&jobs, &name, &ns.name, |s| s.job_name.is_some()).await;
    operator.kill();
    let operator = OperatorProcess::start_at(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        &ns.name,
        &cluster.s3_secret_key,
        operator.grpc_addr,
        &[],
    );
    let done = wait_for(&jobs, &name, &ns.name, finished).await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase,
        Some(TrainingPhase::Succeeded),
        "{status:#?}\n{}",
        harness::pod_logs(cluster, &ns.name)
    );
    assert_eq!(status.run_id, Some(job_id.to_string()));
    let batch = Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), &ns.name);
    let owned = batch.list(&Default::default()).await.unwrap().items;
    assert_eq!(
        owned.len(),
        1,
        "{:?}",
        owned.iter().map(|j| j.metadata.name.clone()).collect::<Vec<_>>()
    );

    let endpoint = format!("http://{}", operator.grpc_addr);
    let mut training = TrainingServiceClient::connect(endpoint.clone()).await.unwrap();
    let reply = training
        .get_training_status(GetTrainingStatusRequest { job_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, TrainingStatus::Succeed as i32);
    assert!(reply.message.starts_with("test accuracy"), "{reply:?}");
    let metadata = reply.metadata.unwrap();
    assert_eq!(metadata.dataset_id, summary.dataset_id);
    assert_eq!(metadata.train_data_version_hash, "hashAg==");
    assert_eq!(
        (metadata.name.as_str(), metadata.output_model_name.as_str()),
        ("Intent Classifier", "twitter_model v1.0"),
        "the caller's names, verbatim"
    );
    let mut runs = MetadataStoreServiceClient::connect(endpoint).await.unwrap();
    let info = runs
        .get_run_status(GetRunStatusRequest {
            run_id: job_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .run_info
        .unwrap();
    assert!(info.success && info.epochs.len() == 3, "{info:?}");
    // The dataset id the caller trained on, as the original answers it (not the Dataset's name).
    assert_eq!(info.tracing.unwrap().dataset_id, summary.dataset_id);

    // The original workflow through grpcurl (what `make demo` runs): Train, GetTrainingStatus
    // until it ends, GetRunStatus, GetArtifact.
    let script = repo_root().join("hack/grpc-training.sh");
    let path = format!(
        "{}:{}",
        cluster.tools_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (dataset_id, address) = (summary.dataset_id.clone(), operator.grpc_addr.to_string());
    let grpcurl = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&script)
            .args([dataset_id.as_str(), "hashAg=="])
            .env("GRPC_ADDR", address)
            .env("PATH", path)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&grpcurl.stdout);
    assert!(
        grpcurl.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&grpcurl.stderr)
    );
    for expected in [
        "\"status\": \"succeed\"",
        "test accuracy",
        "\"success\": true",
        &format!("models/{}/intent-", ns.name),
    ] {
        assert!(stdout.contains(expected), "no {expected} in:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_limit_queues_runs_first_come_first_served() {
    let (_cluster, _client, ns, _operator, jobs, _logs) =
        with_tweets("training-queue", &["--max-concurrent-runs=1"]).await;
    let names = ["first", "second", "third", "fourth"];
    // The first run holds the only slot while the others queue (a 3-epoch run can end within
    // the seconds it takes to create them), so it trains longer.
    jobs.create(
        &PostParams::default(),
        &training_job("first", serde_json::json!({"parameters": {"EPOCHS": "60"}})),
    )
    .await
    .unwrap();
    wait_for(&jobs, "first", &ns.name, |s| s.job_name.is_some()).await;
    for name in &names[1..] {
        // Creation times have a resolution of a second: keep the order unambiguous.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        jobs.create(&PostParams::default(), &training_job(name, serde_json::json!({})))
            .await
            .unwrap();
    }
    for (position, name) in names[1..].iter().enumerate() {
        let queued = wait_for(&jobs, name, &ns.name, |s| {
            s.position_in_queue.is_some() || s.job_name.is_some()
        })
        .await;
        let status = queued.status.unwrap();
        assert_eq!(status.phase, Some(TrainingPhase::Queued), "{name}: {status:#?}");
        assert_eq!(status.position_in_queue, Some(position as u32), "{name}");
        let waiting = status.conditions.iter().find(|c| c.type_ == "Running").unwrap();
        assert_eq!(waiting.reason, "WaitingForSlot");
    }
    let mut previous_end = None;
    for name in names {
        let done = wait_for(&jobs, name, &ns.name, finished).await.status.unwrap();
        assert_eq!(done.phase, Some(TrainingPhase::Succeeded), "{name}: {done:#?}");
        let (start, end) = (done.start_time.unwrap().0, done.completion_time.unwrap().0);
        if let Some(previous) = previous_end {
            assert!(
                start >= previous,
                "{name} started at {start} before the run ahead ended at {previous}"
            );
        }
        previous_end = Some(end);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gpu_runs_land_on_simulated_gpu_nodes_or_say_why_they_cannot() {
    use k8s_openapi::api::core::v1::Pod;
    let (cluster, client, ns, operator, jobs, _logs) = with_tweets("training-gpu", &[]).await;
    // kwok simulates the GPU nodes: the run is scheduled there and simulated, not trained.
    let on_gpus = |gpus: i32| {
        serde_json::json!({
            "resources": {"gpus": gpus},
            "nodeSelector": {"miniautoml.io/pool": "gpu"},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        })
    };
    let mut deleted_with_its_run = on_gpus(1);
    deleted_with_its_run["artifactRetainPolicy"] = "Delete".into();
    jobs.create(
        &PostParams::default(),
        &training_job("one-gpu", deleted_with_its_run),
    )
    .await
    .unwrap();
    jobs.create(&PostParams::default(), &training_job("three-gpus", on_gpus(3)))
        .await
        .unwrap();

    // kwok runs the pod on the simulated GPU node; nothing trains there, so the test plays the
    // trainer: it reports the run with the run's token, then kwok ends the pod with exit 0.
    wait_for(&jobs, "one-gpu", &ns.name, |s| {
        s.phase == Some(TrainingPhase::Running)
    })
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let pod = pods
        .list(&kube::api::ListParams::default().labels("job-name=one-gpu-train"))
        .await
        .unwrap()
        .items
        .remove(0);
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("kwok-gpu-0"));
    let limits = spec.containers[0].resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    let trainer = SimulatedTrainer::connect(client.clone(), cluster.s3(), operator.grpc_addr)
        .await
        .unwrap();
    trainer.finish(&pod, 2).await.unwrap();
    let simulated = wait_for(&jobs, "one-gpu", &ns.name, finished)
        .await
        .status
        .unwrap();
    assert_eq!(simulated.phase, Some(TrainingPhase::Succeeded), "{simulated:#?}");
    assert_eq!(simulated.progress.as_deref(), Some("2/3"));
    assert_eq!(simulated.artifact.unwrap().files, ["manifest.json"]);
    assert_eq!(simulated.message.as_deref(), Some("test accuracy 0.900"));

    // artifactRetainPolicy: Delete: deleting the TrainingJob deletes its model and epoch history.
    let uid = jobs.get("one-gpu").await.unwrap().metadata.uid.unwrap();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let objects = |prefix: String| {
        let store = store.clone();
        let bucket = cluster.s3_bucket.clone();
        async move { store.list(&bucket, &prefix).await.unwrap() }
    };
    let model = format!("models/{}/one-gpu/{uid}/", ns.name);
    let history = format!("runs/{}/one-gpu/{uid}/", ns.name);
    assert_eq!(objects(model.clone()).await.len(), 1);
    assert_eq!(objects(history.clone()).await.len(), 2, "one object per epoch");
    jobs.delete("one-gpu", &Default::default()).await.unwrap();
    let gone = kube::runtime::wait::await_condition(
        jobs.clone(),
        "one-gpu",
        kube::runtime::wait::conditions::is_deleted(&uid),
    );
    tokio::time::timeout(RUN_WAIT, gone).await.unwrap().unwrap();
    assert!(objects(model).await.is_empty());
    assert!(objects(history).await.is_empty());

    let stuck = wait_for(&jobs, "three-gpus", &ns.name, |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Running" && c.reason == "Unschedulable")
    })
    .await
    .status
    .unwrap();
    assert_eq!(stuck.phase, Some(TrainingPhase::Launching));
    let condition = stuck.conditions.iter().find(|c| c.type_ == "Running").unwrap();
    assert!(condition.message.contains("nvidia.com/gpu"), "{condition:?}");
}
