//! The SQL layer's one error type: every failure a client can see carries a
//! SQLSTATE and a message that names the problem.

use datafusion::error::DataFusionError;
use sextant_sqlstate::SqlState;
use sextant_storage::StorageError;

/// An error with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// The SQLSTATE; HTTP and gRPC statuses follow from it
    /// ([`SqlState::protocol_status`]).
    pub state: SqlState,
    /// What went wrong, for a person.
    pub message: String,
}

impl SqlError {
    /// An error with SQLSTATE `state`.
    pub fn new(state: SqlState, message: impl Into<String>) -> Self {
        Self {
            state,
            message: message.into(),
        }
    }
    pub fn syntax(m: impl Into<String>) -> Self {
        Self::new(SqlState::SYNTAX_ERROR, m)
    }
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new(SqlState::FEATURE_NOT_SUPPORTED, m)
    }
    pub fn invalid_definition(m: impl Into<String>) -> Self {
        Self::new(SqlState::INVALID_TABLE_DEFINITION, m)
    }
    pub fn invalid_schema(m: impl Into<String>) -> Self {
        Self::new(SqlState::INVALID_SCHEMA_NAME, m)
    }
    pub fn invalid_parameter(m: impl Into<String>) -> Self {
        Self::new(SqlState::INVALID_PARAMETER_VALUE, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(SqlState::INTERNAL_ERROR, m)
    }
}

/// `fut`, with a panic in it turned into an internal error (XX000) that
/// says that `what` ("the query planner") failed on the statement and why,
/// instead of taking the connection's task down with it. The panic is
/// still logged by the panic hook, with its backtrace.
pub async fn contain_panic<F: std::future::Future>(
    what: &str,
    fut: F,
) -> Result<F::Output, SqlError> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            SqlError::internal(format!("{what} failed on this statement ({why})"))
        })
}

/// DataFusion's planning of a statement, a panic in it (a shape of
/// statement its planner does not expect) contained ([`contain_panic`]).
pub(crate) async fn plan_contained(
    ctx: &datafusion::prelude::SessionContext,
    stmt: datafusion::sql::sqlparser::ast::Statement,
) -> Result<datafusion::logical_expr::LogicalPlan, SqlError> {
    let state = ctx.state();
    let planning = state.statement_to_plan(datafusion::sql::parser::Statement::Statement(
        Box::new(stmt),
    ));
    Ok(contain_panic("the query planner", planning).await??)
}

impl From<StorageError> for SqlError {
    fn from(e: StorageError) -> Self {
        Self::new(e.sqlstate(), e.to_string())
    }
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        classify_datafusion(&e)
    }
}

