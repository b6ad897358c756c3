//! `strand search`, `strand services` and `strand deps`: the native query API from the
//! command line, printed as tables (or the server's JSON with `--json`).

use std::fmt::Write as _;

use anyhow::{Context, bail};
use serde_json::Value;

/// What `strand search` asks for.
#[derive(Debug, Default, Clone)]
pub struct SearchArgs {
    /// Service of the matching span.
    pub service: Option<String>,
    /// Span name of the matching span.
    pub operation: Option<String>,
    /// `key=value` attribute filters.
    pub attrs: Vec<String>,
    /// Minimum span duration (Go syntax: `100ms`).
    pub min_duration: Option<String>,
    /// Only spans with status ERROR.
    pub errors: bool,
    /// How far back to search (`1h`).
    pub since: Option<String>,
    /// Start of the range (RFC 3339 or Unix nanoseconds).
    pub start: Option<String>,
    /// End of the range (RFC 3339 or Unix nanoseconds).
    pub end: Option<String>,
    /// Most traces.
    pub limit: Option<u64>,
}

impl SearchArgs {
    /// The native API query string.
    pub fn query_string(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &self.service {
            pairs.push(("service", s.clone()));
        }
        if let Some(o) = &self.operation {
            pairs.push(("operation", o.clone()));
        }
        for a in &self.attrs {
            pairs.push(("attr", a.clone()));
        }
        if let Some(d) = &self.min_duration {
            pairs.push(("minDuration", d.clone()));
        }
        if self.errors {
            pairs.push(("status", "error".into()));
        }
        if let Some(s) = &self.since {
            pairs.push(("since", s.clone()));
        }
        if let Some(s) = &self.start {
            pairs.push(("start", s.clone()));
        }
        if let Some(e) = &self.end {
            pairs.push(("end", e.clone()));
        }
        if let Some(l) = self.limit {
            pairs.push(("limit", l.to_string()));
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

/// A running server as the CLI commands reach it: its URL, and the token, tenant and CA
/// certificate they send with every request (flags or `STRAND_*` environment variables).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Remote {
    /// Query API base URL (`https://…` when the server has TLS).
    #[arg(long, env = "STRAND_SERVER", default_value = "http://127.0.0.1:16686")]
    pub server: String,
    /// Bearer token, when the server requires one (a token with the `read` scope). Prefer
    /// STRAND_TOKEN: a flag's value shows in the process list.
    #[arg(long, env = "STRAND_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Tenant to read (`X-Scope-OrgID`), when the server has tenants.
    #[arg(long, env = "STRAND_TENANT")]
    pub tenant: Option<String>,
    /// PEM file of a certificate authority to trust for an `https://` server, besides the
    /// system's.
    #[arg(long, env = "STRAND_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Environment variables of the CLI commands, which the server's configuration loader
/// leaves alone.
pub const CLIENT_ENV: [&str; 4] = ["STRAND_SERVER", "STRAND_TOKEN", "STRAND_TENANT", "STRAND_CA_CERT"];

impl Remote {
    /// A server at `server` with no token, tenant or CA.
    pub fn at(server: &str) -> Self {
        Self { server: server.to_owned(), ..Self::default() }
    }

    /// GETs a native API path; an error answer becomes an error with the server's message.
    pub async fn get_json(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let server = self.server.trim_end_matches('/');
        let url = format!("{server}{path_and_query}");
        let mut client = reqwest::Client::builder();
        if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("reading --ca-cert {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-cert {} holds no PEM certificate", ca.display()))?;
            for c in certs {
                client = client.add_root_certificate(c);
            }
        }
        let mut req = client.build().context("building the HTTP client")?.get(&url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.trim());
        }
        if let Some(tenant) = &self.tenant {
            req = req.header("x-scope-orgid", tenant.trim());
        }
        let resp = req.send().await.map_err(|e| request_error(server, &url, e))?;
        let status = resp.status();
        let body: Value = resp.json().await.with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            let msg = body.get("error").and_then(Value::as_str).unwrap_or("no error message");
            if status == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
                bail!("{status}: {msg} (pass it with --token or STRAND_TOKEN)");
            }
            bail!("{status}: {msg}");
        }
        Ok(body)
    }
}

