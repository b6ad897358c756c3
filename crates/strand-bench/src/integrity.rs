//! `strand bench integrity`: how well and how cheaply chain integrity is analysed,
//! in-process.
//!
//! 1. Accuracy on labelled traffic: submissions from the generator of
//!    [`strand_integrity::scenario`] (gateway, user-service over HTTP, epro-service and
//!    data-service over gRPC, a NATS hop, a detached SMS task), one in `--break-every` broken
//!    at a known place (cycling through every kind of break), the rest complete with every
//!    legitimate pattern (async task outliving its request, a consumer linking rather than
//!    continuing, an orphan whose context was not sampled, uninstrumented callees). Reports
//!    recall per kind (found on the right trace and edge, naming the other half) and the
//!    share of complete submissions with any finding.
//! 2. Cost: CPU per span of the analyser (seeing every span, settling, analysing, matching,
//!    counting edges) on that traffic and on `bench ingest`'s standard profile, with the ratio
//!    to the ingest CPU per span `bench ingest` measures (given with `--ingest-us-per-span`).

use std::collections::BTreeMap;
use std::time::Instant;

use clap::Args;
use strand_core::SpanBatch;
use strand_integrity::observer::{Observer, ObserverConfig};
use strand_integrity::scenario::{Shape, Submission, score, submission};

use crate::ingest::Generator;

const SECOND: u64 = 1_000_000_000;

/// Options of `strand bench integrity`.
#[derive(Args, Debug, Clone)]
pub struct IntegrityArgs {
    /// Submissions of the labelled traffic (each 12–15 spans in one or two traces).
    #[arg(long, default_value_t = 20_000)]
    pub submissions: u64,
    /// One submission in this many is broken (cycling through the kinds of break).
    #[arg(long, default_value_t = 4)]
    pub break_every: u64,
    /// Microseconds between submissions (500: 2,000 submissions a second).
    #[arg(long, default_value_t = 500)]
    pub gap_us: u64,
    /// Spans of the standard profile (as `bench ingest` sends, 20,000 a second) to time the
    /// analyser on, generated as they are fed.
    #[arg(long, default_value_t = 10_000_000)]
    pub spans: usize,
    /// Server CPU per span of ingest, as `bench ingest` reported it on this machine (all-in
    /// figure), for the cost ratio.
    #[arg(long, default_value_t = 13.5)]
    pub ingest_us_per_span: f64,
}

fn observer() -> Observer {
    // The server's defaults, with room for the standard profile's steady state.
    Observer::new(ObserverConfig { max_spans: 5_000_000, ..ObserverConfig::default() })
}

/// What [`feed`] returns: the observer, each trace's last findings, the CPU seconds in all
/// and in seeing spans, and the most spans held at once.
type Fed = (Observer, BTreeMap<strand_core::TraceId, Vec<strand_core::Finding>>, f64, f64, usize);

/// Feeds `batches` (in receive order) to a fresh observer, settling once a simulated second
/// and at the end; returns the observer, each trace's last findings, the CPU seconds spent
/// and the most spans held at once.
fn feed(batches: &[(u64, &SpanBatch)]) -> Fed {
    let mut obs = observer();
    let mut findings = BTreeMap::new();
    let mut held = 0;
    let mut seeing = 0.0;
    let start = Instant::now();
    let mut next_tick = batches.first().map_or(0, |(at, _)| at + SECOND);
    for (at, batch) in batches {
        while *at >= next_tick {
            for r in obs.tick(next_tick) {
                findings.insert(r.trace_id, r.findings);
            }
            held = held.max(obs.held().2);
            next_tick += SECOND;
        }
        let t = Instant::now();
        obs.observe(batch, *at);
        seeing += t.elapsed().as_secs_f64();
    }
    let end = batches.last().map_or(0, |(at, _)| *at) + 700 * SECOND;
    while next_tick <= end {
        for r in obs.tick(next_tick) {
            findings.insert(r.trace_id, r.findings);
        }
        next_tick += SECOND;
    }
    (obs, findings, start.elapsed().as_secs_f64(), seeing, held)
}

