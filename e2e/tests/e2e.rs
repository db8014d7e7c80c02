//! The end-to-end suite: what a team does with MiniAutoML, through the installed chart only, on
//! whatever cluster `KUBECONFIG` names (the local cluster with its real node: `make e2e`; kind:
//! `make kind-e2e`). The images must be on the nodes already (the per-cluster step loads the
//! archives of `make images`).
//!
//! `helm install` with the bundled object store → upload tweet_emotion part 1 → `kubectl apply`
//! the examples → Dataset ingested (2963 examples, 3 labels) → TrainingJob Succeeded in a
//! container → ModelDeployment rolled out → predictions over Open Inference Protocol v2 REST and
//! `PredictionService/Predict` through `kubectl port-forward` over TLS (the chart generates a
//! certificate by default) → the original grpcurl dataset and training workflow through the
//! operator's Service → `helm upgrade` to a new operator image while a client in the cluster
//! loops predictions and a run trains → two replicas serving a certificate from a
//! `kubernetes.io/tls` Secret of one's own, the leader killed mid-training, the run reporting over
//! TLS → `helm uninstall` leaves only the kept CRDs and the users' data.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use miniautoml_e2e::{
    Figures, LogFollower, PortForward,
    browser::{self, Browser},
    helm, kubectl, kubectl_apply, kubectl_json, logged_at, rbac, repo_path, run, step, testdata, text,
    try_run, wait_until,
};
use serde_json::Value;

