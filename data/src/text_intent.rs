//! TextIntent data, as the original system stored it: CSV without header, column 0 the text,
//! column 1 the labels separated by `;`. A commit's files have every field quoted and no header:
//! `examples.csv` rows `"text","1;2"` (label ids) and `labels.csv` rows `"id","label"`, label ids
//! numbered from 1 in order of first appearance.
//!
//! Everything here is synchronous and streaming: memory is bounded by the longest record
//! ([`MAX_RECORD_BYTES`]), never by the file.

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Read},
};

use miniautoml_api::DatasetStatistics;

/// The longest record accepted (a row, quoted newlines included).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// How many labels `per_label` lists in a status (the full table is stored beside the data).
pub const MAX_STATUS_LABELS: usize = 64;

/// Why a file was rejected, naming the line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// Passes bytes through while checking record boundaries: a record (quoted newlines included)
/// longer than [`MAX_RECORD_BYTES`] or a quote left open at the end is an error naming the line,
/// before the CSV parser would buffer it.
pub struct RecordGuard<R> {
    inner: R,
    in_quotes: bool,
    record_bytes: usize,
    line: u64,
    record_line: u64,
    total: u64,
}

impl<R: Read> RecordGuard<R> {
    /// Guards `inner`.
    pub fn new(inner: R) -> Self {
        RecordGuard {
            inner,
            in_quotes: false,
            record_bytes: 0,
            line: 1,
            record_line: 1,
            total: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.total
    }
}

fn rejected(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Rejection(message))
}

impl<R: Read> Read for RecordGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if self.in_quotes {
                return Err(rejected(format!(
                    "line {}: unterminated quoted field",
                    self.record_line
                )));
            }
            return Ok(0);
        }
        self.total += n as u64;
        // Only quotes and newlines matter: jump between them.
        let data = &buf[..n];
        let mut last = 0;
        for at in memchr::memchr2_iter(b'"', b'\n', data) {
            self.record_bytes += at + 1 - last;
            last = at + 1;
            if data[at] == b'"' {
                self.in_quotes = !self.in_quotes;
            } else {
                self.line += 1;
                if !self.in_quotes {
                    self.check_length()?;
                    self.record_bytes = 0;
                    self.record_line = self.line;
                }
            }
        }
        self.record_bytes += n - last;
        self.check_length()?;
        Ok(n)
    }
}

