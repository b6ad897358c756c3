//! [`TelemetryConfig`]: what [`crate::init`] sets up, from YAML and the standard `OTEL_*`
//! environment variables (which win over the file, so a deployment can override it).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Telemetry of one service. Every field has a default; `TelemetryConfig::default()` with a
/// service name exports OTLP/gRPC to `http://localhost:4317`, samples everything, and logs
/// JSON lines with trace ids to stdout.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `service.name` (`OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// `service.version`, when known.
    pub service_version: Option<String>,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES=k=v,k2=v2` adds to them).
    pub resource: BTreeMap<String, String>,
    /// Export spans (and logs, with `logs.export`). `false` (or `OTEL_SDK_DISABLED=true`)
    /// keeps propagation and logging but sends nothing.
    pub enabled: bool,
    /// Collector endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._TRACES_ENDPOINT`). Default:
    /// `http://localhost:4317` for gRPC, `http://localhost:4318` for HTTP. For HTTP the
    /// signal path (`/v1/traces`, `/v1/logs`) is added when the endpoint has none.
    pub endpoint: Option<String>,
    /// `grpc`, `http/protobuf` or `http/json` (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub protocol: ExportProtocol,
    /// Which traces to record (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
    pub sampler: SamplerConfig,
    /// The batching span processor (`OTEL_BSP_*`).
    pub batch: BatchConfig,
    /// Log lines and the OTLP logs exporter.
    pub logs: LogsConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "unknown_service".into(),
            service_version: None,
            resource: BTreeMap::new(),
            enabled: true,
            endpoint: None,
            protocol: ExportProtocol::Grpc,
            sampler: SamplerConfig::ParentBasedAlwaysOn,
            batch: BatchConfig::default(),
            logs: LogsConfig::default(),
        }
    }
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ExportProtocol {
    /// OTLP/gRPC.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies.
    #[serde(rename = "http/json")]
    HttpJson,
}

/// The sampler, by the names `OTEL_TRACES_SAMPLER` uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerConfig {
    /// Record every trace.
    AlwaysOn,
    /// Record nothing (propagation still works).
    AlwaysOff,
    /// Record this share of traces by trace id, ignoring the caller's decision.
    TraceIdRatio {
        /// 0.0 to 1.0.
        ratio: f64,
    },
    /// Follow the caller's decision; a new trace is recorded.
    ParentBasedAlwaysOn,
    /// Follow the caller's decision; of new traces, record this share.
    ParentBasedTraceIdRatio {
        /// 0.0 to 1.0.
        ratio: f64,
    },
    /// Strategies polled from a Jaeger remote-sampling endpoint (strand's `:5778`), parent
    /// based. Needs the `jaeger-remote` feature.
    JaegerRemote {
        /// e.g. `http://localhost:5778/sampling`.
        endpoint: String,
        /// How often strategies are fetched.
        #[serde(default = "default_refresh", deserialize_with = "duration")]
        refresh_interval: Duration,
        /// Share of new traces recorded until the first strategy arrives.
        #[serde(default = "default_initial_ratio")]
        initial_ratio: f64,
    },
}

fn default_refresh() -> Duration {
    Duration::from_secs(60)
}

fn default_initial_ratio() -> f64 {
    1.0
}

/// The batching span processor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Spans waiting for export; more are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue_size: usize,
    /// Spans per export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_export_batch_size: usize,
    /// Export at least this often (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds in the variable).
    #[serde(deserialize_with = "duration")]
    pub scheduled_delay: Duration,
    /// Give up on one export after this long (`OTEL_BSP_EXPORT_TIMEOUT`, milliseconds).
    #[serde(deserialize_with = "duration")]
    pub export_timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay: Duration::from_secs(5),
            export_timeout: Duration::from_secs(30),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// `json` (one object per line with `trace_id` and `span_id`), `text`, or `none`.
    pub format: LogFormat,
    /// `tracing` filter directives, e.g. `info,my_crate=debug` (`RUST_LOG` wins).
    pub level: String,
    /// Also export log records over OTLP to the same endpoint.
    pub export: bool,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self { format: LogFormat::Json, level: "info".into(), export: false }
    }
}

