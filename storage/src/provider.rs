//! DataFusion's view of Sextant tables.
//!
//! A scan takes a [`Snapshot`](crate::Snapshot) (buffer chunks ∪ Parquet
//! files), prunes both by the query's filters against per-chunk time bounds
//! and per-file column statistics before any I/O, and unions a memory scan of
//! the chunks with a Parquet scan of the files under a `SextantScanExec` node
//! that tells EXPLAIN what was scanned and what was skipped. An INSERT goes
//! through [`SextantSink`] into [`Engine::write`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{
    ColumnStatistics, DFSchema, DataFusionError, Result as DfResult, ScalarValue, Statistics,
};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, col as physical_col, lit as physical_lit,
};
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;
use sextant_catalog::{ParquetFile, TableDef};

use crate::error::StorageError;
use crate::state::{Chunk, Engine, Snapshot};

/// URL under which the engine's object store is registered with DataFusion.
pub const OBJECT_STORE_URL: &str = "sextant://objects/";

/// The schema queries read a table with: its text columns as `Utf8View`
/// (the stored schema is unchanged). Parquet's reader then makes views into
/// a dictionary page's values instead of copying each value out, and
/// filters, sorts and group-bys move 16-byte views instead of strings, as
/// DataFusion does for its own Parquet tables. INSERTs are conformed back
/// to the stored schema by [`Engine::write`].
pub(crate) fn read_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8))
    {
        return schema.clone();
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => {
                Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View))
            }
            _ => f.clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// The object store URL as DataFusion wants it.
pub fn object_store_url() -> ObjectStoreUrl {
    ObjectStoreUrl::parse(OBJECT_STORE_URL).expect("static URL parses")
}

/// Tables of the engine as a DataFusion schema (`sextant.public`).
#[derive(Debug)]
pub struct SextantSchema {
    engine: Engine,
}

impl SextantSchema {
    /// A schema provider over the engine's tables.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

#[async_trait]
impl SchemaProvider for SextantSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.engine.table_names();
        names.extend(self.engine.plain_view_names());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(view) = self.engine.plain_view(name) {
            return Ok(Some(Arc::new(PlainViewTable { view })));
        }
        Ok(self.engine.table(name).map(|def| {
            let definition = self.engine.view(name).map(|v| {
                format!(
                    "CREATE MATERIALIZED VIEW {} AS {}",
                    v.name,
                    v.query.trim_end_matches(';')
                )
            });
            Arc::new(SextantTable {
                engine: self.engine.clone(),
                schema: read_schema(&def.visible_schema()),
                name: def.name,
                definition,
                fixed: None,
            }) as Arc<dyn TableProvider>
        }))
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::NotImplemented(format!(
            "cannot register \"{name}\" here: create tables with CREATE TABLE (time TIMESTAMP NOT NULL, ...)"
        )))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.engine.table(name).is_some() || self.engine.plain_view(name).is_some()
    }
}

/// A plain view (`CREATE VIEW`): its columns for clients that list them,
/// and, when a statement reads it, its query planned in that statement's
/// session (so a view reads its tables as they are at that moment).
#[derive(Debug)]
pub struct PlainViewTable {
    view: sextant_catalog::PlainView,
}

#[async_trait]
impl TableProvider for PlainViewTable {
    fn schema(&self) -> SchemaRef {
        self.view.columns.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(&self.view.query)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        use datafusion::execution::session_state::SessionState;
        use datafusion::logical_expr::LogicalPlanBuilder;
        use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return Err(DataFusionError::Internal(format!(
                "view \"{}\" read outside a session",
                self.view.name
            )));
        };
        let mut statements = datafusion::sql::parser::DFParser::parse_sql_with_dialect(
            &self.view.query,
            &PostgreSqlDialect {},
        )?;
        let Some(statement) = statements.pop_front() else {
            return Err(DataFusionError::Internal(format!(
                "view \"{}\" has no query",
                self.view.name
            )));
        };
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| e.context(format!("reading view \"{}\"", self.view.name)))?;
        // The view's columns as it was created (the query is planned again).
        let columns: Vec<Expr> = plan
            .schema()
            .columns()
            .into_iter()
            .zip(self.view.columns.fields())
            .map(|(c, f)| Expr::Column(c).alias(f.name()))
            .collect();
        let mut builder = LogicalPlanBuilder::from(plan).project(columns)?;
        if let Some(p) = projection {
            builder = builder.select(p.iter().copied())?;
        }
        state.create_physical_plan(&builder.build()?).await
    }
}

/// One Sextant table.
#[derive(Debug)]
pub struct SextantTable {
    engine: Engine,
    name: String,
    schema: SchemaRef,
    /// A materialized view's `CREATE MATERIALIZED VIEW` text.
    definition: Option<String>,
    /// Scan this snapshot rather than the table as it is at scan time.
    fixed: Option<Snapshot>,
}

impl SextantTable {
    /// A table that always reads `snapshot` (a view's backfill reads its
    /// base as it was when the view started following it).
    pub fn from_snapshot(engine: Engine, snapshot: Snapshot) -> Self {
        Self {
            engine,
            name: snapshot.def.name.clone(),
            schema: read_schema(&snapshot.def.visible_schema()),
            definition: None,
            fixed: Some(snapshot),
        }
    }
}

