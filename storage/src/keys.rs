//! Keyed tables: a row whose key equals an earlier row's replaces it.
//!
//! Every write of a keyed table gets a version ([`Versions`]: a hybrid
//! clock, unique per node, increasing in the order writes are accepted) in
//! the hidden [`VERSION_COLUMN`]; it travels with the rows through the WAL,
//! the buffer and Parquet. Duplicates are resolved in one way everywhere:
//! rows sorted by (key, version), each run of equal keys merged into its
//! newest row ([`Merge::LastRow`]) or into the newest non-null value of each
//! column ([`Merge::LastNonNull`]):
//!
//! - a write: its own duplicates, before the WAL append ([`sort_dedup`]);
//! - persistence and compaction: each file holds one row per key, sorted;
//! - a query: [`DedupExec`] above a sort-preserving merge of the containers
//!   (buffered writes and files) that may share a key: with time in the
//!   key, those whose time ranges overlap; otherwise those of a partition
//!   in more than one container (the scan, `crate::provider`).

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::col as physical_col;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, LexRequirement, OrderingRequirements, Partitioning,
    PhysicalExpr, PhysicalSortExpr, PhysicalSortRequirement,
};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use futures::{Stream, StreamExt};
use sextant_catalog::{Merge, TableDef, VERSION_COLUMN};

use crate::error::{Result, StorageError};

/// The hidden version column as it is added to a keyed table's schema.
pub(crate) fn version_field() -> Field {
    Field::new(VERSION_COLUMN, DataType::UInt64, true)
}

/// Hands out write versions: `max(now, last + 1)`, moved up to this node's
/// residue modulo [`NODES`], so that versions are unique across the nodes
/// of a cluster, increase on each node in the order it accepts writes, and
/// order writes of different nodes by when they arrived (within the
/// nodes' clock skew).
#[derive(Debug)]
pub(crate) struct Versions {
    last: AtomicU64,
    slot: u64,
}

/// Versions of one node are apart by this much; nodes differ in the rest.
const NODES: u64 = 1024;

impl Versions {
    pub(crate) fn new(node_id: &str) -> Self {
        // FNV-1a: stable across builds, unlike the std hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in node_id.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            last: AtomicU64::new(0),
            slot: h % NODES,
        }
    }

    /// A version above every one handed out or seen so far.
    pub(crate) fn next(&self, now_ns: i64) -> u64 {
        let now = now_ns.max(0) as u64;
        let mut last = self.last.load(Ordering::SeqCst);
        loop {
            let base = now.max(last + 1);
            let v = base + (self.slot + NODES - base % NODES) % NODES;
            match self
                .last
                .compare_exchange(last, v, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return v,
                Err(seen) => last = seen,
            }
        }
    }

    /// Versions from now on are above `v` (one replayed from the WAL, or
    /// read from a file), whatever the clock says.
    pub(crate) fn observe(&self, v: u64) {
        self.last.fetch_max(v, Ordering::SeqCst);
    }
}

/// The newest version in a file of a keyed table, from its statistics.
pub(crate) fn newest_in(f: &sextant_catalog::NewParquetFile) -> Option<u64> {
    let max = f.column_stats.get(VERSION_COLUMN)?.max.as_ref()?;
    max.as_str().and_then(|s| s.parse().ok()).or(max.as_u64())
}

/// Where a keyed table's key and version are in a schema.
#[derive(Debug, Clone)]
pub(crate) struct KeyOrder {
    pub(crate) key: Vec<usize>,
    pub(crate) version: usize,
    pub(crate) merge: Merge,
}

impl KeyOrder {
    /// The key of `def` in `schema`; `None` for a table without a key.
    pub(crate) fn of(def: &TableDef, schema: &Schema) -> Result<Option<Self>> {
        let Some(k) = &def.options.key else {
            return Ok(None);
        };
        let idx = |name: &str| {
            schema.index_of(name).map_err(|_| {
                StorageError::InvalidData(format!(
                    "keyed table \"{}\" lacks its column \"{name}\"",
                    def.name
                ))
            })
        };
        Ok(Some(Self {
            key: k.columns.iter().map(|c| idx(c)).collect::<Result<_>>()?,
            version: idx(VERSION_COLUMN)?,
            merge: k.merge,
        }))
    }

    fn sort_options() -> SortOptions {
        SortOptions {
            descending: false,
            nulls_first: true,
        }
    }

    /// The order a merge needs: key, then version.
    pub(crate) fn ordering(&self, schema: &SchemaRef) -> DfResult<LexOrdering> {
        let exprs = self
            .key
            .iter()
            .chain(std::iter::once(&self.version))
            .map(|&i| {
                Ok(PhysicalSortExpr::new(
                    physical_col(schema.field(i).name(), schema)?,
                    Self::sort_options(),
                ))
            })
            .collect::<DfResult<Vec<_>>>()?;
        LexOrdering::new(exprs)
            .ok_or_else(|| DataFusionError::Internal("a key without columns".into()))
    }
}

