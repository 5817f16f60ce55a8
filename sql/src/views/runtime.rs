//! Keeping materialized views up to date: at start, [`start_views`]
//! compiles and attaches every transform view's function, which storage
//! applies to each write of the base as it is ingested (and backfills from
//! a snapshot); [`run_refresher`] walks the views in creation order every
//! interval and re-aggregates the invalid buckets of aggregating views
//! ([`step`], at most [`MAX_BUCKETS_PER_STEP`] at a time), backfills them
//! one base partition at a time, and recomputes `refresh = 'full'` views
//! ([`full_refresh`]); each refresh's rows are [`compute`]d by DataFusion and
//! committed through the engine.

use sextant_sqlstate::SqlState;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use sextant_catalog::{TIME_COLUMN, ViewDef, ViewKind, ViewProgress};
use sextant_storage::{BucketRefresh, Engine, TransformFn, bucket_start};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::analyze::{cannot, plan_query};
use crate::SqlError;

/// Buckets one refresh step re-aggregates at most.
pub(super) const MAX_BUCKETS_PER_STEP: usize = 512;

/// A transform view's query as a function of one base batch: the filter,
/// then the projection, evaluated as physical expressions.
pub(super) fn compile_transform(
    ctx: &SessionContext,
    plan: &LogicalPlan,
    view_schema: &SchemaRef,
) -> Result<TransformFn, SqlError> {
    let LogicalPlan::Projection(proj) = plan else {
        return Err(cannot("it is not a projection"));
    };
    let mut input = proj.input.as_ref();
    let mut predicate = None;
    loop {
        match input {
            LogicalPlan::Filter(f) => {
                if predicate.is_some() {
                    return Err(cannot("it filters twice"));
                }
                predicate = Some((f.predicate.clone(), f.input.schema().clone()));
                input = f.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) => input = a.input.as_ref(),
            LogicalPlan::TableScan(_) => break,
            other => return Err(cannot(format!("it has a {} step", other.display()))),
        }
    }
    let state = ctx.state();
    let filter: Option<Arc<dyn PhysicalExpr>> = match &predicate {
        Some((p, schema)) => Some(state.create_physical_expr(p.clone(), schema)?),
        None => None,
    };
    let in_schema: &DFSchema = proj.input.schema();
    let exprs: Vec<Arc<dyn PhysicalExpr>> = proj
        .expr
        .iter()
        .map(|e| state.create_physical_expr(e.clone(), in_schema))
        .collect::<Result<_, _>>()?;
    let schema = view_schema.clone();
    Ok(Arc::new(move |batch: &RecordBatch| {
        let rows = match &filter {
            Some(f) => {
                let mask = f
                    .evaluate(batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| e.to_string())?;
                let mask = mask
                    .as_boolean_opt()
                    .ok_or("the WHERE clause is not a boolean")?;
                filter_record_batch(batch, mask).map_err(|e| e.to_string())?
            }
            None => batch.clone(),
        };
        let mut columns = Vec::with_capacity(exprs.len());
        for (e, field) in exprs.iter().zip(schema.fields()) {
            let a = e
                .evaluate(&rows)
                .and_then(|v| v.into_array(rows.num_rows()))
                .map_err(|e| e.to_string())?;
            let a = if a.data_type() == field.data_type() {
                a
            } else {
                cast(&a, field.data_type()).map_err(|e| e.to_string())?
            };
            columns.push(a);
        }
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
    }))
}

