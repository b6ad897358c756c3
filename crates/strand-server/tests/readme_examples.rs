//! The README's examples, run as printed: "Reading a trace back" against a fresh server
//! prints what the README shows, every "Querying" command runs, and the configuration
//! examples load (the big one is exactly the defaults).

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
    let (commands, body) = section_commands_or_text(title);
    assert!(!commands.is_empty(), "no sh block in {title}");
    (commands, body)
}

/// A README section's `sh` commands (none when it has no such block) and its text.
fn section_commands_or_text(title: &str) -> (Vec<String>, String) {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md");
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section {title}"));
    let body = &readme[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
    let commands = if body.contains("```sh\n") {
        block(body, title, "sh").lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
    } else {
        Vec::new()
    };
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

/// Writes `yaml` to a file and loads it as `strand serve --config FILE` would.
fn load_yaml(yaml: &str) -> strand_server::Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strand.yaml");
    std::fs::write(&path, yaml).expect("write");
    let sources = strand_server::config::Sources { file: Some(path), ..Default::default() };
    strand_server::config::load(&sources).unwrap_or_else(|e| panic!("the README's YAML loads: {e}\n{yaml}"))
}

#[test]
fn the_readme_configuration_is_the_default_and_its_sampling_example_loads() {
    let (_, body) = section_commands_or_text("Configuration");
    let yaml = block(&body, "Configuration", "yaml");
    let config = load_yaml(&yaml);
    assert_eq!(config, strand_server::Config::default(), "the README lists exactly the defaults");
    // ... and all of them: every key of the default configuration (tail sampling has its
    // own section) is in the block.
    let listed: serde_json::Value = serde_saphyr::from_str(&yaml).expect("yaml");
    let defaults = serde_json::to_value(strand_server::Config::default()).expect("json");
    let mut missing = Vec::new();
    fn walk(d: &serde_json::Value, l: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        for (k, v) in d.as_object().into_iter().flatten() {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            match l.get(k) {
                None if p != "sampling" => missing.push(p),
                Some(l) if v.is_object() && l.is_object() => walk(v, l, &p, missing),
                _ => {}
            }
        }
    }
    walk(&defaults, &listed, "", &mut missing);
    assert!(missing.is_empty(), "keys missing from the README's configuration: {missing:?}");
    let (_, body) = section_commands_or_text("Tail sampling");
    let sampling = load_yaml(&block(&body, "Tail sampling", "yaml"));
    assert_eq!(sampling.sampling.policies.len(), 3);
}

/// The Dockerfile exposes exactly the default ports and runs as a non-root user. (The image
/// itself cannot be built here: no registry with base images is reachable.)
#[test]
fn the_dockerfile_exposes_the_default_ports() {
    let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).expect("Dockerfile");
    let expose = dockerfile.lines().find_map(|l| l.strip_prefix("EXPOSE ")).expect("an EXPOSE line");
    let mut exposed: Vec<String> = expose.split_whitespace().map(str::to_owned).collect();
    exposed.sort();
    let d = strand_server::Config::default();
    let mut defaults: Vec<String> = [
        d.otlp.grpc_listen.port().to_string(),
        d.otlp.http_listen.port().to_string(),
        d.jaeger.thrift_http_listen.port().to_string(),
        format!("{}/udp", d.jaeger.agent_listen.port()),
        format!("{}/udp", d.jaeger.agent_binary_listen.port()),
        d.zipkin.listen.port().to_string(),
        d.remote_sampling.listen.port().to_string(),
        d.http_listen.port().to_string(),
    ]
    .into();
    defaults.sort();
    assert_eq!(exposed, defaults);
    assert!(
        dockerfile.lines().any(|l| l.starts_with("USER ") && !l.contains("root")),
        "runs as a non-root user"
    );
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md");
    assert!(readme.contains("docker build -t strand ."), "the README says how to build the image");
}