impl<R> RecordGuard<R> {
    fn check_length(&self) -> io::Result<()> {
        if self.record_bytes > MAX_RECORD_BYTES {
            return Err(rejected(format!(
                "line {}: record longer than {} bytes{}",
                self.record_line,
                MAX_RECORD_BYTES,
                if self.in_quotes {
                    " (a quote left open?)"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }
}

/// Turns source rows into a commit's rows, numbering labels and counting.
#[derive(Debug, Default)]
pub struct IntentEncoder {
    table: LabelTable,
    /// The current row's ids, reused to spare an allocation per row.
    row_ids: Vec<u32>,
}

/// Labels numbered from 1 in order of first appearance, with example counts: what a commit's
/// encoder and a snapshot's merger both keep.
#[derive(Debug, Default)]
pub struct LabelTable {
    labels: Vec<String>,
    ids: HashMap<String, u32>,
    per_label: Vec<u64>,
    examples: u64,
}

impl LabelTable {
    /// The id of `label`, numbering it next when new.
    pub fn id(&mut self, label: &str) -> u32 {
        // Label sets are small: a scan beats hashing until they are not.
        let known = if self.labels.len() <= 16 {
            self.labels.iter().position(|l| l == label).map(|i| i as u32 + 1)
        } else {
            self.ids.get(label).copied()
        };
        known.unwrap_or_else(|| {
            self.labels.push(label.to_string());
            self.per_label.push(0);
            let id = self.labels.len() as u32;
            self.ids.insert(label.to_string(), id);
            id
        })
    }

    /// Counts one example of each of `ids`.
    fn count(&mut self, ids: &[u32]) {
        for &id in ids {
            self.per_label[id as usize - 1] += 1;
        }
        self.examples += 1;
    }

    /// Labels in id order (id = index + 1).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// `labels.csv`.
    pub fn labels_csv(&self) -> Vec<u8> {
        labels_csv(&self.labels)
    }

    /// Examples per label, every label.
    pub fn per_label(&self) -> BTreeMap<String, u64> {
        self.labels
            .iter()
            .cloned()
            .zip(self.per_label.iter().copied())
            .collect()
    }

    /// The statistics a status shows.
    pub fn statistics(&self) -> DatasetStatistics {
        statistics(self.examples, &self.labels, &self.per_label)
    }
}

/// Appends `text` as a quoted CSV field.
fn quoted(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    let mut rest = text;
    while let Some(at) = memchr::memchr(b'"', rest) {
        out.extend_from_slice(&rest[..=at]);
        out.push(b'"');
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Appends `"1;2"`: ids as a quoted, `;`-separated field.
fn quoted_ids(out: &mut Vec<u8>, ids: &[u32]) {
    let mut digits = itoa::Buffer::new();
    out.push(b'"');
    for (index, id) in ids.iter().enumerate() {
        if index > 0 {
            out.push(b';');
        }
        out.extend_from_slice(digits.format(*id).as_bytes());
    }
    out.push(b'"');
}

/// One source record (starting on `line`), checked: its text and its labels (split on `;`, in
/// order). The one reading of a raw TextIntent row, for ingestion and for scoring a model on a
/// file alike.
pub fn row(line: u64, record: &csv::ByteRecord) -> Result<(&str, Vec<&str>), Rejection> {
    if record.len() != 2 {
        return Err(Rejection(format!(
            "line {line}: expected 2 columns, found {}",
            record.len()
        )));
    }
    let text =
        std::str::from_utf8(&record[0]).map_err(|_| Rejection(format!("line {line}: text is not UTF-8")))?;
    let labels = std::str::from_utf8(&record[1])
        .map_err(|_| Rejection(format!("line {line}: labels are not UTF-8")))?;
    if text.trim().is_empty() {
        return Err(Rejection(format!("line {line}: empty text")));
    }
    if labels.trim().is_empty() {
        return Err(Rejection(format!("line {line}: no labels")));
    }
    let split: Vec<&str> = labels.split(';').collect();
    if split.iter().any(|label| label.is_empty()) {
        return Err(Rejection(format!("line {line}: empty label in {labels:?}")));
    }
    Ok((text, split))
}

/// Every row of a raw TextIntent source (the line it starts on, its text and labels), checked
/// as ingestion checks it: for scoring a model on a file.
pub fn rows<R: Read>(source: R) -> Result<Vec<(u64, String, Vec<String>)>, EncodeError> {
    let mut reader = reader(source);
    let mut record = csv::ByteRecord::new();
    let mut rows = Vec::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(rows),
            Ok(true) => {
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                let (text, labels) = row(line, &record).map_err(EncodeError::Rejected)?;
                let labels = labels.into_iter().map(str::to_string).collect();
                rows.push((line, text.to_string(), labels));
            }
            Err(error) => {
                return Err(match rejection(&error) {
                    Some(rejection) => EncodeError::Rejected(rejection),
                    None => EncodeError::Io(io::Error::other(error.to_string())),
                });
            }
        }
    }
}

impl IntentEncoder {
    /// Checks one source record (starting on `line`) and appends its commit row to `out`.
    pub fn push(&mut self, line: u64, record: &csv::ByteRecord, out: &mut Vec<u8>) -> Result<(), Rejection> {
        let (text, labels) = row(line, record)?;
        self.row_ids.clear();
        for label in labels {
            let id = self.table.id(label);
            if !self.row_ids.contains(&id) {
                self.row_ids.push(id);
            }
        }
        self.table.count(&self.row_ids);
        quoted(out, text.as_bytes());
        out.push(b',');
        quoted_ids(out, &self.row_ids);
        out.push(b'\n');
        Ok(())
    }

    /// The labels and counts so far.
    pub fn table(&self) -> &LabelTable {
        &self.table
    }
}

/// `labels.csv` for labels in id order.
pub fn labels_csv(labels: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, label) in labels.iter().enumerate() {
        quoted(&mut out, (index + 1).to_string().as_bytes());
        out.push(b',');
        quoted(&mut out, label.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Statistics for a status: `per_label` keeps the first [`MAX_STATUS_LABELS`] labels.
pub fn statistics(examples: u64, labels: &[String], per_label: &[u64]) -> DatasetStatistics {
    DatasetStatistics {
        num_examples: examples,
        num_labels: labels.len() as u32,
        per_label: labels
            .iter()
            .cloned()
            .zip(per_label.iter().copied())
            .take(MAX_STATUS_LABELS)
            .collect(),
        rejected_rows: 0,
    }
}

/// A CSV reader over `source` with the guard and the original's dialect.
pub fn reader<R: Read>(source: R) -> csv::Reader<RecordGuard<R>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(RecordGuard::new(source))
}

/// The rejection inside a CSV or I/O error, or `None` for a plain I/O failure.
pub fn rejection(error: &csv::Error) -> Option<Rejection> {
    match error.kind() {
        csv::ErrorKind::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<Rejection>())
            .cloned(),
        csv::ErrorKind::Utf8 { pos, .. } => Some(Rejection(format!(
            "line {}: not UTF-8",
            pos.as_ref().map(|p| p.line()).unwrap_or(0)
        ))),
        _ => Some(Rejection(format!("malformed CSV: {error}"))),
    }
}

/// Encodes a whole source, as ingestion does (streaming: memory stays at about `chunk`): the
/// commit's rows, handed to `emit` whenever `chunk` bytes are buffered.
pub fn encode<R: Read>(
    source: R,
    chunk: usize,
    mut emit: impl FnMut(Vec<u8>) -> io::Result<()>,
) -> Result<IntentEncoder, EncodeError> {
    let mut reader = reader(source);
    let mut encoder = IntentEncoder::default();
    let mut record = csv::ByteRecord::new();
    let mut out = Vec::with_capacity(chunk + 64 * 1024);
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                encoder
                    .push(line, &record, &mut out)
                    .map_err(EncodeError::Rejected)?;
                if out.len() >= chunk {
                    emit(std::mem::replace(
                        &mut out,
                        Vec::with_capacity(chunk + MAX_RECORD_BYTES),
                    ))
                    .map_err(EncodeError::Io)?;
                }
            }
            Err(error) => {
                return Err(match rejection(&error) {
                    Some(rejection) => EncodeError::Rejected(rejection),
                    None => EncodeError::Io(io::Error::other(error.to_string())),
                });
            }
        }
    }
    if encoder.table.examples == 0 {
        let empty = if reader.get_ref().bytes_read() == 0 {
            "the file is empty"
        } else {
            "the file has no rows"
        };
        return Err(EncodeError::Rejected(Rejection(empty.into())));
    }
    if !out.is_empty() {
        emit(out).map_err(EncodeError::Io)?;
    }
    Ok(encoder)
}

/// Why encoding stopped.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The data is malformed.
    #[error("{0}")]
    Rejected(Rejection),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(io::Error),
}

/// Reads a commit's `labels.csv` (ids from 1, in order).
pub fn read_labels(bytes: &[u8]) -> Result<Vec<String>, Rejection> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes);
    let mut labels = Vec::new();
    for (index, row) in reader.records().enumerate() {
        let row = row.map_err(|e| Rejection(format!("labels.csv: {e}")))?;
        let id: usize = row
            .get(0)
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| Rejection(format!("labels.csv row {}: bad id", index + 1)))?;
        if id != index + 1 {
            return Err(Rejection(format!(
                "labels.csv row {}: id {id} out of order",
                index + 1
            )));
        }
        labels.push(row.get(1).unwrap_or_default().to_string());
    }
    Ok(labels)
}

