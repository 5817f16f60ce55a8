//! Sextant's protocol decoders: request bodies in, Arrow batches out.
//!
//! Each decoder turns one request body into rows of one or more tables
//! ([`rows::TableRows`]), checking every value against the tables' existing
//! column types and rejecting only the rows that conflict ([`Rejected`]).
//! Decoders do no I/O: the server looks up schemas, then hands the finished
//! batches to the storage engine, which creates tables and adds columns.

mod error;
pub mod json;
pub mod line_protocol;
pub mod otlp;
pub mod prometheus;
pub mod rows;

pub use error::IngestError;

/// A row (line, or array element) that was not written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line number (or array position) in the request body.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Unit of integer timestamps in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds (the default).
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
}

impl Precision {
    /// Parses the `precision` query parameter: `ns`/`n`, `us`/`u`, `ms`, `s`.
    pub fn parse(s: &str) -> Result<Self, IngestError> {
        Ok(match s {
            "ns" | "n" | "" => Precision::Nanoseconds,
            "us" | "u" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            other => {
                return Err(IngestError::InvalidParameter(format!(
                    "unknown precision {other:?}: use ns, us, ms or s"
                )));
            }
        })
    }

    /// The unit's name, as the `precision` parameter spells it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
        }
    }

    /// `t` in this unit as nanoseconds, if it fits.
    pub fn to_nanos(self, t: i64) -> Option<i64> {
        let factor: i64 = match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
        };
        t.checked_mul(factor)
    }
}

/// A request body's wire format, for what decoding and writing it holds
/// in memory ([`Wire::admitted_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Line protocol text.
    LineProtocol,
    /// NDJSON (or a JSON array) of rows.
    Ndjson,
    /// Prometheus remote write, per byte of the snappy-decompressed body.
    RemoteWrite,
    /// An OTLP export request, by signal and encoding.
    Otlp(otlp::Signal, otlp::Encoding),
    /// PostgreSQL `COPY FROM STDIN` text or CSV.
    Copy,
}

impl Wire {
    /// The memory a request of `body` bytes (unpacked) is admitted for
    /// before it is read: the body, what the decoder builds from it (a
    /// protobuf message's many small allocations, the Arrow columns), and
    /// the WAL record of the rows. The factors are the peaks measured on
    /// the benchmark bodies of `sextant-benches` with about a third more
    /// (its tests check them again): an OTLP metrics message, whose data
    /// points are a few bytes each on the wire, decodes to fifteen times
    /// its size.
    pub fn admitted_bytes(self, body: usize) -> usize {
        use otlp::{Encoding::*, Signal::*};
        let per_byte = match self {
            Wire::LineProtocol | Wire::Copy => 4,
            Wire::Ndjson | Wire::Otlp(Logs | Traces, Json) => 5,
            Wire::RemoteWrite | Wire::Otlp(Metrics, Json) => 7,
            Wire::Otlp(Logs, Protobuf) => 8,
            Wire::Otlp(Traces, Protobuf) => 12,
            Wire::Otlp(Metrics, Protobuf) => 20,
        };
        body.saturating_mul(per_byte)
    }
}
