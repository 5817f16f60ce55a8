//! Casts to text as PostgreSQL prints the values: `time::text` is
//! `2026-01-01 00:00:00+00` (DataFusion's `2026-01-01T00:00:00Z`),
//! `4.0::float8::text` is `4`, `interval '90 days'::text` is `90 days`.
//! The text is the one pgwire sends for the value in a result (pgwire's
//! `ToSqlText`, Sextant's patch 05), so a value reads the same cast or not,
//! in both protocols. `arithmetic.rs`'s analyzer rule puts [`PgText`] in
//! the place of those casts (also the ones type coercion adds, as in
//! `'at ' || time`).

use std::sync::Arc;

use bytes::BytesMut;
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
    TimestampNanosecondType,
};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use pgwire::api::Type;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;

use super::functions::{answer, rows};

/// Registers `sextant_text`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(PgText::default()));
}

/// A value of `from` cast to text prints as PostgreSQL prints it.
pub(crate) fn prints_differently(from: &DataType, to: &DataType) -> bool {
    matches!(
        to,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    ) && matches!(
        from,
        DataType::Timestamp(..)
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Interval(_)
    )
}

/// `sextant_text(value)` in the place of a cast to `to`.
pub(crate) fn text_call(value: Expr, to: &DataType) -> Expr {
    let call = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(PgText::default())),
        vec![value],
    ));
    if to == &DataType::Utf8 {
        call
    } else {
        Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(call),
            to.clone(),
        ))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgText {
    signature: Signature,
}

impl Default for PgText {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PgText {
    fn name(&self) -> &str {
        "sextant_text"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        Ok(super::arithmetic::field_like_args(
            self.name(),
            DataType::Utf8,
            &args,
        ))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = args.args[0].to_array(rows(&args.args))?;
        answer(&args.args, Arc::new(pg_text(&values)?))
    }
}

/// Each value of `values` as pgwire writes it in text format.
fn pg_text(values: &ArrayRef) -> Result<datafusion::arrow::array::StringArray> {
    let options = FormatOptions::default();
    let mut out = StringBuilder::with_capacity(values.len(), values.len() * 24);
    let mut buf = BytesMut::new();
    let mut push = |i: usize, write: &mut dyn FnMut(&mut BytesMut) -> Result<()>| -> Result<()> {
        if values.is_null(i) {
            out.append_null();
            return Ok(());
        }
        buf.clear();
        write(&mut buf)?;
        out.append_value(String::from_utf8_lossy(&buf));
        Ok(())
    };
    let text_error = |e: Box<dyn std::error::Error + Send + Sync>| {
        datafusion::error::DataFusionError::External(e)
    };
    match values.data_type() {
        DataType::Timestamp(_, zone) => {
            let zone = zone.clone();
            let nanos = cast(
                values,
                &DataType::Timestamp(TimeUnit::Nanosecond, zone.clone()),
            )?;
            let nanos = nanos.as_primitive::<TimestampNanosecondType>();
            let tz: Option<Tz> = match &zone {
                Some(z) => Some(z.parse()?),
                None => None,
            };
            for i in 0..nanos.len() {
                push(i, &mut |buf| {
                    match tz {
                        Some(tz) => nanos
                            .value_as_datetime_with_tz(i, tz)
                            .map(|d| d.fixed_offset())
                            .to_sql_text(&Type::TIMESTAMPTZ, buf, &options),
                        None => {
                            nanos
                                .value_as_datetime(i)
                                .to_sql_text(&Type::TIMESTAMP, buf, &options)
                        }
                    }
                    .map(|_| ())
                    .map_err(text_error)
                })?;
            }
        }
        DataType::Float16 | DataType::Float32 => {
            let floats = cast(values, &DataType::Float32)?;
            let floats = floats.as_primitive::<Float32Type>();
            for i in 0..floats.len() {
                push(i, &mut |buf| {
                    floats
                        .value(i)
                        .to_sql_text(&Type::FLOAT4, buf, &options)
                        .map(|_| ())
                        .map_err(text_error)
                })?;
            }
        }
        DataType::Float64 => {
            let floats = values.as_primitive::<Float64Type>();
            for i in 0..floats.len() {
                push(i, &mut |buf| {
                    floats
                        .value(i)
                        .to_sql_text(&Type::FLOAT8, buf, &options)
                        .map(|_| ())
                        .map_err(text_error)
                })?;
            }
        }
        DataType::Interval(_) => {
            let spans = cast(values, &DataType::Interval(IntervalUnit::MonthDayNano))?;
            let spans = spans.as_primitive::<IntervalMonthDayNanoType>();
            for i in 0..spans.len() {
                push(i, &mut |buf| {
                    let v = spans.value(i);
                    pg_interval::Interval::new(v.months, v.days, v.nanoseconds / 1000)
                        .to_sql_text(&Type::INTERVAL, buf, &options)
                        .map(|_| ())
                        .map_err(text_error)
                })?;
            }
        }
        other => return exec_err!("sextant_text does not print {other}"),
    }
    Ok(out.finish())
}
