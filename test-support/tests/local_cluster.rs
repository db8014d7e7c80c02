//! The local cluster is real: the API server accepts the CRDs and enforces their schema and CEL
//! rules, kube-scheduler binds GPU pods to simulated GPU nodes, and S3 checks credentials.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
};
use miniautoml_api::{Dataset, ModelDeployment, TrainingJob};
use miniautoml_test_support::{LocalCluster, TestNamespace, WAIT, example, install_crds};

/// The API server's message for a rejected write.
fn rejection<T: std::fmt::Debug>(result: kube::Result<T>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        other => panic!("expected a 422 rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn crds_are_accepted_and_their_rules_enforced_by_the_api_server() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "crds").await.unwrap();
    let create = PostParams::default();

    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns.name);
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let deployments = Api::<ModelDeployment>::namespaced(client.clone(), &ns.name);
    let dataset = datasets.create(&create, &example("dataset.yaml")).await.unwrap();
    let job = jobs.create(&create, &example("trainingjob.yaml")).await.unwrap();
    deployments
        .create(&create, &example("modeldeployment.yaml"))
        .await
        .unwrap();
    assert_eq!(job.spec.workers, 1, "the API server applied the schema default");

    let mut both: TrainingJob = example("trainingjob.yaml");
    both.metadata.name = Some("both".into());
    both.spec.image = Some("registry.example/trainer:1".into());
    assert!(rejection(jobs.create(&create, &both).await).contains("set exactly one of algorithm and image"));

    let mut too_many: TrainingJob = example("trainingjob.yaml");
    too_many.metadata.name = Some("too-many".into());
    too_many.spec.workers = 65;
    assert!(rejection(jobs.create(&create, &too_many).await).contains("less than or equal to 64"));

    let mut edited = dataset.clone();
    edited.spec.commits[0].message = "rewritten".into();
    let message = rejection(datasets.replace("tweet-emotion", &create, &edited).await);
    assert!(message.contains("append-only"), "{message}");

    let mut appended = dataset;
    let mut second = appended.spec.commits[0].clone();
    second.message = "part 2".into();
    appended.spec.commits.push(second);
    let appended = datasets
        .replace("tweet-emotion", &create, &appended)
        .await
        .unwrap();
    assert_eq!(appended.spec.commits.len(), 2);

    let mut shrunk = appended;
    shrunk.spec.commits.pop();
    assert!(rejection(datasets.replace("tweet-emotion", &create, &shrunk).await).contains("append-only"));

    let change = Patch::Merge(serde_json::json!({"spec": {"parameters": {"LR": "0.1"}}}));
    let message = rejection(
        jobs.patch("twitter-model", &PatchParams::default(), &change)
            .await,
    );
    assert!(message.contains("spec is immutable"), "{message}");
}

fn gpu_pod(name: &str, gpus: u32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"type": "kwok"},
            "tolerations": [
                {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ],
            "containers": [{
                "name": "train",
                "image": "miniautoml/intent-classification:0.1.0",
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}},
            }],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn kube_scheduler_binds_gpu_pods_to_simulated_gpu_nodes() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let ns = TestNamespace::new(cluster, &client, "gpu").await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    pods.create(&PostParams::default(), &gpu_pod("one-gpu", 1))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &gpu_pod("three-gpus", 3))
        .await
        .unwrap();

    let bound = await_condition(pods.clone(), "one-gpu", |pod: Option<&Pod>| {
        pod.and_then(|p| p.spec.as_ref()?.node_name.clone()).is_some()
    });
    let pod = tokio::time::timeout(WAIT, bound)
        .await
        .expect("bound in time")
        .unwrap()
        .unwrap();
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some("kwok-gpu-0"));

    let unschedulable = await_condition(pods.clone(), "three-gpus", |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    });
    let pod = tokio::time::timeout(WAIT, unschedulable)
        .await
        .expect("marked in time")
        .unwrap()
        .unwrap();
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let message = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap()
        .message;
    assert!(
        message.unwrap_or_default().contains("nvidia.com/gpu"),
        "the reason names the resource"
    );
}

#[tokio::test]
async fn s3_serves_objects_only_to_the_generated_credentials() {
    let cluster = LocalCluster::shared();
    let s3 = cluster.s3();
    let key = format!("tests/{}/hello.txt", std::process::id());
    s3.put_object()
        .bucket(&cluster.s3_bucket)
        .key(&key)
        .body(b"hello, bucket".to_vec().into())
        .send()
        .await
        .unwrap();
    let object = s3
        .get_object()
        .bucket(&cluster.s3_bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        object.body.collect().await.unwrap().into_bytes().as_ref(),
        b"hello, bucket"
    );
    let listed = s3
        .list_objects_v2()
        .bucket(&cluster.s3_bucket)
        .prefix("tests/")
        .send()
        .await
        .unwrap();
    assert!(listed.contents().iter().any(|o| o.key() == Some(key.as_str())));

    let forged = cluster.s3_with(&cluster.s3_access_key, "not-the-secret");
    let refused = forged
        .get_object()
        .bucket(&cluster.s3_bucket)
        .key(&key)
        .send()
        .await;
    assert!(refused.is_err(), "a wrong secret must be refused");
    let unknown = cluster.s3_with("nobody", "nothing");
    assert!(
        unknown
            .list_objects_v2()
            .bucket(&cluster.s3_bucket)
            .send()
            .await
            .is_err()
    );

    s3.delete_object()
        .bucket(&cluster.s3_bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
}
