//! Sextant's catalog: what tables exist, their schemas and options, and which
//! Parquet files hold their persisted rows.
//!
//! Writers of metadata (DDL, the persister committing files) call the
//! [`Catalog`] trait; readers (the table provider, system tables) ask it for
//! [`TableDef`]s and [`ParquetFile`]s. [`SqliteCatalog`] keeps it all in one
//! embedded SQLite file with a schema version, so a restart sees exactly what
//! was committed; [`PostgresCatalog`] in a PostgreSQL database that several
//! nodes share. Both are one [`SqlCatalog`]: the same statements over either
//! store. Each commit of files also records the WAL sequence number up
//! to which the table's rows are now in Parquet, in the same transaction, so
//! WAL replay after a crash never applies a record twice.
//!
//! A materialized view is a table of its own plus a [`ViewDef`]; the time
//! buckets of aggregating views that still need re-aggregating are
//! [`Invalidation`]s, committed with the base rows that caused them.
//!
//! Alert rules ([`StoredAlert`]) keep their state here too, committed with
//! the history ([`AlertEvent`]) and notifications ([`Delivery`]) each
//! evaluation produces, so a restart resumes exactly where the rules were.
//!
//! Prometheus metric metadata ([`MetricMetadata`]: a family's type, help
//! and unit, from remote write) is kept by family name, the latest wins.
//!
//! Users ([`StoredUser`]: a SCRAM verifier and grants) and access tokens
//! ([`StoredToken`]: a hash, never the secret) are kept as JSON the auth
//! crate owns; dropping a user drops its tokens in the same transaction.

mod db;
mod error;
mod pg_tls;
mod postgres;
mod sql;
mod sqlite;

/// For the fuzz targets: the decoders of what the catalog stores as text
/// (a table's columns and options, a file's column statistics), which a
/// catalog restored from an object store's snapshot feeds to start-up.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes a table's stored columns, options and a file's statistics;
    /// an error is fine, a panic is not.
    pub fn decode_records(columns: &str, options: &str, stats: &str) {
        let _ = crate::sql::tables::decode_schema(columns);
        let _ = crate::sql::tables::decode_options(options);
        let _ = crate::sql::tables::decode_column_stats("fuzz.parquet", stats);
    }
}

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use arrow_schema::SchemaRef;
use serde::{Deserialize, Serialize};

pub use error::{CatalogError, Result};
pub use postgres::{PostgresCatalog, PostgresStore};
pub use sql::SqlCatalog;
pub use sqlite::{SqliteCatalog, SqliteStore};

/// The database every table lives in (what clients pass as `dbname`).
pub const DATABASE_NAME: &str = "sextant";
/// The schema every user table lives in.
pub const SCHEMA_NAME: &str = "public";
/// The name of the time column every table has.
pub const TIME_COLUMN: &str = "time";
/// Partition duration when a table does not say otherwise.
pub const DEFAULT_PARTITION: Duration = Duration::from_secs(3600);
/// The hidden column of a keyed table that orders the writes of one key:
/// each write's version (see [`TableKey`]). Queries do not see it.
pub const VERSION_COLUMN: &str = "_sextant_version";
/// Field metadata that marks a column as a tag (line protocol) or label
/// (remote write): part of the key of a table keyed by its tags.
pub const TAG_METADATA: &str = "sextant.tag";

/// A table's key: a row whose key equals an earlier row's replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableKey {
    /// The key columns, in order (the time column among them, except in a
    /// reference table).
    pub columns: Vec<String>,
    /// Keyed by tags: every column marked [`TAG_METADATA`] joins the key
    /// when it appears (line protocol, remote write).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tags: bool,
    /// How a newer row replaces an older one.
    #[serde(default)]
    pub merge: Merge,
}

/// How a newer row of a key replaces the stored one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// The newer row replaces the older whole (SQL `PRIMARY KEY`, remote write).
    #[default]
    LastRow,
    /// Each column takes the newest non-null value (line protocol: a point
    /// merges its fields into the stored one; fields it lacks keep theirs).
    LastNonNull,
}

