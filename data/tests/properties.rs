//! Properties of the TextIntent encoder, the snapshot merger and the version hash, over
//! generated input: arbitrary bytes never panic and end in a result or a rejection; every CSV a
//! writer can produce encodes to rows that read back as the same texts and labels; merging
//! commits keeps each row's label names; a version hash is the bit set of its commit ids.
//!
//! `make test` runs 256 cases each; `make fuzz` runs 100,000 (PROPTEST_CASES). A failing case is
//! saved under `data/proptest-regressions/` and replayed first from then on: commit it.

use std::collections::BTreeSet;

use miniautoml_data::{
    text_intent::{EncodeError, SnapshotMerger, encode, read_labels},
    version_hash,
};
use proptest::prelude::*;

/// Encodes `source` whole: the commit's examples.csv and labels.csv, or the error.
fn encoded(source: &[u8]) -> Result<(Vec<u8>, Vec<String>), EncodeError> {
    let mut examples = Vec::new();
    let encoder = encode(source, 1 << 10, |chunk| {
        examples.extend_from_slice(&chunk);
        Ok(())
    })?;
    Ok((examples, encoder.table().labels().to_vec()))
}

/// The rows of an examples.csv: text and label names, through `labels` (id 1 first).
fn rows(examples: &[u8], labels: &[String]) -> Vec<(String, Vec<String>)> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(examples)
        .records()
        .map(|row| {
            let row = row.expect("examples.csv parses");
            let names = row[1]
                .split(';')
                .map(|id| labels[id.parse::<usize>().expect("a numeric id") - 1].clone())
                .collect();
            (row[0].to_string(), names)
        })
        .collect()
}

/// A source CSV as a writer quotes it, and the rows it holds (labels in first-seen order, each
/// once).
fn source(rows: &[(String, Vec<String>)]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for (text, labels) in rows {
        writer.write_record([text.as_str(), &labels.join(";")]).unwrap();
    }
    writer.into_inner().unwrap()
}

/// A row: non-blank text of any characters, 1 to 3 labels from a small alphabet (so labels
/// repeat across rows).
fn row() -> impl Strategy<Value = (String, Vec<String>)> {
    let text = "\\PC{0,24}".prop_filter("non-blank text", |t| !t.trim().is_empty());
    let label = prop::sample::select(vec!["joy", "anger", "sad ness", "optimism, too", "\"q\"", "情感"]);
    (text, prop::collection::vec(label, 1..4)).prop_map(|(text, labels)| {
        let mut unique: Vec<String> = Vec::new();
        for label in labels {
            if !unique.iter().any(|l| l == label) {
                unique.push(label.to_string());
            }
        }
        (text, unique)
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_encoded_or_rejected(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        match encoded(&bytes) {
            Ok((examples, labels)) => {
                // What was accepted reads back.
                let _ = rows(&examples, &labels);
            }
            Err(EncodeError::Rejected(rejection)) => prop_assert!(!rejection.0.is_empty()),
            Err(EncodeError::Io(error)) => prop_assert!(false, "an in-memory source failed to read: {error}"),
        }
    }

    #[test]
    fn every_written_csv_encodes_to_the_same_texts_and_labels(input in prop::collection::vec(row(), 1..16)) {
        let (examples, labels) = encoded(&source(&input)).expect("a well-formed source encodes");
        prop_assert_eq!(rows(&examples, &labels), input);
        // labels.csv as written reads back in id order.
        let labels_csv = miniautoml_data::text_intent::labels_csv(&labels);
        prop_assert_eq!(read_labels(&labels_csv).unwrap(), labels);
    }

    #[test]
    fn merging_commits_keeps_every_rows_labels(
        first in prop::collection::vec(row(), 1..10),
        second in prop::collection::vec(row(), 1..10),
    ) {
        let mut merger = SnapshotMerger::default();
        let mut merged = Vec::new();
        for commit in [&first, &second] {
            let (examples, labels) = encoded(&source(commit)).unwrap();
            let map = merger.add_labels(&labels);
            merger
                .merge(examples.as_slice(), &map, 1 << 10, |chunk| {
                    merged.extend_from_slice(&chunk);
                    Ok(())
                })
                .unwrap();
        }
        let expected: Vec<_> = first.iter().chain(second.iter()).cloned().collect();
        prop_assert_eq!(rows(&merged, merger.table().labels()), expected);
    }

    #[test]
    fn merging_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
        map in prop::collection::vec(1u32..5, 0..4),
    ) {
        let _ = SnapshotMerger::default().merge(bytes.as_slice(), &map, 256, |_| Ok(()));
    }

    #[test]
    fn a_version_hash_is_the_bit_set_of_its_commits(ids in prop::collection::vec(0u32..300, 0..40)) {
        let hash = version_hash(&ids);
        prop_assert!(hash.starts_with("hash"));
        // Order and repeats do not matter.
        let mut reversed = ids.clone();
        reversed.reverse();
        reversed.extend(ids.iter().take(3));
        prop_assert_eq!(version_hash(&reversed), hash.clone());
        // The Base64 after "hash" is the bit set, little-endian within each byte.
        let bytes = base64_decode(&hash[4..]);
        let set: BTreeSet<u32> = ids.iter().copied().collect();
        let decoded: BTreeSet<u32> = (0..bytes.len() as u32 * 8)
            .filter(|bit| bytes[(*bit / 8) as usize] & (1 << (bit % 8)) != 0)
            .collect();
        prop_assert_eq!(decoded, set);
        // No trailing zero byte, as Java's BitSet.toByteArray().
        prop_assert!(bytes.last().is_none_or(|last| *last != 0));
    }
}

/// Standard Base64 with padding, decoded (the test's own, to check the hash independently).
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET
            .iter()
            .position(|a| *a == byte)
            .expect("a Base64 character") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}
