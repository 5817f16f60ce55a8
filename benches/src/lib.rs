//! Deterministic inputs for Sextant's benchmarks.
//!
//! Each generator builds a request body the way a real client would send
//! it (TSBS-like `cpu` line protocol, NDJSON logs, OTLP logs/spans/metrics,
//! Prometheus remote write), with a fixed record count and no randomness, so
//! runs are comparable. The criterion benches in `benches/` time the
//! decoders on these bodies; the load tool (issue #7) will reuse them.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use sextant_ingest::prometheus::{Label, Sample, TimeSeries, WriteRequest};

/// 2026-11-22T00:00:00Z in nanoseconds.
pub const START_NS: i64 = 1_795_305_600_000_000_000;

const SERVICES: [&str; 5] = ["checkout", "cart", "payment", "search", "frontend"];
const ROUTES: [&str; 4] = ["/api/cart", "/api/pay", "/search", "/"];
const WORDS: [&str; 12] = [
    "request", "handled", "user", "session", "timeout", "cache", "miss", "database", "query",
    "retry", "upstream", "latency",
];

/// A 200–400 byte log message, deterministic in `i`.
fn message(i: usize) -> String {
    let mut s = String::with_capacity(400);
    let target = 200 + (i * 37) % 200;
    let mut k = i;
    while s.len() < target {
        s.push_str(WORDS[k % WORDS.len()]);
        s.push(' ');
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    s.truncate(target);
    s
}

fn id(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|b| ((i * 131 + b * 17 + 1) % 251) as u8)
        .collect()
}

pub fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

pub fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("service.version", s("1.4.2")),
            kv("deployment.environment", s("production")),
            kv("host.name", s("web-17")),
        ],
        ..Default::default()
    })
}

pub fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "sextant-bench".into(),
        version: "1.0".into(),
        ..Default::default()
    })
}

/// TSBS `cpu-only`: one line per host and 10-second step, 10 fields.
pub fn line_protocol(lines: usize) -> String {
    let mut out = String::with_capacity(lines * 260);
    for i in 0..lines {
        let host = i % 100;
        let t = START_NS + (i / 100) as i64 * 10_000_000_000;
        out.push_str(&format!(
            "cpu,hostname=host_{host},region=eu-west-{r},datacenter=eu-west-{r}a,rack={rack},os=Ubuntu16.04LTS,arch=x64,team=SF,service={svc},service_version=1,service_environment=production ",
            r = host % 3,
            rack = host % 50,
            svc = host % 20,
        ));
        let f = |k: usize| ((i * 7 + k * 13) % 100) as f64 + 0.5;
        out.push_str(&format!(
            "usage_user={},usage_system={},usage_idle={},usage_nice={},usage_iowait={},usage_irq={},usage_softirq={},usage_steal={},usage_guest={},usage_guest_nice={} {t}\n",
            f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), f(9)
        ));
    }
    out
}

