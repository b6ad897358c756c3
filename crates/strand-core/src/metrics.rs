//! Metrics as components report them: plain data, named and typed, with no exposition
//! format. The server gathers every component's [`MetricFamily`]s and writes them out in
//! Prometheus' text format with a maintained encoder.
//!
//! Names follow Prometheus' conventions: `strand_` prefix, base units (`_seconds`,
//! `_bytes`), counters end in `_total`.

/// What a family's samples measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only grows (from the process's start).
    Counter,
    /// A current level.
    Gauge,
    /// A distribution over fixed buckets.
    Histogram,
}

/// One sample's value.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleValue {
    /// A counter's or gauge's value.
    Number(f64),
    /// A histogram: cumulative counts per upper bound (the `+Inf` bucket is `count`), the
    /// sum and the count of what was observed.
    Histogram {
        /// `(upper bound, observations at or below it)`, bounds ascending.
        buckets: Vec<(f64, u64)>,
        /// Sum of the observations.
        sum: f64,
        /// Number of observations.
        count: u64,
    },
}

/// One labelled sample of a family.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: SampleValue,
}

/// A named metric and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// Full name (`strand_...`).
    pub name: String,
    /// One line of help.
    pub help: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Samples, one per label set.
    pub samples: Vec<Sample>,
}

impl MetricFamily {
    /// An empty family, to push labelled samples into.
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: MetricKind) -> Self {
        Self { name: name.into(), help: help.into(), kind, samples: Vec::new() }
    }

    /// A counter with one unlabelled sample.
    pub fn counter(name: impl Into<String>, help: impl Into<String>, value: f64) -> Self {
        Self::new(name, help, MetricKind::Counter).with(Vec::new(), value)
    }

    /// A gauge with one unlabelled sample.
    pub fn gauge(name: impl Into<String>, help: impl Into<String>, value: f64) -> Self {
        Self::new(name, help, MetricKind::Gauge).with(Vec::new(), value)
    }

    /// Adds a counter or gauge sample.
    pub fn with(mut self, labels: Vec<(&'static str, String)>, value: f64) -> Self {
        self.push(labels, value);
        self
    }

    /// Adds a counter or gauge sample.
    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push(Sample { labels, value: SampleValue::Number(value) });
    }

    /// The value of the sample with exactly these labels, if any (for tests and checks).
    pub fn value(&self, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples.iter().find_map(|s| match &s.value {
            SampleValue::Number(v)
                if s.labels.len() == labels.len()
                    && s.labels.iter().zip(labels).all(|((k, v), (wk, wv))| k == wk && v == wv) =>
            {
                Some(*v)
            }
            _ => None,
        })
    }
}