/// Runs the query once over tables of one row (all NULL but `time`), the
/// ones it reads, so what plans but cannot run (an aggregate that does not
/// take a type) fails at CREATE rather than at every refresh.
pub(super) async fn dry_run(
    ctx: &SessionContext,
    query: &str,
    reads: &[sextant_catalog::TableDef],
) -> Result<(), SqlError> {
    use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    let public = MemorySchemaProvider::new();
    for table in reads {
        let columns = table
            .schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == TIME_COLUMN {
                    cast(
                        &arrow::array::TimestampNanosecondArray::from(vec![0i64]),
                        f.data_type(),
                    )
                } else {
                    Ok(arrow::array::new_null_array(f.data_type(), 1))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SqlError::internal(e.to_string()))?;
        let schema = Arc::new(Schema::new(
            table
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let row = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| SqlError::internal(e.to_string()))?;
        datafusion::catalog::SchemaProvider::register_table(
            &public,
            table.name.clone(),
            Arc::new(MemTable::try_new(schema, vec![vec![row]])?),
        )?;
    }
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(sextant_catalog::SCHEMA_NAME, Arc::new(public))?;
    let list = datafusion::catalog::MemoryCatalogProviderList::new();
    datafusion::catalog::CatalogProviderList::register_catalog(
        &list,
        sextant_catalog::DATABASE_NAME.to_string(),
        Arc::new(catalog),
    );
    let state = SessionStateBuilder::new_from_existing(ctx.state())
        .with_catalog_list(Arc::new(list))
        .build();
    let probe = SessionContext::new_with_state(state);
    compute(&probe, query, None).await?;
    Ok(())
}

/// Attaches a transform view's function and, if the view still needs its
/// backfill, runs it in the background.
pub(super) async fn start_transform(
    engine: &Engine,
    name: &str,
    f: TransformFn,
) -> Result<(), SqlError> {
    let snapshot = engine.install_transform(name, f.clone()).await?;
    let Some(snapshot) = snapshot else {
        return Ok(());
    };
    let engine = engine.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        if let Err(e) = backfill_transform(&engine, &name, f, snapshot).await {
            warn!(view = %name, error = %e, "backfill failed; it starts over at the next restart");
            engine.update_view_status(&name, |s| s.last_error = Some(format!("backfill: {e}")));
        }
    });
    Ok(())
}

pub(super) async fn backfill_transform(
    engine: &Engine,
    name: &str,
    f: TransformFn,
    snapshot: sextant_storage::Snapshot,
) -> Result<(), SqlError> {
    let started = Instant::now();
    let total: u64 = snapshot
        .chunks
        .iter()
        .map(|c| c.batch.num_rows() as u64)
        .sum::<u64>()
        + snapshot.files.iter().map(|f| f.file.rows).sum::<u64>();
    engine.update_view_status(name, |s| s.backfill_rows = Some((0, total)));
    let df = crate::context::snapshot_frame(engine, snapshot)?;
    let mut stream = df.execute_stream().await?;
    let mut done = 0u64;
    let mut last_log = Instant::now();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        done += batch.num_rows() as u64;
        let out = f(&batch).map_err(|e| SqlError::new(SqlState::DATA_EXCEPTION, e))?;
        if out.num_rows() > 0 {
            engine.write_view_rows(name, out).await?;
        }
        engine.update_view_status(name, |s| s.backfill_rows = Some((done, total)));
        if last_log.elapsed() > Duration::from_secs(10) {
            info!(view = %name, rows = done, of = total, "backfilling");
            last_log = Instant::now();
        }
    }
    engine
        .set_view_progress(name, ViewProgress::default())
        .await?;
    engine.update_view_status(name, |s| {
        s.backfill_rows = None;
        s.last_error = None;
    });
    info!(view = %name, rows = done, elapsed_ms = started.elapsed().as_millis() as u64, "backfill done");
    Ok(())
}

/// At start-up: compiles and attaches every transform view's function
/// (re-deriving its rows of replayed writes), restarting interrupted
/// backfills. Call before any write is accepted.
pub async fn start_views(engine: &Engine, ctx: &SessionContext) {
    // On a shared catalog transform views are refreshed by buckets.
    if engine.shares_catalog() {
        return;
    }
    for view in engine.views() {
        if view.spec.kind != ViewKind::Transform {
            continue;
        }
        let result = async {
            let plan = plan_query(ctx, &view.query).await?;
            let schema = engine
                .table(&view.name)
                .map(|d| d.schema)
                .ok_or_else(|| SqlError::internal("view table missing"))?;
            let f = compile_transform(ctx, &plan, &schema)?;
            start_transform(engine, &view.name, f).await
        }
        .await;
        if let Err(e) = result {
            warn!(view = %view.name, error = %e, "transform view cannot follow its base");
            engine.update_view_status(&view.name, |s| s.last_error = Some(e.to_string()));
        }
    }
}

