//! `DELETE FROM t [WHERE condition]`: the condition is planned against the
//! table (unknown columns and type errors are the planner's, with their
//! SQLSTATEs), made constant (`now()` becomes the statement's time) and
//! written out as SQL; storage then holds the table still while the rows it
//! matches are counted (the command tag) and the buckets of aggregating
//! views they fall in are found, and commits the delete
//! ([`sextant_storage::Engine::delete`]): hidden from every query at once,
//! gone from the files when compaction rewrites them.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::sqlparser::ast::{FromTable, Statement, TableFactor};
use futures::StreamExt;
use sextant_catalog::ViewKind;
use sextant_sqlstate::SqlState;
use sextant_storage::{DeletePlan, Engine, Snapshot, StorageError, bucket_start};

use crate::ast::{Done, parse_one, table_name};
use crate::error::SqlError;

/// A parsed `DELETE`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteStatement {
    /// The table.
    pub table: String,
    /// The `WHERE` condition as written; `None` deletes every row.
    pub condition: Option<String>,
    /// Values of its parameters (`$1`, ...), bound by the front end
    /// (pgwire's extended protocol) with the types
    /// [`DeleteStatement::parameter_types`] gives.
    pub params: Vec<ScalarValue>,
    /// The types of its parameters, once a front end asked for them to
    /// describe the statement (Flight SQL); see
    /// [`DeleteStatement::parameter_types`].
    pub param_types: Vec<Option<DataType>>,
}

impl DeleteStatement {
    /// The types the condition gives its parameters (`$1` first); `None`
    /// where it does not say.
    pub async fn parameter_types(
        &self,
        ctx: &SessionContext,
    ) -> Result<Vec<Option<DataType>>, SqlError> {
        let Some(condition) = &self.condition else {
            return Ok(vec![]);
        };
        let plan = condition_plan(ctx, &self.table, condition).await?;
        let types = plan.get_parameter_types()?;
        let n = types.len();
        Ok((1..=n)
            .map(|i| types.get(&format!("${i}")).cloned().flatten())
            .collect())
    }
}

async fn condition_plan(
    ctx: &SessionContext,
    table: &str,
    condition: &str,
) -> Result<LogicalPlan, SqlError> {
    Ok(ctx
        .state()
        .create_logical_plan(&format!("SELECT * FROM \"{table}\" WHERE {condition}"))
        .await?)
}

const USAGE: &str = "usage: DELETE FROM table [WHERE condition]";

/// Parses `DELETE FROM t [WHERE ...]` (one table; no USING, RETURNING,
/// ORDER BY or LIMIT).
pub(crate) fn parse(sql: &str) -> Result<DeleteStatement, SqlError> {
    let Statement::Delete(d) = parse_one(sql)? else {
        return Err(SqlError::syntax(USAGE));
    };
    let from = match &d.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [one] = from.as_slice() else {
        return Err(SqlError::unsupported(format!(
            "DELETE from one table at a time ({USAGE})"
        )));
    };
    let unsupported = |what: &str| {
        Err(SqlError::unsupported(format!(
            "DELETE with {what} is not supported ({USAGE})"
        )))
    };
    if !one.joins.is_empty() || d.using.is_some() {
        return unsupported("USING or a join");
    }
    if d.returning.is_some() {
        return unsupported("RETURNING");
    }
    if !d.order_by.is_empty() || d.limit.is_some() {
        return unsupported("ORDER BY or LIMIT");
    }
    let TableFactor::Table { name, alias, .. } = &one.relation else {
        return Err(SqlError::syntax(USAGE));
    };
    if alias.is_some() {
        return unsupported("a table alias");
    }
    Ok(DeleteStatement {
        table: table_name(name)?,
        condition: d.selection.as_ref().map(|e| e.to_string()),
        params: vec![],
        param_types: vec![],
    })
}

