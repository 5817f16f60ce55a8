//! The connection in a statement: `current_user`, `session_user`, `user`
//! and `current_role` (the login user), `pg_backend_pid()` and
//! `current_setting('name')` answered as literals, from the session the
//! statement is parsed for. `SELECT current_user, current_setting('search_path')`
//! becomes `SELECT 'alice', 'public'` (with their names, see
//! `output_names.rs`).
//!
//! `current_setting` has two entry points over one lookup ([`lookup`]):
//! - this rewrite, for a literal name: it sees the connection's own `SET`
//!   values, which only the statement's [`Session`] knows (the DataFusion
//!   session context is one for every connection);
//! - the function [`current_setting`] (registered by `functions.rs`), for a
//!   name computed while the query runs (`current_setting(name) FROM ...`):
//!   a function of the shared context sees no connection, so it answers
//!   the server's defaults, as [`Session::server`] does.
//!
//! A literal name the session does not know is left to the function, so
//! that its error (42704) or NULL (`missing_ok`) comes when the query runs,
//! as for a computed name.

use sextant_sqlstate::SqlState;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, plan_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value, VisitMut, VisitorMut,
};

use super::{is_call, no_args, string_literal};
use crate::SqlError;
use crate::session::Session;

/// Replaces the session functions of `stmt` by the session's values.
pub(crate) fn session_functions(stmt: &mut Statement, session: &Session<'_>) {
    let _ = VisitMut::visit(stmt, &mut SessionFunctions { session });
}

struct SessionFunctions<'a, 'b> {
    session: &'a Session<'b>,
}

impl VisitorMut for SessionFunctions<'_, '_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        // `user`, `current_user`, `session_user` (which datafusion-pg-catalog
        // turns `current_user` into): the connection's user.
        if ["user", "current_user", "session_user", "current_role"]
            .iter()
            .any(|n| is_call(f, n))
            && no_args(f)
        {
            *expr = string_literal(self.session.user.to_string());
        } else if is_call(f, "pg_backend_pid")
            && no_args(f)
            && let Some(pid) = self.session.pid
        {
            *expr = Expr::Value(Value::Number(pid.to_string(), false).with_empty_span());
        } else if is_call(f, "current_setting")
            && let FunctionArguments::List(l) = &f.args
            && let [
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))),
                rest @ ..,
            ] = l.args.as_slice()
            && rest.len() <= 1
            && let Value::SingleQuotedString(name) = &v.value
            && let Ok(Some(value)) = lookup(name, true, self.session.setting)
        {
            // A literal name: this session's value (a name it does not know
            // is left to the function, see the header).
            *expr = string_literal(value);
        }
        ControlFlow::Continue(())
    }
}

/// `current_setting(name, missing_ok)` where `setting` gives the values:
/// the value, NULL for an unknown name if `missing_ok`, else Postgres'
/// error.
fn lookup(
    name: &str,
    missing_ok: bool,
    setting: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<Option<String>, SqlError> {
    match setting(name) {
        Some(v) => Ok(Some(v)),
        None if missing_ok => Ok(None),
        None => Err(SqlError::new(
            SqlState::UNDEFINED_OBJECT,
            format!("unrecognized configuration parameter \"{name}\""),
        )),
    }
}

/// The function `current_setting(name [, missing_ok])`: the server's
/// default of a setting, for a name the rewrite could not answer (see the
/// header; a connection's own `SET` values also answer `SHOW`).
pub(crate) fn current_setting(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
    let missing_ok = match args.get(1) {
        Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(b)))) => *b,
        _ => false,
    };
    let defaults = Session::server();
    let lookup = |name: Option<&str>| -> datafusion::error::Result<Option<String>> {
        let Some(name) = name else { return Ok(None) };
        lookup(name, missing_ok, defaults.setting)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    };
    match &args[0] {
        ColumnarValue::Scalar(s) => {
            let name = s.cast_to(&DataType::Utf8)?;
            let ScalarValue::Utf8(name) = name else {
                return plan_err!("current_setting takes a setting name");
            };
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(lookup(
                name.as_deref(),
            )?)))
        }
        ColumnarValue::Array(a) => {
            let names = cast(a, &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            let values = names
                .iter()
                .map(lookup)
                .collect::<datafusion::error::Result<StringArray>>()?;
            Ok(ColumnarValue::Array(Arc::new(values)))
        }
    }
}
