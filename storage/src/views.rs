//! Materialized views as storage keeps them. A view is a table of its own,
//! read like any other; what storage adds is how its rows follow the base
//! table's.
//!
//! - Aggregating views: every write applied to a base table (live, or on WAL
//!   replay) marks the time buckets it touches invalid, in memory, after its
//!   rows are visible. Persisting the base table commits the invalid buckets
//!   with its files, so they outlive the WAL records that caused them. A
//!   refresh (the rows are computed above storage) swaps the view's rows of
//!   whole buckets in one catalog transaction ([`Engine::commit_refresh`]),
//!   clears the invalidations it covered unless a newer one came meanwhile,
//!   and invalidates the buckets of views over this view.
//! - Transform views: a function applied to each write of the base table
//!   before the WAL append; its result becomes a chunk of the view with the
//!   write's WAL sequence number, so the view's rows are exactly as durable
//!   as the write. Persisting the base persists its transform views first,
//!   so replay can always re-derive whatever is not in Parquet yet.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use sextant_catalog::{
    CatalogError, Invalidation, NewTable, NewView, ParquetFile, Refresh, TableDef, ViewDef,
    ViewKind, ViewProgress,
};
use tracing::{info, warn};

use crate::error::{Result, StorageError};
use crate::persist::{collect_files, decode, encode_partitions};
use crate::state::{
    Chunk, Derived, Engine, Inner, Snapshot, TableState, Transform, TransformFn, ViewState,
    ViewStatus, conform, make_chunk,
};

/// The lease under which one node of a shared catalog refreshes views.
pub const VIEWS_LEASE: &str = "views";

/// The start of the bucket `t` falls in.
pub fn bucket_start(t: i64, width: i64, origin: i64) -> i64 {
    origin + (t - origin).div_euclid(width) * width
}