/// The release, its namespace (also the gRPC API's namespace) and the users' namespace. The
/// release is not `make demo`'s, so the two can live on one cluster (the CRDs, cluster-wide,
/// go to whichever installed last; both take them over).
const RELEASE: &str = "miniautoml-e2e";
const NAMESPACE: &str = "miniautoml-e2e";
const LAB: &str = "miniautoml-e2e-lab";
/// The operator's TLS Secret, from the failover step on.
const TLS_SECRET: &str = "operator-tls";
/// The chart's default lease duration.
const LEASE_SECONDS: u64 = 15;
/// Epochs of the runs that must still be training while the operator is upgraded or its leader
/// killed (tweet_emotion part 1 trains an epoch in well under a second).
const LONG_EPOCHS: &str = "400";
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const SECOND: Duration = Duration::from_secs(1);

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[test]
fn the_lab_through_helm_install() {
    let started = Instant::now();
    let mut figures = Figures::default();
    println!("{}", kubectl(&["version"]));
    println!("{}", helm(&["version", "--short"]));
    clean_up();
    // Audit events from here on are this run's (an earlier run's pods, stopped by the clean-up
    // above, share the operator's ServiceAccount name).
    let since = run("date", &["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"]).trim().to_string();

    let t = step("helm install (bundled object store; leader election on)");
    adopt_crds();
    let chart = repo_path("charts/miniautoml");
    // The examples' data is under raw/default/; the lab applies them in its own namespace,
    // which an administrator grants that prefix (as values do).
    let grant = format!("datasetSources.{LAB}[0]=miniautoml/raw/default/tweet_emotion/");
    let installed = helm(&[
        "install",
        RELEASE,
        &chart,
        "-n",
        NAMESPACE,
        "--create-namespace",
        "--set",
        &grant,
    ]);
    println!("{installed}");
    for expected in [
        format!("kubectl rollout status -n {NAMESPACE} deployment/{RELEASE}"),
        "kubectl apply -f examples/dataset.yaml".into(),
        format!("kubectl port-forward -n {NAMESPACE} svc/{RELEASE} 51001:51001"),
        "grpcurl -cacert ca.crt 127.0.0.1:51001 list".into(),
        "prediction.PredictionService/Predict".into(),
        format!("svc/{RELEASE}-object-store"),
        "/v2/models/twitter-model/infer".into(),
    ] {
        assert!(installed.contains(&expected), "the NOTES lack {expected:?}");
    }
    rollout(&format!("deployment/{RELEASE}"));
    figures.time("helm install to operator Ready", t.elapsed());
    rollout(&format!("statefulset/{RELEASE}-object-store"));
    figures.time("helm install to object store Ready", t.elapsed());
    let leader = wait_until("a leader elected", Duration::from_secs(60), SECOND, || {
        lease_holder().ok_or_else(|| "no holder".to_string())
    });
    println!("leader: {leader}");
    assert!(
        kubectl(&[
            "get",
            "crd",
            "datasets.miniautoml.io",
            "-o",
            "jsonpath={.metadata.annotations}"
        ])
        .contains("keep")
    );

    let t = step(
        "Upload tweet_emotion part 1 to the bundled object store with namespace default's upload key (kubectl port-forward, curl)",
    );
    let s3 = PortForward::start(NAMESPACE, &format!("svc/{RELEASE}-object-store"), 8333);
    let endpoint = format!("http://{}", s3.addr());
    // The Secret is read again on every try: one left in namespace default by an earlier
    // install holds that install's key until this operator writes its own.
    let (access_key, secret_key) = wait_until(
        "the upload with namespace default's upload key (Secret miniautoml-upload; the bucket the operator creates)",
        Duration::from_secs(120),
        SECOND,
        || {
            let (access_key, secret_key) = upload_key("default")?;
            s3_put(
                &endpoint,
                &access_key,
                &secret_key,
                "tweet_emotion_part1.csv",
                "raw/default/tweet_emotion/tweet_emotion_part1.csv",
            )?;
            Ok::<_, String>((access_key, secret_key))
        },
    );
    figures.time("upload", t.elapsed());
    // The upload key writes raw/default/ only.
    let outside = s3_put(
        &endpoint,
        &access_key,
        &secret_key,
        "tweet_emotion_part1.csv",
        "datasets/default/tweet-emotion/commits/1/examples.csv",
    );
    assert!(
        outside.as_ref().is_err_and(|e| e.contains("403")),
        "the upload key wrote outside raw/default/: {outside:?}"
    );

    let applied = step("kubectl apply the examples (Dataset, TrainingJob, ModelDeployment)");
    kubectl(&["create", "namespace", LAB]);
    let token = grpc_user();
    let examples = ["dataset.yaml", "trainingjob.yaml", "modeldeployment.yaml"]
        .map(|f| repo_path(&format!("examples/{f}")));
    println!(
        "{}",
        kubectl(&[
            "apply",
            "-n",
            LAB,
            "-f",
            &examples[0],
            "-f",
            &examples[1],
            "-f",
            &examples[2]
        ])
    );

    step("The Dataset ingests its commit");
    let dataset = wait_until("the Dataset's commit", Duration::from_secs(180), SECOND, || {
        let dataset = kubectl_json(&["get", "-n", LAB, "dataset", "tweet-emotion"]);
        (text(&dataset, "/status/commitCount") == "1")
            .then_some(dataset.clone())
            .ok_or_else(|| text(&dataset, "/status"))
    });
    assert_eq!(text(&dataset, "/status/commits/0/statistics/numExamples"), "2963");
    assert_eq!(text(&dataset, "/status/commits/0/statistics/numLabels"), "3");
    figures.time("kubectl apply to Dataset ingested", applied.elapsed());

    step("The TrainingJob trains in a container");
    let job = wait_for_run(LAB, "twitter-model");
    let run_id = text(&job, "/status/runId");
    assert!(!run_id.is_empty());
    assert_eq!(
        job["status"]["epochs"].as_array().map(Vec::len),
        Some(15),
        "{job}"
    );
    assert!(
        text(&job, "/status/artifact/uri").starts_with("s3://miniautoml/models/"),
        "{job}"
    );
    let pods = kubectl_json(&[
        "get",
        "pods",
        "-n",
        LAB,
        "-l",
        "miniautoml.io/trainingjob=twitter-model",
    ]);
    let image_id = text(&pods, "/items/0/status/containerStatuses/0/imageID");
    assert!(
        image_id.contains("miniautoml/intent-classification@sha256:"),
        "{image_id}"
    );
    assert!(text(&job, "/status/codeVersion").contains("sha256:"), "{job}");
    println!("run {run_id}: {}", text(&job, "/status/message"));
    figures.time("kubectl apply to TrainingJob Succeeded", applied.elapsed());

    step("The ModelDeployment rolls out a predictor");
    wait_until("ModelDeployment Ready", Duration::from_secs(240), SECOND, || {
        let md = kubectl_json(&["get", "-n", LAB, "modeldeployment", "twitter-model"]);
        let ready = md["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && text(&md, "/status/servedRun") == run_id)
            .then_some(())
            .ok_or_else(|| text(&md, "/status"))
    });
    println!("{}", kubectl(&["get", "miniautoml", "-n", LAB]));

    step(
        "The store's S3 port answers MiniAutoML's pods only (the chart's NetworkPolicy, kube-router on the node)",
    );
    let stranger = store_probe("stranger", None);
    assert!(
        stranger.contains("REFUSED"),
        "an unlabelled pod reached the store: {stranger}"
    );
    let trainer_like = store_probe("labelled", Some(("miniautoml.io/trainingjob", "probe")));
    assert!(
        trainer_like.contains("REACHED"),
        "a trainer's pod could not reach the store: {trainer_like}"
    );
    println!("an unlabelled pod: refused; a pod labelled as a trainer's: reached (S3 still checks its key)");

    step(
        "Predictors answer their own namespace, the operator and the namespaces the ModelDeployment allows (its NetworkPolicy)",
    );
    let ready = format!("http://twitter-model-predictor.{LAB}.svc.cluster.local:8080/v2/health/ready");
    let neighbour = probe(LAB, "predictor-probe-neighbour", &ready, None);
    assert!(
        neighbour.contains("REACHED"),
        "a pod of the ModelDeployment's namespace could not reach its predictors: {neighbour}"
    );
    let outsider = probe(NAMESPACE, "predictor-probe-outsider", &ready, None);
    assert!(
        outsider.contains("REFUSED"),
        "a pod of another namespace reached the predictors: {outsider}"
    );
    let allow = |namespace: &str| {
        try_run(
            "kubectl",
            &[
                "patch",
                "modeldeployment",
                "-n",
                LAB,
                "twitter-model",
                "--type=merge",
                "-p",
                &format!(r#"{{"spec": {{"allowedNamespaces": ["{namespace}"]}}}}"#),
            ],
        )
    };
    let refused = allow("Not_A_Namespace").expect_err("the API server accepts a namespace name it cannot be");
    assert!(refused.contains("allowedNamespaces"), "{refused}");
    allow(NAMESPACE).unwrap();
    wait_until(
        "the allowed namespace in the policy",
        Duration::from_secs(60),
        SECOND,
        || {
            let policy = kubectl(&[
                "get",
                "networkpolicy",
                "-n",
                LAB,
                "twitter-model-predictor",
                "-o",
                "json",
            ]);
            policy
                .contains(&format!("\"{NAMESPACE}\""))
                .then_some(())
                .ok_or(policy)
        },
    );
    let allowed = probe(NAMESPACE, "predictor-probe-allowed", &ready, None);
    assert!(
        allowed.contains("REACHED"),
        "a pod of a namespace the ModelDeployment allows could not reach its predictors: {allowed}"
    );
    println!(
        "its own namespace: reached; another namespace: refused, then reached once allowedNamespaces names it"
    );

    step("Predict over the Open Inference Protocol v2 (REST, the predictor's Service)");
    let rest = PortForward::start(LAB, "svc/twitter-model-predictor", 8080);
    let answer = infer(&rest.addr(), "I am so happy today!");
    figures.time("kubectl apply to first prediction", applied.elapsed());
    println!("{answer}");
    let labels = ["joy", "anger", "sadness", "optimism"];
    assert!(labels.iter().any(|l| answer.contains(l)), "{answer}");

    step(
        "Predict through the original PredictionService/Predict (the operator's Service), as a reviewed caller",
    );
    // TLS by default: the chart generated the certificate; callers trust its CA.
    let generated = generated_ca();
    let grpc = PortForward::start(NAMESPACE, &format!("svc/{RELEASE}"), 51001);
    callers_are_reviewed(&grpc.addr(), &generated, &run_id);
    let predicted = predict(
        &grpc.addr(),
        &generated,
        &token,
        &run_id,
        "this traffic makes me furious",
    );
    println!("{predicted}");
    assert!(predicted.contains("result"), "{predicted}");

    let t = step(
        "The console in a browser (chromium through chromedriver): live curves of a training run, compare, the try-it box, a shared URL, and a stranger who sees nothing",
    );
    console_in_a_browser(&token, &mut figures);
    figures.time("console step", t.elapsed());

    let t = step(
        "kubectl miniautoml (the plugin, found on PATH by kubectl): runs, a live progress bar, curves as PNG, compare, logs, predict, dataset upload",
    );
    the_plugin(&token);
    figures.time("plugin step", t.elapsed());

    let t = step("The original dataset and training workflow through grpcurl (the operator's Service)");
    // CreateDataset reads raw/<gRPC namespace>/: uploaded with that namespace's key
    // (uploads.grpcNamespace).
    let (grpc_access_key, grpc_secret_key) = upload_key(NAMESPACE).unwrap();
    let hack_env = [
        ("GRPC_ADDR", grpc.addr()),
        ("GRPC_CACERT", generated.to_string_lossy().into_owned()),
        ("GRPC_TOKEN", token.clone()),
        ("S3_ENDPOINT", endpoint.clone()),
        ("S3_BUCKET", "miniautoml".to_string()),
        ("GRPC_NAMESPACE", NAMESPACE.to_string()),
        ("AWS_ACCESS_KEY_ID", grpc_access_key),
        ("AWS_SECRET_ACCESS_KEY", grpc_secret_key),
    ];
    let datasets = hack("grpc-datasets.sh", &["tweets-grpc"], &hack_env);
    assert!(datasets.contains("hashBg=="), "{datasets}");
    assert!(datasets.contains("\"state\": \"READY\""), "{datasets}");
    let dataset_id = datasets
        .lines()
        .find_map(|line| line.trim().strip_prefix("\"datasetId\": \""))
        .and_then(|rest| rest.split('"').next())
        .expect("CreateDataset returns a datasetId")
        .to_string();
    let training = hack("grpc-training.sh", &[&dataset_id, "hashBg=="], &hack_env);
    assert!(training.contains("\"status\": \"succeed\""), "{training}");
    let grpc_runs = kubectl_json(&["get", "trainingjobs", "-n", NAMESPACE]);
    assert_eq!(
        grpc_runs["items"].as_array().map(Vec::len),
        Some(1),
        "one run through Train"
    );
    figures.time("grpcurl dataset and training workflow", t.elapsed());
    drop(grpc);

    let t = step("helm upgrade to a new operator image while a client loops predictions and a run trains");
    start_run("upgrade-run");
    wait_for_phase(LAB, "upgrade-run", "Running");
    let client = start_prediction_client(&run_id, &token, &generated);
    let old_pods = operator_pods();
    assert_eq!(old_pods.len(), 1, "{old_pods:?}");
    let old_log = LogFollower::start(NAMESPACE, &old_pods[0]);
    let tag = format!("{}-next", version());
    upgrade(&chart, &format!("image.tag={tag}"));
    let new_pods = operator_pods();
    assert_eq!(new_pods.len(), 1, "{new_pods:?}");
    let image = kubectl(&[
        "get",
        "pod",
        "-n",
        NAMESPACE,
        &new_pods[0],
        "-o",
        "jsonpath={.spec.containers[0].image}",
    ]);
    assert!(image.ends_with(&format!("miniautoml/operator:{tag}")), "{image}");
    let new_leader = wait_until(
        "the new pod to lead",
        Duration::from_secs(60),
        SECOND,
        || match lease_holder() {
            Some(holder) if holder == new_pods[0] => Ok(holder),
            other => Err(format!("{other:?}")),
        },
    );
    let released =
        logged_at(&old_log.lines(), "released the leader lease").expect("the old leader released the lease");
    let new_log: Vec<String> = kubectl(&["logs", "-n", NAMESPACE, &new_leader])
        .lines()
        .map(String::from)
        .collect();
    let gained = logged_at(&new_log, "became the leader").expect("the new pod logged its leadership");
    println!("old leader released at {released}, new leader took over at {gained}");
    assert!(
        released <= gained,
        "two writers: the new leader led at {gained}, before the old released at {released}"
    );
    figures.note(
        "upgrade handover (release → lead)",
        format!("{released} → {gained}"),
    );
    let upgraded = wait_for_run(LAB, "upgrade-run");
    assert_single_run(LAB, "upgrade-run", &upgraded);
    let (ok, failed) = stop_prediction_client(client);
    figures.note(
        "predictions during the upgrade (ok / failed)",
        format!("{ok} / {failed}"),
    );
    assert!(
        ok > 0 && failed == 0,
        "predictions failed during the upgrade: {ok} ok, {failed} failed"
    );
    figures.time("helm upgrade step", t.elapsed());

    let t = step(
        "Two replicas, the certificate taken over by a kubernetes.io/tls Secret of one's own; the leader is killed mid-training",
    );
    let tls = tls_secret();
    upgrade(&chart, &format!("replicas=2,tls.secretName={TLS_SECRET}"));
    // A run launched by the old leader, still leading while it drains, would be told to trust
    // the generated CA: start once a replica serving the new certificate leads.
    wait_until(
        "a replica serving the new certificate to lead",
        Duration::from_secs(60),
        SECOND,
        || match lease_holder() {
            Some(holder) if operator_pods().contains(&holder) => Ok(holder),
            other => Err(format!("{other:?}")),
        },
    );
    kubectl(&["get", "pdb", "-n", NAMESPACE, RELEASE]);
    start_run("failover-run");
    wait_for_phase(LAB, "failover-run", "Running");
    let leader = lease_holder().expect("a leader");
    assert!(operator_pods().iter().any(|p| *p != leader), "a second replica");
    let killed = Instant::now();
    kubectl(&[
        "delete",
        "pod",
        "-n",
        NAMESPACE,
        &leader,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);
    // The other replica, or the one the Deployment starts in the killed one's place, whichever
    // reads the expired Lease first.
    let (took_over, new_leader) = wait_until(
        "another replica to lead",
        Duration::from_secs(LEASE_SECONDS * 3),
        Duration::from_millis(200),
        || match lease_holder() {
            Some(holder) if holder != leader => Ok((killed.elapsed(), holder)),
            other => Err(format!("{other:?}")),
        },
    );
    println!("{leader} killed; {new_leader} leads");
    figures.time("leader killed to takeover", took_over);
    // The Lease expires at most its duration after the kill (the last renewal came before it);
    // the follower reads the Lease every second and takes it at once.
    assert!(
        took_over <= Duration::from_secs(LEASE_SECONDS + 3),
        "takeover took {took_over:?}, more than the lease duration ({LEASE_SECONDS} s)"
    );
    let failed_over = wait_for_run(LAB, "failover-run");
    assert_single_run(LAB, "failover-run", &failed_over);
    rollout(&format!("deployment/{RELEASE}"));
    figures.time("failover step", t.elapsed());
    served_over_tls(&tls, &failed_over);

    step("Every run once: one Job per TrainingJob, distinct run ids");
    let mut run_ids = Vec::new();
    for namespace in [LAB, NAMESPACE] {
        let jobs = kubectl_json(&["get", "trainingjobs", "-n", namespace]);
        for job in jobs["items"].as_array().into_iter().flatten() {
            let name = text(job, "/metadata/name");
            assert_eq!(text(job, "/status/phase"), "Succeeded", "{name}");
            assert_single_run(namespace, &name, job);
            run_ids.push(text(job, "/status/runId"));
        }
    }
    let count = run_ids.len();
    run_ids.sort();
    run_ids.dedup();
    assert_eq!(run_ids.len(), count, "run ids repeat: {run_ids:?}");
    figures.note("runs (all Succeeded once)", count);
    drop((rest, s3));

    step("Least privilege: the operator's RBAC against the requests it made (the API server's audit log)");
    least_privilege(&since, &mut figures);

    step("No credential in any CR, event, pod log or /metrics");
    no_credentials_leak(&token, &tls);

    let t = step("helm uninstall leaves only the kept CRDs and the users' data");
    helm(&["uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "3m"]);
    // The release's pods stop within their grace period (the garbage collector deletes them).
    let left = wait_until(
        "the release's objects to go",
        Duration::from_secs(180),
        SECOND,
        || {
            let left = release_objects();
            let unexpected: Vec<&String> = left
                .iter()
                .filter(|o| !o.starts_with("customresourcedefinition.apiextensions.k8s.io/"))
                .filter(|o| **o != format!("persistentvolumeclaim/{NAMESPACE}/data-{RELEASE}-object-store-0"))
                .filter(|o| **o != format!("secret/{NAMESPACE}/{RELEASE}-object-store-credentials"))
                .collect();
            if unexpected.is_empty() {
                Ok(left.clone())
            } else {
                Err(format!("{unexpected:?}"))
            }
        },
    );
    println!("left by the release: {left:#?}");
    for crd in ["datasets", "trainingjobs", "modeldeployments"] {
        assert!(
            left.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{crd}.miniautoml.io"
            )),
            "{left:?}"
        );
    }
    assert!(
        left.contains(&format!(
            "persistentvolumeclaim/{NAMESPACE}/data-{RELEASE}-object-store-0"
        )),
        "{left:?}"
    );
    let kept = kubectl(&[
        "get",
        "datasets,trainingjobs,modeldeployments",
        "-A",
        "--no-headers",
    ]);
    println!("{kept}");
    for name in [
        "tweet-emotion",
        "twitter-model",
        "upgrade-run",
        "failover-run",
        "tweets-grpc",
    ] {
        assert!(
            kept.contains(name),
            "{name} is gone after helm uninstall:\n{kept}"
        );
    }
    figures.time("helm uninstall", t.elapsed());

    clean_up();
    figures.time("e2e wall time", started.elapsed());
    println!("\n[e2e] figures\n{}", figures.table());
}

/// `helm upgrade` of the release with one more value, then its operator rolled out.
fn upgrade(chart: &str, set: &str) {
    helm(&[
        "upgrade",
        RELEASE,
        chart,
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        set,
    ]);
    rollout(&format!("deployment/{RELEASE}"));
}

/// Waits for a rollout of the release's `target` (`deployment/...`, `statefulset/...`).
fn rollout(target: &str) {
    kubectl(&["rollout", "status", "-n", NAMESPACE, target, "--timeout=300s"]);
}

/// The release's operator pods that are not being deleted, by name.
fn operator_pods() -> Vec<String> {
    let pods = kubectl_json(&[
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        &format!("app.kubernetes.io/component=operator,app.kubernetes.io/instance={RELEASE}"),
    ]);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| text(p, "/metadata/name"))
        .collect()
}

/// The pod holding the leader Lease now, if any (the holder's identity is `<pod>_<address>`).
fn lease_holder() -> Option<String> {
    let lease = kubectl_json(&["get", "lease", "-n", NAMESPACE, RELEASE]);
    let identity = text(&lease, "/spec/holderIdentity");
    let (pod, _) = identity.rsplit_once('_')?;
    Some(pod.to_string())
}

/// `namespace`'s upload key (`uploads.namespaces`, `uploads.grpcNamespace`), once the operator
/// has written it.
fn upload_key(namespace: &str) -> Result<(String, String), String> {
    let secret: Value = serde_json::from_str(&try_run(
        "kubectl",
        &[
            "get",
            "secret",
            "-n",
            namespace,
            "miniautoml-upload",
            "-o",
            "json",
        ],
    )?)
    .map_err(|e| e.to_string())?;
    let decode = |key: &str| base64_decode(&text(&secret, &format!("/data/{key}")));
    Ok((decode("AWS_ACCESS_KEY_ID"), decode("AWS_SECRET_ACCESS_KEY")))
}

/// A Secret's value, decoded (`base64 -d`).
fn base64_decode(encoded: &str) -> String {
    let output = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), encoded.as_bytes())?;
            child.wait_with_output()
        });
    String::from_utf8(output.expect("base64 runs").stdout).expect("a secret value is text")
}