#[async_trait]
impl TableProvider for SextantTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        if self.definition.is_some() {
            TableType::View
        } else {
            TableType::Base
        }
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.definition.as_deref()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used to prune chunks, files and row groups; DataFusion still
        // filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snap = match &self.fixed {
            Some(s) => s.clone(),
            None => self
                .engine
                .snapshot(&self.name)
                .ok_or_else(|| DataFusionError::Plan(format!("table '{}' not found", self.name)))?,
        };
        if snap.def.options.key.is_some() {
            return self
                .scan_keyed(state, snap, projection, filters, limit)
                .await;
        }
        // The snapshot is the truth for this query, even if the table
        // gained columns since planning started. A reference table's
        // internal time column (the first) is read only if a query could
        // see it, which none can: the projection skips it.
        let schema = if snap.def.options.reference {
            let time = snap
                .def
                .schema
                .field_with_name(&snap.def.time_column)?
                .clone();
            Arc::new(arrow::datatypes::Schema::new(
                std::iter::once(Arc::new(time))
                    .chain(self.schema.fields().iter().cloned())
                    .collect::<Vec<_>>(),
            ))
        } else {
            self.schema.clone()
        };
        let visible: Option<Vec<usize>> = snap.def.options.reference.then(|| match projection {
            Some(p) => p.iter().map(|i| i + 1).collect(),
            None => (1..schema.fields().len()).collect(),
        });
        let projection = visible.as_ref().or(projection);
        let remote = self.fixed.is_none() && self.engine.buffer_source().is_some();
        self.plan_scan(
            state, snap, schema, projection, filters, limit, remote, true,
        )
        .await
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op}: Sextant tables are append-only"
            )));
        }
        let sink = SextantSink {
            engine: self.engine.clone(),
            table: self.name.clone(),
            schema: self.schema.clone(),
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

impl SextantTable {
    /// A keyed table's scan: the containers that cannot share a key with
    /// any other read as they are (each has one row per key): with time in
    /// the key, those whose time range meets no other's
    /// ([`alone_in_time`]); otherwise the files alone in their partition.
    /// The rest read whole (pruned by filters on key columns only, since a
    /// newer row of a key must meet the older before any other filter),
    /// merged by key and deduplicated ([`crate::keys`]).
    async fn scan_keyed(
        &self,
        state: &dyn Session,
        snap: Snapshot,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let def = &snap.def;
        let reference = def.options.reference;
        let mut fields = vec![];
        if reference {
            fields.push(Arc::new(
                def.schema.field_with_name(&def.time_column)?.clone(),
            ));
        }
        fields.extend(self.schema.fields().iter().cloned());
        fields.push(Arc::new(
            def.schema
                .field_with_name(sextant_catalog::VERSION_COLUMN)?
                .clone(),
        ));
        let schema = Arc::new(arrow::datatypes::Schema::new(fields));
        let offset = usize::from(reference);
        let visible: Vec<usize> = match projection {
            Some(p) => p.iter().map(|i| i + offset).collect(),
            None => (offset..offset + self.schema.fields().len()).collect(),
        };
        let k = crate::keys::KeyOrder::of(def, &schema)
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .ok_or_else(|| DataFusionError::Internal("a keyed scan without a key".into()))?;
        let remote = self.fixed.is_none() && self.engine.buffer_source().is_some();
        let time_in_key = k
            .key
            .iter()
            .any(|&i| schema.field(i).name() == &def.time_column);
        let (clean, clean_chunks, dirty, dirty_chunks) = if remote {
            // Other nodes' buffered rows may meet any of these.
            (vec![], vec![], snap.files.clone(), snap.chunks.clone())
        } else if time_in_key {
            alone_in_time(&snap.files, &snap.chunks)
        } else {
            let (clean, dirty) = alone_in_partition(def, &snap.files, &snap.chunks);
            (clean, vec![], dirty, snap.chunks.clone())
        };
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = vec![];
        if !clean.is_empty() || !clean_chunks.is_empty() {
            let only = Snapshot {
                chunks: clean_chunks,
                files: clean,
                ..snap.clone()
            };
            plans.push(
                self.plan_scan(
                    state,
                    only,
                    schema.clone(),
                    Some(&visible),
                    filters,
                    limit,
                    false,
                    true,
                )
                .await?,
            );
        }
        if !dirty.is_empty() || !dirty_chunks.is_empty() || remote {
            let names: Vec<String> = k
                .key
                .iter()
                .map(|&i| schema.field(i).name().clone())
                .collect();
            let on_key: Vec<Expr> = filters
                .iter()
                .filter(|f| f.column_refs().iter().all(|c| names.contains(&c.name)))
                .cloned()
                .collect();
            let rest = Snapshot {
                files: dirty,
                chunks: dirty_chunks,
                ..snap
            };
            // No predicate inside the Parquet scan: it would let the optimizer
            // take its columns as constant and drop them from the sort the
            // merge needs, while rows of other values still come out of a
            // file (only row groups are skipped). Files are pruned above.
            let all = self
                .plan_scan(
                    state,
                    rest,
                    schema.clone(),
                    None,
                    &on_key,
                    None,
                    remote,
                    false,
                )
                .await?;
            let merged = crate::keys::deduplicate(all, &k, names)?;
            let scanned = merged.schema();
            let exprs = visible
                .iter()
                .map(|&i| {
                    let name = schema.field(i).name();
                    Ok((physical_col(name, &scanned)?, name.clone()))
                })
                .collect::<DfResult<Vec<_>>>()?;
            plans.push(Arc::new(ProjectionExec::try_new(exprs, merged)?));
        }
        match plans.len() {
            0 => Ok(Arc::new(EmptyExec::new(Arc::new(
                schema.project(&visible)?,
            )))),
            1 => Ok(plans.remove(0)),
            _ => UnionExec::try_new(plans),
        }
    }

    /// The scan of `snap` with `schema` (the visible columns and any hidden
    /// ones the caller reads): pruned by `filters`, its buffered rows read
    /// in place, or from every ingest node when `remote`.
    #[allow(clippy::too_many_arguments)]
    async fn plan_scan(
        &self,
        state: &dyn Session,
        snap: Snapshot,
        schema: SchemaRef,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        remote: bool,
        parquet_predicate: bool,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Rows past the table's retention are invisible from the moment
        // they pass it, whether or not their files are gone yet: the
        // cutoff prunes like a filter and is applied to the rows below.
        let retention = self
            .engine
            .retention_cutoff(&self.name, self.engine.now_ns())
            .map(|ns| {
                let ts = time_scalar(ns, &schema, &snap.def.time_column);
                (
                    ns,
                    datafusion::logical_expr::col(snap.def.time_column.as_str())
                        .gt_eq(datafusion::logical_expr::lit(ts.clone())),
                    ts,
                )
            });
        let predicate = match conjunction(
            filters
                .iter()
                .cloned()
                .chain(retention.iter().map(|(_, e, _)| e.clone())),
        ) {
            Some(expr) => {
                let df_schema = DFSchema::try_from(schema.clone())?;
                state.create_physical_expr(expr, &df_schema).ok()
            }
            None => None,
        };
        let pruning = predicate.as_ref().and_then(|p| {
            PruningPredicateBuilder::new()
                .with_file_schema(schema.clone())
                .try_build(p.clone())
                .ok()
        });

        let chunk_keep = keep(
            &pruning,
            &schema,
            snap.chunks.iter().map(|c| chunk_stats(c, &snap, &schema)),
        );
        let file_keep = keep(
            &pruning,
            &schema,
            snap.files.iter().map(|f| file_stats(f, &snap, &schema)),
        );
        let cutoff = retention.as_ref().map(|(ns, _, _)| *ns).unwrap_or(i64::MIN);
        let chunks: Vec<&Chunk> = snap
            .chunks
            .iter()
            .zip(&chunk_keep)
            .filter(|(c, k)| **k && c.max_time_ns >= cutoff)
            .map(|(c, _)| c)
            .collect();
        let skip_damaged = self.engine.inner.config.skip_damaged_files;
        let files: Vec<Arc<ParquetFile>> = snap
            .files
            .iter()
            .zip(&file_keep)
            .filter(|(f, k)| **k && f.file.max_time_ns >= cutoff)
            .filter(|(f, _)| !skip_damaged || self.engine.inner.damage.get(&f.file.path).is_none())
            .map(|(f, _)| f.clone())
            .collect();
        // `matches_term` filters: only the row groups whose token index
        // may hold the term are read, and no file that has none.
        let needs: Vec<crate::tokens::Need> = if parquet_predicate {
            filters.iter().filter_map(crate::tokens::need).collect()
        } else {
            vec![]
        };
        let (files, access, token_skipped) = self.token_prune(files, needs).await;
        // Containers that straddle the cutoff need their rows filtered,
        // which needs the time column even if the query does not.
        // Several ingest nodes: each one's buffered rows above the position
        // the files cover, read from that node (their times are unknown here).
        let buffers = match self.engine.buffer_source() {
            Some(source) if remote => Some(source.clone()),
            _ => None,
        };
        let straddle = (buffers.is_some() && retention.is_some())
            || chunks.iter().any(|c| c.min_time_ns < cutoff)
            || files.iter().any(|f| f.file.min_time_ns < cutoff);
        let time_idx = schema.index_of(&snap.def.time_column)?;
        let (scan_projection, added_time) = match projection {
            Some(p) if straddle && !p.contains(&time_idx) => {
                let mut p = p.clone();
                p.push(time_idx);
                (Some(p), true)
            }
            p => (p.cloned(), false),
        };
        // A limit is only safe to push when no rows are filtered out here.
        let scan_limit = if straddle { None } else { limit };

        let target = state.config().target_partitions().max(1);
        let mut children: Vec<Arc<dyn ExecutionPlan>> = vec![];
        let wanted = match &scan_projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema.clone(),
        };
        if let Some(source) = &buffers {
            for node in source.nodes() {
                let request = crate::remote::BufferRequest {
                    table: self.name.clone(),
                    table_id: snap.def.id,
                    after: snap.positions.get(&node).copied().unwrap_or(0),
                    schema: wanted.clone(),
                };
                children.push(Arc::new(crate::remote::BufferScanExec::new(
                    node,
                    request,
                    source.clone(),
                )));
            }
        } else if !chunks.is_empty() {
            let n = target.min(chunks.len());
            let mut parts: Vec<Vec<RecordBatch>> = vec![vec![]; n];
            for (i, c) in chunks.iter().enumerate() {
                parts[i % n].push(c.batch.clone());
            }
            // Only the rows the filters keep, and the columns read, are
            // conformed (text becomes views): a lookup in a large buffer
            // converts the column it looks in, not every column read.
            let filter = predicate
                .as_ref()
                .and_then(|p| BufferFilter::new(p, &schema))
                .map(Arc::new);
            if self.engine.buffer_source().is_none() {
                // As each partition is read, so the work is shared by the
                // partitions' threads (and EXPLAIN does none of it).
                let parts = parts
                    .into_iter()
                    .map(|chunks| {
                        Arc::new(BufferPartition {
                            schema: wanted.clone(),
                            chunks,
                            filter: filter.clone(),
                        }) as Arc<dyn PartitionStream>
                    })
                    .collect();
                children.push(Arc::new(StreamingTableExec::try_new(
                    wanted.clone(),
                    parts,
                    None,
                    vec![],
                    false,
                    None,
                )?));
            } else {
                // On a cluster's node, a scan of this node's chunks (a
                // view's backfill) may be sent to another node: the rows
                // travel with the plan, read here.
                for part in &mut parts {
                    for batch in part.iter_mut() {
                        *batch = read_chunk(batch, filter.as_deref(), &wanted)?;
                    }
                }
                children.push(MemorySourceConfig::try_new_exec(
                    &parts,
                    wanted.clone(),
                    None,
                )?);
            }
        }
        // Files some delete covers are read apart, their rows filtered.
        let mut by_deletes: BTreeMap<usize, Vec<Arc<ParquetFile>>> = BTreeMap::new();
        for f in &files {
            let covering = snap.deletes.iter().filter(|d| f.id <= d.files_upto).count();
            by_deletes.entry(covering).or_default().push(f.clone());
        }
        for (covering, files) in by_deletes {
            let mut source = ParquetSource::new(schema.clone())
                .with_table_parquet_options(state.table_options().parquet.clone())
                .with_parquet_file_reader_factory(Arc::new(self.engine.parquet_reader()));
            if let Some(p) = predicate.as_ref().filter(|_| parquet_predicate) {
                source = source.with_predicate(p.clone());
                // A lookup by id matches a few rows of a row group: the id
                // column is decoded first and the others only where it
                // matched (DataFusion's late materialization, which costs
                // more than it saves for filters that keep many rows).
                if filters.iter().any(|f| pins_an_id(f, &schema)) {
                    source = source.with_pushdown_filters(true);
                }
            }
            let n = target.min(files.len());
            let mut groups: Vec<Vec<PartitionedFile>> = vec![vec![]; n];
            for (i, f) in files.iter().enumerate() {
                let mut file = PartitionedFile::new(f.file.path.clone(), f.file.bytes);
                if let Some(plan) = access.get(&f.id) {
                    file = file.with_extension(plan.clone());
                }
                groups[i % n].push(file);
            }
            let filter = match covering {
                0 => None,
                _ => crate::deletes::visible(&snap.deletes, files[0].id, &schema)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?,
            };
            let builder = FileScanConfigBuilder::new(object_store_url(), Arc::new(source))
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect());
            let Some(filter) = filter else {
                let config = builder
                    .with_projection_indices(scan_projection.clone())?
                    .with_limit(scan_limit)
                    .build();
                children.push(DataSourceExec::from_data_source(config));
                continue;
            };
            // Every column (the deletes' conditions may read any), then
            // the ones the query reads.
            let all: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(builder.build());
            let df_schema = DFSchema::try_from(schema.clone())?;
            let keep = state.create_physical_expr(filter, &df_schema)?;
            let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(keep, all)?);
            let read: Vec<usize> = match &scan_projection {
                Some(p) => p.clone(),
                None => (0..schema.fields().len()).collect(),
            };
            let exprs = read
                .iter()
                .map(|i| {
                    let name = schema.field(*i).name();
                    Ok((physical_col(name, &schema)?, name.clone()))
                })
                .collect::<DfResult<Vec<_>>>()?;
            children.push(Arc::new(ProjectionExec::try_new(exprs, filtered)?));
        }
        let mut input = if children.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema.clone(),
            };
            Arc::new(EmptyExec::new(projected)) as Arc<dyn ExecutionPlan>
        } else {
            UnionExec::try_new(children)?
        };
        if let (true, Some((_, _, ts))) = (straddle, &retention) {
            let scanned = input.schema();
            let time = physical_col(&snap.def.time_column, &scanned)?;
            let keep: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
                time,
                Operator::GtEq,
                physical_lit(ts.clone()),
            ));
            input = Arc::new(FilterExec::try_new(keep, input)?);
            if added_time {
                let exprs = scanned
                    .fields()
                    .iter()
                    .take(scanned.fields().len() - 1)
                    .map(|f| Ok((physical_col(f.name(), &scanned)?, f.name().clone())))
                    .collect::<DfResult<Vec<_>>>()?;
                input = Arc::new(ProjectionExec::try_new(exprs, input)?);
            }
        }
        let m = sextant_metrics::metrics();
        let parts = [
            ("file", "scanned", files.len()),
            ("file", "pruned", snap.files.len() - files.len()),
            ("chunk", "scanned", chunks.len()),
            ("chunk", "pruned", snap.chunks.len() - chunks.len()),
        ];
        for (kind, result, n) in parts {
            m.scan_parts
                .with_label_values(&[kind, result])
                .inc_by(n as u64);
        }
        let bytes = files.iter().map(|f| f.file.bytes).sum::<u64>();
        m.scan_file_bytes.inc_by(bytes);
        let _ = SCAN_BYTES.try_with(|c| c.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed));
        Ok(Arc::new(SextantScanExec::new(
            ScanSummary {
                table: self.name.clone(),
                chunks_scanned: chunks.len(),
                chunks_total: snap.chunks.len(),
                files_scanned: files.len(),
                files_total: snap.files.len(),
                token_row_groups_skipped: token_skipped,
            },
            Arc::new(files),
            input,
        )))
    }
}