/// The distinct buckets of `times` (whose bounds are `min`, `max`), sorted.
fn buckets_of(times: &TimestampNanosecondArray, min: i64, max: i64, w: i64, o: i64) -> Vec<i64> {
    let (lo, hi) = (bucket_start(min, w, o), bucket_start(max, w, o));
    if lo == hi {
        return vec![lo];
    }
    let mut out: Vec<i64> = times
        .values()
        .iter()
        .map(|t| bucket_start(*t, w, o))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Marks the buckets `chunk` touches invalid in every aggregating view over
/// `table`. Called after the chunk is visible, so a refresh that sees the
/// invalidation also sees the rows.
pub(crate) fn invalidate_chunk(inner: &Inner, table: &TableState, chunk: &Chunk) {
    let views = table
        .dependents
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .aggregates
        .clone();
    if views.is_empty() {
        return;
    }
    let Some(times) = chunk
        .batch
        .column_by_name(sextant_catalog::TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
    else {
        return;
    };
    for view in views {
        let spec = view.def().spec;
        let buckets = buckets_of(
            times,
            chunk.min_time_ns,
            chunk.max_time_ns,
            spec.bucket_ns,
            spec.origin_ns,
        );
        let generation = inner.generation.fetch_add(1, Ordering::SeqCst);
        let mut pending = view.pending();
        for b in buckets {
            pending.insert(b, generation);
        }
    }
}

/// What one view looks like to `system.materialized_views`.
#[derive(Debug, Clone)]
pub struct ViewStats {
    /// The definition.
    pub def: ViewDef,
    /// Buckets waiting to be re-aggregated.
    pub pending_buckets: u64,
    /// The oldest of them (ns).
    pub oldest_pending_ns: Option<i64>,
    /// The newest time in the base table (ns).
    pub base_newest_ns: Option<i64>,
    /// The newest time in the view (ns).
    pub view_newest_ns: Option<i64>,
    /// How its maintenance is going.
    pub status: ViewStatus,
}

/// One refresh of an aggregating (or fully refreshed) view: the view's rows
/// in `ranges` are replaced by `rows`.
#[derive(Debug)]
pub struct BucketRefresh {
    /// The invalidations this refresh read and covers.
    pub done: Vec<Invalidation>,
    /// Time ranges `[from, to)` of whole buckets whose rows are replaced.
    pub ranges: Vec<(i64, i64)>,
    /// The new rows of those ranges, in the view's schema.
    pub rows: Vec<RecordBatch>,
    /// New backfill progress, if it moved.
    pub progress: Option<ViewProgress>,
}

/// What a refresh did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RefreshOutcome {
    /// View files rewritten (rows of other buckets kept).
    pub files_replaced: usize,
    /// Files written.
    pub files_written: usize,
    /// Rows written for the refreshed ranges.
    pub rows: u64,
}

impl Engine {
    pub(crate) fn view_state(&self, name: &str) -> Option<Arc<ViewState>> {
        let id = self.table(name)?.id;
        self.inner
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every view's state.
    fn view_states(&self) -> Vec<Arc<ViewState>> {
        self.inner
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn state_by_id(&self, id: i64) -> Option<Arc<TableState>> {
        self.states().into_iter().find(|s| s.def().id == id)
    }

    /// Whether `table_id` is a materialized view (which only its
    /// maintenance writes).
    pub(crate) fn is_view(&self, table_id: i64) -> bool {
        self.inner
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&table_id)
    }

    /// Every view's definition, by name.
    pub fn views(&self) -> Vec<ViewDef> {
        let mut out: Vec<ViewDef> = self
            .inner
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|v| v.def())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// One view's definition.
    pub fn view(&self, name: &str) -> Option<ViewDef> {
        self.view_state(name).map(|v| v.def())
    }

    /// Registers views loaded from the catalog (at open) or just created.
    pub(crate) fn attach_view(&self, def: ViewDef, pending: BTreeMap<i64, u64>) -> Result<()> {
        let table = self
            .state_by_id(def.table_id)
            .ok_or_else(|| CatalogError::TableNotFound(def.name.clone()))?;
        let base = self
            .state_by_id(def.base_table_id)
            .ok_or_else(|| CatalogError::TableNotFound(def.base_table.clone()))?;
        let kind = def.spec.kind;
        let view = Arc::new(ViewState {
            def: RwLock::new(def.clone()),
            pending: Mutex::new(pending),
            table,
            status: Mutex::new(ViewStatus::default()),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
        });
        self.inner
            .views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(def.table_id, view.clone());
        // On a shared catalog a transform view is refreshed by buckets too
        // (see `Engine::shares_catalog`).
        if kind == ViewKind::Aggregate || (kind == ViewKind::Transform && self.shares_catalog()) {
            base.dependents
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .aggregates
                .push(view);
        }
        Ok(())
    }

    /// Forgets a dropped view.
    pub(crate) fn detach_view(&self, table_id: i64) {
        let removed = self
            .inner
            .views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&table_id);
        let Some(view) = removed else { return };
        if let Some(base) = self.state_by_id(view.def().base_table_id) {
            let mut d = base.dependents.write().unwrap_or_else(|e| e.into_inner());
            d.aggregates.retain(|v| !Arc::ptr_eq(v, &view));
            let before = d.transforms.len();
            d.transforms.retain(|t| !Arc::ptr_eq(&t.view, &view));
            if d.transforms.len() != before {
                d.version += 1;
            }
        }
    }

    /// Creates a materialized view: its table and its definition in one
    /// catalog transaction. An aggregating view follows its base from this
    /// moment; a transform view once [`Engine::install_transform`] runs.
    pub async fn create_view(&self, table: NewTable, view: NewView) -> Result<(TableDef, ViewDef)> {
        let _ddl = self.inner.ddl.lock().await;
        let (def, vdef) = self.inner.catalog.create_view(table, view)?;
        self.register(&def);
        self.attach_view(vdef.clone(), BTreeMap::new())?;
        // On a shared catalog the refreshing node's backfill covers the
        // files; each ingest node marks its buffered rows (here, and where
        // the view is taken in).
        if self.shares_catalog() {
            self.invalidate_buffered(&vdef.name);
        }
        info!(view = %vdef.name, base = %vdef.base_table, kind = vdef.spec.kind.as_str(), "materialized view created");
        Ok((def, vdef))
    }

    /// Attaches a transform view's function to its base table. A view whose
    /// backfill is not done (just created, or interrupted by a restart) is
    /// emptied and the base table's snapshot taken at the instant the
    /// function starts applying is returned: its rows are the backfill.
    /// Otherwise (a restart) the function re-derives the view's rows of
    /// replayed base writes not yet persisted for the view.
    pub async fn install_transform(&self, name: &str, f: TransformFn) -> Result<Option<Snapshot>> {
        let view = self
            .view_state(name)
            .ok_or_else(|| CatalogError::TableNotFound(name.into()))?;
        let vdef = view.def();
        let base = self
            .state_by_id(vdef.base_table_id)
            .ok_or_else(|| CatalogError::TableNotFound(vdef.base_table.clone()))?;
        let backfill = vdef.progress.backfill.is_some();
        if backfill {
            self.truncate(&view.table).await?;
        }
        let floor = view.table.def().persisted_seq;
        let mut derived = vec![];
        // Every base write up to `boundary` is in the backfill's snapshot;
        // every later one goes through the function.
        let mut boundary = 0;
        let snapshot = {
            let data = base.data();
            let mut deps = base.dependents.write().unwrap_or_else(|e| e.into_inner());
            deps.transforms.push(Transform {
                view: view.clone(),
                f: f.clone(),
            });
            deps.version += 1;
            if backfill {
                boundary = data
                    .chunks
                    .iter()
                    .map(|c| c.seq)
                    .max()
                    .unwrap_or(0)
                    .max(self.inner.applied_seq.load(Ordering::SeqCst));
                let def = base.def();
                let chunks = data
                    .chunks
                    .iter()
                    .map(|c| {
                        Ok(Chunk {
                            batch: conform(&c.batch, &def.schema)?,
                            ..c.clone()
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(Snapshot {
                    def,
                    chunks,
                    files: data.files.clone(),
                    positions: BTreeMap::new(),
                    deletes: data.deletes.clone(),
                })
            } else {
                for c in data.chunks.iter().filter(|c| c.seq > floor) {
                    let batch = conform(&c.batch, &base.def().schema)?;
                    let out = f(&batch).map_err(StorageError::InvalidData)?;
                    if out.num_rows() > 0 {
                        derived.push(make_chunk(c.seq, out, &view.table.def())?);
                    }
                }
                let mut vdata = view.table.data();
                for c in &derived {
                    vdata.push(c.clone());
                }
                None
            }
        };
        if backfill {
            // The view's rows up to the boundary are the backfill's (written
            // from here on): neither its own older WAL records (an
            // interrupted backfill) nor base writes up to it are replayed
            // into it again.
            let id = view.table.def().id;
            self.in_catalog(move |c| c.commit_files(id, vec![], boundary))
                .await?;
            let mut d = view.table.def.write().unwrap_or_else(|e| e.into_inner());
            d.persisted_seq = d.persisted_seq.max(boundary);
        }
        let bytes: usize = derived
            .iter()
            .map(|c| c.batch.get_array_memory_size())
            .sum();
        self.inner.buffered.fetch_add(bytes, Ordering::SeqCst);
        for c in &derived {
            invalidate_chunk(&self.inner, &view.table, c);
        }
        if !derived.is_empty() {
            info!(view = %name, chunks = derived.len(), "transform view rows re-derived from the WAL");
        }
        Ok(snapshot)
    }

    /// Removes every row of a table (a view being rebuilt).
    async fn truncate(&self, state: &Arc<TableState>) -> Result<()> {
        let _one = state.compacting.lock().await;
        let files = state.data().files.clone();
        if !files.is_empty() {
            self.swap_files(state, &files, vec![]).await?;
        }
        let freed = state.data().take_chunks();
        self.inner.buffered.fetch_sub(freed, Ordering::SeqCst);
        Ok(())
    }

    /// Appends rows to a view's table (a transform view's backfill):
    /// through the WAL like any write, but allowed on a view.
    pub async fn write_view_rows(&self, view: &str, batch: RecordBatch) -> Result<u64> {
        self.write_inner(view, batch, true).await
    }

    /// Derives the rows of the transform views of a write, before its WAL
    /// append.
    pub(crate) fn derive(state: &TableState, batch: &RecordBatch) -> Result<Derived> {
        let deps = state.dependents.read().unwrap_or_else(|e| e.into_inner());
        let mut batches = Vec::with_capacity(deps.transforms.len());
        for t in &deps.transforms {
            let out = (t.f)(batch).map_err(|e| {
                StorageError::InvalidData(format!(
                    "materialized view \"{}\" cannot transform this write: {e}",
                    t.view.def().name
                ))
            })?;
            batches.push((t.view.clone(), out));
        }
        Ok(Derived {
            version: deps.version,
            batches,
        })
    }

    /// The invalid buckets of a view this node knows in memory, oldest
    /// first, at most `limit`.
    pub fn pending_buckets(&self, view: &str, limit: usize) -> Vec<Invalidation> {
        self.view_state(view)
            .map(|v| self.marks(&v, limit))
            .unwrap_or_default()
    }

    /// This node's invalid buckets of `v` in memory, at most `limit`.
    fn marks(&self, v: &ViewState, limit: usize) -> Vec<Invalidation> {
        let id = v.def().table_id;
        v.pending()
            .iter()
            .take(limit)
            .map(|(b, g)| Invalidation {
                view_id: id,
                node: self.inner.config.node_id.clone(),
                bucket_ns: *b,
                generation: *g,
            })
            .collect()
    }

    /// The invalid buckets a refresh of `view` must re-aggregate, oldest
    /// first, at most `limit`: this node's, and on a shared catalog every
    /// node's (this node publishes its own first, so that the catalog has
    /// them all; see [`Engine::publish_invalidations`]).
    pub async fn invalidated(&self, view: &str, limit: usize) -> Result<Vec<Invalidation>> {
        if !self.shares_catalog() {
            return Ok(self.pending_buckets(view, limit));
        }
        let Some(v) = self.view_state(view) else {
            return Ok(vec![]);
        };
        self.publish_invalidations().await?;
        let id = v.def().table_id;
        self.in_catalog(move |c| c.view_invalidations(id, limit))
            .await
    }

    /// On a shared catalog: records in the catalog the buckets this node's
    /// writes invalidated since it last did, for whichever node refreshes
    /// the views, and forgets them here. Every write's invalidation is
    /// made after its rows are visible in this node's buffer, so a refresh
    /// that reads it from the catalog then reads those rows too.
    pub async fn publish_invalidations(&self) -> Result<()> {
        if !self.shares_catalog() {
            return Ok(());
        }
        let views = self.view_states();
        let mut out = vec![];
        for v in &views {
            out.extend(self.marks(v, usize::MAX));
        }
        if out.is_empty() {
            return Ok(());
        }
        let published = out.clone();
        self.in_catalog(move |c| c.add_invalidations(&published))
            .await?;
        for v in &views {
            let id = v.def().table_id;
            let mut p = v.pending();
            for i in out.iter().filter(|i| i.view_id == id) {
                if p.get(&i.bucket_ns) == Some(&i.generation) {
                    p.remove(&i.bucket_ns);
                }
            }
        }
        Ok(())
    }

    /// A view another node created, taken in: the buckets of this node's
    /// buffered base rows, written before it knew the view, are invalid.
    pub(crate) fn invalidate_buffered(&self, view: &str) {
        let Some(v) = self.view_state(view) else {
            return;
        };
        let Some(base) = self.state_by_id(v.def().base_table_id) else {
            return;
        };
        let chunks = base.data().chunks.clone();
        for c in &chunks {
            invalidate_chunk(&self.inner, &base, c);
        }
    }

    /// Records a view's backfill progress.
    pub async fn set_view_progress(&self, view: &str, progress: ViewProgress) -> Result<()> {
        let v = self
            .view_state(view)
            .ok_or_else(|| CatalogError::TableNotFound(view.into()))?;
        let id = v.def().table_id;
        let p = progress.clone();
        self.in_catalog(move |c| c.set_view_progress(id, &p))
            .await?;
        v.def.write().unwrap_or_else(|e| e.into_inner()).progress = progress;
        Ok(())
    }

    /// Invalidations of the aggregating views over `state`, to commit with
    /// its persisted rows.
    pub(crate) fn invalidations_of(&self, state: &TableState) -> Vec<Invalidation> {
        let views = state
            .dependents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .aggregates
            .clone();
        views
            .iter()
            .flat_map(|v| self.marks(v, usize::MAX))
            .collect()
    }

    /// The transform views of a table, persisted before it.
    pub(crate) fn transform_tables(&self, state: &TableState) -> Vec<Arc<TableState>> {
        state
            .dependents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .transforms
            .iter()
            .map(|t| t.view.table.clone())
            .collect()
    }

    /// Swaps the rows of whole buckets of a view: the view's files holding
    /// rows in `ranges` are rewritten without them, the new rows are added,
    /// and it all becomes visible at once (one catalog transaction, then
    /// the in-memory file list under the lock queries snapshot with).
    pub async fn commit_refresh(&self, view: &str, r: BucketRefresh) -> Result<RefreshOutcome> {
        let v = self
            .view_state(view)
            .ok_or_else(|| CatalogError::TableNotFound(view.into()))?;
        let state = v.table.clone();
        let _one = state.compacting.lock().await;
        let def = state.def();
        let in_ranges = |lo: i64, hi: i64| r.ranges.iter().any(|(a, b)| lo < *b && hi >= *a);
        let affected: Vec<Arc<ParquetFile>> = state
            .data()
            .files
            .iter()
            .filter(|f| in_ranges(f.file.min_time_ns, f.file.max_time_ns))
            .cloned()
            .collect();
        let objects = self.fetch(&affected).await?;
        let schema = def.schema.clone();
        let partition_ns = def.options.partition_duration.as_nanos() as i64;
        let row_group_rows = self.inner.config.row_group_rows;
        let index = def.options.token_index.clone();
        let ranges = r.ranges.clone();
        let new_rows = r
            .rows
            .iter()
            .map(|b| conform(b, &schema))
            .collect::<Result<Vec<_>>>()?;
        let rows: u64 = new_rows.iter().map(|b| b.num_rows() as u64).sum();
        // Where rows are or will be, to bound an open-ended range.
        let bounds = new_rows
            .iter()
            .filter_map(batch_time_range)
            .chain(time_range(&state))
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)));
        let encoded = tokio::task::spawn_blocking(move || {
            let mut batches = new_rows;
            for bytes in objects {
                for b in decode(bytes, &schema)? {
                    batches.push(outside(&b, &ranges)?);
                }
            }
            collect_files(|sink| {
                encode_partitions(
                    &schema,
                    &batches,
                    sextant_catalog::TIME_COLUMN,
                    partition_ns,
                    row_group_rows,
                    None,
                    &index,
                    sink,
                )
            })
        })
        .await
        .map_err(|e| StorageError::Encoding(format!("refresh task failed: {e}")))??;
        let tag = self.inner.generation.fetch_add(1, Ordering::SeqCst);
        let mut add = Vec::with_capacity(encoded.len());
        for (i, f) in encoded.into_iter().enumerate() {
            let path = self.object_name(&def.name, f.partition_start_ns, &format!("r{tag:019}"), i);
            add.push(self.put_file(path, f).await?);
        }
        // The buckets of views over this view that the swap changes.
        let downstream = state
            .dependents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .aggregates
            .clone();
        let mut invalidate = vec![];
        for d in &downstream {
            let spec = d.def().spec;
            let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst);
            let mut buckets = HashSet::new();
            for (lo, hi) in &r.ranges {
                let (lo, hi) = clamp_range(*lo, *hi, bounds);
                if lo >= hi {
                    continue;
                }
                let mut b = bucket_start(lo, spec.bucket_ns, spec.origin_ns);
                while b < hi {
                    buckets.insert(b);
                    b += spec.bucket_ns;
                }
            }
            let id = d.def().table_id;
            invalidate.extend(buckets.into_iter().map(|b| Invalidation {
                view_id: id,
                node: self.inner.config.node_id.clone(),
                bucket_ns: b,
                generation,
            }));
        }
        let done = r.done.clone();
        let remove: Vec<i64> = affected.iter().map(|f| f.id).collect();
        let (view_id, progress) = (def.id, r.progress.clone());
        let inv = invalidate.clone();
        let paths: Vec<String> = add.iter().map(|f| f.path.clone()).collect();
        // On a shared catalog, only while this node holds the views lease.
        let holder = self
            .shares_catalog()
            .then(|| self.inner.config.node_id.clone());
        let committed = self
            .in_catalog(move |c| {
                c.commit_refresh(Refresh {
                    view_id,
                    remove: &remove,
                    add,
                    done: &done,
                    invalidate: &inv,
                    progress: progress.as_ref(),
                    lease: holder.as_deref().map(|h| (VIEWS_LEASE, h)),
                })
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                self.discard(&paths).await;
                return Err(e);
            }
        };
        let files_written = committed.len();
        self.apply_swap(&state, &affected, committed);
        // Now that the new rows are visible: views over this one, then the
        // invalidations this refresh covered, unless a newer one came.
        for d in &downstream {
            let id = d.def().table_id;
            let mut p = d.pending();
            for i in invalidate.iter().filter(|i| i.view_id == id) {
                p.insert(i.bucket_ns, i.generation);
            }
        }
        {
            let mut p = v.pending();
            let own = &self.inner.config.node_id;
            for i in r.done.iter().filter(|i| &i.node == own) {
                if p.get(&i.bucket_ns) == Some(&i.generation) {
                    p.remove(&i.bucket_ns);
                }
            }
        }
        if let Some(progress) = r.progress {
            v.def.write().unwrap_or_else(|e| e.into_inner()).progress = progress;
        }
        Ok(RefreshOutcome {
            files_replaced: affected.len(),
            files_written,
            rows,
        })
    }

    /// The figures of every view.
    pub fn view_stats(&self) -> Vec<ViewStats> {
        let views = self.view_states();
        let mut out: Vec<ViewStats> = views
            .into_iter()
            .map(|v| {
                let def = v.def();
                let (pending_buckets, oldest_pending_ns) = {
                    let p = v.pending();
                    (p.len() as u64, p.keys().next().copied())
                };
                let base_newest_ns = self
                    .state_by_id(def.base_table_id)
                    .and_then(|b| newest_time(&b));
                let view_newest_ns = newest_time(&v.table);
                let status = v.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                ViewStats {
                    def,
                    pending_buckets,
                    oldest_pending_ns,
                    base_newest_ns,
                    view_newest_ns,
                    status,
                }
            })
            .collect();
        out.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        out
    }

    /// A view's maintenance status.
    pub fn view_status(&self, view: &str) -> Option<ViewStatus> {
        let v = self.view_state(view)?;
        let s = v.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(s)
    }

    /// Updates a view's maintenance status.
    pub fn update_view_status(&self, view: &str, f: impl FnOnce(&mut ViewStatus)) {
        if let Some(v) = self.view_state(view) {
            f(&mut v.status.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// Waits until no other refresh of `view` runs, and keeps others out
    /// while the guard lives.
    pub async fn lock_view(&self, view: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let lock = self.view_state(view)?.refreshing.clone();
        Some(lock.lock_owned().await)
    }

    /// The time range of a table's rows (ns), if it has any.
    pub fn time_range(&self, table: &str) -> Option<(i64, i64)> {
        let state = self.state(table)?;
        time_range(&state)
    }

    /// The earliest time at or after `t` that `table` may hold a row at:
    /// exact for the buffered rows, from the time ranges of the files
    /// (`t` itself when one spans it); `None` when nothing reaches `t`. A
    /// backfill jumps over the time between rows with it.
    pub fn next_time_from(&self, table: &str, t: i64) -> Option<i64> {
        let state = self.state(table)?;
        let time_column = state.def().time_column;
        let data = state.data();
        let buffered = data
            .chunks
            .iter()
            .filter(|c| c.max_time_ns >= t)
            .filter_map(|c| {
                if c.min_time_ns >= t {
                    return Some(c.min_time_ns);
                }
                let times = c.batch.column_by_name(&time_column)?;
                let times = arrow::compute::cast(
                    times,
                    &arrow::datatypes::DataType::Timestamp(
                        arrow::datatypes::TimeUnit::Nanosecond,
                        None,
                    ),
                )
                .ok()?;
                times
                    .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                    .iter()
                    .flatten()
                    .filter(|x| *x >= t)
                    .min()
            });
        let persisted = data
            .files
            .iter()
            .filter(|f| f.file.max_time_ns >= t)
            .map(|f| f.file.min_time_ns.max(t));
        buffered.chain(persisted).min()
    }
}

fn time_range(state: &TableState) -> Option<(i64, i64)> {
    let data = state.data();
    let mins = data
        .chunks
        .iter()
        .map(|c| c.min_time_ns)
        .chain(data.files.iter().map(|f| f.file.min_time_ns));
    let maxs = data
        .chunks
        .iter()
        .map(|c| c.max_time_ns)
        .chain(data.files.iter().map(|f| f.file.max_time_ns));
    Some((mins.min()?, maxs.max()?))
}

fn newest_time(state: &TableState) -> Option<i64> {
    time_range(state).map(|(_, max)| max)
}

/// A refresh range clamped to where the view has rows (before or after),
/// so `[MIN, MAX)` (a full refresh) invalidates only real buckets
/// downstream.
fn clamp_range(lo: i64, hi: i64, bounds: Option<(i64, i64)>) -> (i64, i64) {
    match bounds {
        Some((min, max)) => (lo.max(min), hi.min(max.saturating_add(1))),
        None => (0, 0),
    }
}

fn batch_time_range(batch: &RecordBatch) -> Option<(i64, i64)> {
    let times = batch
        .column_by_name(sextant_catalog::TIME_COLUMN)?
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()?;
    Some((arrow::compute::min(times)?, arrow::compute::max(times)?))
}

/// The rows of `batch` whose time is in none of `ranges`.
fn outside(batch: &RecordBatch, ranges: &[(i64, i64)]) -> Result<RecordBatch> {
    let times = batch
        .column_by_name(sextant_catalog::TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| StorageError::InvalidData("view rows need a time column".into()))?;
    let keep: BooleanArray = times
        .values()
        .iter()
        .map(|t| Some(!ranges.iter().any(|(lo, hi)| t >= lo && t < hi)))
        .collect();
    Ok(filter_record_batch(batch, &keep)?)
}

/// The generation a refresh output's name carries (`.../r<19 digits>-...`).
fn refresh_tag(path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?;
    let digits = name.strip_prefix('r')?.get(..19)?;
    digits.parse().ok()
}

/// Loads the views of the catalog into an engine being opened.
pub(crate) fn load_views(engine: &Engine) -> Result<()> {
    let started = Instant::now();
    let catalog = engine.inner.catalog.clone();
    let mut pending: BTreeMap<i64, BTreeMap<i64, u64>> = BTreeMap::new();
    let mut max_gen = 0;
    for i in catalog.invalidations()? {
        max_gen = max_gen.max(i.generation);
        pending
            .entry(i.view_id)
            .or_default()
            .insert(i.bucket_ns, i.generation);
    }
    // Refresh outputs are named `r<generation>`: start past every such name
    // still in use, so that a refresh after a restart never writes over a
    // committed file (with no invalidation pending, `max_gen` is 0).
    let named = engine
        .states()
        .iter()
        .flat_map(|s| {
            s.data()
                .files
                .iter()
                .filter_map(|f| refresh_tag(&f.file.path))
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0);
    engine
        .inner
        .generation
        .fetch_max(max_gen.max(named) + 1, Ordering::SeqCst);
    let views = catalog.views()?;
    let n = views.len();
    // On a shared catalog the recorded invalidations stay there, where
    // the refreshing node reads them; memory holds what is not published.
    if engine.shares_catalog() {
        pending.clear();
    }
    for def in views {
        let p = pending.remove(&def.table_id).unwrap_or_default();
        if let Err(e) = engine.attach_view(def.clone(), p) {
            warn!(view = %def.name, error = %e, "materialized view not loaded");
        }
    }
    if n > 0 {
        info!(
            views = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "materialized views loaded"
        );
    }
    Ok(())
}
