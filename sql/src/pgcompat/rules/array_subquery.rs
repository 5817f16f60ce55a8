//! `ARRAY(subquery)`, which DataFusion does not plan: an array built from
//! an unnest becomes lambdas over the array, `ARRAY(SELECT 'toast.' || x
//! FROM unnest(r) x)` → `array_transform(r, x -> 'toast.' || x)`; any
//! other becomes an aggregate, `ARRAY(SELECT a FROM t)` →
//! `(SELECT array_agg(v) FROM (SELECT a FROM t) AS s(v))`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, LambdaFunction,
    LambdaFunctionParameter, LambdaSyntax, OneOrManyWithParens, Query, Select, SelectItem, SetExpr,
    Statement, TableAlias, TableAliasColumnDef, TableFactor, TableWithJoins, VisitMut, VisitorMut,
};

use super::{call, empty_query, empty_select, is_call};

/// Rewrites every `ARRAY(subquery)` of `stmt`.
pub(crate) fn array_subqueries(stmt: &mut Statement) {
    struct Arrays;
    impl VisitorMut for Arrays {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = expr
                && is_call(f, "array")
                && f.name.0.len() == 1
                && let FunctionArguments::Subquery(q) = &f.args
                && let Some(e) = array_of_subquery(q)
            {
                *expr = e;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Arrays);
}

/// `ARRAY(SELECT f(x) FROM unnest(a) x [WHERE p(x)])` becomes
/// `array_transform(array_filter(a, x -> p(x)), x -> f(x))`; any other
/// `ARRAY(subquery)` becomes `(SELECT array_agg(v) FROM (subquery) AS s(v))`.
pub(crate) fn array_of_subquery(q: &Query) -> Option<Expr> {
    if let Some(e) = array_over_unnest(q) {
        return Some(e);
    }
    let sub = Query {
        body: Box::new(SetExpr::Select(Box::new(Select {
            projection: vec![SelectItem::UnnamedExpr(call(
                "array_agg",
                vec![Expr::CompoundIdentifier(vec![
                    Ident::new("__sextant_array"),
                    Ident::new("v"),
                ])],
            ))],
            from: vec![TableWithJoins {
                relation: TableFactor::Derived {
                    lateral: false,
                    subquery: Box::new(q.clone()),
                    alias: Some(TableAlias {
                        explicit: true,
                        name: Ident::new("__sextant_array"),
                        columns: vec![TableAliasColumnDef::from_name("v")],
                        at: None,
                    }),
                    sample: None,
                },
                joins: vec![],
            }],
            ..empty_select()
        }))),
        ..empty_query()
    };
    Some(Expr::Subquery(Box::new(sub)))
}

fn array_over_unnest(q: &Query) -> Option<Expr> {
    if q.order_by.is_some() || q.limit_clause.is_some() || q.with.is_some() {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [SelectItem::UnnamedExpr(body) | SelectItem::ExprWithAlias { expr: body, .. }] =
        s.projection.as_slice()
    else {
        return None;
    };
    let [TableWithJoins { relation, joins }] = s.from.as_slice() else {
        return None;
    };
    if !joins.is_empty()
        || s.group_by != datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(vec![], vec![])
        || s.having.is_some()
        || s.distinct.is_some()
    {
        return None;
    }
    let (array, alias) = match relation {
        TableFactor::UNNEST {
            alias: Some(alias),
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } if array_exprs.len() == 1 => (array_exprs[0].clone(), alias),
        TableFactor::Table {
            name,
            alias: Some(alias),
            args: Some(args),
            ..
        } if name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| i.value.eq_ignore_ascii_case("unnest"))
            && args.args.len() == 1 =>
        {
            let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = &args.args[0] else {
                return None;
            };
            (e.clone(), alias)
        }
        _ => return None,
    };
    // The element is named by the alias's column list, else by the alias.
    let param = match alias.columns.as_slice() {
        [] => alias.name.clone(),
        [c] => c.name.clone(),
        _ => return None,
    };
    let lambda = |body: Expr| {
        Expr::Lambda(LambdaFunction {
            params: OneOrManyWithParens::One(LambdaFunctionParameter {
                name: param.clone(),
                data_type: None,
            }),
            body: Box::new(body),
            syntax: LambdaSyntax::Arrow,
        })
    };
    let mut array = array;
    if let Some(predicate) = &s.selection {
        array = call("array_filter", vec![array, lambda(predicate.clone())]);
    }
    Some(call("array_transform", vec![array, lambda(body.clone())]))
}
