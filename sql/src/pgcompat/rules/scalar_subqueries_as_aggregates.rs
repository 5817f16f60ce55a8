//! A catalog query's correlated scalar subqueries as aggregates, which
//! DataFusion decorrelates: `(SELECT relname FROM pg_class c2 WHERE c2.oid
//! = c.oid)` becomes `(SELECT max(relname) FROM ...)`. A catalog lookup by
//! key returns at most one row, where this answers as Postgres does; a
//! fallback for catalog queries only (`parse.rs`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, SelectItem, SetExpr, Statement, VisitMut, VisitorMut};

use super::{call, is_call};

/// Wraps the value of every scalar subquery that is not already an
/// aggregate in `max(...)`; true if any was. Only for catalog queries:
/// for a subquery returning several rows Postgres fails where this picks
/// one.
pub(crate) fn scalar_subqueries_as_aggregates(stmt: &mut Statement) -> bool {
    const AGGREGATES: &[&str] = &[
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "first_value",
        "last_value",
        "json_agg",
    ];
    struct Wrap(bool);
    impl VisitorMut for Wrap {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Subquery(q) = e else {
                return ControlFlow::Continue(());
            };
            let SetExpr::Select(select) = q.body.as_mut() else {
                return ControlFlow::Continue(());
            };
            let grouped = !matches!(
                &select.group_by,
                datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(g, _) if g.is_empty()
            );
            if grouped || select.projection.len() != 1 {
                return ControlFlow::Continue(());
            }
            let (SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }) =
                &mut select.projection[0]
            else {
                return ControlFlow::Continue(());
            };
            let aggregated = matches!(value, Expr::Function(f)
                if f.over.is_none() && AGGREGATES.iter().any(|a| is_call(f, a)));
            if !aggregated {
                *value = call("max", vec![value.clone()]);
                self.0 = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut w = Wrap(false);
    let _ = VisitMut::visit(stmt, &mut w);
    w.0
}
