//! Query-string parsing shared by every API: repeated keys, Go-style durations, the time
//! formats each API uses, and the configured bounds on limits and time ranges.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ApiError;

/// Bounds every search is held to.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Results per page when the request names no limit.
    pub default_limit: usize,
    /// Most results per page; larger limits are reduced and the response says so.
    pub max_limit: usize,
    /// Longest time range searched; longer ranges are shortened (keeping the end).
    pub max_range: Duration,
    /// Range searched when the request names none (ending now).
    pub default_range: Duration,
    /// Most spans of one trace a response holds: a larger trace is cut to its earliest
    /// spans by start time, and the response says so.
    pub max_trace_spans: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            default_limit: 20,
            max_limit: 1000,
            max_range: Duration::from_secs(7 * 86_400),
            default_range: Duration::from_secs(3_600),
            max_trace_spans: 20_000,
        }
    }
}

/// A query string as its `(key, value)` pairs, in order (keys may repeat).
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let raw = raw.unwrap_or("");
        serde_urlencoded::from_str::<Vec<(String, String)>>(raw)
            .map(Params)
            .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))
    }

    /// The last value of the first of `names` present, if not empty.
    pub fn get(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| {
            self.0.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
        })
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str()).collect()
    }

    /// A parsed value; the error names the parameter.
    pub fn parse_with<T>(
        &self,
        names: &[&str],
        what: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        match names.iter().find_map(|n| self.get(&[n]).map(|v| (*n, v))) {
            None => Ok(None),
            Some((name, v)) => f(v)
                .map(Some)
                .map_err(|e| ApiError::BadRequest(format!("parameter `{name}`: {e} (expected {what})"))),
        }
    }

    /// A non-negative integer.
    pub fn u64(&self, names: &[&str]) -> Result<Option<u64>, ApiError> {
        self.parse_with(names, "a non-negative integer", |v| {
            v.parse::<u64>().map_err(|_| format!("`{v}` is not a non-negative integer"))
        })
    }

    /// A Go-style duration (`250ms`, `1.5s`, `1h30m`).
    pub fn duration(&self, names: &[&str]) -> Result<Option<Duration>, ApiError> {
        self.parse_with(names, "a duration such as 250ms, 1.5s, 1h30m or 7d", parse_go_duration)
    }
}

/// Parses a duration parameter: Go's `time.ParseDuration` syntax (what Jaeger and Tempo
/// clients send) plus `d` and `w`, the same parser as the configuration and the CLI
/// ([`strand_core::units::parse_duration`]).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    strand_core::units::parse_duration(s)
}

/// Formats a duration the way Go prints a `time.Duration` (`1.5s`, `250ms`, `1h0m0s`).
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let trim = |v: f64| {
        let s = format!("{v:.9}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{}µs", trim(ns as f64 / 1e3))
    } else if ns < 1_000_000_000 {
        format!("{}ms", trim(ns as f64 / 1e6))
    } else {
        let secs = ns / 1_000_000_000;
        let frac = ns % 1_000_000_000;
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        let s_txt = trim(s as f64 + frac as f64 / 1e9);
        match (h, m) {
            (0, 0) => format!("{s_txt}s"),
            (0, m) => format!("{m}m{s_txt}s"),
            (h, m) => format!("{h}h{m}m{s_txt}s"),
        }
    }
}

/// Now, in Unix nanoseconds.
pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Parses an RFC 3339 time into Unix nanoseconds.
pub fn parse_rfc3339(v: &str) -> Result<u64, String> {
    let t =
        chrono::DateTime::parse_from_rfc3339(v).map_err(|e| format!("`{v}` is not an RFC 3339 time: {e}"))?;
    t.timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("`{v}` is out of range"))
}

/// Parses a native-API time: RFC 3339, or an integer of Unix nanoseconds.
pub fn parse_time(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) => Ok(n),
        Err(_) => parse_rfc3339(v),
    }
}

/// A resolved time range, in Unix nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// Start (ns).
    pub start: u64,
    /// End (ns).
    pub end: u64,
}

/// A trace cut to [`QueryLimits::max_trace_spans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated {
    /// The trace.
    pub(crate) trace_id: strand_core::TraceId,
    /// Spans the trace has.
    pub(crate) stored: usize,
    /// Spans the response holds.
    pub(crate) returned: usize,
}