/// NDJSON logs with a nested object (flattened on ingest).
pub fn ndjson_logs(rows: usize) -> String {
    let mut out = String::with_capacity(rows * 450);
    for i in 0..rows {
        let line = serde_json::json!({
            "time": START_NS + i as i64 * 1_000_000,
            "service": SERVICES[i % SERVICES.len()],
            "level": if i.is_multiple_of(50) { "error" } else { "info" },
            "message": message(i),
            "http": {"route": ROUTES[i % ROUTES.len()], "status": if i.is_multiple_of(50) { 500 } else { 200 }},
            "duration_ms": (i % 1000) as f64 / 10.0,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// OTLP logs: `records` log records over five services.
pub fn otlp_logs(records: usize) -> ExportLogsServiceRequest {
    let per = records / SERVICES.len();
    ExportLogsServiceRequest {
        resource_logs: SERVICES
            .iter()
            .enumerate()
            .map(|(si, svc)| ResourceLogs {
                resource: resource(svc),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: (0..per)
                        .map(|j| {
                            let i = si * per + j;
                            let t = (START_NS + i as i64 * 1_000_000) as u64;
                            LogRecord {
                                time_unix_nano: t,
                                observed_time_unix_nano: t + 1000,
                                severity_number: if i.is_multiple_of(50) { 17 } else { 9 },
                                severity_text: if i.is_multiple_of(50) {
                                    "ERROR"
                                } else {
                                    "INFO"
                                }
                                .into(),
                                body: Some(AnyValue {
                                    value: Some(s(&message(i))),
                                }),
                                attributes: vec![
                                    kv("http.route", s(ROUTES[i % ROUTES.len()])),
                                    kv("http.status_code", any_value::Value::IntValue(200)),
                                    kv("user.id", s(&format!("u{}", i % 997))),
                                ],
                                trace_id: id(i / 4, 16),
                                span_id: id(i, 8),
                                flags: 1,
                                ..Default::default()
                            }
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// OTLP spans: `spans` spans over five services, traces of four spans.
pub fn otlp_traces(spans: usize) -> ExportTraceServiceRequest {
    let per = spans / SERVICES.len();
    ExportTraceServiceRequest {
        resource_spans: SERVICES
            .iter()
            .enumerate()
            .map(|(si, svc)| ResourceSpans {
                resource: resource(svc),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans: (0..per)
                        .map(|j| {
                            let i = si * per + j;
                            let start = (START_NS + i as i64 * 1_000_000) as u64;
                            Span {
                                trace_id: id(i / 4, 16),
                                span_id: id(i, 8),
                                parent_span_id: if i.is_multiple_of(4) {
                                    vec![]
                                } else {
                                    id(i - 1, 8)
                                },
                                name: format!("GET {}", ROUTES[i % ROUTES.len()]),
                                kind: span::SpanKind::Server as i32,
                                start_time_unix_nano: start,
                                end_time_unix_nano: start + 1_000 * (i % 5000) as u64,
                                attributes: vec![
                                    kv("http.route", s(ROUTES[i % ROUTES.len()])),
                                    kv("http.method", s("GET")),
                                    kv("http.status_code", any_value::Value::IntValue(200)),
                                    kv("net.peer.port", any_value::Value::IntValue(443)),
                                ],
                                events: if i.is_multiple_of(50) {
                                    vec![span::Event {
                                        time_unix_nano: start + 500,
                                        name: "exception".into(),
                                        attributes: vec![kv("exception.message", s("boom"))],
                                        ..Default::default()
                                    }]
                                } else {
                                    vec![]
                                },
                                status: Some(Status {
                                    code: if i.is_multiple_of(50) { 2 } else { 0 },
                                    message: String::new(),
                                }),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// OTLP metrics: cumulative sums, `points` data points over 20 metrics.
pub fn otlp_metrics(points: usize) -> ExportMetricsServiceRequest {
    let metrics = 20;
    let per = points / metrics;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("checkout"),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: (0..metrics)
                    .map(|m| Metric {
                        name: format!("http.server.requests.{m}"),
                        description: "requests served".into(),
                        unit: "1".into(),
                        data: Some(metric::Data::Sum(Sum {
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                            data_points: (0..per)
                                .map(|j| NumberDataPoint {
                                    attributes: vec![
                                        kv("http.route", s(ROUTES[j % ROUTES.len()])),
                                        kv("http.status_code", any_value::Value::IntValue(200)),
                                    ],
                                    start_time_unix_nano: START_NS as u64,
                                    time_unix_nano: (START_NS + j as i64 * 10_000_000_000) as u64,
                                    value: Some(number_data_point::Value::AsInt(j as i64 * 3)),
                                    ..Default::default()
                                })
                                .collect(),
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Prometheus remote write: `series` series of `samples` samples each, over
/// 20 metric names (the shape of a Prometheus shard's batch).
pub fn remote_write(series: usize, samples: usize) -> WriteRequest {
    WriteRequest {
        timeseries: (0..series)
            .map(|i| TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: format!("node_cpu_seconds_total_{}", i % 20),
                    },
                    Label {
                        name: "instance".into(),
                        value: format!("host-{}:9100", i / 20),
                    },
                    Label {
                        name: "job".into(),
                        value: "node".into(),
                    },
                    Label {
                        name: "mode".into(),
                        value: ["idle", "user", "system", "iowait"][i % 4].into(),
                    },
                ],
                samples: (0..samples)
                    .map(|k| Sample {
                        value: (i * 10 + k) as f64 * 0.25,
                        timestamp: START_NS / 1_000_000 + k as i64 * 15_000,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        metadata: vec![],
    }
}

#[cfg(test)]
mod admission;
#[cfg(test)]
mod counting;
#[cfg(test)]
mod working;
