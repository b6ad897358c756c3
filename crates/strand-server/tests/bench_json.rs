//! `strand bench query --json`: the report as one JSON line, last on stdout, with the
//! summary keys scripts compare runs by.

use std::process::Command;

#[test]
fn bench_query_json_ends_stdout_with_one_line_holding_the_summary_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_strand"))
        .args(["bench", "query", "--spans", "2000", "--lookups", "20", "--runs", "2", "--json"])
        .output()
        .expect("run strand bench query");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let last = stdout.lines().last().expect("a line");
    let report: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert!(report["spans"].as_u64().expect("spans") >= 2000, "{report}");
    for key in ["cpu_us_per_span", "disk_bytes_per_span", "by_id_p50_ms", "by_id_p99_ms", "search_p50_ms"] {
        assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {report}");
    }
    assert!(report["rss_peak_bytes"].as_u64().is_some_and(|v| v > 0), "{report}");
    // The TraceQL searches ran (a non-2xx answer ends the benchmark) and the ones every
    // load matches found traces.
    let queries = report["queries"].as_array().expect("queries");
    for name in [
        "TraceQL service + attribute (indexed), 1h",
        "TraceQL regex on span name (not indexed), 1h",
        "TraceQL count() over each trace (not indexed), 1h",
    ] {
        let q = queries.iter().find(|q| q["name"] == name).unwrap_or_else(|| panic!("{name}: {report}"));
        assert!(q["results"].as_u64().is_some_and(|n| n > 0), "{name}: {q}");
    }
    assert_eq!(report["spans"], report["spans_sent"]);
}