/// No credential in any CR, event, pod log or the operator's `/metrics`: the object store's
/// secret key, every run token, storage secret and TLS private key in the Secrets of both
/// namespaces, and the gRPC caller's token are looked for in all of them (`/metrics` read over
/// TLS, trusting `tls`'s `ca.crt`). Prints what was searched.
fn no_credentials_leak(caller_token: &str, tls: &Path) {
    let mut secrets = vec![caller_token.to_string()];
    for namespace in [NAMESPACE, LAB] {
        let list = kubectl_json(&["get", "secrets", "-n", namespace]);
        for secret in list["items"].as_array().into_iter().flatten() {
            for key in ["token", "AWS_SECRET_ACCESS_KEY", "tls.key"] {
                let encoded = text(secret, &format!("/data/{key}"));
                if !encoded.is_empty() {
                    secrets.push(base64_decode(&encoded));
                }
            }
        }
    }
    secrets.retain(|secret| secret.len() >= 16);
    secrets.sort();
    secrets.dedup();
    let mut places: Vec<(String, String)> = vec![
        (
            "CRs".into(),
            kubectl(&[
                "get",
                "datasets,trainingjobs,modeldeployments",
                "-A",
                "-o",
                "json",
            ]),
        ),
        (
            "core events".into(),
            kubectl(&["get", "events", "-A", "-o", "json"]),
        ),
        (
            "events.k8s.io events".into(),
            kubectl(&["get", "events.events.k8s.io", "-A", "-o", "json"]),
        ),
    ];
    let mut log_lines = 0;
    for namespace in [NAMESPACE, LAB] {
        let pods = kubectl(&["get", "pods", "-n", namespace, "-o", "name"]);
        for pod in pods.lines().filter(|pod| !pod.is_empty()) {
            let logs =
                try_run("kubectl", &["logs", "-n", namespace, pod, "--all-containers"]).unwrap_or_default();
            log_lines += logs.lines().count();
            places.push((format!("logs of {namespace}/{pod}"), logs));
        }
    }
    let metrics = PortForward::start(NAMESPACE, &format!("svc/{RELEASE}-metrics"), 8080);
    let scraped = wait_until("the operator's /metrics", Duration::from_secs(30), SECOND, || {
        let ca = tls.join("ca.crt");
        let url = format!("https://{}/metrics", metrics.addr());
        try_run("curl", &["-fsS", "--cacert", &ca.to_string_lossy(), &url])
    });
    places.push(("/metrics".into(), scraped.clone()));
    let leaks: Vec<String> = places
        .iter()
        .filter(|(_, text)| secrets.iter().any(|secret| text.contains(secret.as_str())))
        .map(|(place, _)| place.clone())
        .collect();
    println!(
        "credentials: {} secrets looked for in {} places ({log_lines} log lines, {} /metrics lines): {} found",
        secrets.len(),
        places.len(),
        scraped.lines().count(),
        leaks.len()
    );
    assert!(
        secrets.len() >= 3,
        "the store's key, a run token and the caller's token: {}",
        secrets.len()
    );
    assert!(leaks.is_empty(), "a credential appears in {leaks:?}");
}

