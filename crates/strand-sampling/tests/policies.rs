//! Policy semantics, boundary by boundary, against the collector's definitions.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use strand_core::{AnyValue, KeyValue, Resource, Scope, Span, SpanId, SpanKind, Status, StatusCode, TraceId};
use strand_sampling::{PolicyConfig, PolicySet, SamplingConfig, TraceFacts, Verdict};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn policies(yaml: &str) -> PolicySet {
    let cfg: SamplingConfig = serde_saphyr::from_str(yaml).expect("valid yaml");
    PolicySet::compile(&cfg.policies).expect("valid policies")
}

fn span(start: u64, end: u64) -> Span {
    Span { flags: 1, kind: SpanKind::Server, ..Span::new(TraceId([7; 16]), SpanId([1; 8]), "op", start, end) }
}

fn with_attr(key: &str, value: AnyValue) -> Span {
    let mut s = span(0, MS);
    s.attributes.push(KeyValue::new(key, value));
    s
}

/// Facts of a trace made of `spans` under `resource`.
fn facts(set: &PolicySet, resource: &Resource, spans: &[Span]) -> TraceFacts {
    let c = set.conditions();
    let rbits = c.resource_bits(resource);
    let mut f = TraceFacts::default();
    for s in spans {
        f.add(
            s.start_time_unix_nano,
            s.end_time_unix_nano,
            rbits | c.span_bits(resource, &Scope::default(), s),
        );
    }
    f
}

fn decide(set: &mut PolicySet, spans: &[Span]) -> Verdict {
    let f = facts(set, &Resource::default(), spans);
    set.decide(&TraceId([7; 16]), &f, 0)
}

fn keeps(yaml: &str, spans: &[Span]) -> bool {
    decide(&mut policies(yaml), spans).keep
}

#[test]
fn latency_is_at_least_without_upper_and_half_open_with_it() {
    let plain = "policies: [{ name: slow, type: latency, latency: { threshold_ms: 100 } }]";
    let banded =
        "policies: [{ name: band, type: latency, latency: { threshold_ms: 100, upper_threshold_ms: 200 } }]";
    // (duration ns, plain keeps, banded keeps)
    let table = [
        (99 * MS, false, false),
        (100 * MS - 1, false, false), // 99.999 ms truncates to 99, as Go's Milliseconds()
        (100 * MS, true, false),      // ≥ 100 but not > 100
        (100 * MS + MS, true, true),
        (200 * MS, true, true), // ≤ upper
        (200 * MS + 999_999, true, true),
        (201 * MS, true, false),
    ];
    for (d, p, b) in table {
        assert_eq!(keeps(plain, &[span(SEC, SEC + d)]), p, "plain at {d} ns");
        assert_eq!(keeps(banded, &[span(SEC, SEC + d)]), b, "banded at {d} ns");
    }
    // Duration is the earliest start to the latest end across spans.
    assert!(keeps(plain, &[span(SEC, SEC + 10 * MS), span(SEC + 95 * MS, SEC + 100 * MS)]));
}

#[test]
fn numeric_bounds_are_inclusive_and_may_be_one_sided() {
    let both = "policies: [{ name: n, type: numeric_attribute, numeric_attribute: { key: code, min_value: 400, max_value: 499 } }]";
    let min_only =
        "policies: [{ name: n, type: numeric_attribute, numeric_attribute: { key: code, min_value: 500 } }]";
    let max_only =
        "policies: [{ name: n, type: numeric_attribute, numeric_attribute: { key: code, max_value: 0 } }]";
    for (v, b, mn, mx) in [
        (399, false, false, false),
        (400, true, false, false),
        (499, true, false, false),
        (500, false, true, false),
        (i64::MAX, false, true, false),
        (0, false, false, true),
        (-5, false, false, true),
    ] {
        let s = [with_attr("code", AnyValue::Int(v))];
        assert_eq!(keeps(both, &s), b, "both {v}");
        assert_eq!(keeps(min_only, &s), mn, "min {v}");
        assert_eq!(keeps(max_only, &s), mx, "max {v}");
    }
    // Only integers count; a string "450" does not.
    assert!(!keeps(both, &[with_attr("code", AnyValue::String("450".into()))]));
}

