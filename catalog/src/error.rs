//! The catalog's one error type.

use sextant_sqlstate::SqlState;

/// Result with [`CatalogError`].
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// What can go wrong in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// `CREATE TABLE` of a name that is taken.
    #[error("table \"{0}\" already exists")]
    TableExists(String),
    /// A table that does not exist.
    #[error("table \"{0}\" does not exist")]
    TableNotFound(String),
    /// Dropping a table a materialized view reads.
    #[error(
        "cannot drop table \"{table}\" because materialized view \"{view}\" depends on it: drop the view first"
    )]
    HasDependents {
        /// The table to drop.
        table: String,
        /// A view over it.
        view: String,
    },
    /// `CREATE ALERT` of a name that is taken.
    #[error("relation \"{0}\" already exists")]
    RelationExists(String),
    /// No view of that name.
    #[error("view \"{0}\" does not exist")]
    ViewNotFound(String),
    /// No index of that name.
    #[error("index \"{0}\" does not exist")]
    IndexNotFound(String),
    #[error("alert \"{0}\" already exists")]
    AlertExists(String),
    /// An alert rule that does not exist.
    #[error("alert \"{0}\" does not exist")]
    AlertNotFound(String),
    /// `CREATE USER` of a name that is taken.
    #[error("user \"{0}\" already exists")]
    UserExists(String),
    /// A user that does not exist.
    #[error("user \"{0}\" does not exist")]
    UserNotFound(String),
    /// `CREATE TOKEN` of a name that is taken.
    #[error("token \"{0}\" already exists")]
    TokenExists(String),
    /// A token that does not exist.
    #[error("token \"{0}\" does not exist")]
    TokenNotFound(String),
    /// A file that is not (or no longer) one of the table's.
    #[error("file {0} is not one of the table's files (compacted or expired meanwhile)")]
    FileNotFound(i64),
    /// The catalog file was written by a newer Sextant.
    #[error(
        "catalog {path} has schema version {found}, this sextant understands up to {supported}; upgrade sextant"
    )]
    UnsupportedVersion {
        /// Path of the catalog file.
        path: String,
        /// Version found in the file.
        found: i64,
        /// Highest version this build supports.
        supported: i64,
    },
    /// The file is not a Sextant catalog, or a stored value cannot be read back.
    #[error("catalog is corrupt: {0}")]
    Corrupt(String),
    /// [`crate::SqliteCatalog::open_existing`] found no catalog: no file,
    /// or one without a Sextant catalog in it (new, emptied, or with its
    /// SQLite WAL lost).
    #[error("{0} holds no Sextant catalog")]
    Empty(String),
    /// A file beside the catalog (its snapshot) could not be written or read.
    #[error("catalog file error: {0}")]
    Io(String),
    /// SQLite failed (I/O, locking, ...).
    #[error("catalog storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL catalog failed (unreachable, refused, ...).
    #[error("catalog database error: {0}")]
    Postgres(String),
    /// A job's commit by a node that no longer holds (or never held) the
    /// job's lease: another node runs it.
    #[error("this node does not hold the \"{job}\" lease ({holder} holds it)")]
    LeaseNotHeld {
        /// The job (`views`, ...).
        job: String,
        /// Who holds it now (or "no node").
        holder: String,
    },
    /// A PostgreSQL transaction conflicted with another node's too often.
    #[error("catalog transaction kept conflicting with other nodes': {0}")]
    Conflict(String),
}

impl CatalogError {
    /// The SQLSTATE a client gets for this error.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            CatalogError::TableExists(_) | CatalogError::RelationExists(_) => {
                SqlState::DUPLICATE_TABLE
            }
            CatalogError::IndexNotFound(_) => SqlState::UNDEFINED_OBJECT,
            CatalogError::TableNotFound(_) | CatalogError::ViewNotFound(_) => {
                SqlState::UNDEFINED_TABLE
            }
            CatalogError::HasDependents { .. } => SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
            CatalogError::AlertExists(_)
            | CatalogError::UserExists(_)
            | CatalogError::TokenExists(_) => SqlState::DUPLICATE_OBJECT,
            CatalogError::AlertNotFound(_)
            | CatalogError::UserNotFound(_)
            | CatalogError::TokenNotFound(_) => SqlState::UNDEFINED_OBJECT,
            // SQLITE_FULL: the disk under the catalog is full.
            CatalogError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull =>
            {
                SqlState::DISK_FULL
            }
            CatalogError::FileNotFound(_)
            | CatalogError::UnsupportedVersion { .. }
            | CatalogError::Corrupt(_)
            | CatalogError::Empty(_)
            | CatalogError::Io(_)
            | CatalogError::Sqlite(_)
            | CatalogError::Postgres(_) => SqlState::IO_ERROR,
            CatalogError::Conflict(_) => SqlState::SERIALIZATION_FAILURE,
            CatalogError::LeaseNotHeld { .. } => SqlState::OBJECT_IN_USE,
        }
    }
}
