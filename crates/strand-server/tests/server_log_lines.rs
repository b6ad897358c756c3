//! The server's log to a file (or a pipe) is plain text without colour codes, addresses are
//! printed as addresses, and `--log-format json` gives one JSON object per line.

mod common;

#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("text");
    let server = common::spawn_binary(&data, &[]);
    drop(server);
    let text = common::log_text(&data);
    let listening = text.lines().find(|l| l.contains("strand listening")).unwrap_or_else(|| panic!("{text}"));
    assert!(!text.contains('\u{1b}'), "no ANSI escape codes in a log file: {text:?}");
    assert!(!listening.contains("Some("), "addresses, not debug output: {listening}");
    assert!(listening.contains("otlp_grpc=127.0.0.1:"), "{listening}");

    let data = dir.path().join("json");
    let server = common::spawn_binary(&data, &["--log-format", "json"]);
    drop(server);
    let text = common::log_text(&data);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["fields"]["message"] == "strand listening")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(listening["fields"]["http"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{listening}");
    assert_eq!(listening["level"], "INFO");
}
