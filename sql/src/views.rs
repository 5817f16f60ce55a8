//! Materialized views: what `CREATE MATERIALIZED VIEW` accepts, and how each
//! kind is kept up to date (storage keeps the invalid buckets and swaps
//! rows; this module plans and runs the queries).
//!
//! CREATE plans the query against its one base table and classifies it:
//! - `GROUP BY date_bin(<fixed interval>, time), ...` → *aggregate*: a bucket
//!   is re-aggregated from the base rows whenever a write touches it, so
//!   every aggregate (count DISTINCT, percentiles, first/last by time)
//!   is exact;
//! - projection and filter only → *transform*: compiled to physical
//!   expressions and applied to every write of the base as it is ingested;
//! - anything else is refused with the reason, or with `WITH (refresh =
//!   'full')` recomputed every `refresh_interval`.
//!
//! The view's table gets the query's output columns. An aggregating view
//! backfills the base's existing rows one base partition at a time from the
//! background refresher; a transform view backfills from the snapshot of
//! its base taken when its function was attached. [`run_refresher`] walks
//! the views in creation order (a view over a view after the view it reads)
//! every interval, and keeps going without sleeping while there is work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Volatility, lit};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CreateTableOptions, ObjectType, SqlOption, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use sextant_catalog::{
    NewTable, NewView, TIME_COLUMN, TableOptions, ViewDef, ViewKind, ViewProgress, ViewSpec,
};
use sextant_storage::{BucketRefresh, Engine, SextantTable, TransformFn, bucket_start};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::SqlError;
use crate::ast::{
    Done, option_text, parse_interval, parse_retention, refresh_target, set_option, table_name,
};

/// Buckets one refresh step re-aggregates at most.
const MAX_BUCKETS_PER_STEP: usize = 512;

/// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] v [WITH (...)] AS SELECT ...`.
pub(crate) async fn create(
    sql: &str,
    engine: &Engine,
    ctx: &SessionContext,
) -> Result<Done, SqlError> {
    let done = Done {
        tag: "CREATE MATERIALIZED VIEW",
        rows: None,
        batch: None,
    };
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| SqlError::syntax(e.to_string()))?;
    let Some(Statement::CreateView(cv)) = stmts.pop() else {
        return Err(SqlError::syntax(
            "expected CREATE MATERIALIZED VIEW name [WITH (...)] AS SELECT ...",
        ));
    };
    if !cv.materialized {
        return Err(SqlError::unsupported(
            "only materialized views are supported: CREATE MATERIALIZED VIEW",
        ));
    }
    if !cv.columns.is_empty() {
        return Err(SqlError::unsupported(
            "a column list is not supported: name the columns with AS in the query",
        ));
    }
    let name = table_name(&cv.name)?;
    if engine.table(&name).is_some() {
        if cv.if_not_exists {
            return Ok(done);
        }
        return Err(SqlError::new(
            "42P07",
            format!("relation \"{name}\" already exists"),
        ));
    }
    let opts = view_options(&cv.options)?;
    let query = cv.query.to_string();
    let plan = plan_query(ctx, &query).await?;
    let a = analyze(&plan, engine, opts.full)?;
    let base = engine
        .table(&a.base)
        .ok_or_else(|| SqlError::new("42P01", format!("table \"{}\" does not exist", a.base)))?;
    dry_run(ctx, &query, &base).await?;
    let transform = match a.spec.kind {
        ViewKind::Transform => Some(compile_transform(ctx, &plan, &a.schema)?),
        _ => None,
    };
    let options = TableOptions {
        retention: opts.retention,
        partition_duration: opts
            .partition
            .unwrap_or_else(|| default_partition(&a.spec, &base.options)),
    };
    let progress = ViewProgress {
        // A full view's first refresh counts as its backfill.
        backfill: Some((i64::MIN, i64::MAX)),
        backfilled_to_ns: i64::MIN,
    };
    let result = engine
        .create_view(
            NewTable {
                name: name.clone(),
                schema: a.schema.clone(),
                time_column: TIME_COLUMN.to_string(),
                options,
            },
            NewView {
                base_table_id: base.id,
                query,
                spec: a.spec.clone(),
                progress,
            },
        )
        .await;
    match result {
        Ok(_) => {}
        Err(sextant_storage::StorageError::Catalog(
            sextant_catalog::CatalogError::TableExists(_),
        )) if cv.if_not_exists => return Ok(done),
        Err(e) => return Err(e.into()),
    }
    if let Some(retention) = opts.source_retention {
        let mut o = base.options.clone();
        o.retention = retention;
        engine.set_options(&base.name, o).await?;
    }
    if let Some(f) = transform {
        start_transform(engine, &name, f).await?;
    }
    Ok(done)
}

