//! The engine's state in memory, which every part of it shares: the
//! [`Engine`] handle and its [`Inner`] (configuration, catalog, object
//! store, WAL, tables, views, buffer figures), each table's [`TableState`]
//! (definition, buffered [`Chunk`]s and files, the views that follow it)
//! and each view's [`ViewState`]. A write becomes a chunk here
//! ([`make_chunk`], [`conform`]); `engine` moves data through this state,
//! `views` and `lifecycle` keep it up to date. It imports none of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use object_store::ObjectStore;
use sextant_catalog::{Catalog, ParquetFile, TableDef, ViewDef};
use tokio::sync::Notify;

use crate::config::EngineConfig;
use crate::error::{Result, StorageError};
use crate::wal::Wal;

/// One write as it sits in the buffer.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// WAL sequence number of the write.
    pub seq: u64,
    /// The rows.
    pub batch: RecordBatch,
    /// Smallest time in the batch (ns).
    pub min_time_ns: i64,
    /// Largest time in the batch (ns).
    pub max_time_ns: i64,
}

/// A consistent view of one table for one query: every acknowledged row is in
/// exactly one of `chunks` and `files`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The table's definition.
    pub def: TableDef,
    /// Buffered writes, conformed to `def.schema`.
    pub chunks: Vec<Chunk>,
    /// Persisted files. A query holds these for as long as it runs: a file
    /// replaced meanwhile (compaction, retention) is deleted only after.
    pub files: Vec<Arc<ParquetFile>>,
    /// Each node's WAL position that `files` cover (this node's included):
    /// a node's rows above its position are in its buffer, not in `files`.
    pub positions: BTreeMap<String, u64>,
    /// Deletes whose rows some of `files` may still hold (`chunks` are
    /// without them already): see [`crate::deletes::visible`].
    pub deletes: Vec<Arc<sextant_catalog::Delete>>,
}

#[derive(Debug, Default)]
pub(crate) struct TableData {
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) files: Vec<Arc<ParquetFile>>,
    pub(crate) bytes: usize,
    pub(crate) oldest_chunk_at: Option<Instant>,
    /// Other nodes' WAL positions that `files` cover, as the catalog had
    /// them with those files.
    pub(crate) positions: BTreeMap<String, u64>,
    /// This node's position that `files` cover (its `persisted_seq`,
    /// moved under the same lock as `files`).
    pub(crate) own_position: u64,
    /// Persisted chunks kept for a while for other nodes' queries
    /// (`EngineConfig::peer_grace`), oldest first, with when they
    /// were persisted.
    pub(crate) retained: std::collections::VecDeque<(Instant, Chunk)>,
    /// The highest sequence number of a chunk no longer retained: a reader
    /// whose position is below it would miss rows.
    pub(crate) released_upto: u64,
    /// Deletes not yet applied to every file ([`crate::deletes`]).
    pub(crate) deletes: Vec<Arc<sextant_catalog::Delete>>,
    /// How many times this node changed `files` by its own commits: a
    /// catalog read from before the latest is stale for this table.
    pub(crate) local_commits: u64,
}

impl TableData {
    /// Adds a chunk; the caller counts its bytes in `Inner::buffered`.
    pub(crate) fn push(&mut self, chunk: Chunk) {
        self.bytes += chunk.batch.get_array_memory_size();
        self.oldest_chunk_at.get_or_insert_with(Instant::now);
        self.chunks.push(chunk);
    }

    /// Keeps chunks just persisted for `keep` (none when zero), and lets go
    /// of those kept longer.
    pub(crate) fn retain(&mut self, persisted: Vec<Chunk>, keep: std::time::Duration) {
        let now = Instant::now();
        for c in persisted {
            if keep.is_zero() {
                self.released_upto = self.released_upto.max(c.seq);
            } else {
                self.retained.push_back((now, c));
            }
        }
        while let Some((at, c)) = self.retained.front() {
            if now.duration_since(*at) < keep {
                break;
            }
            self.released_upto = self.released_upto.max(c.seq);
            self.retained.pop_front();
        }
    }

    /// Removes every chunk; returns their bytes.
    pub(crate) fn take_chunks(&mut self) -> usize {
        self.chunks.clear();
        self.oldest_chunk_at = None;
        std::mem::take(&mut self.bytes)
    }
}

#[derive(Debug)]
pub(crate) struct TableState {
    pub(crate) def: RwLock<TableDef>,
    pub(crate) data: Mutex<TableData>,
    /// One persistence of a table at a time.
    pub(crate) persisting: tokio::sync::Mutex<()>,
    /// One compaction or retention pass over a table at a time.
    pub(crate) compacting: tokio::sync::Mutex<()>,
    /// Materialized views that follow this table.
    pub(crate) dependents: RwLock<Dependents>,
    /// Bytes one row takes in memory (Arrow), as persistence and
    /// compaction last measured it; 0 until then. Compaction reads it to
    /// tell the files it can merge within its memory bound.
    pub(crate) row_bytes: std::sync::atomic::AtomicU64,
}

