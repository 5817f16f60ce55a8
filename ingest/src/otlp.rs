//! OTLP export requests (logs, traces, metrics) → Arrow batches of the
//! `otel_*` tables.
//!
//! A request arrives as protobuf or as the OTLP JSON mapping ([`parse`]); the
//! decoders walk resource → scope → record and append one row per log
//! record, span or metric data point to the table of its kind, with a fixed
//! schema per table ([`table_schema`], documented in `docs/otel-schema.md`).
//!
//! - `service_name` is the resource attribute `service.name`, promoted to a
//!   column; every resource, scope and record attribute is also kept, as a
//!   JSON object in text (`attributes`, `resource_attributes`,
//!   `scope_attributes`): strings, integers, doubles, booleans, arrays and
//!   nested key-value lists map to their JSON counterparts, bytes to base64
//!   strings, and non-finite doubles to the strings `NaN`, `Infinity`,
//!   `-Infinity` (as in the OTLP JSON mapping).
//! - `trace_id`, `span_id` and `parent_span_id` are lowercase hex text.
//! - Timestamps are exact to the nanosecond.
//! - A record that cannot be stored (an id of the wrong length, a time past
//!   2262, a span without a start time, a histogram whose bucket counts do not
//!   match its bounds) is rejected alone; the rest of the request is kept and
//!   [`Decoded::rejected`] with [`Decoded::error_message`] become the OTLP
//!   `partial_success`.
//!
//! This file holds what every signal shares: the table names, the request
//! encodings ([`parse`]), the [`Decoded`] result and its rejections. Each
//! signal has its own decoder ([`logs`], [`traces`], [`metrics`]), which
//! walks the request with the resource and scope columns and the JSON text
//! of attributes from [`common`], and builds batches in the schemas of
//! [`schema`].

mod common;
mod logs;
mod metrics;
mod schema;
#[cfg(test)]
mod tests;
mod traces;

use arrow::array::{ArrayRef, RecordBatch};

use crate::IngestError;

pub use logs::decode_logs;
pub use metrics::decode_metrics;
pub use schema::table_schema;
pub use traces::decode_traces;

/// The table of log records.
pub const LOGS: &str = "otel_logs";
/// The table of spans.
pub const TRACES: &str = "otel_traces";
/// Gauge data points.
pub const GAUGE: &str = "otel_metrics_gauge";
/// Sum (counter and up-down counter) data points.
pub const SUM: &str = "otel_metrics_sum";
/// Explicit-bucket histogram data points.
pub const HISTOGRAM: &str = "otel_metrics_histogram";
/// Exponential histogram data points.
pub const EXP_HISTOGRAM: &str = "otel_metrics_exponential_histogram";
/// Summary data points.
pub const SUMMARY: &str = "otel_metrics_summary";

/// Every table the OTLP decoders write.
pub const TABLES: [&str; 7] = [LOGS, TRACES, GAUGE, SUM, HISTOGRAM, EXP_HISTOGRAM, SUMMARY];

/// At most this many rejection reasons are quoted in the error message.
const MAX_REASONS: usize = 5;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Log records.
    Logs,
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
}

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf` (and gRPC).
    Protobuf,
    /// `application/json`: the OTLP JSON mapping.
    Json,
}

/// Parses an export request body.
pub fn parse<T>(body: &[u8], encoding: Encoding) -> Result<T, IngestError>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| {
            IngestError::Malformed(format!("body is not a valid OTLP protobuf message: {e}"))
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            IngestError::Malformed(format!("body is not a valid OTLP JSON message: {e}"))
        }),
    }
}

/// The rows of one export request, by table.
#[derive(Debug, Default)]
pub struct Decoded {
    /// One batch per table that received rows, in the schema of
    /// [`table_schema`].
    pub tables: Vec<(&'static str, RecordBatch)>,
    /// Records (log records, spans or data points) accepted.
    pub accepted: usize,
    /// Records rejected.
    pub rejected: usize,
    /// Why, for the first few rejections; empty when none was rejected.
    pub error_message: String,
}

#[derive(Default)]
struct Rejections {
    count: usize,
    reasons: Vec<String>,
}

impl Rejections {
    fn reject(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(what());
        }
    }

    /// The result of a request with `accepted` rows (tables added later).
    fn decoded(&self, accepted: usize) -> Decoded {
        Decoded {
            accepted,
            rejected: self.count,
            error_message: self.message(),
            tables: vec![],
        }
    }

    fn message(&self) -> String {
        if self.count == 0 {
            return String::new();
        }
        let more = if self.count > self.reasons.len() {
            format!("; and {} more", self.count - self.reasons.len())
        } else {
            String::new()
        };
        format!("{} rejected: {}{more}", self.count, self.reasons.join("; "))
    }
}

fn batch(table: &'static str, columns: Vec<ArrayRef>) -> Result<RecordBatch, String> {
    let schema = table_schema(table).expect("an otel table");
    RecordBatch::try_new(schema, columns).map_err(|e| format!("{table}: {e}"))
}

/// Adds a finished batch; a failure to build one is a bug, reported as a
/// rejection of its rows rather than a panic.
fn push_batch(decoded: &mut Decoded, table: &'static str, rows: usize, cols: Vec<ArrayRef>) {
    match batch(table, cols) {
        Ok(b) => decoded.tables.push((table, b)),
        Err(e) => {
            decoded.accepted -= rows;
            decoded.rejected += rows;
            if !decoded.error_message.is_empty() {
                decoded.error_message.push_str("; ");
            }
            decoded.error_message.push_str(&e);
        }
    }
}