/// `DROP MATERIALIZED VIEW [IF EXISTS] v [, ...]`.
pub(crate) async fn drop(sql: &str, engine: &Engine) -> Result<Done, SqlError> {
    let Some(Statement::Drop {
        object_type: ObjectType::MaterializedView,
        if_exists,
        names,
        ..
    }) = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| SqlError::syntax(e.to_string()))?
        .pop()
    else {
        return Err(SqlError::syntax("expected DROP MATERIALIZED VIEW name"));
    };
    for n in &names {
        let name = table_name(n)?;
        if engine.view(&name).is_none() {
            if engine.table(&name).is_some() {
                return Err(not_a_view(&name));
            }
            if if_exists {
                continue;
            }
            return Err(SqlError::new(
                "42P01",
                format!("materialized view \"{name}\" does not exist"),
            ));
        }
        if let Some(over) = engine.views().into_iter().find(|v| v.base_table == name) {
            return Err(SqlError::new(
                "2BP01",
                format!(
                    "cannot drop materialized view \"{name}\" because materialized view \"{}\" depends on it: drop that first",
                    over.name
                ),
            ));
        }
        // A refresh in flight finishes first.
        let _lock = engine.lock_view(&name).await;
        engine.drop_view(&name).await?;
    }
    Ok(Done {
        tag: "DROP MATERIALIZED VIEW",
        rows: None,
        batch: None,
    })
}

/// `REFRESH MATERIALIZED VIEW v`: recomputes the whole view from its base
/// and swaps it in at once. A transform view is already exact (its rows are
/// derived as the base is written), so there is nothing to redo.
pub(crate) async fn refresh(
    sql: &str,
    engine: &Engine,
    ctx: &SessionContext,
) -> Result<Done, SqlError> {
    let name = refresh_target(sql)?;
    let Some(view) = engine.view(&name) else {
        if engine.table(&name).is_some() {
            return Err(not_a_view(&name));
        }
        return Err(SqlError::new(
            "42P01",
            format!("materialized view \"{name}\" does not exist"),
        ));
    };
    if view.spec.kind != ViewKind::Transform {
        let _lock = engine.lock_view(&name).await;
        full_refresh(engine, ctx, &view).await?;
    }
    Ok(Done {
        tag: "REFRESH MATERIALIZED VIEW",
        rows: None,
        batch: None,
    })
}

fn not_a_view(name: &str) -> SqlError {
    SqlError::new("42809", format!("\"{name}\" is not a materialized view"))
}

/// Options of `CREATE MATERIALIZED VIEW ... WITH (...)`.
#[derive(Debug, Default)]
struct ViewOptions {
    retention: Option<Duration>,
    partition: Option<Duration>,
    source_retention: Option<Option<Duration>>,
    full: Option<Duration>,
}