#[test]
fn span_count_bounds_are_inclusive_and_zero_max_is_unbounded() {
    let bounded = "policies: [{ name: c, type: span_count, span_count: { min_spans: 2, max_spans: 3 } }]";
    let open = "policies: [{ name: c, type: span_count, span_count: { min_spans: 2 } }]";
    for (n, b, o) in
        [(1, false, false), (2, true, true), (3, true, true), (4, false, true), (50, false, true)]
    {
        let spans = vec![span(0, MS); n];
        assert_eq!(keeps(bounded, &spans), b, "bounded {n}");
        assert_eq!(keeps(open, &spans), o, "open {n}");
    }
}

#[test]
fn string_attribute_exact_regex_resource_and_inverted() {
    let exact = "policies: [{ name: s, type: string_attribute, string_attribute: { key: http.route, values: [/a, /b] } }]";
    let regex = "policies: [{ name: s, type: string_attribute, string_attribute: { key: http.route, values: ['^/api/v[0-9]+'], enabled_regex_matching: true } }]";
    let route = |r: &str| [with_attr("http.route", AnyValue::String(r.into()))];
    assert!(keeps(exact, &route("/a")));
    assert!(!keeps(exact, &route("/a/b")));
    assert!(keeps(regex, &route("/api/v2/users")));
    assert!(!keeps(regex, &route("/x/api/v2")));
    // Unanchored like Go's MatchString.
    let unanchored = "policies: [{ name: s, type: string_attribute, string_attribute: { key: k, values: [ell], enabled_regex_matching: true } }]";
    assert!(keeps(unanchored, &[with_attr("k", AnyValue::String("hello".into()))]));
    // Resource attributes count too.
    let mut set = policies(
        "policies: [{ name: s, type: string_attribute, string_attribute: { key: deployment.environment, values: [prod] } }]",
    );
    let resource = Resource {
        attributes: vec![KeyValue::new("deployment.environment", AnyValue::String("prod".into()))],
        ..Resource::default()
    };
    let f = facts(&set, &resource, &[span(0, MS)]);
    assert!(set.decide(&TraceId([7; 16]), &f, 0).keep);

    // invert_match: a trace without the value is sampled; with it, it is not, and that
    // "inverted not sampled" beats another policy's "sampled".
    let inverted = r#"
policies:
  - { name: not-health, type: string_attribute, string_attribute: { key: http.route, values: [/health], invert_match: true } }
"#;
    assert!(keeps(inverted, &route("/orders")));
    assert!(!keeps(inverted, &route("/health")));
    let inverted_and_always = r#"
policies:
  - { name: everything, type: always_sample }
  - { name: not-health, type: string_attribute, string_attribute: { key: http.route, values: [/health], invert_match: true } }
"#;
    assert!(!keeps(inverted_and_always, &route("/health")));
    assert!(keeps(inverted_and_always, &route("/orders")));
    // Inside `and` (or `drop`, `composite`) an inverted non-match is only "not sampled": the
    // veto holds at the top level alone, as the collector's decision order says.
    let nested = r#"
policies:
  - { name: everything, type: always_sample }
  - name: not-health-and-slow
    type: and
    and:
      and_sub_policy:
        - { name: not-health, type: string_attribute, string_attribute: { key: http.route, values: [/health], invert_match: true } }
        - { name: slow, type: latency, latency: { threshold_ms: 0 } }
"#;
    assert!(keeps(nested, &route("/health")), "the nested inversion vetoes nothing");
    let verdict = decide(&mut policies(nested), &route("/health"));
    assert_eq!(verdict.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>(), vec!["everything"]);
    let verdict = decide(&mut policies(nested), &route("/orders"));
    assert_eq!(
        verdict.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        vec!["everything", "not-health-and-slow"]
    );
}

