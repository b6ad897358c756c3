//! The README's `strand-instrument` examples: the configuration loads as written, and the
//! Rust set-up is the crate docs' example, which `cargo test --doc` compiles.

use strand_instrument::TelemetryConfig;

#[test]
fn the_readme_telemetry_config_loads() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README.md");
    let section = readme.split("\n## Instrumenting Rust services").nth(1).expect("the instrumenting section");
    let yaml = section.split("```yaml\n").nth(1).and_then(|s| s.split("```").next()).expect("a yaml block");
    // The environment may name other values (OTEL_* wins over the file): read the file with
    // an empty environment, through the same checks `from_yaml` makes.
    let cfg: TelemetryConfig = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let cfg = cfg.with_env_from(|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(cfg.service_name, "gateway");
    assert_eq!(cfg.endpoint.as_deref(), Some("http://localhost:4317"));
    assert_eq!(cfg.resource.get("deployment.environment.name").map(String::as_str), Some("prod"));
    assert!(!cfg.logs.export);
}

#[test]
fn the_readme_rust_example_is_the_compiled_doc_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(root).expect("README.md");
    let section = readme.split("\n## Instrumenting Rust services").nth(1).expect("the instrumenting section");
    let rust = section.split("```rust\n").nth(1).and_then(|s| s.split("```").next()).expect("a rust block");
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).expect("lib.rs");
    let doc: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("//! ")).collect();
    let lines: Vec<&str> = rust.lines().collect();
    assert!(!lines.is_empty());
    assert!(
        doc.windows(lines.len()).any(|w| w == lines.as_slice()),
        "the README's Rust example must be a doc example of lib.rs (compiled by cargo test --doc):\n{rust}"
    );
}