/// After the catalog was restored from its copy on the object store (a
/// node on an empty data directory): every view is recomputed in full from
/// what was restored, the views a view reads before it. The copy can list
/// view files that are ahead of their base: rows an aggregating view took
/// from the lost write buffer, or a filtering view's rows persisted before
/// its base's. A view that cannot be recomputed keeps what was restored,
/// and its status and the log say why.
pub async fn rebuild_views(engine: &Engine, ctx: &SessionContext) {
    let mut pending = engine.views();
    while !pending.is_empty() {
        // A view whose base is a view waiting its turn goes later.
        let ready = pending
            .iter()
            .position(|v| !pending.iter().any(|w| w.name == v.base_table))
            .unwrap_or(0);
        let view = pending.remove(ready);
        let _lock = engine.lock_view(&view.name).await;
        if let Err(e) = full_refresh(engine, ctx, &view).await {
            warn!(view = %view.name, error = %e, "the restored view could not be recomputed from its base; it keeps the rows of the catalog copy");
            engine.update_view_status(&view.name, |s| s.last_error = Some(e.to_string()));
        }
    }
}

/// Runs the view's query, restricted to base rows in `ranges` (whole
/// buckets) if given.
pub(super) async fn compute(
    ctx: &SessionContext,
    query: &str,
    ranges: Option<&[(i64, i64)]>,
) -> Result<Vec<RecordBatch>, SqlError> {
    let plan = plan_query(ctx, query).await?;
    let plan = match ranges {
        None => plan,
        Some(ranges) => {
            plan.transform_up(|p| {
                let LogicalPlan::TableScan(scan) = &p else {
                    return Ok(Transformed::no(p));
                };
                let time = Expr::Column(Column::new(Some(scan.table_name.clone()), TIME_COLUMN));
                let ts = |ns: i64| {
                    lit(ScalarValue::TimestampNanosecond(
                        Some(ns),
                        Some("UTC".into()),
                    ))
                };
                let pred = ranges
                    .iter()
                    .map(|(lo, hi)| time.clone().gt_eq(ts(*lo)).and(time.clone().lt(ts(*hi))))
                    .reduce(|a, b| a.or(b))
                    .unwrap_or(lit(false));
                Ok(Transformed::yes(
                    LogicalPlanBuilder::from(p).filter(pred)?.build()?,
                ))
            })?
            .data
        }
    };
    Ok(ctx.execute_logical_plan(plan).await?.collect().await?)
}

/// Recomputes a whole view and swaps it in.
pub(super) async fn full_refresh(
    engine: &Engine,
    ctx: &SessionContext,
    view: &ViewDef,
) -> Result<(), SqlError> {
    let started = Instant::now();
    let base_newest = engine.time_range(&view.base_table).map(|(_, max)| max);
    let done = engine.invalidated(&view.name, usize::MAX).await?;
    let rows = compute(ctx, &view.query, None).await?;
    let outcome = engine
        .commit_refresh(
            &view.name,
            BucketRefresh {
                done,
                ranges: vec![(i64::MIN, i64::MAX)],
                rows,
                progress: Some(ViewProgress::default()),
            },
        )
        .await?;
    record(engine, &view.name, started, base_newest);
    info!(view = %view.name, rows = outcome.rows, elapsed_ms = started.elapsed().as_millis() as u64, "materialized view refreshed in full");
    Ok(())
}

pub(super) fn record(engine: &Engine, view: &str, started: Instant, materialized: Option<i64>) {
    let now = engine.now_ns();
    engine.update_view_status(view, |s| {
        s.last_refresh_ns = Some(now);
        s.last_duration_ms = started.elapsed().as_millis() as u64;
        s.refreshes += 1;
        s.last_error = None;
        if materialized.is_some() {
            s.materialized_ns = materialized;
        }
    });
}

