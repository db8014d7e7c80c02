//! The PyTorch example algorithm (`miniautoml/pytorch-intent`, built by `make images` from
//! Debian's python3-torch) on the real node: one worker, and data-parallel over two and three
//! ranks (DDP over gloo), launched by `python train.py` and by a bare `torchrun`. The helper
//! package (`training-code/miniautoml-training`) reports every epoch and stores the model.

use std::time::{Duration, Instant};

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use miniautoml_api::{Dataset, TrainingJob, training_job::TrainingPhase};
use miniautoml_data::Store;
use miniautoml_test_support::harness::{
    self, finished, job_logs, logs_on_failure, training_job, tweet_emotion, wait_for,
};
use sha2::{Digest, Sha256};

/// A TrainingJob `name` of the PyTorch example with `workers` ranks (one torch thread each, so
/// that several ranks share the node's cores without oversubscribing them) and `extra` fields.
fn pytorch_job(name: &str, workers: i32, extra: serde_json::Value) -> TrainingJob {
    let mut spec = serde_json::json!({
        "algorithm": "pytorch-intent",
        "workers": workers,
        "parameters": {"EPOCHS": "3", "THREADS": "1"},
    });
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    training_job(name, spec)
}

async fn succeeded(
    jobs: &Api<TrainingJob>,
    name: &str,
    namespace: &str,
) -> miniautoml_api::TrainingJobStatus {
    let done = wait_for(jobs, name, namespace, finished).await;
    let status = done.status.clone().unwrap();
    assert_eq!(
        status.phase,
        Some(TrainingPhase::Succeeded),
        "{name}: {status:#?}"
    );
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pytorch_example_trains_alone_and_data_parallel_to_the_same_weights_on_every_rank() {
    let (cluster, client, ns, _operator) =
        harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), "pytorch", &[]).await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(
        cluster,
        &Api::<Dataset>::namespaced(client.clone(), &ns.name),
        &ns.name,
    )
    .await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    for (name, workers) in [("alone", 1), ("pair", 2), ("trio", 3)] {
        jobs.create(
            &PostParams::default(),
            &pytorch_job(name, workers, serde_json::json!({})),
        )
        .await
        .unwrap();
    }

    // One worker: every epoch reported, the model and its manifest stored and registered.
    let alone = succeeded(&jobs, "alone", &ns.name).await;
    let ids: Vec<&str> = alone.epochs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["0-1", "0-2", "0-3"], "{alone:#?}");
    for epoch in &alone.epochs {
        for metric in ["accuracy", "loss", "macroF1", "trainLoss"] {
            assert!(epoch.metrics.contains_key(metric), "{metric}: {epoch:?}");
        }
    }
    let message = alone.message.clone().unwrap();
    assert!(message.starts_with("test accuracy "), "{message}");
    assert!(alone.metrics["accuracy"] > 0.4, "{alone:#?}");
    assert_eq!(
        alone.code_version.as_deref(),
        Some(harness::image_ref("miniautoml/pytorch-intent").as_str())
    );
    let artifact = alone.artifact.clone().unwrap();
    assert_eq!(
        artifact.files,
        ["labels.json", "manifest.json", "model.pt", "vocab.json"]
    );
    // The manifest's checksums are those of the files stored beside it.
    let prefix = artifact
        .uri
        .strip_prefix(&format!("s3://{}/", cluster.s3_bucket))
        .unwrap()
        .to_string();
    let store = Store::new(cluster.s3(), &cluster.s3_bucket);
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read(&format!("{prefix}manifest.json")).await.unwrap()).unwrap();
    assert_eq!(manifest["format"], "miniautoml.model/v1", "{manifest}");
    assert_eq!(manifest["algorithm"], "pytorch-intent", "{manifest}");
    assert!(
        manifest["framework"].as_str().unwrap().starts_with("torch 1.13"),
        "{manifest}"
    );
    assert_eq!(manifest["hyperparameters"]["EPOCHS"], "3", "{manifest}");
    for name in ["labels.json", "model.pt", "vocab.json"] {
        let body = store.read(&format!("{prefix}{name}")).await.unwrap();
        let digest: String = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            manifest["files"][name]["sha256"],
            digest.as_str(),
            "{name}: {manifest}"
        );
        assert_eq!(manifest["files"][name]["bytes"], body.len(), "{name}: {manifest}");
    }

    // Two and three ranks: one Indexed Job, each rank its share of every epoch, and after
    // training the ranks compared their weights (all_gather of a sha256): identical.
    for (name, workers) in [("pair", 2), ("trio", 3)] {
        let status = succeeded(&jobs, name, &ns.name).await;
        let message = status.message.clone().unwrap();
        assert!(
            message.contains(&format!("weights identical on {workers} ranks")),
            "{name}: {message}"
        );
        assert_eq!(status.progress.as_deref(), Some("3/3"), "{status:#?}");
        // Every rank's start step waited for rank 0's name before its trainer started.
        let started = cluster
            .kubectl()
            .args([
                "logs",
                "-n",
                &ns.name,
                "-l",
                &format!("job-name={name}-train"),
                "-c",
                "wait-for-master",
            ])
            .output()
            .unwrap();
        let started = String::from_utf8_lossy(&started.stdout);
        assert_eq!(
            started
                .matches(&format!("{name}-train-0.{name}-train resolves to "))
                .count(),
            workers as usize,
            "{started}"
        );
        let logs = job_logs(cluster, &ns.name, &format!("{name}-train"));
        for rank in 0..workers {
            assert!(
                logs.contains(&format!("rank {rank}/{workers} (gloo)")),
                "{name}: {logs}"
            );
            assert!(logs.contains(&format!("rank {rank} epoch 3:")), "{name}: {logs}");
        }
        let manifest = serde_json::from_slice::<serde_json::Value>(
            &store
                .read(&format!(
                    "{}manifest.json",
                    status
                        .artifact
                        .as_ref()
                        .unwrap()
                        .uri
                        .strip_prefix(&format!("s3://{}/", cluster.s3_bucket))
                        .unwrap()
                ))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["data"]["workers"], workers.to_string(), "{manifest}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bare_torchrun_launch_works_unchanged() {
    // The image's entrypoint is `torchrun train.py`: no flags, the operator's PET_* say it all.
    let (cluster, client, ns, _operator) =
        harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), "torchrun", &[]).await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(
        cluster,
        &Api::<Dataset>::namespaced(client.clone(), &ns.name),
        &ns.name,
    )
    .await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let mut job = pytorch_job(
        "launched",
        2,
        serde_json::json!({"image": "miniautoml/test-torchrun:1"}),
    );
    job.spec.algorithm = None;
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let status = succeeded(&jobs, "launched", &ns.name).await;
    let message = status.message.clone().unwrap();
    assert!(message.contains("weights identical on 2 ranks"), "{message}");
    let logs = job_logs(cluster, &ns.name, "launched-train");
    // torchrun's agent started one worker per pod with the rank the pod's index gave it.
    assert!(
        logs.contains("rank 0/2 (gloo)") && logs.contains("rank 1/2 (gloo)"),
        "{logs}"
    );
}

