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
use crate::state::{Engine, Snapshot, TableData, TableState};

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
    /// Removes the rows `delete` matches from the chunks it covers (this
    /// node's, up to its `seq`); returns the bytes freed.
    pub(crate) fn apply_delete(
        &mut self,
        delete: &Delete,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<usize> {
        // NULL keeps a row, as in SQL.
        let keep = compile(
            &predicate_expr(&delete.predicate, schema)?.is_not_true(),
            schema,
        )?;
        let mut freed = 0usize;
        let mut chunks = std::mem::take(&mut self.chunks);
        let result = (|| {
            for c in chunks.iter_mut().filter(|c| c.seq <= delete.seq) {
                let batch = crate::state::conform(&c.batch, schema)?;
                let kept = keep_matching(&batch, &keep)?;
                if kept.num_rows() == c.batch.num_rows() {
                    continue;
                }
                let before = c.batch.get_array_memory_size();
                c.batch = kept;
                freed += before.saturating_sub(c.batch.get_array_memory_size());
            }
            Ok::<_, StorageError>(())
        })();
        chunks.retain(|c| c.batch.num_rows() > 0);
        self.chunks = chunks;
        self.bytes = self.bytes.saturating_sub(freed);
        result.map(|()| freed)
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
        if self.shares_catalog() {
            return Err(StorageError::Unsupported(format!(
                "DELETE on a cluster (a shared catalog) is not supported yet: \"{table}\" is written by several nodes"
            ))
            .into());
        }
        let _persisting = state.persisting.lock().await;
        let _compacting = state.compacting.lock().await;
        // Every chunk up to `boundary` is in the snapshot (writes apply in
        // sequence order); later ones are not deleted.
        let (snapshot, boundary) = {
            let data = state.data();
            let boundary = data.chunks.iter().map(|c| c.seq).max().unwrap_or(0).max(
                self.inner
                    .applied_seq
                    .load(std::sync::atomic::Ordering::SeqCst),
            );
            drop(data);
            let snapshot = self
                .snapshot(table)
                .ok_or_else(|| StorageError::from(CatalogError::TableNotFound(table.into())))?;
            (snapshot, boundary)
        };
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
        };
        let delete = self
            .in_catalog(move |c| c.add_delete(delete))
            .await
            .map_err(E::from)?;
        self.take_delete(&state, Arc::new(delete))?;
        for (view, bucket) in &planned.buckets {
            if let Some(v) = self.view_state(view) {
                let generation = self
                    .inner
                    .generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                v.pending().insert(*bucket, generation);
            }
        }
        info!(table, rows = planned.rows, predicate = %planned.predicate, "rows deleted");
        Ok(planned.rows)
    }

    /// A committed delete, applied to this table in memory: its rows leave
    /// the buffer and queries of the files it covers filter them.
    pub(crate) fn take_delete(&self, state: &TableState, delete: Arc<Delete>) -> Result<()> {
        let schema = state.def().schema;
        let freed = {
            let mut data = state.data();
            data.deletes.push(delete.clone());
            if delete.node == self.inner.config.node_id {
                data.apply_delete(&delete, &schema)?
            } else {
                0
            }
        };
        self.inner.buffered.fetch_sub(
            freed.min(
                self.inner
                    .buffered
                    .load(std::sync::atomic::Ordering::SeqCst),
            ),
            std::sync::atomic::Ordering::SeqCst,
        );
        Ok(())
    }

    /// Forgets the deletes of `state` that hide nothing any more: no file
    /// they cover is left and this node persisted past them.
    pub(crate) async fn forget_deletes(&self, state: &TableState) -> Result<()> {
        let own = self.inner.config.node_id.clone();
        let done: Vec<i64> = {
            let data = state.data();
            let oldest_file = data.files.iter().map(|f| f.id).min().unwrap_or(i64::MAX);
            data.deletes
                .iter()
                .filter(|d| {
                    d.files_upto < oldest_file && (d.node != own || d.seq <= data.own_position)
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