/// Format of log lines on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// `timestamp LEVEL target: message key=value ... trace_id=... span_id=...`.
    Text,
    /// No log lines.
    None,
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML did not parse or had unknown keys.
    #[error("invalid telemetry configuration: {0}")]
    Yaml(String),
    /// A value (from the file or an environment variable) is out of range.
    #[error("invalid telemetry configuration: {0}")]
    Invalid(String),
}

impl TelemetryConfig {
    /// A configuration for `service_name` with every other setting at its default.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self { service_name: service_name.into(), ..Self::default() }
    }

    /// Reads YAML (the fields of this struct; unknown keys are errors), then applies the
    /// `OTEL_*` environment variables.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        cfg.with_env_from(|k| std::env::var(k).ok())
    }

    /// Applies the standard `OTEL_*` environment variables over this configuration.
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_env_from(|k| std::env::var(k).ok())
    }

    /// [`TelemetryConfig::with_env`] with the variables from `var` (for tests).
    pub fn with_env_from(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |k: &str| var(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        if let Some(v) = var("OTEL_SERVICE_NAME") {
            self.service_name = v;
        }
        if let Some(v) = var("OTEL_RESOURCE_ATTRIBUTES") {
            for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
                match pair.split_once('=') {
                    Some((k, val)) if !k.trim().is_empty() => {
                        let key = k.trim().to_owned();
                        let value = crate::percent_decode(val.trim());
                        if key == "service.name" && var("OTEL_SERVICE_NAME").is_none() {
                            self.service_name = value.clone();
                        }
                        self.resource.insert(key, value);
                    }
                    _ => problems.push(format!("OTEL_RESOURCE_ATTRIBUTES: `{pair}` is not key=value")),
                }
            }
        }
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            self.enabled = false;
        }
        if let Some(v) =
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        {
            self.endpoint = Some(v);
        }
        if let Some(v) =
            var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            match v.as_str() {
                "grpc" => self.protocol = ExportProtocol::Grpc,
                "http/protobuf" => self.protocol = ExportProtocol::HttpProtobuf,
                "http/json" => self.protocol = ExportProtocol::HttpJson,
                other => problems.push(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL: `{other}` is not grpc, http/protobuf or http/json"
                )),
            }
        }
        if let Some(name) = var("OTEL_TRACES_SAMPLER") {
            let arg = var("OTEL_TRACES_SAMPLER_ARG");
            let ratio = || match arg.as_deref().map(str::parse::<f64>) {
                None => Ok(1.0),
                Some(Ok(r)) => Ok(r),
                Some(Err(_)) => Err(format!(
                    "OTEL_TRACES_SAMPLER_ARG: `{}` is not a number",
                    arg.clone().unwrap_or_default()
                )),
            };
            let sampler = match name.as_str() {
                "always_on" => Ok(SamplerConfig::AlwaysOn),
                "always_off" => Ok(SamplerConfig::AlwaysOff),
                "traceidratio" => ratio().map(|ratio| SamplerConfig::TraceIdRatio { ratio }),
                "parentbased_always_on" => Ok(SamplerConfig::ParentBasedAlwaysOn),
                "parentbased_traceidratio" => {
                    ratio().map(|ratio| SamplerConfig::ParentBasedTraceIdRatio { ratio })
                }
                "jaeger_remote" | "parentbased_jaeger_remote" => Ok(jaeger_remote_from_arg(arg.as_deref())),
                other => Err(format!("OTEL_TRACES_SAMPLER: `{other}` is not a known sampler")),
            };
            match sampler {
                Ok(s) => self.sampler = s,
                Err(e) => problems.push(e),
            }
        }
        let millis = |name: &str, target: &mut Duration, problems: &mut Vec<String>| {
            if let Some(v) = var(name) {
                match v.parse::<u64>() {
                    Ok(ms) => *target = Duration::from_millis(ms),
                    Err(_) => problems.push(format!("{name}: `{v}` is not a number of milliseconds")),
                }
            }
        };
        millis("OTEL_BSP_SCHEDULE_DELAY", &mut self.batch.scheduled_delay, &mut problems);
        millis("OTEL_BSP_EXPORT_TIMEOUT", &mut self.batch.export_timeout, &mut problems);
        let count = |name: &str, target: &mut usize, problems: &mut Vec<String>| {
            if let Some(v) = var(name) {
                match v.parse::<usize>() {
                    Ok(n) => *target = n,
                    Err(_) => problems.push(format!("{name}: `{v}` is not a count")),
                }
            }
        };
        count("OTEL_BSP_MAX_QUEUE_SIZE", &mut self.batch.max_queue_size, &mut problems);
        count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &mut self.batch.max_export_batch_size, &mut problems);
        problems.extend(self.problems());
        if problems.is_empty() { Ok(self) } else { Err(ConfigError::Invalid(problems.join("; "))) }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.service_name.trim().is_empty() {
            p.push("service_name must not be empty".to_owned());
        }
        let ratio_ok = |r: f64| (0.0..=1.0).contains(&r);
        match &self.sampler {
            SamplerConfig::TraceIdRatio { ratio } | SamplerConfig::ParentBasedTraceIdRatio { ratio }
                if !ratio_ok(*ratio) =>
            {
                p.push(format!("sampler ratio {ratio} is not between 0 and 1"));
            }
            SamplerConfig::JaegerRemote { initial_ratio, .. } if !ratio_ok(*initial_ratio) => {
                p.push(format!("sampler initial_ratio {initial_ratio} is not between 0 and 1"));
            }
            _ => {}
        }
        if self.batch.max_export_batch_size == 0
            || self.batch.max_export_batch_size > self.batch.max_queue_size
        {
            p.push(format!(
                "batch.max_export_batch_size {} must be between 1 and max_queue_size {}",
                self.batch.max_export_batch_size, self.batch.max_queue_size
            ));
        }
        p
    }

    /// The endpoint spans go to, for the configured protocol.
    pub fn traces_endpoint(&self) -> String {
        self.signal_endpoint("traces")
    }

    /// The endpoint logs go to, for the configured protocol.
    pub fn logs_endpoint(&self) -> String {
        self.signal_endpoint("logs")
    }

    fn signal_endpoint(&self, signal: &str) -> String {
        let grpc = self.protocol == ExportProtocol::Grpc;
        let base = self.endpoint.clone().unwrap_or_else(|| {
            if grpc { "http://localhost:4317".into() } else { "http://localhost:4318".into() }
        });
        if grpc {
            return base;
        }
        let trimmed = base.trim_end_matches('/');
        let has_path = trimmed.splitn(4, '/').nth(3).is_some_and(|p| !p.is_empty());
        if has_path { trimmed.to_owned() } else { format!("{trimmed}/v1/{signal}") }
    }
}

