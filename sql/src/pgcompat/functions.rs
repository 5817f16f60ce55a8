//! The Postgres functions clients call that DataFusion and
//! datafusion-pg-catalog lack (`version()`, `current_setting()`,
//! `pg_is_in_recovery()`, `json_build_object()`, `to_regtype()`, ...), and
//! [`PgFunction`], the shape they share: `SELECT version()` answers
//! `PostgreSQL 16.6 (Sextant ...) on x86_64-linux, ...`.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use super::rules::session_functions::current_setting;
use super::settings::SERVER_VERSION;

/// `inet_server_port()` answers `port`, the port pgwire listens on.
pub fn set_server_port(ctx: &SessionContext, port: u16) {
    ctx.register_udf(ScalarUDF::new_from_impl(PgFunction::new(
        "inet_server_port",
        &[0],
        DataType::Int32,
        move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(i32::from(
                port,
            )))))
        },
    )));
}

/// Registers the functions clients call that datafusion-pg-catalog lacks.
pub(crate) fn register(ctx: &SessionContext) {
    // The server's start, as `pg_postmaster_start_time()` answers it.
    started();
    use DataType::{Boolean, Int32, Int64, Utf8};
    let text = |v: Option<&str>| ColumnarValue::Scalar(ScalarValue::Utf8(v.map(str::to_string)));
    let functions: Vec<PgFunction> = vec![
        PgFunction::new("version", &[0], Utf8, |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(version()))))
        }),
        PgFunction::new("current_setting", &[1, 2], Utf8, current_setting),
        // The value is not kept: settings are per connection (SET keeps them).
        PgFunction::new("set_config", &[3], Utf8, |args| Ok(args[1].clone())),
        PgFunction::new("pg_is_in_recovery", &[0], Boolean, |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))))
        }),
        // Sextant keeps no comments on tables or columns.
        PgFunction::new("col_description", &[2], Utf8, move |_| Ok(text(None))),
        PgFunction::new("obj_description", &[1, 2], Utf8, move |_| Ok(text(None))),
        PgFunction::new("shobj_description", &[2], Utf8, move |_| Ok(text(None))),
        // Every function Sextant has is visible; none is listed in pg_proc
        // with arguments to describe.
        PgFunction::new("pg_function_is_visible", &[1], Boolean, |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
        }),
        PgFunction::new("pg_get_function_result", &[1], Utf8, move |_| {
            Ok(text(None))
        }),
        PgFunction::new("pg_get_function_arguments", &[1], Utf8, move |_| {
            Ok(text(None))
        }),
        PgFunction::new(
            "pg_get_function_identity_arguments",
            &[1],
            Utf8,
            move |_| Ok(text(None)),
        ),
        PgFunction::new("pg_postmaster_start_time", &[0], Utf8, |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                started().to_rfc3339(),
            ))))
        }),
        // NULL until the server has bound its pgwire port
        // ([`set_server_port`]), as for a Unix-socket connection.
        PgFunction::new("inet_server_port", &[0], Int32, |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Int32(None)))
        }),
        PgFunction::new("pg_collation_is_visible", &[1], Boolean, |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
        }),
        PgFunction::variadic("json_build_object", Utf8, json_build_object),
        // Sextant has no sequences (no serial columns).
        PgFunction::new("pg_get_serial_sequence", &[2], Utf8, move |_| {
            Ok(text(None))
        }),
        // The oid of a type name (NULL for a type Sextant does not have).
        PgFunction::new("to_regtype", &[1], Int32, map_names_to_oids),
        PgFunction::new("txid_current", &[0], Int64, |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(1))))
        }),
        PgFunction::new("width_bucket", &[4], Int32, width_bucket),
    ];
    for f in functions {
        ctx.register_udf(ScalarUDF::new_from_impl(f));
    }
    // `variance` is Postgres' name for the sample variance.
    if let Ok(var_samp) = datafusion::execution::FunctionRegistry::udaf(ctx, "var_samp") {
        let variance = var_samp.as_ref().clone().with_aliases(["variance"]);
        ctx.register_udaf(variance);
    }
}