#[test]
fn boolean_status_and_trace_state() {
    let boolean = "policies: [{ name: b, type: boolean_attribute, boolean_attribute: { key: app.force_sample, value: true } }]";
    assert!(keeps(boolean, &[with_attr("app.force_sample", AnyValue::Bool(true))]));
    assert!(!keeps(boolean, &[with_attr("app.force_sample", AnyValue::Bool(false))]));
    assert!(!keeps(boolean, &[with_attr("app.force_sample", AnyValue::String("true".into()))]));

    let errors = "policies: [{ name: e, type: status_code, status_code: { status_codes: [ERROR] } }]";
    let mut bad = span(0, MS);
    bad.status = Status { code: StatusCode::Error, message: "boom".into() };
    assert!(keeps(errors, &[span(0, MS), bad.clone()]));
    assert!(!keeps(errors, &[span(0, MS)]));
    let unset = "policies: [{ name: e, type: status_code, status_code: { status_codes: [UNSET, OK] } }]";
    assert!(keeps(unset, &[span(0, MS)]));
    assert!(!keeps(unset, &[bad]));

    let ts =
        "policies: [{ name: t, type: trace_state, trace_state: { key: tenant, values: [gold, silver] } }]";
    let mut s = span(0, MS);
    s.trace_state = "vendor=1, tenant=gold".into();
    assert!(keeps(ts, &[s.clone()]));
    s.trace_state = "tenant=bronze,gold=tenant".into();
    assert!(!keeps(ts, &[s]));
}

#[test]
fn drop_wins_over_everything_and_and_not_compose() {
    let yaml = r#"
policies:
  - { name: all, type: always_sample }
  - name: no-health
    type: drop
    drop:
      drop_sub_policy:
        - { name: health, type: string_attribute, string_attribute: { key: http.route, values: [/health] } }
"#;
    assert!(!keeps(yaml, &[with_attr("http.route", AnyValue::String("/health".into()))]));
    assert!(keeps(yaml, &[with_attr("http.route", AnyValue::String("/orders".into()))]));

    let and = r#"
policies:
  - name: slow-checkout
    type: and
    and:
      and_sub_policy:
        - { name: slow, type: latency, latency: { threshold_ms: 100 } }
        - { name: checkout, type: string_attribute, string_attribute: { key: http.route, values: [/checkout] } }
"#;
    let mut fast = with_attr("http.route", AnyValue::String("/checkout".into()));
    assert!(!keeps(and, &[fast.clone()]));
    fast.end_time_unix_nano = 150 * MS;
    assert!(keeps(and, &[fast]));

    let not = "policies: [{ name: n, type: not, not: { not_sub_policy: { name: ok, type: status_code, status_code: { status_codes: [OK] } } } }]";
    let mut ok = span(0, MS);
    ok.status.code = StatusCode::Ok;
    assert!(!keeps(not, &[ok]));
    assert!(keeps(not, &[span(0, MS)]));
}

#[test]
fn verdict_names_the_policies_and_the_rate() {
    let yaml = r#"
policies:
  - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
  - { name: everything, type: probabilistic, probabilistic: { sampling_percentage: 100 } }
  - { name: nothing, type: probabilistic, probabilistic: { sampling_percentage: 0 } }
"#;
    let mut set = policies(yaml);
    let mut bad = span(0, MS);
    bad.status.code = StatusCode::Error;
    let v = decide(&mut set, &[bad]);
    assert_eq!(v.policies.iter().map(|p| &**p).collect::<Vec<_>>(), ["errors", "everything"]);
    assert_eq!(v.rate, Some(1.0));
    let mut set = policies(
        "policies: [{ name: five, type: probabilistic, probabilistic: { sampling_percentage: 5 } }]",
    );
    let f = TraceFacts::default();
    let kept = (0u8..=255)
        .map(|b| TraceId([b; 16]))
        .find_map(|id| Some(set.decide(&id, &f, 0)).filter(|v| v.keep))
        .expect("some id of 256 is kept at 5 %");
    assert_eq!(kept.rate, Some(0.05));
}