impl TableState {
    /// Notes that `rows` rows took `bytes` in memory. A few rows are
    /// mostly their arrays' fixed costs (a one-row write measures
    /// kilobytes a row): they count only while nothing better is known,
    /// or a small write would keep compaction from merging files it can.
    pub(crate) fn measured(&self, bytes: usize, rows: usize) {
        let known = self.row_bytes.load(std::sync::atomic::Ordering::Relaxed) != 0;
        if known && rows < 1024 {
            return;
        }
        if let Some(per_row) = bytes.checked_div(rows) {
            self.row_bytes
                .store(per_row.max(1) as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Bytes `rows` rows would take in memory, if known.
    pub(crate) fn estimate(&self, rows: u64) -> Option<u64> {
        match self.row_bytes.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            b => Some(rows.saturating_mul(b)),
        }
    }

    pub(crate) fn new(
        def: TableDef,
        files: Vec<ParquetFile>,
        positions: BTreeMap<String, u64>,
    ) -> Self {
        Self {
            data: Mutex::new(TableData {
                files: files.into_iter().map(Arc::new).collect(),
                positions,
                own_position: def.persisted_seq,
                released_upto: def.persisted_seq,
                ..Default::default()
            }),
            def: RwLock::new(def),
            persisting: tokio::sync::Mutex::new(()),
            compacting: tokio::sync::Mutex::new(()),
            dependents: RwLock::new(Dependents::default()),
            row_bytes: Default::default(),
        }
    }

    /// A table as the catalog has it now: its files and every node's
    /// position, read in one transaction. Blocking: the catalog is read.
    pub(crate) fn load(catalog: &dyn Catalog, def: TableDef) -> Result<Self> {
        let (files, positions) = catalog.files_and_positions(def.id)?;
        Ok(Self::new(def, files, positions))
    }

    pub(crate) fn def(&self) -> TableDef {
        self.def.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn data(&self) -> std::sync::MutexGuard<'_, TableData> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A transform view's function: base rows in, view rows out (the view's
/// schema). Errors are messages for the writer.
pub type TransformFn =
    Arc<dyn Fn(&RecordBatch) -> std::result::Result<RecordBatch, String> + Send + Sync>;

/// One view, in memory.
pub(crate) struct ViewState {
    pub(crate) def: RwLock<ViewDef>,
    /// Invalid buckets of an aggregating view, each with the generation of
    /// its latest invalidation.
    pub(crate) pending: Mutex<BTreeMap<i64, u64>>,
    /// The view's own table.
    pub(crate) table: Arc<TableState>,
    /// How its maintenance is going.
    pub(crate) status: Mutex<ViewStatus>,
    /// One refresh of the view at a time.
    pub(crate) refreshing: Arc<tokio::sync::Mutex<()>>,
}

/// How a view's maintenance is going, as its refresher reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewStatus {
    /// When the last refresh finished (ns).
    pub last_refresh_ns: Option<i64>,
    /// How long it took.
    pub last_duration_ms: u64,
    /// Refreshes so far (since start).
    pub refreshes: u64,
    /// Why the last refresh failed, until one works.
    pub last_error: Option<String>,
    /// Every base row up to this time (ns) is reflected in the view.
    pub materialized_ns: Option<i64>,
    /// A transform view's backfill: rows done and rows in all.
    pub backfill_rows: Option<(u64, u64)>,
}

impl std::fmt::Debug for ViewState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewState").finish_non_exhaustive()
    }
}

impl ViewState {
    pub(crate) fn def(&self) -> ViewDef {
        self.def.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, u64>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A transform view attached to its base table.
#[derive(Clone)]
pub(crate) struct Transform {
    pub(crate) view: Arc<ViewState>,
    pub(crate) f: TransformFn,
}

/// The views that follow one table.
#[derive(Default)]
pub(crate) struct Dependents {
    /// Aggregating views over the table.
    pub(crate) aggregates: Vec<Arc<ViewState>>,
    /// Transform views over the table (once their function is installed).
    pub(crate) transforms: Vec<Transform>,
    /// Changes whenever `transforms` does, so a write can tell whether the
    /// rows it derived before its WAL append are still the right ones.
    pub(crate) version: u64,
}

impl std::fmt::Debug for Dependents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependents")
            .field("aggregates", &self.aggregates.len())
            .field("transforms", &self.transforms.len())
            .finish()
    }
}

/// Rows of transform views derived from one write, before its WAL append.
pub(crate) struct Derived {
    pub(crate) version: u64,
    pub(crate) batches: Vec<(Arc<ViewState>, RecordBatch)>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) wal: Wal,
    /// Materialized views by their table's id.
    pub(crate) views: RwLock<BTreeMap<i64, Arc<ViewState>>>,
    /// Plain views (`CREATE VIEW`) by name, as the catalog has them.
    pub(crate) plain_views: RwLock<BTreeMap<String, sextant_catalog::PlainView>>,
    /// Orders invalidations of view buckets (and names refresh files).
    pub(crate) generation: AtomicU64,
    pub(crate) tables: RwLock<BTreeMap<String, Arc<TableState>>>,
    pub(crate) buffered: AtomicUsize,
    /// Highest seq whose chunk is in the buffer (or was skipped as persisted).
    pub(crate) applied_seq: AtomicU64,
    pub(crate) persist_wake: Notify,
    /// DDL statements run one at a time.
    pub(crate) ddl: tokio::sync::Mutex<()>,
    /// Files no longer in the catalog, deleted once no query holds them.
    /// With when they left (kept `EngineConfig::peer_grace` for other
    /// nodes' queries).
    pub(crate) retired: Mutex<Vec<(Instant, Arc<ParquetFile>)>>,
    /// Why background persistence last failed, until it works again: a
    /// writer refused for lack of buffer space is told.
    pub(crate) persist_failure: Mutex<Option<String>>,
    /// The singleton jobs whose lease this node holds (for the log's
    /// "taken" and "lost").
    pub(crate) leases: Mutex<std::collections::BTreeSet<String>>,
    /// Cancelled when the server begins to shut down: writes from then on,
    /// and writers waiting for buffer space, are refused (`ShuttingDown`).
    pub(crate) closing: tokio_util::sync::CancellationToken,
    /// Where a query reads the write buffers of the ingest nodes (several
    /// nodes on a shared catalog); unset, a query reads this node's
    /// chunks in place.
    pub(crate) buffers: std::sync::OnceLock<Arc<dyn crate::remote::BufferSource>>,
    /// Versions of writes to keyed tables ([`crate::keys`]).
    pub(crate) versions: crate::keys::Versions,
    /// Persisted files found damaged ([`crate::damage`]).
    pub(crate) damage: Arc<crate::damage::Damage>,
    /// The footers of the files queries read, decoded, kept up to
    /// DataFusion's default size for its metadata cache (least recently
    /// used out first).
    pub(crate) footers: Arc<datafusion::execution::cache::cache_manager::FileMetadataCache>,
    /// Token indexes of the files read by `matches_term` ([`crate::tokens`]).
    pub(crate) token_indexes: crate::tokens::TokenCache,
    /// Catalog snapshots on the object store ([`crate::snapshot`]).
    pub(crate) snapshots: crate::snapshot::Snapshots,
    /// The ingest requests in flight ([`crate::admission`]).
    pub(crate) gate: crate::admission::Gate,
    /// What persistence and compaction may hold while they work.
    pub(crate) work: crate::engine::WorkReserve,
}

/// The storage engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// `YYYYMMDDTHHMM` of a partition start, the folder of its files.
pub(crate) fn partition_label(start_ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(start_ns)
        .format("%Y%m%dT%H%M")
        .to_string()
}

pub(crate) fn time_array<'a>(
    batch: &'a RecordBatch,
    def: &TableDef,
) -> Result<&'a TimestampNanosecondArray> {
    let col = batch
        .column_by_name(&def.time_column)
        .ok_or_else(|| StorageError::InvalidData(format!("no column \"{}\"", def.time_column)))?;
    col.as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .ok_or_else(|| {
            StorageError::InvalidData(format!(
                "column \"{}\" must be a nanosecond timestamp, got {}",
                def.time_column,
                col.data_type()
            ))
        })
}

