//! What cutting log records into a block costs, by phase, per record, in-process: decoding
//! the head's WAL records, appending to the column builders (JSON attributes, fingerprints),
//! and sorting and encoding the Parquet files. Standard log profile (`strand bench logs`).
//!
//! `cargo run --release -p strand-bench --example log_cut_cost -- [records] [logs.parquet]`
//! (the second argument keeps the encoded file, e.g. for DuckDB's `parquet_metadata`).

use std::time::Instant;

use strand_store::logs::LogBlockBuilder;
use strand_store::wal::LogWalRecord;

fn main() {
    let records: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let mut generator = strand_bench::logs::profile_generator(7);
    let mut encoded = Vec::new();
    let mut n = 0;
    while n < records {
        let (batch, count) = generator.batch(512);
        encoded.push(LogWalRecord::encode_parts(1, "", &batch));
        n += count;
    }
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    let batches: Vec<_> =
        encoded.iter().map(|e| LogWalRecord::decode_framed(e).expect("decodes").batch).collect();
    let decode = t.elapsed();
    let t = Instant::now();
    let mut builder = LogBlockBuilder::default();
    for b in &batches {
        builder.append_batch(b).expect("append");
    }
    let append = t.elapsed();
    let t = Instant::now();
    let out = builder.finish().expect("finish");
    let finish = t.elapsed();
    if let Some(path) = std::env::args().nth(2) {
        std::fs::write(path, &out.logs).expect("write the file");
    }
    println!(
        "{n} records: decode {:.2} µs, append {:.2} µs, sort+encode {:.2} µs per record; {:.1} bytes per record",
        per(decode),
        per(append),
        per(finish),
        (out.logs.len() + out.traces.len() + out.grams.len()) as f64 / n as f64
    );
}