/// Permissions the chart grants that this suite's run does not exercise reliably, and why (a
/// path it never takes, or one only a race takes, such as a conflicting status write). The
/// check fails when one of these is no longer granted, so the list cannot outlive the grant.
const NOT_EXERCISED: &[(&str, &str)] = &[
    (
        "create coordination.k8s.io/leases",
        "the chart creates the Lease; the operator creates it only when it is missing (deleted by hand)",
    ),
    (
        "create miniautoml.io/modeldeployments",
        "PredictionService/Predict for a run no ModelDeployment serves (operator/tests/serving.rs)",
    ),
    (
        "delete miniautoml.io/datasets",
        "DataManagementService/DeleteDataset (operator/tests/data_management.rs)",
    ),
    (
        "delete batch/jobs",
        "a gang restart of a multi-worker run's failed attempt (operator/tests/pytorch.rs)",
    ),
    (
        "delete secrets",
        "the upload key of a namespace taken off uploads.namespaces (operator/tests/tenant_isolation.rs)",
    ),
    (
        "get miniautoml.io/modeldeployments/status",
        "a ModelDeployment status write that conflicts is retried from a fresh read",
    ),
];

/// The chart's operator roles grant exactly what the operator used in this run, according to
/// the API server's audit log (`MINIAUTOML_AUDIT_LOG`, written by the local cluster; other
/// clusters skip the check and say so): nothing used was refused or ungranted, and nothing
/// granted went unused unless [`NOT_EXERCISED`] says why.
fn least_privilege(since: &str, figures: &mut Figures) {
    let Ok(log) = std::env::var("MINIAUTOML_AUDIT_LOG") else {
        // Skipped, and said so where the run's figures are read, not only in its log.
        let why = "SKIPPED: no audit log on this cluster (MINIAUTOML_AUDIT_LOG is unset)";
        eprintln!("least privilege not checked — {why}");
        figures.note("least privilege (operator roles vs audit log)", why);
        return;
    };
    let account = kubectl(&[
        "get",
        "deployment",
        "-n",
        NAMESPACE,
        RELEASE,
        "-o",
        "jsonpath={.spec.template.spec.serviceAccountName}",
    ]);
    let user = format!("system:serviceaccount:{NAMESPACE}:{account}");
    let mut granted = BTreeSet::new();
    for role in [
        kubectl_json(&["get", "clusterrole", RELEASE]),
        kubectl_json(&[
            "get",
            "role",
            "-n",
            NAMESPACE,
            &format!("{RELEASE}-leader-election"),
        ]),
    ] {
        granted.extend(rbac::granted(&role).unwrap_or_else(|e| panic!("{e}")));
    }
    // The log and the files it was rotated into.
    let log = std::path::Path::new(&log);
    let mut lines = String::new();
    for entry in std::fs::read_dir(log.parent().expect("a log directory"))
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("audit") && name.ends_with(".log") {
            lines.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    let exercised = rbac::exercised(lines.lines(), &user, since);
    let excused: BTreeSet<String> = NOT_EXERCISED.iter().map(|(p, _)| p.to_string()).collect();
    let ungranted: Vec<&String> = exercised.used.difference(&granted).collect();
    let unused: Vec<&String> = granted
        .difference(&exercised.used)
        .filter(|p| !excused.contains(*p))
        .collect();
    let stale: Vec<&String> = excused.iter().filter(|p| !granted.contains(*p)).collect();
    let exercised_anyway: Vec<&String> = excused.iter().filter(|p| exercised.used.contains(*p)).collect();
    if !exercised_anyway.is_empty() {
        println!("exercised this time after all (timing-dependent paths): {exercised_anyway:?}");
    }
    println!(
        "{user}: {} audited requests used {} permissions; the chart grants {} ({} not exercised here, each with a reason)",
        exercised.requests,
        exercised.used.len(),
        granted.len(),
        excused.len()
    );
    println!("used: {:?}", exercised.used);
    figures.note(
        "least privilege (requests / permissions used / granted / refused)",
        format!(
            "{} / {} / {} / {}",
            exercised.requests,
            exercised.used.len(),
            granted.len(),
            exercised.refused.len()
        ),
    );
    assert!(
        exercised.requests > 0,
        "no audit events of {user} since {since} in {}",
        log.display()
    );
    assert!(
        exercised.refused.is_empty(),
        "the API server refused the operator: {:?}",
        exercised.refused
    );
    assert!(
        ungranted.is_empty(),
        "used but not granted by the chart: {ungranted:?}"
    );
    assert!(
        unused.is_empty(),
        "granted by the chart but never used: {unused:?}"
    );
    assert!(
        stale.is_empty(),
        "NOT_EXERCISED lists what is used or not granted: {stale:?}"
    );
}

/// Uploads a file of the reference data set with SigV4 (curl), as the chart's NOTES show.
fn s3_put(endpoint: &str, access: &str, secret: &str, file: &str, key: &str) -> Result<(), String> {
    // The key goes to curl on its standard input (`-K -`), never on the command line or into a
    // failure message.
    let mut curl = Command::new("curl")
        .args(["-fsS", "-K", "-", "--aws-sigv4", "aws:amz:us-east-1:s3"])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-T"])
        .arg(testdata(file))
        .arg(format!("{endpoint}/miniautoml/{key}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("curl: {e}"))?;
    let config = format!("user = \"{access}:{secret}\"\n");
    std::io::Write::write_all(&mut curl.stdin.take().expect("stdin"), config.as_bytes())
        .map_err(|e| format!("curl: {e}"))?;
    let output = curl.wait_with_output().map_err(|e| format!("curl: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "PUT {key} with key {access}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// One Open Inference Protocol v2 request to the twitter-model predictor.
fn infer(addr: &str, text: &str) -> String {
    let body =
        serde_json::json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]});
    let url = format!("http://{addr}/v2/models/twitter-model/infer");
    wait_until("an inference answer", Duration::from_secs(60), SECOND, || {
        try_run(
            "curl",
            &[
                "-fsS",
                "-X",
                "POST",
                &url,
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ],
        )
    })
}

/// The ServiceAccount `lab-user` with the chart's three user roles in the gRPC namespace and
/// the app developer's where the examples run (Predict checks the run's namespace too): its
/// token, for the gRPC calls of the suite.
fn grpc_user() -> String {
    kubectl(&["create", "serviceaccount", "lab-user", "-n", NAMESPACE]);
    let user = format!("--serviceaccount={NAMESPACE}:lab-user");
    for (namespace, role) in [
        (NAMESPACE, "data-engineer"),
        (NAMESPACE, "data-scientist"),
        (NAMESPACE, "app-developer"),
        (LAB, "app-developer"),
    ] {
        kubectl(&[
            "create",
            "rolebinding",
            &format!("lab-user-{role}"),
            "-n",
            namespace,
            &format!("--clusterrole={RELEASE}-{role}"),
            &user,
        ]);
    }
    kubectl(&[
        "create",
        "token",
        "lab-user",
        "-n",
        NAMESPACE,
        "--duration=2h",
        "--audience",
        "miniautoml",
    ])
    .trim()
    .to_string()
}

/// Epochs of the run whose curves the console's test watches grow.
const CONSOLE_EPOCHS: u64 = 1500;

/// The console as a person uses it, in chromium: sign in with a token in the URL's fragment,
/// watch a run's curves gain points while it trains (the chart's points equal the status's
/// epochs and the page's data table), compare two runs, use the try-it box, reopen a view from
/// its URL; then a ServiceAccount without roles signs in and sees none of it.
fn console_in_a_browser(token: &str, figures: &mut Figures) {
    // The lab user may read its runs' logs in the lab (the data scientist's role).
    kubectl(&[
        "create",
        "rolebinding",
        "lab-user-data-scientist",
        "-n",
        LAB,
        &format!("--clusterrole={RELEASE}-data-scientist"),
        &format!("--serviceaccount={NAMESPACE}:lab-user"),
    ]);
    kubectl_apply(
        LAB,
        &format!(
            "apiVersion: miniautoml.io/v1alpha1
kind: TrainingJob
metadata: {{name: console-run}}
spec:
  algorithm: intent-classification
  dataset: {{name: tweet-emotion}}
  parameters: {{EPOCHS: \"{CONSOLE_EPOCHS}\", LR: \"2\", SEED: \"11\"}}
  outputModelName: console-run
  resources: {{cpu: 500m, memory: 1Gi}}
"
        ),
    );
    let secret = kubectl_json(&["get", "secret", "-n", NAMESPACE, &format!("{RELEASE}-tls")]);
    let certificate = base64_decode(&text(&secret, "/data/tls.crt"));
    let console = PortForward::start(NAMESPACE, &format!("svc/{RELEASE}"), 8090);
    let base = format!("https://{}", console.addr());
    let shots = PathBuf::from(repo_path("target/e2e/console"));
    let browser = Browser::start(&browser::spki_sha256(&certificate));

    // Signing in: the token rides in the fragment, which no server sees; the page posts it once.
    let opened = Instant::now();
    browser.goto(&format!("{base}/login#token={token}"));
    browser.wait_for(
        "the runs table after signing in",
        Duration::from_secs(60),
        "return location.pathname === '/runs' && document.querySelector('#runs tbody tr[data-key]') !== null;",
    );
    println!("signed in: {}", browser.url());
    figures.time("console sign-in to runs table", opened.elapsed());
    let rows = browser
        .eval("return [...document.querySelectorAll('#runs tbody tr[data-key]')].map(r => r.dataset.key);");
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|k| k == &format!("{LAB}/twitter-model")),
        "{rows}"
    );
    assert!(
        !browser.url().contains("token"),
        "the token stayed in the URL: {}",
        browser.url()
    );

    // A run's curves while it trains: the points grow through the event stream, no reload.
    wait_until("console-run to report epochs", RUN_TIMEOUT, SECOND, || {
        let job = kubectl_json(&["get", "-n", LAB, "trainingjob", "console-run"]);
        let done: u64 = text(&job, "/status/progress")
            .split('/')
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        (done >= 5).then_some(()).ok_or(text(&job, "/status"))
    });
    browser.goto(&format!("{base}/runs/{LAB}/console-run"));
    let points = "const c = document.querySelector('#chart'); return c && c.dataset.points ? Number(c.dataset.points) : null;";
    let first = browser.wait_for("the chart's first points", Duration::from_secs(30), points);
    let first = first.as_u64().unwrap();
    browser.eval("window.e2eMarker = 'the same page'; return true;");
    let grown = browser.wait_for(
        "the chart to gain points while the run trains",
        Duration::from_secs(120),
        &format!("const c = document.querySelector('#chart'); const n = Number(c.dataset.points); return n >= {} ? n : null;", first + 20),
    );
    assert_eq!(
        browser.eval("return window.e2eMarker;"),
        Value::from("the same page"),
        "the page reloaded"
    );
    println!("the curve grew from {first} to {grown} points without a reload");
    browser.eval("document.getElementById('run-curves').scrollIntoView(); return true;");
    browser.screenshot(&shots.join("run-live.png"));
    browser.wait_for(
        "the stream's end event once the run ends",
        RUN_TIMEOUT,
        "return document.querySelector('#run-curves').dataset.ended === 'true' && document.querySelector('#live-phase').textContent.trim();",
    );
    let job = wait_for_run(LAB, "console-run");
    assert_eq!(
        text(&job, "/status/progress"),
        format!("{CONSOLE_EPOCHS}/{CONSOLE_EPOCHS}")
    );
    let kept = job["status"]["epochs"].as_array().map(Vec::len).unwrap_or(0);
    // The status keeps a bounded few; the page has every epoch, from the store.
    let check = browser.wait_for(
        "the last points drawn",
        Duration::from_secs(30),
        &format!(
            "const u = window.miniautoml.charts.curves;
             const metric = document.querySelector('#chart').dataset.metric;
             const rows = [...document.querySelectorAll('#epoch-data tbody tr[data-rank=\"0\"]')];
             const table = new Map(rows.map(r => [Number(r.dataset.epoch),
                 Number(r.querySelector('td[data-metric=\"' + metric + '\"]').textContent)]));
             let plotted = 0, mismatches = 0;
             u.data[0].forEach((x, i) => {{
               const y = u.data[1][i];
               if (y === null || y === undefined) return;
               plotted++;
               if (!(Math.abs(table.get(x) - y) < 1e-9)) mismatches++;
             }});
             return plotted === {CONSOLE_EPOCHS} ? {{plotted, mismatches, rows: rows.length, metric}} : null;"
        ),
    );
    println!("after the run: {check} (the status keeps {kept} epochs)");
    assert_eq!(check["rows"], Value::from(CONSOLE_EPOCHS), "{check}");
    assert_eq!(check["mismatches"], Value::from(0), "{check}");
    assert!(kept < CONSOLE_EPOCHS as usize);
    let logs = browser.eval("return document.querySelector('#logs pre') ? document.querySelector('#logs pre').textContent : null;");
    assert!(logs.is_string(), "the run page shows its pod's log lines");

    // The view's state is its URL: another page opened from it shows the same view.
    browser.eval(
        "const set = (id, v) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event('change', {bubbles: true})); e.dispatchEvent(new Event('input', {bubbles: true})); };
         set('metric', 'loss'); set('scale', 'log'); return true;",
    );
    let shared = browser.wait_for(
        "the URL to carry the view",
        Duration::from_secs(10),
        "return location.search.includes('metric=loss') && location.search.includes('scale=log') ? location.href : null;",
    );
    browser.goto(&format!("{base}/runs"));
    browser.goto(shared.as_str().unwrap());
    let view = browser.wait_for(
        "the shared view",
        Duration::from_secs(30),
        "const c = document.querySelector('#chart'); return c && c.dataset.metric === 'loss' && Number(c.dataset.points) > 0
           ? {metric: document.getElementById('metric').value, scale: document.getElementById('scale').value} : null;",
    );
    assert_eq!(view, serde_json::json!({"metric": "loss", "scale": "log"}));

    // Compare: select two runs in the table, follow the link.
    browser.goto(&format!(
        "{base}/runs?select={LAB}/twitter-model,{LAB}/console-run"
    ));
    browser.wait_for(
        "the compare link enabled",
        Duration::from_secs(10),
        "const a = document.getElementById('compare-link'); return a.getAttribute('aria-disabled') !== 'true' && a.href.includes('runs=');",
    );
    browser.screenshot(&shots.join("runs.png"));
    browser.click("#compare-link");
    let series = browser.wait_for(
        "both runs overlaid",
        Duration::from_secs(30),
        "const u = window.miniautoml && window.miniautoml.charts && window.miniautoml.charts.compare;
         return u && u.series.length === 3 && Number(document.querySelector('#chart').dataset.points) > 0
           ? u.series.slice(1).map(s => s.label) : null;",
    );
    println!("compare overlays {series}");
    let differs =
        browser.eval("return [...document.querySelectorAll('#diff tr.differs th')].map(t => t.textContent);");
    assert!(
        differs.as_array().unwrap().iter().any(|d| d == "EPOCHS"),
        "{differs}"
    );
    browser.screenshot(&shots.join("compare.png"));

    // The try-it box: a document through the deployment's predictor, each label's score.
    browser.goto(&format!("{base}/deployments/{LAB}/twitter-model"));
    browser.type_into("#try-it textarea", "I am so happy today!");
    browser.click("#try-it button");
    let answer = browser.wait_for(
        "the prediction",
        Duration::from_secs(60),
        "const l = document.getElementById('predicted-label'); const e = document.getElementById('prediction-error');
         if (e) return {error: e.textContent};
         return l ? {label: l.textContent, scores: document.querySelectorAll('#scores tr[data-label]').length} : null;",
    );
    println!("try it: {answer}");
    assert!(answer["error"].is_null(), "{answer}");
    assert_eq!(answer["scores"], Value::from(3), "a score per label: {answer}");
    browser.screenshot(&shots.join("try-it.png"));

    // A ServiceAccount the API server knows but nobody bound: signed in, it sees nothing.
    kubectl(&["create", "serviceaccount", "console-stranger", "-n", LAB]);
    let stranger = kubectl(&[
        "create",
        "token",
        "console-stranger",
        "-n",
        LAB,
        "--duration=10m",
        "--audience",
        "miniautoml",
    ]);
    browser.goto(&format!("{base}/logout"));
    browser.goto(&format!("{base}/login#token={}", stranger.trim()));
    let empty = browser.wait_for(
        "the stranger's runs table",
        Duration::from_secs(30),
        "return location.pathname === '/runs' ? document.querySelectorAll('#runs tbody tr[data-key]').length : null;",
    );
    assert_eq!(empty, Value::from(0), "a stranger listed runs");
    browser.goto(&format!("{base}/runs/{LAB}/twitter-model"));
    let refused = browser.eval(
        "const e = document.getElementById('error'); return e ? e.textContent : document.body.textContent;",
    );
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("may not get trainingjobs.miniautoml.io"),
        "{refused}"
    );
    drop(browser);
}

/// `kubectl miniautoml ARGS` in the lab's namespace, pointed at this release's operator; its
/// output, or its failure with stderr.
fn plugin(args: &[&str], token: Option<&str>) -> String {
    // Bounded: `run --follow` waits for runs to end.
    let mut command = Command::new("timeout");
    command.args(["600", "kubectl", "miniautoml"]).args(args).args([
        "--release-namespace",
        NAMESPACE,
        "--release",
        RELEASE,
    ]);
    if let Some(token) = token {
        // As a user would keep it: in the environment, not on the command line.
        command.env("MINIAUTOML_TOKEN", token);
    }
    let output = command.output().expect("kubectl miniautoml");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "kubectl miniautoml {} failed: {stdout}{stderr}",
        args.join(" ")
    );
    stdout
}

/// The plugin as a user runs it after the console's step (both runs have ended).
fn the_plugin(token: &str) {
    let runs: Value = serde_json::from_str(&plugin(&["runs", "-n", LAB, "-o", "json"], None)).unwrap();
    let names: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"twitter-model") && names.contains(&"console-run"),
        "{runs}"
    );
    let table = plugin(&["runs", "-n", LAB], None);
    println!("{table}");
    assert!(
        table.starts_with("NAMESPACE") && table.contains("console-run"),
        "{table}"
    );

    // A live progress bar until the run ends.
    kubectl_apply(
        LAB,
        "apiVersion: miniautoml.io/v1alpha1
kind: TrainingJob
metadata: {name: follow-run}
spec:
  algorithm: intent-classification
  dataset: {name: tweet-emotion}
  parameters: {EPOCHS: \"30\", SEED: \"3\"}
  outputModelName: follow-run
  resources: {cpu: 500m, memory: 1Gi}
",
    );
    let followed = plugin(&["run", "follow-run", "-n", LAB, "--follow"], None);
    println!("{followed}");
    assert!(
        followed.starts_with("follow-run: 30/30 · Succeeded"),
        "{followed}"
    );
    assert!(
        text(
            &kubectl_json(&["get", "-n", LAB, "trainingjob", "follow-run"]),
            "/status/phase"
        ) == "Succeeded"
    );

    // Curves as a PNG: every epoch through the console's API with the token.
    let png = std::env::temp_dir().join(format!("miniautoml-e2e-curves-{}.png", std::process::id()));
    let png_arg = png.to_string_lossy().into_owned();
    let said = plugin(
        &[
            "curves",
            "twitter-model",
            "console-run",
            "-n",
            LAB,
            "-o",
            &png_arg,
            "--width",
            "800",
            "--height",
            "450",
        ],
        Some(token),
    );
    println!("{said}");
    let image = image::open(&png).expect("the PNG decodes");
    assert_eq!((image.width(), image.height()), (800, 450));
    std::fs::copy(&png, repo_path("target/e2e/console/plugin-curves.png")).unwrap();

    let compared: Value = serde_json::from_str(&plugin(
        &["compare", "twitter-model", "console-run", "-n", LAB, "-o", "json"],
        None,
    ))
    .unwrap();
    assert!(
        compared
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "EPOCHS" && l["differs"] == true),
        "{compared}"
    );
    let logs = plugin(&["logs", "console-run", "-n", LAB, "--tail", "5"], None);
    assert!(logs.contains("==> console-run-train"), "{logs}");

    let predicted: Value = serde_json::from_str(&plugin(
        &[
            "predict",
            "twitter-model",
            "I am so happy today!",
            "-n",
            LAB,
            "-o",
            "json",
        ],
        Some(token),
    ))
    .unwrap();
    assert!(
        predicted["label"].as_str().is_some_and(|l| !l.is_empty()),
        "{predicted}"
    );
    assert_eq!(
        predicted["scores"].as_object().map(|s| s.len()),
        Some(3),
        "{predicted}"
    );

    // Upload with the namespace's key, then the commit appended and ingested.
    kubectl_apply(
        "default",
        "apiVersion: miniautoml.io/v1alpha1
kind: Dataset
metadata: {name: plugin-upload}
spec: {type: TextIntent, commits: []}
",
    );
    let uploaded = plugin(
        &[
            "dataset",
            "upload",
            &testdata("tweet_emotion_part2.csv").to_string_lossy(),
            "--dataset",
            "plugin-upload",
            "-n",
            "default",
            "--wait",
        ],
        None,
    );
    println!("{uploaded}");
    let dataset = kubectl_json(&["get", "-n", "default", "dataset", "plugin-upload"]);
    assert_eq!(text(&dataset, "/status/commitCount"), "1", "{dataset}");
    kubectl(&["delete", "-n", "default", "dataset", "plugin-upload"]);
}

