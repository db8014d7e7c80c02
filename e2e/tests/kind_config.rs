//! kind-config.yaml, loaded and validated by kind's own config loader (`kind-config-check`,
//! built by hack/tools.sh from the pinned kind module), as `kind create cluster --config` would
//! before it asks Docker for anything: this machine has no Docker, so the kind path is kept
//! honest by checking everything it shares with `make e2e` short of creating the cluster.

use miniautoml_e2e::{repo_path, try_run};

fn check(file: &str) -> Result<String, String> {
    try_run("kind-config-check", &[file])
}

#[test]
fn kinds_loader_accepts_the_config_with_its_own_node_image_and_our_subnets() {
    let report = check(&repo_path("kind-config.yaml")).unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    let line = |key: &str| -> Vec<String> {
        report
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{key} ")))
            .map(String::from)
            .collect()
    };
    let default_image = line("defaultImage").pop().expect("kind's default node image");
    assert_eq!(line("name"), ["miniautoml"]);
    // Pods and Services on 198.18.0.0/15, as on the local cluster.
    assert_eq!(line("podSubnet"), ["198.18.0.0/16"]);
    assert_eq!(line("serviceSubnet"), ["198.19.0.0/16"]);
    let nodes = line("node");
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes[0].starts_with("control-plane "), "{nodes:?}");
    assert!(
        nodes[1].starts_with("worker ") && nodes[1].ends_with(" miniautoml.io/pool=cpu"),
        "{nodes:?}"
    );
    // The node image kind was released with, pinned by digest.
    for node in &nodes {
        let image = node.split_whitespace().nth(1).unwrap();
        assert_eq!(image, default_image, "{node}");
        assert!(image.contains("@sha256:"), "{node}");
    }
}

#[test]
fn kinds_loader_refuses_a_broken_config_with_its_reason() {
    let dir = std::env::temp_dir().join(format!("kind-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, reason) in [
        (
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnt: 198.18.0.0/16\n",
            "field podSubnt not found",
        ),
        (
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n  - role: master\n",
            "\"master\" is not a valid node role",
        ),
        (
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  podSubnet: 198.18.0.0\n",
            "invalid pod subnet",
        ),
    ] {
        let file = dir.join("kind.yaml");
        std::fs::write(&file, text).unwrap();
        let error = check(file.to_str().unwrap()).expect_err(text);
        assert!(error.contains(reason), "{reason:?} not in {error}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
