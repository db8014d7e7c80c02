//! Properties of the trainer's hyperparameter reader, which takes whatever a TrainingJob's
//! `parameters` or a Train call carry (`make fuzz` runs them with 100,000 generated cases each;
//! `make test` with proptest's 256): any values are read or refused with a message naming a
//! variable that was given, never a panic; what was read and recorded in the manifest (the
//! values its architecture uses) reads back the same; whole numbers in range are taken as given.

use std::collections::BTreeMap;

use miniautoml_intent_classification::hyperparameters::{HYPERPARAMETERS, Hyperparameters};
use proptest::prelude::*;

/// Values as people type them: numbers (whole, real, negative, huge, not finite), the names
/// the enumerations take, blanks and junk.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..2000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| x.to_string()),
        (-10.0f64..10.0).prop_map(|x| format!("{x:.3}")),
        (0.0f64..1.0).prop_map(|x| x.to_string()),
        prop::sample::select(vec![
            "ngram-nb",
            "embedding-bag",
            "balanced",
            "none",
            "squared-hinge",
            "cross-entropy",
            "",
            " ",
            "NaN",
            "inf",
            "-0",
            "1e400",
            "0x10",
            " 7 ",
        ])
        .prop_map(String::from),
        ".{0,12}",
    ]
}

fn parameters() -> impl Strategy<Value = BTreeMap<String, String>> {
    let names: Vec<String> = HYPERPARAMETERS
        .iter()
        .map(|param| param.name.to_string())
        .collect();
    prop::collection::btree_map(prop::sample::select(names), value(), 0..8)
}

proptest! {
    #[test]
    fn any_values_are_read_or_refused_naming_a_variable(parameters in parameters()) {
        match Hyperparameters::from_lookup(|name| parameters.get(name).cloned()) {
            Ok(read) => {
                // What the manifest records (the values the architecture uses) reads back as
                // the same.
                let recorded = read.to_map();
                let again = Hyperparameters::from_lookup(|name| recorded.get(name).cloned()).unwrap();
                prop_assert_eq!(again.to_map(), recorded);
            }
            Err(error) => {
                let message = error.to_string();
                prop_assert!(
                    parameters.keys().any(|name| message.contains(name.as_str())),
                    "{} names none of {:?}", message, parameters.keys().collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn whole_numbers_in_range_are_taken_as_given(
        epochs in 1usize..100_000,
        batch in 1usize..100_000,
        seed in any::<u64>(),
        padding in prop::sample::select(vec!["", " ", "\t"]),
    ) {
        let parameters = BTreeMap::from([
            ("EPOCHS", format!("{padding}{epochs}{padding}")),
            ("BATCH_SIZE", batch.to_string()),
            ("SEED", seed.to_string()),
        ]);
        let read = Hyperparameters::from_lookup(|name| parameters.get(name).cloned()).unwrap();
        prop_assert_eq!((read.epochs, read.batch_size, read.seed), (epochs, batch, seed));
    }
}