/// A scan's filters, applied to a buffered chunk before its columns are
/// conformed to the read schema: only the columns the filters name are
/// conformed for all of its rows, the others for the rows kept. The rows
/// are filtered again above (the filters are inexact), so this only saves
/// work.
#[derive(Debug)]
struct BufferFilter {
    /// The filters, over `columns`.
    predicate: Arc<dyn PhysicalExpr>,
    /// The columns the filters read, as queries read them.
    columns: SchemaRef,
}

impl BufferFilter {
    fn new(predicate: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Option<Self> {
        use datafusion::physical_expr::utils::{collect_columns, reassign_expr_columns};
        let names: std::collections::BTreeSet<String> = collect_columns(predicate)
            .into_iter()
            .map(|c| c.name().to_string())
            .collect();
        let indices: Vec<usize> = names
            .iter()
            .map(|n| schema.index_of(n).ok())
            .collect::<Option<_>>()?;
        let columns = Arc::new(schema.project(&indices).ok()?);
        let predicate = reassign_expr_columns(predicate.clone(), &columns).ok()?;
        Some(Self { predicate, columns })
    }

    /// `batch` (a chunk as stored) conformed to `wanted`, without the rows
    /// the filters drop.
    fn apply(&self, batch: &RecordBatch, wanted: &SchemaRef) -> crate::Result<RecordBatch> {
        let read = crate::state::conform(batch, &self.columns)?;
        let keep = match self
            .predicate
            .evaluate(&read)
            .and_then(|v| v.into_array(read.num_rows()))
        {
            Ok(keep) => keep,
            // Left to the filter above, which reports it.
            Err(_) => return crate::state::conform(batch, wanted),
        };
        let Some(keep) = keep.as_any().downcast_ref::<arrow::array::BooleanArray>() else {
            return crate::state::conform(batch, wanted);
        };
        if keep.true_count() == batch.num_rows() {
            return crate::state::conform(batch, wanted);
        }
        let names: Vec<usize> = wanted
            .fields()
            .iter()
            .filter_map(|f| batch.schema().index_of(f.name()).ok())
            .collect();
        let kept = arrow::compute::filter_record_batch(&batch.project(&names)?, keep)?;
        crate::state::conform(&kept, wanted)
    }
}

/// A buffered chunk (as stored) as a scan reads it: the rows `filter`
/// keeps, conformed to `wanted`.
fn read_chunk(
    chunk: &RecordBatch,
    filter: Option<&BufferFilter>,
    wanted: &SchemaRef,
) -> DfResult<RecordBatch> {
    match filter {
        Some(f) => f.apply(chunk, wanted),
        None => crate::state::conform(chunk, wanted),
    }
    .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// One partition of a scan's buffered chunks, read as it is executed.
#[derive(Debug)]
struct BufferPartition {
    schema: SchemaRef,
    chunks: Vec<RecordBatch>,
    filter: Option<Arc<BufferFilter>>,
}

impl PartitionStream for BufferPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (schema, filter) = (self.schema.clone(), self.filter.clone());
        let batches = futures::stream::iter(self.chunks.clone())
            .map(move |chunk| read_chunk(&chunk, filter.as_deref(), &schema));
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

impl SextantTable {
    /// The files that may hold rows matching every filter of `needs` (by
    /// their token indexes, [`crate::tokens`]), the row groups to read of
    /// those where some are skipped (by file id), and how many row groups
    /// of the files kept were skipped. A file without an index is kept
    /// whole.
    async fn token_prune(
        &self,
        files: Vec<Arc<ParquetFile>>,
        needs: Vec<crate::tokens::Need>,
    ) -> (
        Vec<Arc<ParquetFile>>,
        std::collections::HashMap<i64, ParquetAccessPlan>,
        usize,
    ) {
        let mut access = std::collections::HashMap::new();
        if needs.is_empty() || files.is_empty() {
            return (files, access, 0);
        }
        let need = crate::tokens::Need::All(needs);
        // Through the scan's own reader, which notes a damaged file.
        let factory = &self.engine.parquet_reader();
        let indexes: Vec<Option<Arc<crate::tokens::FileIndex>>> =
            futures::stream::iter(files.clone())
                .map(|f| async move { self.token_index(factory, &f).await })
                .buffered(16)
                .collect()
                .await;
        let mut kept = Vec::with_capacity(files.len());
        let mut skipped = 0;
        for (f, index) in files.into_iter().zip(indexes) {
            let Some(groups) = index.and_then(|i| i.row_groups(&need)) else {
                kept.push(f);
                continue;
            };
            if !groups.iter().any(|&g| g) {
                continue;
            }
            if groups.iter().any(|&g| !g) {
                let mut plan = ParquetAccessPlan::new_all(groups.len());
                for (i, _) in groups.iter().enumerate().filter(|(_, g)| !**g) {
                    plan.skip(i);
                    skipped += 1;
                }
                access.insert(f.id, plan);
            }
            kept.push(f);
        }
        (kept, access, skipped)
    }

    /// A file's token index, read from its footer once and then kept;
    /// `None` if it has none or cannot be read (then it is read whole, and
    /// the scan reports what is wrong with it).
    async fn token_index(
        &self,
        factory: &crate::damage::RecordingFactory,
        f: &Arc<ParquetFile>,
    ) -> Option<Arc<crate::tokens::FileIndex>> {
        use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
        let cache = &self.engine.inner.token_indexes;
        if let Some(index) = cache.get(&f.file.path) {
            return Some(index);
        }
        let mut reader = factory
            .create_reader(
                0,
                PartitionedFile::new(f.file.path.clone(), f.file.bytes),
                None,
                &datafusion::physical_plan::metrics::ExecutionPlanMetricsSet::new(),
            )
            .ok()?;
        let metadata = match reader.get_metadata(None).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(path = %f.file.path, error = %e, "token index not read");
                return None;
            }
        };
        let index =
            Arc::new(crate::tokens::FileIndex::from_metadata(&metadata).unwrap_or_default());
        cache.put(&f.file.path, index.clone());
        Some(index)
    }
}