impl Merge {
    /// Its name as `system.tables` and EXPLAIN show it.
    pub fn name(self) -> &'static str {
        match self {
            Merge::LastRow => "last_row",
            Merge::LastNonNull => "last_non_null",
        }
    }
}

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
    /// Every record of this node's WAL with a sequence number up to this one
    /// has its rows of this table in committed Parquet files (each node that
    /// writes has its own WAL and its own position in each table).
    pub persisted_seq: u64,
}

/// Options a table is created with or altered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOptions {
    /// Rows older than this are dropped; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Width of a time partition, the unit of persistence and pruning.
    pub partition_duration: Duration,
    /// A reference table, declared without a time column (host → team,
    /// service → owner): its rows carry an internal `time` (the epoch, or
    /// the time a protocol wrote) that queries do not see
    /// ([`TableDef::visible_schema`]); it has no retention.
    pub reference: bool,
    /// The table's key; `None`: append-only.
    pub key: Option<TableKey>,
    /// Which text columns get a token index in each Parquet file (for
    /// `matches_term`).
    pub token_index: TokenIndex,
}

/// Which text columns of a table get a token index in its files.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenIndex {
    /// Text columns named for messages: `body`, `message`, `msg`, `log`,
    /// and those ending in `_message` or `.message`.
    #[default]
    Auto,
    /// None.
    Off,
    /// These text columns (names as stored).
    Columns(Vec<String>),
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            retention: None,
            partition_duration: DEFAULT_PARTITION,
            reference: false,
            key: None,
            token_index: TokenIndex::Auto,
        }
    }
}

impl TableDef {
    /// The columns queries see: a reference table's internal time column
    /// (the first) and a keyed table's [`VERSION_COLUMN`] left out.
    pub fn visible_schema(&self) -> SchemaRef {
        if !self.options.reference && self.options.key.is_none() {
            return self.schema.clone();
        }
        let fields: Vec<_> = self
            .schema
            .fields()
            .iter()
            .filter(|f| {
                !(self.options.reference && f.name() == &self.time_column)
                    && f.name() != VERSION_COLUMN
            })
            .cloned()
            .collect();
        std::sync::Arc::new(arrow_schema::Schema::new_with_metadata(
            fields,
            self.schema.metadata().clone(),
        ))
    }
}

/// A plain view (`CREATE VIEW`): a saved query, expanded where a statement
/// reads it; `columns` are its result's, for clients that list them.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainView {
    pub name: String,
    pub query: String,
    pub columns: SchemaRef,
    pub created_at_ns: i64,
}

/// An index (`CREATE INDEX`), as recorded: Sextant builds no secondary
/// index (a scan prunes Parquet files and row groups by their statistics),
/// so an index is a name a client's schema script can create and drop.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexDef {
    pub name: String,
    /// The table it is on.
    pub table: String,
    /// Its key columns (or expressions), as written.
    pub columns: Vec<String>,
    pub created_at_ns: i64,
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

/// How a materialized view is kept up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    /// `GROUP BY date_bin(width, time), ...`: each write to the base table
    /// invalidates the time buckets it touches, and the refresher
    /// re-aggregates exactly those.
    Aggregate,
    /// Projection and filter: applied to every write of the base table as
    /// it is ingested (an ingest pipeline).
    Transform,
    /// Any other query: recomputed in full every `refresh_interval`.
    Full,
}

impl ViewKind {
    /// The name shown in `system.materialized_views`.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewKind::Aggregate => "aggregate",
            ViewKind::Transform => "transform",
            ViewKind::Full => "full",
        }
    }
}

/// What a view is, as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewSpec {
    /// How it is maintained.
    pub kind: ViewKind,
    /// Aggregate: the bucket width of `date_bin` (ns).
    #[serde(default)]
    pub bucket_ns: i64,
    /// Aggregate: the origin of `date_bin` (ns since the epoch).
    #[serde(default)]
    pub origin_ns: i64,
    /// Full: how often it is recomputed (seconds).
    #[serde(default)]
    pub refresh_interval_secs: u64,
}

/// How far a view's backfill of the base table's existing rows has got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewProgress {
    /// The time range to backfill, `[from, to)` (ns); `None` once done.
    #[serde(default)]
    pub backfill: Option<(i64, i64)>,
    /// Backfilled up to here (ns), within `backfill`.
    #[serde(default)]
    pub backfilled_to_ns: i64,
}

