//! Jaeger remote-sampling strategies: the file's semantics, the response JSON, the
//! adaptive calculation step by step, and which source answers a service.

use strand_sampling::remote::{
    Adaptive, AdaptiveConfig, AdaptiveProbability, RemoteSamplingConfig, StaticStrategies, Strategies,
    StrategyResponse,
};

const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60 * SEC;

const FILE: &str = r#"{
  "service_strategies": [
    {
      "service": "checkout",
      "type": "probabilistic",
      "param": 0.8,
      "operation_strategies": [
        { "operation": "POST /pay", "type": "probabilistic", "param": 0.2 },
        { "operation": "GET /cart", "type": "ratelimiting", "param": 5 }
      ]
    },
    { "service": "search", "type": "probabilistic", "param": 0.3 },
    { "service": "limited", "type": "ratelimiting", "param": 7 }
  ],
  "default_strategy": {
    "type": "probabilistic",
    "param": 0.5,
    "operation_strategies": [
      { "operation": "/health", "type": "probabilistic", "param": 0.0 },
      { "operation": "POST /pay", "type": "probabilistic", "param": 0.9 }
    ]
  }
}"#;

fn json(r: &StrategyResponse) -> serde_json::Value {
    serde_json::to_value(r).expect("serializes")
}

#[test]
fn the_file_follows_jaegers_merge_rules() {
    let file = StaticStrategies::parse(FILE.as_bytes()).expect("valid file");
    assert_eq!(file.warnings.len(), 1, "{:?}", file.warnings);
    assert!(file.warnings[0].contains("GET /cart"), "{}", file.warnings[0]);
    let s = Strategies::new(Some(file), None, 1.0);

    // Own operations first, then the default's for operations it does not name.
    assert_eq!(
        json(&s.for_service("checkout")),
        serde_json::json!({
            "strategyType": "PROBABILISTIC",
            "probabilisticSampling": { "samplingRate": 0.8 },
            "operationSampling": {
                "defaultSamplingProbability": 0.8,
                "defaultLowerBoundTracesPerSecond": 0.0,
                "perOperationStrategies": [
                    { "operation": "POST /pay", "probabilisticSampling": { "samplingRate": 0.2 } },
                    { "operation": "/health", "probabilisticSampling": { "samplingRate": 0.0 } }
                ],
                "defaultUpperBoundTracesPerSecond": 0.0
            }
        })
    );
    // No own operations: the default's, with the service's probability as default.
    let search = json(&s.for_service("search"));
    assert_eq!(search["operationSampling"]["defaultSamplingProbability"], 0.3);
    assert_eq!(search["operationSampling"]["perOperationStrategies"].as_array().expect("array").len(), 2);
    // Rate limited: the default's operations with the default's probability.
    let limited = json(&s.for_service("limited"));
    assert_eq!(limited["strategyType"], "RATE_LIMITING");
    assert_eq!(limited["rateLimitingSampling"]["maxTracesPerSecond"], 7);
    assert_eq!(limited["operationSampling"]["defaultSamplingProbability"], 0.5);
    // Anyone else: the default strategy.
    let other = json(&s.for_service("anything"));
    assert_eq!(other["probabilisticSampling"]["samplingRate"], 0.5);
    assert_eq!(other["operationSampling"]["perOperationStrategies"][1]["operation"], "POST /pay");
}

#[test]
fn a_file_without_default_serves_the_configured_probability() {
    let file = StaticStrategies::parse(
        br#"{"service_strategies":[{"service":"a","type":"ratelimiting","param":2}]}"#,
    )
    .expect("valid file");
    let s = Strategies::new(Some(file), None, 1.0);
    assert_eq!(
        json(&s.for_service("b")),
        serde_json::json!({ "strategyType": "PROBABILISTIC", "probabilisticSampling": { "samplingRate": 1.0 } })
    );
    assert_eq!(
        json(&s.for_service("a")),
        serde_json::json!({ "strategyType": "RATE_LIMITING", "rateLimitingSampling": { "maxTracesPerSecond": 2 } })
    );
    // An operation list under a rate-limited service gets Jaeger's 0.001 default.
    let file = StaticStrategies::parse(
        br#"{"service_strategies":[{"service":"a","type":"ratelimiting","param":2,
             "operation_strategies":[{"operation":"x","type":"probabilistic","param":1}]}]}"#,
    )
    .expect("valid file");
    let a = json(&Strategies::new(Some(file), None, 1.0).for_service("a"));
    assert_eq!(a["operationSampling"]["defaultSamplingProbability"], 0.001);
}

