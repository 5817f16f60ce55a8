//! `x IN (subquery)` outside a filter, where DataFusion plans subqueries
//! only in filters: in a select list or ORDER BY, `SELECT a IN (SELECT b
//! FROM u) FROM t` becomes `SELECT sextant_in_list((SELECT array_agg(v)
//! FROM (SELECT b FROM u) AS s(v)), a) FROM t`. `sextant_in_list` is
//! DataFusion's `array_has` except that a list that is one value for the
//! whole batch (the subquery's) is hashed once: `array_has` copied it once
//! per row, rows times its length in memory, which no limit counts (pgfuzz
//! saw a server pass 3 GiB on a 100,000-row table).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, Query, SelectItem, SetExpr, Statement, VisitMut, VisitorMut,
};

use super::array_subquery::array_of_subquery;
use super::call;

/// `x IN (subquery)` in a select list or ORDER BY, where DataFusion plans
/// subqueries only in filters: `sextant_in_list((SELECT array_agg(v) FROM
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
                let has = call(IN_LIST, vec![array, expr.as_ref().clone()]);
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

const IN_LIST: &str = "sextant_in_list";

/// Registers `sextant_in_list`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(InList {
        array_has: datafusion::functions_nested::array_has::array_has_udf(),
    }));
}

/// `array_has(list, x)`, with a list that is one value for the batch
/// looked up in a hash set of its values.
#[derive(Debug, PartialEq, Eq, Hash)]
struct InList {
    array_has: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for InList {
    fn name(&self) -> &str {
        IN_LIST
    }
    fn signature(&self) -> &Signature {
        self.array_has.signature()
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.array_has.return_type(args)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Scalar(list), ColumnarValue::Array(needles)] = args.args.as_slice()
            && let Some(values) = list_values(list)
            && values.data_type() == needles.data_type()
        {
            return Ok(ColumnarValue::Array(Arc::new(contains(&values, needles)?)));
        }
        self.array_has.invoke_with_args(args)
    }
}

/// The values of a one-row list scalar, or `None` when it is not one (or
/// NULL, which `array_has` answers).
fn list_values(list: &ScalarValue) -> Option<ArrayRef> {
    let array: ArrayRef = match list {
        ScalarValue::List(a) => a.clone(),
        ScalarValue::LargeList(a) => a.clone(),
        _ => return None,
    };
    if array.len() != 1 || array.is_null(0) {
        return None;
    }
    match array.data_type() {
        DataType::List(_) => Some(array.as_list::<i32>().value(0)),
        DataType::LargeList(_) => Some(array.as_list::<i64>().value(0)),
        _ => None,
    }
}

/// For each needle, whether `values` holds it (NULL for a NULL needle; a
/// NULL value matches nothing), as `array_has` answers.
fn contains(values: &ArrayRef, needles: &ArrayRef) -> Result<BooleanArray> {
    let converter = RowConverter::new(vec![SortField::new(values.data_type().clone())])?;
    let hay = converter.convert_columns(std::slice::from_ref(values))?;
    let set: HashSet<_> = (0..values.len())
        .filter(|&i| values.is_valid(i))
        .map(|i| hay.row(i))
        .collect();
    let rows = converter.convert_columns(std::slice::from_ref(needles))?;
    Ok((0..needles.len())
        .map(|i| needles.is_valid(i).then(|| set.contains(&rows.row(i))))
        .collect())
}
