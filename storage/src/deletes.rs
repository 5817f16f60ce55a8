//! Deletes (`DELETE FROM t WHERE ...`). A delete is a predicate recorded
//! in the catalog with two bounds: the table's newest file when it ran
//! (`files_upto`) and this node's WAL sequence number (`seq`).
//!
//! - The buffer: the matching rows of chunks up to `seq` are removed at
//!   once, and again from the chunks WAL replay rebuilds after a restart,
//!   so what was persisted after the delete never had them.
//! - Files up to `files_upto`: a query filters their rows through the
//!   predicate (`NOT coalesce(predicate, false)`) until compaction rewrites
//!   them without those rows; a compaction picks such a file even alone.
//! - A delete no file and no replayable chunk needs any more is forgotten
//!   by the lifecycle pass.
//!
//! [`Engine::delete`] runs one: it holds the table's persistence and
//! compaction, takes a snapshot for the caller to count (and to find the
//! view buckets that change) with, commits, then removes the rows.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use sextant_catalog::{CatalogError, Delete};
use tracing::info;

use crate::error::{Result, StorageError};
use crate::state::{Chunk, Engine, Snapshot, TableData, TableState};

/// What the caller of [`Engine::delete`] found in the snapshot.
#[derive(Debug, Clone)]
pub struct DeletePlan {
    /// The condition as SQL over the table's columns, constant (any
    /// `now()` already a literal).
    pub predicate: String,
    /// Rows of the snapshot it matches.
    pub rows: u64,
    /// Buckets of aggregating views whose rows change: (view, bucket start).
    pub buckets: Vec<(String, i64)>,
    /// `rows` counts every node's rows (a keyed table's, read as a query
    /// reads it: one row per key), not only the snapshot's (this node's
    /// buffer and the files, to which each other ingest node adds what it
    /// removes from its buffer).
    pub counts_every_node: bool,
}

/// `keep` (from [`visible`], or a delete's predicate `IS NOT TRUE`)
/// compiled for batches of `schema`.
pub(crate) fn compile(
    keep: &Expr,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<Arc<dyn PhysicalExpr>> {
    let df_schema = DFSchema::try_from(schema.clone())
        .map_err(|e| StorageError::InvalidData(format!("delete predicate: {e}")))?;
    SessionContext::new()
        .create_physical_expr(keep.clone(), &df_schema)
        .map_err(|e| StorageError::InvalidData(format!("delete predicate: {e}")))
}

/// The rows of `batch` for which the compiled `keep` is true.
pub(crate) fn keep_matching(
    batch: &RecordBatch,
    keep: &Arc<dyn PhysicalExpr>,
) -> Result<RecordBatch> {
    let mask = keep
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| StorageError::InvalidData(format!("delete predicate: {e}")))?;
    let mask: &BooleanArray = mask
        .as_boolean_opt()
        .ok_or_else(|| StorageError::InvalidData("delete predicate is not a boolean".into()))?;
    if mask.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    Ok(filter_record_batch(batch, mask)?)
}

/// A delete's predicate as an expression over `schema`, with the built-in
/// functions (it was written out constant by [`Engine::delete`]'s caller).
pub fn predicate_expr(predicate: &str, schema: &arrow::datatypes::SchemaRef) -> Result<Expr> {
    let df_schema = DFSchema::try_from(schema.clone())
        .map_err(|e| StorageError::InvalidData(format!("delete predicate: {e}")))?;
    SessionContext::new()
        .parse_sql_expr(predicate, &df_schema)
        .map_err(|e| StorageError::InvalidData(format!("delete predicate {predicate}: {e}")))
}

