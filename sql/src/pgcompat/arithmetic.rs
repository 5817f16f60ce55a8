//! Arithmetic as PostgreSQL answers it where DataFusion answers otherwise:
//!
//! - integer `+`, `-` and `*` whose result leaves the type raise 22003
//!   (`bigint out of range`); DataFusion wraps around;
//! - float `/` and `%` by zero raise 22012 (`division by zero`), and a
//!   float result that overflows or underflows raises 22003; DataFusion
//!   answers `inf` or 0;
//! - `sum(bigint)` is `numeric`, so a sum of counters cannot overflow;
//! - `interval * number`, `number * interval` and `interval / number`,
//!   which DataFusion cannot plan, as PostgreSQL computes them;
//! - a number literal beyond double precision (`1e400`) is refused (22003);
//!   DataFusion reads it as `inf`;
//! - a text literal compared with a timestamp is read as PostgreSQL reads
//!   it (`time > '2026-01-01 00:00'`, see `rules/time_literals.rs`);
//! - a timestamp, float or interval cast to text prints as in PostgreSQL
//!   (`text.rs`);
//! - `extract(epoch FROM time)` is exact to the microsecond (DataFusion
//!   divides the nanoseconds as a double, so `...30.25` read `...30.2499998`).
//!
//! The operators are an analyzer rule ([`CheckedArithmetic`]) that runs
//! after DataFusion's type coercion, when both sides of an operator have
//! one type: it puts the checked functions in the operators' place and keeps
//! each expression's name. Intervals are an expression planner
//! ([`IntervalArithmetic`]), because DataFusion refuses them while it
//! plans; `sum` is registered over DataFusion's ([`PgSum`]), whose
//! accumulators it reuses on `numeric` input.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, IntervalMonthDayNanoArray, PrimitiveArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::{
    DataType, FieldRef, Float64Type, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit,
    TimeUnit, TimestampNanosecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, BinaryExpr, ColumnarValue, Expr, ExprSchemable,
    GroupsAccumulator, LogicalPlan, Operator, ReversedUDAF, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::{AnalyzerRule, OptimizerConfig, OptimizerRule};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr as SqlExpr, Statement, Value, Visit};
use sextant_sqlstate::SqlState;

use super::functions::{answer, rows};
use crate::SqlError;

/// Registers the rule, the planner, the functions they call and `sum`.
pub(crate) fn register(ctx: &SessionContext) {
    for op in [Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Rem] {
        ctx.register_udf(ScalarUDF::new_from_impl(Checked::new(op)));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(IntervalTimes::new(false)));
    ctx.register_udf(ScalarUDF::new_from_impl(IntervalTimes::new(true)));
    ctx.register_udaf(AggregateUDF::new_from_impl(PgSum::default()));
    ctx.add_analyzer_rule(Arc::new(CheckedArithmetic));
    // No planner of DataFusion's plans these operators on intervals.
    if let Err(e) = ctx
        .state_ref()
        .write()
        .register_expr_planner(Arc::new(IntervalArithmetic))
    {
        tracing::warn!(error = %e, "interval arithmetic is not planned");
    }
}

/// Refuses a number literal that double precision cannot hold (`1e400`),
/// which DataFusion would read as infinity.
pub(crate) fn literals_in_range(stmt: &Statement) -> Result<(), SqlError> {
    let mut bad = None;
    let _ = stmt.visit(&mut ExprVisitor(|e: &SqlExpr| {
        if let SqlExpr::Value(v) = e
            && let Value::Number(text, _) = &v.value
            && text.parse::<f64>().is_ok_and(f64::is_infinite)
        {
            bad = Some(text.clone());
        }
    }));
    match bad {
        Some(text) => Err(SqlError::new(
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("\"{text}\" is out of range for type double precision"),
        )),
        None => Ok(()),
    }
}

/// The most parameters a statement can have: the Bind message counts
/// them in 16 bits.
const MAX_PARAMETERS: u64 = 65_535;