type Split = (
    Vec<Arc<ParquetFile>>,
    Vec<Chunk>,
    Vec<Arc<ParquetFile>>,
    Vec<Chunk>,
);

/// A keyed table whose key holds its time column: a container (a file, or
/// a buffered write) whose time range meets no other container's holds
/// keys no other one has, and it holds each of them once (a file is
/// deduplicated when written, a buffered write when accepted), so it is
/// read as it is. The others, in groups of overlapping time ranges, need
/// the merge. Returns (clean files, clean chunks, files and chunks to merge).
fn alone_in_time(files: &[Arc<ParquetFile>], chunks: &[Chunk]) -> Split {
    // (min, max, file index or chunk index)
    let mut spans: Vec<(i64, i64, Result<usize, usize>)> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.file.min_time_ns, f.file.max_time_ns, Ok(i)))
        .chain(
            chunks
                .iter()
                .enumerate()
                .map(|(i, c)| (c.min_time_ns, c.max_time_ns, Err(i))),
        )
        .collect();
    spans.sort_by_key(|s| (s.0, s.1));
    let mut split: Split = (vec![], vec![], vec![], vec![]);
    let mut group: Vec<Result<usize, usize>> = vec![];
    let mut group_max = i64::MIN;
    let close = |group: &mut Vec<Result<usize, usize>>, split: &mut Split| {
        let alone = group.len() == 1;
        for item in group.drain(..) {
            match (item, alone) {
                (Ok(i), true) => split.0.push(files[i].clone()),
                (Err(i), true) => split.1.push(chunks[i].clone()),
                (Ok(i), false) => split.2.push(files[i].clone()),
                (Err(i), false) => split.3.push(chunks[i].clone()),
            }
        }
    };
    for (min, max, item) in spans {
        if !group.is_empty() && min > group_max {
            close(&mut group, &mut split);
        }
        group_max = if group.is_empty() {
            max
        } else {
            group_max.max(max)
        };
        group.push(item);
    }
    close(&mut group, &mut split);
    // The buffer's writes in the order they were accepted.
    split.1.sort_by_key(|c| c.seq);
    split.3.sort_by_key(|c| c.seq);
    split
}

