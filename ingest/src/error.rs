//! The decoders' one error type.

use sextant_sqlstate::SqlState;

/// Why a request body, a parameter of the request, or one row of it was
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The body is not in the protocol's format at all (not UTF-8, not
    /// JSON, not protobuf, not snappy): nothing of it was read.
    #[error("{0}")]
    Malformed(String),
    /// The (snappy) body would decompress past the limit.
    #[error("snappy body expands to {decoded} bytes, past the limit of {limit} (--max-body-size)")]
    TooLarge {
        /// Decompressed length announced by the body.
        decoded: usize,
        /// The limit.
        limit: usize,
    },
    /// A request parameter with a value it cannot take (`precision=`).
    #[error("{0}")]
    InvalidParameter(String),
    /// A row that cannot be stored: a value that conflicts with its
    /// column's type, a name given twice, a time out of range. The request's
    /// other rows are kept; this becomes a [`crate::Rejected`] reason.
    #[error("{0}")]
    InvalidRow(String),
}

impl IngestError {
    /// The SQLSTATE a client gets for this error; HTTP and gRPC statuses
    /// follow from it ([`SqlState::protocol_status`]): 400, 413, 400, 400.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            IngestError::Malformed(_) => SqlState::PROTOCOL_VIOLATION,
            IngestError::TooLarge { .. } => SqlState::PROGRAM_LIMIT_EXCEEDED,
            IngestError::InvalidParameter(_) => SqlState::INVALID_PARAMETER_VALUE,
            IngestError::InvalidRow(_) => SqlState::DATA_EXCEPTION,
        }
    }
}
