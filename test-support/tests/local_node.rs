//! The local cluster's node is real: pods are containers (containerd + runc) with their own root
//! filesystem, user, PID namespace, network namespace and memory cgroup, on the pod network,
//! resolving Services through CoreDNS and reaching them through kube-proxy; `kubectl logs`,
//! `exec` and `port-forward` work; a missing image is a pull error as on any cluster.

use std::{
    io::{BufRead, BufReader},
    net::IpAddr,
    process::Stdio,
    time::Duration,
};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Service};
use kube::{Api, Client, api::PostParams, runtime::wait::await_condition};
use miniautoml_test_support::{LocalCluster, TestNamespace, WAIT, repo_root};

fn pod(name: &str, image: &str, script: Option<&str>, extra: serde_json::Value) -> Pod {
    let mut container = serde_json::json!({"name": "main", "image": image});
    if let Some(script) = script {
        container["command"] = serde_json::json!(["sh", "-c", script]);
    }
    for (key, value) in extra.as_object().unwrap() {
        container[key] = value.clone();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [container], "terminationGracePeriodSeconds": 1},
    }))
    .unwrap()
}

async fn setup(prefix: &str) -> (&'static LocalCluster, Client, TestNamespace) {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    let ns = TestNamespace::new(cluster, &client, prefix).await.unwrap();
    (cluster, client, ns)
}