/// A keyed table whose key does not hold its time column: the files alone
/// in their partition, with no buffered rows in it, are read as they are;
/// the other files need the merge. Returns (clean, to merge).
fn alone_in_partition(
    def: &TableDef,
    files: &[Arc<ParquetFile>],
    chunks: &[Chunk],
) -> (Vec<Arc<ParquetFile>>, Vec<Arc<ParquetFile>>) {
    let width = def.options.partition_duration.as_nanos() as i64;
    let mut per_partition: BTreeMap<i64, usize> = BTreeMap::new();
    for f in files {
        *per_partition.entry(f.file.partition_start_ns).or_default() += 1;
    }
    let alone = |f: &ParquetFile| {
        let p = f.file.partition_start_ns;
        per_partition.get(&p) == Some(&1)
            && !chunks
                .iter()
                .any(|c| c.max_time_ns >= p && c.min_time_ns < p.saturating_add(width))
    };
    files.iter().cloned().partition(|f| alone(f))
}

/// Whether `filter` is (or is a conjunction holding) an id column equal
/// to a constant or in a list of them (`trace_id = '...'`).
fn pins_an_id(filter: &Expr, schema: &SchemaRef) -> bool {
    use datafusion::logical_expr::{BinaryExpr as Binary, expr::InList};
    let is_id = |e: &Expr| match e {
        Expr::Column(c) => schema
            .field_with_name(&c.name)
            .is_ok_and(|f| crate::persist::is_id_column(f.name(), f.data_type())),
        _ => false,
    };
    match filter {
        Expr::BinaryExpr(Binary { left, op, right }) => match op {
            Operator::And => pins_an_id(left, schema) || pins_an_id(right, schema),
            Operator::Eq => {
                (is_id(left) && matches!(right.as_ref(), Expr::Literal(..)))
                    || (is_id(right) && matches!(left.as_ref(), Expr::Literal(..)))
            }
            _ => false,
        },
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) => is_id(expr) && list.iter().all(|e| matches!(e, Expr::Literal(..))),
        _ => false,
    }
}

