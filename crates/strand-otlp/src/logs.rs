//! OTLP logs ⇄ Strand log model.
//!
//! [`from_request`] validates and converts an `ExportLogsServiceRequest`: a record with a
//! malformed trace or span id is rejected on its own (and described in [`Rejections`]);
//! the rest is kept. Ids are optional in the log data model: an empty id, or the all-zero
//! id W3C defines as "no context", means the record has none. A span id needs a trace id.
//! [`to_resource_logs`] turns stored records back into OTLP, the shape of the logs API.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1 as pl;
use strand_core::{LogBatch, LogRecord, ResourceLogs, ScopeLogs, SpanId, TraceId};

use crate::{Rejections, convert_attrs, convert_resource, convert_scope, convert_value, resource_to_otlp};
use crate::{attrs_to_otlp, scope_to_otlp, value_to_otlp};

/// Converts a request, rejecting invalid records one by one. Empty groups are dropped.
pub fn from_request(req: ExportLogsServiceRequest) -> (LogBatch, Rejections) {
    let mut rejections = Rejections::default();
    let mut batch = LogBatch::default();
    for (ri, rl) in req.resource_logs.into_iter().enumerate() {
        let resource = match convert_resource(rl.resource, rl.schema_url) {
            Ok(r) => r,
            Err(e) => {
                let n: usize = rl.scope_logs.iter().map(|s| s.log_records.len()).sum();
                for _ in 0..n {
                    rejections.push_record(format!("resource {ri}: attributes: {e}"));
                }
                continue;
            }
        };
        let mut scope_logs = Vec::with_capacity(rl.scope_logs.len());
        for (si, sl) in rl.scope_logs.into_iter().enumerate() {
            let scope = match convert_scope(sl.scope, sl.schema_url) {
                Ok(s) => s,
                Err(e) => {
                    for _ in 0..sl.log_records.len() {
                        rejections.push_record(format!("resource {ri} scope {si}: attributes: {e}"));
                    }
                    continue;
                }
            };
            let mut records = Vec::with_capacity(sl.log_records.len());
            for (li, r) in sl.log_records.into_iter().enumerate() {
                match convert_record(r) {
                    Ok(r) => records.push(r),
                    Err(e) => {
                        rejections.push_record(format!("resource {ri} scope {si} log record {li}: {e}"))
                    }
                }
            }
            if !records.is_empty() {
                scope_logs.push(ScopeLogs { scope, records });
            }
        }
        if !scope_logs.is_empty() {
            batch.resource_logs.push(ResourceLogs { resource, scope_logs });
        }
    }
    (batch, rejections)
}

/// An optional id: empty or all zero is "none"; any other length is an error.
fn optional_id<T>(
    bytes: &[u8],
    width: usize,
    what: &str,
    parse: impl Fn(&[u8]) -> Result<T, strand_core::IdError>,
) -> Result<Option<T>, String> {
    if bytes.is_empty() || (bytes.len() == width && bytes.iter().all(|b| *b == 0)) {
        return Ok(None);
    }
    if bytes.len() != width {
        return Err(format!("{what} must be {width} bytes or empty, got {}", bytes.len()));
    }
    parse(bytes).map(Some).map_err(|e| e.to_string())
}

fn convert_record(r: pl::LogRecord) -> Result<LogRecord, String> {
    let trace_id = optional_id(&r.trace_id, 16, "trace_id", TraceId::from_slice)?;
    let span_id = optional_id(&r.span_id, 8, "span_id", SpanId::from_slice)?;
    if span_id.is_some() && trace_id.is_none() {
        return Err("span_id given without a trace_id".into());
    }
    let severity_number = u8::try_from(r.severity_number)
        .ok()
        .filter(|n| *n <= 24)
        .ok_or_else(|| format!("severity_number must be 0-24, got {}", r.severity_number))?;
    Ok(LogRecord {
        time_unix_nano: r.time_unix_nano,
        observed_time_unix_nano: r.observed_time_unix_nano,
        severity_number,
        severity_text: r.severity_text,
        body: convert_value(r.body, 0).map_err(|e| format!("body: {e}"))?,
        attributes: convert_attrs(r.attributes).map_err(|e| format!("attributes: {e}"))?,
        dropped_attributes_count: r.dropped_attributes_count,
        flags: r.flags,
        trace_id,
        span_id,
        event_name: r.event_name,
    })
}

