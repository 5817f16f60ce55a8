//! The SQL layer's one error type: every failure a client can see carries a
//! SQLSTATE and a message that names the problem.

use datafusion::error::DataFusionError;
use sextant_catalog::CatalogError;
use sextant_storage::StorageError;
use sextant_storage::wal::WalError;

/// An error with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// Five-character SQLSTATE.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl SqlError {
    /// An error with SQLSTATE `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn syntax(m: impl Into<String>) -> Self {
        Self::new("42601", m)
    }
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new("0A000", m)
    }
    pub fn invalid_definition(m: impl Into<String>) -> Self {
        Self::new("42P16", m)
    }
    pub fn invalid_schema(m: impl Into<String>) -> Self {
        Self::new("3F000", m)
    }
    pub fn invalid_parameter(m: impl Into<String>) -> Self {
        Self::new("22023", m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new("XX000", m)
    }
}

impl From<StorageError> for SqlError {
    fn from(e: StorageError) -> Self {
        Self::new(Self::from_storage_code(&e), e.to_string())
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
        DataFusionError::Context(_, inner) => return classify_datafusion(inner),
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
                return SqlError::new(SqlError::from_storage_code(s), s.to_string());
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
        DataFusionError::SQL(..) => "42601",
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { .. } => "42703",
            datafusion::common::SchemaError::AmbiguousReference { .. } => "42702",
            datafusion::common::SchemaError::DuplicateQualifiedField { .. }
            | datafusion::common::SchemaError::DuplicateUnqualifiedField { .. } => "42701",
        },
        DataFusionError::Plan(_) if lower.contains("table") && lower.contains("not found") => {
            "42P01"
        }
        DataFusionError::Plan(_) if lower.contains("no field named") => "42703",
        DataFusionError::Plan(_) if lower.contains("invalid function") => "42883",
        DataFusionError::Plan(_) if lower.contains("coerce") || lower.contains("type") => "42804",
        DataFusionError::Plan(_) => "42000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ArrowError(a, _) => arrow_code(a, &lower),
        DataFusionError::Execution(_) if lower.contains("non-nullable") => "22004",
        DataFusionError::Execution(_) if lower.contains("cast") || lower.contains("parse") => {
            data_code(&lower)
        }
        DataFusionError::Execution(_) if lower.contains("divide by zero") => "22012",
        _ => "XX000",
    };
    let message = if code == "22004" && lower.contains("non-nullable") {
        format!("null value violates not-null constraint ({message})")
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

fn arrow_code(a: &arrow::error::ArrowError, lower: &str) -> &'static str {
    use arrow::error::ArrowError as A;
    match a {
        A::DivideByZero => "22012",
        // A number that does not fit the type it is cast to (arrow's
        // message for an overflowing numeric cast), as Postgres' "smallint
        // out of range".
        A::CastError(_) if lower.contains("can't cast value") => "22003",
        A::CastError(_) | A::ParseError(_) => data_code(lower),
        A::ComputeError(_) if lower.contains("overflow") => "22003",
        A::InvalidArgumentError(_) if lower.contains("non-nullable") => "22004",
        A::MemoryError(_) => "53200",
        _ => "XX000",
    }
}

/// 22007 for a time that does not parse, 22P02 for any other bad literal.
fn data_code(lower: &str) -> &'static str {
    if lower.contains("timestamp") || lower.contains("date") || lower.contains("time") {
        "22007"
    } else {
        "22P02"
    }
}

impl SqlError {
    fn from_storage_code(e: &StorageError) -> &'static str {
        match e {
            StorageError::Catalog(CatalogError::TableNotFound(_)) => "42P01",
            StorageError::Catalog(CatalogError::TableExists(_)) => "42P07",
            StorageError::Catalog(CatalogError::HasDependents { .. }) => "2BP01",
            StorageError::ReadOnly(_) => "42809",
            StorageError::InvalidData(m) if m.contains("null value") => "22004",
            StorageError::InvalidData(_) => "22000",
            StorageError::TypeConflict { .. } => "42804",
            StorageError::BufferFull { .. } => "53000",
            StorageError::Wal(WalError::Closed) | StorageError::ShuttingDown => "57P01",
            StorageError::Wal(_) | StorageError::ObjectStore(_) | StorageError::Catalog(_) => {
                "58030"
            }
            StorageError::Encoding(_) => "XX000",
        }
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
            SqlError::new(SqlError::from_storage_code(s), s.to_string())
        } else if let Some(s) = e.downcast_ref::<SqlError>() {
            s.clone()
        } else {
            let text = e.to_string();
            let lower = text.to_lowercase();
            let code = if lower.contains("sql parser error") || lower.contains("syntax") {
                "42601"
            } else {
                "XX000"
            };
            SqlError::new(code, text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e = DataFusionError::Plan("table 'sextant.public.nope' not found".into());
        assert_eq!(SqlError::from(e).code, "42P01");
        let e = DataFusionError::SQL(
            Box::new(
                datafusion::sql::sqlparser::parser::ParserError::ParserError(
                    "Expected: an SQL statement, found: SELEC".into(),
                ),
            ),
            None,
        );
        let e = SqlError::from(e);
        assert_eq!(e.code, "42601");
        assert_eq!(
            e.message,
            "syntax error: Expected: an SQL statement, found: SELEC"
        );
        let e = DataFusionError::ResourcesExhausted("Failed to allocate".into());
        assert_eq!(SqlError::from(e).code, "53200");
        let e = DataFusionError::External(Box::new(StorageError::InvalidData(
            "null value in column \"time\"".into(),
        )));
        assert_eq!(SqlError::from(e).code, "22004");
        let e = DataFusionError::Context(
            "ctx".into(),
            Box::new(DataFusionError::NotImplemented("x".into())),
        );
        assert_eq!(SqlError::from(e).code, "0A000");
        let boxed: Box<dyn std::error::Error> =
            Box::new(DataFusionError::Plan("table 'x' not found".into()));
        assert_eq!(SqlError::from_error(boxed.as_ref()).code, "42P01");
    }
}