/// `width_bucket(operand, low, high, count)`: which of `count` equal
/// buckets between `low` and `high` holds `operand` (0 below, count + 1 at
/// or above the top; `high < low` counts downwards), as Postgres answers
/// for double precision; its errors are Postgres' (2201G).
fn width_bucket(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    use datafusion::arrow::array::{Array, Int32Array};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    let rows = rows(args);
    let column = |i: usize, to: &DataType| -> Result<datafusion::arrow::array::ArrayRef> {
        Ok(cast(&args[i].to_array(rows)?, to)?)
    };
    let (operand, low, high) = (
        column(0, &DataType::Float64)?,
        column(1, &DataType::Float64)?,
        column(2, &DataType::Float64)?,
    );
    let count = column(3, &DataType::Int64)?;
    let (operand, low, high) = (
        operand.as_primitive::<Float64Type>(),
        low.as_primitive::<Float64Type>(),
        high.as_primitive::<Float64Type>(),
    );
    let count = count.as_primitive::<Int64Type>();
    let refuse = |m: &str| {
        datafusion::error::DataFusionError::External(Box::new(crate::SqlError::new(
            sextant_sqlstate::SqlState::INVALID_ARGUMENT_FOR_WIDTH_BUCKET_FUNCTION,
            m,
        )))
    };
    let mut out = Int32Array::builder(rows);
    for i in 0..rows {
        if operand.is_null(i) || low.is_null(i) || high.is_null(i) || count.is_null(i) {
            out.append_null();
            continue;
        }
        let (x, lo, hi, n) = (
            operand.value(i),
            low.value(i),
            high.value(i),
            count.value(i),
        );
        if n <= 0 {
            return Err(refuse("count must be greater than zero"));
        }
        if lo == hi {
            return Err(refuse("lower bound cannot equal upper bound"));
        }
        if !(x.is_finite() || x.is_nan()) || !lo.is_finite() || !hi.is_finite() {
            return Err(refuse("lower and upper bounds must be finite"));
        }
        let bucket = if lo < hi {
            if x < lo {
                0
            } else if x >= hi {
                n + 1
            } else {
                ((x - lo) / (hi - lo) * n as f64).floor() as i64 + 1
            }
        } else if x > lo {
            0
        } else if x <= hi {
            n + 1
        } else {
            ((lo - x) / (lo - hi) * n as f64).floor() as i64 + 1
        };
        let bucket = i32::try_from(bucket).map_err(|_| {
            datafusion::error::DataFusionError::External(Box::new(crate::SqlError::new(
                sextant_sqlstate::SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                "integer out of range",
            )))
        })?;
        out.append_value(bucket);
    }
    answer(args, std::sync::Arc::new(out.finish()))
}

/// How many rows a function's arguments have: an array's length, or 1 when
/// every argument is a scalar.
pub(crate) fn rows(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

/// A function's answer `out` (one value per row), as a scalar when every
/// argument was one.
pub(crate) fn answer(
    args: &[ColumnarValue],
    out: datafusion::arrow::array::ArrayRef,
) -> Result<ColumnarValue> {
    let scalar = out.len() == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    Ok(if scalar {
        ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
    } else {
        ColumnarValue::Array(out)
    })
}

/// Postgres' oids of the type names clients look up (`to_regtype`).
const TYPE_OIDS: &[(&str, i32)] = &[
    ("bool", 16),
    ("boolean", 16),
    ("bytea", 17),
    ("char", 18),
    ("name", 19),
    ("int8", 20),
    ("bigint", 20),
    ("int2", 21),
    ("smallint", 21),
    ("int4", 23),
    ("integer", 23),
    ("int", 23),
    ("text", 25),
    ("oid", 26),
    ("json", 114),
    ("float4", 700),
    ("real", 700),
    ("float8", 701),
    ("double precision", 701),
    ("bpchar", 1042),
    ("character", 1042),
    ("varchar", 1043),
    ("character varying", 1043),
    ("date", 1082),
    ("time", 1083),
    ("time without time zone", 1083),
    ("timestamp", 1114),
    ("timestamp without time zone", 1114),
    ("timestamptz", 1184),
    ("timestamp with time zone", 1184),
    ("interval", 1186),
    ("numeric", 1700),
    ("decimal", 1700),
    ("uuid", 2950),
    ("jsonb", 3802),
];

fn map_names_to_oids(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let oid = |name: Option<&str>| {
        let name = name?.trim().trim_matches('"').to_lowercase();
        let name = name
            .strip_prefix("pg_catalog.")
            .unwrap_or(&name)
            .to_string();
        TYPE_OIDS.iter().find(|(n, _)| *n == name).map(|(_, o)| *o)
    };
    match &args[0] {
        ColumnarValue::Scalar(s) => {
            let ScalarValue::Utf8(v) = s.cast_to(&DataType::Utf8)? else {
                return plan_err!("to_regtype takes a type name");
            };
            Ok(ColumnarValue::Scalar(ScalarValue::Int32(oid(v.as_deref()))))
        }
        ColumnarValue::Array(a) => {
            let a = cast(a, &DataType::Utf8)?;
            let out: datafusion::arrow::array::Int32Array =
                a.as_string::<i32>().iter().map(oid).collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }
    }
}

/// What `version()` answers: Postgres' layout, naming Sextant.
fn version() -> String {
    format!(
        "PostgreSQL {} on {}-linux, compiled by rustc, 64-bit",
        SERVER_VERSION,
        std::env::consts::ARCH
    )
}

fn started() -> &'static chrono::DateTime<chrono::Utc> {
    static STARTED: OnceLock<chrono::DateTime<chrono::Utc>> = OnceLock::new();
    STARTED.get_or_init(chrono::Utc::now)
}