/// Refuses a parameter past the last one a Bind message can carry
/// (`$999991500`): DataFusion sizes the parameter types of an INSERT by the
/// highest number (a vector of a billion entries). PostgreSQL's 42P02.
pub(crate) fn parameters_in_range(stmt: &Statement) -> Result<(), SqlError> {
    let mut bad = None;
    let _ = stmt.visit(&mut ExprVisitor(|e: &SqlExpr| {
        if let SqlExpr::Value(v) = e
            && let Value::Placeholder(name) = &v.value
            && name.strip_prefix('$').is_some_and(|n| {
                !n.parse::<u64>()
                    .is_ok_and(|n| (1..=MAX_PARAMETERS).contains(&n))
            })
        {
            bad = Some(name.clone());
        }
    }));
    match bad {
        Some(name) => Err(SqlError::new(
            SqlState::UNDEFINED_PARAMETER,
            format!("there is no parameter {name}"),
        )),
        None => Ok(()),
    }
}

/// A scalar subquery that selects no column (`(SELECT FROM t)`), which
/// DataFusion's planner indexes for its type (a panic): PostgreSQL's error
/// instead (42601).
pub(crate) fn subqueries_have_a_column(stmt: &Statement) -> Result<(), SqlError> {
    use datafusion::sql::sqlparser::ast::SetExpr;
    let mut empty = false;
    let _ = stmt.visit(&mut ExprVisitor(|e: &SqlExpr| {
        if let SqlExpr::Subquery(q) = e
            && let SetExpr::Select(select) = q.body.as_ref()
            && select.projection.is_empty()
        {
            empty = true;
        }
    }));
    match empty {
        true => Err(SqlError::syntax("subquery must return only one column")),
        false => Ok(()),
    }
}

struct ExprVisitor<F>(F);

impl<F: FnMut(&SqlExpr)> datafusion::sql::sqlparser::ast::Visitor for ExprVisitor<F> {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &SqlExpr) -> std::ops::ControlFlow<()> {
        (self.0)(e);
        std::ops::ControlFlow::Continue(())
    }
}

/// A function's answer is NULL only where an argument is: its field is
/// nullable when one of theirs is (as the operator's or cast's was).
pub(super) fn field_like_args(
    name: &str,
    data_type: DataType,
    args: &datafusion::logical_expr::ReturnFieldArgs,
) -> FieldRef {
    let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
    Arc::new(datafusion::arrow::datatypes::Field::new(
        name, data_type, nullable,
    ))
}

/// An error a client sees with its SQLSTATE.
fn sql_error(state: SqlState, message: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(SqlError::new(state, message)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl Op {
    fn of(op: Operator) -> Option<Op> {
        Some(match op {
            Operator::Plus => Op::Add,
            Operator::Minus => Op::Sub,
            Operator::Multiply => Op::Mul,
            Operator::Divide => Op::Div,
            Operator::Modulo => Op::Rem,
            _ => return None,
        })
    }

    fn function(self) -> &'static str {
        match self {
            Op::Add => "sextant_checked_add",
            Op::Sub => "sextant_checked_sub",
            Op::Mul => "sextant_checked_mul",
            Op::Div => "sextant_checked_div",
            Op::Rem => "sextant_checked_rem",
        }
    }

    fn float(self, a: f64, b: f64) -> f64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
            Op::Div => a / b,
            Op::Rem => a % b,
        }
    }
}

/// The checked operators in the place of DataFusion's, after type coercion.
#[derive(Debug)]
struct CheckedArithmetic;

impl AnalyzerRule for CheckedArithmetic {
    fn name(&self) -> &str {
        "sextant_postgres_expressions"
    }

    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let mut schema = merge_schema(&plan.inputs());
            if let LogicalPlan::TableScan(scan) = &plan {
                let source = DFSchema::try_from_qualified_schema(
                    scan.table_name.clone(),
                    &scan.source.schema(),
                )?;
                schema.merge(&source);
            }
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let saved = names.save(&expr);
                let rewritten = expr.transform_up(|e| checked(e, &schema))?;
                Ok(if rewritten.transformed {
                    rewritten.update_data(|e| saved.restore(e))
                } else {
                    rewritten
                })
            })
        })
        .map(|t| t.data)
    }
}