/// A materialized view: a table of its own (`table_id`) whose rows are the
/// query `query` over the base table.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewDef {
    /// The id of the view's own table (also the view's id).
    pub table_id: i64,
    /// The view's name (its table's name).
    pub name: String,
    /// The table the query reads.
    pub base_table_id: i64,
    /// The base table's name.
    pub base_table: String,
    /// The `SELECT` text, as written.
    pub query: String,
    /// How it is maintained.
    pub spec: ViewSpec,
    /// Backfill progress.
    pub progress: ViewProgress,
}

/// A view to create together with its table.
#[derive(Debug, Clone)]
pub struct NewView {
    /// The table the query reads.
    pub base_table_id: i64,
    /// The `SELECT` text.
    pub query: String,
    /// How it is maintained.
    pub spec: ViewSpec,
    /// Backfill to do.
    pub progress: ViewProgress,
}

/// One time bucket of an aggregating view that must be re-aggregated.
/// `generation` orders the invalidations one node makes of the same
/// bucket: a refresh that read generation `g` of node `n` clears only
/// node `n`'s invalidations up to `g` (each node counts on its own).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Invalidation {
    /// The view (its table id).
    pub view_id: i64,
    /// The node whose write (or refresh) invalidated the bucket.
    pub node: String,
    /// Start of the bucket (ns since the epoch).
    pub bucket_ns: i64,
    /// Generation of the invalidation.
    pub generation: u64,
}

/// A `DELETE FROM t WHERE predicate`: hides the matching rows of the
/// table's files with ids up to `files_upto` until compaction rewrites
/// them, and of `node`'s buffered rows with WAL sequence numbers up to
/// `seq` (those are removed from its buffer at once, and again when its WAL
/// is replayed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Its id (deletes apply in id order).
    pub id: i64,
    /// The table.
    pub table_id: i64,
    /// The condition, as SQL over the table's columns (constant: `now()`
    /// already replaced by the time of the statement).
    pub predicate: String,
    /// The newest file of the table when the delete ran.
    pub files_upto: i64,
    /// The node that ran it.
    pub node: String,
    /// That node's WAL sequence number when it ran.
    pub seq: u64,
    /// When it ran (ns).
    pub created_at_ns: i64,
    /// How far each node's write buffer it covers: that node's rows up to
    /// this WAL sequence number (its own and, on a shared catalog, each
    /// ingest node's, recorded as the node takes the delete in).
    pub bounds: BTreeMap<String, u64>,
    /// The rows each node in `bounds` removed from its buffer when it took
    /// the delete in (the node that ran it counts its own in the command
    /// tag: 0 here).
    pub removed: BTreeMap<String, u64>,
}

/// What [`Catalog::commit_refresh`] commits.
#[derive(Debug)]
pub struct Refresh<'a> {
    /// The view (its table id).
    pub view_id: i64,
    /// Files of the view replaced...
    pub remove: &'a [i64],
    /// ...by these.
    pub add: Vec<NewParquetFile>,
    /// Invalidations of this view the refresh covered.
    pub done: &'a [Invalidation],
    /// Invalidations of views over this view.
    pub invalidate: &'a [Invalidation],
    /// New backfill progress, if it moved.
    pub progress: Option<&'a ViewProgress>,
    /// On a shared catalog, the lease (job, holder) the refreshing node
    /// must hold for the commit to happen: one node refreshes views.
    pub lease: Option<(&'a str, &'a str)>,
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
/// An alert rule as stored: its definition and evaluation state are JSON
/// owned by the alert scheduler (`sextant-alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    pub name: String,
    pub definition: String,
    pub state: String,
    pub created_at_ns: i64,
}

/// One entry of an alert's history (a transition or a notification
/// attempt), its details as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub alert: String,
    pub time_ns: i64,
    pub body: String,
}

/// A notification waiting to be delivered (or retried), as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub alert: String,
    pub body: String,
}