/// A failed request as one sentence: who could not be reached and why, the URL once.
pub fn request_error(server: &str, url: &str, e: reqwest::Error) -> anyhow::Error {
    // The innermost cause says what happened ("Connection refused (os error 111)").
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_connect() || e.is_timeout() {
        anyhow::anyhow!(
            "cannot reach the Strand server at {}: {cause} (is it running? the address comes from --server or STRAND_SERVER)",
            server.trim_end_matches('/')
        )
    } else {
        anyhow::anyhow!("requesting {url}: {cause}")
    }
}

fn fmt_start(ns_text: &str) -> String {
    ns_text
        .parse::<i64>()
        .ok()
        .map(chrono::DateTime::from_timestamp_nanos)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ns_text.to_owned())
}

/// Renders search results as a table.
pub fn render_search(body: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32}  {:<40}  {:<23}  {:>10}  {:>5}  {:>6}",
        "TRACE ID", "ROOT", "START (UTC)", "DURATION", "SPANS", "ERRORS"
    );
    let traces = body["traces"].as_array().cloned().unwrap_or_default();
    for t in &traces {
        let root =
            format!("{}: {}", t["rootService"].as_str().unwrap_or(""), t["rootName"].as_str().unwrap_or(""));
        let root: String = root.chars().take(40).collect();
        let _ = writeln!(
            out,
            "{:<32}  {:<40}  {:<23}  {:>10}  {:>5}  {:>6}",
            t["traceId"].as_str().unwrap_or(""),
            root,
            fmt_start(t["startTimeUnixNano"].as_str().unwrap_or("")),
            crate::trace_cmd::fmt_duration(t["durationNano"].as_u64().unwrap_or(0)),
            t["spanCount"].as_u64().unwrap_or(0),
            t["errorCount"].as_u64().unwrap_or(0),
        );
    }
    let _ = writeln!(out, "{}", crate::trace_cmd::plural(traces.len(), "trace"));
    let time = |key: &str| body["newestMatch"][key].as_str().and_then(|s| s.parse::<i64>().ok());
    if let Some(start) = time("startTimeUnixNano") {
        // Nothing in the range, but matches elsewhere (old timestamps): say where, as a
        // range around the whole trace (its matching span may start after the trace does).
        let end = time("endTimeUnixNano").unwrap_or(start);
        let at = chrono::DateTime::from_timestamp_nanos;
        let hour = chrono::Duration::hours(1);
        let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let _ = writeln!(
            out,
            "the newest matching trace started at {}: search with --start {} --end {} (instead of --since)",
            at(start).format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            fmt((at(start) - hour).max(chrono::DateTime::UNIX_EPOCH)),
            fmt(at(end) + hour)
        );
    }
    if let Some(c) = body["nextCursor"].as_str() {
        let _ = writeln!(out, "more: add --cursor {c}");
    }
    for w in body["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "warning: {}", w.as_str().unwrap_or(""));
    }
    out
}

/// Renders dependency edges as a table, columns as wide as their longest name.
pub fn render_deps(body: &Value) -> String {
    let edges: Vec<&Value> = body["dependencies"].as_array().into_iter().flatten().collect();
    let name = |e: &Value, k: &str| e[k].as_str().unwrap_or("").to_owned();
    let width = |k: &str, title: &str| {
        edges.iter().map(|e| name(e, k).chars().count()).max().unwrap_or(0).max(title.len())
    };
    let (pw, cw) = (width("parent", "PARENT"), width("child", "CHILD"));
    let mut out = String::new();
    let _ = writeln!(out, "{:<pw$}  {:<cw$}  {:>8}  {:>8}", "PARENT", "CHILD", "CALLS", "ERRORS");
    for e in edges {
        let _ = writeln!(
            out,
            "{:<pw$}  {:<cw$}  {:>8}  {:>8}",
            name(e, "parent"),
            name(e, "child"),
            // Numbers, not JSON values: a `Value` ignores width and alignment.
            e["callCount"].as_u64().unwrap_or(0),
            e["errorCount"].as_u64().unwrap_or(0)
        );
    }
    out
}

/// Renders the service list, one per line.
pub fn render_services(body: &Value) -> String {
    body["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| format!("{s}\n"))
        .collect()
}
