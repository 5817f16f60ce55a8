//! OTLP export requests (protobuf, as OTLP/HTTP and OTLP/gRPC carry them):
//! decoded into the otel_* tables' rows. The first byte picks the signal.
//! Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sextant_ingest::otlp;

fuzz_target!(|data: &[u8]| {
    let Some((signal, body)) = data.split_first() else {
        return;
    };
    match signal % 3 {
        0 => {
            if let Ok(req) = ExportLogsServiceRequest::decode(body) {
                let _ = otlp::decode_logs(&req, 1_700_000_000_000_000_000);
            }
        }
        1 => {
            if let Ok(req) = ExportTraceServiceRequest::decode(body) {
                let _ = otlp::decode_traces(&req);
            }
        }
        _ => {
            if let Ok(req) = ExportMetricsServiceRequest::decode(body) {
                let _ = otlp::decode_metrics(&req);
            }
        }
    }
});