/// The condition a row of a file with id `file_id` must meet to be seen:
/// not matched by any delete that covers the file; `None` when no delete
/// does.
pub(crate) fn visible(
    deletes: &[Arc<Delete>],
    file_id: i64,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<Option<Expr>> {
    let mut out: Option<Expr> = None;
    for d in deletes.iter().filter(|d| file_id <= d.files_upto) {
        let keep = predicate_expr(&d.predicate, schema)?.is_not_true();
        out = Some(match out {
            Some(e) => e.and(keep),
            None => keep,
        });
    }
    Ok(out)
}

impl TableData {
    /// Removes the rows `delete` matches from this node's chunks up to
    /// `bound` (buffered, and persisted but retained for other nodes'
    /// queries); returns the bytes freed, the rows removed and the
    /// buffered chunks as they were before (for the view buckets they
    /// touch).
    pub(crate) fn apply_delete(
        &mut self,
        delete: &Delete,
        bound: u64,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<(usize, u64, Vec<Chunk>)> {
        // NULL keeps a row, as in SQL.
        let keep = compile(
            &predicate_expr(&delete.predicate, schema)?.is_not_true(),
            schema,
        )?;
        let (mut freed, mut rows, mut touched) = (0usize, 0u64, vec![]);
        let mut chunks = std::mem::take(&mut self.chunks);
        let result = (|| {
            for c in chunks.iter_mut().filter(|c| c.seq <= bound) {
                let batch = crate::state::conform(&c.batch, schema)?;
                let kept = keep_matching(&batch, &keep)?;
                if kept.num_rows() == c.batch.num_rows() {
                    continue;
                }
                touched.push(c.clone());
                rows += (c.batch.num_rows() - kept.num_rows()) as u64;
                let before = c.batch.get_array_memory_size();
                c.batch = kept;
                freed += before.saturating_sub(c.batch.get_array_memory_size());
            }
            // Persisted already: older than the delete, whatever the bound.
            for (_, c) in self.retained.iter_mut() {
                let batch = crate::state::conform(&c.batch, schema)?;
                c.batch = keep_matching(&batch, &keep)?;
            }
            Ok::<_, StorageError>(())
        })();
        chunks.retain(|c| c.batch.num_rows() > 0);
        self.chunks = chunks;
        self.bytes = self.bytes.saturating_sub(freed);
        result.map(|()| (freed, rows, touched))
    }

    /// The newest delete this node has taken in (0 for none): its commits
    /// of files say it, and the catalog refuses them if there is a newer.
    pub(crate) fn deletes_seen(&self) -> i64 {
        self.deletes.iter().map(|d| d.id).max().unwrap_or(0)
    }
}

/// A delete as `system.deletes` shows it.
#[derive(Debug, Clone)]
pub struct DeleteStats {
    /// The table's name.
    pub table: String,
    /// The delete.
    pub delete: Arc<Delete>,
    /// Files of the table it still covers (compaction rewrites them).
    pub files: usize,
}

impl Engine {
    /// Every delete not yet forgotten, oldest first.
    pub fn delete_stats(&self) -> Vec<DeleteStats> {
        let mut out = vec![];
        for state in self.states() {
            let name = state.def().name;
            let data = state.data();
            for d in &data.deletes {
                out.push(DeleteStats {
                    table: name.clone(),
                    delete: d.clone(),
                    files: data.files.iter().filter(|f| f.id <= d.files_upto).count(),
                });
            }
        }
        out.sort_by_key(|s| s.delete.id);
        out
    }

    /// Runs `DELETE FROM table WHERE ...`: `plan` gets the table as it is
    /// now (held still: no persistence or compaction of it meanwhile) and
    /// returns the constant predicate, the rows it matches and the view
    /// buckets that change; the delete is then committed to the catalog
    /// and the rows are gone from every query from then on. Returns the
    /// rows deleted (as `plan` counted them).
    pub async fn delete<E, F, Fut>(&self, table: &str, plan: F) -> std::result::Result<u64, E>
    where
        E: From<StorageError>,
        F: FnOnce(Snapshot) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<DeletePlan, E>>,
    {
        let state = self
            .state(table)
            .ok_or_else(|| StorageError::from(CatalogError::TableNotFound(table.into())))?;
        let def = state.def();
        if self.is_view(def.id) {
            return Err(StorageError::ReadOnly(format!(
                "cannot delete from materialized view \"{table}\": its rows come from its query"
            ))
            .into());
        }
        let _persisting = state.persisting.lock().await;
        let _compacting = state.compacting.lock().await;
        // The chunks counted are the chunks the delete covers (writes
        // apply in sequence order).
        let snapshot = self
            .snapshot(table)
            .ok_or_else(|| StorageError::from(CatalogError::TableNotFound(table.into())))?;
        let boundary = snapshot.chunks.iter().map(|c| c.seq).max().unwrap_or(0);
        let files_upto = snapshot.files.iter().map(|f| f.id).max().unwrap_or(0);
        let planned = plan(snapshot).await?;
        let delete = Delete {
            id: 0,
            table_id: def.id,
            predicate: planned.predicate.clone(),
            files_upto,
            node: self.inner.config.node_id.clone(),
            seq: boundary,
            created_at_ns: 0,
            bounds: Default::default(),
            removed: Default::default(),
        };
        let delete = self
            .in_catalog(move |c| c.add_delete(delete))
            .await
            .map_err(E::from)?;
        let id = delete.id;
        self.take_delete(&state, Arc::new(delete))?;
        drop((_persisting, _compacting));
        for (view, bucket) in &planned.buckets {
            if let Some(v) = self.view_state(view) {
                let generation = self
                    .inner
                    .generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                v.pending().insert(*bucket, generation);
            }
        }
        // On a shared catalog every other node takes it in before the
        // statement returns: the ingest nodes remove the rows from their
        // buffers (and count them), every node filters its files.
        let mut rows = planned.rows;
        let counts_every_node = planned.counts_every_node;
        if let Some(peers) = self.buffer_source().filter(|_| self.shares_catalog()) {
            peers
                .announce_deletes(table.to_string())
                .await
                .map_err(|e| {
                    StorageError::Peers(format!(
                        "the DELETE is committed (delete {id}) but {e}; \
                         that node applies it when it next reads the catalog"
                    ))
                })?;
            // Each ingest node recorded what it removed, whether it took the
            // delete in on this request or just before, on a catalog read.
            let own = self.inner.config.node_id.clone();
            let recorded = if counts_every_node {
                vec![]
            } else {
                self.in_catalog(|c| c.deletes()).await.map_err(E::from)?
            };
            rows += recorded
                .iter()
                .filter(|d| d.id == id)
                .flat_map(|d| d.removed.iter())
                .filter(|(node, _)| **node != own)
                .map(|(_, n)| n)
                .sum::<u64>();
        }
        info!(table, rows, predicate = %planned.predicate, "rows deleted");
        Ok(rows)
    }

    /// A committed delete, applied to this table in memory: queries of the
    /// files it covers filter its rows, and its rows leave this node's
    /// buffer up to the bound it has for this node (none: nothing here
    /// is covered). Returns the rows removed from the buffer; the view
    /// buckets they were in are invalidated.
    pub(crate) fn take_delete(&self, state: &TableState, delete: Arc<Delete>) -> Result<u64> {
        let schema = state.def().schema;
        let own = &self.inner.config.node_id;
        let (freed, rows, touched) = {
            let mut data = state.data();
            data.deletes.push(delete.clone());
            match delete.bounds.get(own) {
                Some(bound) => data.apply_delete(&delete, *bound, &schema)?,
                None => (0, 0, vec![]),
            }
        };
        for chunk in &touched {
            crate::views::invalidate_chunk(&self.inner, state, chunk);
        }
        self.inner.buffered.fetch_sub(
            freed.min(
                self.inner
                    .buffered
                    .load(std::sync::atomic::Ordering::SeqCst),
            ),
            std::sync::atomic::Ordering::SeqCst,
        );
        Ok(rows)
    }

    /// Takes in a delete another node ran (or one ran before this node's
    /// restart): an ingest node without a bound of its own in it covers
    /// its buffer as it is now. That bound and the rows removed, for the
    /// caller to record in the catalog; `None` if there was nothing to
    /// record.
    pub(crate) fn take_in_delete(
        &self,
        state: &TableState,
        mut delete: Delete,
    ) -> Result<Option<(u64, u64)>> {
        let own = &self.inner.config.node_id;
        let bound = (self.inner.config.ingest && !delete.bounds.contains_key(own))
            .then(|| Self::boundary(state));
        if let Some(seq) = bound {
            delete.bounds.insert(own.clone(), seq);
        }
        let rows = self.take_delete(state, Arc::new(delete))?;
        Ok(bound.map(|seq| (seq, rows)))
    }

    /// The WAL position up to which a delete taken now covers `state`'s
    /// buffer: its newest chunk (writes apply in sequence order, so every
    /// write of the table applied so far is at or below it; one applied
    /// later is not covered, after a restart too). Persistence moves the
    /// table's position to its newest chunk, so the delete can be
    /// forgotten once this node persisted the table.
    pub(crate) fn boundary(state: &TableState) -> u64 {
        state.data().chunks.iter().map(|c| c.seq).max().unwrap_or(0)
    }

    /// On a shared catalog: takes in the deletes other nodes ran that this
    /// node has not (on a peer's request at once, else at the next catalog
    /// read), and lets go of those forgotten. An ingest node records how
    /// far its buffer each covers (everything it holds now) and removes
    /// their rows; returns the rows removed. Held against this node's
    /// persistence and compaction of the table meanwhile, so that no file
    /// it commits afterwards has those rows.
    pub async fn take_in_deletes(&self) -> Result<u64> {
        let known_before: HashSet<i64> = self
            .states()
            .iter()
            .flat_map(|s| s.data().deletes.iter().map(|d| d.id).collect::<Vec<_>>())
            .collect();
        let listed = self.in_catalog(|c| c.deletes()).await?;
        let ids: HashSet<i64> = listed.iter().map(|d| d.id).collect();
        for state in self.states() {
            state
                .data()
                .deletes
                .retain(|d| ids.contains(&d.id) || !known_before.contains(&d.id));
        }
        let own = self.inner.config.node_id.clone();
        let mut removed = 0;
        for delete in listed {
            let Some(state) = self.state_by_id(delete.table_id) else {
                continue;
            };
            let known = |state: &TableState| state.data().deletes.iter().any(|d| d.id == delete.id);
            if known(&state) {
                continue;
            }
            let _persisting = state.persisting.lock().await;
            let _compacting = state.compacting.lock().await;
            if known(&state) {
                continue;
            }
            // Taken in first, then recorded with the rows it removed (the
            // node that ran it adds them to its command tag). Not recorded
            // (the catalog failed): a restart records it again.
            let (id, node) = (delete.id, delete.node.clone());
            let table = state.def().name;
            let rows = match self.take_in_delete(&state, delete)? {
                Some((seq, rows)) => {
                    let own = own.clone();
                    self.in_catalog(move |c| c.bound_delete(id, &own, seq, rows))
                        .await?;
                    rows
                }
                None => 0,
            };
            info!(table = %table, delete = id, node = %node, rows, "delete taken in from another node");
            removed += rows;
        }
        Ok(removed)
    }

    /// Forgets the deletes of `state` that hide nothing any more: no file
    /// they cover is left and this node persisted past them.
    pub(crate) async fn forget_deletes(&self, state: &TableState) -> Result<()> {
        let own = self.inner.config.node_id.clone();
        if state.data().deletes.is_empty() {
            return Ok(());
        }
        // On a shared catalog, every ingest node must have taken it in
        // (one that was down does when it starts), as the catalog has it
        // now: the nodes record it there.
        let (ingest, bounds): (Vec<String>, BTreeMap<i64, BTreeMap<String, u64>>) =
            if self.shares_catalog() {
                let (nodes, deletes) = self.in_catalog(|c| Ok((c.nodes()?, c.deletes()?))).await?;
                (
                    nodes
                        .into_iter()
                        .filter(|n| n.modes.split(',').any(|m| m.trim() == "ingest"))
                        .map(|n| n.id)
                        .collect(),
                    deletes.into_iter().map(|d| (d.id, d.bounds)).collect(),
                )
            } else {
                (vec![], BTreeMap::new())
            };
        let done: Vec<i64> = {
            let data = state.data();
            let oldest_file = data.files.iter().map(|f| f.id).min().unwrap_or(i64::MAX);
            // Each node's buffer persisted past the delete's bound for it:
            // no WAL replay brings its rows back.
            let persisted_past = |node: &String, bound: &u64| {
                let position = if *node == own {
                    data.own_position
                } else {
                    data.positions.get(node).copied().unwrap_or(0)
                };
                *bound <= position
            };
            data.deletes
                .iter()
                .filter(|d| {
                    let bounds = bounds.get(&d.id).unwrap_or(&d.bounds);
                    d.files_upto < oldest_file
                        && bounds.iter().all(|(n, b)| persisted_past(n, b))
                        && ingest.iter().all(|n| bounds.contains_key(n))
                })
                .map(|d| d.id)
                .collect()
        };
        if done.is_empty() {
            return Ok(());
        }
        let ids = done.clone();
        self.in_catalog(move |c| c.forget_deletes(&ids)).await?;
        state.data().deletes.retain(|d| !done.contains(&d.id));
        info!(table = %state.def().name, deletes = done.len(), "deletes applied to every file; forgotten");
        Ok(())
    }
}