/// The pods of the Job `job` in `namespace`, by rank.
async fn ranks(pods: &Api<Pod>, job: &str) -> Vec<(u32, Pod)> {
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter_map(|pod| {
            let rank = pod
                .annotations()
                .get("batch.kubernetes.io/job-completion-index")?
                .parse()
                .ok()?;
            Some((rank, pod))
        })
        .collect()
}

/// `pod`'s trainer's exit code, if it exited.
fn exit_code(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| Some(c.state.as_ref()?.terminated.as_ref()?.exit_code))
}

/// When `pod`'s trainer exited, if it did.
fn exited_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| Some(c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref()?.0))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_rank_stops_its_gang_within_seconds_and_the_whole_gang_restarts() {
    let (cluster, client, ns, _operator) =
        harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), "gang", &[]).await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(
        cluster,
        &Api::<Dataset>::namespaced(client.clone(), &ns.name),
        &ns.name,
    )
    .await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    // Rank 1 fails at epoch 2 of the first attempt only; the second attempt trains through.
    let flaky = serde_json::json!({"maxRestarts": 1, "parameters": {
        "EPOCHS": "3", "THREADS": "1", "FAIL_RANK": "1", "FAIL_EPOCH": "2", "FAIL_ATTEMPT": "1"}});
    // Rank 1 fails in every attempt: one restart, then the run fails with its reason.
    let broken = serde_json::json!({"maxRestarts": 1, "parameters": {
        "EPOCHS": "3", "THREADS": "1", "FAIL_RANK": "1", "FAIL_EPOCH": "1"}});
    jobs.create(&PostParams::default(), &pytorch_job("flaky", 2, flaky))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &pytorch_job("broken", 2, broken))
        .await
        .unwrap();

    // Attempt 1 of "flaky": once rank 1 has exited, rank 0 (blocked in its next all-reduce)
    // is stopped by the Job controller within seconds; it is never left hanging.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (failed_at, stopped_after) = loop {
        assert!(
            Instant::now() < deadline,
            "rank 1 of flaky never failed: {:#?}",
            ranks(&pods, "flaky-train").await
        );
        let seen = ranks(&pods, "flaky-train").await;
        // Rank 1 exits non-zero only in the first attempt.
        let failed = seen
            .iter()
            .find(|(rank, pod)| *rank == 1 && exit_code(pod).is_some_and(|code| code != 0));
        if let Some((_, pod)) = failed {
            let failed_at = exited_at(pod).unwrap();
            // Rank 0's pod of that attempt: stopped, or already gone.
            let stopped = loop {
                let seen = ranks(&pods, "flaky-train").await;
                let rank0 = seen.iter().find(|(rank, p)| {
                    *rank == 0 && p.metadata.creation_timestamp <= pod.metadata.creation_timestamp
                });
                match rank0 {
                    Some((_, p)) if exited_at(p).is_none() && p.metadata.deletion_timestamp.is_none() => {
                        assert!(Instant::now() < deadline, "rank 0 kept running: {p:#?}");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Some((_, p)) => break exited_at(p).unwrap_or_else(Timestamp::now),
                    None => break Timestamp::now(),
                }
            };
            break (failed_at, stopped.duration_since(failed_at));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("flaky: rank 1 exited at {failed_at}; rank 0 stopped {stopped_after:?} later");
    assert!(
        stopped_after.as_secs_f64() < 15.0,
        "rank 0 ran on {stopped_after:?} after rank 1 failed"
    );

    let status = succeeded(&jobs, "flaky", &ns.name).await;
    assert_eq!((status.attempt, status.restarts), (Some(2), 1), "{status:#?}");
    assert_eq!(status.workers.len(), 2, "{status:#?}");
    for (rank, worker) in status.workers.iter().enumerate() {
        assert_eq!(worker.rank, rank as u32);
        assert_eq!(worker.phase.as_deref(), Some("Succeeded"), "{worker:?}");
        assert_eq!((worker.exit_code, worker.restarts), (Some(0), 1), "{worker:?}");
        assert_eq!(
            worker.last_epoch.as_deref(),
            Some(format!("{rank}-3").as_str()),
            "{worker:?}"
        );
        assert!(worker.node.is_some(), "{worker:?}");
    }
    let message = status.message.unwrap();
    assert!(message.contains("weights identical on 2 ranks"), "{message}");
    let events = cluster
        .kubectl()
        .args([
            "get",
            "events",
            "-n",
            &ns.name,
            "--field-selector",
            "reason=GangRestart",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("attempt 1 failed: worker rank 1")
            && events.contains("FAIL_RANK=1 FAIL_EPOCH=2: failing on purpose"),
        "{events}"
    );

    // Out of restarts: the run fails with the first failed rank and the trainer's own error.
    let done = wait_for(&jobs, "broken", &ns.name, finished).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(TrainingPhase::Failed), "{status:#?}");
    assert_eq!((status.attempt, status.restarts), (Some(2), 1), "{status:#?}");
    let message = status.message.unwrap();
    assert!(
        message.starts_with("worker rank 1 (pod broken-train-1-"),
        "{message}"
    );
    assert!(
        message.ends_with("RuntimeError: FAIL_RANK=1 FAIL_EPOCH=1: failing on purpose"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_evicted_rank_restarts_its_gang_uncounted_and_a_late_rank_0_is_waited_for() {
    let (cluster, client, ns, _operator) =
        harness::namespace_with_operator(env!("CARGO_BIN_EXE_miniautoml-operator"), "evicted", &[]).await;
    let _logs = logs_on_failure(cluster, &ns);
    tweet_emotion(
        cluster,
        &Api::<Dataset>::namespaced(client.clone(), &ns.name),
        &ns.name,
    )
    .await;
    let jobs = Api::<TrainingJob>::namespaced(client.clone(), &ns.name);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    // Rank 0 starts 60 s after its pod does, in every attempt: rank 1 waits for it. Longer
    // than the evicted rank's 30 s grace period, so that rank is killed before rank 0 comes:
    // a rank that ignores SIGTERM (python as PID 1) and whose peer arrives within its grace
    // period finishes its work instead (seen once with 30 s, when DNS held the pods 46 s).
    let late = serde_json::json!({"maxRestarts": 0, "parameters": {
        "EPOCHS": "2", "THREADS": "1", "DELAY_RANK": "0", "DELAY_SECONDS": "60"}});
    jobs.create(&PostParams::default(), &pytorch_job("late", 2, late))
        .await
        .unwrap();

    // While rank 0 sleeps, rank 1 is evicted (as a drain or a preemption would).
    let deadline = Instant::now() + Duration::from_secs(120);
    let evicted = loop {
        assert!(
            Instant::now() < deadline,
            "the ranks never ran: {:#?}",
            ranks(&pods, "late-train").await
        );
        let seen = ranks(&pods, "late-train").await;
        let running = |rank: u32| {
            seen.iter().find(|(r, p)| {
                *r == rank && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
        };
        if let (Some(_), Some((_, rank1))) = (running(0), running(1)) {
            let name = rank1.name_any();
            pods.evict(&name, &Default::default()).await.unwrap();
            break name;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("evicted {evicted}");

    let status = succeeded(&jobs, "late", &ns.name).await;
    // The eviction restarted the gang without using a restart: maxRestarts is 0.
    assert_eq!((status.attempt, status.restarts), (Some(2), 0), "{status:#?}");
    assert!(status.workers.iter().all(|w| w.pod != evicted), "{status:#?}");
    let logs = job_logs(cluster, &ns.name, "late-train");
    assert!(logs.contains("rank 0: starting 60 s late"), "{logs}");
    assert!(
        logs.contains("weights identical on 2 ranks")
            || status
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("identical"),
        "{logs}"
    );
}
