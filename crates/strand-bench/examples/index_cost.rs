//! Measures the search index's build cost per span on the bench traffic profile.
use std::time::Instant;
fn main() {
    let mut g = strand_bench::ingest::Generator::new(1, 10, 4, 0);
    let mut batches = Vec::new();
    for _ in 0..400 {
        let (req, _, _) = g.request(500);
        batches.push(strand_otlp::from_request(req).0);
    }
    let n: usize = batches.iter().map(|b| b.span_count()).sum();
    let t = Instant::now();
    let mut b = strand_store::index::IndexBuilder::new();
    for batch in &batches {
        b.add_batch(batch, 1);
    }
    let add = t.elapsed();
    let t = Instant::now();
    let idx = b.finish();
    let fin = t.elapsed();
    let t = Instant::now();
    let enc = idx.encode().expect("encode");
    let encd = t.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "{n} spans: add {:.2} us/span, finish {:.2} us/span, encode {:.2} us/span, {:.1} B/span",
        per(add),
        per(fin),
        per(encd),
        enc.len() as f64 / n as f64
    );
}