/// Which containers may hold matching rows; all of them without a predicate
/// or when the statistics cannot be evaluated.
fn keep(
    pruning: &Option<PruningPredicate>,
    schema: &SchemaRef,
    stats: impl Iterator<Item = Statistics>,
) -> Vec<bool> {
    let stats: Vec<Arc<Statistics>> = stats.map(Arc::new).collect();
    let n = stats.len();
    match pruning {
        Some(p) if n > 0 => p
            .prune(&PrunableStatistics::new(stats, schema.clone()))
            .unwrap_or_else(|_| vec![true; n]),
        _ => vec![true; n],
    }
}

fn time_scalar(ns: i64, schema: &SchemaRef, time_col: &str) -> ScalarValue {
    let tz = match schema
        .field_with_name(time_col)
        .map(|f| f.data_type().clone())
    {
        Ok(DataType::Timestamp(TimeUnit::Nanosecond, tz)) => tz,
        _ => None,
    };
    ScalarValue::TimestampNanosecond(Some(ns), tz)
}

fn time_only_stats(
    rows: usize,
    min: i64,
    max: i64,
    snap: &Snapshot,
    schema: &SchemaRef,
) -> Statistics {
    let mut s = Statistics::new_unknown(schema);
    s.num_rows = Precision::Exact(rows);
    if let Ok(idx) = schema.index_of(&snap.def.time_column) {
        s.column_statistics[idx] = ColumnStatistics::new_unknown()
            .with_min_value(Precision::Exact(time_scalar(
                min,
                schema,
                &snap.def.time_column,
            )))
            .with_max_value(Precision::Exact(time_scalar(
                max,
                schema,
                &snap.def.time_column,
            )))
            .with_null_count(Precision::Exact(0));
    }
    s
}

