//! `x IN (subquery)` outside a filter, where DataFusion plans subqueries
//! only in filters: in a select list or ORDER BY, `SELECT a IN (SELECT b
//! FROM u) FROM t` becomes `SELECT array_has((SELECT array_agg(v) FROM
//! (SELECT b FROM u) AS s(v)), a) FROM t`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Query, SelectItem, SetExpr, Statement, VisitMut, VisitorMut,
};

use super::array_subquery::array_of_subquery;
use super::call;

/// `x IN (subquery)` in a select list or ORDER BY, where DataFusion plans
/// subqueries only in filters: `array_has((SELECT array_agg(v) FROM
/// (subquery) AS s(v)), x)` (`NOT` for `NOT IN`). Only the NULL cases differ
/// from Postgres (no match with a NULL in the subquery is false, not NULL).
pub(crate) fn in_subqueries_outside_filters(stmt: &mut Statement) {
    struct InToArray;
    impl VisitorMut for InToArray {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if let Expr::InSubquery {
                expr,
                subquery,
                negated,
            } = e
                && let Some(array) = array_of_subquery(subquery)
            {
                let has = call("array_has", vec![array, expr.as_ref().clone()]);
                *e = if *negated {
                    Expr::UnaryOp {
                        op: datafusion::sql::sqlparser::ast::UnaryOperator::Not,
                        expr: Box::new(has),
                    }
                } else {
                    has
                };
            }
            ControlFlow::Continue(())
        }
    }
    struct Queries;
    impl VisitorMut for Queries {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = q.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } =
                        item
                    {
                        let _ = VisitMut::visit(e, &mut InToArray);
                    }
                }
            }
            if let Some(order_by) = &mut q.order_by
                && let datafusion::sql::sqlparser::ast::OrderByKind::Expressions(exprs) =
                    &mut order_by.kind
            {
                for o in exprs {
                    let _ = VisitMut::visit(&mut o.expr, &mut InToArray);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Queries);
}
