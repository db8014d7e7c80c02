//! TrainingJobs that Kueue admits (`spec.queueName`), on the local cluster with a real Kueue
//! (`hack/cluster.sh kueue`: its release manifests and manager) and kwok's simulated GPU nodes:
//! runs beyond a ClusterQueue's quota wait `Queued` with Kueue's reason and the place Kueue's
//! visibility API gives, in order; a 4-worker run is admitted whole or not at all; a deleted
//! run leaves no pods, Workload or quota behind; a LocalQueue that does not exist says so.

use std::time::Duration;

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
    runtime::wait::{await_condition, conditions::is_deleted},
};
use miniautoml_api::{TrainingJob, TrainingJobStatus, training_job::TrainingPhase};
use miniautoml_operator::kueue::Workload;
use miniautoml_test_support::{
    LocalCluster, OperatorProcess, TestNamespace,
    harness::{self, RUN_WAIT, finished, logs_on_failure, training_job, tweet_emotion, wait_for},
    simulated::SimulatedTrainer,
};

/// The simulated GPU nodes these tests schedule on (4 GPUs each), added to the cluster once.
const POOL: &str = "kueue-gpu";

/// Kueue, then a fresh namespace with its own operator (started after Kueue, so it reads
/// Workloads), the tweets Dataset, a ClusterQueue of `gpus` GPUs on the `simulated-gpu` flavor
/// for this namespace only, and the LocalQueue `gpus` pointing at it.
async fn with_kueue(
    prefix: &str,
    gpus: u32,
) -> (
    &'static LocalCluster,
    Client,
    TestNamespace,
    OperatorProcess,
    Api<TrainingJob>,
    harness::LogsOnFailure<'static>,
) {
    LocalCluster::shared().with_kueue();
    let (cluster, client, ns, operator) =
        harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), prefix, &[]).await;
    let logs = logs_on_failure(cluster, &ns);
    tweet_emotion(cluster, &Api::namespaced(client.clone(), &ns.name), &ns.name).await;
    let nodes: String = (0..2)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {POOL}-{i}\n  annotations: {{kwok.x-k8s.io/node: fake}}\n  \
                 labels: {{kubernetes.io/hostname: {POOL}-{i}, type: kwok, miniautoml.io/pool: {POOL}, \
                 nvidia.com/gpu.present: \"true\"}}\nspec:\n  taints:\n  \
                 - {{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}}\n  \
                 - {{key: nvidia.com/gpu, value: present, effect: NoSchedule}}\n  \
                 - {{key: miniautoml.io/kueue-test, value: \"true\", effect: NoSchedule}}\nstatus:\n  \
                 allocatable: {{cpu: \"64\", memory: 512Gi, pods: \"110\", nvidia.com/gpu: \"4\"}}\n  \
                 capacity: {{cpu: \"64\", memory: 512Gi, pods: \"110\", nvidia.com/gpu: \"4\"}}\n---\n"
            )
        })
        .collect();
    cluster.apply(&nodes);
    cluster.gpu_queue(&ns.name, &ns.name, "gpus", gpus);
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    (cluster, client, ns, operator, jobs, logs)
}

/// A run of `workers` ranks of one simulated GPU each, queued in LocalQueue `queue`.
fn queued_run(name: &str, queue: &str, workers: i32) -> TrainingJob {
    let mut spec = serde_json::json!({
        "queueName": queue,
        "resources": {"gpus": 1},
        "nodeSelector": {"miniautoml.io/pool": POOL},
        // Only these tests' pods may use these nodes: others (test-support's scheduler test
        // expects a 3-GPU pod to fit nowhere) never land there.
        "tolerations": [
            {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "miniautoml.io/kueue-test", "operator": "Exists", "effect": "NoSchedule"},
        ],
    });
    if workers > 1 {
        spec["algorithm"] = "pytorch-intent".into();
        spec["workers"] = workers.into();
    }
    training_job(name, spec)
}

/// The `Running` condition's reason and message.
fn running(status: &TrainingJobStatus) -> (String, String) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Running")
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

async fn pods_of(client: &Client, namespace: &str, run: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("miniautoml.io/trainingjob={run}")))
        .await
        .unwrap()
        .items
}

async fn workloads_of(client: &Client, namespace: &str, job: &str) -> Vec<Workload> {
    Api::<Workload>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|w| w.owner_references().iter().any(|o| o.name == job))
        .collect()
}

