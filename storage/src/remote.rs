//! Write buffers read across nodes (several nodes on a shared catalog).
//!
//! A query's snapshot says, for each ingest node, up to which WAL position
//! its rows are in the snapshot's files (`Snapshot::positions`). The rest
//! of a node's rows is in its write buffer: a [`BufferScanExec`] per ingest
//! node asks the [`BufferSource`] (the cluster layer, which knows where the
//! nodes are) for that node's rows above the position, and the node answers
//! from [`Engine::buffered_since`]. A node keeps chunks it persisted for a
//! while (`EngineConfig::peer_grace`), so a persist between a query's
//! planning and its scan neither hides rows nor shows them twice.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use crate::error::{Result, StorageError};
use crate::state::{Engine, conform};

/// What a query asks of one node's write buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferRequest {
    /// The table, by name and by catalog id (a table dropped and created
    /// again has another id, and none of the old one's rows).
    pub table: String,
    /// Catalog id of the table.
    pub table_id: i64,
    /// Rows with WAL sequence numbers above this one; those at or below
    /// are in the files the query reads.
    pub after: u64,
    /// The columns wanted, in order, with the types the query planned with.
    pub schema: SchemaRef,
}

/// Reads the write buffers of the ingest nodes; the cluster layer
/// implements it.
pub trait BufferSource: fmt::Debug + Send + Sync {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// The ingest nodes whose buffers a query reads, this one included
    /// when it ingests.
    fn nodes(&self) -> Vec<String>;
    /// `node`'s buffered rows for `request`, as a stream that fails with an
    /// error naming the node if it cannot be reached.
    fn fetch(&self, node: &str, request: BufferRequest) -> DfResult<SendableRecordBatchStream>;
    /// Asks every other node that is up to take in the deletes of `table`
    /// committed so far ([`Engine::take_in_deletes`]); which nodes did not
    /// answer and why.
    fn announce_deletes(
        &self,
        table: String,
    ) -> futures::future::BoxFuture<'static, std::result::Result<(), String>>;
}

impl Engine {
    /// Makes queries read the write buffers of the nodes `source` names
    /// (set once, at start, on a shared catalog).
    pub fn set_buffer_source(&self, source: Arc<dyn BufferSource>) {
        let _ = self.inner.buffers.set(source);
    }

    /// Where queries read write buffers, if not in place.
    pub fn buffer_source(&self) -> Option<&Arc<dyn BufferSource>> {
        self.inner.buffers.get()
    }

    /// This node's buffered rows of a table with sequence numbers above
    /// `request.after` (chunks still buffered and chunks persisted but
    /// retained), conformed to `request.schema`. None for a table this
    /// node does not know (it has no rows of it). An error if some of
    /// those rows were persisted and let go already: the asking query read
    /// the catalog before that persist, and must run again.
    pub fn buffered_since(&self, request: &BufferRequest) -> Result<Vec<RecordBatch>> {
        let Some(state) = self.state(&request.table) else {
            return Ok(vec![]);
        };
        if state.def().id != request.table_id {
            return Ok(vec![]);
        }
        let keep = self.inner.config.peer_grace;
        let chunks: Vec<RecordBatch> = {
            let mut data = state.data();
            data.retain(vec![], keep);
            if request.after < data.released_upto {
                return Err(StorageError::Stale(format!(
                    "node {} has persisted rows of \"{}\" since this query read the catalog \
                     (position {} < {}); run the query again",
                    self.inner.config.node_id, request.table, request.after, data.released_upto
                )));
            }
            data.retained
                .iter()
                .map(|(_, c)| c)
                .chain(data.chunks.iter())
                .filter(|c| c.seq > request.after)
                .map(|c| c.batch.clone())
                .collect()
        };
        chunks.iter().map(|b| conform(b, &request.schema)).collect()
    }
}

/// A scan of one ingest node's write buffer: the rows of `request` from
/// `node`, through the engine's [`BufferSource`]. One partition.
#[derive(Debug)]
pub struct BufferScanExec {
    node: String,
    request: BufferRequest,
    source: Arc<dyn BufferSource>,
    properties: Arc<PlanProperties>,
}

impl BufferScanExec {
    /// A scan of `node`'s buffer.
    pub fn new(node: String, request: BufferRequest, source: Arc<dyn BufferSource>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(request.schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            node,
            request,
            source,
            properties,
        }
    }

    /// The node whose buffer this reads.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// What it asks of the node.
    pub fn request(&self) -> &BufferRequest {
        &self.request
    }
}

impl DisplayAs for BufferScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BufferScanExec: node={}, table={}, after_seq={}",
            self.node, self.request.table, self.request.after
        )
    }
}

impl ExecutionPlan for BufferScanExec {
    fn name(&self) -> &'static str {
        "BufferScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.source.fetch(&self.node, self.request.clone())
    }
}