/// Every `cargo run --release -- serve …` the README prints (the first command, `--demo`,
/// `--sampling errors-plus=5%`) starts a server that does what the text next to it says. The
/// command line is the README's; only the ports (free ones) and the data directory differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_serve_command_in_the_readme_starts_as_printed() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md");
    let mut commands: Vec<String> = readme
        .lines()
        .flat_map(|l| l.split('`'))
        .filter_map(|l| l.trim().strip_prefix("cargo run --release -- serve"))
        .map(|rest| rest.split(" #").next().unwrap_or(rest).trim().trim_end_matches('&').trim().to_owned())
        .collect();
    commands.sort();
    commands.dedup();
    assert_eq!(commands, ["", "--demo", "--sampling errors-plus=5%"], "the README's serve commands");
    let client = reqwest::Client::new();
    for args in commands {
        let dir = tempfile::tempdir().expect("tempdir");
        let args: Vec<&str> = args.split_whitespace().collect();
        let server = common::spawn_binary(&dir.path().join("data"), &args);
        let base = format!("http://{}", server.http);
        let status = common::get_json(&format!("{base}/api/v1/status")).await;
        assert!(status["version"].is_string(), "{args:?}: {status}");
        match args.first().copied() {
            None => assert!(status["demo"].is_null(), "plain serve stores no demo"),
            Some("--demo") => {
                let id = status["demo"]["traceId"].as_str().expect("the demo's featured trace").to_owned();
                let trace = client.get(format!("{base}/api/v1/traces/{id}")).send().await.expect("get");
                assert_eq!(trace.status(), 200, "--demo stored its featured trace");
            }
            Some(_) => {
                // Tail sampling is on: a span waits in the sampler's buffer for its decision.
                let body = std::fs::read(common::fixture("otlp/trace.json")).expect("fixture");
                let sent = client
                    .post(format!("http://{}/v1/traces", server.otlp_http))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(sent.status(), 200);
                let metrics = client.get(format!("{base}/metrics")).send().await.expect("get");
                let text = metrics.text().await.expect("text");
                assert_eq!(
                    common::metric_value(&text, "strand_sampling_buffer_spans"),
                    Some(1.0),
                    "the span waits for a tail-sampling decision"
                );
            }
        }
    }
}

/// The README's repository tour names paths that exist, and its benchmark commands use
/// flags the `bench` subcommands have (the benchmarks themselves are too heavy for CI).
#[test]
fn the_readme_tour_and_benchmark_commands_match_the_repository() {
    let (_, tour) = section_commands_or_text("Repository tour");
    let tour = block(&tour, "Repository tour", "text");
    for line in tour.lines().filter(|l| !l.starts_with(' ')) {
        let path = line.split_whitespace().next().expect("a path");
        assert!(common::repo().join(path).exists(), "the tour names {path}, which does not exist");
    }
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md");
    let benches: Vec<&str> =
        readme.lines().filter_map(|l| l.strip_prefix("cargo run --release -- bench ")).collect();
    assert!(benches.len() >= 4, "{benches:?}");
    for line in benches {
        let line = line.split(" #").next().unwrap_or(line);
        let mut words = line.split_whitespace();
        let kind = words.next().expect("a benchmark");
        let out =
            Command::new(env!("CARGO_BIN_EXE_strand")).args(["bench", kind, "--help"]).output().expect("run");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "strand bench {kind} --help failed");
        for flag in words.filter(|w| w.starts_with("--")) {
            assert!(help.contains(flag), "strand bench {kind} has no {flag}:\n{help}");
        }
    }
    let fuzz = common::repo().join("scripts/fuzz.sh");
    assert!(fuzz.exists(), "the README's scripts/fuzz.sh");
}

/// "Tokens and TLS": `token new` prints what the README shows (a fresh token, the entry
/// with its SHA-256), and the configuration shown loads once its placeholders hold hashes.
#[test]
fn the_readme_token_command_prints_what_it_shows_and_its_configuration_loads() {
    let (commands, body) = section_commands("Tokens and TLS");
    assert_eq!(commands.len(), 1, "{commands:?}");
    let args: Vec<&str> = commands[0]
        .strip_prefix("cargo run --release -- ")
        .expect("a strand command")
        .split_whitespace()
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_strand")).args(&args).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let shown = block(&body, "Tokens and TLS", "text");
    let (printed_lines, shown_lines): (Vec<&str>, Vec<&str>) =
        (printed.lines().collect(), shown.lines().collect());
    assert_eq!(printed_lines.len(), shown_lines.len(), "{printed}");
    for (p, s) in printed_lines.iter().zip(&shown_lines) {
        // The README elides the random parts with "…".
        match s.split_once('…') {
            Some((head, tail)) => {
                let tail = tail.trim_start_matches(|c: char| c.is_ascii_hexdigit());
                assert!(p.starts_with(head) && p.ends_with(tail), "printed {p:?}, README {s:?}");
            }
            None => assert_eq!(p, s),
        }
    }
    let token = printed_lines[0].strip_prefix("token: ").expect("the token line");
    assert!(token.starts_with("strand_") && token.len() == 7 + 64, "{token}");
    let entry: serde_json::Value =
        serde_json::from_str(printed_lines.last().expect("entry").trim().trim_start_matches("- "))
            .expect("json");
    assert_eq!(entry["sha256"], strand_server::auth::token_hash(token));
    assert_eq!(entry["scopes"], serde_json::json!(["write", "read"]));
    // The configuration shown, with real hashes in place of its placeholders.
    let yaml = block(&body, "Tokens and TLS", "yaml")
        .replace("<hash printed for it>", entry["sha256"].as_str().expect("hash"))
        .replace("<hash for prometheus>", &strand_server::auth::token_hash("prometheus"))
        .replace("<hash for ops>", &strand_server::auth::token_hash("ops"));
    let config = load_yaml(&yaml);
    assert!(config.listen_all && config.auth.required() && config.tls.enabled());
    assert!(config.listeners().iter().all(|(_, a, _)| a.ip().is_unspecified()));
}
