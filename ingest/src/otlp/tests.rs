//! Unit tests of the OTLP decoders: requests in, rows and rejections out.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{Histogram, ResourceMetrics, ScopeMetrics, Sum};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use arrow::array::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, Metric, NumberDataPoint, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::common::*;
use super::schema::*;
use super::*;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn text_col<'a>(b: &'a RecordBatch, name: &str) -> &'a arrow::array::StringArray {
    b.column_by_name(name).unwrap().as_string::<i32>()
}

#[test]
fn attributes_are_json_of_every_value_type() {
    use any_value::Value as V;
    let attrs = vec![
        kv("s", V::StringValue("a \"q\"\n".into())),
        kv("b", V::BoolValue(true)),
        kv("i", V::IntValue(9_007_199_254_740_993)),
        kv("d", V::DoubleValue(2.0)),
        kv("nan", V::DoubleValue(f64::NAN)),
        kv("bytes", V::BytesValue(vec![0, 1, 2])),
        kv(
            "arr",
            V::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(V::IntValue(1)),
                }],
            }),
        ),
        kv(
            "kv",
            V::KvlistValue(KeyValueList {
                values: vec![kv("x", V::StringValue("y".into()))],
            }),
        ),
        KeyValue {
            key: "empty".into(),
            value: None,
            ..Default::default()
        },
    ];
    let text = attrs_text(&attrs);
    assert_eq!(
        text,
        r#"{"s":"a \"q\"\n","b":true,"i":9007199254740993,"d":2.0,"nan":"NaN","bytes":"AAEC","arr":[1],"kv":{"x":"y"},"empty":null}"#
    );
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed["i"].as_i64(), Some(9_007_199_254_740_993));
}

fn span(trace_id: Vec<u8>, start: u64, end: u64) -> Span {
    Span {
        trace_id,
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        name: "GET /".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        status: Some(Status {
            code: 2,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

#[test]
fn spans_keep_nanoseconds_and_hex_ids_and_reject_bad_ones_alone() {
    let good = span(
        (0..16).collect(),
        1_700_000_000_123_456_789,
        1_700_000_000_223_456_790,
    );
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("api".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    good,
                    span(vec![1; 5], 1, 2),
                    span((0..16).collect(), 0, 0),
                    span((0..16).collect(), 10, 5),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let d = decode_traces(&req);
    assert_eq!((d.accepted, d.rejected), (1, 3));
    assert!(
        d.error_message.contains("trace_id must be 16 bytes, not 5"),
        "{}",
        d.error_message
    );
    assert!(
        d.error_message.contains("no start_time_unix_nano"),
        "{}",
        d.error_message
    );
    assert!(
        d.error_message.contains("is before start_time_unix_nano"),
        "{}",
        d.error_message
    );
    let (table, b) = &d.tables[0];
    assert_eq!(*table, TRACES);
    assert_eq!(b.schema(), table_schema(TRACES).unwrap());
    let time = b.column(0).as_primitive::<TimestampNanosecondType>();
    assert_eq!(time.value(0), 1_700_000_000_123_456_789);
    assert_eq!(
        b.column_by_name("duration_ns")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        100_000_001
    );
    assert_eq!(
        text_col(b, "trace_id").value(0),
        "000102030405060708090a0b0c0d0e0f"
    );
    assert_eq!(text_col(b, "span_id").value(0), "0102030405060708");
    assert!(text_col(b, "parent_span_id").is_null(0));
    assert_eq!(text_col(b, "service_name").value(0), "api");
    assert_eq!(text_col(b, "kind").value(0), "server");
    assert_eq!(text_col(b, "status_code").value(0), "error");
    assert_eq!(text_col(b, "events").value(0), "[]");
}

#[test]
fn log_time_falls_back_to_observed_then_now() {
    let rec = |t, o| LogRecord {
        time_unix_nano: t,
        observed_time_unix_nano: o,
        body: Some(AnyValue {
            value: Some(any_value::Value::IntValue(7)),
        }),
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![rec(5, 6), rec(0, 6), rec(0, 0)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let d = decode_logs(&req, 99);
    let b = &d.tables[0].1;
    let time = b.column(0).as_primitive::<TimestampNanosecondType>();
    assert_eq!(time.values().to_vec(), vec![5, 6, 99]);
    assert_eq!(text_col(b, "body").value(0), "7");
    assert!(text_col(b, "service_name").is_null(0));
}

#[test]
fn metrics_go_to_the_table_of_their_type() {
    let sum = Metric {
        name: "requests".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                time_unix_nano: 10,
                value: Some(number_data_point::Value::AsInt(3)),
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let hist = Metric {
        name: "latency".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![
                HistogramDataPoint {
                    time_unix_nano: 10,
                    count: 3,
                    bucket_counts: vec![1, 2],
                    explicit_bounds: vec![0.5],
                    ..Default::default()
                },
                HistogramDataPoint {
                    time_unix_nano: 10,
                    count: 3,
                    bucket_counts: vec![1, 2],
                    explicit_bounds: vec![0.5, 1.0],
                    ..Default::default()
                },
            ],
            aggregation_temporality: 1,
        })),
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    sum,
                    hist,
                    Metric {
                        name: "empty".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let d = decode_metrics(&req);
    assert_eq!((d.accepted, d.rejected), (2, 2));
    assert!(
        d.error_message.contains(r#"metric "empty" has no data"#),
        "{}",
        d.error_message
    );
    assert!(
        d.error_message
            .contains("2 bucket counts for 2 explicit bounds"),
        "{}",
        d.error_message
    );
    let names: Vec<_> = d.tables.iter().map(|(t, _)| *t).collect();
    assert_eq!(names, [SUM, HISTOGRAM]);
    for (t, b) in &d.tables {
        assert_eq!(b.schema(), table_schema(t).unwrap());
    }
    let s = &d.tables[0].1;
    assert_eq!(
        text_col(s, "aggregation_temporality").value(0),
        "cumulative"
    );
    assert_eq!(
        s.column_by_name("value_int")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        3
    );
}

#[test]
fn json_mapping_is_parsed() {
    let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
        "scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000001","severityNumber":17,
        "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "body":{"stringValue":"hi"},"attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
    let req: ExportLogsServiceRequest = parse(body, Encoding::Json).unwrap();
    let d = decode_logs(&req, 0);
    let b = &d.tables[0].1;
    let time = b.column(0).as_primitive::<TimestampNanosecondType>();
    assert_eq!(time.value(0), 1_700_000_000_000_000_001);
    assert_eq!(
        text_col(b, "trace_id").value(0),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(text_col(b, "attributes").value(0), r#"{"n":42}"#);
    assert!(parse::<ExportLogsServiceRequest>(b"{", Encoding::Json).is_err());
    assert!(parse::<ExportLogsServiceRequest>(b"\xff\xff", Encoding::Protobuf).is_err());
}
