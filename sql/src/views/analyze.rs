//! What `CREATE MATERIALIZED VIEW` finds out about a query: it is planned
//! as a client's query is ([`plan_query`]), then [`analyze`] classifies it
//! as an aggregate over `date_bin` buckets or a transform (projection and
//! filter), or refuses it with the reason ([`cannot`]), and finds the
//! view's output schema. Used by the DDL and by the runtime when it plans
//! a view's query again.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::prelude::SessionContext;
use sextant_catalog::{TIME_COLUMN, ViewKind, ViewSpec};
use sextant_storage::Engine;

use crate::SqlError;

/// What CREATE found out about a query.
#[derive(Debug)]
pub(super) struct Analysis {
    pub(super) base: String,
    /// Every table the query reads (the base first): a full view may read
    /// several.
    pub(super) reads: Vec<String>,
    pub(super) spec: ViewSpec,
    pub(super) schema: SchemaRef,
}

/// Plans a view's query as a client's query is planned.
pub(super) async fn plan_query(ctx: &SessionContext, query: &str) -> Result<LogicalPlan, SqlError> {
    crate::plan_select(ctx, query, "a materialized view's query").await
}

pub(super) fn cannot(reason: impl std::fmt::Display) -> SqlError {
    SqlError::unsupported(format!(
        "this query cannot be maintained incrementally: {reason}; \
         WITH (refresh = 'full', refresh_interval = '5 minutes') recomputes it periodically instead"
    ))
}

/// Classifies a view's query (see the module header) and finds its output
/// schema. `full`: the user asked for periodic full refreshes.
pub(super) fn analyze(
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
        // A full view is recomputed from its query, whatever it reads; the
        // first table it reads is its base (dropping that table needs the
        // view dropped first).
        [first, rest @ ..] if full.is_some() => {
            if let Some(other) = std::iter::once(first).chain(rest).find(|t| {
                t.schema()
                    .is_some_and(|s| s != sextant_catalog::SCHEMA_NAME)
            }) {
                return Err(SqlError::invalid_definition(format!(
                    "a materialized view reads tables of schema public, not {other}"
                )));
            }
            first.table().to_string()
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
    let mut reads = vec![base.clone()];
    for t in &scans {
        if !reads.iter().any(|r| r == t.table()) {
            reads.push(t.table().to_string());
        }
    }
    Ok(Analysis {
        base,
        reads,
        spec,
        schema,
    })
}

/// The view's columns: the query's, `time` as a non-null nanosecond UTC
/// timestamp; names must be unique.
pub(super) fn output_schema(plan: &LogicalPlan) -> Result<SchemaRef, SqlError> {
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
            "a materialized view needs a \"time\" column: select time (or date_bin(INTERVAL '1 minute', time) AS time); \
             a full view (WITH (refresh = 'full')) may select the time of its refresh, now() AS time",
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The width and origin of the `date_bin(<interval>, time [, origin])` the
/// query groups by and outputs as `time`.
pub(super) fn time_bucket(
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
pub(super) fn output_expr<'a>(plan: &'a LogicalPlan, name: &str) -> Option<&'a Expr> {
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
pub(super) fn output_source(plan: &LogicalPlan, name: &str) -> Option<String> {
    match output_expr(plan, name)? {
        Expr::Column(c) => Some(c.name.clone()),
        other => Some(other.schema_name().to_string()),
    }
}

pub(super) fn constant_ns(e: &Expr) -> Option<i64> {
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
pub(super) fn transform_time(plan: &LogicalPlan) -> Result<(), SqlError> {
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
