//! Correlated scalar subqueries whose correlation is not an equality, as
//! in `(SELECT count(*) FROM t1 AS x WHERE x.b < t1.b)`, which PostgreSQL
//! answers and DataFusion cannot decorrelate (it only pulls equalities
//! over an aggregate, and fails at execution with "Physical plan does not
//! support logical expression ScalarSubquery").
//!
//! [`CorrelatedByDomain`] is an optimizer rule that runs just before
//! DataFusion's `scalar_subquery_to_join`. It rewrites such a subquery
//! so that its correlation is an equality on the outer values it reads,
//! which DataFusion then turns into a join. The subquery is computed
//! once per distinct combination of those outer values (the *domain*):
//!
//! ```text
//! (SELECT agg FROM inner WHERE p(inner, outer.c))
//!   =>
//! (SELECT agg FROM (SELECT DISTINCT outer.c AS k FROM <outer input>) d
//!                  LEFT JOIN (SELECT inner.*, true AS m FROM inner) i ON p(i, d.k)
//!  GROUP BY d.k   -- each aggregate with FILTER (WHERE m IS NOT NULL)
//!  HAVING d.k IS NOT DISTINCT FROM outer.c)
//! ```
//!
//! Every outer row finds exactly its own domain row (NULL included, by
//! `IS NOT DISTINCT FROM`), and a domain row that no inner row matches
//! still forms a group whose aggregates saw no rows, so `count(*)` is 0
//! and `sum` NULL, as over the empty set the original subquery would read.
//!
//! Only the shape the rewrite is sure of is taken: an aggregate without
//! GROUP BY (and an optional projection over it) over one filter that
//! holds every outer reference, in a query whose outer rows are the same
//! each time they are read (the domain reads them a second time: no
//! `random()`, no LIMIT). Anything else is left to DataFusion, whose error
//! then names the query it cannot plan. (Two scans of one table take their
//! snapshots a moment apart: a row acknowledged in that moment can be in
//! one and not the other, and its subquery then answers NULL.)

use std::sync::Arc;

use datafusion::arrow::datatypes::FieldRef;
use datafusion::common::alias::AliasGenerator;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, JoinType, LogicalPlan, LogicalPlanBuilder, Operator, Subquery, binary_expr, lit,
};
use datafusion::optimizer::decorrelate::PullUpCorrelatedExpr;
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct CorrelatedByDomain;

impl OptimizerRule for CorrelatedByDomain {
    fn name(&self) -> &str {
        "sextant_correlated_by_domain"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let outer = match &plan {
            LogicalPlan::Projection(p) => Arc::clone(&p.input),
            LogicalPlan::Filter(f) => Arc::clone(&f.input),
            _ => return Ok(Transformed::no(plan)),
        };
        let aliases = Arc::clone(config.alias_generator());
        plan.map_expressions(|e| {
            e.transform_down(|e| match e {
                Expr::ScalarSubquery(sq) if !sq.outer_ref_columns.is_empty() => {
                    match by_domain(&sq, &outer, &aliases)? {
                        Some(rewritten) => Ok(Transformed::new(
                            Expr::ScalarSubquery(rewritten),
                            true,
                            TreeNodeRecursion::Jump,
                        )),
                        None => Ok(Transformed::new(
                            Expr::ScalarSubquery(sq),
                            false,
                            TreeNodeRecursion::Jump,
                        )),
                    }
                }
                e => Ok(Transformed::no(e)),
            })
        })
    }
}

/// Whether `e` is a subquery expression (scalar, EXISTS, IN, ANY/ALL).
pub(crate) fn is_subquery(e: &Expr) -> bool {
    matches!(
        e,
        Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) | Expr::SetComparison(_)
    )
}