/// The SQLSTATE of a DataFusion error, looking through the layers it wraps.
fn classify_datafusion(e: &DataFusionError) -> SqlError {
    match e {
        DataFusionError::Context(context, inner) => {
            // What says where a failure of the server's own came from (the
            // worker of a distributed query) stays in front of it.
            let mut e = classify_datafusion(inner);
            if e.state == SqlState::INTERNAL_ERROR {
                e.message = format!("{context}: {}", e.message);
            }
            return e;
        }
        DataFusionError::Diagnostic(_, inner) => return classify_datafusion(inner),
        DataFusionError::Shared(inner) => return classify_datafusion(inner),
        DataFusionError::Collection(list) if !list.is_empty() => {
            return classify_datafusion(&list[0]);
        }
        DataFusionError::External(inner) => {
            if let Some(s) = inner.downcast_ref::<SqlError>() {
                return s.clone();
            }
            if let Some(s) = inner.downcast_ref::<StorageError>() {
                return SqlError::new(s.sqlstate(), s.to_string());
            }
            if let Some(d) = inner.downcast_ref::<DataFusionError>() {
                return classify_datafusion(d);
            }
        }
        DataFusionError::ArrowError(a, _) => {
            if let arrow::error::ArrowError::ExternalError(inner) = a.as_ref()
                && let Some(d) = inner.downcast_ref::<DataFusionError>()
            {
                return classify_datafusion(d);
            }
        }
        _ => {}
    }
    let message = match e {
        DataFusionError::SQL(pe, _) => syntax_message(pe),
        _ => e.message().to_string(),
    };
    let lower = message.to_lowercase();
    let code = match e {
        DataFusionError::SQL(..) => SqlState::SYNTAX_ERROR,
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { .. } => SqlState::UNDEFINED_COLUMN,
            datafusion::common::SchemaError::AmbiguousReference { .. } => {
                SqlState::AMBIGUOUS_COLUMN
            }
            datafusion::common::SchemaError::DuplicateQualifiedField { .. }
            | datafusion::common::SchemaError::DuplicateUnqualifiedField { .. } => {
                SqlState::DUPLICATE_COLUMN
            }
        },
        DataFusionError::Plan(_) if lower.contains("table") && lower.contains("not found") => {
            SqlState::UNDEFINED_TABLE
        }
        DataFusionError::Plan(_) if lower.contains("no field named") => SqlState::UNDEFINED_COLUMN,
        DataFusionError::Plan(_) if lower.contains("invalid function") => {
            SqlState::UNDEFINED_FUNCTION
        }
        DataFusionError::Plan(_) if lower.contains("coerce") || lower.contains("type") => {
            SqlState::DATATYPE_MISMATCH
        }
        DataFusionError::Plan(_) => SqlState::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,
        DataFusionError::ResourcesExhausted(_) => SqlState::OUT_OF_MEMORY,
        // A spill file or a write on a full disk.
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_)
            if sextant_sqlstate::is_disk_full(e) =>
        {
            SqlState::DISK_FULL
        }
        // A persisted file that cannot be read: the object store failed.
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => SqlState::IO_ERROR,
        DataFusionError::ParquetError(_) | DataFusionError::ArrowError(..) if is_parquet(e) => {
            parquet_code(&lower)
        }
        DataFusionError::NotImplemented(_) => SqlState::FEATURE_NOT_SUPPORTED,
        DataFusionError::ArrowError(a, _) => arrow_code(a, &lower),
        DataFusionError::Execution(_) if lower.contains("non-nullable") => {
            SqlState::NOT_NULL_VIOLATION
        }
        DataFusionError::Execution(_)
            if lower.contains("cast") || lower.contains("parse") || lower.contains("parsing") =>
        {
            data_code(&lower)
        }
        DataFusionError::Execution(_) if lower.contains("divide by zero") => {
            SqlState::DIVISION_BY_ZERO
        }
        _ => SqlState::INTERNAL_ERROR,
    };
    let message = if code == SqlState::NOT_NULL_VIOLATION {
        format!("null value violates not-null constraint ({message})")
    } else if code == SqlState::DATA_CORRUPTED || code == SqlState::UNDEFINED_FILE {
        format!(
            "{message}: a persisted file is damaged or missing; other time ranges of the table can still be queried (system.files shows the damaged files, CHECK TABLE reads every file of a table, and --skip-damaged-files leaves the damaged ones out)"
        )
    } else {
        message
    };
    SqlError::new(code, message)
}

/// A parser error as a person reads it: "syntax error: Expected: ..."
fn syntax_message(e: &datafusion::sql::sqlparser::parser::ParserError) -> String {
    use datafusion::sql::sqlparser::parser::ParserError as P;
    match e {
        P::ParserError(m) | P::TokenizerError(m) => format!("syntax error: {m}"),
        P::RecursionLimitExceeded => "syntax error: the statement is nested too deeply".into(),
    }
}

/// Whether `e` is the Parquet reader's (a persisted file being read).
fn is_parquet(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::ParquetError(_) => true,
        DataFusionError::ArrowError(a, _) => {
            matches!(a.as_ref(), arrow::error::ArrowError::ParquetError(_))
        }
        _ => false,
    }
}

/// A Parquet file that is not there (58P01), that the object store could
/// not serve for now (58030, retry), or that does not read back (XX001).
fn parquet_code(lower: &str) -> SqlState {
    if lower.contains("not found") {
        SqlState::UNDEFINED_FILE
    } else if lower.contains("object store") && !lower.contains("range") {
        SqlState::IO_ERROR
    } else {
        SqlState::DATA_CORRUPTED
    }
}

fn arrow_code(a: &arrow::error::ArrowError, lower: &str) -> SqlState {
    use arrow::error::ArrowError as A;
    match a {
        A::DivideByZero => SqlState::DIVISION_BY_ZERO,
        // A number that does not fit the type it is cast to (arrow's
        // message for an overflowing numeric cast), as Postgres' "smallint
        // out of range".
        A::CastError(_) if lower.contains("can't cast value") => {
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE
        }
        A::CastError(_) | A::ParseError(_) => data_code(lower),
        A::ComputeError(_) if lower.contains("overflow") => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
        // E.g. constant folding of `-(-9223372036854775808)`.
        A::ArithmeticOverflow(_) => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
        A::InvalidArgumentError(_) if lower.contains("non-nullable") => {
            SqlState::NOT_NULL_VIOLATION
        }
        A::MemoryError(_) => SqlState::OUT_OF_MEMORY,
        _ => SqlState::INTERNAL_ERROR,
    }
}

/// 22007 for a time that does not parse, 22P02 for any other bad literal.
fn data_code(lower: &str) -> SqlState {
    if lower.contains("timestamp") || lower.contains("date") || lower.contains("time") {
        SqlState::INVALID_DATETIME_FORMAT
    } else {
        SqlState::INVALID_TEXT_REPRESENTATION
    }
}

