//! `x IN (subquery)` outside a filter, where DataFusion plans subqueries
//! only in filters: in a select list or ORDER BY, `SELECT a IN (SELECT b
//! FROM u) FROM t` becomes `SELECT sextant_in_list((SELECT array_agg(v)
//! FROM (SELECT b FROM u) AS s(v)), a) FROM t`. `sextant_in_list` is
//! DataFusion's `array_has` except that a list that is one value for the
//! whole batch (the subquery's) is hashed once: `array_has` copied it once
//! per row, rows times its length in memory, which no limit counts (pgfuzz
//! saw a server pass 3 GiB on a 100,000-row table). The hash set is kept
//! for the next batches of the same list: built once per batch, a list of
//! millions took seconds a batch, and a statement timeout waited for
//! tokio's cooperative budget (128 batches) to end.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, Weak};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, GenericListArray};
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
        last: Mutex::default(),
    }));
}

/// `array_has(list, x)`, with a list that is one value for the batch
/// looked up in a hash set of its values.
#[derive(Debug)]
struct InList {
    array_has: Arc<ScalarUDF>,
    /// The sets of the lists seen last (one function serves every
    /// query), for the next batches of their queries.
    last: Mutex<Vec<Arc<ValueSet>>>,
}

impl PartialEq for InList {
    fn eq(&self, other: &Self) -> bool {
        self.array_has == other.array_has
    }
}

impl Eq for InList {}

impl std::hash::Hash for InList {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.array_has.hash(state);
    }
}

/// The non-NULL values of one list scalar, in the row format, hashed.
#[derive(Debug)]
struct ValueSet {
    /// The list it was built from: alive only while its plan is (a weak
    /// reference also keeps its address from being reused by another).
    list: Weak<dyn Array>,
    converter: RowConverter,
    values: HashSet<Box<[u8]>>,
}

impl ValueSet {
    fn of(list: &ArrayRef, values: &ArrayRef) -> Result<ValueSet> {
        let converter = RowConverter::new(vec![SortField::new(values.data_type().clone())])?;
        let rows = converter.convert_columns(std::slice::from_ref(values))?;
        let values = (0..values.len())
            .filter(|&i| values.is_valid(i))
            .map(|i| Box::from(rows.row(i).as_ref()))
            .collect();
        Ok(ValueSet {
            list: Arc::downgrade(list),
            converter,
            values,
        })
    }

    fn is_of(&self, list: &ArrayRef) -> bool {
        self.list.upgrade().is_some_and(|l| Arc::ptr_eq(&l, list))
    }

    /// For each needle, whether the list holds it (NULL for a NULL needle;
    /// a NULL value matches nothing), as `array_has` answers.
    fn contains(&self, needles: &ArrayRef) -> Result<BooleanArray> {
        let rows = self
            .converter
            .convert_columns(std::slice::from_ref(needles))?;
        Ok((0..needles.len())
            .map(|i| {
                needles
                    .is_valid(i)
                    .then(|| self.values.contains(rows.row(i).as_ref()))
            })
            .collect())
    }
}

/// How many lists' sets are kept at once: each running query's (or
/// partition's) next batch finds its own, however the queries interleave.
const KEPT_SETS: usize = 8;

impl InList {
    /// The set of `list` (whose values are `values`): a kept one if it is
    /// of this list, else built (without the lock: a long build holds up
    /// no other query's lookup) and kept in place of the oldest.
    fn set_of(&self, list: &ArrayRef, values: &ArrayRef) -> Result<Arc<ValueSet>> {
        {
            let mut kept = self.last.lock().unwrap_or_else(|e| e.into_inner());
            // Sets whose lists are gone (their plans are done) go first.
            kept.retain(|s| s.list.strong_count() > 0);
            if let Some(set) = kept.iter().find(|s| s.is_of(list)) {
                return Ok(set.clone());
            }
        }
        let set = Arc::new(ValueSet::of(list, values)?);
        let mut kept = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(other) = kept.iter().find(|s| s.is_of(list)) {
            // Another partition of the plan built it meanwhile.
            return Ok(other.clone());
        }
        if kept.len() >= KEPT_SETS {
            kept.remove(0);
        }
        kept.push(set.clone());
        Ok(set)
    }
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
            && let Some((list, values)) = list_values(list)
            && values.data_type() == needles.data_type()
        {
            let set = self.set_of(&list, &values)?;
            return Ok(ColumnarValue::Array(Arc::new(set.contains(needles)?)));
        }
        self.array_has.invoke_with_args(args)
    }
}

/// A one-row list scalar's array and its values, or `None` when it is not
/// one (or NULL, which `array_has` answers).
fn list_values(list: &ScalarValue) -> Option<(ArrayRef, ArrayRef)> {
    fn one<O: datafusion::arrow::array::OffsetSizeTrait>(
        a: &Arc<GenericListArray<O>>,
    ) -> Option<(ArrayRef, ArrayRef)> {
        (a.len() == 1 && !a.is_null(0)).then(|| (a.clone() as ArrayRef, a.value(0)))
    }
    match list {
        ScalarValue::List(a) => one(a),
        ScalarValue::LargeList(a) => one(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListArray};
    use datafusion::arrow::datatypes::Int64Type;

    fn list(values: &[Option<i64>]) -> ScalarValue {
        ScalarValue::List(Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(
            [Some(values.to_vec())],
        )))
    }

    fn in_list() -> InList {
        InList {
            array_has: datafusion::functions_nested::array_has::array_has_udf(),
            last: Mutex::default(),
        }
    }

    #[test]
    fn a_list_is_hashed_once_for_all_its_batches() {
        let udf = in_list();
        let first = list(&[Some(1), None, Some(3)]);
        let (l, v) = list_values(&first).expect("a one-row list");
        let set = udf.set_of(&l, &v).unwrap();
        // The next batch of the same plan gets the same set, not a new one.
        let (l2, v2) = list_values(&first.clone()).unwrap();
        assert!(Arc::ptr_eq(&set, &udf.set_of(&l2, &v2).unwrap()));
        let needles: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(3)]));
        assert_eq!(
            set.contains(&needles).unwrap(),
            BooleanArray::from(vec![Some(true), Some(false), None, Some(true)])
        );

        // An equal list of another plan is another list: a new set.
        let other = list(&[Some(1), None, Some(3)]);
        let (l3, v3) = list_values(&other).unwrap();
        let set3 = udf.set_of(&l3, &v3).unwrap();
        assert!(!Arc::ptr_eq(&set, &set3));

        // Two plans whose batches interleave each keep their set (one
        // function serves every query): the first list's set was not
        // replaced by the second's.
        let (l4, v4) = list_values(&first).unwrap();
        assert!(Arc::ptr_eq(&set, &udf.set_of(&l4, &v4).unwrap()));
        assert!(Arc::ptr_eq(&set3, &udf.set_of(&l3, &v3).unwrap()));

        // A set does not outlive its list as a match, and is let go at the
        // next lookup.
        drop((other, l3, v3));
        assert!(!set3.is_of(&l));
        udf.set_of(&l, &v).unwrap();
        let kept = udf.last.lock().unwrap();
        assert_eq!(kept.len(), 1);
        assert!(Arc::ptr_eq(&kept[0], &set));
    }
}
