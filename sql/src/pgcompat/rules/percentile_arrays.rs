//! `percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY x)` (and
//! `percentile_disc`) answers one array of percentiles, as in PostgreSQL;
//! DataFusion's take one fraction, so the call becomes an array of one call
//! per fraction: `make_array(percentile_cont(0.5) WITHIN GROUP (ORDER BY x),
//! percentile_cont(0.9) WITHIN GROUP (ORDER BY x))`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, VisitMut, VisitorMut,
};

use super::{call, is_call};

/// Rewrites the percentile calls of `stmt` that take an array of fractions.
pub(crate) fn percentile_arrays(stmt: &mut Statement) {
    let _ = VisitMut::visit(stmt, &mut PercentileArrays);
}

struct PercentileArrays;

impl VisitorMut for PercentileArrays {
    type Break = ();
    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        if !(is_call(f, "percentile_cont") || is_call(f, "percentile_disc"))
            || f.within_group.is_empty()
        {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        let [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Array(array)))] =
            list.args.as_slice()
        else {
            return ControlFlow::Continue(());
        };
        let calls: Vec<Expr> = array
            .elem
            .iter()
            .map(|fraction| {
                let mut one = f.clone();
                if let FunctionArguments::List(l) = &mut one.args {
                    l.args = vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(
                        fraction.clone(),
                    ))];
                }
                Expr::Function(one)
            })
            .collect();
        *expr = call("make_array", calls);
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn an_array_of_fractions_becomes_an_array_of_calls() {
        let sql = "SELECT percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY x) FROM t";
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        super::percentile_arrays(&mut stmt);
        assert_eq!(
            stmt.to_string(),
            "SELECT make_array(percentile_cont(0.5) WITHIN GROUP (ORDER BY x), \
             percentile_cont(0.9) WITHIN GROUP (ORDER BY x)) FROM t"
        );
    }
}
