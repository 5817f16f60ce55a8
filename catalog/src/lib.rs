//! Sextant's catalog: what tables exist, their schemas and options, and which
//! Parquet files hold their persisted rows.
//!
//! Writers of metadata (DDL, the persister committing files) call the
//! [`Catalog`] trait; readers (the table provider, system tables) ask it for
//! [`TableDef`]s and [`ParquetFile`]s. [`SqliteCatalog`] keeps it all in one
//! embedded SQLite file with a schema version, so a restart sees exactly what
//! was committed. Each commit of files also records the WAL sequence number up
//! to which the table's rows are now in Parquet, in the same transaction, so
//! WAL replay after a crash never applies a record twice.

mod error;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

pub use error::{CatalogError, Result};
pub use sqlite::SqliteCatalog;

/// The database every table lives in (what clients pass as `dbname`).
pub const DATABASE_NAME: &str = "sextant";
/// The schema every user table lives in.
pub const SCHEMA_NAME: &str = "public";
/// The name of the time column every table has.
pub const TIME_COLUMN: &str = "time";
/// Partition duration when a table does not say otherwise.
pub const DEFAULT_PARTITION: Duration = Duration::from_secs(3600);

/// A table as the catalog knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// Stable id; never reused, so a dropped and re-created table is a new table.
    pub id: i64,
    /// Table name (unquoted, as the user wrote it after identifier normalization).
    pub name: String,
    /// Arrow schema; the time column is `Timestamp(Nanosecond, "UTC")`, not null.
    pub schema: SchemaRef,
    /// Name of the time column.
    pub time_column: String,
    /// Table options (`WITH (...)`).
    pub options: TableOptions,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_at_ns: i64,
    /// Every WAL record with a sequence number up to this one has its rows of
    /// this table in committed Parquet files.
    pub persisted_seq: u64,
}

/// Options a table is created with or altered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOptions {
    /// Rows older than this are dropped; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Width of a time partition, the unit of persistence and pruning.
    pub partition_duration: Duration,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            retention: None,
            partition_duration: DEFAULT_PARTITION,
        }
    }
}

/// A table to create.
#[derive(Debug, Clone)]
pub struct NewTable {
    /// Table name.
    pub name: String,
    /// Arrow schema including the time column.
    pub schema: SchemaRef,
    /// Name of the time column.
    pub time_column: String,
    /// Table options.
    pub options: TableOptions,
}

/// Min/max/null statistics of one column of one Parquet file, used for pruning.
///
/// Values are kept as JSON scalars (numbers, strings, booleans; timestamps as
/// nanoseconds) so the catalog needs no Arrow value serialization of its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// Smallest non-null value, if known.
    pub min: Option<serde_json::Value>,
    /// Largest non-null value, if known.
    pub max: Option<serde_json::Value>,
    /// Number of nulls.
    pub null_count: u64,
}

/// A Parquet file to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewParquetFile {
    /// Object-store path, `<table>/<partition>/<file>.parquet`.
    pub path: String,
    /// Start of the time partition the file belongs to (ns since epoch).
    pub partition_start_ns: i64,
    /// Smallest time value in the file (ns since epoch).
    pub min_time_ns: i64,
    /// Largest time value in the file (ns since epoch).
    pub max_time_ns: i64,
    /// Number of rows.
    pub rows: u64,
    /// Size of the object in bytes.
    pub bytes: u64,
    /// Per-column statistics, by column name.
    pub column_stats: BTreeMap<String, ColumnStats>,
}

/// A committed Parquet file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetFile {
    /// Catalog id of the file.
    pub id: i64,
    /// Table the file belongs to.
    pub table_id: i64,
    /// The file's description.
    pub file: NewParquetFile,
    /// Commit time, nanoseconds since the Unix epoch.
    pub created_at_ns: i64,
}

/// One compaction of one time partition of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionRun {
    /// Table name at the time of the run.
    pub table: String,
    /// Start of the partition compacted (ns since epoch).
    pub partition_start_ns: i64,
    /// Files merged.
    pub files_in: u64,
    /// Files written.
    pub files_out: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// Bytes of the files merged.
    pub bytes_in: u64,
    /// Bytes of the files written.
    pub bytes_out: u64,
    /// Start of the run (ns since epoch).
    pub started_at_ns: i64,
    /// How long it took.
    pub duration: Duration,
    /// What started it: `background` or `COMPACT TABLE`.
    pub trigger: String,
}

/// The catalog interface. Implementations are internally synchronized.
///
/// A trait so that a shared PostgreSQL catalog can stand in for SQLite when
/// several nodes serve one data set.
pub trait Catalog: Send + Sync + Debug {
    /// Creates a table; [`CatalogError::TableExists`] if the name is taken.
    fn create_table(&self, table: NewTable) -> Result<TableDef>;
    /// Drops a table, returning its definition and the files it had (which
    /// the caller deletes from object storage).
    fn drop_table(&self, name: &str) -> Result<(TableDef, Vec<ParquetFile>)>;
    /// Every table, ordered by name.
    fn tables(&self) -> Result<Vec<TableDef>>;
    /// One table by name.
    fn table(&self, name: &str) -> Result<Option<TableDef>>;
    /// Replaces a table's options.
    fn set_options(&self, name: &str, options: TableOptions) -> Result<TableDef>;
    /// Replaces a table's schema with a wider one (new nullable columns).
    fn set_schema(&self, name: &str, schema: SchemaRef) -> Result<TableDef>;
    /// Atomically records new Parquet files of a table and advances its
    /// `persisted_seq`. Either all of it is committed or nothing is.
    fn commit_files(
        &self,
        table_id: i64,
        files: Vec<NewParquetFile>,
        persisted_seq: u64,
    ) -> Result<Vec<ParquetFile>>;
    /// Atomically removes files of a table and adds others (compaction,
    /// retention). Nothing changes if any file to remove is not, or no
    /// longer, the table's ([`CatalogError::FileNotFound`]).
    fn replace_files(
        &self,
        table_id: i64,
        remove: &[i64],
        add: Vec<NewParquetFile>,
    ) -> Result<Vec<ParquetFile>>;
    /// Files of one table, ordered by id.
    fn files(&self, table_id: i64) -> Result<Vec<ParquetFile>>;
    /// Records one compaction run.
    fn record_compaction(&self, run: &CompactionRun) -> Result<()>;
    /// The most recent compaction runs, newest first.
    fn compactions(&self, limit: usize) -> Result<Vec<CompactionRun>>;
    /// The largest `persisted_seq` any table (live or dropped) ever reached; the
    /// WAL never hands out a sequence number at or below it again.
    fn max_persisted_seq(&self) -> Result<u64>;
}
