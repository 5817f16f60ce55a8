//! The storage engine's one error type.

use crate::wal::WalError;
use sextant_sqlstate::SqlState;

/// Result with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What can go wrong in storage, each kind with its SQLSTATE ([`StorageError::sqlstate`]).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Catalog failure (unknown table, duplicate table, SQLite error, ...).
    #[error(transparent)]
    Catalog(#[from] sextant_catalog::CatalogError),
    /// The WAL refused or failed a write, or could not be replayed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A row that cannot be stored (a value of the wrong type, ...).
    #[error("{0}")]
    InvalidData(String),
    /// NULL in a column that may not hold one (the time column).
    #[error("null value in column \"{column}\"{} violates not-null constraint", relation(.table))]
    NotNull {
        /// The column.
        column: String,
        /// The table, where it is known.
        table: Option<String>,
    },
    /// A write's column has another type than the table's column of that name.
    #[error(
        "column \"{column}\" of table \"{table}\" is {existing}, but this write has {incoming}; values are never cast silently"
    )]
    TypeConflict {
        /// Table name.
        table: String,
        /// Column name.
        column: String,
        /// The table's type.
        existing: arrow::datatypes::DataType,
        /// The write's type.
        incoming: arrow::datatypes::DataType,
    },
    /// The write buffer is full and persistence has not caught up in time;
    /// the write was not applied and may be retried.
    #[error(
        "write buffer is full ({used} of {limit} bytes) and persistence has not caught up{cause}; the write was not applied, retry it"
    )]
    BufferFull {
        /// Bytes buffered.
        used: usize,
        /// The writers' share of `--buffer-limit` (three quarters).
        limit: usize,
        /// Empty, or why persistence is failing (` (persistence is failing: ...)`).
        cause: String,
    },
    /// The ingest requests in flight held `--ingest-inflight-limit` for
    /// the whole `--backpressure-timeout` (`waited`), or so many more were
    /// waiting already that this one was refused at once.
    #[error("{}", overloaded(*in_flight, *waiting, *limit, *waited))]
    Overloaded {
        /// Bytes the requests in flight hold.
        in_flight: usize,
        /// Bytes the requests waiting ahead of this one ask for.
        waiting: usize,
        /// The configured limit.
        limit: usize,
        /// How long this one waited (`--backpressure-timeout`), if it did.
        waited: Option<std::time::Duration>,
    },
    /// Object storage failed.
    #[error("object storage: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Arrow or Parquet encoding failed.
    #[error("encoding: {0}")]
    Encoding(String),
    /// A write to a table only Sextant itself writes (a materialized view).
    #[error("{0}")]
    ReadOnly(String),
    /// The engine is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Another node's query asked for buffered rows this node has
    /// persisted and let go since that query read the catalog.
    #[error("{0}")]
    Stale(String),
    /// A write to a node that does not ingest (`--mode` without `ingest`).
    #[error("node {0} does not accept writes (its --mode has no ingest): write to an ingest node")]
    NotIngest(String),
    /// Other nodes of the cluster did not answer a request that needed
    /// them all.
    #[error("{0}")]
    Peers(String),
    /// Something this build does not do yet, said plainly.
    #[error("{0}")]
    Unsupported(String),
}

impl StorageError {
    /// The SQLSTATE a client gets for this error; HTTP and gRPC statuses
    /// follow from it ([`SqlState::protocol_status`]).
    pub fn sqlstate(&self) -> SqlState {
        match self {
            StorageError::Catalog(e) => e.sqlstate(),
            StorageError::ReadOnly(_) => SqlState::WRONG_OBJECT_TYPE,
            StorageError::NotNull { .. } => SqlState::NOT_NULL_VIOLATION,
            StorageError::InvalidData(_) => SqlState::DATA_EXCEPTION,
            StorageError::TypeConflict { .. } => SqlState::DATATYPE_MISMATCH,
            StorageError::BufferFull { .. } | StorageError::Overloaded { .. } => {
                SqlState::INSUFFICIENT_RESOURCES
            }
            StorageError::Wal(WalError::Closed) | StorageError::ShuttingDown => {
                SqlState::ADMIN_SHUTDOWN
            }
            StorageError::Wal(WalError::DiskFull { .. }) => SqlState::DISK_FULL,
            StorageError::ObjectStore(e) if sextant_sqlstate::is_disk_full(e) => {
                SqlState::DISK_FULL
            }
            StorageError::Wal(_) | StorageError::ObjectStore(_) => SqlState::IO_ERROR,
            StorageError::Encoding(_) => SqlState::INTERNAL_ERROR,
            StorageError::Stale(_) => SqlState::SERIALIZATION_FAILURE,
            StorageError::NotIngest(_) => SqlState::READ_ONLY_SQL_TRANSACTION,
            StorageError::Unsupported(_) => SqlState::FEATURE_NOT_SUPPORTED,
            StorageError::Peers(_) => SqlState::IO_ERROR,
        }
    }
}

impl StorageError {
    /// This error, naming `table` where it names none yet.
    pub(crate) fn in_table(self, table: &str) -> Self {
        match self {
            StorageError::NotNull {
                column,
                table: None,
            } => StorageError::NotNull {
                column,
                table: Some(table.to_string()),
            },
            e => e,
        }
    }
}

/// ` of relation "t"`, as Postgres names the table in a not-null violation.
fn relation(table: &Option<String>) -> String {
    table
        .as_ref()
        .map(|t| format!(" of relation \"{t}\""))
        .unwrap_or_default()
}

impl From<arrow::error::ArrowError> for StorageError {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::Encoding(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for StorageError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Self::Encoding(e.to_string())
    }
}

fn overloaded(
    in_flight: usize,
    waiting: usize,
    limit: usize,
    waited: Option<std::time::Duration>,
) -> String {
    let why = match waited {
        Some(waited) => format!(
            "{in_flight} bytes of requests are being written (limit {limit}, --ingest-inflight-limit) and none finished within {waited:?}"
        ),
        None => format!(
            "{in_flight} bytes of requests are being written and {waiting} more are waiting (limit {limit} each, --ingest-inflight-limit)"
        ),
    };
    format!("too many writes in flight: {why}; the write was not applied, retry it")
}
