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