fn view_options(opts: &CreateTableOptions) -> Result<ViewOptions, SqlError> {
    let list: &[SqlOption] = match opts {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(l) => l,
        _ => {
            return Err(SqlError::syntax(
                "view options go in WITH (retention = '90 days', ...)",
            ));
        }
    };
    let known = "known: retention, partition, source_retention, refresh, refresh_interval";
    let mut out = ViewOptions::default();
    let mut refresh: Option<String> = None;
    let mut interval: Option<Duration> = None;
    for opt in list {
        let SqlOption::KeyValue { key, value } = opt else {
            return Err(SqlError::syntax(format!("unsupported view option {opt}")));
        };
        let text = option_text(value)?;
        match key.value.to_lowercase().as_str() {
            "retention" => out.retention = parse_retention(&text)?,
            "partition" => {
                let mut o = TableOptions::default();
                set_option(&mut o, "partition", &text)?;
                out.partition = Some(o.partition_duration);
            }
            "source_retention" => out.source_retention = Some(parse_retention(&text)?),
            "refresh" => refresh = Some(text.to_lowercase()),
            "refresh_interval" => interval = Some(parse_interval(&text)?),
            other => {
                return Err(SqlError::invalid_parameter(format!(
                    "unknown materialized view option \"{other}\" ({known})"
                )));
            }
        }
    }
    match refresh.as_deref() {
        None | Some("incremental") => {
            if interval.is_some() {
                return Err(SqlError::invalid_parameter(
                    "refresh_interval applies to WITH (refresh = 'full') views only",
                ));
            }
        }
        Some("full") => out.full = Some(interval.unwrap_or(Duration::from_secs(60))),
        Some(other) => {
            return Err(SqlError::invalid_parameter(format!(
                "refresh must be 'incremental' or 'full', got '{other}'"
            )));
        }
    }
    Ok(out)
}

/// A view's partition unless it says: about a thousand buckets each (at
/// least an hour, at most a week), so a 1-minute view of a month is 120
/// files rather than 720, while late data still rewrites a bounded file.
/// A transform view keeps its base's.
fn default_partition(spec: &ViewSpec, base: &TableOptions) -> Duration {
    if spec.kind == ViewKind::Transform {
        return base.partition_duration;
    }
    let target = Duration::from_nanos(spec.bucket_ns.max(1) as u64).saturating_mul(1000);
    [6 * 3600, 86400, 7 * 86400]
        .into_iter()
        .map(Duration::from_secs)
        .rfind(|p| *p <= target)
        .unwrap_or(Duration::from_secs(3600))
}

/// What CREATE found out about a query.
#[derive(Debug)]
struct Analysis {
    base: String,
    spec: ViewSpec,
    schema: SchemaRef,
}

/// Plans a view's query as a client's query is planned.
async fn plan_query(ctx: &SessionContext, query: &str) -> Result<LogicalPlan, SqlError> {
    crate::plan_select(ctx, query, "a materialized view's query").await
}

fn cannot(reason: impl std::fmt::Display) -> SqlError {
    SqlError::unsupported(format!(
        "this query cannot be maintained incrementally: {reason}; \
         WITH (refresh = 'full', refresh_interval = '5 minutes') recomputes it periodically instead"
    ))
}

