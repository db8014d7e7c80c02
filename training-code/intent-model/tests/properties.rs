//! Properties of the model artifact reader, which the predictor runs on whatever a bucket holds
//! (`make fuzz` runs them with 100,000 generated cases each; `make test` with proptest's 256):
//! any manifest and files are verified or refused with a reason, never a panic; files whose
//! manifest lists their true checksums pass verification, and changing any listed file's bytes
//! fails it, naming the file; loading a classifier from arbitrary artifacts (arbitrary bytes, or
//! safetensors with arbitrary tensor names, dtypes and shapes) is refused with a reason, never a
//! panic.

use std::collections::BTreeMap;

use miniautoml_intent_model::{
    Architecture, Classifier, Error, FileDigest, LABELS_FILE, MANIFEST_FILE, MODEL_FILE, Manifest,
    ModelFiles, VOCABULARY_FILE,
};
use proptest::prelude::*;

fn manifest(architecture: Architecture, files: &BTreeMap<String, Vec<u8>>) -> Manifest {
    Manifest {
        format: "miniautoml.model/v1".into(),
        algorithm: "intent-classification".into(),
        architecture,
        framework: "candle".into(),
        code_version: "test".into(),
        hyperparameters: BTreeMap::new(),
        metrics: BTreeMap::new(),
        data: BTreeMap::new(),
        files: files
            .iter()
            .map(|(name, bytes)| (name.clone(), FileDigest::of(bytes)))
            .collect(),
    }
}

fn with_manifest(mut files: BTreeMap<String, Vec<u8>>, architecture: Architecture) -> ModelFiles {
    let manifest = serde_json::to_vec(&manifest(architecture, &files)).unwrap();
    files.insert(MANIFEST_FILE.into(), manifest);
    ModelFiles { files }
}

fn architecture() -> impl Strategy<Value = Architecture> {
    prop_oneof![Just(Architecture::NgramNb), Just(Architecture::EmbeddingBag)]
}

/// A safetensors file with arbitrary tensors: names the networks use or not, dtypes, shapes,
/// and data the right length or not.
fn safetensors() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("ngram.weight".to_string()),
        Just("ngram.bias".to_string()),
        Just("embedding.weight".to_string()),
        Just("fc1.weight".to_string()),
        Just("fc3.bias".to_string()),
        "[a-z.]{1,8}",
    ];
    let dtype = prop_oneof![Just("F32"), Just("F16"), Just("I64"), Just("U8")];
    let tensor = (name, dtype, prop::collection::vec(0usize..6, 0..3), any::<bool>());
    prop::collection::vec(tensor, 0..5).prop_map(|tensors| {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, right_length) in tensors {
            let size = match dtype {
                "F32" => 4,
                "I64" => 8,
                "F16" => 2,
                _ => 1,
            };
            let mut bytes = shape.iter().product::<usize>() * size;
            if !right_length {
                bytes += 1;
            }
            let start = data.len();
            data.extend(std::iter::repeat_n(0x3f, bytes));
            header.insert(
                name,
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend(header);
        file.extend(data);
        file
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..256)
}

proptest! {
    #[test]
    fn any_artifacts_are_verified_or_refused(
        manifest_bytes in bytes(),
        others in prop::collection::btree_map(prop_oneof![Just(MODEL_FILE.to_string()), Just(VOCABULARY_FILE.to_string()), Just(LABELS_FILE.to_string())], bytes(), 0..3),
    ) {
        let mut files = others;
        files.insert(MANIFEST_FILE.into(), manifest_bytes);
        let files = ModelFiles { files };
        if files.verify().is_ok() {
            let _ = Classifier::from_files(&files);
        }
    }

    #[test]
    fn listed_checksums_pass_and_any_change_fails_naming_the_file(
        model in bytes(),
        vocabulary in bytes(),
        labels in bytes(),
        architecture in architecture(),
        which in 0usize..3,
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let files = BTreeMap::from([
            (MODEL_FILE.to_string(), model),
            (VOCABULARY_FILE.to_string(), vocabulary),
            (LABELS_FILE.to_string(), labels),
        ]);
        let intact = with_manifest(files, architecture);
        let verified = intact.verify().unwrap();
        prop_assert_eq!(verified.architecture, architecture);
        let mut changed = intact.clone();
        let name = [MODEL_FILE, VOCABULARY_FILE, LABELS_FILE][which];
        let bytes = changed.files.get_mut(name).unwrap();
        if bytes.is_empty() {
            bytes.push(flip);
        } else {
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
        }
        match changed.verify() {
            Err(Error::Checksum { file, .. }) => prop_assert_eq!(file, name),
            other => prop_assert!(false, "changed {}: {:?}", name, other.map(|m| m.format)),
        }
        changed.files.remove(name);
        prop_assert!(matches!(changed.verify(), Err(Error::Missing(file)) if file == name));
    }

    #[test]
    fn arbitrary_networks_vocabularies_and_labels_are_refused_not_a_panic(
        model in prop_oneof![safetensors(), bytes()],
        vocabulary in prop_oneof![bytes(), Just(b"{}".to_vec()), Just(b"[]".to_vec())],
        labels in prop_oneof![Just(b"[\"joy\",\"anger\"]".to_vec()), Just(b"[]".to_vec()), bytes()],
        architecture in architecture(),
    ) {
        let files = BTreeMap::from([
            (MODEL_FILE.to_string(), model),
            (VOCABULARY_FILE.to_string(), vocabulary),
            (LABELS_FILE.to_string(), labels),
        ]);
        let files = with_manifest(files, architecture);
        if let Err(error) = Classifier::from_files(&files) {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}
