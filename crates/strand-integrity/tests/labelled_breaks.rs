//! Every labelled break of the generator is found on the right trace and edge, naming the
//! other half; complete submissions with every legitimate pattern raise nothing; edge health
//! counts each call once.

use strand_integrity::observer::{Observer, ObserverConfig};
use strand_integrity::scenario::{Shape, replay, score, submissions};

const SECOND: u64 = 1_000_000_000;

/// The server's default settings.
fn observer() -> Observer {
    Observer::new(ObserverConfig::default())
}

#[test]
fn every_break_is_found_and_complete_traces_raise_nothing() {
    // Ten of each shape, interleaved, 20 ms apart: matches must not mix neighbours up.
    let subs = submissions(100, 1_700_000_000 * SECOND, 20_000_000, &Shape::ALL);
    let mut obs = observer();
    let findings = replay(&subs, &mut obs, 700 * SECOND);
    let s = score(&subs, &findings);
    assert_eq!(s.recall(), 1.0, "{:#?}", s);
    assert_eq!(s.false_alarms, 0, "{:#?}", s.notes);
    assert_eq!(s.extra_findings, 0, "{:#?}", s.notes);
    assert_eq!(s.complete, 30);
    assert_eq!(s.found.len(), 7, "every kind was exercised: {:?}", s.found);
}

#[test]
fn edge_health_counts_each_call_once() {
    let subs = submissions(100, 1_700_000_000 * SECOND, 20_000_000, &Shape::ALL);
    let mut obs = observer();
    replay(&subs, &mut obs, 700 * SECOND);
    let edges = obs.edges(0, u64::MAX);
    let edge = |caller: &str, callee: &str| {
        edges
            .iter()
            .filter(|e| e.caller == caller && e.callee == callee)
            .fold((0, 0), |(c, l), e| (c + e.crossed, l + e.lost))
    };
    // Ten submissions lose each boundary's context; the rest cross it. gateway → epro-service
    // loses nothing (a lost span is not a lost context).
    assert_eq!(edge("gateway", "user-service"), (90, 10), "{edges:#?}");
    assert_eq!(edge("epro-service", "data-service"), (90, 10), "{edges:#?}");
    // The queue: ten lose the context; ten continue through a link; the grpc break moves
    // the producer into the other trace, where the hop still crosses.
    assert_eq!(edge("data-service", "notify-service"), (90, 10), "{edges:#?}");
    assert!(edges.iter().any(|e| e.via == "messaging:patient-report.submitted"));
    assert!(edges.iter().any(|e| e.via == "grpc" && e.caller == "epro-service"));
    assert!(edges.iter().any(|e| e.via == "http" && e.callee == "user-service"));
    // The SMS gateway and the payments API are never instrumented: no edge.
    assert!(edges.iter().all(|e| e.callee != "sms-gateway" && !e.callee.contains("payments")), "{edges:#?}");
}
