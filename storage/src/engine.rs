//! The engine ties the WAL, the write buffer, persistence and the catalog
//! together.
//!
//! Write: validate → WAL append (group commit, fsync) → on the WAL thread,
//! in sequence order, the batch becomes a buffer chunk → acknowledge.
//! Persist (size, age or `FLUSH TABLE`): chunks → Parquet objects → one
//! catalog commit of the files and the table's `persisted_seq` → chunks
//! leave the buffer in the same critical section in which the files become
//! visible → WAL segments nobody needs any more are deleted.
//!
//! The state this moves data through (the engine handle, tables, chunks,
//! view bookkeeping) is in `state`; its configuration in `config`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{Field, Schema};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sextant_catalog::{
    Catalog, CatalogError, NewParquetFile, NewTable, ParquetFile, TAG_METADATA, TIME_COLUMN,
    TableDef, TableOptions, VERSION_COLUMN,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::EngineConfig;
use crate::error::{Result, StorageError};
use crate::keys::{KeyOrder, Versions};
use crate::persist::{
    EncodedFile, MAX_PIECE_PARTITIONS, add_partitions, encode_table, split_by_partitions,
};
use crate::state::{
    Chunk, Derived, Engine, Inner, Snapshot, TableState, conform, make_chunk, partition_label,
    time_array,
};
use crate::views::{invalidate_chunk, load_views};
use crate::wal::{Wal, WalConfig};

/// Largest single WAL record an INSERT is packed into; bigger inserts are
/// split into several records.
const MAX_RECORD_BYTES: usize = 128 * 1024 * 1024;

/// Size figures of one table, for `system.tables`.
#[derive(Debug, Clone)]
pub struct TableStats {
    /// The table's definition.
    pub def: TableDef,
    /// Rows in the write buffer.
    pub buffered_rows: u64,
    /// Bytes in the write buffer.
    pub buffered_bytes: u64,
    /// Number of Parquet files.
    pub files: u64,
    /// Rows in Parquet files.
    pub persisted_rows: u64,
    /// Bytes of Parquet files.
    pub persisted_bytes: u64,
}

/// WAL figures, for `system.wal`.
pub use crate::wal::WalStats;

