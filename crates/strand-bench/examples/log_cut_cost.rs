//! What receiving log records and cutting them into a block costs, by phase, per record,
//! in-process: decoding the OTLP/protobuf requests, converting them to the record model,
//! encoding the WAL records, dropping the decoded batches; then decoding the head's WAL
//! records, appending to the column builders (JSON attributes, fingerprints), and sorting
//! and encoding the Parquet files. Standard log profile (`strand bench logs`).
//!
//! `cargo run --release -p strand-bench --example log_cut_cost -- [records] [logs.parquet]`
//! (the second argument keeps the encoded file, e.g. for DuckDB's `parquet_metadata`).

use std::time::Instant;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use strand_store::logs::LogBlockBuilder;
use strand_store::wal::LogWalRecord;

fn main() {
    let records: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let mut generator = strand_bench::logs::profile_generator(7);
    let mut requests = Vec::new();
    let mut n = 0;
    while n < records {
        let (bytes, count) = generator.encoded_request(512);
        requests.push(bytes);
        n += count;
    }
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    let decoded: Vec<_> = requests
        .iter()
        .map(|b| <ExportLogsServiceRequest as prost::Message>::decode(b.as_slice()).expect("decodes"))
        .collect();
    let proto = t.elapsed();
    let t = Instant::now();
    let batches: Vec<_> = decoded.into_iter().map(|r| strand_otlp::logs::from_request(r).0).collect();
    let convert = t.elapsed();
    let t = Instant::now();
    let encoded: Vec<_> = batches.iter().map(|b| LogWalRecord::encode_parts(1, "", b)).collect();
    let wal = t.elapsed();
    let t = Instant::now();
    drop(batches);
    let dropped = t.elapsed();
    println!(
        "{n} records: protobuf decode {:.2} µs, to the record model {:.2} µs, WAL encoding {:.2} µs, drop {:.2} µs per record",
        per(proto),
        per(convert),
        per(wal),
        per(dropped)
    );
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