/// Classifies a view's query (see the module header) and finds its output
/// schema. `full`: the user asked for periodic full refreshes.
fn analyze(
    plan: &LogicalPlan,
    engine: &Engine,
    full: Option<Duration>,
) -> Result<Analysis, SqlError> {
    let mut scans = vec![];
    let mut problem: Option<String> = None;
    let mut aggregate = None;
    let mut distinct = false;
    plan.apply_with_subqueries(|p| {
        match p {
            LogicalPlan::TableScan(s) => scans.push(s.table_name.clone()),
            LogicalPlan::Join(_) => problem = Some("it joins tables".into()),
            LogicalPlan::Window(_) => problem = Some("it uses window functions".into()),
            LogicalPlan::Limit(_) => problem = Some("it has LIMIT".into()),
            LogicalPlan::Sort(_) => {
                problem = Some("it has ORDER BY (order when you query the view)".into())
            }
            LogicalPlan::Union(_) => problem = Some("it has UNION".into()),
            LogicalPlan::Subquery(_) => problem = Some("it has a subquery".into()),
            LogicalPlan::Distinct(_) => distinct = true,
            LogicalPlan::Aggregate(a) => {
                if aggregate.is_some() {
                    problem = Some("it aggregates more than once".into());
                }
                aggregate = Some(a.clone());
            }
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                problem = Some("it reads no table".into())
            }
            _ => {}
        }
        p.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    problem = Some(format!(
                        "{}() gives a different answer each time it runs",
                        f.func.name()
                    ));
                }
                if matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ) {
                    problem = Some("it has a subquery".into());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(TreeNodeRecursion::Continue)
    })?;
    let base = match scans.as_slice() {
        [one]
            if one
                .schema()
                .is_some_and(|s| s != sextant_catalog::SCHEMA_NAME) =>
        {
            return Err(SqlError::invalid_definition(format!(
                "a materialized view reads a table of schema public, not {one}"
            )));
        }
        [one] => one.table().to_string(),
        [] => {
            return Err(SqlError::invalid_definition(
                "a materialized view must read a table",
            ));
        }
        _ => return Err(cannot("it reads more than one table")),
    };
    if engine.table(&base).is_none() {
        return Err(SqlError::invalid_definition(format!(
            "a materialized view reads a table of schema public; \"{base}\" is not one"
        )));
    }
    if let Some(v) = engine.view(&base)
        && v.spec.kind != ViewKind::Aggregate
        && aggregate.is_none()
    {
        return Err(cannot(format!(
            "it transforms \"{base}\", which is itself a transform or full view: select from \"{}\" instead",
            v.base_table
        )));
    }
    if let Some(v) = engine.view(&base)
        && v.spec.kind == ViewKind::Full
    {
        return Err(SqlError::unsupported(format!(
            "\"{base}\" is recomputed in full, so views over it cannot follow it; \
             build this view on \"{}\"",
            v.base_table
        )));
    }
    let schema = output_schema(plan)?;
    let spec = match (full, problem, aggregate) {
        (Some(interval), _, _) => ViewSpec {
            kind: ViewKind::Full,
            bucket_ns: 0,
            origin_ns: 0,
            refresh_interval_secs: interval.as_secs().max(1),
        },
        (None, Some(p), _) => return Err(cannot(p)),
        (None, None, Some(agg)) => {
            let (bucket_ns, origin_ns) = time_bucket(plan, &agg)?;
            ViewSpec {
                kind: ViewKind::Aggregate,
                bucket_ns,
                origin_ns,
                refresh_interval_secs: 0,
            }
        }
        (None, None, None) if distinct => {
            return Err(cannot(
                "SELECT DISTINCT without GROUP BY date_bin(..., time): group by a time bucket",
            ));
        }
        (None, None, None) => {
            if engine
                .view(&base)
                .is_some_and(|v| v.spec.kind == ViewKind::Aggregate)
            {
                return Err(cannot(format!(
                    "\"{base}\" is an aggregating view, whose buckets are replaced as they are \
                     refreshed; a view over it must aggregate by a time bucket too"
                )));
            }
            transform_time(plan)?;
            ViewSpec {
                kind: ViewKind::Transform,
                bucket_ns: 0,
                origin_ns: 0,
                refresh_interval_secs: 0,
            }
        }
    };
    Ok(Analysis { base, spec, schema })
}