/// `OTEL_TRACES_SAMPLER_ARG` for the Jaeger remote sampler:
/// `endpoint=http://host:5778/sampling,pollingIntervalMs=5000,initialSamplingRate=0.25`.
fn jaeger_remote_from_arg(arg: Option<&str>) -> SamplerConfig {
    let mut endpoint = "http://localhost:5778/sampling".to_owned();
    let mut refresh_interval = default_refresh();
    let mut initial_ratio = default_initial_ratio();
    for pair in arg.unwrap_or("").split(',') {
        match pair.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("endpoint", v)) => endpoint = v.to_owned(),
            Some(("pollingIntervalMs", v)) => {
                if let Ok(ms) = v.parse() {
                    refresh_interval = Duration::from_millis(ms);
                }
            }
            Some(("initialSamplingRate", v)) => {
                if let Ok(r) = v.parse() {
                    initial_ratio = r;
                }
            }
            _ => {}
        }
    }
    SamplerConfig::JaegerRemote { endpoint, refresh_interval, initial_ratio }
}

/// Durations as `250ms`, `5s`, `2m`, `1h` (or a bare number of seconds).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `1d`, `1w` (also `us`, `ns`; a bare number is seconds),
/// the units the Strand server accepts too.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration such as 250ms, 5s, 2m, 1h or 1d");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        "w" => n * 604_800.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn durations_take_the_servers_units() {
        let d = |t: &str| parse_duration(t);
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("5"), Ok(Duration::from_secs(5)));
        assert_eq!(d("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(d("2w"), Ok(Duration::from_secs(2 * 604_800)));
        assert_eq!(d("10us"), Ok(Duration::from_micros(10)));
        for bad in ["", "5x", "ms", "1e999d"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn yaml_reads_every_section_and_rejects_unknown_keys() {
        let cfg: TelemetryConfig = serde_saphyr::from_str(
            "service_name: gateway\nprotocol: http/json\nendpoint: http://strand:4318\n\
             sampler: { type: parent_based_trace_id_ratio, ratio: 0.25 }\n\
             batch: { max_queue_size: 100, max_export_batch_size: 10, scheduled_delay: 250ms, export_timeout: 2s }\n\
             resource: { deployment.environment.name: demo }\nlogs: { format: text, level: debug, export: true }\n",
        )
        .expect("yaml");
        assert_eq!(cfg.service_name, "gateway");
        assert_eq!(cfg.protocol, ExportProtocol::HttpJson);
        assert_eq!(cfg.sampler, SamplerConfig::ParentBasedTraceIdRatio { ratio: 0.25 });
        assert_eq!(cfg.batch.scheduled_delay, Duration::from_millis(250));
        assert_eq!(cfg.batch.export_timeout, Duration::from_secs(2));
        assert_eq!(cfg.logs.format, LogFormat::Text);
        assert_eq!(cfg.traces_endpoint(), "http://strand:4318/v1/traces");
        assert_eq!(cfg.logs_endpoint(), "http://strand:4318/v1/logs");
        let err = TelemetryConfig::from_yaml("service_name: x\nsampler_typo: 1\n").expect_err("unknown key");
        assert!(err.to_string().contains("sampler_typo"), "{err}");
    }

    #[test]
    fn otel_environment_variables_override_the_file() {
        let cfg = TelemetryConfig::new("from-file")
            .with_env_from(env(&[
                ("OTEL_SERVICE_NAME", "from-env"),
                ("OTEL_RESOURCE_ATTRIBUTES", "team=epro,note=a%20b"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://strand:4317"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
            ]))
            .expect("valid");
        assert_eq!(cfg.service_name, "from-env");
        assert_eq!(cfg.resource["team"], "epro");
        assert_eq!(cfg.resource["note"], "a b");
        assert_eq!(cfg.traces_endpoint(), "http://strand:4317");
        assert_eq!(cfg.sampler, SamplerConfig::ParentBasedTraceIdRatio { ratio: 0.1 });
        assert_eq!(cfg.batch.scheduled_delay, Duration::from_millis(100));
        assert_eq!(cfg.batch.max_export_batch_size, 64);

        let remote = TelemetryConfig::new("x")
            .with_env_from(env(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_jaeger_remote"),
                (
                    "OTEL_TRACES_SAMPLER_ARG",
                    "endpoint=http://strand:5778/sampling,pollingIntervalMs=5000,initialSamplingRate=0.5",
                ),
            ]))
            .expect("valid");
        assert_eq!(
            remote.sampler,
            SamplerConfig::JaegerRemote {
                endpoint: "http://strand:5778/sampling".into(),
                refresh_interval: Duration::from_secs(5),
                initial_ratio: 0.5,
            }
        );
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let err = TelemetryConfig::new("x")
            .with_env_from(env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
            ]))
            .expect_err("invalid");
        let msg = err.to_string();
        for needle in ["carrier-pigeon", "ratio 2 is not between 0 and 1", "OTEL_BSP_SCHEDULE_DELAY: `soon`"]
        {
            assert!(msg.contains(needle), "{msg} lacks {needle}");
        }
    }
}