pub(crate) fn make_chunk(seq: u64, batch: RecordBatch, def: &TableDef) -> Result<Chunk> {
    let batch = conform(&batch, &def.schema)?;
    let times = time_array(&batch, def)?;
    let min = arrow::compute::min(times).unwrap_or(i64::MIN);
    let max = arrow::compute::max(times).unwrap_or(i64::MAX);
    Ok(Chunk {
        seq,
        batch,
        min_time_ns: min,
        max_time_ns: max,
    })
}

/// Brings a batch to `schema`: same columns by name, cast where the type
/// differs losslessly, nulls for columns the batch lacks (older writes after
/// the table gained a column). A missing non-nullable column is an error.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match batch.column_by_name(field.name()) {
            Some(col) if col.data_type() == field.data_type() => columns.push(col.clone()),
            Some(col) => columns.push(cast(col, field.data_type()).map_err(|e| {
                StorageError::InvalidData(format!(
                    "column \"{}\" is {} but the value is {}: {e}",
                    field.name(),
                    field.data_type(),
                    col.data_type()
                ))
            })?),
            None if field.is_nullable() => {
                columns.push(new_null_array(field.data_type(), batch.num_rows()))
            }
            None => {
                return Err(StorageError::NotNull {
                    column: field.name().clone(),
                    table: None,
                });
            }
        }
    }
    for field in schema.fields() {
        if !field.is_nullable() {
            let idx = schema.index_of(field.name())?;
            if columns[idx].null_count() > 0 {
                return Err(StorageError::NotNull {
                    column: field.name().clone(),
                    table: None,
                });
            }
        }
    }
    // With no columns (a `count(*)`), the rows are counted all the same.
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}
