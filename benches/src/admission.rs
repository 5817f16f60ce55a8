//! The memory a request holds while it is decoded and written, per byte
//! of its body, measured on this crate's bodies against what the server
//! admits it for ([`sextant_ingest::Wire::admitted_bytes`]).
//!
//! Each case runs on one thread, counted by [`crate::counting`], so other
//! tests running beside it do not count.

use arrow::array::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sextant_ingest::otlp::{self, Encoding, Signal};
use sextant_ingest::rows::TableRows;
use sextant_ingest::{Precision, Wire, json, line_protocol, prometheus};

use crate::counting::peak_of;

/// What the server does with a body after reading it: decode, then the
/// WAL record of each table's rows, while the rows are held.
fn write(batches: Vec<RecordBatch>) {
    let records: Vec<Vec<u8>> = batches
        .iter()
        .map(|b| sextant_wal::payload::encode(1, b).unwrap())
        .collect();
    assert!(records.iter().all(|r| !r.is_empty()));
}

fn finish(tables: Vec<TableRows>) -> Vec<RecordBatch> {
    tables
        .into_iter()
        .filter_map(|t| t.finish().unwrap())
        .collect()
}

fn otlp_batches(d: otlp::Decoded) -> Vec<RecordBatch> {
    assert_eq!(d.rejected, 0, "{}", d.error_message);
    d.tables.into_iter().map(|(_, b)| b).collect()
}

fn decode_and_write(wire: Wire, body: &[u8]) {
    let batches = match wire {
        Wire::LineProtocol => {
            let text = std::str::from_utf8(body).unwrap();
            let d = line_protocol::decode(text, Precision::Nanoseconds, crate::START_NS, &|_| None);
            assert!(d.rejected.is_empty());
            finish(d.tables)
        }
        Wire::Ndjson => {
            let mut rows = TableRows::new("logs", None);
            let rejected =
                json::decode(body, &mut rows, Precision::Nanoseconds, crate::START_NS).unwrap();
            assert!(rejected.is_empty());
            finish(vec![rows])
        }
        Wire::RemoteWrite => {
            let d = prometheus::decode(body, usize::MAX, &|_| None).unwrap();
            assert!(d.rejected.is_empty());
            finish(d.tables)
        }
        Wire::Otlp(Signal::Logs, e) => otlp_batches(otlp::decode_logs(
            &otlp::parse::<ExportLogsServiceRequest>(body, e).unwrap(),
            crate::START_NS,
        )),
        Wire::Otlp(Signal::Traces, e) => otlp_batches(otlp::decode_traces(
            &otlp::parse::<ExportTraceServiceRequest>(body, e).unwrap(),
        )),
        Wire::Otlp(Signal::Metrics, e) => otlp_batches(otlp::decode_metrics(
            &otlp::parse::<ExportMetricsServiceRequest>(body, e).unwrap(),
        )),
        Wire::Copy => unreachable!("COPY is decoded by the server"),
    };
    assert!(!batches.is_empty());
    write(batches);
}

#[test]
fn every_wire_format_is_admitted_for_what_decoding_and_writing_it_holds() {
    const RECORDS: usize = 10_000;
    let logs = crate::otlp_logs(RECORDS);
    let traces = crate::otlp_traces(RECORDS);
    let metrics = crate::otlp_metrics(RECORDS);
    let cases: Vec<(Wire, Vec<u8>)> = vec![
        (
            Wire::LineProtocol,
            crate::line_protocol(RECORDS).into_bytes(),
        ),
        (Wire::Ndjson, crate::ndjson_logs(RECORDS).into_bytes()),
        (
            Wire::RemoteWrite,
            prometheus::encode_write_request(&crate::remote_write(RECORDS / 5, 5)),
        ),
        (
            Wire::Otlp(Signal::Logs, Encoding::Protobuf),
            logs.encode_to_vec(),
        ),
        (
            Wire::Otlp(Signal::Logs, Encoding::Json),
            serde_json::to_vec(&logs).unwrap(),
        ),
        (
            Wire::Otlp(Signal::Traces, Encoding::Protobuf),
            traces.encode_to_vec(),
        ),
        (
            Wire::Otlp(Signal::Traces, Encoding::Json),
            serde_json::to_vec(&traces).unwrap(),
        ),
        (
            Wire::Otlp(Signal::Metrics, Encoding::Protobuf),
            metrics.encode_to_vec(),
        ),
        (
            Wire::Otlp(Signal::Metrics, Encoding::Json),
            serde_json::to_vec(&metrics).unwrap(),
        ),
    ];
    let mut short = vec![];
    for (wire, body) in &cases {
        // Remote write is admitted by its unpacked length.
        let unpacked = match wire {
            Wire::RemoteWrite => prometheus::decoded_len(body).unwrap(),
            _ => body.len(),
        };
        let held = body.len() + peak_of(|| decode_and_write(*wire, body));
        let admitted = wire.admitted_bytes(unpacked);
        eprintln!(
            "{wire:?}: body {} bytes (unpacked {unpacked}), held at most {held} ({:.2} per byte), admitted {admitted} ({} per byte)",
            body.len(),
            held as f64 / unpacked as f64,
            admitted / unpacked,
        );
        if held > admitted {
            short.push(format!("{wire:?}: held {held} > admitted {admitted}"));
        }
    }
    assert!(short.is_empty(), "admitted for less than held: {short:#?}");
}