/// grpcurl `method` with `request` at `addr` over TLS trusting the CA in the file `ca`, as the
/// caller whose token is `token` (passed in the environment, so that no command line or failure
/// message shows it).
fn grpcurl(
    addr: &str,
    ca: &Path,
    token: Option<&str>,
    method: &str,
    request: &str,
) -> Result<String, String> {
    let mut command = Command::new("grpcurl");
    command.arg("-cacert").arg(ca).args(["-max-time", "60"]);
    if let Some(token) = token {
        command
            .args(["-expand-headers", "-H", "authorization: Bearer ${GRPC_TOKEN}"])
            .env("GRPC_TOKEN", token);
    }
    let output = command
        .args(["-d", request, addr, method])
        .output()
        .map_err(|e| format!("grpcurl: {e}"))?;
    let out = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(out)
    } else {
        Err(out)
    }
}

/// No token: UNAUTHENTICATED; the token of a ServiceAccount without a role: PERMISSION_DENIED,
/// naming the permission it lacks.
fn callers_are_reviewed(addr: &str, ca: &Path, run: &str) {
    let request = serde_json::json!({"runId": run, "document": "who am I"}).to_string();
    let method = "prediction.PredictionService/Predict";
    let anonymous = grpcurl(addr, ca, None, method, &request).unwrap_err();
    assert!(anonymous.contains("Unauthenticated"), "{anonymous}");
    kubectl(&["create", "serviceaccount", "nobody", "-n", NAMESPACE]);
    // A real token made for the API server (not the operator's audience) is no credential here.
    let for_the_api_server = kubectl(&["create", "token", "nobody", "-n", NAMESPACE]);
    let wrong_audience = grpcurl(addr, ca, Some(for_the_api_server.trim()), method, &request).unwrap_err();
    assert!(
        wrong_audience.contains("Unauthenticated") && wrong_audience.contains("--audience miniautoml"),
        "{wrong_audience}"
    );
    let nobody = kubectl(&[
        "create",
        "token",
        "nobody",
        "-n",
        NAMESPACE,
        "--audience",
        "miniautoml",
    ]);
    let refused = grpcurl(addr, ca, Some(nobody.trim()), method, &request).unwrap_err();
    assert!(refused.contains("PermissionDenied"), "{refused}");
    assert!(
        refused.contains(&format!(
            "system:serviceaccount:{NAMESPACE}:nobody may not create modeldeployments.miniautoml.io/predict"
        )),
        "{refused}"
    );
    println!(
        "no token: Unauthenticated; a token for the API server's audience: Unauthenticated; a ServiceAccount without a role: PermissionDenied"
    );
}

