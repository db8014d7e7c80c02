//! Properties of the predictor's Open Inference Protocol v2 body reader (`make fuzz` runs them
//! with 100,000 generated cases each; `make test` with proptest's 256): any bytes are read or
//! refused with a reason, never a panic; a structurally generated request is accepted exactly
//! when it is one BYTES input named `text` whose shape multiplies to its 1..=256 documents, and
//! then its documents are the data's strings in order.

use miniautoml_predictor::http::{INPUT_NAME, InferRequest, MAX_BATCH};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Data as clients send it: strings nested in arrays, now and then something else.
fn data() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        8 => ".{0,12}".prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
    ];
    leaf.prop_recursive(3, 64, 8, |inner| {
        prop::collection::vec(inner, 0..8).prop_map(Value::Array)
    })
}

fn shape() -> impl Strategy<Value = Vec<i64>> {
    let dimension = prop_oneof![
        6 => 0i64..10,
        1 => Just(-1i64),
        1 => any::<i64>(),
        1 => Just(1i64 << 32),
    ];
    prop::collection::vec(dimension, 0..4)
}

fn input() -> impl Strategy<Value = Value> {
    (
        prop_oneof![4 => Just(INPUT_NAME.to_string()), 1 => ".{0,6}"],
        prop_oneof![4 => Just("BYTES".to_string()), 1 => Just("FP32".to_string()), 1 => ".{0,6}"],
        shape(),
        data(),
    )
        .prop_map(|(name, datatype, shape, data)| {
            json!({"name": name, "datatype": datatype, "shape": shape, "data": data})
        })
}

/// The strings of `data` in order, or `None` when something else is in it.
fn strings(data: &Value, out: &mut Vec<String>) -> Option<()> {
    match data {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => {
            for item in items {
                strings(item, out)?;
            }
        }
        _ => return None,
    }
    Some(())
}

/// Whether the request is the one this model takes, by the protocol's rules.
fn acceptable(inputs: &[Value]) -> Option<Vec<String>> {
    let [input] = inputs else { return None };
    if input["name"] != INPUT_NAME || input["datatype"] != "BYTES" {
        return None;
    }
    let mut documents = Vec::new();
    strings(&input["data"], &mut documents)?;
    let mut elements: i128 = 1;
    for d in input["shape"].as_array()? {
        let d = d.as_i64()?;
        if d < 0 {
            return None;
        }
        elements = elements.saturating_mul(d as i128);
    }
    (elements == documents.len() as i128 && (1..=MAX_BATCH).contains(&documents.len())).then_some(documents)
}

proptest! {
    #[test]
    fn any_bytes_are_read_or_refused(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(request) = InferRequest::parse(&body) {
            let _ = request.documents();
        }
    }

    #[test]
    fn a_request_is_accepted_exactly_when_it_is_well_formed(
        inputs in prop::collection::vec(input(), 0..3),
        id in prop::option::of(".{0,8}"),
    ) {
        let mut body = json!({"inputs": inputs});
        if let Some(id) = id {
            body["id"] = Value::String(id);
        }
        let request = InferRequest::parse(body.to_string().as_bytes()).unwrap();
        match (request.documents(), acceptable(&inputs)) {
            (Ok(documents), Some(expected)) => prop_assert_eq!(documents, expected),
            (Err(reason), None) => prop_assert!(!reason.is_empty()),
            (got, expected) => prop_assert!(false, "{:?} for {} (expected {:?})", got, body, expected),
        }
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let body = format!(
        r#"{{"inputs": [{{"name": "text", "datatype": "BYTES", "shape": [1], "data": {}"x"{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let refused = InferRequest::parse(body.as_bytes()).unwrap_err();
    assert!(refused.contains("recursion limit"), "{refused}");
}

#[test]
fn shapes_that_overflow_are_refused() {
    // 2^32 × 2^32 overflows i64: refused as a mismatch, not a panic (debug) or a wrap (release).
    let body = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1i64 << 32, 1i64 << 32], "data": ["a"]}]});
    let request = InferRequest::parse(body.to_string().as_bytes()).unwrap();
    assert!(request.documents().unwrap_err().contains("shape"));
}