/// One unit of work on one view. Returns whether there was any.
#[tracing::instrument(name = "view_refresh", level = "debug", skip_all, fields(view = %name))]
pub(super) async fn step(
    engine: &Engine,
    ctx: &SessionContext,
    name: &str,
) -> Result<bool, SqlError> {
    let Some(_lock) = engine.lock_view(name).await else {
        return Ok(false);
    };
    let Some(view) = engine.view(name) else {
        return Ok(false);
    };
    let started = Instant::now();
    // On a shared catalog a transform view is refreshed by buckets too:
    // other nodes' writes cannot apply its function here.
    let kind = match view.spec.kind {
        ViewKind::Transform if engine.shares_catalog() => ViewKind::Aggregate,
        k => k,
    };
    match kind {
        ViewKind::Transform => {
            if view.progress.backfill.is_none() {
                let newest = engine.time_range(&view.base_table).map(|(_, max)| max);
                engine.update_view_status(name, |s| s.materialized_ns = newest);
            }
            Ok(false)
        }
        ViewKind::Full => {
            let interval = Duration::from_secs(view.spec.refresh_interval_secs.max(1));
            let due = engine
                .view_status(name)
                .and_then(|s| s.last_refresh_ns)
                .is_none_or(|t| engine.now_ns() - t >= interval.as_nanos() as i64);
            if due {
                full_refresh(engine, ctx, &view).await?;
            }
            Ok(false)
        }
        ViewKind::Aggregate => {
            let w = view.spec.bucket_ns;
            if let Some((from, to)) = view.progress.backfill {
                return backfill_step(engine, ctx, &view, from, to)
                    .await
                    .map(|_| true);
            }
            let base_newest = engine.time_range(&view.base_table).map(|(_, max)| max);
            let pending = engine.invalidated(name, MAX_BUCKETS_PER_STEP).await?;
            if pending.is_empty() {
                engine.update_view_status(name, |s| s.materialized_ns = base_newest);
                return Ok(false);
            }
            // Buckets the base no longer shows (past its retention) keep
            // what the view has.
            let cutoff = engine.retention_cutoff(&view.base_table, engine.now_ns());
            let mut ranges: Vec<(i64, i64)> = vec![];
            // Oldest first; one bucket may come from several nodes.
            for b in pending.iter().map(|i| i.bucket_ns) {
                if cutoff.is_some_and(|c| b + w <= c) {
                    continue;
                }
                match ranges.last_mut() {
                    Some((_, hi)) if *hi >= b => *hi = (*hi).max(b + w),
                    _ => ranges.push((b, b + w)),
                }
            }
            let rows = if ranges.is_empty() {
                vec![]
            } else {
                compute(ctx, &view.query, Some(&ranges)).await?
            };
            let n = pending.len();
            engine
                .commit_refresh(
                    name,
                    BucketRefresh {
                        done: pending,
                        ranges,
                        rows,
                        progress: None,
                    },
                )
                .await?;
            // Every write applied before the base's newest time was read
            // had invalidated its buckets, and this step took them all.
            let took_all = n < MAX_BUCKETS_PER_STEP;
            record(
                engine,
                name,
                started,
                took_all.then_some(base_newest).flatten(),
            );
            tracing::debug!(view = %name, buckets = n, "refreshed");
            // More than one step's worth was waiting: go on at once.
            Ok(n == MAX_BUCKETS_PER_STEP)
        }
    }
}