#[test]
fn bad_files_are_rejected_with_the_place() {
    let cases: [(&str, &str); 9] = [
        (
            r#"{"service_strategies":[{"service":"a","type":"probabilistic","param":1.5}]}"#,
            "service_strategies[0] (a)",
        ),
        (
            r#"{"service_strategies":[{"service":"a","type":"sometimes","param":1}]}"#,
            "unknown strategy type `sometimes`",
        ),
        (r#"{"service_strategies":[{"service":"a","type":"ratelimiting","param":-1}]}"#, "traces per second"),
        (
            r#"{"service_strategies":[{"service":"a","type":"probabilistic","param":1},{"service":"a","type":"probabilistic","param":1}]}"#,
            "listed twice",
        ),
        (
            r#"{"service_strategies":[{"service":"","type":"probabilistic","param":1}]}"#,
            "must be given and not empty",
        ),
        (r#"{"service_strategies":[{"type":"probabilistic","param":1}]}"#, "must be given"),
        (r#"{"default_strategy":{"service":"a","type":"probabilistic","param":0.1}}"#, "has no `service`"),
        (r#"{"default_strategy":{"type":"probabilistic","param":0.1},"extra":1}"#, "unknown field `extra`"),
        (
            r#"{"default_strategy":{"type":"probabilistic","param":0.1,"operation_strategies":[{"operation":"o","type":"probabilistic","param":2}]}}"#,
            "default_strategy.operation_strategies[0] (o)",
        ),
    ];
    for (file, want) in cases {
        let err = StaticStrategies::parse(file.as_bytes()).expect_err("invalid");
        assert!(err.contains(want), "{file}: {err}");
    }
    assert!(StaticStrategies::parse(b"{not json").is_err());
}

fn cfg() -> AdaptiveConfig {
    AdaptiveConfig { enabled: true, ..AdaptiveConfig::default() }
}

fn probability(a: &Adaptive, service: &str, op: &str) -> Option<f64> {
    a.probabilities().into_iter().find(|p| p.service == service && p.operation == op).map(|p| p.probability)
}

#[test]
fn adaptive_steps_follow_jaegers_calculation() {
    let mut a = Adaptive::new(cfg(), &[]);
    // The first call only sets the baseline.
    assert!(!a.calculate([("shop", "GET /", 500)], 0));
    assert_eq!(probability(&a, "shop", "GET /"), None);
    // 6000 roots in a minute at the initial 0.001: 100/s against a target of 1/s, so the
    // probability drops at once to 0.001/100, clamped to the 1e-5 minimum.
    assert!(a.calculate([("shop", "GET /", 6500)], MIN));
    assert_eq!(probability(&a, "shop", "GET /"), Some(1e-5));
    // 30 roots in a minute (0.5/s): the wanted doubling is capped at +50 %.
    let mut a = Adaptive::new(
        cfg(),
        &[AdaptiveProbability { service: "s".into(), operation: "o".into(), probability: 0.1 }],
    );
    a.calculate([("s", "o", 0)], 0);
    a.calculate([("s", "o", 30)], MIN);
    assert!((probability(&a, "s", "o").expect("present") - 0.15).abs() < 1e-12);
    // 72 roots (1.2/s) are within the 30 % tolerance: unchanged.
    assert!(!a.calculate([("s", "o", 102)], 2 * MIN));
    assert!((probability(&a, "s", "o").expect("present") - 0.15).abs() < 1e-12);
    // 240 roots (4/s): lowered to a quarter at once.
    a.calculate([("s", "o", 342)], 3 * MIN);
    assert!((probability(&a, "s", "o").expect("present") - 0.0375).abs() < 1e-12);
    // None at all: doubled, and never above 1.
    a.calculate([("s", "o", 342)], 4 * MIN);
    assert!((probability(&a, "s", "o").expect("present") - 0.075).abs() < 1e-12);
    for i in 5..8 {
        a.calculate([("s", "o", 342)], i * MIN);
    }
    assert!((probability(&a, "s", "o").expect("present") - 0.6).abs() < 1e-12);
    a.calculate([("s", "o", 342)], 8 * MIN);
    assert_eq!(probability(&a, "s", "o"), Some(1.0));
}

#[test]
fn idle_operations_are_forgotten_and_counts_survive_it() {
    let mut a = Adaptive::new(AdaptiveConfig { forget_after_intervals: 3, ..cfg() }, &[]);
    a.calculate([("s", "o", 100)], 0);
    a.calculate([("s", "o", 160)], MIN);
    assert!(probability(&a, "s", "o").is_some());
    for i in 2..5 {
        a.calculate([("s", "o", 160)], i * MIN);
    }
    assert_eq!(probability(&a, "s", "o"), None, "forgotten after three idle calculations");
    // When it comes back, only the roots since the last calculation count (not the 160
    // from before): 60 in a minute is on target, so it keeps the initial probability.
    a.calculate([("s", "o", 220)], 5 * MIN);
    assert_eq!(probability(&a, "s", "o"), Some(0.001));
}

#[test]
fn adaptive_converges_on_the_target_for_each_operation() {
    // Two operations of one service at 200 and 3 requests/s; each minute the SDKs sample
    // with the probability served, exactly in expectation.
    let mut a = Adaptive::new(AdaptiveConfig { initial_sampling_probability: 0.5, ..cfg() }, &[]);
    let rates = [("GET /hot", 200.0), ("GET /cold", 3.0)];
    let mut totals = [0.0f64; 2];
    a.calculate(rates.iter().map(|(o, _)| ("svc", *o, 0)), 0);
    // Before the first calculation every operation runs at the initial probability.
    let mut served = [0.5, 0.5];
    for minute in 1..=20u64 {
        for (i, (_, rate)) in rates.iter().enumerate() {
            totals[i] += rate * 60.0 * served[i];
        }
        a.calculate(rates.iter().zip(totals).map(|((o, _), t)| ("svc", *o, t.round() as u64)), minute * MIN);
        for (i, (o, _)) in rates.iter().enumerate() {
            served[i] = probability(&a, "svc", o).expect("present");
        }
    }
    for (i, (o, rate)) in rates.iter().enumerate() {
        let sampled = rate * served[i];
        assert!((sampled - 1.0).abs() / 1.0 < 0.3, "{o}: {sampled} traces/s at p={}", served[i]);
    }
    let s = json(&Strategies::new(None, Some(a), 1.0).for_service("svc"));
    assert_eq!(s["operationSampling"]["defaultSamplingProbability"], 0.5);
    assert_eq!(s["operationSampling"]["defaultLowerBoundTracesPerSecond"], 1.0 / 60.0);
    assert_eq!(s["operationSampling"]["perOperationStrategies"].as_array().expect("array").len(), 2);
}

#[test]
fn the_file_names_services_and_adaptive_covers_the_rest() {
    let file = StaticStrategies::parse(FILE.as_bytes()).expect("valid file");
    let mut adaptive = Adaptive::new(cfg(), &[]);
    adaptive.calculate([("shop", "GET /", 0)], 0);
    adaptive.calculate([("shop", "GET /", 600)], MIN);
    let s = Strategies::new(Some(file), Some(adaptive), 1.0);
    assert_eq!(json(&s.for_service("search"))["probabilisticSampling"]["samplingRate"], 0.3);
    let shop = json(&s.for_service("shop"));
    assert_eq!(shop["operationSampling"]["perOperationStrategies"][0]["operation"], "GET /");
    let unknown = json(&s.for_service("new"));
    assert_eq!(unknown["operationSampling"]["defaultSamplingProbability"], 0.001);
    assert_eq!(unknown["operationSampling"]["perOperationStrategies"], serde_json::json!([]));
}

#[test]
fn configuration_problems_are_named() {
    let mut c = RemoteSamplingConfig::default();
    assert!(c.validate().is_empty());
    c.default_sampling_probability = 2.0;
    c.adaptive.target_traces_per_second = 0.0;
    c.adaptive.calculation_interval = "100ms".parse().expect("valid");
    c.adaptive.forget_after_intervals = 0;
    let errs = c.validate();
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(errs[0].contains("default_sampling_probability"));
}