fn chunk_stats(c: &Chunk, snap: &Snapshot, schema: &SchemaRef) -> Statistics {
    time_only_stats(
        c.batch.num_rows(),
        c.min_time_ns,
        c.max_time_ns,
        snap,
        schema,
    )
}

fn file_stats(f: &Arc<ParquetFile>, snap: &Snapshot, schema: &SchemaRef) -> Statistics {
    let mut s = time_only_stats(
        f.file.rows as usize,
        f.file.min_time_ns,
        f.file.max_time_ns,
        snap,
        schema,
    );
    for (idx, field) in schema.fields().iter().enumerate() {
        if field.name() == &snap.def.time_column {
            continue;
        }
        // A column the file predates is all nulls there: only its null count is known.
        let Some(cs) = f.file.column_stats.get(field.name()) else {
            s.column_statistics[idx] = ColumnStatistics::new_unknown()
                .with_null_count(Precision::Exact(f.file.rows as usize));
            continue;
        };
        let parse = |v: &Option<serde_json::Value>| -> Precision<ScalarValue> {
            match v {
                Some(serde_json::Value::String(s)) => {
                    ScalarValue::try_from_string(s.clone(), field.data_type())
                        .map(Precision::Exact)
                        .unwrap_or(Precision::Absent)
                }
                _ => Precision::Absent,
            }
        };
        s.column_statistics[idx] = ColumnStatistics::new_unknown()
            .with_min_value(parse(&cs.min))
            .with_max_value(parse(&cs.max))
            .with_null_count(Precision::Exact(cs.null_count as usize));
    }
    s
}