/// One backfill window of an aggregating view: about one base partition.
pub(super) async fn backfill_step(
    engine: &Engine,
    ctx: &SessionContext,
    view: &ViewDef,
    from: i64,
    to: i64,
) -> Result<(), SqlError> {
    let started = Instant::now();
    let (w, o) = (view.spec.bucket_ns, view.spec.origin_ns);
    let (from, to, done_to) = if from == i64::MIN {
        // First step: the base's range now; what comes later is
        // invalidated by its writes.
        match engine.time_range(&view.base_table) {
            None => {
                engine
                    .set_view_progress(&view.name, ViewProgress::default())
                    .await?;
                return Ok(());
            }
            Some((min, max)) => {
                // Rows past the base's retention are not visible: the
                // backfill starts where the visible rows do, not at the
                // oldest row still on disk.
                let cutoff = engine.retention_cutoff(&view.base_table, engine.now_ns());
                let min = cutoff.map_or(min, |c| min.max(c));
                if min > max {
                    engine
                        .set_view_progress(&view.name, ViewProgress::default())
                        .await?;
                    return Ok(());
                }
                let from = bucket_start(min, w, o);
                (from, bucket_start(max, w, o) + w, from)
            }
        }
    } else {
        (from, to, view.progress.backfilled_to_ns.max(from))
    };
    // Over the time between rows at once: the backfill takes as many steps
    // as there are windows with rows, however far apart they are.
    let done_to = match engine.next_time_from(&view.base_table, done_to) {
        Some(next) if next < to => done_to.max(bucket_start(next, w, o)),
        _ => to,
    };
    let base_partition = engine
        .table(&view.base_table)
        .map(|d| d.options.partition_duration.as_nanos() as i64)
        .unwrap_or(3_600_000_000_000);
    let step = (base_partition.max(w) + w - 1) / w * w;
    let hi = done_to.saturating_add(step).min(to);
    let rows = compute(ctx, &view.query, Some(&[(done_to, hi)])).await?;
    let progress = if hi >= to {
        ViewProgress::default()
    } else {
        ViewProgress {
            backfill: Some((from, to)),
            backfilled_to_ns: hi,
        }
    };
    let finished = progress.backfill.is_none();
    engine
        .commit_refresh(
            &view.name,
            BucketRefresh {
                done: vec![],
                ranges: vec![(done_to, hi)],
                rows,
                progress: Some(progress),
            },
        )
        .await?;
    record(engine, &view.name, started, None);
    if finished {
        info!(view = %view.name, "backfill done");
    }
    Ok(())
}

/// The background refresher, until `shutdown`. On a shared catalog every
/// node publishes the buckets its writes invalidated at each round, and
/// the node holding the views lease (a compact node) runs the refreshes.
pub async fn run_refresher(
    engine: Engine,
    ctx: Arc<SessionContext>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    // Taken over this long after its holder stops renewing it.
    let lease = (interval * 3).max(Duration::from_secs(10));
    let mut busy = false;
    // A failing view is retried after 1 s, then 2 s, ... up to a minute.
    let mut backoff: std::collections::HashMap<String, (Instant, Duration)> = Default::default();
    loop {
        if !busy {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        busy = false;
        if engine.shares_catalog() {
            if let Err(e) = engine.publish_invalidations().await {
                warn!(error = %e, "cannot publish this node's view invalidations; will retry");
            }
            if !engine.hold_lease(sextant_storage::VIEWS_LEASE, lease).await {
                continue;
            }
        }
        // Creation order: a view over a view comes after the view it reads.
        let mut views = engine.views();
        views.sort_by_key(|v| v.table_id);
        for v in views {
            if shutdown.is_cancelled() {
                return;
            }
            // Renewed before each view: a long round keeps it.
            if engine.shares_catalog()
                && !engine.hold_lease(sextant_storage::VIEWS_LEASE, lease).await
            {
                break;
            }
            if backoff
                .get(&v.name)
                .is_some_and(|(at, _)| Instant::now() < *at)
            {
                continue;
            }
            let work = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = step(&engine, &ctx, &v.name) => r,
            };
            match work {
                Ok(w) => {
                    busy |= w;
                    backoff.remove(&v.name);
                }
                Err(e) => {
                    let wait = backoff
                        .get(&v.name)
                        .map_or(Duration::from_secs(1), |(_, d)| {
                            (*d * 2).min(Duration::from_secs(60))
                        });
                    warn!(view = %v.name, error = %e, retry_in = ?wait, "materialized view refresh failed");
                    backoff.insert(v.name.clone(), (Instant::now() + wait, wait));
                    engine.update_view_status(&v.name, |s| s.last_error = Some(e.to_string()));
                }
            }
        }
    }
}