#[test]
fn probabilistic_rate_is_accurate_and_consistent() {
    let yaml = "policies: [{ name: p, type: probabilistic, probabilistic: { sampling_percentage: 5 } }]";
    let mut a = policies(yaml);
    let mut b = policies(yaml); // another node, or the same after a restart
    let mut salted = policies(
        "policies: [{ name: p, type: probabilistic, probabilistic: { sampling_percentage: 5, hash_salt: other } }]",
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let f = TraceFacts::default();
    let (mut kept, mut differs) = (0, 0);
    const N: usize = 100_000;
    for _ in 0..N {
        let id = TraceId(rng.random());
        let ka = a.decide(&id, &f, 0).keep;
        assert_eq!(ka, b.decide(&id, &f, 0).keep, "same id, same decision");
        if ka {
            kept += 1;
        }
        if ka != salted.decide(&id, &f, 0).keep {
            differs += 1;
        }
    }
    let pct = kept as f64 * 100.0 / N as f64;
    assert!((pct - 5.0).abs() <= 0.3, "kept {pct:.3} %");
    assert!(differs > 1000, "a different salt picks different traces ({differs})");
}

#[test]
fn rate_limiting_allows_a_burst_then_the_rate() {
    let mut set =
        policies("policies: [{ name: r, type: rate_limiting, rate_limiting: { spans_per_second: 10 } }]");
    let mut f = TraceFacts::default();
    for _ in 0..5 {
        f.add(0, MS, 0);
    } // 5-span traces
    let id = TraceId([1; 16]);
    let t0 = 100 * SEC;
    // The bucket starts full at 2 × 10 spans: four 5-span traces, not a fifth.
    let first: Vec<bool> = (0..5).map(|_| set.decide(&id, &f, t0).keep).collect();
    assert_eq!(first, [true, true, true, true, false]);
    // Refill at 10 spans per second: half a second buys one more trace.
    assert!(!set.decide(&id, &f, t0 + SEC / 4).keep);
    assert!(set.decide(&id, &f, t0 + SEC / 2 + 1).keep);
    // Over ten seconds the sustained rate is 10 spans/s: 2 traces a second.
    let mut kept = 0;
    for tick in 1..=100u64 {
        if set.decide(&id, &f, t0 + 10 * SEC + tick * SEC / 10).keep {
            kept += 1;
        }
    }
    assert!((20..=24).contains(&kept), "{kept} traces in 10 s (burst refilled plus 2/s)");
}

#[test]
fn composite_spends_each_budget_per_second_in_order() {
    let yaml = r#"
policies:
  - name: composite
    type: composite
    composite:
      max_total_spans_per_second: 10
      policy_order: [errors, rest]
      composite_sub_policy:
        - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
        - { name: rest, type: always_sample }
      rate_allocation:
        - { policy: errors, percent: 60 }
        - { policy: rest, percent: 40 }
"#;
    let mut set = policies(yaml);
    let mut bad = span(0, MS);
    bad.status.code = StatusCode::Error;
    let err = facts(&set, &Resource::default(), &[bad.clone(), bad.clone()]);
    let ok = facts(&set, &Resource::default(), &[span(0, MS), span(0, MS)]);
    let id = TraceId([3; 16]);
    let t = 50 * SEC;
    // errors: 6 spans a second = three 2-span error traces; a fourth is not sampled even
    // though `rest` would take it (the first matching sub-policy decides).
    let errs: Vec<bool> = (0..4).map(|_| set.decide(&id, &err, t).keep).collect();
    assert_eq!(errs, [true, true, true, false]);
    // rest: 4 spans a second = two 2-span traces.
    let oks: Vec<bool> = (0..3).map(|_| set.decide(&id, &ok, t).keep).collect();
    assert_eq!(oks, [true, true, false]);
    // The next second resets both budgets.
    assert!(set.decide(&id, &err, t + SEC).keep);
    assert!(set.decide(&id, &ok, t + SEC).keep);

    // As in the collector, a sub-policy without a rate allocation gets no budget.
    let unallocated = r#"
policies:
  - name: c
    type: composite
    composite:
      max_total_spans_per_second: 100
      composite_sub_policy: [{ name: any, type: always_sample }]
"#;
    assert!(!keeps(unallocated, &[span(0, MS)]));
}

#[test]
fn every_policy_type_is_covered_here() {
    // Guard: a new policy type needs a row in this file.
    let covered = [
        "always_sample",
        "latency",
        "status_code",
        "string_attribute",
        "numeric_attribute",
        "boolean_attribute",
        "probabilistic",
        "rate_limiting",
        "span_count",
        "trace_state",
        "and",
        "not",
        "drop",
        "composite",
        "ottl_condition",
    ];
    for name in covered {
        let p: Result<PolicyConfig, _> = serde_saphyr::from_str(&format!("{{ name: x, type: {name} }}"));
        assert!(p.is_ok(), "{name} is a policy type");
    }
    let unknown: Result<PolicyConfig, _> = serde_saphyr::from_str("{ name: x, type: bayesian }");
    assert!(unknown.is_err(), "an unknown policy type is refused, not ignored");
    let _ = Arc::new(Scope::default());
}

/// The collector README's `ottl_condition` example: any span condition or any span-event
/// condition samples (they are ORed), inside `and` and `not` too.
#[test]
fn ottl_conditions_sample_as_the_collectors_readme_says() {
    let yaml = r#"
policies:
  - name: test-policy-11
    type: ottl_condition
    ottl_condition:
      error_mode: ignore
      span:
        - 'attributes["test_attr_key_1"] == "test_attr_val_1"'
        - 'attributes["test_attr_key_2"] != "test_attr_val_1"'
      spanevent:
        - 'name != "test_span_event_name"'
        - 'attributes["test_event_attr_key_2"] != "test_event_attr_val_1"'
"#;
    let attr = |k: &str, v: &str| KeyValue::new(k, AnyValue::String(v.into()));
    let event = |name: &str, attrs: Vec<KeyValue>| strand_core::Event {
        time_unix_nano: 5 * MS,
        name: name.into(),
        attributes: attrs,
        dropped_attributes_count: 0,
    };
    // Neither span condition (key 2 equal to the value) nor an event.
    let mut quiet = span(0, 10 * MS);
    quiet.attributes = vec![attr("test_attr_key_2", "test_attr_val_1")];
    assert!(!keeps(yaml, &[quiet.clone()]));
    // The first span condition.
    let mut first = quiet.clone();
    first.attributes.push(attr("test_attr_key_1", "test_attr_val_1"));
    assert!(keeps(yaml, &[quiet.clone(), first]));
    // An event named otherwise.
    let mut other_event = quiet.clone();
    other_event.events = vec![event("something else", vec![])];
    assert!(keeps(yaml, &[other_event]));
    // An event named as excluded but with the second attribute unlike the value: sampled.
    let mut excluded = quiet.clone();
    excluded.events = vec![event("test_span_event_name", vec![])];
    assert!(keeps(yaml, &[excluded.clone()]), "attributes[...] != value holds when the key is missing");
    excluded.events =
        vec![event("test_span_event_name", vec![attr("test_event_attr_key_2", "test_event_attr_val_1")])];
    assert!(!keeps(yaml, &[excluded]));

    // Resource and span together on one span, and Duration arithmetic.
    let slow_checkout = r#"
policies:
  - name: slow-checkout
    type: ottl_condition
    ottl_condition:
      span:
        - 'resource.attributes["service.name"] == "checkout" and end_time - start_time > Duration("2s")'
"#;
    let mut set = policies(slow_checkout);
    let checkout = Resource {
        attributes: vec![KeyValue::new("service.name", AnyValue::String("checkout".into()))],
        ..Resource::default()
    };
    let verdict = |set: &mut PolicySet, resource: &Resource, spans: &[Span]| {
        set.decide(&TraceId([7; 16]), &facts(set, resource, spans), 0).keep
    };
    assert!(verdict(&mut set, &checkout, &[span(0, 3 * SEC)]));
    assert!(!verdict(&mut set, &checkout, &[span(0, SEC)]));
    assert!(!verdict(&mut set, &Resource::default(), &[span(0, 3 * SEC)]), "another service");

    // A configuration error names the policy, the condition and the column.
    let bad = r#"
policies:
  - name: bad
    type: ottl_condition
    ottl_condition: { span: ['name == "a"', 'Len(name) > 3'], spanevent: [] }
  - { name: empty, type: ottl_condition, ottl_condition: {} }
"#;
    let cfg: SamplingConfig = serde_saphyr::from_str(bad).expect("yaml");
    let errs = PolicySet::compile(&cfg.policies).expect_err("refused").join("\n");
    assert!(
        errs.contains(
            "policy `bad`: span condition 2 `Len(name) > 3`: column 1: converter `Len` is not supported"
        ),
        "{errs}"
    );
    assert!(errs.contains("policy `empty`: needs at least one `span` or `spanevent` condition"), "{errs}");
}
