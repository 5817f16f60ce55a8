//! Errors on Flight SQL: every failure leaves as a gRPC status whose code
//! follows the statement layer's SQLSTATE, with the SQLSTATE itself in the
//! `x-sqlstate` metadata entry.

use datafusion::error::DataFusionError;
use sextant_sql::SqlError;
use sextant_sqlstate::SqlState;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The metadata key that carries the SQLSTATE of an error.
pub use sextant_auth::grpc::SQLSTATE_KEY;

/// The gRPC code for a SQLSTATE ([`SqlState::protocol_status`], the
/// mapping every protocol shares).
fn code(sqlstate: SqlState) -> Code {
    Code::from(sqlstate.protocol_status().grpc)
}

/// `e` as a gRPC status.
pub(crate) fn status(e: SqlError) -> Status {
    let mut s = Status::new(code(e.state), e.message);
    if let Ok(v) = MetadataValue::try_from(e.state.code()) {
        s.metadata_mut().insert(SQLSTATE_KEY, v);
    }
    s
}

/// A DataFusion error (planning or execution) as a gRPC status.
pub(crate) fn df_status(e: DataFusionError) -> Status {
    status(SqlError::from(e))
}

/// A client mistake that has no better SQLSTATE: INVALID_ARGUMENT.
pub(crate) fn invalid(message: impl Into<String>) -> Status {
    status(SqlError::new(SqlState::INVALID_PARAMETER_VALUE, message))
}

/// Something Sextant does not do over Flight SQL: UNIMPLEMENTED.
pub(crate) fn unsupported(message: impl Into<String>) -> Status {
    status(SqlError::unsupported(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_codes() {
        let s = status(SqlError::new(
            SqlState::UNDEFINED_TABLE,
            "table \"x\" not found",
        ));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.metadata().get(SQLSTATE_KEY).unwrap(), "42P01");
        assert_eq!(code(SqlState::SYNTAX_ERROR), Code::InvalidArgument);
        assert_eq!(
            code(SqlState::INVALID_TEXT_REPRESENTATION),
            Code::InvalidArgument
        );
        assert_eq!(code(SqlState::OUT_OF_MEMORY), Code::ResourceExhausted);
        assert_eq!(code(SqlState::FEATURE_NOT_SUPPORTED), Code::Unimplemented);
        assert_eq!(code(SqlState::INTERNAL_ERROR), Code::Internal);
        assert_eq!(
            code(SqlState::INSUFFICIENT_PRIVILEGE),
            Code::PermissionDenied
        );
        assert_eq!(code(SqlState::INVALID_PASSWORD), Code::Unauthenticated);
        let s = df_status(DataFusionError::ResourcesExhausted("pool".into()));
        assert_eq!(s.code(), Code::ResourceExhausted);
    }
}
