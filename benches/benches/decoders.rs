//! Criterion benchmarks of every ingest decoder: request body in, Arrow
//! batches out (parsing, type checks, column building). Each decoder is
//! measured twice, once reporting records/s and once MB/s of its own wire
//! format, on the deterministic bodies of `sextant_benches`.
//!
//! `cargo bench -p sextant-benches --bench decoders`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sextant_benches as data;
use sextant_ingest::otlp::{self, Encoding};
use sextant_ingest::rows::TableRows;
use sextant_ingest::{Precision, json, line_protocol, prometheus};

const RECORDS: usize = 10_000;

/// One decoder: its name, its body, how many records the body holds, and
/// the decode function (returns the number of rows decoded).
struct Case {
    name: &'static str,
    body: Vec<u8>,
    records: usize,
    decode: fn(&[u8]) -> usize,
}

fn decode_line_protocol(body: &[u8]) -> usize {
    let text = std::str::from_utf8(body).unwrap();
    let d = line_protocol::decode(text, Precision::Nanoseconds, data::START_NS, &|_| None);
    assert!(d.rejected.is_empty());
    d.tables
        .into_iter()
        .map(|t| t.finish().unwrap().map_or(0, |b| b.num_rows()))
        .sum()
}

fn decode_ndjson(body: &[u8]) -> usize {
    let mut rows = TableRows::new("logs", None);
    let rejected = json::decode(body, &mut rows, Precision::Nanoseconds, data::START_NS).unwrap();
    assert!(rejected.is_empty());
    rows.finish().unwrap().map_or(0, |b| b.num_rows())
}

fn rows(d: otlp::Decoded) -> usize {
    assert_eq!(d.rejected, 0, "{}", d.error_message);
    d.tables.iter().map(|(_, b)| b.num_rows()).sum()
}

fn decode_logs_pb(body: &[u8]) -> usize {
    let req: ExportLogsServiceRequest = otlp::parse(body, Encoding::Protobuf).unwrap();
    rows(otlp::decode_logs(&req, data::START_NS))
}

fn decode_logs_json(body: &[u8]) -> usize {
    let req: ExportLogsServiceRequest = otlp::parse(body, Encoding::Json).unwrap();
    rows(otlp::decode_logs(&req, data::START_NS))
}

fn decode_traces_pb(body: &[u8]) -> usize {
    let req: ExportTraceServiceRequest = otlp::parse(body, Encoding::Protobuf).unwrap();
    rows(otlp::decode_traces(&req))
}

fn decode_traces_json(body: &[u8]) -> usize {
    let req: ExportTraceServiceRequest = otlp::parse(body, Encoding::Json).unwrap();
    rows(otlp::decode_traces(&req))
}

fn decode_metrics_pb(body: &[u8]) -> usize {
    let req: ExportMetricsServiceRequest = otlp::parse(body, Encoding::Protobuf).unwrap();
    rows(otlp::decode_metrics(&req))
}

fn decode_remote_write(body: &[u8]) -> usize {
    let d = prometheus::decode(body, usize::MAX, &|_| None).unwrap();
    assert!(d.rejected.is_empty());
    d.tables
        .into_iter()
        .map(|t| t.finish().unwrap().map_or(0, |b| b.num_rows()))
        .sum()
}

fn cases() -> Vec<Case> {
    let logs = data::otlp_logs(RECORDS);
    let traces = data::otlp_traces(RECORDS);
    let rw_series = RECORDS / 5;
    vec![
        Case {
            name: "line_protocol",
            body: data::line_protocol(RECORDS).into_bytes(),
            records: RECORDS,
            decode: decode_line_protocol,
        },
        Case {
            name: "ndjson",
            body: data::ndjson_logs(RECORDS).into_bytes(),
            records: RECORDS,
            decode: decode_ndjson,
        },
        Case {
            name: "otlp_logs_protobuf",
            body: logs.encode_to_vec(),
            records: RECORDS,
            decode: decode_logs_pb,
        },
        Case {
            name: "otlp_logs_json",
            body: serde_json::to_vec(&logs).unwrap(),
            records: RECORDS,
            decode: decode_logs_json,
        },
        Case {
            name: "otlp_traces_protobuf",
            body: traces.encode_to_vec(),
            records: RECORDS,
            decode: decode_traces_pb,
        },
        Case {
            name: "otlp_traces_json",
            body: serde_json::to_vec(&traces).unwrap(),
            records: RECORDS,
            decode: decode_traces_json,
        },
        Case {
            name: "otlp_metrics_protobuf",
            body: data::otlp_metrics(RECORDS).encode_to_vec(),
            records: RECORDS,
            decode: decode_metrics_pb,
        },
        Case {
            name: "prometheus_remote_write",
            body: prometheus::encode_write_request(&data::remote_write(rw_series, 5)),
            records: rw_series * 5,
            decode: decode_remote_write,
        },
    ]
}

fn decoders(c: &mut Criterion) {
    let cases = cases();
    for case in &cases {
        // A decoder that drops or invents rows would make the figures meaningless.
        assert_eq!((case.decode)(&case.body), case.records, "{}", case.name);
        eprintln!(
            "{}: {} records in {} bytes ({} bytes/record)",
            case.name,
            case.records,
            case.body.len(),
            case.body.len() / case.records
        );
    }
    for (group, per_record) in [("decode_records", true), ("decode_bytes", false)] {
        let mut g = c.benchmark_group(group);
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for case in &cases {
            g.throughput(if per_record {
                Throughput::Elements(case.records as u64)
            } else {
                Throughput::Bytes(case.body.len() as u64)
            });
            g.bench_with_input(BenchmarkId::from_parameter(case.name), case, |b, case| {
                b.iter(|| (case.decode)(black_box(&case.body)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, decoders);
criterion_main!(benches);