impl Truncated {
    /// What every API says about it.
    pub(crate) fn message(&self) -> String {
        format!(
            "this trace has {} spans; the response holds the first {} by start time (query.max_trace_spans)",
            self.stored, self.returned
        )
    }

    /// `traceId=<hex>; stored=N; returned=M`: one entry of the [`TRUNCATED_HEADER`]
    /// response header (entries of several traces are joined by `, `).
    pub(crate) fn header_value(&self) -> String {
        format!("traceId={}; stored={}; returned={}", self.trace_id, self.stored, self.returned)
    }
}

/// Response header of a trace-by-id answer whose format has no place to say it was cut.
pub(crate) const TRUNCATED_HEADER: &str = "strand-trace-truncated";

impl QueryLimits {
    /// Cuts a trace (its spans sorted by start time, as [`strand_core::Trace`] keeps them)
    /// to `max_trace_spans`.
    pub(crate) fn cut_trace(&self, trace: &mut strand_core::Trace) -> Option<Truncated> {
        let stored = trace.spans.len();
        if stored <= self.max_trace_spans {
            return None;
        }
        trace.spans.truncate(self.max_trace_spans);
        trace.spans.shrink_to_fit();
        Some(Truncated { trace_id: trace.trace_id, stored, returned: self.max_trace_spans })
    }

    /// Applies the range bounds: a missing start means `default_range` before the end (or
    /// `lookback` when given), a range longer than `max_range` is shortened.
    pub fn range(
        &self,
        start: Option<u64>,
        end: Option<u64>,
        lookback: Option<Duration>,
        warnings: &mut Vec<String>,
    ) -> Result<Range, ApiError> {
        let end = end.unwrap_or_else(now_nanos);
        let start = match (start, lookback) {
            (Some(s), _) => s,
            (None, Some(l)) => end.saturating_sub(l.as_nanos() as u64),
            (None, None) => end.saturating_sub(self.default_range.as_nanos() as u64),
        };
        if start > end {
            return Err(ApiError::BadRequest("the start of the time range is after its end".into()));
        }
        let max = self.max_range.as_nanos() as u64;
        if end - start > max {
            warnings.push(format!(
                "time range reduced to the configured maximum of {} (query.max_search_range)",
                format_go_duration(self.max_range)
            ));
            return Ok(Range { start: end - max, end });
        }
        Ok(Range { start, end })
    }

    /// Applies the limit bounds.
    pub fn limit(&self, asked: Option<u64>, warnings: &mut Vec<String>) -> Result<usize, ApiError> {
        match asked {
            None => Ok(self.default_limit),
            Some(0) => Ok(self.default_limit),
            Some(n) if n as usize > self.max_limit || n > usize::MAX as u64 => {
                warnings.push(format!(
                    "limit {n} reduced to the configured maximum of {} (query.max_search_limit)",
                    self.max_limit
                ));
                Ok(self.max_limit)
            }
            Some(n) => Ok(n as usize),
        }
    }
}

/// Checks `min <= max` for a pair of duration bounds.
pub fn check_bounds(min: Option<Duration>, max: Option<Duration>, names: &str) -> Result<(), ApiError> {
    match (min, max) {
        (Some(a), Some(b)) if a > b => {
            Err(ApiError::BadRequest(format!("{names}: the minimum is above the maximum")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_print() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("10ms"), Ok(ms(10)));
        assert_eq!(parse_go_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_go_duration("100µs"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_go_duration("1w1d"), Ok(Duration::from_secs(8 * 86_400)));
        for bad in ["", "10", "-1s", "1x", "s", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_go_duration(ms(1500)), "1.5s");
        assert_eq!(format_go_duration(ms(10)), "10ms");
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::from_nanos(1_500)), "1.5µs");
    }

    #[test]
    fn limits_and_ranges_are_bounded_with_a_warning() {
        let l = QueryLimits::default();
        let mut w = Vec::new();
        assert_eq!(l.limit(Some(5), &mut w).ok(), Some(5));
        assert_eq!(l.limit(None, &mut w).ok(), Some(20));
        assert!(w.is_empty());
        assert_eq!(l.limit(Some(1_000_000), &mut w).ok(), Some(1000));
        assert_eq!(w.len(), 1);
        let r = l.range(Some(0), Some(u64::MAX / 2), None, &mut w).expect("range");
        assert_eq!(r.end - r.start, l.max_range.as_nanos() as u64);
        assert_eq!(w.len(), 2);
        assert!(l.range(Some(10), Some(5), None, &mut w).is_err());
    }
}