/// Runs the benchmark and prints its report.
pub fn run(args: IntegrityArgs) -> anyhow::Result<()> {
    let breaks: Vec<Shape> = Shape::ALL.into_iter().filter(|s| !s.is_complete()).collect();
    let completes: Vec<Shape> = Shape::ALL.into_iter().filter(|s| s.is_complete()).collect();
    let t0 = 1_700_000_000 * SECOND;
    let every = args.break_every.max(1);
    let subs: Vec<Submission> = (0..args.submissions)
        .map(|n| {
            let shape = if n % every == every - 1 {
                breaks[(n / every) as usize % breaks.len()]
            } else {
                completes[n as usize % completes.len()]
            };
            submission(n, t0 + n * args.gap_us * 1000, shape)
        })
        .collect();
    let mut batches: Vec<(u64, &SpanBatch)> =
        subs.iter().flat_map(|s| s.batches.iter().map(|(at, b)| (*at, b))).collect();
    batches.sort_by_key(|(at, _)| *at);
    let labelled_spans: usize = batches.iter().map(|(_, b)| b.span_count()).sum();
    let (obs, findings, secs, seeing, held) = feed(&batches);
    let findings: std::collections::HashMap<_, _> = findings.into_iter().collect();
    let s = score(&subs, &findings);

    // The standard profile, 20,000 spans (~2,000 traces) a second, generated as it goes:
    // long enough (by default 500 simulated seconds) for the analyser to reach its steady
    // state, where traces are dropped as fast as they arrive. Only the analyser's calls are
    // timed.
    let mut gen_ = Generator::new(7, 10, 4, 0);
    let per_batch = 512 * SECOND / 20_000;
    let rss_before = crate::sampling::rss_bytes();
    let mut std_obs = observer();
    let (mut total, mut std_secs, mut std_seeing, mut std_held, mut batches_sent) = (0, 0.0, 0.0, 0, 0u64);
    let mut next_tick = t0 + SECOND;
    while total < args.spans {
        let (req, _, n) = gen_.request(512);
        let batch = strand_otlp::from_request(req).0;
        let at = t0 + batches_sent * per_batch;
        batches_sent += 1;
        while at >= next_tick {
            let t = Instant::now();
            drop(std_obs.tick(next_tick));
            std_secs += t.elapsed().as_secs_f64();
            std_held = std_held.max(std_obs.held().2);
            next_tick += SECOND;
        }
        let t = Instant::now();
        std_obs.observe(&batch, at);
        let dt = t.elapsed().as_secs_f64();
        std_secs += dt;
        std_seeing += dt;
        total += n;
    }

    let rss_growth = crate::sampling::rss_bytes().zip(rss_before).map(|(a, b)| a.saturating_sub(b));
    let us = |secs: f64, spans: usize| secs * 1e6 / spans.max(1) as f64;
    println!(
        "strand bench integrity: {} submissions ({labelled_spans} spans), one in {every} broken",
        args.submissions
    );
    println!("recall (found on the right trace and edge, naming the other half):");
    for (kind, (found, expected)) in &s.found {
        println!(
            "  {:<26} {found:>6} / {expected:<6} {:6.2} %",
            kind.as_str(),
            *found as f64 * 100.0 / (*expected).max(1) as f64
        );
    }
    println!("  {:<26} {:>22.2} %", "all kinds", s.recall() * 100.0);
    println!(
        "  unrooted work whose true request is among its (low-confidence) candidates: {} of {}",
        s.candidates.0, s.candidates.1
    );
    println!(
        "false alarms: {} of {} complete submissions ({:.3} %); broken ones with extra findings: {}",
        s.false_alarms,
        s.complete,
        s.false_alarm_rate() * 100.0,
        s.extra_findings
    );
    for note in s.notes.iter().take(5) {
        println!("  e.g. {note}");
    }
    let labelled_us = us(secs, labelled_spans);
    let standard_us = us(std_secs, total);
    println!("CPU per span (one core; seeing, settling, analysing, matching, counting):");
    println!(
        "  labelled traffic   {labelled_us:7.3} µs  (seeing {:.3} µs; {} traces analysed, at most {held} spans held)",
        us(seeing, labelled_spans),
        obs.traces_analysed
    );
    println!(
        "  standard profile   {standard_us:7.3} µs  (seeing {:.3} µs; {} traces analysed, at most {std_held} spans held)",
        us(std_seeing, total),
        std_obs.traces_analysed
    );
    if let Some(growth) = rss_growth {
        println!(
            "memory: {} B per span held ({} spans held at most; the process's RSS growth over the standard run, \
             an upper bound; a span's own record is {} B)",
            growth / std_held.max(1) as u64,
            std_held,
            std::mem::size_of::<strand_integrity::span::Lite>()
        );
    }
    println!(
        "  share of ingest CPU ({:.1} µs/span, bench ingest): {:.1} % (labelled), {:.1} % (standard)",
        args.ingest_us_per_span,
        labelled_us * 100.0 / args.ingest_us_per_span,
        standard_us * 100.0 / args.ingest_us_per_span
    );
    Ok(())
}