/// `e` with a checked function in the place of its operator, when both
/// sides are integers or floats of one type; a text literal cast to a
/// timestamp written out as PostgreSQL reads it
/// ([`super::rules::time_literals::full_timestamp`]).
fn checked(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    if let Expr::Cast(c) = &e
        && matches!(c.field.data_type(), DataType::Timestamp(..))
        && let Expr::Literal(ScalarValue::Utf8(Some(text)), meta) = c.expr.as_ref()
        && let Some(full) = super::rules::time_literals::full_timestamp(text)
    {
        return Ok(Transformed::yes(Expr::Cast(
            datafusion::logical_expr::Cast::new_from_field(
                Box::new(Expr::Literal(ScalarValue::Utf8(Some(full)), meta.clone())),
                c.field.clone(),
            ),
        )));
    }
    if let Expr::ScalarFunction(f) = &e
        && f.func.name() == "date_part"
        && let [Expr::Literal(ScalarValue::Utf8(Some(part)), _), ts] = f.args.as_slice()
        && part.eq_ignore_ascii_case("epoch")
        && matches!(
            ts.get_type(schema),
            Ok(DataType::Timestamp(TimeUnit::Nanosecond, _))
        )
    {
        return Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(
                Arc::new(ScalarUDF::new_from_impl(Epoch::default())),
                vec![ts.clone()],
            ),
        )));
    }
    if let Expr::Cast(c) = &e
        && let Ok(from) = c.expr.get_type(schema)
        && super::text::prints_differently(&from, c.field.data_type())
    {
        let to = c.field.data_type().clone();
        let Expr::Cast(c) = e else { unreachable!() };
        return Ok(Transformed::yes(super::text::text_call(*c.expr, &to)));
    }
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
        return Ok(Transformed::no(e));
    };
    let Some(op) = Op::of(*op) else {
        return Ok(Transformed::no(e));
    };
    let (Ok(lt), Ok(rt)) = (left.get_type(schema), right.get_type(schema)) else {
        return Ok(Transformed::no(e));
    };
    let wanted = if lt != rt {
        false
    } else if lt.is_integer() {
        // Integer division by zero and its overflow already fail.
        matches!(op, Op::Add | Op::Sub | Op::Mul)
    } else {
        lt.is_floating()
    };
    if !wanted {
        return Ok(Transformed::no(e));
    }
    let args = vec![left.as_ref().clone(), right.as_ref().clone()];
    Ok(Transformed::yes(Expr::ScalarFunction(
        ScalarFunction::new_udf(Arc::new(ScalarUDF::new_from_impl(Checked::new(op))), args),
    )))
}

/// `a op b` that fails as PostgreSQL fails (see the module header).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Checked {
    op: Op,
    signature: Signature,
}

impl Checked {
    fn new(op: Op) -> Self {
        Self {
            op,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Checked {
    fn name(&self) -> &str {
        self.op.function()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }
    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<FieldRef> {
        let t = args.arg_fields[0].data_type().clone();
        Ok(field_like_args(self.name(), t, &args))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = rows(&args.args);
        let a = args.args[0].to_array(n)?;
        let b = args.args[1].to_array(n)?;
        let out = if a.data_type().is_integer() {
            integer(self.op, &a, &b)?
        } else {
            float(self.op, &a, &b)?
        };
        answer(&args.args, out)
    }
}

/// Checked integer arithmetic: arrow's checked kernels.
fn integer(op: Op, a: &ArrayRef, b: &ArrayRef) -> Result<ArrayRef> {
    let result = match op {
        Op::Add => numeric::add(a, b),
        Op::Sub => numeric::sub(a, b),
        Op::Mul => numeric::mul(a, b),
        Op::Div => numeric::div(a, b),
        Op::Rem => numeric::rem(a, b),
    };
    result.map_err(|e| match e {
        ArrowError::ArithmeticOverflow(_) => sql_error(
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("{} out of range", integer_name(a.data_type())),
        ),
        ArrowError::DivideByZero => sql_error(SqlState::DIVISION_BY_ZERO, "division by zero"),
        other => other.into(),
    })
}

/// PostgreSQL's name of an integer type, as its errors say it.
fn integer_name(t: &DataType) -> &'static str {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        _ => "bigint",
    }
}

/// Float arithmetic with PostgreSQL's checks (float8pl, float8div, ...):
/// division by zero unless the dividend is NaN; an infinite result from
/// finite operands is an overflow; a zero product or quotient of non-zero
/// operands an underflow.
fn float(op: Op, a: &ArrayRef, b: &ArrayRef) -> Result<ArrayRef> {
    let to = a.data_type().clone();
    let a = cast(a, &DataType::Float64)?;
    let b = cast(b, &DataType::Float64)?;
    let (a, b) = (
        a.as_primitive::<Float64Type>(),
        b.as_primitive::<Float64Type>(),
    );
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        if a.is_null(i) || b.is_null(i) {
            out.push(None);
            continue;
        }
        let (x, y) = (a.value(i), b.value(i));
        if matches!(op, Op::Div | Op::Rem) && y == 0.0 && !x.is_nan() {
            return Err(sql_error(SqlState::DIVISION_BY_ZERO, "division by zero"));
        }
        let r = op.float(x, y);
        if r.is_infinite() && x.is_finite() && y.is_finite() {
            return Err(sql_error(
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                "value out of range: overflow",
            ));
        }
        if r == 0.0 && matches!(op, Op::Mul | Op::Div) && x != 0.0 && y != 0.0 && y.is_finite() {
            return Err(sql_error(
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                "value out of range: underflow",
            ));
        }
        out.push(Some(r));
    }
    let out: ArrayRef = Arc::new(Float64Array::from(out));
    Ok(cast(&out, &to)?)
}

