//! The SQL layer's one error type: every failure a client can see carries a
//! SQLSTATE and a message that names the problem.

use datafusion::error::DataFusionError;
use sextant_storage::StorageError;

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
        Self::new(e.sqlstate(), e.to_string())
    }
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        classify_datafusion(&e)
    }
}

/// What a protocol without SQLSTATEs answers for an error: the one mapping
/// from SQLSTATE to HTTP status and gRPC code that every HTTP endpoint,
/// OTLP/gRPC and Flight SQL use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolStatus {
    /// The HTTP status code.
    pub http: u16,
    /// The gRPC status code, as its number (`tonic::Code::from(grpc)`).
    pub grpc: i32,
    /// Whether the client should try again later (HTTP `Retry-After`, the
    /// gRPC `RetryInfo` detail): the server is busy or restarting.
    pub retry: bool,
}

/// The HTTP status and gRPC code of `sqlstate` ([`ProtocolStatus`]).
pub fn protocol_status(sqlstate: &str) -> ProtocolStatus {
    // gRPC codes by number (grpc/doc/statuscodes.md).
    const CANCELLED: i32 = 1;
    const INVALID_ARGUMENT: i32 = 3;
    const NOT_FOUND: i32 = 5;
    const ALREADY_EXISTS: i32 = 6;
    const PERMISSION_DENIED: i32 = 7;
    const RESOURCE_EXHAUSTED: i32 = 8;
    const FAILED_PRECONDITION: i32 = 9;
    const UNIMPLEMENTED: i32 = 12;
    const INTERNAL: i32 = 13;
    const UNAVAILABLE: i32 = 14;
    const UNAUTHENTICATED: i32 = 16;
    let (http, grpc, retry) = match sqlstate {
        "28000" | "28P01" => (401, UNAUTHENTICATED, false),
        "42501" => (403, PERMISSION_DENIED, false),
        "42P01" | "42704" => (404, NOT_FOUND, false),
        "42P07" | "42710" => (409, ALREADY_EXISTS, false),
        "42809" | "55006" | "2BP01" => (409, FAILED_PRECONDITION, false),
        "53000" => (503, RESOURCE_EXHAUSTED, true),
        "53200" => (503, RESOURCE_EXHAUSTED, false),
        "57P01" => (503, UNAVAILABLE, true),
        "57014" => (408, CANCELLED, false),
        "0A000" => (501, UNIMPLEMENTED, false),
        c if ["07", "08", "22", "23", "26", "3F", "42"]
            .iter()
            .any(|class| c.starts_with(class)) =>
        {
            (400, INVALID_ARGUMENT, false)
        }
        _ => (500, INTERNAL, false),
    };
    ProtocolStatus { http, grpc, retry }
}

impl SqlError {
    /// This error's HTTP status and gRPC code.
    pub fn protocol_status(&self) -> ProtocolStatus {
        protocol_status(self.code)
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
    fn every_protocol_follows_the_sqlstate() {
        let s = |code| {
            let p = protocol_status(code);
            (p.http, p.grpc, p.retry)
        };
        assert_eq!(s("42P01"), (404, 5, false));
        assert_eq!(s("42501"), (403, 7, false));
        assert_eq!(s("28P01"), (401, 16, false));
        assert_eq!(s("53000"), (503, 8, true), "buffer full: retry");
        assert_eq!(s("57P01"), (503, 14, true), "shutting down: retry");
        assert_eq!(s("42804"), (400, 3, false));
        assert_eq!(s("22P02"), (400, 3, false));
        assert_eq!(s("42809"), (409, 9, false));
        assert_eq!(s("XX000"), (500, 13, false));
        let full = StorageError::BufferFull {
            used: 2,
            limit: 1,
            cause: String::new(),
        };
        assert_eq!(SqlError::from(full).protocol_status().http, 503);
    }

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