/// Converts a batch (for instance stored records regrouped by
/// [`LogBatch::from_stored`]) back into OTLP resource logs.
pub fn to_resource_logs(batch: &LogBatch) -> Vec<pl::ResourceLogs> {
    batch
        .resource_logs
        .iter()
        .map(|rl| pl::ResourceLogs {
            resource: Some(resource_to_otlp(&rl.resource)),
            schema_url: rl.resource.schema_url.clone(),
            scope_logs: rl
                .scope_logs
                .iter()
                .map(|sl| pl::ScopeLogs {
                    scope: Some(scope_to_otlp(&sl.scope)),
                    schema_url: sl.scope.schema_url.clone(),
                    log_records: sl.records.iter().map(record_to_otlp).collect(),
                })
                .collect(),
        })
        .collect()
}

/// Converts one record to OTLP.
pub fn record_to_otlp(r: &LogRecord) -> pl::LogRecord {
    pl::LogRecord {
        time_unix_nano: r.time_unix_nano,
        observed_time_unix_nano: r.observed_time_unix_nano,
        severity_number: i32::from(r.severity_number),
        severity_text: r.severity_text.clone(),
        body: (r.body != strand_core::AnyValue::Empty).then(|| value_to_otlp(&r.body)),
        attributes: attrs_to_otlp(&r.attributes),
        dropped_attributes_count: r.dropped_attributes_count,
        flags: r.flags,
        trace_id: r.trace_id.map(|t| t.0.to_vec()).unwrap_or_default(),
        span_id: r.span_id.map(|s| s.0.to_vec()).unwrap_or_default(),
        event_name: r.event_name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1 as pc;
    use opentelemetry_proto::tonic::resource::v1 as pr;

    use super::*;

    fn record(trace_id: Vec<u8>, span_id: Vec<u8>) -> pl::LogRecord {
        pl::LogRecord { trace_id, span_id, time_unix_nano: 5, ..Default::default() }
    }

    fn request(log_records: Vec<pl::LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![pl::ResourceLogs {
                scope_logs: vec![pl::ScopeLogs { log_records, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn malformed_ids_are_rejected_one_by_one_and_missing_ones_are_fine() {
        let (batch, rej) = from_request(request(vec![
            record(vec![1; 16], vec![2; 8]),
            record(vec![], vec![]),
            record(vec![0; 16], vec![0; 8]),
            record(vec![1; 15], vec![2; 8]),
            record(vec![1; 16], vec![2; 3]),
            record(vec![], vec![2; 8]),
            pl::LogRecord { severity_number: 40, ..record(vec![], vec![]) },
        ]));
        assert_eq!(batch.record_count(), 3);
        let kept = &batch.resource_logs[0].scope_logs[0].records;
        assert!(kept[0].trace_id.is_some() && kept[0].span_id.is_some());
        assert!(kept[1].trace_id.is_none() && kept[2].trace_id.is_none(), "empty and zero ids mean none");
        assert_eq!(rej.count, 4);
        assert_eq!(
            rej.message(),
            "resource 0 scope 0 log record 3: trace_id must be 16 bytes or empty, got 15; \
             resource 0 scope 0 log record 4: span_id must be 8 bytes or empty, got 3; \
             resource 0 scope 0 log record 5: span_id given without a trace_id; \
             resource 0 scope 0 log record 6: severity_number must be 0-24, got 40"
        );
    }

    #[test]
    fn every_field_survives_a_round_trip() {
        use pc::any_value::Value as V;
        let kv = |k: &str, v: V| pc::KeyValue {
            key: k.into(),
            value: Some(pc::AnyValue { value: Some(v) }),
            key_strindex: 0,
        };
        let r = pl::LogRecord {
            time_unix_nano: 10,
            observed_time_unix_nano: 11,
            severity_number: 17,
            severity_text: "Error".into(),
            body: Some(pc::AnyValue {
                value: Some(V::KvlistValue(pc::KeyValueList {
                    values: vec![kv("msg", V::StringValue("boom".into()))],
                })),
            }),
            attributes: vec![kv("n", V::IntValue(3)), kv("b", V::BytesValue(vec![0, 1]))],
            dropped_attributes_count: 2,
            flags: 1,
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            event_name: "app.failure".into(),
        };
        let mut req = request(vec![r, record(vec![], vec![])]);
        req.resource_logs[0].schema_url = "https://opentelemetry.io/schemas/1.26.0".into();
        req.resource_logs[0].resource = Some(pr::Resource {
            attributes: vec![kv("service.name", V::StringValue("svc".into()))],
            dropped_attributes_count: 4,
            entity_refs: vec![],
        });
        req.resource_logs[0].scope_logs[0].scope = Some(pc::InstrumentationScope {
            name: "lib".into(),
            version: "1".into(),
            attributes: vec![kv("s", V::BoolValue(true))],
            dropped_attributes_count: 5,
        });
        req.resource_logs[0].scope_logs[0].schema_url = "scope-schema".into();
        let (batch, rej) = from_request(req.clone());
        assert_eq!(rej.count, 0);
        assert_eq!(to_resource_logs(&batch), req.resource_logs);
    }
}