/// The view's columns: the query's, `time` as a non-null nanosecond UTC
/// timestamp; names must be unique.
fn output_schema(plan: &LogicalPlan) -> Result<SchemaRef, SqlError> {
    let mut fields = vec![];
    let mut seen = std::collections::HashSet::new();
    let mut has_time = false;
    for f in plan.schema().fields() {
        if !seen.insert(f.name().clone()) {
            return Err(SqlError::invalid_definition(format!(
                "column \"{}\" appears twice in the view: give each output column its own name with AS",
                f.name()
            )));
        }
        if f.name() == TIME_COLUMN {
            if !matches!(f.data_type(), DataType::Timestamp(_, _)) {
                return Err(SqlError::invalid_definition(format!(
                    "the view's \"time\" column must be a timestamp, not {}",
                    f.data_type()
                )));
            }
            has_time = true;
            fields.push(Field::new(
                TIME_COLUMN,
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ));
        } else {
            fields.push(f.as_ref().clone().with_nullable(true));
        }
    }
    if !has_time {
        return Err(SqlError::invalid_definition(
            "a materialized view needs a \"time\" column: select time (or date_bin(INTERVAL '1 minute', time) AS time)",
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The width and origin of the `date_bin(<interval>, time [, origin])` the
/// query groups by and outputs as `time`.
fn time_bucket(
    plan: &LogicalPlan,
    agg: &datafusion::logical_expr::Aggregate,
) -> Result<(i64, i64), SqlError> {
    let time_source = output_source(plan, TIME_COLUMN);
    for g in &agg.group_expr {
        let Expr::ScalarFunction(f) = g.clone().unalias() else {
            continue;
        };
        if f.func.name() != "date_bin" {
            continue;
        }
        let is_output = time_source
            .as_deref()
            .is_some_and(|s| s == g.schema_name().to_string());
        if !is_output {
            continue;
        }
        let on_time = matches!(f.args.get(1), Some(Expr::Column(c)) if c.name == TIME_COLUMN);
        if !on_time {
            return Err(cannot("date_bin must bin the base table's time column"));
        }
        let width = match f.args.first() {
            Some(Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _)) if v.months == 0 => {
                v.days as i64 * 86_400_000_000_000 + v.nanoseconds
            }
            Some(Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _)) => {
                v.days as i64 * 86_400_000_000_000 + v.milliseconds as i64 * 1_000_000
            }
            Some(Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(_)), _)) => {
                return Err(cannot("date_bin with months has buckets of varying width"));
            }
            _ => {
                return Err(cannot(
                    "the date_bin interval must be a literal such as INTERVAL '1 minute'",
                ));
            }
        };
        if width <= 0 {
            return Err(SqlError::invalid_parameter(
                "the date_bin interval must be positive",
            ));
        }
        let origin = match f.args.get(2) {
            None => 0,
            Some(e) => constant_ns(e)
                .ok_or_else(|| cannot("the date_bin origin must be a constant timestamp"))?,
        };
        return Ok((width, origin));
    }
    Err(cannot(
        "it does not GROUP BY date_bin(INTERVAL '...', time) with that bucket selected AS time",
    ))
}

/// The expression the top projection outputs as column `name`.
fn output_expr<'a>(plan: &'a LogicalPlan, name: &str) -> Option<&'a Expr> {
    let mut p = plan;
    loop {
        match p {
            LogicalPlan::Projection(proj) => {
                let i = proj.schema.fields().iter().position(|f| f.name() == name)?;
                return proj.expr.get(i).map(|e| match e {
                    Expr::Alias(a) => a.expr.as_ref(),
                    other => other,
                });
            }
            LogicalPlan::SubqueryAlias(a) => p = a.input.as_ref(),
            _ => return None,
        }
    }
}

/// The name of the input column the top projection outputs as `name`.
fn output_source(plan: &LogicalPlan, name: &str) -> Option<String> {
    match output_expr(plan, name)? {
        Expr::Column(c) => Some(c.name.clone()),
        other => Some(other.schema_name().to_string()),
    }
}

fn constant_ns(e: &Expr) -> Option<i64> {
    let v = match e {
        Expr::Literal(v, _) => v.clone(),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => v.cast_to(c.field.data_type()).ok()?,
            _ => return None,
        },
        _ => return None,
    };
    match v
        .cast_to(&DataType::Timestamp(TimeUnit::Nanosecond, None))
        .ok()?
    {
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns),
        _ => None,
    }
}

/// A transform view outputs the base's `time` unchanged.
fn transform_time(plan: &LogicalPlan) -> Result<(), SqlError> {
    if !matches!(plan, LogicalPlan::Projection(_)) {
        return Err(cannot(
            "it is neither an aggregation by time bucket nor a projection",
        ));
    }
    match output_expr(plan, TIME_COLUMN) {
        Some(Expr::Column(c)) if c.name == TIME_COLUMN => Ok(()),
        _ => Err(SqlError::invalid_definition(
            "a view without GROUP BY must select the base table's time column unchanged as \"time\"",
        )),
    }
}

