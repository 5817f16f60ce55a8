//! What happens to persisted files after they are written: retention drops
//! files whose rows are all past a table's retention, compaction merges the
//! small files of a time partition into large sorted ones, and objects no
//! longer in the catalog are deleted.
//!
//! Every change to a table's file list is one catalog transaction
//! (`replace_files`) applied to the in-memory list under the same lock that
//! snapshots take, so a query sees the files before or after, never both
//! or neither. A file leaving the list is *retired*: queries hold their files
//! (`Arc`s in their snapshot) for as long as they run, and a retired file's
//! object is deleted only once nothing holds it. Objects that no catalog
//! entry names (a crash between writing a file and committing it) are
//! deleted after a grace period. One background loop runs all of it;
//! compaction pauses as long as it worked between partitions, so it uses at
//! most about half of one core.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use sextant_catalog::{Catalog, CatalogError, CompactionRun, NewParquetFile, ParquetFile};
use sextant_clock::Clock;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Result, StorageError};
use crate::persist::{collect_files, decode, encode_table};
use crate::state::{Engine, TableState, partition_label};

/// What a streamed merge holds per column of each file it reads: about a
/// page decompressed (the writer's limit is a mebibyte).
const PAGE_BYTES: usize = 1 << 20;

/// What a compaction did to one table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CompactionSummary {
    /// Partitions compacted.
    pub partitions: usize,
    /// Files merged away.
    pub files_in: usize,
    /// Files written.
    pub files_out: usize,
}

impl Engine {
    /// The time of day, from the engine's clock (nanoseconds since the Unix
    /// epoch).
    pub fn now_ns(&self) -> i64 {
        self.inner.config.lifecycle.clock.now_ns()
    }

    /// The engine's clock, which the rest of the server shares.
    pub fn clock(&self) -> &Clock {
        &self.inner.config.lifecycle.clock
    }

    /// The earliest time a table's rows are still visible at `now_ns`
    /// (`None`: kept forever).
    pub fn retention_cutoff(&self, table: &str, now_ns: i64) -> Option<i64> {
        let retention = self.table(table)?.options.retention?;
        Some(now_ns.saturating_sub(retention.as_nanos() as i64))
    }

    /// Moves files out of the live set; their objects are deleted by
    /// [`Engine::sweep_retired`] once no query holds them (and, on a shared
    /// catalog, once other nodes' queries are done with them).
    pub(crate) fn retire(&self, files: Vec<Arc<ParquetFile>>) {
        if files.is_empty() {
            return;
        }
        let now = Instant::now();
        self.inner
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(files.into_iter().map(|f| (now, f)));
        // Their objects go once a snapshot no longer names them.
        self.snapshot_soon();
    }