/// A ClusterQueue's status field at `path` (jsonpath), e.g. how many workloads hold quota.
fn cluster_queue(cluster: &LocalCluster, name: &str, path: &str) -> String {
    let output = cluster
        .kubectl()
        .args(["get", "clusterqueue", name, "-o", &format!("jsonpath={path}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Deletes `name` and waits until it, its Job, its pods and its Workload are all gone.
async fn delete_and_wait_gone(client: &Client, jobs: &Api<TrainingJob>, namespace: &str, name: &str) {
    let uid = jobs.get(name).await.unwrap().uid().unwrap();
    jobs.delete(name, &Default::default()).await.unwrap();
    tokio::time::timeout(RUN_WAIT, await_condition(jobs.clone(), name, is_deleted(&uid)))
        .await
        .unwrap_or_else(|_| panic!("{name} was not deleted"))
        .unwrap();
    let job = format!("{name}-train");
    let job_api = Api::<Job>::namespaced(client.clone(), namespace);
    for _ in 0..120 {
        if job_api.get_opt(&job).await.unwrap().is_none()
            && pods_of(client, namespace, name).await.is_empty()
            && workloads_of(client, namespace, &job).await.is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "{name}: its Job, pods or Workload outlived it: Job {:?}, {} pods, {} Workloads",
        job_api.get_opt(&job).await.unwrap().map(|j| j.status),
        pods_of(client, namespace, name).await.len(),
        workloads_of(client, namespace, &job).await.len()
    );
}

fn queued_at(position: u32) -> impl Fn(&TrainingJobStatus) -> bool {
    move |s| s.phase == Some(TrainingPhase::Queued) && s.position_in_queue == Some(position)
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_beyond_the_quota_wait_in_kueues_order_and_a_deleted_run_leaves_nothing() {
    let (cluster, client, ns, operator, jobs, _logs) = with_kueue("kueue-quota", 2).await;
    // Kueue orders a queue by its Workloads' creation, that is when each run's Job is made
    // (once its snapshot is ready), to the second: one Job a second, the order is theirs.
    for name in ["first", "second", "third", "fourth"] {
        jobs.create(&PostParams::default(), &queued_run(name, "gpus", 1))
            .await
            .unwrap();
        wait_for(&jobs, name, &ns.name, |s| s.job_name.is_some()).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // Two GPUs: the first two run, the others wait with Kueue's reason and place.
    for name in ["first", "second"] {
        let status = wait_for(&jobs, name, &ns.name, |s| s.phase == Some(TrainingPhase::Running))
            .await
            .status
            .unwrap();
        let admitted = status.conditions.iter().find(|c| c.type_ == "Admitted").unwrap();
        assert_eq!(admitted.status, "True", "{status:#?}");
        let expected = format!("Kueue admitted all 1 pods in ClusterQueue {} (flavors: ", ns.name);
        assert!(admitted.message.starts_with(&expected), "{admitted:?}");
        assert!(
            admitted.message.contains("nvidia.com/gpu=simulated-gpu"),
            "{admitted:?}"
        );
    }
    let third = wait_for(&jobs, "third", &ns.name, queued_at(0))
        .await
        .status
        .unwrap();
    let (reason, message) = running(&third);
    assert_eq!(reason, "Pending", "{third:#?}");
    assert!(message.contains("nvidia.com/gpu"), "{message}");
    wait_for(&jobs, "fourth", &ns.name, queued_at(1)).await;
    assert!(pods_of(&client, &ns.name, "third").await.is_empty());

    // The first ends: the third starts, the fourth moves up.
    let trainer = SimulatedTrainer::connect(client.clone(), cluster.s3(), operator.grpc_addr)
        .await
        .unwrap();
    let first = pods_of(&client, &ns.name, "first").await.remove(0);
    trainer.finish(&first, 1).await.unwrap();
    let done = wait_for(&jobs, "first", &ns.name, finished).await.status.unwrap();
    assert_eq!(done.phase, Some(TrainingPhase::Succeeded), "{done:#?}");
    wait_for(&jobs, "third", &ns.name, |s| {
        s.phase == Some(TrainingPhase::Running)
    })
    .await;
    wait_for(&jobs, "fourth", &ns.name, queued_at(0)).await;

    // Deleted while queued, and while running: nothing of either stays, and the quota the
    // running one held goes to no one else (nothing is left queued).
    delete_and_wait_gone(&client, &jobs, &ns.name, "fourth").await;
    delete_and_wait_gone(&client, &jobs, &ns.name, "second").await;
    let third = pods_of(&client, &ns.name, "third").await.remove(0);
    trainer.finish(&third, 1).await.unwrap();
    wait_for(&jobs, "third", &ns.name, finished).await;
    for _ in 0..60 {
        if cluster_queue(
            cluster,
            &ns.name,
            "{.status.reservingWorkloads}/{.status.admittedWorkloads}",
        ) == "0/0"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        cluster_queue(
            cluster,
            &ns.name,
            "{.status.reservingWorkloads}/{.status.admittedWorkloads}"
        ),
        "0/0",
        "quota still held: {}",
        cluster_queue(cluster, &ns.name, "{.status}")
    );

    // A LocalQueue that does not exist: Kueue's own words, not a silent wait.
    jobs.create(&PostParams::default(), &queued_run("nowhere", "no-such-queue", 1))
        .await
        .unwrap();
    let lost = wait_for(&jobs, "nowhere", &ns.name, |s| running(s).0 == "Inadmissible")
        .await
        .status
        .unwrap();
    assert_eq!(lost.phase, Some(TrainingPhase::Queued));
    assert_eq!(
        running(&lost).1,
        "LocalQueue no-such-queue doesn't exist",
        "{lost:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_four_worker_run_is_admitted_whole_only_when_four_gpus_are_free() {
    let (cluster, client, ns, operator, jobs, _logs) = with_kueue("kueue-gang", 4).await;
    jobs.create(&PostParams::default(), &queued_run("single", "gpus", 1))
        .await
        .unwrap();
    wait_for(&jobs, "single", &ns.name, |s| {
        s.phase == Some(TrainingPhase::Running)
    })
    .await;
    jobs.create(&PostParams::default(), &queued_run("gang", "gpus", 4))
        .await
        .unwrap();
    // Three GPUs free, four needed: the whole gang waits, not three of its ranks.
    let waiting = wait_for(&jobs, "gang", &ns.name, queued_at(0))
        .await
        .status
        .unwrap();
    let (reason, message) = running(&waiting);
    assert_eq!(reason, "Pending", "{waiting:#?}");
    assert!(message.contains("nvidia.com/gpu"), "{message}");
    let workloads = workloads_of(&client, &ns.name, "gang-train").await;
    assert_eq!(workloads.len(), 1);
    assert_eq!(workloads[0].spec.pod_sets.iter().map(|p| p.count).sum::<i32>(), 4);
    for _ in 0..10 {
        assert!(
            pods_of(&client, &ns.name, "gang").await.is_empty(),
            "a rank started without quota"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let trainer = SimulatedTrainer::connect(client.clone(), cluster.s3(), operator.grpc_addr)
        .await
        .unwrap();
    let single = pods_of(&client, &ns.name, "single").await.remove(0);
    trainer.finish(&single, 1).await.unwrap();
    let admitted = wait_for(&jobs, "gang", &ns.name, |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Admitted" && c.status == "True")
    })
    .await
    .status
    .unwrap();
    let condition = admitted
        .conditions
        .iter()
        .find(|c| c.type_ == "Admitted")
        .unwrap();
    assert!(
        condition.message.starts_with("Kueue admitted all 4 pods"),
        "{condition:?}"
    );
    for _ in 0..60 {
        if pods_of(&client, &ns.name, "gang").await.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(pods_of(&client, &ns.name, "gang").await.len(), 4);
    delete_and_wait_gone(&client, &jobs, &ns.name, "gang").await;
    let held = || {
        cluster_queue(
            cluster,
            &ns.name,
            "{.status.reservingWorkloads}/{.status.admittedWorkloads}",
        )
    };
    for _ in 0..60 {
        if held() == "0/0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(held(), "0/0", "{}", cluster_queue(cluster, &ns.name, "{.status}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gang_that_cannot_all_start_is_evicted_and_requeued_whole_never_failed() {
    let (_cluster, client, ns, _operator, jobs, _logs) = with_kueue("kueue-evict", 8).await;
    // Three ranks of one GPU on the pool of `kwok-gpu-0`, which has two: the quota admits all
    // three, the node runs two. Kueue's waitForPodsReady (1 minute on this cluster) evicts the
    // gang, whose pods stop, and queues it again: the run waits, it does not fail.
    let mut run = queued_run("stuck", "gpus", 3);
    run.spec.node_selector = [("miniautoml.io/pool".to_string(), "gpu".to_string())].into();
    jobs.create(&PostParams::default(), &run).await.unwrap();
    wait_for(&jobs, "stuck", &ns.name, |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Admitted" && c.status == "True")
    })
    .await;
    let evicted = wait_for(&jobs, "stuck", &ns.name, |s| {
        running(s).0 == "EvictedPodsReadyTimeout"
    })
    .await
    .status
    .unwrap();
    assert_eq!(evicted.phase, Some(TrainingPhase::Queued), "{evicted:#?}");
    assert_eq!(
        evicted.restarts, 0,
        "an eviction is not a failed attempt: {evicted:#?}"
    );
    assert!(
        !evicted
            .conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True"),
        "{evicted:#?}"
    );
    // Queued again, then admitted again: the gang comes back whole, the same attempt.
    let again = wait_for(&jobs, "stuck", &ns.name, |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Admitted" && c.status == "True")
            && s.phase != Some(TrainingPhase::Queued)
    })
    .await
    .status
    .unwrap();
    assert_eq!(again.attempt.unwrap_or(1), 1, "{again:#?}");
    assert_eq!(again.restarts, 0, "{again:#?}");
    delete_and_wait_gone(&client, &jobs, &ns.name, "stuck").await;
}
