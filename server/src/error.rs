//! SQLSTATE errors ([`SqlError`], from the statement layer) on the
//! PostgreSQL wire protocol.

use pgwire::error::{ErrorInfo, PgWireError};
use sextant_sql::SqlError;

/// `e` as a pgwire error response with its SQLSTATE.
pub(crate) fn pg_error(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        e.state.code().to_string(),
        e.message,
    )))
}

/// Gives an error from DataFusion or the handlers of datafusion-postgres its
/// SQLSTATE. Errors that already carry one pass through unchanged.
pub(crate) fn assign_sqlstate(error: &mut PgWireError) {
    let PgWireError::ApiError(inner) = error else {
        return;
    };
    *error = pg_error(SqlError::from_error(inner.as_ref()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError;

    #[test]
    fn api_errors_get_their_sqlstate() {
        let mut pg = PgWireError::ApiError(Box::new(DataFusionError::Plan(
            "table 'x' not found".into(),
        )));
        assign_sqlstate(&mut pg);
        let PgWireError::UserError(info) = pg else {
            panic!("not mapped")
        };
        assert_eq!(info.code, "42P01");
    }
}