/// The original `PredictionService/Predict` through grpcurl.
fn predict(addr: &str, ca: &Path, token: &str, run: &str, document: &str) -> String {
    let request = serde_json::json!({"runId": run, "document": document}).to_string();
    wait_until("a Predict answer", Duration::from_secs(60), SECOND, || {
        grpcurl(
            addr,
            ca,
            Some(token),
            "prediction.PredictionService/Predict",
            &request,
        )
    })
}

/// The CA of the certificate the chart generated (TLS is on by default), in a file of its own.
fn generated_ca() -> PathBuf {
    let secret = kubectl_json(&["get", "secret", "-n", NAMESPACE, &format!("{RELEASE}-tls")]);
    let ca = base64_decode(&text(&secret, "/data/ca.crt"));
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    let file = std::env::temp_dir().join(format!("miniautoml-e2e-generated-ca-{}.crt", std::process::id()));
    std::fs::write(&file, ca).unwrap();
    file
}

/// A CA and a certificate for the operator Service (and 127.0.0.1, for port-forwards) in the
/// Secret [`TLS_SECRET`], made by `hack/tls-secret.sh`; returns the directory holding `ca.crt`.
fn tls_secret() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("miniautoml-e2e-tls-{}", std::process::id()));
    let service = format!("{RELEASE}.{NAMESPACE}.svc");
    hack(
        "tls-secret.sh",
        &[NAMESPACE, TLS_SECRET, &service, "127.0.0.1"],
        &[("TLS_DIR", dir.to_string_lossy().into_owned())],
    );
    dir
}