/// A user as stored: its verifier and grants as JSON (the auth crate's).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUser {
    pub name: String,
    pub body: String,
    pub created_at_ns: i64,
}

/// A Prometheus metric family's metadata, as remote write carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricMetadata {
    /// The family's name (a histogram's, without `_bucket`).
    pub metric: String,
    /// `counter`, `gauge`, `histogram`, `gaugehistogram`, `summary`,
    /// `info`, `stateset` or `unknown`.
    pub kind: String,
    pub help: String,
    pub unit: String,
}

/// A Sextant process as the catalog knows it: each node registers when it
/// starts, heartbeats while it runs, and says when it stops cleanly.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// `--node-id`, kept in the node's data directory.
    pub id: String,
    /// What the node does (`ingest,query,compact`).
    pub modes: String,
    /// Its listeners, JSON: `{"pg": "host:port", "http": ..., "grpc": ..., "flight": ...}`.
    pub addresses: String,
    /// When it last started (ns since the epoch).
    pub started_at_ns: i64,
    /// Its latest heartbeat (ns since the epoch).
    pub last_heartbeat_ns: i64,
    /// It stopped cleanly and has not started since.
    pub stopped: bool,
}

impl NodeInfo {
    /// A node that has not heartbeat for this long is `down`.
    pub const DOWN_AFTER: Duration = Duration::from_secs(15);

    /// `up`, `down` (no heartbeat for [`NodeInfo::DOWN_AFTER`]) or
    /// `stopped` (cleanly).
    pub fn state(&self, now_ns: i64) -> &'static str {
        if self.stopped {
            "stopped"
        } else if now_ns.saturating_sub(self.last_heartbeat_ns) > Self::DOWN_AFTER.as_nanos() as i64
        {
            "down"
        } else {
            "up"
        }
    }
}

/// A table's files and each node's persisted WAL position they cover
/// ([`Catalog::files_and_positions`]).
pub type FilesAt = (Vec<ParquetFile>, BTreeMap<String, u64>);

/// Who runs a singleton job (compaction and retention, view refresh, alert
/// evaluation), until when: the holder renews it while it runs the job;
/// another node takes it once it has expired.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The job.
    pub name: String,
    /// The node that holds it.
    pub holder: String,
    /// When the holder took it (ns since the epoch).
    pub acquired_at_ns: i64,
    /// When it lapses unless renewed (ns since the epoch).
    pub expires_at_ns: i64,
}

