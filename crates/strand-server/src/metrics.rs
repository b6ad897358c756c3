//! `GET /metrics`: every component's [`MetricFamily`]s, the standard `process_*` metrics and
//! `strand_build_info`, written in Prometheus' text format (0.0.4) by the `prometheus`
//! crate's encoder (ADR 006 says why this crate).

use prometheus::core::Collector as _;
use prometheus::proto;
use strand_core::MetricFamily;
use strand_core::metrics::{MetricKind, SampleValue};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Writes the families, then the process's metrics and the build info. Families without a
/// sample are left out (the format has no empty families).
pub fn encode(families: &[MetricFamily]) -> Result<String, prometheus::Error> {
    let mut out: Vec<proto::MetricFamily> =
        families.iter().filter(|f| !f.samples.is_empty()).map(to_proto).collect();
    out.extend(prometheus::process_collector::ProcessCollector::for_self().collect());
    out.push(to_proto(
        &MetricFamily::new("strand_build_info", "Strand's version; always 1.", MetricKind::Gauge)
            .with(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1.0),
    ));
    prometheus::TextEncoder::new().encode_to_string(&out)
}

/// Each tenant's families as one set: every sample gains a `tenant` label, and families of
/// the same name are merged (in the order first seen).
pub fn label_tenants(per_tenant: Vec<(String, Vec<MetricFamily>)>) -> Vec<MetricFamily> {
    let mut out: Vec<MetricFamily> = Vec::new();
    for (tenant, families) in per_tenant {
        for mut f in families {
            for s in &mut f.samples {
                s.labels.insert(0, ("tenant", tenant.clone()));
            }
            match out.iter_mut().find(|o| o.name == f.name) {
                Some(o) => o.samples.extend(f.samples),
                None => out.push(f),
            }
        }
    }
    out
}

fn to_proto(f: &MetricFamily) -> proto::MetricFamily {
    let mut family = proto::MetricFamily::default();
    family.set_name(f.name.clone());
    family.set_help(f.help.clone());
    family.set_field_type(match f.kind {
        MetricKind::Counter => proto::MetricType::COUNTER,
        MetricKind::Gauge => proto::MetricType::GAUGE,
        MetricKind::Histogram => proto::MetricType::HISTOGRAM,
    });
    let metrics = f
        .samples
        .iter()
        .map(|s| {
            let mut m = proto::Metric::default();
            m.set_label(
                s.labels
                    .iter()
                    .map(|(k, v)| {
                        let mut l = proto::LabelPair::default();
                        l.set_name((*k).to_owned());
                        l.set_value(v.clone());
                        l
                    })
                    .collect(),
            );
            match (&s.value, f.kind) {
                (SampleValue::Number(v), MetricKind::Counter) => {
                    let mut c = proto::Counter::default();
                    c.set_value(*v);
                    m.set_counter(c);
                }
                (SampleValue::Number(v), _) => {
                    let mut g = proto::Gauge::default();
                    g.set_value(*v);
                    m.set_gauge(g);
                }
                (SampleValue::Histogram { buckets, sum, count }, _) => {
                    let mut h = proto::Histogram::default();
                    h.set_sample_count(*count);
                    h.set_sample_sum(*sum);
                    h.set_bucket(
                        buckets
                            .iter()
                            .map(|(bound, n)| {
                                let mut b = proto::Bucket::default();
                                b.set_upper_bound(*bound);
                                b.set_cumulative_count(*n);
                                b
                            })
                            .collect(),
                    );
                    m.set_histogram(h);
                }
            }
            m
        })
        .collect();
    family.set_metric(metrics);
    family
}