/// A transform view's query as a function of one base batch: the filter,
/// then the projection, evaluated as physical expressions.
fn compile_transform(
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

/// Runs the query once over a base table of one row (all NULL but `time`),
/// so what plans but cannot run (an aggregate that does not take a type)
/// fails at CREATE rather than at every refresh.
async fn dry_run(
    ctx: &SessionContext,
    query: &str,
    base: &sextant_catalog::TableDef,
) -> Result<(), SqlError> {
    use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    let columns = base
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
        base.schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let row = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| SqlError::internal(e.to_string()))?;
    let public = MemorySchemaProvider::new();
    datafusion::catalog::SchemaProvider::register_table(
        &public,
        base.name.clone(),
        Arc::new(MemTable::try_new(schema, vec![vec![row]])?),
    )?;
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
async fn start_transform(engine: &Engine, name: &str, f: TransformFn) -> Result<(), SqlError> {
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

async fn backfill_transform(
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
    let ctx = SessionContext::new();
    ctx.register_object_store(
        sextant_storage::object_store_url().as_ref(),
        engine.object_store().clone(),
    );
    let table = Arc::new(SextantTable::from_snapshot(engine.clone(), snapshot));
    let df = ctx.read_table(table)?;
    let mut stream = df.execute_stream().await?;
    let mut done = 0u64;
    let mut last_log = Instant::now();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        done += batch.num_rows() as u64;
        let out = f(&batch).map_err(|e| SqlError::new("22000", e))?;
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

/// Runs the view's query, restricted to base rows in `ranges` (whole
/// buckets) if given.
async fn compute(
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
async fn full_refresh(
    engine: &Engine,
    ctx: &SessionContext,
    view: &ViewDef,
) -> Result<(), SqlError> {
    let started = Instant::now();
    let base_newest = engine.time_range(&view.base_table).map(|(_, max)| max);
    let done = engine.pending_buckets(&view.name, usize::MAX);
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

fn record(engine: &Engine, view: &str, started: Instant, materialized: Option<i64>) {
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
async fn step(engine: &Engine, ctx: &SessionContext, name: &str) -> Result<bool, SqlError> {
    let Some(_lock) = engine.lock_view(name).await else {
        return Ok(false);
    };
    let Some(view) = engine.view(name) else {
        return Ok(false);
    };
    let started = Instant::now();
    match view.spec.kind {
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
            let pending = engine.pending_buckets(name, MAX_BUCKETS_PER_STEP);
            if pending.is_empty() {
                engine.update_view_status(name, |s| s.materialized_ns = base_newest);
                return Ok(false);
            }
            // Buckets the base no longer shows (past its retention) keep
            // what the view has.
            let cutoff = engine.retention_cutoff(&view.base_table, engine.now_ns());
            let mut ranges: Vec<(i64, i64)> = vec![];
            for (b, _) in &pending {
                if cutoff.is_some_and(|c| b + w <= c) {
                    continue;
                }
                match ranges.last_mut() {
                    Some((_, hi)) if *hi == *b => *hi = b + w,
                    _ => ranges.push((*b, b + w)),
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
async fn backfill_step(
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
                let from = bucket_start(min, w, o);
                (from, bucket_start(max, w, o) + w, from)
            }
        }
    } else {
        (from, to, view.progress.backfilled_to_ns.max(from))
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

/// The background refresher, until `shutdown`.
pub async fn run_refresher(
    engine: Engine,
    ctx: Arc<SessionContext>,
    interval: Duration,
    shutdown: CancellationToken,
) {
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
        // Creation order: a view over a view comes after the view it reads.
        let mut views = engine.views();
        views.sort_by_key(|v| v.table_id);
        for v in views {
            if shutdown.is_cancelled() {
                return;
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
