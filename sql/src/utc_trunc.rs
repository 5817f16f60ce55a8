//! `date_trunc` on UTC timestamps by arithmetic.
//!
//! Every Sextant time column is `timestamptz` in UTC. DataFusion truncates
//! a timestamp that has a time zone to the hour or the day through chrono,
//! one value at a time (a calendar in the zone, for daylight saving), even
//! when the zone is UTC, where an hour and a day are fixed lengths; without
//! a zone it subtracts the remainder over the whole array. This wraps
//! DataFusion's function: for a UTC array and `hour` or `day` it hands the
//! same values over without their zone and puts the zone back on the
//! result; everything else (other zones, `week` and longer, scalars, the
//! ordering it declares, its errors) is DataFusion's own.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, make_array};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// Registers the wrapper over the session's `date_trunc`.
pub(crate) fn register(ctx: &SessionContext) {
    if let Ok(inner) = ctx.udf("date_trunc") {
        ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc { inner }));
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

/// Whether `tz` names UTC itself (not a zone that happens to be at +0 now).
fn is_utc(tz: &str) -> bool {
    matches!(
        tz,
        "UTC" | "utc" | "Z" | "+00:00" | "+0000" | "+00" | "Etc/UTC" | "Etc/UCT" | "UCT"
    )
}

/// The array's values without their zone, when that zone is UTC.
fn without_utc_zone(array: &ArrayRef) -> Option<ArrayRef> {
    match array.data_type() {
        DataType::Timestamp(unit, Some(tz)) if is_utc(tz) => {
            retyped(array, DataType::Timestamp(*unit, None)).ok()
        }
        _ => None,
    }
}

/// The same values as another type of the same layout (a timestamp with
/// or without its zone): nothing is copied.
fn retyped(array: &ArrayRef, to: DataType) -> Result<ArrayRef> {
    Ok(make_array(
        array.to_data().into_builder().data_type(to).build()?,
    ))
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let by_arithmetic = match args.args.first() {
            Some(ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(g))
                | ScalarValue::Utf8View(Some(g))
                | ScalarValue::LargeUtf8(Some(g)),
            )) => g.eq_ignore_ascii_case("hour") || g.eq_ignore_ascii_case("day"),
            _ => false,
        };
        let stripped = match args.args.get(1) {
            Some(ColumnarValue::Array(a)) if by_arithmetic => {
                without_utc_zone(a).map(|bare| (bare, a.data_type().clone()))
            }
            _ => None,
        };
        let Some((bare, DataType::Timestamp(_, Some(tz)))) = stripped else {
            return self.inner.invoke_with_args(args);
        };
        args.args[1] = ColumnarValue::Array(bare);
        let field = args.return_field.as_ref().clone();
        if let DataType::Timestamp(unit, Some(_)) = field.data_type() {
            args.return_field = Arc::new(
                field
                    .clone()
                    .with_data_type(DataType::Timestamp(*unit, None)),
            );
        }
        match self.inner.invoke_with_args(args)? {
            ColumnarValue::Array(a) => match a.data_type() {
                DataType::Timestamp(unit, None) => Ok(ColumnarValue::Array(retyped(
                    &a,
                    DataType::Timestamp(*unit, Some(tz)),
                )?)),
                _ => Ok(ColumnarValue::Array(a)),
            },
            other => Ok(other),
        }
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    /// The wrapper and DataFusion's own give the same truncations, zone
    /// included, over UTC and over a zone with daylight saving.
    #[tokio::test]
    async fn same_answers_as_datafusion() {
        let values: Vec<Option<i64>> = (0..500)
            .map(|i| {
                (i % 37 != 0).then_some(-86_400_000_000_000 * 400 + i * 7_777_777_777_777 + i * 13)
            })
            .collect();
        for tz in ["UTC", "+00:00", "Europe/Berlin", "America/St_Johns"] {
            let array = TimestampNanosecondArray::from(values.clone()).with_timezone(tz);
            // The arithmetic is taken for UTC alone.
            let bare = without_utc_zone(&(Arc::new(array.clone()) as ArrayRef));
            assert_eq!(bare.is_some(), tz.contains("00") || tz == "UTC", "{tz}");
            let schema = Arc::new(Schema::new(vec![Field::new(
                "t",
                array.data_type().clone(),
                true,
            )]));
            let batch = RecordBatch::try_new(schema, vec![Arc::new(array)]).unwrap();
            let plain = SessionContext::new();
            let wrapped = SessionContext::new();
            register(&wrapped);
            for ctx in [&plain, &wrapped] {
                ctx.register_batch("ts", batch.clone()).unwrap();
            }
            for g in ["hour", "HOUR", "day", "minute", "week", "month"] {
                let sql = format!("SELECT date_trunc('{g}', t) AS d FROM ts");
                let a = plain.sql(&sql).await.unwrap().collect().await.unwrap();
                let b = wrapped.sql(&sql).await.unwrap().collect().await.unwrap();
                assert_eq!(a, b, "{g} in {tz}");
                assert_eq!(
                    b[0].column(0).data_type(),
                    &DataType::Timestamp(TimeUnit::Nanosecond, Some(tz.into()))
                );
            }
        }
    }
}
