//! SQLSTATEs, and what protocols without them answer instead.
//!
//! Every error a client can see carries a [`SqlState`]: each crate's error
//! type has one `sqlstate()` that names it by its PostgreSQL condition name
//! (`SqlState::UNDEFINED_TABLE`, not `"42P01"`). pgwire sends the code as
//! is; HTTP endpoints, OTLP/gRPC and Flight SQL derive their status from it
//! here, in [`SqlState::protocol_status`], the one mapping they share.

use std::fmt;

/// A five-character SQLSTATE, one of the named constants (PostgreSQL's
/// `errcodes.txt`), so a mistyped code does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState(&'static str);

macro_rules! states {
    ($($(#[$doc:meta])* $name:ident = $code:literal;)*) => {
        impl SqlState {
            $($(#[$doc])* pub const $name: SqlState = SqlState($code);)*

            /// Every named SQLSTATE.
            pub const ALL: &'static [SqlState] = &[$(SqlState::$name),*];
        }
    };
}

states! {
    /// 07001: a statement was executed with the wrong number of parameters.
    USING_CLAUSE_DOES_NOT_MATCH_PARAMETERS = "07001";
    /// 08P01: the client broke the protocol (a malformed message or body).
    PROTOCOL_VIOLATION = "08P01";
    /// 0A000: valid, but not something Sextant does.
    FEATURE_NOT_SUPPORTED = "0A000";
    /// 22000: a value that cannot be stored.
    DATA_EXCEPTION = "22000";
    /// 22003: a number outside its type's range.
    NUMERIC_VALUE_OUT_OF_RANGE = "22003";
    /// 22004: NULL where none is allowed.
    NULL_VALUE_NOT_ALLOWED = "22004";
    /// 22007: a date or time that does not parse.
    INVALID_DATETIME_FORMAT = "22007";
    /// 22008: a date, time or interval outside its type's range.
    DATETIME_FIELD_OVERFLOW = "22008";
    /// 22012: division by zero.
    DIVISION_BY_ZERO = "22012";
    /// 22021: bytes that are not valid in the encoding (UTF-8).
    CHARACTER_NOT_IN_REPERTOIRE = "22021";
    /// 22023: a parameter or option with a value it cannot take.
    INVALID_PARAMETER_VALUE = "22023";
    /// 2201G: a `width_bucket` count or bounds it cannot take.
    INVALID_ARGUMENT_FOR_WIDTH_BUCKET_FUNCTION = "2201G";
    /// 22P02: text that does not parse as the type it is read as.
    INVALID_TEXT_REPRESENTATION = "22P02";
    /// 22P04: COPY data that is not in the format the options say.
    BAD_COPY_FILE_FORMAT = "22P04";
    /// 23502: NULL in a NOT NULL column.
    NOT_NULL_VIOLATION = "23502";
    /// 25P02: a statement after an error in the same transaction.
    IN_FAILED_SQL_TRANSACTION = "25P02";
    /// 25006: a write to a node that does not accept writes.
    READ_ONLY_SQL_TRANSACTION = "25006";
    /// 26000: a prepared statement or portal name that does not exist.
    INVALID_SQL_STATEMENT_NAME = "26000";
    /// 28000: a login that is not allowed.
    INVALID_AUTHORIZATION_SPECIFICATION = "28000";
    /// 28P01: a wrong password or token.
    INVALID_PASSWORD = "28P01";
    /// 2BP01: dropping what another object depends on.
    DEPENDENT_OBJECTS_STILL_EXIST = "2BP01";
    /// 3D000: a database that does not exist.
    INVALID_CATALOG_NAME = "3D000";
    /// 3F000: a schema that does not exist.
    INVALID_SCHEMA_NAME = "3F000";
    /// 40001: a transaction that conflicted with another (the shared
    /// catalog's, after its retries); retry it.
    SERIALIZATION_FAILURE = "40001";
    /// 42000: a statement the planner refuses, for no more specific reason.
    SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION = "42000";
    /// 42501: the user lacks the privilege.
    INSUFFICIENT_PRIVILEGE = "42501";
    /// 42601: a statement that does not parse.
    SYNTAX_ERROR = "42601";
    /// 42701: one column name twice.
    DUPLICATE_COLUMN = "42701";
    /// 42702: a column name that more than one table has.
    AMBIGUOUS_COLUMN = "42702";
    /// 42703: a column that does not exist.
    UNDEFINED_COLUMN = "42703";
    /// 42P02: a parameter (`$n`) that no statement can have.
    UNDEFINED_PARAMETER = "42P02";
    /// 42704: an object (user, token, alert, setting) that does not exist.
    UNDEFINED_OBJECT = "42704";
    /// 42710: an object (user, token, alert) that exists already.
    DUPLICATE_OBJECT = "42710";
    /// 42804: a value of one type where another is needed.
    DATATYPE_MISMATCH = "42804";
    /// 42809: the operation does not apply to this kind of object.
    WRONG_OBJECT_TYPE = "42809";
    /// 42883: a function that does not exist (for these argument types).
    UNDEFINED_FUNCTION = "42883";
    /// 42P01: a table that does not exist.
    UNDEFINED_TABLE = "42P01";
    /// 42P07: a table that exists already.
    DUPLICATE_TABLE = "42P07";
    /// 42P16: a table or view definition that cannot be.
    INVALID_TABLE_DEFINITION = "42P16";
    /// 53000: the server is out of a resource for now (the write buffer).
    INSUFFICIENT_RESOURCES = "53000";
    /// 53100: the disk is full.
    DISK_FULL = "53100";
    /// 53200: the query needs more memory than it may use.
    OUT_OF_MEMORY = "53200";
    /// 54000: past a configured limit (a body or row too large).
    PROGRAM_LIMIT_EXCEEDED = "54000";
    /// 55006: the object is in use (the last administrator).
    OBJECT_IN_USE = "55006";
    /// 57014: the statement was cancelled or timed out.
    QUERY_CANCELED = "57014";
    /// 57P01: the server is shutting down.
    ADMIN_SHUTDOWN = "57P01";
    /// 58030: storage (disk, object store, catalog) failed.
    IO_ERROR = "58030";
    /// 58P01: a file the catalog lists is missing from the object store.
    UNDEFINED_FILE = "58P01";
    /// XX000: a failure inside Sextant.
    INTERNAL_ERROR = "XX000";
    /// XX001: a persisted file is damaged (it does not decode).
    DATA_CORRUPTED = "XX001";
}

impl SqlState {
    /// The five characters.
    pub const fn code(self) -> &'static str {
        self.0
    }

    /// The named SQLSTATE with this code, if there is one.
    pub fn from_code(code: &str) -> Option<SqlState> {
        SqlState::ALL.iter().copied().find(|s| s.0 == code)
    }

    /// The two-character class (`"42"` for every syntax or access error).
    pub fn class(self) -> &'static str {
        &self.0[..2]
    }
}

/// Whether `error`, or an error that caused it, is the operating system's
/// "No space left on device" (ENOSPC) or a disk quota's: 53100 wherever it
/// surfaces (the WAL, a Parquet file written to a local object store, a
/// spill file), as the WAL's own disk-full error is.
pub fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl PartialEq<&str> for SqlState {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// What a protocol without SQLSTATEs answers for an error.
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

/// The HTTP status and gRPC code of any SQLSTATE, named or not (a code a
/// client library reports, say): by its class where no code is listed.
pub fn protocol_status(sqlstate: &str) -> ProtocolStatus {
    match SqlState::from_code(sqlstate) {
        Some(state) => state.protocol_status(),
        None => by_class(sqlstate),
    }
}

// gRPC codes by number (grpc/doc/statuscodes.md).
const CANCELLED: i32 = 1;
const INVALID_ARGUMENT: i32 = 3;
const NOT_FOUND: i32 = 5;
const ALREADY_EXISTS: i32 = 6;
const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;
const FAILED_PRECONDITION: i32 = 9;
const ABORTED: i32 = 10;
const UNIMPLEMENTED: i32 = 12;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;
const DATA_LOSS: i32 = 15;
const UNAUTHENTICATED: i32 = 16;

fn status(http: u16, grpc: i32, retry: bool) -> ProtocolStatus {
    ProtocolStatus { http, grpc, retry }
}

impl SqlState {
    /// What HTTP and gRPC answer for an error with this SQLSTATE.
    pub fn protocol_status(self) -> ProtocolStatus {
        match self {
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION | SqlState::INVALID_PASSWORD => {
                status(401, UNAUTHENTICATED, false)
            }
            SqlState::INSUFFICIENT_PRIVILEGE => status(403, PERMISSION_DENIED, false),
            SqlState::UNDEFINED_TABLE
            | SqlState::UNDEFINED_OBJECT
            | SqlState::INVALID_CATALOG_NAME
            | SqlState::INVALID_SQL_STATEMENT_NAME => status(404, NOT_FOUND, false),
            SqlState::DUPLICATE_TABLE | SqlState::DUPLICATE_OBJECT => {
                status(409, ALREADY_EXISTS, false)
            }
            SqlState::WRONG_OBJECT_TYPE
            | SqlState::OBJECT_IN_USE
            | SqlState::DEPENDENT_OBJECTS_STILL_EXIST
            | SqlState::READ_ONLY_SQL_TRANSACTION => status(409, FAILED_PRECONDITION, false),
            SqlState::INSUFFICIENT_RESOURCES => status(503, RESOURCE_EXHAUSTED, true),
            SqlState::DISK_FULL => status(507, RESOURCE_EXHAUSTED, true),
            SqlState::OUT_OF_MEMORY => status(503, RESOURCE_EXHAUSTED, false),
            SqlState::PROGRAM_LIMIT_EXCEEDED => status(413, RESOURCE_EXHAUSTED, false),
            SqlState::ADMIN_SHUTDOWN => status(503, UNAVAILABLE, true),
            // A failed WAL write or object store request: the next may succeed.
            SqlState::IO_ERROR => status(503, UNAVAILABLE, true),
            // Stored data is damaged or gone: retrying will not help.
            SqlState::DATA_CORRUPTED | SqlState::UNDEFINED_FILE => status(500, DATA_LOSS, false),
            SqlState::SERIALIZATION_FAILURE => status(503, ABORTED, true),
            SqlState::QUERY_CANCELED => status(408, CANCELLED, false),
            SqlState::FEATURE_NOT_SUPPORTED => status(501, UNIMPLEMENTED, false),
            other => by_class(other.0),
        }
    }
}

/// Client errors by class (bad data, syntax, a missing schema, ...); the
/// rest is the server's.
fn by_class(sqlstate: &str) -> ProtocolStatus {
    if ["07", "08", "22", "23", "26", "3F", "42"]
        .iter()
        .any(|class| sqlstate.starts_with(class))
    {
        status(400, INVALID_ARGUMENT, false)
    } else {
        status(500, INTERNAL, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_found_among_the_causes() {
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl fmt::Display for Wrapped {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "unable to copy data to file")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(is_disk_full(&std::io::Error::from_raw_os_error(28)));
        assert!(is_disk_full(&Wrapped(std::io::Error::from_raw_os_error(
            28
        ))));
        assert!(!is_disk_full(&Wrapped(std::io::Error::from_raw_os_error(
            13
        ))));
        assert!(!is_disk_full(&Wrapped(std::io::Error::other("full"))));
    }

    #[test]
    fn every_protocol_follows_the_sqlstate() {
        let s = |state: SqlState| {
            let p = state.protocol_status();
            (p.http, p.grpc, p.retry)
        };
        assert_eq!(s(SqlState::UNDEFINED_TABLE), (404, 5, false));
        assert_eq!(s(SqlState::INSUFFICIENT_PRIVILEGE), (403, 7, false));
        assert_eq!(s(SqlState::INVALID_PASSWORD), (401, 16, false));
        assert_eq!(s(SqlState::INSUFFICIENT_RESOURCES), (503, 8, true));
        assert_eq!(s(SqlState::ADMIN_SHUTDOWN), (503, 14, true));
        assert_eq!(s(SqlState::DISK_FULL), (507, 8, true));
        assert_eq!(s(SqlState::IO_ERROR), (503, 14, true));
        assert_eq!(s(SqlState::DATA_CORRUPTED), (500, 15, false));
        assert_eq!(s(SqlState::PROGRAM_LIMIT_EXCEEDED), (413, 8, false));
        assert_eq!(s(SqlState::DATATYPE_MISMATCH), (400, 3, false));
        assert_eq!(s(SqlState::INVALID_TEXT_REPRESENTATION), (400, 3, false));
        assert_eq!(s(SqlState::WRONG_OBJECT_TYPE), (409, 9, false));
        assert_eq!(s(SqlState::INTERNAL_ERROR), (500, 13, false));
        assert_eq!(
            protocol_status("22P05").http,
            400,
            "a data exception by its class"
        );
    }

    #[test]
    fn codes_are_sqlstates() {
        for s in SqlState::ALL {
            assert_eq!(s.code().len(), 5, "{s}");
            assert!(
                s.code()
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()),
                "{s}"
            );
            assert_eq!(SqlState::from_code(s.code()), Some(*s));
        }
        let mut codes: Vec<_> = SqlState::ALL.iter().map(|s| s.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), SqlState::ALL.len(), "a code named twice");
    }
}
