//! Functions in FROM as Postgres reads them. A one-column set-returning
//! function names its column after the alias: `SELECT i FROM
//! generate_series(1, 3) AS i` reads `(SELECT value, value AS i FROM
//! generate_series(1, 3)) AS i`; a scalar function is one row holding its
//! value: `FROM string_to_array(x, ',') AS s` reads `FROM (SELECT
//! string_to_array(x, ',') AS s) AS s`. Which is which, the session's
//! table functions say.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArgumentList, FunctionArguments, Ident, SelectItem, Statement,
    TableAlias, TableFactor, VisitMut, VisitorMut,
};

use super::{derived, normalized};

/// Functions in FROM as Postgres reads them: a set-returning function of
/// one column (`generate_series(1, 3) AS i`) names its column after the
/// alias, and a scalar function (`string_to_array(x, ',') AS s`) is one row
/// holding its value, as `(SELECT f(...) AS s) AS s`.
pub(crate) fn functions_in_from(
    stmt: &mut Statement,
    table_functions: &HashMap<String, Arc<datafusion::catalog::TableFunction>>,
) {
    struct Rewriter<'a>(&'a HashMap<String, Arc<datafusion::catalog::TableFunction>>);
    impl VisitorMut for Rewriter<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias: Some(alias),
                args: Some(args),
                with_ordinality: false,
                ..
            } = t
            else {
                return ControlFlow::Continue(());
            };
            let Some(fname) = name.0.last().and_then(|p| p.as_ident()).map(normalized) else {
                return ControlFlow::Continue(());
            };
            if self.0.contains_key(&fname) {
                // DataFusion's one-column set-returning functions name their
                // column `value`; keep it, and add the alias's name for it.
                if alias.columns.is_empty() && matches!(fname.as_str(), "generate_series" | "range")
                {
                    let value = Ident::new("value");
                    let projection = vec![
                        SelectItem::UnnamedExpr(Expr::Identifier(value.clone())),
                        SelectItem::ExprWithAlias {
                            expr: Expr::Identifier(value),
                            alias: alias.name.clone(),
                        },
                    ];
                    let alias = alias.clone();
                    let mut inner = t.clone();
                    if let TableFactor::Table { alias, .. } = &mut inner {
                        *alias = None;
                    }
                    *t = derived(projection, vec![inner], alias);
                }
                return ControlFlow::Continue(());
            }
            let column = alias
                .columns
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_else(|| alias.name.clone());
            let value = Expr::Function(Function {
                name: name.clone(),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: args.args.clone(),
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
            let alias = TableAlias {
                columns: vec![],
                ..alias.clone()
            };
            let projection = vec![SelectItem::ExprWithAlias {
                expr: value,
                alias: column,
            }];
            *t = derived(projection, vec![], alias);
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Rewriter(table_functions));
}
