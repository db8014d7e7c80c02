//! Parse-and-encode throughput of the TextIntent format alone (no storage), to tell parser cost
//! from storage cost in `hack/bench-ingest.sh`'s figures:
//!
//!     cargo run --release -p miniautoml-data --example parse_throughput -- FILE.csv

use std::time::Instant;

use miniautoml_data::text_intent::{RecordGuard, encode};

fn main() {
    let path = std::env::args().nth(1).expect("usage: parse_throughput FILE.csv");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let megabytes = data.len() as f64 / 1e6;

    let start = Instant::now();
    let mut guard = RecordGuard::new(data.as_slice());
    let mut buffer = vec![0u8; 64 * 1024];
    while std::io::Read::read(&mut guard, &mut buffer).expect("guard") > 0 {}
    let guard_rate = megabytes / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data.as_slice());
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).expect("csv") {}
    let csv_rate = megabytes / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let encoder = encode(data.as_slice(), 256 << 10, |_| Ok(())).expect("encode");
    let encode_rate = megabytes / start.elapsed().as_secs_f64();

    println!(
        "{megabytes:.0} MB, {} rows",
        encoder.table().statistics().num_examples
    );
    println!("record guard      {guard_rate:8.1} MB/s");
    println!("csv crate only    {csv_rate:8.1} MB/s");
    println!("parse + encode    {encode_rate:8.1} MB/s");
}