impl Engine {
    /// Opens the engine: loads tables and files from the catalog and replays
    /// the WAL records not yet persisted into the write buffer.
    pub fn open(
        config: EngineConfig,
        catalog: Arc<dyn Catalog>,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self> {
        let mut tables = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        let mut files = catalog.all_files_and_positions()?;
        for def in catalog.tables()? {
            let (f, positions) = files.remove(&def.id).unwrap_or_default();
            let state = Arc::new(TableState::new(def.clone(), f, positions));
            by_id.insert(def.id, state.clone());
            tables.insert(def.name.clone(), state);
        }
        let versions = Versions::new(&config.node_id);
        for state in tables.values() {
            for f in &state.data().files {
                if let Some(v) = crate::keys::newest_in(&f.file) {
                    versions.observe(v);
                }
            }
        }
        let floor = catalog.max_persisted_seq()? + 1;
        let started = Instant::now();
        let mut replayed = 0u64;
        let mut rows = 0u64;
        let mut bytes = 0usize;
        let mut last_seq = floor - 1;
        let wal = Wal::open(
            WalConfig {
                dir: config.wal_dir.clone(),
                sync: config.wal_sync,
                segment_bytes: config.wal_segment_bytes,
            },
            floor,
            |seq, payload| {
                last_seq = last_seq.max(seq);
                let table_id =
                    sextant_wal::payload::table_id(payload).map_err(|e| e.to_string())?;
                // A dropped table's records, or records already in Parquet.
                let Some(state) = by_id.get(&table_id) else {
                    return Ok(());
                };
                let def = state.def();
                if seq <= def.persisted_seq {
                    return Ok(());
                }
                let batch = sextant_wal::payload::decode_batch(payload)
                    .map_err(|e| format!("WAL record {seq}: {e}"))?;
                let chunk = make_chunk(seq, batch, &def).map_err(|e| e.to_string())?;
                if let Some(v) = chunk
                    .batch
                    .column_by_name(VERSION_COLUMN)
                    .and_then(|c| c.as_any().downcast_ref::<arrow::array::UInt64Array>())
                    .and_then(arrow::compute::max)
                {
                    versions.observe(v);
                }
                let size = chunk.batch.get_array_memory_size();
                let mut data = state.data();
                data.bytes += size;
                data.oldest_chunk_at.get_or_insert_with(Instant::now);
                rows += chunk.batch.num_rows() as u64;
                data.chunks.push(chunk);
                bytes += size;
                replayed += 1;
                Ok(())
            },
        )?;
        info!(
            records = replayed,
            rows,
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "WAL replayed"
        );
        let gate = crate::admission::Gate::new(config.inflight_limit_bytes);
        let work = WorkReserve::new(config.buffer_limit_bytes);
        let engine = Self {
            inner: Arc::new(Inner {
                config,
                catalog,
                store,
                wal,
                views: RwLock::new(BTreeMap::new()),
                plain_views: RwLock::new(BTreeMap::new()),
                generation: AtomicU64::new(1),
                tables: RwLock::new(tables),
                buffered: AtomicUsize::new(bytes),
                applied_seq: AtomicU64::new(last_seq),
                persist_wake: Notify::new(),
                ddl: tokio::sync::Mutex::new(()),
                retired: Mutex::new(vec![]),
                snapshots: Default::default(),
                persist_failure: Mutex::new(None),
                closing: CancellationToken::new(),
                leases: Mutex::new(Default::default()),
                buffers: Default::default(),
                versions,
                damage: Default::default(),
                footers: Arc::new(
                    datafusion::execution::cache::default_cache::DefaultCache::new(
                        datafusion::execution::cache::cache_manager::DEFAULT_METADATA_CACHE_LIMIT,
                    )
                    .with_name("sextant footers"),
                ),
                token_indexes: Default::default(),
                gate,
                work,
            }),
        };
        // Deletes: their files filtered, and the replayed chunks they cover
        // without their rows again.
        for delete in engine.inner.catalog.deletes()? {
            let Some(state) = engine.state_by_id(delete.table_id) else {
                continue;
            };
            // One another node ran while this one was down covers every
            // row its WAL replayed.
            let id = delete.id;
            if let Some((seq, rows)) = engine.take_in_delete(&state, delete)? {
                let own = &engine.inner.config.node_id;
                engine.inner.catalog.bound_delete(id, own, seq, rows)?;
            }
        }
        load_views(&engine)?;
        *engine
            .inner
            .plain_views
            .write()
            .unwrap_or_else(|e| e.into_inner()) = engine
            .inner
            .catalog
            .plain_views()?
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        // Replayed writes invalidate the view buckets they touch, as they
        // did when they were first applied.
        for state in engine.states() {
            let followed = !state
                .dependents
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .aggregates
                .is_empty();
            if !followed {
                continue;
            }
            let chunks = state.data().chunks.clone();
            for c in &chunks {
                invalidate_chunk(&engine.inner, &state, c);
            }
        }
        Ok(engine)
    }

    /// A plain view (`CREATE VIEW`) by name.
    pub fn plain_view(&self, name: &str) -> Option<sextant_catalog::PlainView> {
        self.inner
            .plain_views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every plain view's name.
    pub fn plain_view_names(&self) -> Vec<String> {
        self.inner
            .plain_views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Saves a plain view (or replaces it, `replace`), in the catalog first.
    pub async fn create_plain_view(
        &self,
        view: sextant_catalog::PlainView,
        replace: bool,
    ) -> Result<()> {
        let _ddl = self.inner.ddl.lock().await;
        self.inner.catalog.create_plain_view(&view, replace)?;
        info!(view = %view.name, "view created");
        self.inner
            .plain_views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(view.name.clone(), view);
        Ok(())
    }

    /// Removes a plain view.
    pub async fn drop_plain_view(&self, name: &str) -> Result<()> {
        let _ddl = self.inner.ddl.lock().await;
        self.inner.catalog.drop_plain_view(name)?;
        info!(view = %name, "view dropped");
        self.inner
            .plain_views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }

    /// Records an index on a table (see [`sextant_catalog::IndexDef`]).
    pub async fn create_index(&self, index: sextant_catalog::IndexDef) -> Result<()> {
        let _ddl = self.inner.ddl.lock().await;
        self.inner.catalog.create_index(&index)?;
        info!(index = %index.name, table = %index.table, "index created");
        Ok(())
    }

    /// Removes an index.
    pub async fn drop_index(&self, name: &str) -> Result<()> {
        let _ddl = self.inner.ddl.lock().await;
        self.inner.catalog.drop_index(name)?;
        info!(index = %name, "index dropped");
        Ok(())
    }

    /// The catalog the engine commits to.
    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.inner.catalog
    }

    /// The object store Parquet files live in.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    pub(crate) fn state(&self, name: &str) -> Option<Arc<TableState>> {
        self.inner
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn states(&self) -> Vec<Arc<TableState>> {
        self.inner
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Names of all tables, sorted.
    pub fn table_names(&self) -> Vec<String> {
        self.inner
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The definition of one table.
    pub fn table(&self, name: &str) -> Option<TableDef> {
        self.state(name).map(|s| s.def())
    }

    /// Makes a newly created table visible to writers and queries.
    pub(crate) fn register(&self, def: &TableDef) {
        self.put_table(TableState::new(def.clone(), vec![], BTreeMap::new()));
    }

    /// Makes a table visible under its name, in place of any before it.
    pub(crate) fn put_table(&self, state: TableState) -> Arc<TableState> {
        let state = Arc::new(state);
        self.inner
            .tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(state.def().name, state.clone());
        state
    }

    /// Creates a table.
    pub async fn create_table(&self, table: NewTable) -> Result<TableDef> {
        let _ddl = self.inner.ddl.lock().await;
        let def = self.inner.catalog.create_table(keyed(table))?;
        self.register(&def);
        info!(table = %def.name, id = def.id, "table created");
        Ok(def)
    }

    /// Makes sure `table` exists with at least the columns of `schema`, for
    /// protocols without DDL: creates the table (with `options`) on first
    /// sight, adds columns it lacks as nullable, and refuses a column whose
    /// type differs from the table's, naming the column and both types.
    /// `schema` must hold the time column as a nanosecond UTC timestamp.
    pub async fn ensure_columns(
        &self,
        table: &str,
        schema: &Schema,
        options: TableOptions,
    ) -> Result<TableDef> {
        if let Some(def) = self.table(table) {
            if self.is_view(def.id) {
                return Err(read_only(&def.name));
            }
            if missing_columns(&def, schema)?.is_empty() {
                return Ok(def);
            }
        }
        let _ddl = self.inner.ddl.lock().await;
        let state = match self.state(table) {
            Some(state) => state,
            None => {
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let nullable = f.name() != TIME_COLUMN;
                        f.as_ref().clone().with_nullable(nullable)
                    })
                    .collect();
                let mut options = options;
                if let Some(k) = options.key.as_mut().filter(|k| k.tags) {
                    k.columns = tag_key(fields.iter(), &[]);
                }
                let created = self.inner.catalog.create_table(keyed(NewTable {
                    name: table.to_string(),
                    schema: Arc::new(Schema::new(fields)),
                    time_column: TIME_COLUMN.to_string(),
                    options,
                }));
                match created {
                    Ok(def) => {
                        self.register(&def);
                        info!(table = %def.name, id = def.id, columns = def.schema.fields().len(), "table created on first write");
                        return Ok(def);
                    }
                    // Another node created it a moment ago (a shared
                    // catalog): take it in, then add what it lacks.
                    Err(CatalogError::TableExists(_)) => self.adopt(table)?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let def = state.def();
        let missing = missing_columns(&def, schema)?;
        if missing.is_empty() {
            return Ok(def);
        }
        let mut fields: Vec<Field> = def
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(missing.iter().map(|f| f.clone().with_nullable(true)));
        let mut def = self
            .inner
            .catalog
            .set_schema(table, Arc::new(Schema::new(fields)))?;
        // A table keyed by its tags: new tags join the key.
        if let Some(k) = def.options.key.as_ref().filter(|k| k.tags) {
            let columns = tag_key(def.schema.fields().iter().map(|f| f.as_ref()), &k.columns);
            if columns != k.columns {
                let mut options = def.options.clone();
                options.key.as_mut().expect("keyed").columns = columns;
                def = self.inner.catalog.set_options(table, options)?;
            }
        }
        *state.def.write().unwrap_or_else(|e| e.into_inner()) = def.clone();
        // Another node may have added a column of the same name meanwhile.
        missing_columns(&def, schema)?;
        info!(table = %def.name, added = ?missing.iter().map(|f| f.name()).collect::<Vec<_>>(), "columns added");
        Ok(def)
    }

    /// A table another node created that this one has not taken in yet
    /// (a shared catalog): its definition and files, now in memory.
    fn adopt(&self, name: &str) -> Result<Arc<TableState>> {
        let def = self
            .inner
            .catalog
            .table(name)?
            .ok_or_else(|| CatalogError::TableNotFound(name.into()))?;
        Ok(self.put_table(TableState::load(self.inner.catalog.as_ref(), def)?))
    }

    /// The name of the `i`th object of a table's partition that starts at
    /// `partition_ns`, written by persistence, compaction or a view refresh
    /// (`stem`: its sequence number, or the letter and number of the job),
    /// with this node's tag if it has one.
    pub(crate) fn object_name(
        &self,
        table: &str,
        partition_ns: i64,
        stem: &str,
        i: usize,
    ) -> String {
        let tag = &self.inner.config.object_tag;
        let tag = if tag.is_empty() {
            String::new()
        } else {
            format!("-{tag}")
        };
        format!(
            "{table}/{}/{stem}{tag}-{i:04}.parquet",
            partition_label(partition_ns)
        )
    }

    /// Changes a table's options.
    pub async fn set_options(&self, name: &str, options: TableOptions) -> Result<TableDef> {
        let _ddl = self.inner.ddl.lock().await;
        let state = self
            .state(name)
            .ok_or_else(|| CatalogError::TableNotFound(name.into()))?;
        let def = self.inner.catalog.set_options(name, options)?;
        *state.def.write().unwrap_or_else(|e| e.into_inner()) = def.clone();
        Ok(def)
    }

    /// Drops a table: its buffered rows are discarded and its files deleted.
    /// A materialized view goes only by [`Engine::drop_view`].
    pub async fn drop_table(&self, name: &str) -> Result<TableDef> {
        if let Some(def) = self.table(name)
            && self.is_view(def.id)
        {
            return Err(StorageError::ReadOnly(format!(
                "\"{name}\" is a materialized view: use DROP MATERIALIZED VIEW {name}"
            )));
        }
        self.drop_any(name).await
    }

    /// Drops a materialized view (its table and its definition).
    pub async fn drop_view(&self, name: &str) -> Result<TableDef> {
        if self.view(name).is_none() {
            return Err(CatalogError::TableNotFound(name.into()).into());
        }
        self.drop_any(name).await
    }

    async fn drop_any(&self, name: &str) -> Result<TableDef> {
        let _ddl = self.inner.ddl.lock().await;
        let (def, _files) = self.inner.catalog.drop_table(name)?;
        self.detach_view(def.id);
        let state = self
            .inner
            .tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(state) = state {
            let data = std::mem::take(&mut *state.data());
            self.inner.buffered.fetch_sub(data.bytes, Ordering::SeqCst);
            // Deleted once no running query reads them.
            self.retire(data.files);
        }
        self.truncate_wal();
        info!(table = %name, "table dropped");
        Ok(def)
    }

    /// Writes rows to a table and returns once they are durable (per the
    /// WAL sync mode) and visible to queries. The batch must have the table's
    /// schema (column names and types, in order).
    pub async fn write(&self, table: &str, batch: RecordBatch) -> Result<u64> {
        self.write_inner(table, batch, false).await
    }

    pub(crate) async fn write_inner(
        &self,
        table: &str,
        batch: RecordBatch,
        to_view: bool,
    ) -> Result<u64> {
        let state = self
            .state(table)
            .ok_or_else(|| CatalogError::TableNotFound(table.into()))?;
        let def = state.def();
        if !to_view && self.is_view(def.id) {
            return Err(read_only(&def.name));
        }
        if !to_view && !self.inner.config.ingest {
            return Err(StorageError::NotIngest(self.inner.config.node_id.clone()));
        }
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let batch = with_reference_time(batch, &def)?;
        let batch = conform(&batch, &def.schema).map_err(|e| e.in_table(&def.name))?;
        check_time(&batch, &def)?;
        self.wait_for_space().await?;
        // A keyed table's write gets its version; its duplicates merge (each
        // row counts as written: the later replaced the earlier).
        let rows = batch.num_rows() as u64;
        let batch = match KeyOrder::of(&def, &def.schema)? {
            Some(k) => crate::keys::stamp(&batch, &k, self.inner.versions.next(self.now_ns()))?,
            None => batch,
        };

        let mut written = 0u64;
        let mut pieces = vec![];
        for piece in split_for_wal(&batch) {
            pieces.extend(split_by_partitions(piece, &def)?);
        }
        drop(batch);
        for piece in pieces {
            let piece_rows = piece.num_rows() as u64;
            let payload = sextant_wal::payload::encode(def.id, &piece)?;
            let derived = Self::derive(&state, &piece)?;
            let chunk_template = make_chunk(0, piece, &def)?;
            let state = state.clone();
            let inner = self.inner.clone();
            self.inner
                .wal
                .append(
                    payload,
                    Box::new(move |seq| apply(&inner, &state, seq, chunk_template, derived)),
                )
                .await?;
            written += piece_rows;
        }
        if self.inner.buffered.load(Ordering::SeqCst) > self.inner.config.buffer_limit_bytes / 2 {
            self.inner.persist_wake.notify_one();
        }
        debug_assert!(written <= rows);
        Ok(rows)
    }

    async fn wait_for_space(&self) -> Result<()> {
        self.wait_for_space_until(
            tokio::time::Instant::now() + self.inner.config.backpressure_timeout,
        )
        .await
    }

    /// Waits while the write buffer is full, until `deadline`.
    pub(crate) async fn wait_for_space_until(&self, deadline: tokio::time::Instant) -> Result<()> {
        // The rest is kept for persistence and compaction (WorkReserve).
        let limit = self.inner.config.buffer_limit_bytes - self.inner.work.bytes;
        loop {
            if self.inner.closing.is_cancelled() {
                return Err(StorageError::ShuttingDown);
            }
            let used = self.inner.buffered.load(Ordering::SeqCst);
            if used < limit {
                return Ok(());
            }
            self.inner.persist_wake.notify_one();
            if tokio::time::Instant::now() >= deadline {
                let failure = self.inner.persist_failure.lock().unwrap().clone();
                let cause =
                    failure.map_or_else(String::new, |e| format!(" (persistence is failing: {e})"));
                return Err(StorageError::BufferFull { used, limit, cause });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = self.inner.closing.cancelled() => {}
            }
        }
    }

    /// Refuses every write from now on, and wakes the writers waiting for
    /// buffer space to refuse them too (`ShuttingDown`: SQLSTATE 57P01,
    /// HTTP 503, gRPC `UNAVAILABLE`), so that a shutdown does not wait out
    /// their backpressure timeout. Writes already past the wait finish.
    pub fn refuse_writes(&self) {
        self.inner.closing.cancel();
    }

    /// A consistent view of a table for a query.
    pub fn snapshot(&self, table: &str) -> Option<Snapshot> {
        let state = self.state(table)?;
        let def = state.def();
        let (mut chunks, files, positions, deletes) = {
            let data = state.data();
            let mut positions = data.positions.clone();
            positions.insert(self.inner.config.node_id.clone(), data.own_position);
            (
                data.chunks.clone(),
                data.files.clone(),
                positions,
                data.deletes.clone(),
            )
        };
        // Chunks written before the table gained columns get null columns.
        for c in &mut chunks {
            if c.batch.schema_ref() != &def.schema
                && let Ok(b) = conform(&c.batch, &def.schema)
            {
                c.batch = b;
            }
        }
        Some(Snapshot {
            def,
            chunks,
            files,
            positions,
            deletes,
        })
    }

    /// Size figures of every table.
    pub fn table_stats(&self) -> Vec<TableStats> {
        self.states()
            .into_iter()
            .map(|s| {
                let def = s.def();
                let data = s.data();
                TableStats {
                    def,
                    buffered_rows: data.chunks.iter().map(|c| c.batch.num_rows() as u64).sum(),
                    buffered_bytes: data.bytes as u64,
                    files: data.files.len() as u64,
                    persisted_rows: data.files.iter().map(|f| f.file.rows).sum(),
                    persisted_bytes: data.files.iter().map(|f| f.file.bytes).sum(),
                }
            })
            .collect()
    }

    /// Every persisted file with its table's name.
    pub fn files(&self) -> Vec<(String, Arc<ParquetFile>)> {
        self.states()
            .into_iter()
            .flat_map(|s| {
                let name = s.def().name;
                let files = s.data().files.clone();
                files.into_iter().map(move |f| (name.clone(), f))
            })
            .collect()
    }

    /// What is wrong with the persisted file at `path`, if a read or
    /// `CHECK TABLE` found it damaged ([`crate::damage`]).
    pub fn file_damage(&self, path: &str) -> Option<String> {
        self.inner.damage.get(path)
    }

    /// `CHECK TABLE`: reads every persisted file of `table` whole (the
    /// decoder checks each page) and compares its rows with the catalog's
    /// count; notes each damaged file for `system.files` (and
    /// `--skip-damaged-files`) and clears the note of each sound one. An
    /// object store that cannot be reached fails the check rather than
    /// calling files damaged.
    pub async fn check_table(&self, table: &str) -> Result<Vec<FileCheck>> {
        let state = self
            .state(table)
            .ok_or_else(|| CatalogError::TableNotFound(table.into()))?;
        let schema = state.def().schema.clone();
        let files = state.data().files.clone();
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let path = f.file.path.clone();
            let location = ObjectPath::from(path.as_str());
            let read = match self.inner.store.get(&location).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            let damage = match read {
                Err(object_store::Error::NotFound { .. }) => {
                    Some("missing: the object store has no such file".to_string())
                }
                Err(e) => return Err(e.into()),
                Ok(bytes) => {
                    let schema = schema.clone();
                    let decoded =
                        tokio::task::spawn_blocking(move || crate::persist::decode(bytes, &schema))
                            .await
                            .map_err(|e| StorageError::Encoding(e.to_string()))?;
                    match decoded {
                        Err(e) => Some(format!("does not decode: {e}")),
                        Ok(batches) => {
                            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
                            (rows != f.file.rows).then(|| {
                                format!("holds {rows} rows where the catalog says {}", f.file.rows)
                            })
                        }
                    }
                }
            };
            match &damage {
                Some(reason) => self.inner.damage.mark(&path, reason.clone()),
                None => self.inner.damage.clear(&path),
            }
            out.push(FileCheck {
                path,
                rows: f.file.rows,
                damage,
            });
        }
        info!(
            table,
            files = out.len(),
            damaged = out.iter().filter(|c| c.damage.is_some()).count(),
            "CHECK TABLE done"
        );
        Ok(out)
    }

    /// WAL figures.
    pub fn wal_stats(&self) -> WalStats {
        self.inner.wal.stats()
    }

    /// Persists a table's buffered rows now (`FLUSH TABLE`). Returns the
    /// number of Parquet files written.
    pub async fn flush_table(&self, name: &str) -> Result<usize> {
        let state = self
            .state(name)
            .ok_or_else(|| CatalogError::TableNotFound(name.into()))?;
        self.persist(&state).await
    }

    async fn persist(&self, state: &Arc<TableState>) -> Result<usize> {
        self.persist_upto(state, u64::MAX).await
    }

    /// Persists the table's buffered rows of writes up to WAL sequence
    /// number `limit`, in pieces of at most [`Self::piece_bytes`] each (so
    /// that what persistence holds while it encodes stays bounded, however
    /// large the buffer): each piece its own files, committed and freed
    /// before the next is read.
    #[tracing::instrument(name = "persist", skip_all, fields(table = %state.def().name))]
    async fn persist_upto(&self, state: &Arc<TableState>, limit: u64) -> Result<usize> {
        let target = state.data().chunks.last().map_or(0, |c| c.seq).min(limit);
        let piece = self.piece_bytes();
        let mut files = 0;
        loop {
            let boundary = {
                let def = state.def();
                let data = state.data();
                let mut bytes = 0;
                let mut partitions = HashSet::new();
                let mut boundary = None;
                for c in data.chunks.iter().take_while(|c| c.seq <= target) {
                    boundary = Some(c.seq);
                    bytes += c.batch.get_array_memory_size();
                    add_partitions(c, &def, &mut partitions);
                    if bytes >= piece || partitions.len() >= MAX_PIECE_PARTITIONS {
                        break;
                    }
                }
                boundary
            };
            let Some(boundary) = boundary else {
                // The base has nothing (left) up to the target; its views
                // may still have rows up to it.
                for view in self.transform_tables(state) {
                    files += Box::pin(self.persist_upto(&view, target)).await?;
                }
                return Ok(files);
            };
            files += self.persist_piece(state, boundary).await?;
            if boundary >= target {
                return Ok(files);
            }
        }
    }

    /// The most buffered bytes one persistence step reads at once, and the
    /// most compressed bytes one compaction step merges (which it streams;
    /// a keyed table's partition is merged whole): an eighth of the buffer
    /// limit (at least 8 MiB). Encoding a piece holds less than
    /// the piece again beside it ([`crate::persist::encoding_bytes`]).
    pub fn piece_bytes(&self) -> usize {
        (self.inner.config.buffer_limit_bytes / 8).max(8 << 20)
    }

    /// The most bytes persistence and compaction took from the part of the
    /// buffer limit kept for their work at once, since the last call.
    pub fn take_work_peak(&self) -> usize {
        self.inner.work.peak.swap(0, Ordering::SeqCst) * WORK_UNIT
    }

    /// Persists the buffered rows of writes up to WAL sequence number
    /// `boundary` (at most about [`Self::piece_bytes`] of them).
    async fn persist_piece(&self, state: &Arc<TableState>, boundary: u64) -> Result<usize> {
        // Rows derived for transform views go first: a base write leaves
        // the WAL only once its derived rows are in Parquet too. So the
        // base's boundary is fixed before the views are persisted, and
        // they are persisted up to it: a write applied meanwhile (its view
        // rows too late for the views' files) stays in the buffer. Apply
        // makes a write's view rows visible before its base rows, so every
        // view row of a base write up to the boundary is in the views'
        // files.
        for view in self.transform_tables(state) {
            Box::pin(self.persist_upto(&view, boundary)).await?;
        }
        let _one_at_a_time = state.persisting.lock().await;
        let def = state.def();
        let chunks: Vec<Chunk> = state
            .data()
            .chunks
            .iter()
            .take_while(|c| c.seq <= boundary)
            .cloned()
            .collect();
        let Some(max_seq) = chunks.last().map(|c| c.seq) else {
            return Ok(0);
        };
        let started = Instant::now();
        let batches = chunks
            .iter()
            .map(|c| conform(&c.batch, &def.schema))
            .collect::<Result<Vec<_>>>()?;
        let row_group_rows = self.inner.config.row_group_rows;
        let table = def.clone();
        // What encoding holds beside the rows comes from the part of the
        // buffer limit kept for it.
        let piece_bytes: usize = chunks.iter().map(|c| c.batch.get_array_memory_size()).sum();
        state.measured(piece_bytes, chunks.iter().map(|c| c.batch.num_rows()).sum());
        let mut partitions = HashSet::new();
        for c in &chunks {
            add_partitions(c, &def, &mut partitions);
        }
        let working = Working::acquire(
            &self.inner,
            crate::persist::encoding_bytes(&def, piece_bytes, partitions.len()),
        )
        .await;
        // Each file goes to the object store as soon as it is encoded, so
        // one is held at a time, however many partitions the rows cover.
        let (sink, mut encoded) = tokio::sync::mpsc::channel::<EncodedFile>(1);
        let encoder = tokio::task::spawn_blocking(move || {
            encode_table(&table, &batches, row_group_rows, &mut |f| {
                sink.blocking_send(f)
                    .map_err(|_| StorageError::Encoding("persistence stopped".into()))
            })
        });
        let mut new_files = vec![];
        let mut failed = None;
        while let Some(f) = encoded.recv().await {
            let path = self.object_name(
                &def.name,
                f.partition_start_ns,
                &format!("{max_seq:020}"),
                new_files.len(),
            );
            match self.put_file(path, f).await {
                Ok(f) => new_files.push(f),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(encoded);
        let done = encoder
            .await
            .map_err(|e| StorageError::Encoding(format!("persist task failed: {e}")))
            .and_then(|r| r);
        if let Some(e) = failed.or(done.err()) {
            let paths: Vec<String> = new_files.iter().map(|f| f.path.clone()).collect();
            self.discard(&paths).await;
            return Err(e);
        }

        let invalidations = self.invalidations_of(state);
        let deletes_seen = state.data().deletes_seen();
        // The files go to the catalog (not a copy: each holds its columns'
        // statistics, and a piece can have a file for each of many
        // partitions); their paths stay here to remove them if the commit
        // fails.
        let paths: Vec<String> = new_files.iter().map(|f| f.path.clone()).collect();
        let committed = match self.inner.catalog.commit_files_invalidating(
            def.id,
            new_files,
            max_seq,
            &invalidations,
            deletes_seen,
        ) {
            Ok(c) => c,
            Err(e) => {
                // Not committed: the objects are unreferenced; remove them.
                self.discard(&paths).await;
                return Err(e.into());
            }
        };
        let n = committed.len();
        let rows: u64 = committed.iter().map(|f| f.file.rows).sum();
        let freed = {
            let mut data = state.data();
            let keep = data.chunks.partition_point(|c| c.seq <= max_seq);
            let freed: usize = data.chunks[..keep]
                .iter()
                .map(|c| c.batch.get_array_memory_size())
                .sum();
            let persisted: Vec<Chunk> = data.chunks.drain(..keep).collect();
            data.bytes -= freed;
            data.files.extend(committed.into_iter().map(Arc::new));
            data.local_commits += 1;
            data.own_position = data.own_position.max(max_seq);
            data.retain(persisted, self.inner.config.peer_grace);
            data.oldest_chunk_at = (!data.chunks.is_empty()).then(Instant::now);
            freed
        };
        self.inner.buffered.fetch_sub(freed, Ordering::SeqCst);
        drop(working);
        {
            let mut d = state.def.write().unwrap_or_else(|e| e.into_inner());
            d.persisted_seq = d.persisted_seq.max(max_seq);
        }
        self.snapshot_soon();
        self.truncate_wal();
        let m = sextant_metrics::metrics();
        m.persist_seconds.observe(started.elapsed().as_secs_f64());
        m.persisted_files.inc_by(n as u64);
        info!(
            table = %def.name,
            files = n,
            rows,
            up_to_seq = max_seq,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "persisted"
        );
        Ok(n)
    }

    /// Writes an encoded file to the object store (fsynced when local) and
    /// returns its catalog entry, not yet committed.
    pub(crate) async fn put_file(
        &self,
        path: String,
        f: crate::persist::EncodedFile,
    ) -> Result<NewParquetFile> {
        let size = f.bytes.len() as u64;
        self.inner
            .store
            .put(&ObjectPath::from(path.as_str()), f.bytes.into())
            .await?;
        self.sync_local_object(&path).await?;
        Ok(NewParquetFile {
            path,
            partition_start_ns: f.partition_start_ns,
            min_time_ns: f.min_time_ns,
            max_time_ns: f.max_time_ns,
            rows: f.rows,
            bytes: size,
            column_stats: f.column_stats,
        })
    }

    pub(crate) async fn sync_local_object(&self, path: &str) -> Result<()> {
        let Some(root) = self.inner.config.local_object_root.clone() else {
            return Ok(());
        };
        let file = root.join(path);
        tokio::task::spawn_blocking(move || fsync_file_and_dirs(&file, &root))
            .await
            .map_err(|e| StorageError::Encoding(e.to_string()))?
            .map_err(|e| StorageError::Encoding(format!("fsync of persisted file: {e}")))
    }

    /// Deletes WAL segments whose records are all persisted.
    fn truncate_wal(&self) {
        // Read the applied seq first: any record applied after this read has
        // a higher seq and stays; any applied before it is either still a
        // chunk (counted below) or already committed to Parquet.
        let applied = self.inner.applied_seq.load(Ordering::SeqCst);
        let oldest_buffered = self
            .states()
            .iter()
            .filter_map(|s| s.data().chunks.first().map(|c| c.seq))
            .min();
        let needed = oldest_buffered.unwrap_or(u64::MAX).min(applied + 1);
        match self.inner.wal.truncate_before(needed) {
            Ok(0) => {}
            Ok(n) => info!(segments = n, before_seq = needed, "WAL segments deleted"),
            Err(e) => warn!(error = %e, "could not delete WAL segments"),
        }
    }

    /// Background persistence by size and age, until `shutdown` is cancelled.
    /// After a failure (e.g. the object store is unreachable) it retries with
    /// a backoff from 1 s doubling to 30 s, whatever wakes it meanwhile.
    pub async fn run_background(self, shutdown: CancellationToken) {
        let mut backoff: Option<Duration> = None;
        loop {
            match backoff {
                Some(wait) => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                },
                None => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = self.inner.persist_wake.notified() => {}
                },
            }
            let mut failed = None;
            // Size: persist the largest tables until under half the limit.
            let half = self.inner.config.buffer_limit_bytes / 2;
            let mut attempts = 0;
            while self.inner.buffered.load(Ordering::SeqCst) > half && attempts < 16 {
                attempts += 1;
                let largest = self
                    .states()
                    .into_iter()
                    .max_by_key(|s| s.data().bytes)
                    .filter(|s| s.data().bytes > 0);
                let Some(state) = largest else { break };
                if let Err(e) = self.persist(&state).await {
                    failed = Some((state.def().name, e));
                    break;
                }
            }
            // Age.
            if failed.is_none() {
                let age = self.inner.config.persist_age;
                for state in self.states() {
                    let old = state
                        .data()
                        .oldest_chunk_at
                        .is_some_and(|t| t.elapsed() >= age);
                    if old && let Err(e) = self.persist(&state).await {
                        failed = Some((state.def().name, e));
                        break;
                    }
                }
            }
            backoff = match failed {
                Some((table, e)) => {
                    let wait = backoff
                        .map_or(Duration::from_secs(1), |d| d * 2)
                        .min(Duration::from_secs(30));
                    warn!(%table, error = %e, retry_in = ?wait, "persistence failed; will retry");
                    *self.inner.persist_failure.lock().unwrap() = Some(e.to_string());
                    Some(wait)
                }
                None => {
                    if backoff.is_some() {
                        info!("persistence works again");
                        *self.inner.persist_failure.lock().unwrap() = None;
                    }
                    None
                }
            };
        }
    }

    /// Finishes queued writes and syncs the WAL. Writes after this fail.
    pub async fn close(&self) -> Result<()> {
        self.inner.wal.close().await?;
        Ok(())
    }
}

/// One file's outcome of [`Engine::check_table`].
#[derive(Debug, Clone)]
pub struct FileCheck {
    /// The file's path in the object store.
    pub path: String,
    /// Its rows, as the catalog has them.
    pub rows: u64,
    /// What is wrong with it; `None` if it read back whole.
    pub damage: Option<String>,
}

/// A keyed table gets its hidden version column.
fn keyed(mut table: NewTable) -> NewTable {
    if table.options.key.is_some() && table.schema.index_of(VERSION_COLUMN).is_err() {
        let fields: Vec<Field> = table
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .chain(std::iter::once(crate::keys::version_field()))
            .collect();
        table.schema = Arc::new(Schema::new(fields));
    }
    table
}

/// The key of a table keyed by its tags: the key it has, then the tags it
/// lacks (in column order), then the time column last.
fn tag_key<'a>(fields: impl Iterator<Item = &'a Field>, had: &[String]) -> Vec<String> {
    let mut key: Vec<String> = had.iter().filter(|c| *c != TIME_COLUMN).cloned().collect();
    for f in fields {
        if f.metadata().contains_key(TAG_METADATA) && !key.contains(f.name()) {
            key.push(f.name().clone());
        }
    }
    key.push(TIME_COLUMN.to_string());
    key
}

/// Columns of `schema` the table lacks; an error if a column exists with a
/// different type.
fn missing_columns(def: &TableDef, schema: &Schema) -> Result<Vec<Field>> {
    let mut missing = vec![];
    for f in schema.fields() {
        match def.schema.field_with_name(f.name()) {
            Ok(existing) if existing.data_type() == f.data_type() => {}
            // Text in another of Arrow's string layouts (a table created by
            // SQL on another node, a first write by line protocol here):
            // the write casts it.
            Ok(existing) if is_text(existing.data_type()) && is_text(f.data_type()) => {}
            Ok(existing) => {
                return Err(StorageError::TypeConflict {
                    table: def.name.clone(),
                    column: f.name().clone(),
                    existing: existing.data_type().clone(),
                    incoming: f.data_type().clone(),
                });
            }
            Err(_) => missing.push(f.as_ref().clone()),
        }
    }
    Ok(missing)
}

/// Whether a column of this type holds text (the types a token index
/// reads, and those a query converts to views).
pub fn is_text(t: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType::{LargeUtf8, Utf8, Utf8View};
    matches!(t, Utf8 | Utf8View | LargeUtf8)
}

/// fsyncs a new file and every directory from its parent up to `root`, since
/// the object store may have created the partition and table directories.
fn fsync_file_and_dirs(file: &Path, root: &Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

fn check_time(batch: &RecordBatch, def: &TableDef) -> Result<()> {
    let times = time_array(batch, def)?;
    if times.null_count() > 0 {
        return Err(StorageError::NotNull {
            column: def.time_column.clone(),
            table: Some(def.name.clone()),
        });
    }
    Ok(())
}

/// Applies one write on the WAL thread, in sequence order: its chunk and
/// the rows derived for transform views become visible, then the view
/// buckets they touch are invalidated.
fn apply(inner: &Inner, state: &TableState, seq: u64, template: Chunk, derived: Derived) {
    let chunk = Chunk { seq, ..template };
    let mut size = chunk.batch.get_array_memory_size();
    let mut views = vec![];
    {
        let mut data = state.data();
        let deps = state.dependents.read().unwrap_or_else(|e| e.into_inner());
        // A transform view was attached or dropped since the rows were
        // derived: derive again with what is attached now.
        let batches = if deps.version == derived.version {
            derived.batches
        } else {
            deps.transforms
                .iter()
                .filter_map(|t| match (t.f)(&chunk.batch) {
                    Ok(b) => Some((t.view.clone(), b)),
                    Err(e) => {
                        warn!(view = %t.view.def().name, error = %e, "a write could not be transformed");
                        None
                    }
                })
                .collect()
        };
        drop(deps);
        for (view, batch) in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            match make_chunk(seq, batch, &view.table.def()) {
                Ok(c) => {
                    size += c.batch.get_array_memory_size();
                    view.table.data().push(c.clone());
                    views.push((view, c));
                }
                Err(e) => {
                    warn!(view = %view.def().name, error = %e, "transformed rows do not fit the view")
                }
            }
        }
        data.push(chunk.clone());
    }
    inner.buffered.fetch_add(size, Ordering::SeqCst);
    inner.applied_seq.store(seq, Ordering::SeqCst);
    invalidate_chunk(inner, state, &chunk);
    for (view, c) in &views {
        invalidate_chunk(inner, &view.table, c);
    }
}

fn read_only(name: &str) -> StorageError {
    StorageError::ReadOnly(format!(
        "cannot change materialized view \"{name}\": its rows come from its query"
    ))
}

/// Splits a batch into pieces of at most [`MAX_RECORD_BYTES`].
fn split_for_wal(batch: &RecordBatch) -> Vec<RecordBatch> {
    let size = batch.get_array_memory_size().max(1);
    let pieces = size.div_ceil(MAX_RECORD_BYTES).max(1);
    if pieces == 1 {
        return vec![batch.clone()];
    }
    let rows_per = batch.num_rows().div_ceil(pieces).max(1);
    (0..batch.num_rows())
        .step_by(rows_per)
        .map(|start| batch.slice(start, rows_per.min(batch.num_rows() - start)))
        .collect()
}

/// A reference table's rows written without a time (by SQL, COPY, Flight
/// SQL) get the epoch as their internal time: one partition, never aged.
fn with_reference_time(batch: RecordBatch, def: &TableDef) -> Result<RecordBatch> {
    if !def.options.reference || batch.column_by_name(&def.time_column).is_some() {
        return Ok(batch);
    }
    let time = arrow::array::TimestampNanosecondArray::from(vec![0i64; batch.num_rows()])
        .with_timezone("UTC");
    let mut fields = vec![std::sync::Arc::new(arrow::datatypes::Field::new(
        &def.time_column,
        time.data_type().clone(),
        false,
    ))];
    fields.extend(batch.schema().fields().iter().cloned());
    let mut columns: Vec<arrow::array::ArrayRef> = vec![std::sync::Arc::new(time)];
    columns.extend(batch.columns().iter().cloned());
    Ok(RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )?)
}

/// The part of `--buffer-limit` kept for what persistence and compaction
/// hold while they decode, sort and encode ([`Working`]): a quarter, twice
/// the most either reads at once ([`Engine::piece_bytes`]). Writers wait
/// once the rows buffered reach the rest, so the two together stay within
/// the limit.
pub(crate) struct WorkReserve {
    permits: Arc<tokio::sync::Semaphore>,
    units: usize,
    bytes: usize,
    /// The most units in use at once since [`Engine::take_work_peak`].
    peak: std::sync::atomic::AtomicUsize,
}

/// The reserve's unit: permits count KiB.
const WORK_UNIT: usize = 1024;

impl WorkReserve {
    pub(crate) fn new(buffer_limit: usize) -> Self {
        let bytes = buffer_limit / 4;
        let units = bytes.div_ceil(WORK_UNIT).clamp(1, u32::MAX as usize >> 1);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(units)),
            units,
            bytes,
            peak: Default::default(),
        }
    }

    /// Bytes of the reserve in use.
    pub(crate) fn in_use(&self) -> usize {
        (self.units - self.permits.available_permits()) * WORK_UNIT
    }
}

/// Bytes persistence or compaction holds while it decodes, sorts and
/// encodes, taken from the [`WorkReserve`] (waiting for it) until dropped.
pub(crate) struct Working {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Working {
    /// Waits for `bytes` of the reserve (all of it at most: a piece larger
    /// than the reserve works alone).
    pub(crate) async fn acquire(inner: &Arc<crate::state::Inner>, bytes: usize) -> Self {
        let reserve = &inner.work;
        let units = bytes.div_ceil(WORK_UNIT).clamp(1, reserve.units) as u32;
        let permit = reserve
            .permits
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the work reserve is never closed");
        reserve.peak.fetch_max(
            reserve.units - reserve.permits.available_permits(),
            Ordering::SeqCst,
        );
        Self { _permit: permit }
    }
}
