//! The README's "Reading a trace back" commands, run as printed against a fresh server,
//! print what the README shows.

mod common;

use std::process::Command;

/// The README's section titled `title`: its first `sh` block's commands and its first
/// `text` block.
fn section(title: &str) -> (Vec<String>, String) {
    let (commands, body) = section_commands(title);
    (commands, block(&body, title, "text"))
}

/// The first fenced block of language `lang` in a section's text.
fn block(body: &str, title: &str, lang: &str) -> String {
    let open = format!("```{lang}\n");
    let from = body.find(&open).unwrap_or_else(|| panic!("no {lang} block in {title}")) + open.len();
    body[from..from + body[from..].find("```").expect("closed block")].to_owned()
}

/// The README's section titled `title`: its first `sh` block's commands, and its text.
fn section_commands(title: &str) -> (Vec<String>, String) {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md");
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section {title}"));
    let body = &readme[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
    let commands =
        block(body, title, "sh").lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
    (commands, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_trace_back_prints_what_the_readme_shows() {
    let has_curl = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !has_curl {
        let required =
            std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
        assert!(!required, "curl missing: run scripts/test.sh, which installs it");
        eprintln!("SKIPPED: curl missing; run scripts/test.sh to install it");
        return;
    }
    let (commands, expected_tree) = section("Reading a trace back");
    assert_eq!(commands.len(), 4, "{commands:?}");
    let server = common::start(|_| {}).await;
    let strand = env!("CARGO_BIN_EXE_strand");
    let http = format!("http://{}", server.http);
    let mut outputs = Vec::new();
    for line in &commands {
        // As printed, with this server's ports and this build of the binary.
        let command = line
            .replace("localhost:4318", &server.otlp_http.to_string())
            .replace("localhost:16686", &server.http.to_string())
            .replace("cargo run --release --", strand);
        let http = http.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("sh")
                .arg("-c")
                .arg(&command)
                .current_dir(common::repo())
                .env("STRAND_SERVER", http)
                .output()
                .expect("run sh")
        })
        .await
        .expect("join");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "`{line}` failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        outputs.push(stdout);
    }
    let accepted: serde_json::Value = serde_json::from_str(&outputs[0]).expect("export answer");
    assert!(accepted["partialSuccess"].is_null(), "the export is accepted whole: {accepted}");
    let api: serde_json::Value = serde_json::from_str(&outputs[1]).expect("API JSON");
    assert_eq!(api["spanCount"], 1);
    assert_eq!(outputs[2], expected_tree, "the README's tree is what `strand trace` prints");
    let json: serde_json::Value = serde_json::from_str(&outputs[3]).expect("--json prints JSON");
    assert_eq!(json["traceId"], "5b8efff798038103d269b633813fc60c");

    // The search the section suggests for the example's old timestamps finds it.
    let search = "strand search --start 2018-12-13T00:00:00Z --end 2018-12-14T00:00:00Z";
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md");
    assert!(readme.contains(&format!("`{search}`")), "the README suggests `{search}`");
    let args: Vec<String> = search.split(' ').skip(1).map(str::to_owned).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(strand).args(&args).env("STRAND_SERVER", http).output().expect("run strand")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("5b8efff798038103d269b633813fc60c"), "{stdout}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_querying_command_runs_as_printed() {
    let (commands, _) = section_commands("Querying");
    assert!(commands.len() >= 6, "{commands:?}");
    let server = common::start(|_| {}).await;
    // Recent traces (the UI fixtures, ten minutes ago) and the official OTLP example.
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let text = std::fs::read_to_string(common::fixture("ui/patient-report.json")).expect("fixture");
    let mut recent: serde_json::Value = serde_json::from_str(&text).expect("json");
    for rs in recent["resourceSpans"].as_array_mut().expect("resourceSpans") {
        for ss in rs["scopeSpans"].as_array_mut().expect("scopeSpans") {
            for span in ss["spans"].as_array_mut().expect("spans") {
                for key in ["startTimeUnixNano", "endTimeUnixNano"] {
                    let t: u64 = span[key].as_str().and_then(|s| s.parse().ok()).expect("time");
                    span[key] = (t + now - 600_000_000_000).to_string().into();
                }
                span.as_object_mut().expect("span").remove("events");
            }
        }
    }
    server.export(&recent).await;
    server.export_json(std::fs::read(common::fixture("otlp/trace.json")).expect("fixture")).await;
    let strand = env!("CARGO_BIN_EXE_strand");
    let http = format!("http://{}", server.http);
    for line in commands {
        let command = line.split(" #").next().unwrap_or(&line).trim().to_owned();
        let args: Vec<String> = command.split_whitespace().skip(1).map(str::to_owned).collect();
        assert!(command.starts_with("strand "), "{command}");
        let http = http.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(strand).args(&args).env("STRAND_SERVER", http).output().expect("run strand")
        })
        .await
        .expect("join");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "`{command}`: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.trim().is_empty(), "`{command}` printed nothing");
        if command.contains("2018-12-13") || command.starts_with("strand trace") {
            assert!(stdout.contains("5b8efff798038103d269b633813fc60c"), "`{command}`: {stdout}");
        }
        if command == "strand services" {
            assert!(stdout.contains("gateway") && stdout.contains("my.service"), "{stdout}");
        }
    }
    server.stop().await;
}
