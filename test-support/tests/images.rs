//! The image archives of `make images` declare what the Dockerfiles declare (entrypoint, user,
//! working directory, exposed ports, OCI labels), so users with Docker get the same images, and
//! they run as non-root with the binary where the entrypoint says.

use std::{collections::BTreeMap, path::Path, process::Command};

use miniautoml_test_support::repo_root;
use serde_json::Value;

/// What the final stage of a Dockerfile declares.
#[derive(Debug, Default, PartialEq)]
struct Declared {
    entrypoint: Vec<String>,
    user: String,
    working_dir: String,
    ports: Vec<String>,
    labels: BTreeMap<String, String>,
    copied_to: Vec<String>,
}

/// Reads the instructions after the last `FROM` (continuation lines joined).
fn dockerfile(path: &Path) -> Declared {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if let Some(part) = line.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        if !current.trim().is_empty() {
            instructions.push(std::mem::take(&mut current));
        }
        current.clear();
    }
    let last_from = instructions.iter().rposition(|i| i.starts_with("FROM ")).unwrap();
    let mut declared = Declared::default();
    for instruction in &instructions[last_from + 1..] {
        let (keyword, rest) = instruction.split_once(' ').unwrap();
        let rest = rest.trim();
        match keyword {
            "ENTRYPOINT" => declared.entrypoint = serde_json::from_str(rest).unwrap(),
            "USER" => declared.user = rest.to_string(),
            "WORKDIR" => declared.working_dir = rest.to_string(),
            "EXPOSE" => declared.ports = rest.split_whitespace().map(|p| format!("{p}/tcp")).collect(),
            "COPY" => declared
                .copied_to
                .push(rest.split_whitespace().last().unwrap().to_string()),
            "LABEL" => {
                for pair in rest.split("\" ") {
                    let (key, value) = pair.split_once('=').unwrap();
                    declared
                        .labels
                        .insert(key.trim().into(), value.trim().trim_matches('"').into());
                }
            }
            _ => {}
        }
    }
    declared
}

fn read_member(archive: &Path, member: &str) -> Vec<u8> {
    let output = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}: no {member}", archive.display());
    output.stdout
}

fn blob(archive: &Path, digest: &str) -> Vec<u8> {
    read_member(
        archive,
        &format!("./blobs/sha256/{}", digest.trim_start_matches("sha256:")),
    )
}