/// What a [`PgFunction`] computes from its arguments.
type Eval = dyn Fn(&[ColumnarValue]) -> Result<ColumnarValue> + Send + Sync;

/// A Postgres function with a fixed result type: its name, the argument
/// counts it takes (any types), and what it computes.
pub(crate) struct PgFunction {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    eval: Box<Eval>,
}

impl PgFunction {
    pub(crate) fn new(
        name: &'static str,
        arities: &[usize],
        returns: DataType,
        eval: impl Fn(&[ColumnarValue]) -> Result<ColumnarValue> + Send + Sync + 'static,
    ) -> Self {
        let types = arities
            .iter()
            .map(|&n| match n {
                0 => TypeSignature::Nullary,
                n => TypeSignature::Any(n),
            })
            .collect();
        Self {
            name,
            signature: Signature::one_of(types, Volatility::Stable),
            returns,
            eval: Box::new(eval),
        }
    }
}

impl PgFunction {
    /// A function of any number of arguments of any types.
    fn variadic(
        name: &'static str,
        returns: DataType,
        eval: impl Fn(&[ColumnarValue]) -> Result<ColumnarValue> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            signature: Signature::one_of(
                vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
                Volatility::Stable,
            ),
            returns,
            eval: Box::new(eval),
        }
    }
}

/// `json_build_object(k1, v1, k2, v2, ...)`: a JSON object, as text (keys
/// as text, values as JSON numbers, booleans, strings or null).
fn json_build_object(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    if !args.len().is_multiple_of(2) {
        return plan_err!("json_build_object takes an even number of arguments (key, value, ...)");
    }
    let rows = rows(args);
    let arrays = args
        .iter()
        .map(|a| a.clone().into_array(rows))
        .collect::<Result<Vec<_>>>()?;
    let mut out = datafusion::arrow::array::StringBuilder::new();
    for row in 0..rows {
        let mut object = serde_json::Map::new();
        for pair in arrays.chunks(2) {
            let key = ScalarValue::try_from_array(&pair[0], row)?;
            let key = match key {
                ScalarValue::Utf8(Some(k))
                | ScalarValue::Utf8View(Some(k))
                | ScalarValue::LargeUtf8(Some(k)) => k,
                k if k.is_null() => return plan_err!("json_build_object: a key is NULL"),
                k => k.to_string(),
            };
            object.insert(
                key,
                json_value(&ScalarValue::try_from_array(&pair[1], row)?),
            );
        }
        out.append_value(serde_json::Value::Object(object).to_string());
    }
    let array: datafusion::arrow::array::ArrayRef = Arc::new(out.finish());
    Ok(
        if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
        } else {
            ColumnarValue::Array(array)
        },
    )
}

fn json_value(v: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    if v.is_null() {
        return J::Null;
    }
    match v {
        ScalarValue::Boolean(Some(b)) => J::Bool(*b),
        ScalarValue::Int8(Some(n)) => J::from(*n),
        ScalarValue::Int16(Some(n)) => J::from(*n),
        ScalarValue::Int32(Some(n)) => J::from(*n),
        ScalarValue::Int64(Some(n)) => J::from(*n),
        ScalarValue::UInt8(Some(n)) => J::from(*n),
        ScalarValue::UInt16(Some(n)) => J::from(*n),
        ScalarValue::UInt32(Some(n)) => J::from(*n),
        ScalarValue::UInt64(Some(n)) => J::from(*n),
        ScalarValue::Float32(Some(f)) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number)
        }
        ScalarValue::Float64(Some(f)) => {
            serde_json::Number::from_f64(*f).map_or(J::Null, J::Number)
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => J::String(s.clone()),
        other => J::String(other.to_string()),
    }
}

impl std::fmt::Debug for PgFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFunction")
            .field("name", &self.name)
            .finish()
    }
}

/// Functions are told apart by name (two with one name must not exist).
impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PgFunction {}

impl std::hash::Hash for PgFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        (self.eval)(&args.args)
    }
}