/// An access token as stored: its hash, limits and expiry as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredToken {
    pub name: String,
    pub user: String,
    pub body: String,
    pub created_at_ns: i64,
}

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
    /// Widens a table's schema: appends the columns of `schema` it lacks
    /// (new nullable columns) to the catalog's current ones.
    fn set_schema(&self, name: &str, schema: SchemaRef) -> Result<TableDef>;
    /// Atomically records new Parquet files of a table and advances its
    /// `persisted_seq`. Either all of it is committed or nothing is.
    fn commit_files(
        &self,
        table_id: i64,
        files: Vec<NewParquetFile>,
        persisted_seq: u64,
    ) -> Result<Vec<ParquetFile>> {
        self.commit_files_invalidating(table_id, files, persisted_seq, &[], i64::MAX)
    }
    /// [`Catalog::commit_files`], recording in the same transaction the
    /// view buckets the persisted rows invalidate (so they outlive the WAL
    /// records that caused them). Refused ([`CatalogError::Conflict`]) if
    /// the table has a delete newer than `deletes_seen`, the newest this
    /// node has taken in: the files could hold rows it removes.
    fn commit_files_invalidating(
        &self,
        table_id: i64,
        files: Vec<NewParquetFile>,
        persisted_seq: u64,
        invalidate: &[Invalidation],
        deletes_seen: i64,
    ) -> Result<Vec<ParquetFile>>;
    /// Creates a materialized view and its table in one transaction.
    fn create_view(&self, table: NewTable, view: NewView) -> Result<(TableDef, ViewDef)>;
    /// Every view, ordered by name.
    fn views(&self) -> Result<Vec<ViewDef>>;
    /// Records a delete (its id and time are the catalog's).
    fn add_delete(&self, delete: Delete) -> Result<Delete>;
    /// Every delete not yet forgotten, by id.
    fn deletes(&self) -> Result<Vec<Delete>>;
    /// Records that `node`'s buffer is covered by delete `id` up to `seq`
    /// and that it removed `rows` there, unless the node recorded it
    /// before; the recorded position, or `None` if the delete was
    /// forgotten.
    fn bound_delete(&self, id: i64, node: &str, seq: u64, rows: u64) -> Result<Option<u64>>;
    /// Forgets deletes that no longer hide anything (their files were
    /// rewritten and their node's buffer persisted past them).
    fn forget_deletes(&self, ids: &[i64]) -> Result<()>;
    /// Every recorded invalidation.
    fn invalidations(&self) -> Result<Vec<Invalidation>>;
    /// The recorded invalidations of one view, oldest bucket first, at most
    /// `limit`.
    fn view_invalidations(&self, view_id: i64, limit: usize) -> Result<Vec<Invalidation>>;
    /// Records invalidations of buckets whose rows are still in a node's
    /// write buffer, for the node that refreshes the view (on a shared
    /// catalog every node publishes its own).
    fn add_invalidations(&self, invalidations: &[Invalidation]) -> Result<()>;
    /// Records a view's backfill progress.
    fn set_view_progress(&self, view_id: i64, progress: &ViewProgress) -> Result<()>;
    /// One refresh of an aggregating view, atomically: its files `remove`
    /// are replaced by `add`, the invalidations it covered (`done`: bucket
    /// and generation read) are cleared where no newer one came meanwhile,
    /// the buckets of views over this view that it changes are invalidated,
    /// and the backfill progress is recorded.
    fn commit_refresh(&self, refresh: Refresh<'_>) -> Result<Vec<ParquetFile>>;
    /// Atomically removes files of a table and adds others (compaction,
    /// retention). Nothing changes if any file to remove is not, or no
    /// longer, the table's ([`CatalogError::FileNotFound`]). Files added
    /// are refused as [`Catalog::commit_files_invalidating`] says.
    fn replace_files(
        &self,
        table_id: i64,
        remove: &[i64],
        add: Vec<NewParquetFile>,
        deletes_seen: i64,
    ) -> Result<Vec<ParquetFile>>;
    /// Files of one table, ordered by id.
    fn files(&self, table_id: i64) -> Result<Vec<ParquetFile>>;
    /// Files of one table and, read in the same transaction, each node's
    /// persisted WAL position for it: every row a node wrote at or below
    /// its position is in these files, every row above is still that
    /// node's to persist (its write buffer). A query reads exactly the
    /// files plus each node's buffered rows above its position.
    fn files_and_positions(&self, table_id: i64) -> Result<FilesAt> {
        Ok((self.files(table_id)?, BTreeMap::new()))
    }
    /// [`Catalog::files_and_positions`] of every table at once, by table
    /// id, in one transaction (a table with neither is absent).
    fn all_files_and_positions(&self) -> Result<BTreeMap<i64, FilesAt>> {
        self.tables()?
            .into_iter()
            .map(|t| Ok((t.id, self.files_and_positions(t.id)?)))
            .collect()
    }
    /// Records one compaction run.
    fn record_compaction(&self, run: &CompactionRun) -> Result<()>;
    /// The most recent compaction runs, newest first.
    fn compactions(&self, limit: usize) -> Result<Vec<CompactionRun>>;
    /// The largest `persisted_seq` any table (live or dropped) ever reached
    /// with this node's rows; its WAL never hands out a sequence number at or
    /// below it again.
    fn max_persisted_seq(&self) -> Result<u64>;
    /// Adds a plain view, or replaces the one of that name (`replace`);
    /// [`CatalogError::RelationExists`] if the name is taken otherwise.
    fn create_plain_view(&self, view: &PlainView, replace: bool) -> Result<()>;
    /// Removes a plain view ([`CatalogError::ViewNotFound`] if none).
    fn drop_plain_view(&self, name: &str) -> Result<()>;
    /// Every plain view, ordered by name.
    fn plain_views(&self) -> Result<Vec<PlainView>>;
    /// Records an index; [`CatalogError::RelationExists`] if the name is
    /// taken, [`CatalogError::TableNotFound`] without its table.
    fn create_index(&self, index: &IndexDef) -> Result<()>;
    /// Removes an index ([`CatalogError::IndexNotFound`] if none).
    fn drop_index(&self, name: &str) -> Result<()>;
    /// Every index, ordered by name.
    fn indexes(&self) -> Result<Vec<IndexDef>>;
    /// Adds an alert rule; [`CatalogError::AlertExists`] if the name is taken.
    fn create_alert(&self, alert: &StoredAlert) -> Result<()>;
    /// Removes a rule and its undelivered notifications (its history stays).
    fn drop_alert(&self, name: &str) -> Result<()>;
    fn alerts(&self) -> Result<Vec<StoredAlert>>;
    /// In one transaction: the rule's new state, the events that led to it,
    /// and the notifications it owes; returns the notifications' ids.
    fn commit_alert(
        &self,
        name: &str,
        state: &str,
        events: &[AlertEvent],
        deliveries: &[String],
    ) -> Result<Vec<i64>>;
    /// Records a delivery attempt; the notification stays queued with the
    /// body `retry` if it is to be tried again, or leaves the queue.
    fn finish_delivery(&self, id: i64, event: &AlertEvent, retry: Option<&str>) -> Result<()>;
    /// Undelivered notifications, oldest first.
    fn deliveries(&self) -> Result<Vec<Delivery>>;
    /// The latest `limit` alert events, oldest first.
    fn alert_events(&self, limit: usize) -> Result<Vec<AlertEvent>>;

    /// Every user, by name.
    fn users(&self) -> Result<Vec<StoredUser>>;
    /// Adds a user; [`CatalogError::UserExists`] if the name is taken.
    fn create_user(&self, user: &StoredUser) -> Result<()>;
    /// Replaces a user's body; [`CatalogError::UserNotFound`] if there is none.
    fn update_user(&self, name: &str, body: &str) -> Result<()>;
    /// Removes a user and its tokens.
    fn drop_user(&self, name: &str) -> Result<()>;
    /// Every token, by name.
    fn tokens(&self) -> Result<Vec<StoredToken>>;
    /// Adds a token of an existing user.
    fn create_token(&self, token: &StoredToken) -> Result<()>;
    /// Removes a token.
    fn drop_token(&self, name: &str) -> Result<()>;

    /// Records metric families' metadata, replacing what each had.
    fn put_metric_metadata(&self, metadata: &[MetricMetadata]) -> Result<()>;
    /// Every metric family's metadata, by name.
    fn metric_metadata(&self) -> Result<Vec<MetricMetadata>>;

    /// Records that `node` started (again): its modes, addresses and start.
    fn register_node(&self, node: &NodeInfo) -> Result<()>;
    /// Records a heartbeat of the node `id` at `now_ns`.
    fn heartbeat(&self, id: &str, now_ns: i64) -> Result<()>;
    /// Records that the node `id` stopped cleanly at `now_ns`.
    fn stop_node(&self, id: &str, now_ns: i64) -> Result<()>;
    /// Every node that ever registered, by id.
    fn nodes(&self) -> Result<Vec<NodeInfo>>;
    /// Takes or renews the lease `name` for `holder` until `now_ns +
    /// ttl_ns`, if it is free, expired or `holder`'s already; whether
    /// `holder` holds it now.
    fn hold_lease(&self, name: &str, holder: &str, now_ns: i64, ttl_ns: i64) -> Result<bool>;
    /// Every lease, by name.
    fn leases(&self) -> Result<Vec<Lease>>;

    /// For a catalog that other processes change too (PostgreSQL): a
    /// counter that moves after each change another process commits, so that
    /// this one reads the catalog again. `None`: only this process changes it.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// The whole catalog as the bytes of one consistent database file, to
    /// keep a copy of it beside the data (the object store) from which a
    /// new node can start when this one's disk is lost. `None`: the catalog
    /// lives elsewhere and is kept there (PostgreSQL), or in memory.
    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// A counter that moves with every change this process commits, so
    /// that a snapshot is taken only when something changed.
    fn change_count(&self) -> u64 {
        0
    }
}
