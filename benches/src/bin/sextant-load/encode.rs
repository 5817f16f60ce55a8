//! Request bodies for each protocol, and the NDJSON size of the same rows
//! (the yardstick for MB/s and for bytes on disk).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;

use crate::generate::{CPU_FIELDS, Cpu, Log, SERVICES, SpanRec, cpu_tags, hex};

use sextant_benches::{kv, s, scope};

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("service.version", s("1.4.2")),
            kv("deployment.environment", s("production")),
        ],
        ..Default::default()
    })
}

fn by_service<T>(rows: &[T], service: impl Fn(&T) -> &'static str) -> Vec<(&'static str, Vec<&T>)> {
    SERVICES
        .iter()
        .map(|svc| {
            (
                *svc,
                rows.iter()
                    .filter(|r| service(r) == *svc)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

pub(crate) fn log_attributes(l: &Log) -> Vec<KeyValue> {
    vec![
        kv("http.route", s(l.route)),
        kv("http.status_code", any_value::Value::IntValue(l.status)),
        kv("user.id", s(&format!("u{}", l.user))),
    ]
}

/// OTLP logs, protobuf: one ResourceLogs per service.
pub(crate) fn otlp_logs(rows: &[Log]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: by_service(rows, |l| l.service)
            .into_iter()
            .map(|(svc, logs)| ResourceLogs {
                resource: resource(svc),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: logs
                        .into_iter()
                        .map(|l| LogRecord {
                            time_unix_nano: l.time_ns as u64,
                            observed_time_unix_nano: l.time_ns as u64 + 1_000,
                            severity_number: l.severity_number,
                            severity_text: l.severity_text.into(),
                            body: Some(AnyValue {
                                value: Some(s(&l.body)),
                            }),
                            attributes: log_attributes(l),
                            trace_id: l.trace_id.to_vec(),
                            span_id: l.span_id.to_vec(),
                            flags: 1,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

pub(crate) fn otlp_logs_bytes(rows: &[Log]) -> Vec<u8> {
    otlp_logs(rows).encode_to_vec()
}

/// OTLP spans, protobuf: one ResourceSpans per service.
pub(crate) fn otlp_spans(rows: &[SpanRec]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: by_service(rows, |s| s.service)
            .into_iter()
            .map(|(svc, spans)| ResourceSpans {
                resource: resource(svc),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans: spans
                        .into_iter()
                        .map(|x| Span {
                            trace_id: x.trace_id.to_vec(),
                            span_id: x.span_id.to_vec(),
                            parent_span_id: x
                                .parent_span_id
                                .map(|p| p.to_vec())
                                .unwrap_or_default(),
                            name: x.name.clone(),
                            kind: if x.parent_span_id.is_none() {
                                span::SpanKind::Server
                            } else {
                                span::SpanKind::Client
                            } as i32,
                            start_time_unix_nano: x.start_ns as u64,
                            end_time_unix_nano: (x.start_ns + x.duration_ns) as u64,
                            attributes: vec![
                                kv("http.route", s(x.route)),
                                kv("http.method", s("GET")),
                                kv(
                                    "http.status_code",
                                    any_value::Value::IntValue(if x.error { 500 } else { 200 }),
                                ),
                            ],
                            status: Some(Status {
                                code: if x.error { 2 } else { 0 },
                                message: if x.error {
                                    "internal error".into()
                                } else {
                                    String::new()
                                },
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

pub(crate) fn otlp_spans_bytes(rows: &[SpanRec]) -> Vec<u8> {
    otlp_spans(rows).encode_to_vec()
}

/// InfluxDB line protocol, nanosecond timestamps.
pub(crate) fn line_protocol(rows: &[Cpu]) -> Vec<u8> {
    let mut out = String::with_capacity(rows.len() * 300);
    for r in rows {
        out.push_str("cpu");
        for (k, v) in cpu_tags(r.host) {
            let _ = write!(out, ",{k}={v}");
        }
        for (i, (k, v)) in CPU_FIELDS.iter().zip(r.fields).enumerate() {
            let _ = write!(out, "{}{k}={v}", if i == 0 { ' ' } else { ',' });
        }
        let _ = writeln!(out, " {}", r.time_ns);
    }
    out.into_bytes()
}

fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, nanos)
        .expect("time in range")
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.into()).to_string()
}

/// The NDJSON a user would send for the same log record.
pub(crate) fn ndjson_log(l: &Log) -> String {
    format!(
        "{{\"time\":\"{}\",\"service_name\":{},\"severity_number\":{},\"severity_text\":\"{}\",\"body\":{},\"trace_id\":\"{}\",\"span_id\":\"{}\",\"attributes\":{{\"http.route\":\"{}\",\"http.status_code\":{},\"user.id\":\"u{}\"}}}}\n",
        rfc3339(l.time_ns),
        json_str(l.service),
        l.severity_number,
        l.severity_text,
        json_str(&l.body),
        hex(&l.trace_id),
        hex(&l.span_id),
        l.route,
        l.status,
        l.user
    )
}

pub(crate) fn ndjson_span(x: &SpanRec) -> String {
    format!(
        "{{\"time\":\"{}\",\"duration_ns\":{},\"trace_id\":\"{}\",\"span_id\":\"{}\",\"parent_span_id\":{},\"service_name\":{},\"name\":{},\"status_code\":\"{}\",\"attributes\":{{\"http.route\":\"{}\",\"http.method\":\"GET\",\"http.status_code\":{}}}}}\n",
        rfc3339(x.start_ns),
        x.duration_ns,
        hex(&x.trace_id),
        hex(&x.span_id),
        x.parent_span_id
            .map_or("null".into(), |p| format!("\"{}\"", hex(&p))),
        json_str(x.service),
        json_str(&x.name),
        if x.error { "error" } else { "unset" },
        x.route,
        if x.error { 500 } else { 200 }
    )
}

pub(crate) fn ndjson_cpu(r: &Cpu) -> String {
    let mut out = format!("{{\"time\":\"{}\"", rfc3339(r.time_ns));
    for (k, v) in cpu_tags(r.host) {
        let _ = write!(out, ",\"{k}\":\"{v}\"");
    }
    for (k, v) in CPU_FIELDS.iter().zip(r.fields) {
        let _ = write!(out, ",\"{k}\":{v}");
    }
    out.push_str("}\n");
    out
}

/// PostgreSQL COPY text escaping.
fn copy_text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

/// The columns the PostgreSQL peer and the pgwire COPY path load for logs.
pub(crate) const LOG_COPY_COLUMNS: &str = "time, observed_time, service_name, severity_number, severity_text, body, trace_id, span_id, flags, attributes, resource_attributes, scope_name, scope_version";

fn log_attributes_json(l: &Log) -> String {
    format!(
        "{{\"http.route\":\"{}\",\"http.status_code\":{},\"user.id\":\"u{}\"}}",
        l.route, l.status, l.user
    )
}

fn resource_json(service: &str) -> String {
    format!(
        "{{\"deployment.environment\":\"production\",\"service.name\":\"{service}\",\"service.version\":\"1.4.2\"}}"
    )
}

/// COPY text rows of `LOG_COPY_COLUMNS`, the values Sextant stores for the
/// same OTLP record.
pub(crate) fn copy_logs(rows: &[Log]) -> Vec<u8> {
    let mut out = String::with_capacity(rows.len() * 600);
    for l in rows {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t1\t{}\t{}\tsextant-bench\t1.0",
            rfc3339(l.time_ns),
            rfc3339(l.time_ns + 1_000),
            l.service,
            l.severity_number,
            l.severity_text,
            copy_text(&l.body),
            hex(&l.trace_id),
            hex(&l.span_id),
            copy_text(&log_attributes_json(l)),
            copy_text(&resource_json(l.service)),
        );
    }
    out.into_bytes()
}

pub(crate) const SPAN_COPY_COLUMNS: &str = "time, end_time, duration_ns, trace_id, span_id, parent_span_id, service_name, name, kind, status_code, status_message, attributes, resource_attributes";

pub(crate) fn copy_spans(rows: &[SpanRec]) -> Vec<u8> {
    let mut out = String::with_capacity(rows.len() * 400);
    for x in rows {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{{\"http.method\":\"GET\",\"http.route\":\"{}\",\"http.status_code\":{}}}\t{}",
            rfc3339(x.start_ns),
            rfc3339(x.start_ns + x.duration_ns),
            x.duration_ns,
            hex(&x.trace_id),
            hex(&x.span_id),
            x.parent_span_id.map_or("\\N".into(), |p| hex(&p)),
            x.service,
            x.name,
            if x.parent_span_id.is_none() {
                "server"
            } else {
                "client"
            },
            if x.error { "error" } else { "unset" },
            if x.error { "internal error" } else { "" },
            x.route,
            if x.error { 500 } else { 200 },
            copy_text(&resource_json(x.service)),
        );
    }
    out.into_bytes()
}

pub(crate) fn cpu_copy_columns() -> String {
    let mut cols = vec!["time".to_string()];
    cols.extend(cpu_tags(0).iter().map(|(k, _)| k.to_string()));
    cols.extend(CPU_FIELDS.iter().map(|s| s.to_string()));
    cols.join(", ")
}

pub(crate) fn copy_cpu(rows: &[Cpu]) -> Vec<u8> {
    let mut out = String::with_capacity(rows.len() * 250);
    for r in rows {
        out.push_str(&rfc3339(r.time_ns));
        for (_, v) in cpu_tags(r.host) {
            out.push('\t');
            out.push_str(&v);
        }
        for v in r.fields {
            let _ = write!(out, "\t{v}");
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// A multi-row INSERT of cpu rows (the pgwire INSERT path).
pub(crate) fn insert_cpu(rows: &[Cpu]) -> String {
    let mut out = format!("INSERT INTO cpu_insert ({}) VALUES ", cpu_copy_columns());
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "('{}'", rfc3339(r.time_ns));
        for (_, v) in cpu_tags(r.host) {
            let _ = write!(out, ",'{v}'");
        }
        for v in r.fields {
            let _ = write!(out, ",{v}");
        }
        out.push(')');
    }
    out
}

/// The same log records as an Arrow batch (the Flight SQL bulk-ingest path),
/// with the columns of `LOG_COPY_COLUMNS`.
pub(crate) fn arrow_logs(rows: &[Log]) -> RecordBatch {
    let ts = |f: &dyn Fn(&Log) -> i64| -> ArrayRef {
        Arc::new(
            TimestampNanosecondArray::from_iter_values(rows.iter().map(f)).with_timezone("UTC"),
        )
    };
    let text = |f: &dyn Fn(&Log) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "observed_time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        ),
        Field::new("service_name", DataType::Utf8, true),
        Field::new("severity_number", DataType::Int32, true),
        Field::new("severity_text", DataType::Utf8, true),
        Field::new("body", DataType::Utf8, true),
        Field::new("trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, true),
        Field::new("flags", DataType::Int64, true),
        Field::new("attributes", DataType::Utf8, true),
        Field::new("resource_attributes", DataType::Utf8, true),
        Field::new("scope_name", DataType::Utf8, true),
        Field::new("scope_version", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        ts(&|l| l.time_ns),
        ts(&|l| l.time_ns + 1_000),
        text(&|l| l.service.to_string()),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|l| l.severity_number),
        )),
        text(&|l| l.severity_text.to_string()),
        text(&|l| l.body.clone()),
        text(&|l| hex(&l.trace_id)),
        text(&|l| hex(&l.span_id)),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| 1))),
        text(&log_attributes_json),
        text(&|l| resource_json(l.service)),
        text(&|_| "sextant-bench".into()),
        text(&|_| "1.0".into()),
    ];
    RecordBatch::try_new(schema, columns).expect("columns match the schema")
}