/// The image config and the file list of the last layer of an OCI layout archive.
fn archive(path: &Path) -> (Value, Vec<String>) {
    let index: Value = serde_json::from_slice(&read_member(path, "./index.json")).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(path, index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config: Value =
        serde_json::from_slice(&blob(path, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let last = layers.last().unwrap()["digest"].as_str().unwrap();
    let layer = std::env::temp_dir().join(format!("miniautoml-layer-{}", last.trim_start_matches("sha256:")));
    std::fs::write(&layer, blob(path, last)).unwrap();
    let listing = Command::new("tar").arg("-tzf").arg(&layer).output().unwrap();
    let _ = std::fs::remove_file(&layer);
    let files = String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches('.').to_string())
        .collect();
    (config, files)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn each_archive_declares_what_its_dockerfile_declares() {
    let images = repo_root().join("target/images");
    for (dockerfile_path, name) in [
        ("operator/Dockerfile", "miniautoml-operator"),
        ("predictor/Dockerfile", "miniautoml-predictor"),
        (
            "training-code/intent-classification/Dockerfile",
            "miniautoml-intent-classification",
        ),
    ] {
        let declared = dockerfile(&repo_root().join(dockerfile_path));
        let archive_path = images.join(format!("{name}-{}.oci.tar", env!("CARGO_PKG_VERSION")));
        assert!(
            archive_path.exists(),
            "{}: run make images",
            archive_path.display()
        );
        let (config, files) = archive(&archive_path);
        let runtime = &config["config"];
        assert_eq!(
            strings(&runtime["Entrypoint"]),
            declared.entrypoint,
            "{name}: entrypoint"
        );
        assert_eq!(
            runtime["User"].as_str(),
            Some(declared.user.as_str()),
            "{name}: user"
        );
        assert_eq!(
            runtime["User"].as_str(),
            Some("65532:65532"),
            "{name}: runs as nonroot"
        );
        assert_eq!(
            runtime["WorkingDir"].as_str(),
            Some(declared.working_dir.as_str()),
            "{name}: workdir"
        );
        let mut ports: Vec<String> = runtime["ExposedPorts"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let mut want = declared.ports.clone();
        ports.sort();
        want.sort();
        assert_eq!(ports, want, "{name}: exposed ports");
        let labels = runtime["Labels"].as_object().unwrap();
        for (key, value) in &declared.labels {
            let actual = labels.get(key).and_then(Value::as_str);
            assert!(actual.is_some(), "{name}: no label {key}");
            // ${REVISION} and ${CREATED} are build arguments; the rest must match verbatim.
            if !value.contains("${") {
                assert_eq!(actual, Some(value.as_str()), "{name}: label {key}");
            }
        }
        assert_eq!(labels.len(), declared.labels.len(), "{name}: labels {labels:?}");
        // The binary is where the Dockerfile copies it and the entrypoint runs it.
        assert_eq!(declared.copied_to, [declared.entrypoint[0].clone()], "{name}");
        assert!(files.contains(&declared.entrypoint[0]), "{name}: {files:?}");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
    }
}

#[test]
fn the_dockerfile_reader_reads_a_final_stage() {
    let path = std::env::temp_dir().join(format!("miniautoml-dockerfile-{}", std::process::id()));
    std::fs::write(
        &path,
        "FROM a AS build\nUSER root\nFROM b\nLABEL x.y=\"1\" \\\n  x.z=\"${Z}\"\nUSER 1:1\nWORKDIR /w\n\
         COPY --from=build /s /d\nEXPOSE 80 90\nENTRYPOINT [\"/d\"]\n",
    )
    .unwrap();
    let declared = dockerfile(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        declared,
        Declared {
            entrypoint: vec!["/d".into()],
            user: "1:1".into(),
            working_dir: "/w".into(),
            ports: vec!["80/tcp".into(), "90/tcp".into()],
            labels: [
                ("x.y".to_string(), "1".to_string()),
                ("x.z".to_string(), "${Z}".to_string())
            ]
            .into(),
            copied_to: vec!["/d".into()],
        }
    );
}

#[test]
fn the_pytorch_image_runs_its_script_as_nonroot_with_the_helper_installed() {
    let path = repo_root().join(format!(
        "target/images/miniautoml-pytorch-intent-{}.oci.tar",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(path.exists(), "{}: run make images", path.display());
    let (config, files) = archive(&path);
    let runtime = &config["config"];
    assert_eq!(
        strings(&runtime["Entrypoint"]),
        ["/usr/bin/python3", "/opt/pytorch-intent/train.py"]
    );
    assert_eq!(runtime["User"].as_str(), Some("65532:65532"));
    // Our code is the last layer: the script, the model it shares with serving, the helper.
    for file in [
        "/opt/pytorch-intent/train.py",
        "/opt/pytorch-intent/model.py",
        "/usr/local/lib/python3.11/dist-packages/miniautoml_training/run.py",
        "/usr/local/lib/python3.11/dist-packages/miniautoml_training/descriptor.bin",
    ] {
        assert!(files.iter().any(|f| f == file), "{file}: {files:?}");
    }
    assert!(
        strings(&runtime["Env"])
            .iter()
            .any(|e| e.starts_with("MINIAUTOML_CODE_VERSION=pytorch-intent ")),
        "{runtime}"
    );
}

#[test]
fn the_pytorch_predictor_image_serves_the_same_model_code_on_both_ports() {
    let path = repo_root().join(format!(
        "target/images/miniautoml-pytorch-intent-predictor-{}.oci.tar",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(path.exists(), "{}: run make images", path.display());
    let (config, files) = archive(&path);
    let runtime = &config["config"];
    assert_eq!(
        strings(&runtime["Entrypoint"]),
        ["/usr/bin/python3", "/opt/pytorch-intent/serve.py"]
    );
    assert_eq!(runtime["User"].as_str(), Some("65532:65532"));
    let mut ports: Vec<&String> = runtime["ExposedPorts"].as_object().unwrap().keys().collect();
    ports.sort();
    assert_eq!(ports, ["8080/tcp", "8081/tcp"]);
    for file in ["/opt/pytorch-intent/serve.py", "/opt/pytorch-intent/model.py"] {
        assert!(files.iter().any(|f| f == file), "{file}: {files:?}");
    }
}