/// `extract(epoch FROM time)` of a nanosecond timestamp: whole seconds and
/// the fraction apart, so that the double is the closest to the exact value.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Epoch {
    signature: Signature,
}

impl Default for Epoch {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Epoch {
    fn name(&self) -> &str {
        "sextant_epoch"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<FieldRef> {
        Ok(field_like_args(self.name(), DataType::Float64, &args))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = rows(&args.args);
        let ts = args.args[0].to_array(n)?;
        let ts = ts.as_primitive::<TimestampNanosecondType>();
        let out: Float64Array = ts.unary(|x| {
            x.div_euclid(1_000_000_000) as f64 + x.rem_euclid(1_000_000_000) as f64 / 1e9
        });
        answer(&args.args, Arc::new(out))
    }
}

/// Plans `interval * number`, `number * interval` and `interval / number`.
#[derive(Debug)]
struct IntervalArithmetic;

impl ExprPlanner for IntervalArithmetic {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let (Ok(lt), Ok(rt)) = (expr.left.get_type(schema), expr.right.get_type(schema)) else {
            return Ok(PlannerResult::Original(expr));
        };
        let interval = |t: &DataType| matches!(t, DataType::Interval(_));
        let number = |t: &DataType| t.is_numeric();
        let (divide, interval_arg, factor) = match expr.op {
            BinaryOperator::Multiply if interval(&lt) && number(&rt) => {
                (false, expr.left, expr.right)
            }
            BinaryOperator::Multiply if number(&lt) && interval(&rt) => {
                (false, expr.right, expr.left)
            }
            BinaryOperator::Divide if interval(&lt) && number(&rt) => (true, expr.left, expr.right),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(
                Arc::new(ScalarUDF::new_from_impl(IntervalTimes::new(divide))),
                vec![interval_arg, factor],
            ),
        )))
    }
}

/// `interval * factor` (or `/ factor`) as PostgreSQL's interval_mul:
/// months, days and time are multiplied apart; a fraction of a month
/// carries into days (30 to a month), a fraction of a day into time.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalTimes {
    divide: bool,
    signature: Signature,
}