/// Runs a parsed `DELETE`.
pub(crate) async fn execute(
    d: &DeleteStatement,
    engine: &Engine,
    ctx: &SessionContext,
) -> Result<Done, SqlError> {
    let table = &d.table;
    if engine.plain_view(table).is_some() {
        return Err(SqlError::new(
            SqlState::WRONG_OBJECT_TYPE,
            format!(
                "cannot delete from view \"{table}\": it is a saved query, delete from its tables"
            ),
        ));
    }
    let Some(def) = engine.table(table) else {
        return Err(SqlError::new(
            SqlState::UNDEFINED_TABLE,
            format!("table \"{table}\" does not exist"),
        ));
    };
    let predicate = match &d.condition {
        None => "true".to_string(),
        Some(condition) => constant_condition(ctx, table, condition, &d.params).await?,
    };
    // What storage will evaluate, checked now: a function it does not
    // know is refused here rather than at every query.
    let schema = def.schema.clone();
    let expr = sextant_storage::predicate_expr(&predicate, &schema).map_err(|e| {
        SqlError::new(
            SqlState::FEATURE_NOT_SUPPORTED,
            format!("this DELETE condition cannot be kept (only built-in functions can): {e}"),
        )
    })?;
    // A keyed table's rows go by key: a condition on other columns holds
    // for a key's current row, not for its older ones, so it is turned
    // into the keys whose current row it matches (below).
    let by_keys: Option<Vec<String>> = def.options.key.as_ref().and_then(|key| {
        expr.column_refs()
            .iter()
            .any(|c| !key.columns.contains(&c.name))
            .then(|| key.columns.clone())
    });
    let views: Vec<(String, i64, i64)> = engine
        .views()
        .into_iter()
        .filter(|v| v.base_table_id == def.id && v.spec.kind == ViewKind::Aggregate)
        .map(|v| (v.name, v.spec.bucket_ns, v.spec.origin_ns))
        .collect();
    let time_column = def.time_column.clone();
    let keyed = def.options.key.is_some();
    let rows = engine
        .delete(table, |snapshot: Snapshot| {
            let engine = engine.clone();
            let ctx = ctx.clone();
            async move {
                let Some(key) = by_keys else {
                    // A keyed table on a cluster: its rows counted as a
                    // query reads them, one per key, from every node.
                    let everywhere = keyed && engine.shares_catalog();
                    let frame = if everywhere {
                        ctx.table(table.as_str()).await?
                    } else {
                        crate::context::snapshot_frame(&engine, snapshot)?
                    };
                    let (rows, buckets) = matching(frame, expr, &time_column, &views).await?;
                    return Ok::<_, SqlError>(DeletePlan {
                        predicate,
                        rows,
                        buckets,
                        counts_every_node: everywhere,
                    });
                };
                let schema = snapshot.def.schema.clone();
                let (predicate, rows, buckets) =
                    matching_keys(&ctx, table, &schema, &predicate, &key, &time_column, &views)
                        .await?;
                Ok(DeletePlan {
                    predicate,
                    rows,
                    buckets,
                    counts_every_node: true,
                })
            }
        })
        .await?;
    Ok(Done {
        tag: "DELETE",
        rows: Some(rows as usize),
        batch: None,
    })
}