/// Every write of `batch` gets `version`; duplicates of a key within the
/// batch merge into one row (later rows are newer), and the rows come out
/// sorted by key.
pub(crate) fn stamp(batch: &RecordBatch, k: &KeyOrder, version: u64) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns[k.version] = Arc::new(UInt64Array::from_value(version, batch.num_rows()));
    let stamped = RecordBatch::try_new(batch.schema(), columns)?;
    // Row order breaks ties: a later row of one write is newer.
    let order = UInt32Array::from_iter_values(0..batch.num_rows() as u32);
    sort_dedup_by(&stamped, k, Arc::new(order))
}

/// Sorts rows by (key, version) and keeps one per key, merged.
pub(crate) fn sort_dedup(batch: &RecordBatch, k: &KeyOrder) -> Result<RecordBatch> {
    let version = batch.column(k.version).clone();
    sort_dedup_by(batch, k, version)
}

fn sort_dedup_by(batch: &RecordBatch, k: &KeyOrder, last: ArrayRef) -> Result<RecordBatch> {
    if batch.num_rows() <= 1 {
        return Ok(batch.clone());
    }
    let mut sort: Vec<SortColumn> = k
        .key
        .iter()
        .map(|&i| SortColumn {
            values: batch.column(i).clone(),
            options: Some(KeyOrder::sort_options()),
        })
        .collect();
    sort.push(SortColumn {
        values: last,
        options: Some(KeyOrder::sort_options()),
    });
    let order = lexsort_to_indices(&sort, None)?;
    let sorted = arrow::compute::take_record_batch(batch, &order)?;
    let runs = runs(&sorted, &k.key)?;
    Ok(merge_runs(&sorted, &runs, k.merge)?)
}

/// Runs of equal keys in rows sorted by key.
fn runs(
    batch: &RecordBatch,
    key: &[usize],
) -> std::result::Result<Vec<Range<usize>>, arrow::error::ArrowError> {
    let cols: Vec<ArrayRef> = key.iter().map(|&i| batch.column(i).clone()).collect();
    Ok(arrow::compute::partition(&cols)?.ranges())
}

/// One row per run: its last (newest) row, or per column the newest
/// non-null value.
fn merge_runs(
    batch: &RecordBatch,
    runs: &[Range<usize>],
    merge: Merge,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    if runs.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    let last = UInt32Array::from_iter_values(runs.iter().map(|r| (r.end - 1) as u32));
    let columns = batch
        .columns()
        .iter()
        .map(|c| match merge {
            Merge::LastNonNull if c.null_count() > 0 => {
                let idx = UInt32Array::from_iter_values(runs.iter().map(|r| {
                    r.clone()
                        .rev()
                        .find(|&i| c.is_valid(i))
                        .unwrap_or(r.end - 1) as u32
                }));
                take(c, &idx, None)
            }
            _ => take(c, &last, None),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// Sorts each input partition by (key, version), merges them into one
/// sorted stream and keeps one row per key.
pub(crate) fn deduplicate(
    input: Arc<dyn ExecutionPlan>,
    k: &KeyOrder,
    names: Vec<String>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let ordering = k.ordering(&input.schema())?;
    let sorted: Arc<dyn ExecutionPlan> =
        Arc::new(SortExec::new(ordering.clone(), input).with_preserve_partitioning(true));
    let merged: Arc<dyn ExecutionPlan> = if sorted.output_partitioning().partition_count() > 1 {
        Arc::new(SortPreservingMergeExec::new(ordering, sorted))
    } else {
        sorted
    };
    Ok(Arc::new(DedupExec::new(merged, k.clone(), names)))
}

/// What [`decode_dedup`] needs of a [`DedupExec`] (for a plan that runs
/// on another node of a cluster); `None` for another plan node.
pub fn encode_dedup(plan: &dyn ExecutionPlan) -> Option<String> {
    let d = plan.downcast_ref::<DedupExec>()?;
    Some(
        serde_json::json!({
            "key": d.key.key,
            "version": d.key.version,
            "merge": d.key.merge.name(),
            "names": d.names,
        })
        .to_string(),
    )
}

/// A [`DedupExec`] over `input` from what [`encode_dedup`] wrote.
pub fn decode_dedup(text: &str, input: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    let bad = || DataFusionError::Internal(format!("a merge by key encoded as {text}"));
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
    let numbers = |k: &str| -> Option<Vec<usize>> {
        v[k].as_array()?
            .iter()
            .map(|n| n.as_u64().map(|n| n as usize))
            .collect()
    };
    let key = KeyOrder {
        key: numbers("key").ok_or_else(bad)?,
        version: v["version"].as_u64().ok_or_else(bad)? as usize,
        merge: match v["merge"].as_str() {
            Some("last_row") => Merge::LastRow,
            Some("last_non_null") => Merge::LastNonNull,
            _ => return Err(bad()),
        },
    };
    let names: Vec<String> = v["names"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    Ok(Arc::new(DedupExec::new(input, key, names)))
}

/// Keeps one row per key of an input sorted by (key, version): shown in
/// EXPLAIN as `DedupExec: key=[...], merge=...`.
#[derive(Debug)]
pub(crate) struct DedupExec {
    input: Arc<dyn ExecutionPlan>,
    key: KeyOrder,
    names: Vec<String>,
    properties: Arc<PlanProperties>,
}

impl DedupExec {
    fn new(input: Arc<dyn ExecutionPlan>, key: KeyOrder, names: Vec<String>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(1),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Self {
            input,
            key,
            names,
            properties,
        }
    }
}

impl DisplayAs for DedupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DedupExec: key=[{}], merge={}",
            self.names.join(", "),
            self.key.merge.name()
        )
    }
}

#[allow(deprecated)]
impl ExecutionPlan for DedupExec {
    fn name(&self) -> &'static str {
        "DedupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let schema = self.input.schema();
        let req = self.key.ordering(&schema).ok().and_then(|o| {
            LexRequirement::new(
                o.iter()
                    .map(|e| PhysicalSortRequirement::new(e.expr.clone(), Some(e.options))),
            )
        });
        vec![req.map(OrderingRequirements::new)]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "DedupExec takes one child".into(),
            ));
        }
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            self.key.clone(),
            self.names.clone(),
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DedupExec has one partition, not {partition}"
            )));
        }
        Ok(Box::pin(DedupStream {
            input: self.input.execute(0, context)?,
            schema: self.input.schema(),
            key: self.key.clone(),
            carry: None,
            done: false,
        }))
    }
}

