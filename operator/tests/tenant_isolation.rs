//! Tenant isolation, on the local cluster: what one namespace's user could do to another's runs
//! and datasets through the ids, the run tokens, the metadata store and dataset sources, each tried as an
//! attacker would, and refused (docs/security.md names each test).

use std::time::Duration;

use k8s_openapi::{
    ByteString,
    api::core::v1::{Pod, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use miniautoml_api::{Dataset, ModelDeployment, TrainingJob};
use miniautoml_data::Store;
use miniautoml_operator::{grpc::in_flight::PER_CALLER, run_tokens::RunTokens};
use miniautoml_proto::{
    data_management::{
        CreateDatasetRequest, DatasetPointer, DatasetType, FileInfo, ListQueryOptions,
        data_management_service_client::DataManagementServiceClient,
    },
    metadata_store::{
        CreateArtifactRequest, EpochInfo, GetRunStatusRequest, LogEpochRequest, LogRunEndRequest,
        metadata_store_service_client::MetadataStoreServiceClient,
    },
};
use miniautoml_test_support::{
    LocalCluster, OperatorProcess, TestNamespace,
    harness::{self, logs_on_failure, succeeded_run, training_job, tweet_emotion},
    install_crds,
};
use tonic::{Code, Request, transport::Channel};

/// How long the operator may take to give an id or put a label back.
const WITHIN: Duration = Duration::from_secs(30);

async fn namespace_with_operator(prefix: &str) -> harness::WithOperator {
    harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), prefix, &[]).await
}

/// `message` with `authorization: Bearer <token>`.
fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn epoch(run_id: &str, epoch_id: &str) -> LogEpochRequest {
    LogEpochRequest {
        epoch_info: Some(EpochInfo {
            run_id: run_id.into(),
            epoch_id: epoch_id.into(),
            metrics: [("accuracy".to_string(), "1.0".to_string())].into(),
            ..Default::default()
        }),
    }
}

/// Waits for `object` of `api` to satisfy `done`.
async fn until<K>(api: &Api<K>, name: &str, done: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let condition = await_condition(api.clone(), name, move |o: Option<&K>| o.is_some_and(&done));
    match tokio::time::timeout(WITHIN, condition).await {
        Ok(found) => found.unwrap().unwrap(),
        Err(_) => panic!("{name}: timed out; now {:#?}", api.get(name).await),
    }
}

fn label<'a, K: kube::Resource>(object: &'a K, key: &str) -> Option<&'a str> {
    object.meta().labels.as_ref()?.get(key).map(String::as_str)
}

fn dataset(name: &str, labels: serde_json::Value) -> Dataset {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1", "kind": "Dataset",
        "metadata": {"name": name, "labels": labels},
        "spec": {"type": "TextIntent", "commits": [
            {"message": "never uploaded", "source": {"bucket": "miniautoml", "key": format!("raw/{name}.csv")}}
        ]},
    }))
    .unwrap()
}

/// An operator for `namespace` running as a ServiceAccount of it (bound to cluster-admin there,
/// and allowed to review tokens), so the audit log tells its requests apart; with `extra` flags.
/// Returns the operator, the account's user name and the kubeconfig made for it.
fn operator_as_account(
    cluster: &LocalCluster,
    namespace: &str,
    extra: &[&str],
) -> (OperatorProcess, String, std::path::PathBuf) {
    let account = "operator";
    let kubectl = |args: &[&str]| {
        let output = cluster.kubectl().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    kubectl(&["create", "serviceaccount", account, "-n", namespace]);
    kubectl(&[
        "create",
        "rolebinding",
        "operator",
        "-n",
        namespace,
        "--clusterrole=cluster-admin",
        &format!("--serviceaccount={namespace}:{account}"),
    ]);
    // TokenReviews and SubjectAccessReviews are cluster-scoped.
    kubectl(&[
        "create",
        "clusterrolebinding",
        &format!("{namespace}-operator"),
        "--clusterrole=system:auth-delegator",
        &format!("--serviceaccount={namespace}:{account}"),
    ]);
    let token = kubectl(&["create", "token", account, "-n", namespace, "--duration=1h"]);
    let kubeconfig = std::env::temp_dir().join(format!("{namespace}.kubeconfig"));
    std::fs::copy(&cluster.kubeconfig, &kubeconfig).unwrap();
    let config = kubeconfig.to_str().unwrap();
    kubectl(&[
        "--kubeconfig",
        config,
        "config",
        "set-credentials",
        account,
        &format!("--token={}", token.trim()),
    ]);
    kubectl(&[
        "--kubeconfig",
        config,
        "config",
        "set-context",
        "--current",
        &format!("--user={account}"),
    ]);
    let operator = OperatorProcess::start_as(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        cluster,
        namespace,
        &cluster.s3_secret_key,
        cluster.free_addr(),
        extra,
        &kubeconfig,
    );
    let user = format!("system:serviceaccount:{namespace}:{account}");
    (operator, user, kubeconfig)
}

/// The audit log's finished requests of `user` received at or after `since`.
fn requests_of(cluster: &LocalCluster, user: &str, since: &str) -> Vec<serde_json::Value> {
    let log = std::fs::read_to_string(&cluster.audit_log).unwrap();
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["user"]["username"] == user)
        .filter(|event| event["stage"] == "ResponseComplete")
        .filter(|event| event["requestReceivedTimestamp"].as_str().unwrap_or_default() >= since)
        .collect()
}

