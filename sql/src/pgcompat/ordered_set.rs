//! PostgreSQL's ordered-set aggregates DataFusion lacks,
//! `percentile_disc(f) WITHIN GROUP (ORDER BY x)` and
//! `mode() WITHIN GROUP (ORDER BY x)`, and `pg_sleep(seconds)`.
//!
//! DataFusion's planner passes the WITHIN GROUP expression as the first
//! argument and its direction as the aggregate's ordering; the accumulator
//! keeps the group's values, sorts them once when the group is done and
//! picks the answer as PostgreSQL's `percentile_disc_final` and
//! `mode_final` do (NULLs are skipped).

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray};
use datafusion::arrow::compute::kernels::partition::partition;
use datafusion::arrow::compute::{
    SortOptions, cast, concat, filter, is_not_null, sort_to_indices, take,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::SessionContext;
use sextant_sqlstate::SqlState;

use crate::SqlError;

/// Registers `percentile_disc`, `mode` and `pg_sleep`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::new_from_impl(OrderedSet::new(
        Kind::PercentileDisc,
    )));
    ctx.register_udaf(AggregateUDF::new_from_impl(OrderedSet::new(Kind::Mode)));
    ctx.register_udf(AsyncScalarUDF::new(Arc::new(PgSleep::default())).into_scalar_udf());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    PercentileDisc,
    Mode,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct OrderedSet {
    kind: Kind,
    signature: Signature,
}

impl OrderedSet {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for OrderedSet {
    fn name(&self) -> &str {
        match self.kind {
            Kind::PercentileDisc => "percentile_disc",
            Kind::Mode => "mode",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match (self.kind, arg_types) {
            (Kind::PercentileDisc, [t, _]) => Ok(vec![t.clone(), DataType::Float64]),
            (Kind::Mode, [t]) => Ok(vec![t.clone()]),
            (Kind::PercentileDisc, _) => plan_err!(
                "percentile_disc takes one fraction and WITHIN GROUP (ORDER BY expression)"
            ),
            (Kind::Mode, _) => {
                plan_err!("mode takes no arguments and WITHIN GROUP (ORDER BY expression)")
            }
        }
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }
    fn supports_within_group_clause(&self) -> bool {
        true
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        // The accumulator sorts the values itself.
        AggregateOrderSensitivity::Insensitive
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Field::new_list_field(args.input_fields[0].data_type().clone(), true);
        Ok(vec![
            Field::new(
                format_state_name(args.name, "values"),
                DataType::List(Arc::new(item)),
                true,
            )
            .into(),
        ])
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let order = args
            .order_bys
            .first()
            .map(|s| s.options)
            .unwrap_or_default();
        let fraction = match self.kind {
            Kind::Mode => None,
            Kind::PercentileDisc => Some(fraction(&args)?),
        };
        Ok(Box::new(Values {
            fraction,
            order,
            data_type: args.expr_fields[0].data_type().clone(),
            values: vec![],
        }))
    }
}

/// percentile_disc's fraction: a constant between 0 and 1.
fn fraction(args: &AccumulatorArgs) -> Result<f64> {
    let value = args
        .exprs
        .get(1)
        .and_then(|e| e.downcast_ref::<Literal>())
        .map(|l| l.value().clone());
    let Some(value) = value else {
        return plan_err!("percentile_disc's fraction must be a constant");
    };
    let f = match value.cast_to(&DataType::Float64)? {
        ScalarValue::Float64(Some(f)) => f,
        _ => return plan_err!("percentile_disc's fraction must not be NULL"),
    };
    if !(0.0..=1.0).contains(&f) {
        return Err(datafusion::error::DataFusionError::External(Box::new(
            SqlError::new(
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("percentile value {f} is not between 0 and 1"),
            ),
        )));
    }
    Ok(f)
}

/// A group's values, sorted when the group is done.
#[derive(Debug)]
struct Values {
    fraction: Option<f64>,
    order: SortOptions,
    data_type: DataType,
    values: Vec<ArrayRef>,
}

impl Values {
    fn all(&self) -> Result<ArrayRef> {
        if self.values.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(&self.data_type));
        }
        let parts: Vec<&dyn Array> = self.values.iter().map(|a| a.as_ref()).collect();
        Ok(concat(&parts)?)
    }
}

impl Accumulator for Values {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let v = &values[0];
        let present = filter(v, &is_not_null(v)?)?;
        if !present.is_empty() {
            self.values.push(cast(&present, &self.data_type)?);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists: &ListArray = states[0].as_list();
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                self.update_batch(&[lists.value(i)])?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let all = self.all()?;
        self.values = vec![all.clone()];
        Ok(vec![ScalarValue::List(Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(self.data_type.clone(), true)),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths([all.len()]),
            all,
            None,
        )))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let all = self.all()?;
        if all.is_empty() {
            return ScalarValue::try_from(&self.data_type);
        }
        let sorted = take(&all, &sort_to_indices(&all, Some(self.order), None)?, None)?;
        let index = match self.fraction {
            // percentile_disc_final: the first value whose position is at
            // or past the fraction of the rows.
            Some(f) => ((f * sorted.len() as f64).ceil() as usize).max(1) - 1,
            // mode_final: the first of the longest runs of equal values.
            None => {
                let runs = partition(std::slice::from_ref(&sorted))?.ranges();
                let mut best = 0..0;
                for run in runs {
                    if run.len() > best.len() {
                        best = run;
                    }
                }
                best.start
            }
        };
        ScalarValue::try_from_array(&sorted, index.min(sorted.len() - 1))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .values
                .iter()
                .map(|a| a.get_array_memory_size())
                .sum::<usize>()
    }
}

/// `pg_sleep(seconds)`: waits, without holding a thread, and answers an
/// empty text (PostgreSQL's void); cancelling the statement ends the wait.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgSleep {
    signature: Signature,
}

impl Default for PgSleep {
    fn default() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Float64], Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for PgSleep {
    fn name(&self) -> &str {
        "pg_sleep"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        plan_err!("pg_sleep runs asynchronously")
    }
}

#[async_trait::async_trait]
impl AsyncScalarUDFImpl for PgSleep {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let seconds = args.args[0].to_array(rows)?;
        let seconds = seconds.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        for i in 0..seconds.len() {
            if seconds.is_valid(i) && seconds.value(i) > 0.0 {
                let wait = Duration::try_from_secs_f64(seconds.value(i)).unwrap_or(Duration::MAX);
                tokio::time::sleep(wait).await;
            }
        }
        // PostgreSQL's void prints as an empty text.
        Ok(ColumnarValue::Array(Arc::new(
            datafusion::arrow::array::StringArray::from(vec![""; rows]),
        )))
    }
}