/// Waits for `name` to satisfy `done`; panics with the pod's status otherwise.
async fn wait_pod(pods: &Api<Pod>, name: &str, done: impl Fn(&Pod) -> bool) -> Pod {
    let condition = await_condition(pods.clone(), name, move |p: Option<&Pod>| p.is_some_and(&done));
    match tokio::time::timeout(WAIT, condition).await {
        Ok(pod) => pod.unwrap().unwrap(),
        Err(_) => panic!(
            "pod {name}: timed out; status {:#?}",
            pods.get(name).await.ok().and_then(|p| p.status)
        ),
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn container(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

/// Pod `web`: httpd on 8080 serving `/hello.txt` with `text` (shell-expanded), ready once the
/// port takes connections.
fn web_server(text: &str) -> Pod {
    pod(
        "web",
        "miniautoml/test-tools:1",
        Some(&format!(
            "mkdir -p /tmp/www && echo {text} > /tmp/www/hello.txt && exec httpd -f -p 8080 -h /tmp/www"
        )),
        serde_json::json!({"readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}),
    )
}

/// Waits for pod `web` to run and be ready.
async fn web_ready(pods: &Api<Pod>) -> Pod {
    wait_pod(pods, "web", |p| {
        phase(p) == "Running"
            && p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await
}

fn kubectl(cluster: &LocalCluster, ns: &str, args: &[&str]) -> String {
    let output = cluster.kubectl().arg("-n").arg(ns).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn a_pod_is_a_container_of_its_own_as_nonroot_on_the_pod_network() {
    let (cluster, client, ns) = setup("node-pod").await;
    let pods = Api::<Pod>::namespaced(client, &ns.name);
    let host_file = repo_root().join("Cargo.toml");
    let script = format!(
        "echo uid=$(id -u); echo root=$(head -n1 /etc/os-release); \
         if [ -e {} ]; then echo host-files=visible; else echo host-files=absent; fi; \
         echo ip=$(hostname -i); echo pid1=$(cat /proc/1/comm)",
        host_file.display()
    );
    pods.create(
        &PostParams::default(),
        &pod(
            "probe",
            "miniautoml/test-tools:1",
            Some(&script),
            serde_json::json!({}),
        ),
    )
    .await
    .unwrap();
    let done = wait_pod(&pods, "probe", |p| matches!(phase(p), "Succeeded" | "Failed")).await;
    let logs = kubectl(cluster, &ns.name, &["logs", "probe"]);
    assert_eq!(phase(&done), "Succeeded", "{logs}");
    let value = |key: &str| {
        logs.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {logs}"))
            .to_string()
    };
    // The image's user, its own root filesystem (not the host's), its own PID namespace.
    assert_eq!(value("uid"), "65532");
    assert!(value("root").contains("MiniAutoML runtime"), "{logs}");
    assert_eq!(value("host-files"), "absent");
    assert_eq!(value("pid1"), "sh");
    // Its own network namespace, with the address the API reports, on the pod network.
    let status = done.status.unwrap();
    let pod_ip = status.pod_ip.clone().unwrap();
    assert_eq!(value("ip"), pod_ip);
    let ip: IpAddr = pod_ip.parse().unwrap();
    let IpAddr::V4(v4) = ip else {
        panic!("{ip} is not IPv4")
    };
    assert_eq!(
        &v4.octets()[..3],
        &[198, 18, 0],
        "{ip} is not on the node's pod network"
    );
    assert_eq!(
        status.host_ip.as_deref(),
        Some(cluster.node_ip.to_string().as_str())
    );
    assert_eq!(
        done.spec.unwrap().node_name.as_deref(),
        Some(cluster.node_name.as_str())
    );
    // The runtime reports the image by digest, as after a registry pull.
    let image_id = container(&pods.get("probe").await.unwrap())
        .unwrap()
        .image_id
        .clone();
    assert!(
        image_id.starts_with("docker.io/miniautoml/test-tools@sha256:"),
        "{image_id}"
    );
}

#[tokio::test]
async fn a_pod_reaches_a_service_by_dns_name_and_kubectl_exec_and_port_forward_work() {
    let (cluster, client, ns) = setup("node-svc").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    pods.create(&PostParams::default(), &web_server("served-by-$(hostname)"))
        .await
        .unwrap();
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let service = Api::<Service>::namespaced(client, &ns.name)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    assert!(
        cluster_ip.starts_with("198.19."),
        "Service IP {cluster_ip} is outside 198.19.0.0/16"
    );
    web_ready(&pods).await;

    // By name through CoreDNS, to the ClusterIP through kube-proxy, to the pod (bounded retries).
    let name = format!("web.{}.svc.cluster.local", ns.name);
    let script = format!(
        "nslookup {name} {dns} | tail -n 3; for i in 1 2 3 4 5 6 7 8 9 10; do \
         if timeout 5 wget -q -O - http://{name}/hello.txt; then exit 0; fi; sleep 1; done; exit 1",
        dns = cluster.node_ip
    );
    pods.create(
        &PostParams::default(),
        &pod(
            "client",
            "miniautoml/test-tools:1",
            Some(&script),
            serde_json::json!({}),
        ),
    )
    .await
    .unwrap();
    let done = wait_pod(&pods, "client", |p| matches!(phase(p), "Succeeded" | "Failed")).await;
    let logs = kubectl(cluster, &ns.name, &["logs", "client"]);
    assert_eq!(phase(&done), "Succeeded", "{logs}");
    assert!(logs.contains("served-by-web"), "{logs}");
    assert!(
        logs.contains(&cluster_ip),
        "the name did not resolve to {cluster_ip}: {logs}"
    );

    // kubectl exec runs in the container.
    let exec = kubectl(
        cluster,
        &ns.name,
        &["exec", "web", "--", "cat", "/tmp/www/hello.txt"],
    );
    assert_eq!(exec.trim(), "served-by-web");

    // kubectl port-forward brings the pod's port to loopback.
    let mut forward = cluster
        .kubectl()
        .args([
            "-n",
            &ns.name,
            "port-forward",
            "--address",
            "127.0.0.1",
            "pod/web",
            ":8080",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its stdout stays drained: it logs every connection, and dies on a closed pipe.
    let out = forward.stdout.take().unwrap();
    let (found, port) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let _ = found.send(rest.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()));
            }
        }
    });
    let port = port
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .flatten()
        .expect("kubectl port-forward printed no local port");
    let response =
        miniautoml_test_support::harness::http(&format!("127.0.0.1:{port}"), "GET", "/hello.txt", None).await;
    let _ = forward.kill();
    let _ = forward.wait();
    let (status, body) = response.unwrap_or_else(|e| panic!("GET through the port-forward on {port}: {e}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "served-by-web");
}

#[tokio::test]
async fn an_image_that_is_not_there_fails_to_pull() {
    let (_cluster, client, ns) = setup("node-pull").await;
    let pods = Api::<Pod>::namespaced(client, &ns.name);
    pods.create(
        &PostParams::default(),
        &pod("missing", "miniautoml/not-built:1", None, serde_json::json!({})),
    )
    .await
    .unwrap();
    let waiting = |p: &Pod| {
        container(p)
            .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .filter(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
    };
    let pod = wait_pod(&pods, "missing", move |p| waiting(p).is_some()).await;
    let state = container(&pod).unwrap().state.clone().unwrap().waiting.unwrap();
    let message = state.message.unwrap_or_default();
    assert!(message.contains("miniautoml/not-built:1"), "{message}");
}

#[tokio::test]
async fn a_container_over_its_memory_limit_is_oom_killed() {
    let (_cluster, client, ns) = setup("node-oom").await;
    let pods = Api::<Pod>::namespaced(client, &ns.name);
    let limits =
        serde_json::json!({"resources": {"limits": {"memory": "32Mi"}, "requests": {"memory": "32Mi"}}});
    pods.create(
        &PostParams::default(),
        &pod("hog", "miniautoml/test-oom:1", None, limits),
    )
    .await
    .unwrap();
    let done = wait_pod(&pods, "hog", |p| matches!(phase(p), "Succeeded" | "Failed")).await;
    let terminated = container(&done)
        .unwrap()
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(terminated.reason.as_deref(), Some("OOMKilled"), "{terminated:?}");
    assert_eq!(terminated.exit_code, 137);
}

/// A pod that tries `url` up to `tries` times (5 s each) and prints whether it got through.
fn prober(name: &str, url: &str, tries: u32, labels: serde_json::Value) -> Pod {
    let script = format!(
        "for i in $(seq 1 {tries}); do if timeout 5 wget -q -O - {url}; then echo REACHED; exit 0; fi; sleep 1; done; echo REFUSED"
    );
    let mut prober = pod(
        name,
        "miniautoml/test-tools:1",
        Some(&script),
        serde_json::json!({}),
    );
    if let Some(map) = labels.as_object() {
        let own = prober.metadata.labels.get_or_insert_with(Default::default);
        for (key, value) in map {
            own.insert(key.clone(), value.as_str().unwrap().to_string());
        }
    }
    prober
}

#[tokio::test]
async fn the_node_enforces_network_policies() {
    let (cluster, client, ns) = setup("node-netpol").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    pods.create(&PostParams::default(), &web_server("served"))
        .await
        .unwrap();
    let web = web_ready(&pods).await;
    let ip = web.status.unwrap().pod_ip.unwrap();
    let url = format!("http://{ip}:8080/hello.txt");

    // Only pods labelled friend=yes may reach web.
    let policy: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web-friends-only"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"friend": "yes"}}}]}],
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    // A friend gets through (retried while the engine syncs the policy); a stranger, asked
    // after that, is refused on every try.
    pods.create(
        &PostParams::default(),
        &prober("friend", &url, 8, serde_json::json!({"friend": "yes"})),
    )
    .await
    .unwrap();
    let friend = wait_pod(&pods, "friend", |p| matches!(phase(p), "Succeeded" | "Failed")).await;
    let logs = kubectl(cluster, &ns.name, &["logs", "friend"]);
    assert!(
        phase(&friend) == "Succeeded" && logs.contains("REACHED"),
        "{logs}"
    );
    pods.create(
        &PostParams::default(),
        &prober("stranger", &url, 3, serde_json::json!({})),
    )
    .await
    .unwrap();
    wait_pod(&pods, "stranger", |p| matches!(phase(p), "Succeeded" | "Failed")).await;
    let logs = kubectl(cluster, &ns.name, &["logs", "stranger"]);
    assert!(
        logs.contains("REFUSED") && !logs.contains("served"),
        "a pod the policy does not allow reached web: {logs}"
    );
}