/// Now, as the audit log writes its timestamps.
fn audit_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_set_run_id_or_dataset_id_label_changes_nothing() {
    let (cluster, client, ns, operator) = namespace_with_operator("forged-ids").await;
    let _logs = logs_on_failure(cluster, &ns);
    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns.name);
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);

    // The victim's dataset and run get their ids from the operator.
    datasets
        .create(
            &PostParams::default(),
            &dataset("victim-data", serde_json::json!({})),
        )
        .await
        .unwrap();
    let victim_data = until(&datasets, "victim-data", |d: &Dataset| d.dataset_id().is_some()).await;
    let victim_dataset_id = victim_data.dataset_id().unwrap().to_string();
    jobs.create(
        &PostParams::default(),
        &training_job(
            "victim-run",
            serde_json::json!({"dataset": {"name": "victim-data"}}),
        ),
    )
    .await
    .unwrap();
    let victim = until(&jobs, "victim-run", |j: &TrainingJob| j.run_id().is_some()).await;
    let victim_run = victim.run_id().unwrap().to_string();

    // Another user labels their own objects with the victim's ids, at creation.
    datasets
        .create(
            &PostParams::default(),
            &dataset(
                "forger-data",
                serde_json::json!({"miniautoml.io/dataset-id": victim_dataset_id}),
            ),
        )
        .await
        .unwrap();
    let mut forged = training_job(
        "hijacker",
        serde_json::json!({"dataset": {"name": "forger-data"}}),
    );
    forged
        .labels_mut()
        .insert("miniautoml.io/run-id".into(), victim_run.clone());
    jobs.create(&PostParams::default(), &forged).await.unwrap();

    // Each gets an id of its own, and the label is put back to it.
    let forger_data = until(&datasets, "forger-data", |d: &Dataset| {
        d.dataset_id()
            .is_some_and(|id| label(d, "miniautoml.io/dataset-id") == Some(&id.to_string()))
    })
    .await;
    assert_ne!(forger_data.dataset_id().unwrap().to_string(), victim_dataset_id);
    let hijacker = until(&jobs, "hijacker", |j: &TrainingJob| {
        j.run_id()
            .is_some_and(|id| label(j, "miniautoml.io/run-id") == Some(&id.to_string()))
    })
    .await;
    assert_ne!(hijacker.run_id().unwrap().to_string(), victim_run);

    // Relabelled later, it is put back too.
    let relabel = serde_json::json!({"metadata": {"labels": {"miniautoml.io/run-id": victim_run}}});
    jobs.patch("hijacker", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    let own = hijacker.run_id().unwrap().to_string();
    until(&jobs, "hijacker", |j: &TrainingJob| {
        label(j, "miniautoml.io/run-id") == Some(own.as_str())
    })
    .await;
    // And while a forged label stands, the ids still answer with the victim's objects.
    jobs.patch("hijacker", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    // The ids answer with the victim's objects.
    let channel = operator.grpc_channel().await;
    let mut metadata = MetadataStoreServiceClient::new(channel.clone());
    let info = metadata
        .get_run_status(GetRunStatusRequest {
            run_id: victim_run.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .run_info
        .unwrap();
    assert_eq!(info.tracing.unwrap().dataset_id, "victim-data");
    let mut data = DataManagementServiceClient::new(channel);
    let summary = data
        .get_dataset_summary(DatasetPointer {
            dataset_id: victim_dataset_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.name, "victim-data");
    let victim_after = jobs.get("victim-run").await.unwrap();
    assert_eq!(victim_after.run_id().unwrap().to_string(), victim_run);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_token_answers_for_its_run_where_other_objects_carry_the_same_run_id() {
    // Another operator (its own id counter) watching a namespace this one watches gives its runs
    // ids this one gives too: five such TrainingJobs carry the run id of a run of ours.
    let (cluster, client, ns, operator) = namespace_with_operator("shared-run-id").await;
    let _logs = logs_on_failure(cluster, &ns);
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    jobs.create(
        &PostParams::default(),
        &training_job("ours", serde_json::json!({"dataset": {"name": "not-there-yet"}})),
    )
    .await
    .unwrap();
    let ours = until(&jobs, "ours", |j: &TrainingJob| j.run_id().is_some()).await;
    let run_id = ours.run_id().unwrap().to_string();
    for n in 0..5 {
        let name = format!("foreign-{n}");
        jobs.create(
            &PostParams::default(),
            &training_job(&name, serde_json::json!({"dataset": {"name": "not-there-yet"}})),
        )
        .await
        .unwrap();
        until(&jobs, &name, |j: &TrainingJob| j.run_id().is_some()).await;
        let same_id = serde_json::json!({"status": {"runId": run_id}});
        jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&same_id))
            .await
            .unwrap();
    }
    until(&jobs, "foreign-4", |j: &TrainingJob| {
        j.run_id().map(|id| id.to_string()) == Some(run_id.clone())
    })
    .await;

    // The run's own token is taken, whichever of the six the operator's cache lists first.
    let token = RunTokens::derived_from(&cluster.s3_secret_key).token(&ours.uid().unwrap());
    let mut metadata: MetadataStoreServiceClient<Channel> =
        MetadataStoreServiceClient::new(operator.grpc_channel().await);
    for epoch_id in ["0-9", "10-19", "20-29"] {
        metadata
            .log_epoch(with_token(&token, epoch(&run_id, epoch_id)))
            .await
            .unwrap_or_else(|status| panic!("epoch {epoch_id}: {status:?}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_tokens_end_with_the_run_and_a_run_secret_made_beforehand_is_not_trusted() {
    let (cluster, client, ns, operator) = namespace_with_operator("run-tokens").await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(cluster, &Api::namespaced(client.clone(), &ns.name), &ns.name).await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);

    // A user makes the run's Secret before the run exists, with a token they know and storage
    // credentials of their choosing.
    let planted = Secret {
        metadata: ObjectMeta {
            name: Some("intent-run".into()),
            ..Default::default()
        },
        data: Some(
            [
                ("token", "attacker-known"),
                ("AWS_ACCESS_KEY_ID", "attacker"),
                ("AWS_SECRET_ACCESS_KEY", "attacker-secret"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
        ),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &planted).await.unwrap();
    succeeded_run(&jobs, "intent", &ns.name).await;
    // Once the run has ended, the operator's last write: its pods' own storage key revoked.
    let done = until(&jobs, "intent", |job: &TrainingJob| {
        job.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "StorageKey" && c.reason == "Revoked")
        })
    })
    .await;
    let status = done.status.clone().unwrap();
    let run_id = status.run_id.clone().unwrap();

    // The operator wrote its own token and credentials into it, and owns it.
    let secret = secrets.get("intent-run").await.unwrap();
    let token = String::from_utf8(secret.data.as_ref().unwrap()["token"].0.clone()).unwrap();
    assert_ne!(token, "attacker-known");
    assert_eq!(
        secret.owner_references()[0].uid,
        done.uid().unwrap(),
        "owned by its TrainingJob"
    );

    // The trainer ran restricted: non-root, RuntimeDefault seccomp, nothing to escalate to.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels("miniautoml.io/trainingjob=intent"))
        .await
        .unwrap();
    let context = pods.items[0].spec.as_ref().unwrap().containers[0]
        .security_context
        .clone()
        .unwrap();
    assert_eq!(
        (
            context.run_as_non_root,
            context.allow_privilege_escalation,
            context.read_only_root_filesystem
        ),
        (Some(true), Some(false), Some(true))
    );
    assert_eq!(context.seccomp_profile.unwrap().type_, "RuntimeDefault");

    let mut metadata: MetadataStoreServiceClient<Channel> =
        MetadataStoreServiceClient::new(operator.grpc_channel().await);
    // The planted token, and this run's token for a run id that does not exist: the same
    // answer as any made-up token.
    let planted = metadata
        .log_epoch(with_token("attacker-known", epoch(&run_id, "0-99")))
        .await
        .unwrap_err();
    assert_eq!(planted.code(), Code::PermissionDenied, "{planted:?}");
    let unknown = metadata
        .log_epoch(with_token(&token, epoch("999999", "0-99")))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::PermissionDenied, "{unknown:?}");
    assert!(
        unknown.message().contains("the token is not run 999999's"),
        "{unknown:?}"
    );

    // The run's own token, after the run ended: no report changes its status.
    let refused = metadata
        .log_epoch(with_token(&token, epoch(&run_id, "0-99")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("has ended"), "{refused:?}");
    let artifact = metadata
        .create_artifact(with_token(
            &token,
            CreateArtifactRequest {
                artifact: Some(FileInfo {
                    name: "intent".into(),
                    bucket: cluster.s3_bucket.clone(),
                    path: status.artifact.as_ref().unwrap().uri.clone(),
                }),
                run_id: run_id.clone(),
                algorithm: "intent-classification".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(artifact.code(), Code::FailedPrecondition, "{artifact:?}");
    // A late LogRunEnd is answered as before, and changes nothing.
    let end = metadata
        .log_run_end(with_token(
            &token,
            LogRunEndRequest {
                run_id: run_id.clone(),
                success: true,
                message: "test accuracy 0.01".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(end.run_info.unwrap().success);
    let after = jobs.get("intent").await.unwrap().status.unwrap();
    assert_eq!(after, status, "a spent token changed the status");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_without_a_valid_run_token_cost_no_kubernetes_api_call() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "tokenless").await.unwrap();
    // The operator runs as a ServiceAccount, so the audit log records its every request.
    let (operator, user, kubeconfig) = operator_as_account(cluster, &ns.name, &[]);
    let mut metadata = MetadataStoreServiceClient::new(operator.grpc_channel().await);
    // Ready: its caches hold every TrainingJob of the namespace (none).
    for _ in 0..300 {
        let ready = miniautoml_test_support::http_get(operator.admin_addr, "/readyz").await;
        if ready.is_ok_and(|body| body.contains(" 200 ")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let since = audit_now();

    // 1,000 reports without a token and 1,000 with a made-up one, each for a random run id;
    // bounded in time too.
    let calls = async {
        for i in 0..2000u64 {
            let run = format!("{}", 1 + (i * 7_919 + 13) % 100_000);
            let refused = if i % 2 == 0 {
                metadata.log_epoch(epoch(&run, "0-1")).await.unwrap_err()
            } else {
                let made_up = format!("{i:032x}.{:064x}", i * 31);
                metadata
                    .log_epoch(with_token(&made_up, epoch(&run, "0-1")))
                    .await
                    .unwrap_err()
            };
            let expected = if i % 2 == 0 {
                Code::Unauthenticated
            } else {
                Code::PermissionDenied
            };
            assert_eq!(refused.code(), expected, "{refused:?}");
        }
    };
    tokio::time::timeout(Duration::from_secs(120), calls)
        .await
        .expect("2,000 refused reports within 2 minutes");

    // The audit log: no request of the operator's since, besides its watches.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests: Vec<String> = requests_of(cluster, &user, &since)
        .iter()
        .filter(|event| event["verb"] != "watch")
        .map(|event| format!("{} {}", event["verb"], event["objectRef"]["resource"]))
        .collect();
    println!("2,000 refused reports; API requests of the operator meanwhile: {requests:?}");
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("trainingjobs") || r.contains("secrets")),
        "{requests:?}"
    );
    let _ = std::fs::remove_file(&kubeconfig);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_ingests_only_its_own_sources_and_learns_nothing_about_others() {
    let (cluster, client, ns, operator) = namespace_with_operator("sources").await;
    let _logs = logs_on_failure(cluster, &ns);
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    // Another namespace's raw data and a model: they exist.
    let theirs = format!("raw/{}-other/secret.csv", ns.name);
    let model = format!("models/{}-other/run/uid/labels.json", ns.name);
    store
        .put(&theirs, b"secret,joy\n".to_vec(), "text/csv")
        .await
        .unwrap();
    store
        .put(&model, b"[]".to_vec(), "application/json")
        .await
        .unwrap();
    let missing = format!("raw/{}/never-uploaded.csv", ns.name);

    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns.name);
    let entry =
        |key: &str| serde_json::json!({"message": key, "source": {"bucket": cluster.s3_bucket, "key": key}});
    let spec: Dataset = serde_json::from_value(serde_json::json!({
        "apiVersion": "miniautoml.io/v1alpha1", "kind": "Dataset",
        "metadata": {"name": "thief"},
        "spec": {"type": "TextIntent", "commits": [entry(&theirs), entry(&model), entry(&missing)]},
    }))
    .unwrap();
    datasets.create(&PostParams::default(), &spec).await.unwrap();
    let done = until(&datasets, "thief", |d: &Dataset| {
        d.status.as_ref().is_some_and(|s| s.rejected.len() == 3)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.commit_count, 0, "nothing copied");
    // Another namespace's object, a model and a missing object read alike: nothing revealed.
    let said: Vec<String> = status
        .rejected
        .iter()
        .map(|r| {
            r.message
                .replace(&theirs, "KEY")
                .replace(&model, "KEY")
                .replace(&missing, "KEY")
        })
        .collect();
    assert!(said.iter().all(|m| m == &said[0]), "{said:#?}");
    assert!(
        said[0].contains("does not exist or is not a source namespace"),
        "{said:#?}"
    );
    let copied = store
        .list(&cluster.s3_bucket, &format!("datasets/{}/thief/", ns.name))
        .await
        .unwrap();
    assert!(copied.is_empty(), "{copied:?}");

    // Through the original API: the same NOT_FOUND for another namespace's object and a
    // missing one, and no Dataset created.
    let mut data = DataManagementServiceClient::new(operator.grpc_channel().await);
    let create = |path: &str| CreateDatasetRequest {
        name: "thief".into(),
        dataset_type: DatasetType::TextIntent as i32,
        bucket: cluster.s3_bucket.clone(),
        path: path.into(),
        ..Default::default()
    };
    let refused = data.create_dataset(create(&theirs)).await.unwrap_err();
    let absent = data.create_dataset(create(&missing)).await.unwrap_err();
    assert_eq!((refused.code(), absent.code()), (Code::NotFound, Code::NotFound));
    assert_eq!(
        refused.message().replace(&theirs, "KEY"),
        absent.message().replace(&missing, "KEY")
    );
    assert_eq!(
        datasets.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unknown_tokens_has_at_most_a_few_reviews_in_flight() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "token-flood").await.unwrap();
    let (operator, user, kubeconfig) = operator_as_account(cluster, &ns.name, &["--grpc-auth=kubernetes"]);
    let data = DataManagementServiceClient::new(operator.grpc_channel().await);
    let since = audit_now();

    // 300 calls at once from one peer, each with a token never seen before; bounded in time.
    let calls = (0..300u32).map(|i| {
        let mut data = data.clone();
        async move {
            let made_up = format!(
                "made-up-{i}-{:016x}",
                u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            );
            data.list_datasets(with_token(&made_up, ListQueryOptions::default()))
                .await
                .unwrap_err()
        }
    });
    let answers = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(calls))
        .await
        .expect("300 refused calls within 2 minutes");
    let count = |code: Code| answers.iter().filter(|status| status.code() == code).count();
    let (unauthenticated, exhausted) = (count(Code::Unauthenticated), count(Code::ResourceExhausted));
    assert_eq!(unauthenticated + exhausted, answers.len(), "{answers:?}");
    assert!(exhausted > 0, "no call was held back");
    let held = answers
        .iter()
        .find(|status| status.code() == Code::ResourceExhausted)
        .unwrap();
    assert!(held.message().contains("in flight"), "{}", held.message());

    // The API server saw one TokenReview per call answered UNAUTHENTICATED, never more than the
    // limit at once (each request's interval, as the API server timed it, lies within the
    // operator's).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reviews: Vec<(String, String)> = requests_of(cluster, &user, &since)
        .iter()
        .filter(|event| event["objectRef"]["resource"] == "tokenreviews")
        .map(|event| {
            let at = |field: &str| event[field].as_str().unwrap_or_default().to_string();
            (at("requestReceivedTimestamp"), at("stageTimestamp"))
        })
        .collect();
    let most = reviews
        .iter()
        .map(|(start, _)| {
            reviews
                .iter()
                .filter(|(other_start, other_end)| other_start <= start && start < other_end)
                .count()
        })
        .max()
        .unwrap_or(0);
    println!(
        "300 calls with unknown tokens: {unauthenticated} reviewed (UNAUTHENTICATED), {exhausted} held back \
         (RESOURCE_EXHAUSTED); {} TokenReviews, at most {most} in flight",
        reviews.len()
    );
    assert_eq!(reviews.len(), unauthenticated);
    assert!(most <= PER_CALLER, "{most} TokenReviews in flight at once");
    let _ = std::fs::remove_file(&kubeconfig);
}

#[tokio::test]
async fn the_local_stores_internal_ports_answer_no_pod() {
    // Pods reach the local cluster's store at the node IP, as host processes do: there only the
    // S3 gateway listens. The master, volume server and filer (and their gRPC ports) answer
    // without credentials, so they listen on loopback only (hack/cluster.sh).
    let cluster = LocalCluster::shared();
    let address: std::net::SocketAddr = cluster
        .s3_endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let node_ip = address.ip().to_string();
    let port = |name: &str, default: u16| {
        std::env::var(name)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(default)
    };
    let (master, volume, filer) = (
        port("SEAWEED_MASTER_PORT", 9333),
        port("SEAWEED_VOLUME_PORT", 9340),
        port("SEAWEED_FILER_PORT", 9888),
    );
    for internal in [
        master,
        volume,
        filer,
        master + 10000,
        volume + 10000,
        filer + 10000,
        8181,
        9101,
    ] {
        let reached = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect((node_ip.as_str(), internal)),
        )
        .await;
        assert!(
            matches!(reached, Ok(Err(_))),
            "{node_ip}:{internal} took a connection"
        );
    }
    let s3 = tokio::net::TcpStream::connect(address).await;
    assert!(s3.is_ok(), "the S3 port is closed: {s3:?}");
}

/// The storage key in `secret` (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) as a store.
fn store_of(cluster: &LocalCluster, secret: &Secret) -> (String, Store) {
    let data = secret.data.as_ref().unwrap();
    let entry = |key: &str| Some(String::from_utf8(data.get(key)?.0.clone()).unwrap());
    let id = entry("AWS_ACCESS_KEY_ID").unwrap();
    let secret_key = entry("AWS_SECRET_ACCESS_KEY").unwrap();
    let token = entry("AWS_SESSION_TOKEN");
    let store = Store::with_session_token(
        Some(&cluster.s3_endpoint),
        "us-east-1",
        (&id, &secret_key, token.as_deref()),
        &cluster.s3_bucket,
    );
    (id, store)
}

/// Waits until `store` is refused reading `key` (a revoked key), at most [`WITHIN`].
async fn refused(store: &Store, key: &str) {
    let start = std::time::Instant::now();
    loop {
        match store.read(key).await {
            Err(miniautoml_data::StorageError::Denied(_)) => return,
            other if start.elapsed() > WITHIN => panic!("{key} still readable: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_and_predictor_pods_hold_keys_of_their_own_that_end_with_them() {
    let (cluster, client, ns, _operator) = namespace_with_operator("own-keys").await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(cluster, &Api::namespaced(client.clone(), &ns.name), &ns.name).await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);
    let admin = Store::new(cluster.s3(), &cluster.s3_bucket);
    // Another namespace's model, which no key of this namespace may read.
    let foreign = format!("models/other-{}/x/uid/model.bin", ns.name);
    admin
        .put(&foreign, b"secret weights".to_vec(), "application/octet-stream")
        .await
        .unwrap();

    let done = succeeded_run(&jobs, "intent", &ns.name).await;
    let status = done.status.clone().unwrap();
    let artifact = status.artifact.clone().unwrap();
    let model = artifact
        .uri
        .trim_start_matches(&format!("s3://{}/", cluster.s3_bucket))
        .to_string();
    let snapshot = format!("datasets/{}/tweets/snapshots/hashBg==/", ns.name);

    // The run's pods held a key of their own, not the operator's.
    let (run_key, run_store) = store_of(cluster, &secrets.get("intent-run").await.unwrap());
    assert_ne!(run_key, cluster.s3_access_key);
    assert!(run_key.starts_with("MA"), "{run_key}");
    // It ended with the run: revoked, and the status says so.
    refused(&run_store, &format!("{model}manifest.json")).await;
    let revoked = until(&jobs, "intent", |job: &TrainingJob| {
        job.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "StorageKey" && c.status == "False" && c.reason == "Revoked")
        })
    })
    .await;
    println!(
        "run key {run_key}: revoked; {:?}",
        revoked
            .status
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "StorageKey")
    );
    refused(&run_store, &format!("{snapshot}examples.csv")).await;

    // A ModelDeployment's predictors get their own key: it reads the model they serve and
    // nothing else, and goes with the ModelDeployment.
    let mds = Api::<ModelDeployment>::namespaced(client.clone(), &ns.name);
    let ready = serve_intent(&mds).await;
    let (predictor_key, predictor_store) =
        store_of(cluster, &secrets.get("intent-predictor-s3").await.unwrap());
    assert_ne!(predictor_key, cluster.s3_access_key);
    assert_ne!(predictor_key, run_key);
    predictor_store
        .read(&format!("{model}manifest.json"))
        .await
        .expect("the predictors' key reads their model");
    for elsewhere in [format!("{snapshot}examples.csv"), foreign.clone()] {
        assert!(
            matches!(
                predictor_store.read(&elsewhere).await,
                Err(miniautoml_data::StorageError::Denied(_))
            ),
            "the predictors' key read {elsewhere}"
        );
    }
    assert!(matches!(
        predictor_store
            .put(
                &format!("{model}manifest.json"),
                b"{}".to_vec(),
                "application/json"
            )
            .await,
        Err(miniautoml_data::StorageError::Denied(_))
    ));
    mds.delete("intent", &Default::default()).await.unwrap();
    let md_uid = ready.uid().unwrap();
    let gone = await_condition(
        mds.clone(),
        "intent",
        kube::runtime::wait::conditions::is_deleted(&md_uid),
    );
    tokio::time::timeout(WITHIN, gone).await.unwrap().unwrap();
    refused(&predictor_store, &format!("{model}manifest.json")).await;
    admin.delete_prefix(&foreign).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_sts_a_run_and_its_predictors_hold_temporary_keys_of_their_own() {
    let (cluster, client, ns, _operator) = harness::namespace_with_operator(
        env!("CARGO_BIN_EXE_miniautoml-operator"),
        "sts-keys",
        &["--storage-credentials=sts", "--sts-duration=900"],
    )
    .await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(cluster, &Api::namespaced(client.clone(), &ns.name), &ns.name).await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns.name);
    let admin = Store::new(cluster.s3(), &cluster.s3_bucket);
    let foreign = format!("models/other-{}/x/uid/model.bin", ns.name);
    admin
        .put(&foreign, b"secret weights".to_vec(), "application/octet-stream")
        .await
        .unwrap();

    // The trainer read its snapshot and wrote its model with a temporary key from the store's
    // STS, which the run's status names.
    let done = succeeded_run(&jobs, "intent", &ns.name).await;
    let status = done.status.clone().unwrap();
    let key = status
        .conditions
        .iter()
        .find(|c| c.type_ == "StorageKey")
        .unwrap();
    assert_eq!(
        (key.status.as_str(), key.reason.as_str()),
        ("True", "SessionKey"),
        "{key:?}"
    );
    assert!(key.message.contains("expires 900 s after launch"), "{key:?}");
    assert!(
        done.metadata
            .finalizers
            .iter()
            .flatten()
            .all(|f| !f.contains("storage-key")),
        "nothing to revoke: {:?}",
        done.metadata.finalizers
    );
    let model = status
        .artifact
        .unwrap()
        .uri
        .trim_start_matches(&format!("s3://{}/", cluster.s3_bucket))
        .to_string();
    let run_secret = secrets.get("intent-run").await.unwrap();
    assert!(
        run_secret
            .data
            .as_ref()
            .unwrap()
            .contains_key("AWS_SESSION_TOKEN")
    );
    let (run_key, run_store) = store_of(cluster, &run_secret);
    assert_ne!(run_key, cluster.s3_access_key);
    run_store
        .read(&format!("{model}manifest.json"))
        .await
        .expect("the run's key reads its own model folder");
    assert!(
        matches!(
            run_store.read(&foreign).await,
            Err(miniautoml_data::StorageError::Denied(_))
        ),
        "the run's key read another namespace's model"
    );

    // The predictors' temporary key reads their model only; the Deployment dates it.
    let mds = Api::<ModelDeployment>::namespaced(client.clone(), &ns.name);
    let ready = serve_intent(&mds).await;
    assert!(
        ready.metadata.finalizers.is_none(),
        "{:?}",
        ready.metadata.finalizers
    );
    let deployment = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns.name)
        .get("intent-predictor")
        .await
        .unwrap();
    let expires: k8s_openapi::jiff::Timestamp = deployment.annotations()["miniautoml.io/storage-key-expires"]
        .parse()
        .unwrap();
    let left = expires.duration_since(k8s_openapi::jiff::Timestamp::now());
    assert!(
        left.as_secs() > 600 && left.as_secs() <= 900,
        "the key's expiry: {expires}"
    );
    let (predictor_key, predictor_store) =
        store_of(cluster, &secrets.get("intent-predictor-s3").await.unwrap());
    assert_ne!(predictor_key, run_key);
    predictor_store
        .read(&format!("{model}manifest.json"))
        .await
        .expect("the predictors' key reads their model");
    assert!(matches!(
        predictor_store.read(&foreign).await,
        Err(miniautoml_data::StorageError::Denied(_))
    ));
    admin.delete_prefix(&foreign).await.unwrap();
}

/// Creates the ModelDeployment `intent` serving the TrainingJob `intent` and waits (at most
/// 180 s) until it is Ready; returns it.
async fn serve_intent(mds: &Api<ModelDeployment>) -> ModelDeployment {
    mds.create(
        &PostParams::default(),
        &harness::model_deployment("intent", "intent"),
    )
    .await
    .unwrap();
    let rolled_out = await_condition(mds.clone(), "intent", |md: Option<&ModelDeployment>| {
        md.and_then(|md| md.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    });
    match tokio::time::timeout(Duration::from_secs(180), rolled_out).await {
        Ok(found) => found.unwrap().unwrap(),
        Err(_) => panic!("the predictors did not roll out: {:#?}", mds.get("intent").await),
    }
}

/// Waits (at most [`WITHIN`]) until the Secret `name` in `secrets` exists; returns it.
async fn secret_appears(secrets: &Api<Secret>, name: &str) -> Secret {
    let start = std::time::Instant::now();
    loop {
        if let Some(secret) = secrets.get_opt(name).await.unwrap() {
            return secret;
        }
        assert!(start.elapsed() < WITHIN, "Secret {name} did not appear");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn data_engineers_upload_with_their_namespaces_key_into_its_raw_prefix_only() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let a = TestNamespace::new(cluster, &client, "upload-a").await.unwrap();
    let b = TestNamespace::new(cluster, &client, "upload-b").await.unwrap();
    let _logs = logs_on_failure(cluster, &a);
    let both = format!("--upload-key-namespace={},{}", a.name, b.name);
    let grpc_addr = cluster.free_addr();
    let binary = env!("CARGO_BIN_EXE_miniautoml-operator");
    let mut operator = OperatorProcess::start_at(
        binary,
        cluster,
        &a.name,
        &cluster.s3_secret_key,
        grpc_addr,
        &[&both],
    );

    let a_secrets = Api::<Secret>::namespaced(client.clone(), &a.name);
    let b_secrets = Api::<Secret>::namespaced(client.clone(), &b.name);
    let (a_key, a_store) = store_of(cluster, &secret_appears(&a_secrets, "miniautoml-upload").await);
    let (b_key, b_store) = store_of(cluster, &secret_appears(&b_secrets, "miniautoml-upload").await);
    assert_ne!(a_key, cluster.s3_access_key);
    assert_ne!(a_key, b_key);

    // Namespace a's key uploads into raw/<a>/, reads and lists it back — and nothing else.
    let mine = format!("raw/{}/tweets.csv", a.name);
    a_store
        .put(&mine, b"text,label\nhi,greeting\n".to_vec(), "text/csv")
        .await
        .unwrap();
    assert_eq!(a_store.read(&mine).await.unwrap(), b"text,label\nhi,greeting\n");
    assert_eq!(
        a_store
            .list(&cluster.s3_bucket, &format!("raw/{}/", a.name))
            .await
            .unwrap()
            .len(),
        1
    );
    let denied = |result: Result<_, miniautoml_data::StorageError>| {
        matches!(result, Err(miniautoml_data::StorageError::Denied(_)))
    };
    assert!(denied(
        a_store
            .put(&format!("raw/{}/poison.csv", b.name), b"x".to_vec(), "text/csv")
            .await
    ));
    assert!(denied(b_store.read(&mine).await.map(|_| ())), "b read a's upload");
    assert!(denied(
        a_store
            .put(
                "models/x/y/z/model.bin",
                b"x".to_vec(),
                "application/octet-stream"
            )
            .await
    ));
    assert!(denied(a_store.list(&cluster.s3_bucket, "raw/").await.map(|_| ())));

    // Taken off the list: b's key is revoked and its Secret deleted.
    operator.kill();
    let only_a = format!("--upload-key-namespace={}", a.name);
    let _operator = OperatorProcess::start_at(
        binary,
        cluster,
        &a.name,
        &cluster.s3_secret_key,
        grpc_addr,
        &[&only_a],
    );
    refused(&b_store, &format!("raw/{}/anything.csv", b.name)).await;
    let start = std::time::Instant::now();
    while b_secrets.get_opt("miniautoml-upload").await.unwrap().is_some() {
        assert!(start.elapsed() < WITHIN, "b's upload Secret is still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a_store.read(&mine).await.expect("a's key still works");
    Store::new(cluster.s3(), &cluster.s3_bucket)
        .delete_prefix(&format!("raw/{}/", a.name))
        .await
        .unwrap();
}