impl SqlError {
    /// The SQLSTATE error for any error a front end gets back from
    /// DataFusion or its handlers: DataFusion, storage and Sextant errors
    /// keep their meaning; other text that reads as a parse error is 42601;
    /// the rest is XX000.
    pub fn from_error(e: &(dyn std::error::Error + 'static)) -> SqlError {
        if let Some(d) = e.downcast_ref::<DataFusionError>() {
            classify_datafusion(d)
        } else if let Some(s) = e.downcast_ref::<StorageError>() {
            SqlError::new(s.sqlstate(), s.to_string())
        } else if let Some(s) = e.downcast_ref::<SqlError>() {
            s.clone()
        } else {
            let text = e.to_string();
            let lower = text.to_lowercase();
            let code = if lower.contains("sql parser error") || lower.contains("syntax") {
                SqlState::SYNTAX_ERROR
            } else {
                SqlState::INTERNAL_ERROR
            };
            SqlError::new(code, text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_keep_their_sqlstate() {
        let full = StorageError::BufferFull {
            used: 2,
            limit: 1,
            cause: String::new(),
        };
        let e = SqlError::from(full);
        assert_eq!(e.state, SqlState::INSUFFICIENT_RESOURCES);
        assert!(e.state.protocol_status().retry);
    }

    #[test]
    fn codes() {
        let e = DataFusionError::Plan("table 'sextant.public.nope' not found".into());
        assert_eq!(SqlError::from(e).state, SqlState::UNDEFINED_TABLE);
        let e = DataFusionError::SQL(
            Box::new(
                datafusion::sql::sqlparser::parser::ParserError::ParserError(
                    "Expected: an SQL statement, found: SELEC".into(),
                ),
            ),
            None,
        );
        let e = SqlError::from(e);
        assert_eq!(e.state, SqlState::SYNTAX_ERROR);
        assert_eq!(
            e.message,
            "syntax error: Expected: an SQL statement, found: SELEC"
        );
        let e = DataFusionError::ResourcesExhausted("Failed to allocate".into());
        assert_eq!(SqlError::from(e).state, SqlState::OUT_OF_MEMORY);
        let e = DataFusionError::External(Box::new(StorageError::NotNull {
            column: "time".into(),
            table: Some("t".into()),
        }));
        assert_eq!(SqlError::from(e).state, SqlState::NOT_NULL_VIOLATION);
        let e = DataFusionError::Context(
            "ctx".into(),
            Box::new(DataFusionError::NotImplemented("x".into())),
        );
        assert_eq!(SqlError::from(e).state, SqlState::FEATURE_NOT_SUPPORTED);
        let boxed: Box<dyn std::error::Error> =
            Box::new(DataFusionError::Plan("table 'x' not found".into()));
        assert_eq!(
            SqlError::from_error(boxed.as_ref()).state,
            SqlState::UNDEFINED_TABLE
        );
    }

    /// The classification reads DataFusion's own messages where DataFusion
    /// has no typed error (a missing table or function, a failed cast):
    /// these are the real engine's errors, so an upgrade that rewords one
    /// fails here instead of changing what clients get.
    #[tokio::test]
    async fn datafusion_errors_keep_their_sqlstate() {
        use datafusion::prelude::SessionContext;
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT, s TEXT) AS VALUES (1, 'x')")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let cases = [
            ("SELEC 1", SqlState::SYNTAX_ERROR),
            ("SELECT * FROM nope", SqlState::UNDEFINED_TABLE),
            ("SELECT nope FROM t", SqlState::UNDEFINED_COLUMN),
            ("SELECT a FROM t, t AS u", SqlState::AMBIGUOUS_COLUMN),
            (
                "SELECT nosuchfunction(a) FROM t",
                SqlState::UNDEFINED_FUNCTION,
            ),
            ("SELECT a + s FROM t", SqlState::DATATYPE_MISMATCH),
            (
                "SELECT CAST(s AS INT) FROM t",
                SqlState::INVALID_TEXT_REPRESENTATION,
            ),
            (
                "SELECT CAST(s AS TIMESTAMP) FROM t",
                SqlState::INVALID_DATETIME_FORMAT,
            ),
            ("SELECT a / 0 FROM t", SqlState::DIVISION_BY_ZERO),
            (
                "SELECT CAST(a + 299 AS TINYINT) FROM t",
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            ),
        ];
        let mut wrong = vec![];
        for (sql, want) in cases {
            let result = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => wrong.push(format!("{sql}: no error, want {want}")),
                Err(e) => {
                    let got = SqlError::from(e);
                    if got.state != want {
                        wrong.push(format!("{sql}: {} {}, want {want}", got.state, got.message));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