/// The rows of the last key of the batch before, which the next batch may
/// continue, are held back until a different key (or the end) comes.
struct DedupStream {
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    key: KeyOrder,
    carry: Option<RecordBatch>,
    done: bool,
}

impl DedupStream {
    fn take_batch(&mut self, batch: RecordBatch) -> DfResult<Option<RecordBatch>> {
        let batch = match self.carry.take() {
            Some(c) => concat_batches(&self.schema, [&c, &batch])?,
            None => batch,
        };
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let mut runs = runs(&batch, &self.key.key)?;
        let last = runs.pop().expect("a non-empty batch has a run");
        self.carry = Some(batch.slice(last.start, last.len()));
        if runs.is_empty() {
            return Ok(None);
        }
        let done = batch.slice(0, last.start);
        Ok(Some(merge_runs(&done, &runs, self.key.merge)?))
    }

    fn finish(&mut self) -> DfResult<Option<RecordBatch>> {
        let Some(c) = self.carry.take() else {
            return Ok(None);
        };
        let runs = runs(&c, &self.key.key)?;
        Ok(Some(merge_runs(&c, &runs, self.key.merge)?))
    }
}

impl Stream for DedupStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.input.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(b))) => match self.take_batch(b) {
                    Ok(Some(out)) => return Poll::Ready(Some(Ok(out))),
                    Ok(None) => continue,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(self.finish().transpose());
                }
            }
        }
    }
}

impl RecordBatchStream for DedupStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};

    use super::*;

    fn batch(hosts: &[&str], v: &[Option<i64>], w: &[Option<i64>], ver: &[u64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("host", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("w", DataType::Int64, true),
            version_field(),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(hosts.to_vec())),
                Arc::new(Int64Array::from(v.to_vec())),
                Arc::new(Int64Array::from(w.to_vec())),
                Arc::new(UInt64Array::from(ver.to_vec())),
            ],
        )
        .unwrap()
    }

    fn order(merge: Merge) -> KeyOrder {
        KeyOrder {
            key: vec![0],
            version: 3,
            merge,
        }
    }

    #[test]
    fn newest_row_wins_or_newest_values_merge() {
        let b = batch(
            &["b", "a", "a", "b"],
            &[Some(1), Some(2), None, Some(4)],
            &[Some(10), None, Some(30), None],
            &[1, 5, 7, 3],
        );
        let last = sort_dedup(&b, &order(Merge::LastRow)).unwrap();
        assert_eq!(
            last,
            batch(&["a", "b"], &[None, Some(4)], &[Some(30), None], &[7, 3])
        );
        let merged = sort_dedup(&b, &order(Merge::LastNonNull)).unwrap();
        assert_eq!(
            merged,
            batch(
                &["a", "b"],
                &[Some(2), Some(4)],
                &[Some(30), Some(10)],
                &[7, 3]
            )
        );
    }

    #[test]
    fn a_write_stamps_its_version_and_later_rows_win() {
        let b = batch(&["a", "a"], &[Some(1), Some(2)], &[None, None], &[0, 0]);
        let out = stamp(&b, &order(Merge::LastRow), 42).unwrap();
        assert_eq!(out, batch(&["a"], &[Some(2)], &[None], &[42]));
    }

    #[test]
    fn versions_rise_and_differ_by_node() {
        let a = Versions::new("a");
        let b = Versions::new("b");
        let (a1, a2) = (a.next(1_000_000), a.next(1_000_000));
        assert!(a2 > a1);
        assert_ne!(a1 % NODES, b.next(1_000_000) % NODES);
        a.observe(5_000_000);
        assert!(a.next(1_000_000) > 5_000_000);
    }
}
