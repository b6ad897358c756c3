//! `strand bench sampling`: the tail sampler's memory and CPU per span, in-process.
//!
//! Generates the standard traffic profile (the one `strand bench ingest` sends), converts
//! it to the span model once, then times the sampler's own work on it: checking and
//! encoding spans ([`Prepared::new`]), inserting them into the buffer, encoding the
//! pending-log record, and deciding. Memory per buffered span is measured twice: the
//! buffer's own byte count and the growth of the process's resident memory. Filling the
//! buffer from empty touches fresh memory, so its timings include the kernel zeroing
//! pages; the steady-state figure (a buffer that stays the same size, as in a running
//! server) does not.

use std::time::Instant;

use clap::Args;
use strand_core::SpanBatch;
use strand_sampling::red::{RedLimits, RedMetrics};
use strand_sampling::{Prepared, SamplingConfig, TraceBuffer};

use crate::ingest::Generator;

/// Options of `strand bench sampling`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Spans to buffer.
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: usize,
    /// Spans per trace.
    #[arg(long, default_value_t = 10)]
    pub spans_per_trace: usize,
    /// Spans per batch.
    #[arg(long, default_value_t = 512)]
    pub batch_spans: usize,
    /// Policy shorthand (as `--sampling`).
    #[arg(long, default_value = "errors-plus=5%")]
    pub policy: String,
}

/// The process's resident memory, from `/proc/self/statm`.
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Runs the benchmark and prints its report.
pub fn run(args: SamplingArgs) -> anyhow::Result<()> {
    let cfg = SamplingConfig {
        policies: SamplingConfig::shorthand(&args.policy).map_err(anyhow::Error::msg)?,
        max_buffer_bytes: strand_core::units::ByteSize(64 << 30),
        max_trace_bytes: strand_core::units::ByteSize(1 << 30),
        ..SamplingConfig::default()
    };
    let mut gen_ = Generator::new(7, args.spans_per_trace, 4, 0);
    let mut batches: Vec<SpanBatch> = Vec::new();
    let mut total = 0;
    while total < args.spans {
        let (req, _, n) = gen_.request(args.batch_spans);
        let (batch, _) = strand_otlp::from_request(req);
        batches.push(batch);
        total += n;
    }
    let mut buffer = TraceBuffer::new(&cfg).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let preparer = buffer.preparer();
    let now = strand_core::Clock::now_unix_nano(&strand_core::SystemClock);

    // 1. Check + encode (outside the lock) and insert, with RSS before and after.
    let rss_before = rss_bytes();
    let t = Instant::now();
    let mut prepared_time = 0.0;
    for b in &batches {
        let p0 = Instant::now();
        let p = Prepared::new(b, &preparer);
        prepared_time += p0.elapsed().as_secs_f64();
        buffer.insert(&p, now, 1);
    }
    let insert_total = t.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    let spans = buffer.spans();
    let accounted = buffer.bytes() as f64 / spans as f64;

    // 2. The pending-log record of each batch (prepared outside the timer).
    let mut record_total = 0.0;
    let mut log_bytes = 0usize;
    for b in &batches {
        let p = Prepared::new(b, &preparer);
        let t = Instant::now();
        log_bytes += p.to_record(now).len();
        record_total += t.elapsed().as_secs_f64();
    }

    // 3. Decide every trace.
    let traces = buffer.traces();
    let t = Instant::now();
    let decided = buffer.decide_all(now + 60_000_000_000);
    let decide_total = t.elapsed().as_secs_f64();
    let kept_spans: usize = decided.iter().filter(|d| d.keep).map(|d| d.span_count).sum();
    let kept = decided.iter().filter(|d| d.keep).count();
    drop(decided);

    // 4. Steady state, as in a running server: every batch is prepared and inserted and
    // due traces are decided, on a simulated clock where the root delay spans 200 batches,
    // so about 200 batches of spans stay buffered and memory is reused rather than grown.
    let mut buffer = TraceBuffer::new(&cfg).map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let preparer = buffer.preparer();
    let step = cfg.decision_delay.0.as_nanos() as u64 / 200;
    let warm = batches.len().min(400);
    let mut steady_spans = 0usize;
    let mut steady_time = 0.0;
    for (k, b) in batches.iter().enumerate() {
        let clock = now + k as u64 * step;
        let t = Instant::now();
        let p = Prepared::new(b, &preparer);
        buffer.insert(&p, clock, 1);
        drop(buffer.decide_due(clock));
        if k >= warm {
            steady_time += t.elapsed().as_secs_f64();
            steady_spans += b.span_count();
        }
    }

    // 5. RED metrics and service graph over the same spans.
    let red = RedMetrics::new(RedLimits::default(), now);
    let t = Instant::now();
    for b in &batches {
        red.observe(b, now);
    }
    let red_total = t.elapsed().as_secs_f64();

    let us = |s: f64| s * 1e6 / spans as f64;
    println!(
        "strand bench sampling: {spans} spans in {traces} traces ({} per trace), policy {}",
        args.spans_per_trace, args.policy
    );
    println!("memory per buffered span:");
    println!("  accounted by the buffer        {accounted:8.1} B");
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        println!("  process RSS growth             {:8.1} B", a.abs_diff(b) as f64 / spans as f64);
    }
    println!("CPU per span (one core):");
    println!("  check + encode (Prepared)      {:8.3} µs", us(prepared_time));
    println!("  buffer insert                  {:8.3} µs", us(insert_total - prepared_time));
    println!(
        "  decide (all traces)            {:8.3} µs   ({:.0} traces/s)",
        us(decide_total),
        traces as f64 / decide_total
    );
    println!("  sampler total                  {:8.3} µs", us(insert_total + decide_total));
    println!(
        "  steady state (prepare, insert, decide due; {} spans buffered) {:6.3} µs",
        buffer.spans(),
        steady_time * 1e6 / steady_spans.max(1) as f64
    );
    println!(
        "  pending-log record encoding    {:8.3} µs   ({:.0} B/span)",
        us(record_total),
        log_bytes as f64 / spans as f64
    );
    println!("  RED metrics + service graph    {:8.3} µs", us(red_total));
    println!(
        "kept {kept} of {traces} traces ({kept_spans} spans, {:.2} %)",
        kept as f64 * 100.0 / traces as f64
    );
    Ok(())
}
