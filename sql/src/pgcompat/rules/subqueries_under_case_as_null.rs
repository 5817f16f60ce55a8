//! The last fallback of a catalog query DataFusion cannot plan: scalar
//! subqueries under CASE in its select list answered with NULL, as
//! datafusion-pg-catalog answers select-list subqueries it cannot plan
//! (SQLAlchemy's column reflection): `SELECT CASE WHEN c THEN (SELECT ...
//! WHERE x = $1) END` becomes `SELECT CASE WHEN c THEN sextant_null($1)
//! END`, which keeps the parameters clients bind by position. Never for a
//! user's query (`parse.rs`).

use std::ops::ControlFlow;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, Query, SelectItem, SetExpr, Statement, Visit, VisitMut, Visitor, VisitorMut,
};

use super::call;

/// Registers `sextant_null`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        NullFunction::new(),
    ));
}

/// The function this rule uses for a NULL that keeps its arguments'
/// parameters in the statement ([`register`]).
const NULL_FUNCTION: &str = "sextant_null";

/// `sextant_null(...)`: NULL, whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullFunction {
    signature: datafusion::logical_expr::Signature,
}

impl NullFunction {
    fn new() -> Self {
        use datafusion::logical_expr::{Signature, TypeSignature, Volatility};
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
                Volatility::Immutable,
            ),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for NullFunction {
    fn name(&self) -> &str {
        NULL_FUNCTION
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _args: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::DataType> {
        Ok(datafusion::arrow::datatypes::DataType::Null)
    }

    fn invoke_with_args(
        &self,
        _args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        Ok(datafusion::logical_expr::ColumnarValue::Scalar(
            datafusion::common::ScalarValue::Null,
        ))
    }
}

/// Replaces scalar subqueries inside CASE expressions of select lists with
/// NULL; true if there were any. Catalog queries only (see
/// [`crate::pgcompat::plan_query`]).
pub(crate) fn subqueries_under_case_as_null(stmt: &mut Statement) -> bool {
    struct Null(bool);
    impl VisitorMut for Null {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if matches!(e, Expr::Subquery(_)) {
                // Its parameters stay in the statement (as arguments of a
                // function that is always NULL): clients bind `$1`..`$n`
                // by position.
                let mut params = vec![];
                let _ = Visit::visit(&*e, &mut Placeholders(&mut params));
                *e = call(NULL_FUNCTION, params);
                self.0 = true;
            }
            ControlFlow::Continue(())
        }
    }
    struct Placeholders<'a>(&'a mut Vec<Expr>);
    impl Visitor for Placeholders<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = e
                && matches!(
                    v.value,
                    datafusion::sql::sqlparser::ast::Value::Placeholder(_)
                )
            {
                self.0.push(e.clone());
            }
            ControlFlow::Continue(())
        }
    }
    struct Cases(bool);
    impl VisitorMut for Cases {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = q.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(e @ Expr::Case { .. })
                    | SelectItem::ExprWithAlias {
                        expr: e @ Expr::Case { .. },
                        ..
                    } = item
                    {
                        let mut n = Null(false);
                        let _ = VisitMut::visit(e, &mut n);
                        self.0 |= n.0;
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut c = Cases(false);
    let _ = VisitMut::visit(stmt, &mut c);
    c.0
}