/// The subquery with its correlation made an equality on its domain, or
/// `None` when DataFusion decorrelates it as it is or it has another shape.
fn by_domain(
    sq: &Subquery,
    outer: &Arc<LogicalPlan>,
    aliases: &AliasGenerator,
) -> Result<Option<Subquery>> {
    let mut pull_up = PullUpCorrelatedExpr::new().with_need_handle_count_bug(true);
    sq.subquery.as_ref().clone().rewrite(&mut pull_up)?;
    if pull_up.can_pull_up {
        return Ok(None);
    }
    let (projection, aggregate) = match sq.subquery.as_ref() {
        LogicalPlan::Projection(p) => match p.input.as_ref() {
            LogicalPlan::Aggregate(a) => (Some(p), a),
            _ => return Ok(None),
        },
        LogicalPlan::Aggregate(a) => (None, a),
        _ => return Ok(None),
    };
    let LogicalPlan::Filter(filter) = aggregate.input.as_ref() else {
        return Ok(None);
    };
    if !aggregate.group_expr.is_empty()
        || aggregate.aggr_expr.iter().any(Expr::contains_outer)
        || projection.is_some_and(|p| p.expr.iter().any(Expr::contains_outer))
        // Outer references anywhere below the filter (a derived table in
        // the subquery's FROM): not this shape.
        || !filter.input.all_out_ref_exprs().is_empty()
        || filter.predicate.exists(|e| Ok(is_subquery(e)))?
        || !same_every_time(outer)?
    {
        return Ok(None);
    }
    // The outer values the subquery reads, each once.
    let mut outer_refs: Vec<(FieldRef, Column)> = vec![];
    filter.predicate.apply(|e| {
        if let Expr::OuterReferenceColumn(field, column) = e
            && !outer_refs.iter().any(|(_, c)| c == column)
        {
            outer_refs.push((Arc::clone(field), column.clone()));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if outer_refs.is_empty() || !outer_refs.iter().all(|(_, c)| outer.schema().has_column(c)) {
        // They belong to a query further out.
        return Ok(None);
    }
    // Every outer reference the subquery declares is one of the filter's.
    let declared_elsewhere = sq.outer_ref_columns.iter().any(|e| match e {
        Expr::OuterReferenceColumn(_, c) => !outer_refs.iter().any(|(_, o)| o == c),
        _ => true,
    });
    if declared_elsewhere {
        return Ok(None);
    }

    let domain_name = aliases.next("__domain");
    let key_names: Vec<String> = (0..outer_refs.len()).map(|i| format!("__key{i}")).collect();
    let key = |i: usize| Expr::Column(Column::new(Some(domain_name.as_str()), &key_names[i]));
    let domain = LogicalPlanBuilder::from(outer.as_ref().clone())
        .project(
            outer_refs
                .iter()
                .zip(&key_names)
                .map(|((_, c), k)| Expr::Column(c.clone()).alias(k)),
        )?
        .distinct()?
        .alias(domain_name.as_str())?
        .build()?;
    // The inner rows, marked so that a domain row no inner row matched
    // (whose inner columns the LEFT JOIN makes NULL) counts no row.
    let marker = aliases.next("__matched");
    let inner = LogicalPlanBuilder::from(filter.input.as_ref().clone())
        .project(
            filter
                .input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .chain([lit(true).alias(&marker)]),
        )?
        .build()?;
    let on = filter
        .predicate
        .clone()
        .transform(|e| match e {
            Expr::OuterReferenceColumn(_, c) => {
                let i = outer_refs.iter().position(|(_, o)| *o == c).unwrap_or(0);
                Ok(Transformed::yes(key(i)))
            }
            e => Ok(Transformed::no(e)),
        })?
        .data;
    let matched = Expr::Column(Column::new_unqualified(&marker)).is_not_null();
    let mut aggr_expr = vec![];
    for e in &aggregate.aggr_expr {
        let Some(e) = over_matches_only(e, &matched) else {
            return Ok(None);
        };
        aggr_expr.push(e);
    }
    let correlation = conjunction(outer_refs.iter().enumerate().map(|(i, (field, c))| {
        binary_expr(
            key(i),
            Operator::IsNotDistinctFrom,
            Expr::OuterReferenceColumn(Arc::clone(field), c.clone()),
        )
    }))
    .unwrap_or_else(|| lit(true));
    let output: Vec<Expr> = match projection {
        Some(p) => p.expr.clone(),
        None => aggregate
            .schema
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect(),
    };
    let plan = LogicalPlanBuilder::from(domain)
        .join_on(inner, JoinType::Left, [on])?
        .aggregate((0..key_names.len()).map(key), aggr_expr)?
        .filter(correlation)?
        .project(output)?
        .build()?;
    Ok(Some(Subquery {
        subquery: Arc::new(plan),
        outer_ref_columns: outer_refs
            .into_iter()
            .map(|(field, c)| Expr::OuterReferenceColumn(field, c))
            .collect(),
        spans: sq.spans.clone(),
    }))
}

/// Whether `outer`, which the rewrite reads twice (once for the domain),
/// gives the same rows both times: no volatile function (`random()`), no
/// LIMIT (which rows it keeps is not fixed without a total order), and no
/// outer references of its own (a subquery further out).
fn same_every_time(outer: &LogicalPlan) -> Result<bool> {
    if !outer.all_out_ref_exprs().is_empty() {
        return Ok(false);
    }
    let varies = outer.exists(|p| {
        Ok(matches!(p, LogicalPlan::Limit(_))
            || matches!(p, LogicalPlan::TableScan(scan) if scan.fetch.is_some())
            || p.expressions().iter().any(Expr::is_volatile))
    })?;
    Ok(!varies)
}

/// An aggregate of the subquery that only sees the rows an inner row
/// matched, under the name it had.
fn over_matches_only(e: &Expr, matched: &Expr) -> Option<Expr> {
    let name = e.schema_name().to_string();
    let function = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(f) = function else {
        return None;
    };
    let mut f: AggregateFunction = f.clone();
    f.params.filter = Some(Box::new(match f.params.filter.take() {
        Some(filter) => filter.and(matched.clone()),
        None => matched.clone(),
    }));
    Some(Expr::AggregateFunction(f).alias(name))
}
