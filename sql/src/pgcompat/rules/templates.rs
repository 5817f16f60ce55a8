//! `to_timestamp(text, template)` and `to_date(text, template)` read
//! PostgreSQL's template patterns (`'YYYY-MM-DD HH24:MI'`): a literal
//! template is written as the chrono format DataFusion's functions read
//! (`to_char.rs`'s [`chrono_format`]); a pattern that cannot be read back
//! is refused (0A000) rather than read as chrono's.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value, VisitMut, VisitorMut,
};

use super::is_call;
use crate::SqlError;
use crate::pgcompat::to_char::chrono_format;

/// Writes the templates of `stmt`'s `to_timestamp` and `to_date` calls as
/// chrono formats.
pub(crate) fn templates(stmt: &mut Statement) -> Result<(), SqlError> {
    let mut rule = Templates(None);
    let _ = VisitMut::visit(stmt, &mut rule);
    match rule.0 {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Templates(Option<SqlError>);

impl VisitorMut for Templates {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        if !(is_call(f, "to_timestamp") || is_call(f, "to_date")) {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::List(list) = &mut f.args else {
            return ControlFlow::Continue(());
        };
        if list.args.len() != 2 {
            return ControlFlow::Continue(());
        }
        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) = &mut list.args[1]
            && let Value::SingleQuotedString(template) = &mut v.value
        {
            match chrono_format(template) {
                Ok(format) => *template = format,
                Err(e) => {
                    self.0 = Some(SqlError::unsupported(e));
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    }
}
