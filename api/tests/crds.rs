//! The committed CRD YAML matches the types, documents every field, and carries the rules and
//! printer columns users rely on.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use miniautoml_api::crd::{CHART_CRDS_PATH, chart_manifests, crds, manifests};
use serde_json::Value;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("api/ sits in the repository root")
}

#[test]
fn committed_crds_match_the_types() {
    let plain = manifests().expect("CRDs serialize");
    let kept = chart_manifests().expect("CRDs serialize");
    for (dir, manifests) in [("crds", &plain), (CHART_CRDS_PATH, &kept)] {
        for (name, generated) in manifests {
            let path = repo_root().join(dir).join(name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `make generate`", path.display()));
            assert!(
                committed == *generated,
                "{} differs from what the types generate; run `make generate`",
                path.display()
            );
        }
        let files = std::fs::read_dir(repo_root().join(dir))
            .expect("CRD directory exists")
            .count();
        assert_eq!(files, manifests.len(), "{dir} holds files that no type generates");
    }
    for (_, yaml) in &kept {
        assert!(yaml.contains("helm.sh/resource-policy: keep"), "{yaml}");
    }
    assert!(
        !repo_root().join("charts/miniautoml/crds").exists(),
        "the chart's crds/ is installed once and never upgraded by Helm: the CRDs belong in {CHART_CRDS_PATH}"
    );
}

#[test]
fn committed_api_reference_matches_the_types() {
    let path = repo_root().join(miniautoml_api::crd::REFERENCE_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        committed == miniautoml_api::crd::reference(),
        "{} differs from what the types generate; run `make generate`",
        path.display()
    );
}

#[test]
fn every_field_has_a_description() {
    let all = crds();
    assert_eq!(all.len(), 3);
    for crd in &all {
        let missing = undocumented_fields(crd);
        assert!(
            missing.is_empty(),
            "{:?} lacks descriptions for {missing:?}",
            crd.metadata.name
        );
    }
}

#[test]
fn descriptions_break_lines_only_between_paragraphs() {
    // `kubectl explain` prints a description's line breaks as they are.
    fn walk(value: &Value, path: &str) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if let (true, Value::String(text)) = (key == "description", child) {
                        assert!(!text.replace("\n\n", "").contains('\n'), "{path}: {text:?}");
                    }
                    walk(child, &format!("{path}.{key}"));
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, path)),
            _ => {}
        }
    }
    for crd in crds() {
        walk(
            &serde_json::to_value(&crd).unwrap(),
            crd.metadata.name.as_deref().unwrap(),
        );
    }
}

#[test]
fn undocumented_fields_are_found() {
    // The counter itself must notice a missing description, or the test above proves nothing.
    let mut crd = crds().remove(0);
    let schema = crd.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    let spec = schema.properties.as_mut().unwrap().get_mut("spec").unwrap();
    spec.properties
        .as_mut()
        .unwrap()
        .get_mut("description")
        .unwrap()
        .description = None;
    assert_eq!(
        undocumented_fields(&crd),
        vec!["v1alpha1.spec.description".to_string()]
    );
}

fn crd_named(plural: &str) -> CustomResourceDefinition {
    crds()
        .into_iter()
        .find(|crd| crd.spec.names.plural == plural)
        .unwrap_or_else(|| panic!("no CRD for {plural}"))
}

/// Every CEL rule in the schema, and every `maximum` bound.
fn rules_and_maxima(crd: &CustomResourceDefinition) -> (Vec<String>, Vec<f64>) {
    fn walk(value: &Value, rules: &mut Vec<String>, maxima: &mut Vec<f64>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("rule", Value::String(rule)) => rules.push(rule.clone()),
                        ("maximum", Value::Number(max)) => maxima.push(max.as_f64().unwrap()),
                        _ => walk(child, rules, maxima),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, rules, maxima)),
            _ => {}
        }
    }
    let (mut rules, mut maxima) = (Vec::new(), Vec::new());
    walk(
        &serde_json::to_value(&crd.spec.versions).unwrap(),
        &mut rules,
        &mut maxima,
    );
    (rules, maxima)
}

fn column_names(crd: &CustomResourceDefinition) -> Vec<String> {
    let columns = crd.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap_or_default();
    columns.into_iter().map(|c| c.name).collect()
}