/// A table scan's root as another node receives it: `summary` from
/// [`encode_table_scan`] over the decoded `input` (no files held there:
/// the node that planned the query holds them).
pub fn decode_table_scan(
    summary: &str,
    input: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let v: serde_json::Value = serde_json::from_str(summary)
        .map_err(|e| DataFusionError::Internal(format!("table scan summary: {e}")))?;
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0) as usize;
    let summary = ScanSummary {
        table: v
            .get("table")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string(),
        chunks_scanned: n("chunks_scanned"),
        chunks_total: n("chunks_total"),
        files_scanned: n("files_scanned"),
        files_total: n("files_total"),
        token_row_groups_skipped: n("token_row_groups_skipped"),
    };
    Ok(Arc::new(SextantScanExec::new(
        summary,
        Arc::new(vec![]),
        input,
    )))
}

/// What [`decode_table_scan`] needs of a table scan's root; `None` for
/// another plan node.
pub fn encode_table_scan(plan: &dyn ExecutionPlan) -> Option<String> {
    let scan = plan.downcast_ref::<SextantScanExec>()?;
    let s = &scan.summary;
    Some(
        serde_json::json!({
            "table": s.table,
            "chunks_scanned": s.chunks_scanned,
            "chunks_total": s.chunks_total,
            "files_scanned": s.files_scanned,
            "files_total": s.files_total,
            "token_row_groups_skipped": s.token_row_groups_skipped,
        })
        .to_string(),
    )
}

/// What a scan read and skipped, for EXPLAIN.
#[derive(Debug, Clone)]
struct ScanSummary {
    table: String,
    chunks_scanned: usize,
    chunks_total: usize,
    files_scanned: usize,
    files_total: usize,
    /// Row groups of the files scanned that the token index skipped.
    token_row_groups_skipped: usize,
}

/// The root of a table scan: passes its input through and shows in EXPLAIN
/// how many buffer chunks and Parquet files were scanned and skipped. It
/// holds the files it scans (and its streams do) so that compaction or
/// retention cannot delete them while the query runs.
#[derive(Debug)]
struct SextantScanExec {
    summary: ScanSummary,
    leases: Arc<Vec<Arc<ParquetFile>>>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl SextantScanExec {
    fn new(
        summary: ScanSummary,
        leases: Arc<Vec<Arc<ParquetFile>>>,
        input: Arc<dyn ExecutionPlan>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            input.equivalence_properties().clone(),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Self {
            summary,
            leases,
            input,
            properties,
        }
    }
}

impl DisplayAs for SextantScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        write!(
            f,
            "SextantScanExec: table={}, files={} scanned, {} skipped, buffer_chunks={} scanned, {} skipped",
            s.table,
            s.files_scanned,
            s.files_total - s.files_scanned,
            s.chunks_scanned,
            s.chunks_total - s.chunks_scanned
        )?;
        if s.token_row_groups_skipped > 0 {
            write!(
                f,
                ", row_groups={} skipped by the token index",
                s.token_row_groups_skipped
            )?;
        }
        Ok(())
    }
}

#[allow(deprecated)]
impl ExecutionPlan for SextantScanExec {
    fn name(&self) -> &'static str {
        "SextantScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
                "SextantScanExec takes one child".into(),
            ));
        }
        Ok(Arc::new(Self::new(
            self.summary.clone(),
            self.leases.clone(),
            children.swap_remove(0),
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
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        let leases = self.leases.clone();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map(move |batch| {
                let _held = &leases;
                batch
            }),
        )))
    }
}

/// Where INSERT rows go: the engine's write path (WAL, then buffer).
#[derive(Debug)]
pub struct SextantSink {
    engine: Engine,
    table: String,
    schema: SchemaRef,
}

impl DisplayAs for SextantSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SextantSink: table={}", self.table)
    }
}

/// Rows gathered into one write (one WAL record, so one INSERT is applied
/// whole) before they are handed to the engine.
const SINK_BATCH_BYTES: usize = 64 * 1024 * 1024;

#[async_trait]
impl DataSink for SextantSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let mut pending: Vec<RecordBatch> = vec![];
        let mut pending_bytes = 0;
        let mut written = 0;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            pending_bytes += batch.get_array_memory_size();
            pending.push(batch);
            if pending_bytes >= SINK_BATCH_BYTES {
                written += self.write(&pending).await?;
                pending.clear();
                pending_bytes = 0;
            }
        }
        if !pending.is_empty() {
            written += self.write(&pending).await?;
        }
        Ok(written)
    }
}

impl SextantSink {
    async fn write(&self, batches: &[RecordBatch]) -> DfResult<u64> {
        let schema = batches[0].schema();
        let batch = concat_batches(&schema, batches)?;
        let written = self
            .engine
            .write(&self.table, batch)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        sextant_metrics::metrics()
            .ingest_rows
            .with_label_values(&["sql", &self.table])
            .inc_by(written);
        Ok(written)
    }
}

tokio::task_local! {
    static SCAN_BYTES: Arc<std::sync::atomic::AtomicU64>;
}

/// Runs `f` (a statement being planned and run) so that the bytes of the
/// Parquet files its table scans read are added to `counter`.
pub async fn counting_scans<F: std::future::Future>(
    counter: Arc<std::sync::atomic::AtomicU64>,
    f: F,
) -> F::Output {
    SCAN_BYTES.scope(counter, f).await
}

impl From<StorageError> for DataFusionError {
    fn from(e: StorageError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}