    /// Deletes the objects of retired files no query holds any more.
    /// Returns how many were deleted.
    pub async fn sweep_retired(&self) -> usize {
        let newest = self
            .inner
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(at, _)| *at)
            .max();
        if let Some(newest) = newest {
            self.snapshot_for_retired(newest).await;
        }
        let grace = self.inner.config.peer_grace;
        let free: Vec<Arc<ParquetFile>> = {
            let mut retired = self.inner.retired.lock().unwrap_or_else(|e| e.into_inner());
            let (free, held): (Vec<_>, Vec<_>) = retired.drain(..).partition(|(at, f)| {
                Arc::strong_count(f) == 1 && at.elapsed() >= grace && self.snapshot_covers(*at)
            });
            *retired = held;
            free.into_iter().map(|(_, f)| f).collect()
        };
        let mut deleted = 0;
        for f in free {
            match self
                .inner
                .store
                .delete(&ObjectPath::from(f.file.path.as_str()))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => {
                    warn!(path = %f.file.path, error = %e, "could not delete a replaced file; will retry");
                    self.retire(vec![f]);
                }
            }
        }
        deleted
    }

    /// Files held by running queries that are waiting to be deleted.
    pub fn retired_files(&self) -> usize {
        self.inner
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Replaces `remove` by `add` in a table's files: one catalog commit,
    /// then the in-memory list, under the lock snapshots take.
    pub(crate) async fn swap_files(
        &self,
        state: &TableState,
        remove: &[Arc<ParquetFile>],
        add: Vec<NewParquetFile>,
    ) -> Result<Vec<Arc<ParquetFile>>> {
        let table_id = state.def().id;
        let ids: Vec<i64> = remove.iter().map(|f| f.id).collect();
        // Held still by the caller's compaction lock: the deletes the
        // rewritten rows went through.
        let seen = state.data().deletes_seen();
        let added = self
            .in_catalog(move |c| c.replace_files(table_id, &ids, add, seen))
            .await?;
        Ok(self.apply_swap(state, remove, added))
    }

    /// The in-memory half of a file swap already committed: under the lock
    /// snapshots take, `remove` leaves the table's files and `added` joins
    /// them; the removed files are retired.
    pub(crate) fn apply_swap(
        &self,
        state: &TableState,
        remove: &[Arc<ParquetFile>],
        added: Vec<ParquetFile>,
    ) -> Vec<Arc<ParquetFile>> {
        let added: Vec<Arc<ParquetFile>> = added.into_iter().map(Arc::new).collect();
        let gone: HashSet<i64> = remove.iter().map(|f| f.id).collect();
        let retired = {
            let mut data = state.data();
            let (out, keep): (Vec<_>, Vec<_>) =
                data.files.drain(..).partition(|f| gone.contains(&f.id));
            data.files = keep;
            data.files.extend(added.iter().cloned());
            data.local_commits += 1;
            out
        };
        self.retire(retired);
        added
    }

    /// Runs a catalog call on a blocking thread (SQLite commits fsync).
    pub(crate) async fn in_catalog<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Catalog) -> sextant_catalog::Result<T> + Send + 'static,
    ) -> Result<T> {
        let catalog = self.inner.catalog.clone();
        Ok(tokio::task::spawn_blocking(move || f(catalog.as_ref()))
            .await
            .map_err(|e| StorageError::Encoding(format!("catalog task failed: {e}")))??)
    }

    /// Deletes the objects (by path) written for files that were never
    /// committed.
    pub(crate) async fn discard(&self, paths: &[String]) {
        for p in paths {
            let _ = self.inner.store.delete(&ObjectPath::from(p.as_str())).await;
        }
    }

    /// The whole objects of `files` (small ones: compaction inputs, view
    /// files being rewritten).
    pub(crate) async fn fetch(&self, files: &[Arc<ParquetFile>]) -> Result<Vec<bytes::Bytes>> {
        let mut objects = Vec::with_capacity(files.len());
        for f in files {
            let path = ObjectPath::from(f.file.path.as_str());
            objects.push(self.inner.store.get(&path).await?.bytes().await?);
        }
        Ok(objects)
    }

    /// Drops every file whose rows are all past its table's retention.
    /// Returns the number of files dropped.
    pub async fn expire(&self, now_ns: i64) -> Result<usize> {
        let mut dropped = 0;
        for state in self.states() {
            let def = state.def();
            let Some(cutoff) = self.retention_cutoff(&def.name, now_ns) else {
                continue;
            };
            let _one = state.compacting.lock().await;
            let expired: Vec<Arc<ParquetFile>> = state
                .data()
                .files
                .iter()
                .filter(|f| f.file.max_time_ns < cutoff)
                .cloned()
                .collect();
            if expired.is_empty() {
                continue;
            }
            let rows: u64 = expired.iter().map(|f| f.file.rows).sum();
            self.swap_files(&state, &expired, vec![]).await?;
            dropped += expired.len();
            info!(table = %def.name, files = expired.len(), rows, "expired by retention");
        }
        Ok(dropped)
    }

    /// Compacts a table now (`COMPACT TABLE`): every partition with two or
    /// more small files.
    pub async fn compact_table(&self, name: &str) -> Result<CompactionSummary> {
        let state = self
            .state(name)
            .ok_or_else(|| CatalogError::TableNotFound(name.into()))?;
        let summary = self.compact(&state, 2, "COMPACT TABLE", false).await?;
        self.forget_deletes(&state).await?;
        // What no query holds goes now; the rest at the next sweep.
        self.sweep_retired().await;
        Ok(summary)
    }

    /// Merges the small files of each partition of a table that has at
    /// least `min_files` of them. `throttle`: pause between partitions.
    #[tracing::instrument(name = "compaction", skip_all, fields(table = %state.def().name, trigger))]
    async fn compact(
        &self,
        state: &Arc<TableState>,
        min_files: usize,
        trigger: &str,
        throttle: bool,
    ) -> Result<CompactionSummary> {
        let _one = state.compacting.lock().await;
        let target = self.inner.config.lifecycle.compaction_target_bytes.max(1);
        let mut by_partition: BTreeMap<i64, Vec<Arc<ParquetFile>>> = BTreeMap::new();
        // Files a delete covers are rewritten without its rows, whatever
        // their size and however many there are.
        let (deletes, files) = {
            let data = state.data();
            (data.deletes.clone(), data.files.clone())
        };
        let covered = |f: &ParquetFile| deletes.iter().any(|d| f.id <= d.files_upto);
        // A keyed table's partition in more than one file needs a merge in
        // every query: all its files become one, whatever their sizes (it
        // is merged whole in memory: sorted by key, one row per key).
        let keyed = state.def().options.key.is_some();
        // Other tables' merges stream ([`crate::merge`]): what one holds is
        // its files' compressed bytes and the file it writes, so a bin is at
        // most the target and a piece (which the reserve holds twice and a
        // half), and a file of half that or more is left as it is.
        let bin_limit = target.min(self.piece_bytes() as u64);
        let small = bin_limit / 2;
        for f in files.iter() {
            if f.file.bytes < small || covered(f) || keyed {
                by_partition
                    .entry(f.file.partition_start_ns)
                    .or_default()
                    .push(f.clone());
            }
        }
        let mut summary = CompactionSummary::default();
        for (partition, mut files) in by_partition {
            let dirty = files.iter().any(|f| covered(f));
            if files.len() < min_files.max(2) && !dirty {
                continue;
            }
            files.sort_by_key(|f| (f.file.min_time_ns, f.id));
            // Bins of about the target size; each becomes one file.
            let mut bins: Vec<Vec<Arc<ParquetFile>>> = vec![vec![]];
            let mut bin_bytes = 0;
            for f in files {
                if bin_bytes + f.file.bytes > bin_limit
                    && !keyed
                    && !bins.last().is_some_and(|b| b.is_empty())
                {
                    bins.push(vec![]);
                    bin_bytes = 0;
                }
                bin_bytes += f.file.bytes;
                bins.last_mut().expect("one bin at least").push(f);
            }
            let mut compacted = false;
            for bin in bins {
                if bin.len() < 2 && !bin.iter().any(|f| covered(f)) {
                    continue;
                }
                let started = Instant::now();
                let started_at_ns = self.now_ns();
                let written = match self.merge(state, partition, &bin).await {
                    Ok(w) => w,
                    // COMPACT TABLE reports it; the background retries later.
                    Err(e) if !throttle => return Err(e),
                    Err(e) => {
                        warn!(table = %state.def().name, error = %e, "compaction of a partition failed");
                        continue;
                    }
                };
                let bin = &bin[..];
                let (files_in, bytes_in, rows) = (
                    bin.len(),
                    bin.iter().map(|f| f.file.bytes).sum::<u64>(),
                    bin.iter().map(|f| f.file.rows).sum::<u64>(),
                );
                let bytes_out: u64 = written.iter().map(|f| f.bytes).sum();
                let files_out = written.len();
                let paths: Vec<String> = written.iter().map(|f| f.path.clone()).collect();
                match self.swap_files(state, bin, written).await {
                    Ok(_) => {}
                    // A file went meanwhile (retention): the partition
                    // waits for the next run; the new objects go now.
                    Err(e) => {
                        self.discard(&paths).await;
                        if !throttle {
                            return Err(e);
                        }
                        warn!(table = %state.def().name, error = %e, "compaction not committed");
                        continue;
                    }
                }
                compacted = true;
                summary.files_in += files_in;
                summary.files_out += files_out;
                let run = CompactionRun {
                    table: state.def().name,
                    partition_start_ns: partition,
                    files_in: files_in as u64,
                    files_out: files_out as u64,
                    rows,
                    bytes_in,
                    bytes_out,
                    started_at_ns,
                    duration: started.elapsed(),
                    trigger: trigger.to_string(),
                };
                info!(
                    table = %run.table,
                    partition = %partition_label(partition),
                    files_in,
                    files_out,
                    rows,
                    bytes_in,
                    bytes_out,
                    elapsed_ms = run.duration.as_millis() as u64,
                    trigger,
                    "compacted"
                );
                sextant_metrics::metrics()
                    .compactions
                    .with_label_values(&[trigger])
                    .inc();
                let catalog = self.inner.catalog.clone();
                let recorded =
                    tokio::task::spawn_blocking(move || catalog.record_compaction(&run)).await;
                if let Ok(Err(e)) = recorded {
                    warn!(error = %e, "could not record a compaction run");
                }
                if throttle {
                    tokio::time::sleep(started.elapsed()).await;
                }
            }
            if compacted {
                summary.partitions += 1;
            }
        }
        Ok(summary)
    }

    /// Merges `files` (one partition's) into new objects sorted by time,
    /// not yet committed, and returns them. Streamed ([`crate::merge`])
    /// except for a keyed table, whose partition is read whole (its rows
    /// sorted by key, one per key). What the merge holds counts against the
    /// buffer limit while it lasts.
    async fn merge(
        &self,
        state: &TableState,
        partition: i64,
        files: &[Arc<ParquetFile>],
    ) -> Result<Vec<NewParquetFile>> {
        let def = state.def();
        // Files to compact are small (under half a bin): read whole.
        let objects = self.fetch(files).await?;
        // Each file without the rows of the deletes that cover it.
        let deletes = state.data().deletes.clone();
        let filters = files
            .iter()
            .map(|f| {
                crate::deletes::visible(&deletes, f.id, &def.schema)?
                    .map(|keep| crate::deletes::compile(&keep, &def.schema))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let row_group_rows = self.inner.config.row_group_rows;
        let compressed: usize = objects.iter().map(|o| o.len()).sum();
        let rows_in: u64 = files.iter().map(|f| f.file.rows).sum();
        let columns = def.schema.fields().len();
        let keyed = def.options.key.is_some();
        // Rows per batch read from each input: together about half a
        // piece, by the table's last measured bytes per row.
        let row_bytes = state.estimate(1).unwrap_or(0).max(1) as usize;
        let batch_rows =
            (self.piece_bytes() / 2 / files.len().max(1) / row_bytes).clamp(64, 8 * 1024);
        // What the merge holds (the files read, and beside them their rows
        // decoded and what encoding holds) comes from the part of the
        // buffer limit kept for it. Whole: every row decoded, by the
        // table's bytes per row, as last measured (the whole reserve when
        // unknown). Streamed: the files read and the file written (about
        // as large), a batch and a page per column of each file (at most
        // the file's rows decoded), the rows gathered, and the writer's
        // buffers. Unknown bytes per row: the whole reserve.
        let need = if state.estimate(1).is_none() {
            usize::MAX
        } else if keyed {
            state.estimate(rows_in).map_or(usize::MAX, |decoded| {
                let decoded = decoded as usize;
                compressed
                    .saturating_add(decoded)
                    .saturating_add(crate::persist::encoding_bytes(&def, decoded, 1))
            })
        } else {
            let per_input: usize = files
                .iter()
                .map(|f| {
                    let decoded = state.estimate(f.file.rows).unwrap_or(u64::MAX) as usize;
                    decoded.min(
                        batch_rows
                            .saturating_mul(row_bytes)
                            .saturating_add(columns * PAGE_BYTES),
                    )
                })
                .fold(0, usize::saturating_add);
            let gathered = crate::persist::GATHER_ROWS.saturating_mul(row_bytes) * 2;
            compressed
                .saturating_mul(2)
                .saturating_add(per_input)
                .saturating_add(crate::persist::encoding_bytes(&def, gathered, 1))
        };
        let working = crate::engine::Working::acquire(&self.inner, need).await;
        let table = def.clone();
        // The reserve goes with the blocking work (which outlives this
        // future if the statement is cancelled), and comes back with the
        // files, held until they are stored.
        let work = move || {
            if keyed {
                let mut batches: Vec<RecordBatch> = vec![];
                for (bytes, keep) in objects.into_iter().zip(filters) {
                    for batch in decode(bytes, &table.schema)? {
                        batches.push(match &keep {
                            Some(keep) => crate::deletes::keep_matching(&batch, keep)?,
                            None => batch,
                        });
                    }
                }
                let rows = batches.iter().map(|b| b.num_rows()).sum();
                let decoded = batches.iter().map(|b| b.get_array_memory_size()).sum();
                let files =
                    collect_files(|sink| encode_table(&table, &batches, row_group_rows, sink))?;
                return Ok::<_, StorageError>((files, rows, decoded));
            }
            let inputs = objects
                .into_iter()
                .zip(filters)
                .map(|(object, keep)| crate::merge::MergeInput { object, keep })
                .collect();
            let time = table.schema.index_of(&table.time_column)?;
            let merged = crate::merge::merge_sorted(
                &table.schema,
                &table.options.token_index,
                time,
                partition,
                inputs,
                batch_rows,
                row_group_rows,
                rows_in as usize,
            )?;
            Ok((
                merged.file.into_iter().collect(),
                merged.rows,
                merged.decoded,
            ))
        };
        let (merged, working) = tokio::task::spawn_blocking(move || (work(), working))
            .await
            .map_err(|e| StorageError::Encoding(format!("compaction task failed: {e}")))?;
        let (encoded, rows, decoded) = merged?;
        state.measured(decoded, rows);
        let newest = files.iter().map(|f| f.id).max().unwrap_or_default();
        let mut out = vec![];
        for (i, f) in encoded.into_iter().enumerate() {
            let path = self.object_name(&def.name, partition, &format!("c{newest:019}"), i);
            out.push(self.put_file(path, f).await?);
        }
        drop(working);
        Ok(out)
    }

    /// Deletes objects no table's files name (live or retired) that are
    /// older than the grace period. Returns how many were deleted.
    pub async fn remove_orphans(&self, grace: Duration) -> Result<usize> {
        if !self.snapshot_taken() {
            return Ok(0);
        }
        let mut known: HashSet<String> = HashSet::new();
        for state in self.states() {
            known.extend(state.data().files.iter().map(|f| f.file.path.clone()));
        }
        known.extend(
            self.inner
                .retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(_, f)| f.file.path.clone()),
        );
        // A file is committed after its object is written; list first, then
        // read the catalog, so an object committed meanwhile is known.
        let listed: Vec<object_store::ObjectMeta> =
            self.inner.store.list(None).try_collect().await?;
        for state in self.states() {
            known.extend(state.data().files.iter().map(|f| f.file.path.clone()));
        }
        // Against the store's modification times, which the system clock
        // sets (not the server's clock, which tests may hold still).
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut deleted = 0;
        for meta in listed {
            let path = meta.location.to_string();
            if !path.ends_with(".parquet") || known.contains(&path) || meta.last_modified > cutoff {
                continue;
            }
            match self.inner.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    deleted += 1;
                    info!(%path, "deleted an object no table refers to");
                }
                Err(e) => warn!(%path, error = %e, "could not delete an unreferenced object"),
            }
        }
        Ok(deleted)
    }

    /// The background lifecycle loop: every `interval`, retention, then
    /// compaction (throttled), then deletion of retired and orphaned files.
    pub async fn run_lifecycle(self, shutdown: CancellationToken) {
        let config = self.inner.config.lifecycle.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(config.interval) => {}
            }
            // One node at a time: the holder renews every pass; another
            // takes over three passes after it stops.
            if !self.hold_lease("lifecycle", config.interval * 3).await {
                continue;
            }
            if let Err(e) = self.expire(self.now_ns()).await {
                warn!(error = %e, "retention failed; will retry");
            }
            for state in self.states() {
                if shutdown.is_cancelled() {
                    return;
                }
                // Cancelled mid-way, a compaction leaves only uncommitted
                // objects, which the orphan clean-up removes.
                let run = self.compact(&state, config.compaction_min_files, "background", true);
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = run => r,
                };
                if let Err(e) = result {
                    warn!(table = %state.def().name, error = %e, "compaction failed; will retry");
                }
                if let Err(e) = self.forget_deletes(&state).await {
                    warn!(table = %state.def().name, error = %e, "could not forget applied deletes; will retry");
                }
            }
            self.sweep_retired().await;
            if let Err(e) = self.remove_orphans(config.orphan_grace).await {
                warn!(error = %e, "could not list objects for clean-up");
            }
        }
        // What is free at shutdown goes now.
        self.sweep_retired().await;
    }
}