/// The condition planned against the table and made constant, as SQL over
/// its (unqualified) columns.
async fn constant_condition(
    ctx: &SessionContext,
    table: &str,
    condition: &str,
    params: &[ScalarValue],
) -> Result<String, SqlError> {
    let mut plan = condition_plan(ctx, table, condition).await?;
    if !params.is_empty() {
        plan = plan.with_param_values(params.to_vec())?;
    }
    let mut found: Option<(Expr, Arc<DFSchema>)> = None;
    plan.apply(|p| {
        if let LogicalPlan::Filter(f) = p {
            found = Some((f.predicate.clone(), f.input.schema().clone()));
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    let Some((predicate, schema)) = found else {
        return Err(SqlError::syntax(USAGE));
    };
    let mut subquery = false;
    predicate.apply(|e| {
        if matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ) {
            subquery = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    if subquery {
        return Err(SqlError::unsupported(
            "a DELETE condition cannot use a subquery: list the values, or delete by time",
        ));
    }
    let info = SimplifyContext::builder()
        .with_schema(schema)
        .with_current_time()
        .build();
    let simplified = ExprSimplifier::new(info).simplify(predicate)?;
    if simplified.is_volatile() {
        return Err(SqlError::unsupported(
            "a DELETE condition cannot use a function whose value changes at each call (random())",
        ));
    }
    let unqualified = simplified
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
                e => Transformed::no(e),
            })
        })?
        .data;
    let sql = datafusion::sql::unparser::expr_to_sql(&unqualified)
        .map_err(|e| SqlError::unsupported(format!("this DELETE condition cannot be kept: {e}")))?;
    Ok(sql.to_string())
}

/// The most keys a `DELETE` of a keyed table by other columns removes (its
/// condition becomes a list of them, kept until compaction).
const MAX_KEYS: usize = 10_000;

/// A keyed table's `DELETE` by a condition on other columns: the keys
/// whose current row the constant `predicate` matches, read as any query
/// reads the table (on a cluster, every ingest node's buffer too), as a
/// condition on the `key` columns (`host = 'a' AND time IN (...) OR ...`,
/// a NULL tag as `IS NULL`); with the rows it matches and the buckets of
/// `views` they fall in.
async fn matching_keys(
    ctx: &SessionContext,
    table: &str,
    schema: &arrow::datatypes::SchemaRef,
    predicate: &str,
    key: &[String],
    time_column: &str,
    views: &[(String, i64, i64)],
) -> Result<(String, u64, Vec<(String, i64)>), SqlError> {
    let columns: Vec<String> = key.iter().map(|c| format!("\"{c}\"")).collect();
    let batches = ctx
        .sql(&format!(
            "SELECT {} FROM \"{table}\" WHERE {predicate} LIMIT {}",
            columns.join(", "),
            MAX_KEYS + 1
        ))
        .await?
        .collect()
        .await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows > MAX_KEYS {
        return Err(SqlError::new(
            SqlState::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "this DELETE matches more than {MAX_KEYS} rows of a keyed table by columns outside \
                 its key ({}); delete by key columns and time, or in smaller time ranges",
                key.join(", ")
            ),
        ));
    }
    // Keys by their columns other than time, each with its times.
    let grouping: Vec<&String> = key.iter().filter(|c| *c != time_column).collect();
    let has_time = grouping.len() < key.len();
    let mut groups: Vec<(Vec<ScalarValue>, Vec<ScalarValue>)> = vec![];
    let mut index: std::collections::HashMap<Vec<ScalarValue>, usize> = Default::default();
    let mut times_ns: Vec<i64> = vec![];
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let value = |name: &str| -> Result<ScalarValue, SqlError> {
                let column = batch.column_by_name(name).ok_or_else(|| {
                    SqlError::from(StorageError::InvalidData(format!("no key column {name}")))
                })?;
                Ok(ScalarValue::try_from_array(column, row)?)
            };
            let values = grouping
                .iter()
                .map(|c| value(c))
                .collect::<Result<Vec<_>, _>>()?;
            let at = *index.entry(values.clone()).or_insert_with(|| {
                groups.push((values, vec![]));
                groups.len() - 1
            });
            if has_time {
                let time = value(time_column)?;
                if let Ok(ScalarValue::TimestampNanosecond(Some(t), _)) =
                    time.cast_to(&DataType::Timestamp(TimeUnit::Nanosecond, None))
                {
                    times_ns.push(t);
                }
                groups[at].1.push(time);
            }
        }
    }
    let terms: Vec<Expr> = groups
        .into_iter()
        .map(|(values, times)| {
            let mut terms: Vec<Expr> = grouping
                .iter()
                .zip(values)
                .map(|(c, v)| {
                    let column = Expr::Column(Column::new_unqualified(c.as_str()));
                    if v.is_null() {
                        column.is_null()
                    } else {
                        column.eq(Expr::Literal(v, None))
                    }
                })
                .collect();
            if has_time {
                let list = times.into_iter().map(|t| Expr::Literal(t, None)).collect();
                terms.push(Expr::Column(Column::new_unqualified(time_column)).in_list(list, false));
            }
            terms
                .into_iter()
                .reduce(Expr::and)
                .unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(true)), None))
        })
        .collect();
    let condition = any_of(terms);
    let sql = datafusion::sql::unparser::expr_to_sql(&condition)
        .map_err(|e| SqlError::unsupported(format!("this DELETE condition cannot be kept: {e}")))?
        .to_string();
    // What storage will evaluate, read back as it will be.
    sextant_storage::predicate_expr(&sql, schema)?;
    let buckets = views
        .iter()
        .flat_map(|(name, w, o)| {
            times_ns
                .iter()
                .map(|t| bucket_start(*t, *w, *o))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(move |b| (name.clone(), b))
        })
        .collect();
    Ok((sql, rows as u64, buckets))
}

/// `a OR b OR ...` as a balanced tree (a chain of thousands would be
/// too deep to parse back); `false` for none.
fn any_of(mut terms: Vec<Expr>) -> Expr {
    match terms.len() {
        0 => Expr::Literal(ScalarValue::Boolean(Some(false)), None),
        1 => terms.remove(0),
        n => {
            let right = terms.split_off(n / 2);
            any_of(terms).or(any_of(right))
        }
    }
}

/// The rows of `table` that `predicate` matches, and the buckets of
/// `views` (name, width, origin) their times fall in.
async fn matching(
    table: DataFrame,
    predicate: Expr,
    time_column: &str,
    views: &[(String, i64, i64)],
) -> Result<(u64, Vec<(String, i64)>), SqlError> {
    let df = table.filter(predicate.is_true())?;
    // No view follows the table (a reference table has no time to read):
    // the count is enough.
    if views.is_empty() {
        return Ok((df.count().await? as u64, vec![]));
    }
    let df = df.select_columns(&[time_column])?;
    let mut stream = df.execute_stream().await?;
    let mut rows = 0u64;
    let mut buckets: Vec<BTreeSet<i64>> = vec![BTreeSet::new(); views.len()];
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        if views.is_empty() {
            continue;
        }
        let times = arrow::compute::cast(
            batch.column(0),
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
        )
        .map_err(|e| SqlError::from(StorageError::from(e)))?;
        let times = times.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        for (set, (_, w, o)) in buckets.iter_mut().zip(views) {
            for t in times.iter().flatten() {
                set.insert(bucket_start(t, *w, *o));
            }
        }
    }
    let buckets = views
        .iter()
        .zip(buckets)
        .flat_map(|((name, _, _), set)| set.into_iter().map(move |b| (name.clone(), b)))
        .collect();
    Ok((rows, buckets))
}