#[test]
fn crds_carry_cel_rules_bounds_printer_columns_and_subresources() {
    let dataset = crd_named("datasets");
    let (rules, _) = rules_and_maxima(&dataset);
    assert!(
        rules
            .iter()
            .any(|r| r.contains("oldSelf.all(i, c, self[i] == c)")),
        "append-only rule"
    );
    assert!(rules.contains(&"self == oldSelf".to_string()), "immutable type");
    assert_eq!(
        column_names(&dataset),
        ["Type", "Commits", "Examples", "Ready", "Age"]
    );

    let training = crd_named("trainingjobs");
    let (rules, maxima) = rules_and_maxima(&training);
    for rule in ["has(self.algorithm) != has(self.image)", "self == oldSelf"] {
        assert!(rules.iter().any(|r| r == rule), "TrainingJob lacks rule {rule:?}");
    }
    assert!(
        rules.iter().any(|r| r.contains("int(self['EPOCHS']) <= 10000")),
        "EPOCHS bound"
    );
    for bound in [64.0, 8.0, 10.0] {
        assert!(
            maxima.contains(&bound),
            "TrainingJob lacks maximum {bound} (workers, gpus, backoff)"
        );
    }
    assert_eq!(
        column_names(&training),
        ["Phase", "Progress", "Accuracy", "Dataset", "Version", "Age"]
    );

    let deployment = crd_named("modeldeployments");
    let (rules, maxima) = rules_and_maxima(&deployment);
    assert!(
        rules
            .iter()
            .any(|r| r == "has(self.trainingJob) != has(self.runId)")
    );
    assert!(maxima.contains(&32.0), "replicas bound");
    assert_eq!(
        column_names(&deployment),
        ["Model", "Ready", "Replicas", "Endpoint", "Age"]
    );
    let scale = deployment.spec.versions[0]
        .subresources
        .as_ref()
        .unwrap()
        .scale
        .as_ref()
        .unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");

    for crd in [dataset, training, deployment] {
        let version = &crd.spec.versions[0];
        assert!(
            version.subresources.as_ref().unwrap().status.is_some(),
            "status subresource"
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.group, "miniautoml.io");
        assert_eq!(version.name, "v1alpha1");
        let status =
            serde_json::to_value(&version.schema).unwrap()["openAPIV3Schema"]["properties"]["status"].clone();
        for field in ["observedGeneration", "conditions"] {
            assert!(
                status["properties"][field].is_object(),
                "{:?} status lacks {field}",
                crd.metadata.name
            );
        }
        assert_eq!(
            status["properties"]["conditions"]["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }
}

#[test]
fn short_names_collide_with_no_built_in_resource() {
    // Short names of the resources `kubectl api-resources` lists on a plain cluster.
    const BUILT_IN: &[&str] = &[
        "cm", "cs", "csr", "crd", "crds", "deploy", "ds", "ep", "ev", "hpa", "ing", "limits", "netpol", "no",
        "ns", "pc", "pdb", "po", "psp", "pv", "pvc", "quota", "rc", "rs", "sa", "sc", "sts", "svc", "vac",
        "ipaddr", "cidr",
    ];
    for crd in crds() {
        for short in crd.spec.names.short_names.unwrap_or_default() {
            assert!(
                !BUILT_IN.contains(&short.as_str()),
                "{short} is a built-in short name"
            );
        }
    }
}

/// JSON paths of schema properties that have no description (so `kubectl explain` would show
/// nothing for them).
fn undocumented_fields(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut missing = Vec::new();
    for version in &crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        else {
            missing.push(format!("{}: no schema", version.name));
            continue;
        };
        let schema = serde_json::to_value(schema).unwrap_or_default();
        collect_undocumented(&schema, &version.name, &mut missing);
    }
    missing
}

fn collect_undocumented(schema: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let child = format!("{path}.{name}");
            if property
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                missing.push(child.clone());
            }
            collect_undocumented(property, &child, missing);
        }
    }
    if let Some(items) = schema.get("items") {
        collect_undocumented(items, &format!("{path}[]"), missing);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        collect_undocumented(values, &format!("{path}{{}}"), missing);
    }
}