/// Rewrites the label ids of commit rows while merging commits into a snapshot.
#[derive(Debug, Default)]
pub struct SnapshotMerger {
    table: LabelTable,
}

impl SnapshotMerger {
    /// The global ids of one commit's labels (index = local id - 1), new names numbered next.
    pub fn add_labels(&mut self, commit_labels: &[String]) -> Vec<u32> {
        commit_labels.iter().map(|label| self.table.id(label)).collect()
    }

    /// Copies the rows of one commit's `examples.csv` to `emit`, ids remapped through `map`.
    pub fn merge<R: Read>(
        &mut self,
        examples: R,
        map: &[u32],
        chunk: usize,
        mut emit: impl FnMut(Vec<u8>) -> io::Result<()>,
    ) -> Result<(), EncodeError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .buffer_capacity(64 * 1024)
            .from_reader(examples);
        let mut record = csv::ByteRecord::new();
        let mut out = Vec::with_capacity(chunk + 64 * 1024);
        let mut global: Vec<u32> = Vec::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let bad = || EncodeError::Rejected(Rejection("malformed row".into()));
                    if record.len() != 2 {
                        return Err(bad());
                    }
                    quoted(&mut out, &record[0]);
                    out.push(b',');
                    let ids = std::str::from_utf8(&record[1]).map_err(|_| bad())?;
                    global.clear();
                    for local in ids.split(';') {
                        let local: usize = local.parse().map_err(|_| bad())?;
                        // A map not made by add_labels may name ids the table lacks.
                        let known = 1..=self.table.labels.len() as u32;
                        let id = map
                            .get(local.wrapping_sub(1))
                            .copied()
                            .filter(|id| known.contains(id))
                            .ok_or_else(bad)?;
                        global.push(id);
                    }
                    self.table.count(&global);
                    quoted_ids(&mut out, &global);
                    out.push(b'\n');
                    if out.len() >= chunk {
                        emit(std::mem::replace(
                            &mut out,
                            Vec::with_capacity(chunk + MAX_RECORD_BYTES),
                        ))
                        .map_err(EncodeError::Io)?;
                    }
                }
                Err(error) => return Err(EncodeError::Io(io::Error::other(error.to_string()))),
            }
        }
        if !out.is_empty() {
            emit(out).map_err(EncodeError::Io)?;
        }
        Ok(())
    }

    /// The labels and counts so far.
    pub fn table(&self) -> &LabelTable {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(source: &[u8]) -> Result<(String, String, DatasetStatistics), String> {
        let mut out = Vec::new();
        let encoder = encode(source, 7, |chunk| {
            out.extend(chunk);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok((
            String::from_utf8(out).unwrap(),
            String::from_utf8(encoder.table().labels_csv()).unwrap(),
            encoder.table().statistics(),
        ))
    }

    #[test]
    fn rows_become_quoted_rows_with_label_ids_in_order_of_appearance() {
        let source = b"\"I'm \"\"so\"\" happy\",joy\nhello,greeting;joy\n\"multi\nline\",\"anger\"\n";
        let (examples, labels, stats) = run(source).unwrap();
        assert_eq!(
            examples,
            "\"I'm \"\"so\"\" happy\",\"1\"\n\"hello\",\"2;1\"\n\"multi\nline\",\"3\"\n"
        );
        assert_eq!(labels, "\"1\",\"joy\"\n\"2\",\"greeting\"\n\"3\",\"anger\"\n");
        assert_eq!((stats.num_examples, stats.num_labels), (3, 3));
        assert_eq!(stats.per_label["joy"], 2);
    }

    #[test]
    fn bad_input_is_rejected_with_the_line() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "the file is empty"),
            (b"\n\n", "the file has no rows"),
            (
                b"a,b\nc,d\nonly one column\n",
                "line 3: expected 2 columns, found 1",
            ),
            (b"a,b,c\n", "line 1: expected 2 columns, found 3"),
            (b"a,b\n\xff\xfe,joy\n", "line 2: text is not UTF-8"),
            (b"a,b\n  ,joy\n", "line 2: empty text"),
            (b"a,\n", "line 1: no labels"),
            (b"a,joy;;sad\n", "line 1: empty label in \"joy;;sad\""),
            (
                b"a,b\n\"open quote,joy\nmore\n",
                "line 2: unterminated quoted field",
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(
                run(source).unwrap_err(),
                *expected,
                "{}",
                String::from_utf8_lossy(source)
            );
        }
        let long = vec![b'x'; MAX_RECORD_BYTES + 10];
        assert!(run(&long).unwrap_err().starts_with("line 1: record longer than"));
    }

    #[test]
    fn snapshots_remap_labels_across_commits() {
        let mut merger = SnapshotMerger::default();
        let first = merger.add_labels(&["joy".into(), "anger".into()]);
        let second = merger.add_labels(&["sad".into(), "joy".into()]);
        assert_eq!(first, [1, 2]);
        assert_eq!(second, [3, 1]);
        let mut out = Vec::new();
        let mut emit = |chunk: Vec<u8>| {
            out.extend(chunk);
            Ok(())
        };
        merger
            .merge(&b"\"a\",\"1\"\n\"b\",\"2;1\"\n"[..], &first, 1 << 20, &mut emit)
            .unwrap();
        merger
            .merge(&b"\"c\",\"1;2\"\n"[..], &second, 1 << 20, &mut emit)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\",\"1\"\n\"b\",\"2;1\"\n\"c\",\"3;1\"\n"
        );
        let stats = merger.table().statistics();
        assert_eq!((stats.num_examples, stats.num_labels), (3, 3));
        assert_eq!(stats.per_label["joy"], 3);
        assert_eq!(
            read_labels(&merger.table().labels_csv()).unwrap(),
            ["joy", "anger", "sad"]
        );
    }

    #[test]
    fn tweet_emotion_part_1_has_2963_examples_and_3_labels() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/tweet_emotion/tweet_emotion_part1.csv"
        );
        let file = std::fs::File::open(path).unwrap();
        let encoder = encode(file, 1 << 20, |_| Ok(())).unwrap();
        let stats = encoder.table().statistics();
        assert_eq!((stats.num_examples, stats.num_labels), (2963, 3));
    }
}