/// The trainer of `run` reported over TLS, checking the Service's name against the CA it was
/// given; a grpcurl client trusting that CA is served, a plain-text one is not.
fn served_over_tls(tls: &Path, run: &Value) {
    let job = text(run, "/status/jobName");
    let env = kubectl_json(&["get", "job", "-n", LAB, &job]);
    let vars = env["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let value = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["value"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        value("METADATA_STORE_SERVER"),
        format!("https://{RELEASE}.{NAMESPACE}.svc:51001")
    );
    let ca = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
    assert_eq!(value("METADATA_STORE_CA"), ca);
    let grpc = PortForward::start(NAMESPACE, &format!("svc/{RELEASE}"), 51001);
    let ca_file = tls.join("ca.crt");
    let health = wait_until("a health check over TLS", Duration::from_secs(30), SECOND, || {
        try_run(
            "grpcurl",
            &[
                "-cacert",
                &ca_file.to_string_lossy(),
                &grpc.addr(),
                "grpc.health.v1.Health/Check",
            ],
        )
    });
    assert!(health.contains("SERVING"), "{health}");
    let plain = try_run(
        "grpcurl",
        &[
            "-plaintext",
            "-max-time",
            "10",
            &grpc.addr(),
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(plain.is_err(), "a plain-text call was served: {plain:?}");
    println!("TLS: the run reported over TLS; grpcurl -cacert served, -plaintext refused");
}

/// Runs a hack/ script with `env`, returning its output.
fn hack(script: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let output = Command::new(repo_path(&format!("hack/{script}")))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("the script runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(output.status.success(), "hack/{script} failed: {text}");
    text
}

/// A TrainingJob on the example Dataset that trains for a while.
fn start_run(name: &str) {
    kubectl_apply(
        LAB,
        &format!(
            "apiVersion: miniautoml.io/v1alpha1
kind: TrainingJob
metadata: {{name: {name}}}
spec:
  algorithm: intent-classification
  dataset: {{name: tweet-emotion}}
  parameters: {{EPOCHS: \"{LONG_EPOCHS}\", LR: \"4\", SEED: \"7\"}}
  outputModelName: {name}
  resources: {{cpu: 500m, memory: 1Gi}}
"
        ),
    );
}

fn wait_for_phase(namespace: &str, name: &str, phase: &str) -> Value {
    wait_until(&format!("{name} {phase}"), RUN_TIMEOUT, SECOND, || {
        let job = kubectl_json(&["get", "-n", namespace, "trainingjob", name]);
        match text(&job, "/status/phase").as_str() {
            p if p == phase => Ok(job),
            "Failed" => panic!("{name} failed: {}", text(&job, "/status")),
            _ => Err(text(&job, "/status")),
        }
    })
}

/// Waits for a run to succeed, printing the trainer's log if it fails.
fn wait_for_run(namespace: &str, name: &str) -> Value {
    wait_until(&format!("{name} Succeeded"), RUN_TIMEOUT, SECOND, || {
        let job = kubectl_json(&["get", "-n", namespace, "trainingjob", name]);
        match text(&job, "/status/phase").as_str() {
            "Succeeded" => Ok(job),
            "Failed" => panic!(
                "{name} failed: {}\n{}",
                text(&job, "/status"),
                try_run(
                    "kubectl",
                    &[
                        "logs",
                        "-n",
                        namespace,
                        "-l",
                        &format!("miniautoml.io/trainingjob={name}")
                    ]
                )
                .unwrap_or_default()
            ),
            _ => Err(text(&job, "/status")),
        }
    })
}

/// A run happened once: one Job, epochs without repeats.
fn assert_single_run(namespace: &str, name: &str, job: &Value) {
    let jobs = kubectl_json(&[
        "get",
        "jobs.batch",
        "-n",
        namespace,
        "-l",
        &format!("miniautoml.io/trainingjob={name}"),
    ]);
    assert_eq!(
        jobs["items"].as_array().map(Vec::len),
        Some(1),
        "{name}: Jobs {jobs}"
    );
    let mut epochs: Vec<String> = job["status"]["epochs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| text(e, "/id"))
        .collect();
    let count = epochs.len();
    epochs.sort();
    epochs.dedup();
    assert_eq!(epochs.len(), count, "{name}: an epoch recorded twice");
}

/// What a pod in the users' namespace with `label` (if any) gets from the store's S3 port.
fn store_probe(name: &str, label: Option<(&str, &str)>) -> String {
    let store = format!("http://{RELEASE}-object-store.{NAMESPACE}.svc.cluster.local:8333/healthz");
    probe(LAB, &format!("store-probe-{name}"), &store, label)
}

/// What a pod `name` in `namespace` with `label` (if any) gets from `url`: `REACHED` or
/// `REFUSED` (ten tries of up to 2 s a second apart: a new pod's address reaches the policy
/// engine a moment after the pod starts), with its log.
fn probe(namespace: &str, name: &str, url: &str, label: Option<(&str, &str)>) -> String {
    let script = format!(
        "for i in $(seq 1 10); do if timeout 2 wget -q -O /dev/null {url}; then echo REACHED; exit 0; fi; sleep 1; done; echo REFUSED"
    );
    let mut labels = serde_json::json!({"app": "probe"});
    if let Some((key, value)) = label {
        labels[key] = value.into();
    }
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "activeDeadlineSeconds": 120,
            "containers": [{
                "name": "probe",
                "image": "docker.io/miniautoml/test-client:1",
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    });
    kubectl_apply(namespace, &pod.to_string());
    wait_until("the probe to finish", Duration::from_secs(90), SECOND, || {
        let phase = kubectl(&[
            "get",
            "pod",
            "-n",
            namespace,
            name,
            "-o",
            "jsonpath={.status.phase}",
        ]);
        matches!(phase.as_str(), "Succeeded" | "Failed")
            .then_some(())
            .ok_or(phase)
    });
    let log = kubectl(&["logs", "-n", namespace, name]);
    kubectl(&["delete", "pod", "-n", namespace, name, "--wait=false"]);
    log
}

/// A pod in the users' namespace that loops predictions, each on a new connection, through the
/// operator's Service (`PredictionService/Predict`) and the predictor's Service (REST), until
/// told to stop (a file), for at most 10 minutes or 3000 rounds.
fn start_prediction_client(run: &str, token: &str, ca: &Path) -> String {
    let grpc = format!("{RELEASE}.{NAMESPACE}.svc.cluster.local:51001");
    let rest =
        format!("http://twitter-model-predictor.{LAB}.svc.cluster.local:8080/v2/models/twitter-model/infer");
    let script = format!(
        r#"printf '%s' "$CA" > /tmp/ca.crt
ok=0; failed=0; round=0; start=$(date +%s)
while [ ! -e /tmp/stop ] && [ $round -lt 3000 ] && [ $(( $(date +%s) - start )) -lt 600 ]; do
  round=$((round + 1))
  if out=$(grpcurl -cacert /tmp/ca.crt -max-time 10 -expand-headers -H 'authorization: Bearer ${{GRPC_TOKEN}}' -d '{{"runId": "{run}", "document": "what a wonderful day"}}' {grpc} prediction.PredictionService/Predict 2>&1) && echo "$out" | grep -q result; then ok=$((ok + 1)); else failed=$((failed + 1)); echo "round $round Predict failed: $out"; fi
  if out=$(timeout 10 wget -q -O - --header 'Content-Type: application/json' --post-data '{{"inputs": [{{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["so sad"]}}]}}' {rest} 2>&1) && echo "$out" | grep -q outputs; then ok=$((ok + 1)); else failed=$((failed + 1)); echo "round $round REST failed: $out"; fi
  sleep 0.2
done
echo "predictions ok=$ok failed=$failed"
[ $failed -eq 0 ]"#
    );
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "prediction-client"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "activeDeadlineSeconds": 900,
            "containers": [{
                "name": "client",
                "image": "docker.io/miniautoml/test-client:1",
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", script],
                "env": [{"name": "GRPC_TOKEN", "value": token}, {"name": "CA", "value": std::fs::read_to_string(ca).unwrap()}],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    });
    kubectl_apply(LAB, &pod.to_string());
    kubectl(&[
        "wait",
        "-n",
        LAB,
        "--for=condition=Ready",
        "pod/prediction-client",
        "--timeout=120s",
    ]);
    // A few rounds before the upgrade starts.
    wait_until(
        "the client's first predictions",
        Duration::from_secs(60),
        SECOND,
        || {
            let log = kubectl(&["logs", "-n", LAB, "prediction-client"]);
            if log.contains("failed") {
                panic!("predictions fail before the upgrade: {log}");
            }
            Ok::<_, String>(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    "prediction-client".into()
}

/// Tells the client to stop and returns its counts (ok, failed).
fn stop_prediction_client(pod: String) -> (u64, u64) {
    kubectl(&["exec", "-n", LAB, &pod, "--", "sh", "-c", ": > /tmp/stop"]);
    wait_until("the client to finish", Duration::from_secs(60), SECOND, || {
        let phase = kubectl(&["get", "pod", "-n", LAB, &pod, "-o", "jsonpath={.status.phase}"]);
        matches!(phase.as_str(), "Succeeded" | "Failed")
            .then_some(())
            .ok_or(phase)
    });
    let log = kubectl(&["logs", "-n", LAB, &pod]);
    println!("{log}");
    let summary = log
        .lines()
        .rev()
        .find(|l| l.starts_with("predictions "))
        .expect("the client's summary");
    let count = |key: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|part| part.strip_prefix(key))
            .and_then(|n| n.parse().ok())
            .expect("a count")
    };
    (count("ok="), count("failed="))
}

/// Everything of the release still in the cluster, as `kind/namespace/name` (or `kind/name`):
/// objects with the release's instance label or Helm's release annotation.
fn release_objects() -> Vec<String> {
    let kinds = "deployments,statefulsets,replicasets,pods,services,endpoints,configmaps,secrets,serviceaccounts,\
                 roles,rolebindings,poddisruptionbudgets,leases,persistentvolumeclaims,jobs";
    let cluster_kinds = "clusterroles,clusterrolebindings,customresourcedefinitions";
    let mut left = Vec::new();
    for (kinds, all_namespaces) in [(kinds, true), (cluster_kinds, false)] {
        let mut args = vec!["get", kinds];
        if all_namespaces {
            args.push("-A");
        }
        let list = kubectl_json(&args);
        for item in list["items"].as_array().into_iter().flatten() {
            let labelled = text(item, "/metadata/labels/app.kubernetes.io~1instance") == RELEASE;
            let annotated = text(item, "/metadata/annotations/meta.helm.sh~1release-name") == RELEASE
                && text(item, "/metadata/annotations/meta.helm.sh~1release-namespace") == NAMESPACE;
            if labelled || annotated {
                let kind = text(item, "/kind").to_lowercase();
                let kind = if kind == "customresourcedefinition" {
                    "customresourcedefinition.apiextensions.k8s.io".to_string()
                } else {
                    kind
                };
                let namespace = text(item, "/metadata/namespace");
                let name = text(item, "/metadata/name");
                left.push(if namespace.is_empty() {
                    format!("{kind}/{name}")
                } else {
                    format!("{kind}/{namespace}/{name}")
                });
            }
        }
    }
    left.sort();
    left
}

/// CRDs that an earlier `kubectl apply -f crds/` installed are handed to the release the way Helm
/// documents (its ownership label and annotations), so `helm install` takes them over.
fn adopt_crds() {
    for crd in [
        "datasets.miniautoml.io",
        "trainingjobs.miniautoml.io",
        "modeldeployments.miniautoml.io",
    ] {
        if try_run("kubectl", &["get", "crd", crd]).is_err() {
            continue;
        }
        let owner = kubectl(&[
            "get",
            "crd",
            crd,
            "-o",
            "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}/{.metadata.annotations.meta\\.helm\\.sh/release-namespace}",
        ]);
        if owner == format!("{RELEASE}/{NAMESPACE}") {
            continue;
        }
        println!("adopting CRD {crd} (owner: {owner:?}) into release {RELEASE}");
        kubectl(&[
            "label",
            "crd",
            crd,
            "app.kubernetes.io/managed-by=Helm",
            "--overwrite",
        ]);
        kubectl(&[
            "annotate",
            "crd",
            crd,
            &format!("meta.helm.sh/release-name={RELEASE}"),
            &format!("meta.helm.sh/release-namespace={NAMESPACE}"),
            "--overwrite",
        ]);
    }
}

/// Removes what an earlier run left: the release, then the two namespaces with the users' objects
/// (their finalizers dropped first, as a user abandoning them after `helm uninstall` would: no
/// operator runs to finish them). The CRDs stay.
fn clean_up() {
    if try_run("helm", &["status", RELEASE, "-n", NAMESPACE]).is_ok() {
        helm(&["uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "3m"]);
    }
    for namespace in [LAB, NAMESPACE] {
        if try_run("kubectl", &["get", "namespace", namespace]).is_err() {
            continue;
        }
        for kind in ["datasets", "trainingjobs", "modeldeployments"] {
            if try_run("kubectl", &["get", "crd", &format!("{kind}.miniautoml.io")]).is_err() {
                continue;
            }
            let names = kubectl(&["get", kind, "-n", namespace, "-o", "name"]);
            for name in names.lines().filter(|n| !n.is_empty()) {
                kubectl(&[
                    "patch",
                    "-n",
                    namespace,
                    name,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
            }
        }
        kubectl(&["delete", "namespace", namespace, "--wait=true", "--timeout=300s"]);
    }
}