impl IntervalTimes {
    fn new(divide: bool) -> Self {
        Self {
            divide,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

const MONTH_DAY_NANO: DataType = DataType::Interval(IntervalUnit::MonthDayNano);

impl ScalarUDFImpl for IntervalTimes {
    fn name(&self) -> &str {
        if self.divide {
            "sextant_interval_div"
        } else {
            "sextant_interval_mul"
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, _: &[DataType]) -> Result<Vec<DataType>> {
        Ok(vec![MONTH_DAY_NANO, DataType::Float64])
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(MONTH_DAY_NANO)
    }
    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<FieldRef> {
        Ok(field_like_args(self.name(), MONTH_DAY_NANO, &args))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = rows(&args.args);
        let spans = cast(&args.args[0].to_array(n)?, &MONTH_DAY_NANO)?;
        let factors = cast(&args.args[1].to_array(n)?, &DataType::Float64)?;
        let spans = spans.as_primitive::<IntervalMonthDayNanoType>();
        let factors = factors.as_primitive::<Float64Type>();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if spans.is_null(i) || factors.is_null(i) {
                out.push(None);
                continue;
            }
            let mut factor = factors.value(i);
            if self.divide {
                if factor == 0.0 {
                    return Err(sql_error(SqlState::DIVISION_BY_ZERO, "division by zero"));
                }
                factor = 1.0 / factor;
            }
            out.push(Some(interval_mul(spans.value(i), factor)?));
        }
        let out: IntervalMonthDayNanoArray = PrimitiveArray::from(out);
        answer(&args.args, Arc::new(out))
    }
}

/// PostgreSQL 15's interval_mul, in nanoseconds where it counts
/// microseconds (the result is rounded to the microsecond, as there).
fn interval_mul(span: IntervalMonthDayNano, factor: f64) -> Result<IntervalMonthDayNano> {
    let out_of_range = || sql_error(SqlState::DATETIME_FIELD_OVERFLOW, "interval out of range");
    let round6 = |x: f64| (x * 1e6).round() / 1e6;
    let months = f64::from(span.months) * factor;
    if months.is_nan() || months > f64::from(i32::MAX) || months < f64::from(i32::MIN) {
        return Err(out_of_range());
    }
    let days = f64::from(span.days) * factor;
    if days.is_nan() || days > f64::from(i32::MAX) || days < f64::from(i32::MIN) {
        return Err(out_of_range());
    }
    let (months_whole, days_whole) = (months.trunc(), days.trunc());
    let month_remainder_days = round6((months - months_whole) * 30.0);
    let mut sec_remainder =
        round6((days - days_whole + month_remainder_days - month_remainder_days.trunc()) * 86400.0);
    let mut day_count = days_whole as i64 + month_remainder_days.trunc() as i64;
    if sec_remainder.abs() >= 86400.0 {
        let whole = (sec_remainder / 86400.0).trunc();
        day_count += whole as i64;
        sec_remainder -= whole * 86400.0;
    }
    let micros = (span.nanoseconds as f64 / 1000.0 * factor + sec_remainder * 1e6).round();
    if micros.is_nan() || micros.abs() >= 9.2e15 {
        return Err(out_of_range());
    }
    let days = i32::try_from(day_count).map_err(|_| out_of_range())?;
    Ok(IntervalMonthDayNano::new(
        months_whole as i32,
        days,
        micros as i64 * 1000,
    ))
}

/// PostgreSQL's `sum`: over `bigint` it is `numeric`, which cannot
/// overflow (DataFusion's sums `bigint` into a wrapping `bigint`); over
/// every other type it is DataFusion's (`sum(integer)` is `bigint`). The
/// `bigint` input is read as `numeric(38, 0)` (type coercion casts it), so
/// DataFusion's decimal accumulators do the work. A smaller integer is
/// not cast (the types of a plan are coerced again each time its schema
/// is computed, and a `bigint` made of it would then read as `numeric`):
/// its accumulators cast each batch to `bigint` ([`WidenedInput`]).
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgSum {
    inner: Sum,
    signature: Signature,
}

impl Default for PgSum {
    fn default() -> Self {
        Self {
            inner: Sum::new(),
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The type `sum` reads a `bigint` (or unsigned bigint) as.
const SUM_NUMERIC: DataType = DataType::Decimal128(38, 0);

impl AggregateUDFImpl for PgSum {
    fn name(&self) -> &str {
        "sum"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [t] = arg_types else {
            return datafusion::common::plan_err!(
                "sum takes one argument, not {}",
                arg_types.len()
            );
        };
        Ok(vec![match t {
            DataType::Int64 | DataType::UInt64 => SUM_NUMERIC,
            DataType::Int8 | DataType::Int16 | DataType::Int32 => t.clone(),
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => t.clone(),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => DataType::Float64,
            DataType::Null => DataType::Int64,
            DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Duration(_)
            | DataType::Interval(_) => t.clone(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                return datafusion::common::plan_err!(
                    "function sum(text) does not exist: cast the argument to a number"
                );
            }
            other => {
                return datafusion::common::plan_err!("function sum({other}) does not exist");
            }
        }])
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [t] if is_small_int(t) => Ok(DataType::Int64),
            _ => self.inner.return_type(arg_types),
        }
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        WidenedInput::args(&args, |args| self.inner.accumulator(args))
            .map(|(inner, widened)| WidenedInput::wrap(inner, widened))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if let [f] = args.input_fields
            && is_small_int(f.data_type())
        {
            let widened = [Arc::new(f.as_ref().clone().with_data_type(DataType::Int64))];
            return self.inner.state_fields(StateFieldsArgs {
                input_fields: &widened,
                ..args
            });
        }
        self.inner.state_fields(args)
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        WidenedInput::args(&args, |args| {
            Ok(self.inner.groups_accumulator_supported(args))
        })
        .map(|(supported, _)| supported)
        .unwrap_or(false)
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        WidenedInput::args(&args, |args| self.inner.create_groups_accumulator(args)).map(
            |(inner, widened)| -> Box<dyn GroupsAccumulator> {
                if widened {
                    Box::new(WidenedInput(inner))
                } else {
                    inner
                }
            },
        )
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        WidenedInput::args(&args, |args| self.inner.create_sliding_accumulator(args))
            .map(|(inner, widened)| WidenedInput::wrap(inner, widened))
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }
    fn order_sensitivity(&self) -> datafusion::logical_expr::utils::AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }
    fn set_monotonicity(&self, data_type: &DataType) -> datafusion::logical_expr::SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }
    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        self.inner.documentation()
    }
}

/// DataFusion's rule that computes `count(DISTINCT x)` beside other
/// aggregates as two aggregations (`sum(y)` as a `sum` of per-`x` sums),
/// except over a `sum` of a smaller integer: its per-`x` sums are
/// `bigint`, whose `sum` is `numeric`, so the two-step plan would change
/// the column's type (DataFusion then fails the plan).
#[derive(Debug)]
pub(crate) struct SumKeepsItsType(pub(crate) Arc<dyn OptimizerRule + Send + Sync>);

impl OptimizerRule for SumKeepsItsType {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn apply_order(&self) -> Option<datafusion::optimizer::ApplyOrder> {
        self.0.apply_order()
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if let LogicalPlan::Aggregate(a) = &plan {
            let schema = a.input.schema();
            for e in &a.aggr_expr {
                let e = match e {
                    Expr::Alias(alias) => alias.expr.as_ref(),
                    e => e,
                };
                if let Expr::AggregateFunction(f) = e
                    && f.func.name() == "sum"
                    && let [arg] = f.params.args.as_slice()
                    && is_small_int(&arg.get_type(schema)?)
                {
                    return Ok(Transformed::no(plan));
                }
            }
        }
        self.0.rewrite(plan, config)
    }
}

fn is_small_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

/// An accumulator of DataFusion's `sum` over `bigint`, fed a smaller
/// integer: each input batch is cast to `bigint` first (states and
/// results are already `bigint`).
struct WidenedInput<A: ?Sized>(Box<A>);

impl WidenedInput<dyn Accumulator> {
    /// Calls `make` with `args`, whose input reads as `bigint` when it is
    /// a smaller integer; and whether it was.
    fn args<T>(
        args: &AccumulatorArgs,
        make: impl FnOnce(AccumulatorArgs) -> Result<T>,
    ) -> Result<(T, bool)> {
        match args.expr_fields {
            [f] if is_small_int(f.data_type()) => {
                let widened = [Arc::new(f.as_ref().clone().with_data_type(DataType::Int64))];
                let args = AccumulatorArgs {
                    expr_fields: &widened,
                    ..args.clone()
                };
                Ok((make(args)?, true))
            }
            _ => Ok((make(args.clone())?, false)),
        }
    }

    fn wrap(inner: Box<dyn Accumulator>, widened: bool) -> Box<dyn Accumulator> {
        if widened {
            Box::new(WidenedInput(inner))
        } else {
            inner
        }
    }
}

fn widen(values: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    values
        .iter()
        .map(|v| Ok(cast(v, &DataType::Int64)?))
        .collect()
}

impl std::fmt::Debug for WidenedInput<dyn Accumulator> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WidenedInput").field(&self.0).finish()
    }
}

impl Accumulator for WidenedInput<dyn Accumulator> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.update_batch(&widen(values)?)
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.evaluate()
    }
    fn size(&self) -> usize {
        self.0.size()
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.state()
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.merge_batch(states)
    }
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.retract_batch(&widen(values)?)
    }
    fn supports_retract_batch(&self) -> bool {
        self.0.supports_retract_batch()
    }
}

impl GroupsAccumulator for WidenedInput<dyn GroupsAccumulator> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&datafusion::arrow::array::BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.0
            .update_batch(&widen(values)?, group_indices, opt_filter, total_num_groups)
    }
    fn evaluate(&mut self, emit_to: datafusion::logical_expr::EmitTo) -> Result<ArrayRef> {
        self.0.evaluate(emit_to)
    }
    fn state(&mut self, emit_to: datafusion::logical_expr::EmitTo) -> Result<Vec<ArrayRef>> {
        self.0.state(emit_to)
    }
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.0.merge_batch(values, group_indices, total_num_groups)
    }
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&datafusion::arrow::array::BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.0.convert_to_state(&widen(values)?, opt_filter)
    }
    fn size(&self) -> usize {
        self.0.size()
    }
}
