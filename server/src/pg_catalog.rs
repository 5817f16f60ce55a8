//! Sextant's additions to datafusion-pg-catalog's `pg_catalog`: columns
//! its tables lack that clients read (answered as NULL: Sextant has no
//! such property), and the functions clients call that it does not define.
//! The catalog itself (tables, types, attributes) stays datafusion-pg-catalog's.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, InformationSchemaProvider};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::plan_err;
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::Result;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, Volatility, lit,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::DataType as SqlDataType;
use datafusion_postgres::arrow_pg::datatypes::PG_TYPE_KEY;
use sextant_catalog::DATABASE_NAME;

/// A column a catalog table lacks: table, column, type.
type ExtraColumn = (&'static str, &'static str, fn() -> DataType);

/// Columns Postgres' catalog tables have and datafusion-pg-catalog's lack.
const EXTRA_COLUMNS: &[ExtraColumn] = &[
    // psql `\d+`: storage options of a table and of its TOAST table.
    ("pg_class", "reloptions", text_array),
];

/// Catalog tables that describe what Sextant tables never have (keys,
/// constraints): empty, with Postgres' column types. datafusion-pg-catalog
/// fills `pg_constraint` with a Postgres installation's own rows, its
/// array columns as text, which clients cannot `unnest`.
fn empty_table_schema(name: &str) -> Option<SchemaRef> {
    use DataType::{Boolean, Int16, Int32, Utf8};
    let int2_array = || DataType::List(Arc::new(Field::new_list_field(Int16, true)));
    let int4_array = || DataType::List(Arc::new(Field::new_list_field(Int32, true)));
    let columns: Vec<(&str, DataType)> = match name {
        "pg_constraint" => vec![
            ("oid", Int32),
            ("conname", Utf8),
            ("connamespace", Int32),
            ("contype", Utf8),
            ("condeferrable", Boolean),
            ("condeferred", Boolean),
            ("convalidated", Boolean),
            ("conrelid", Int32),
            ("contypid", Int32),
            ("conindid", Int32),
            ("conparentid", Int32),
            ("confrelid", Int32),
            ("confupdtype", Utf8),
            ("confdeltype", Utf8),
            ("confmatchtype", Utf8),
            ("conislocal", Boolean),
            ("coninhcount", Int16),
            ("connoinherit", Boolean),
            ("conkey", int2_array()),
            ("confkey", int2_array()),
            ("conpfeqop", int4_array()),
            ("conppeqop", int4_array()),
            ("conffeqop", int4_array()),
            ("confdelsetcols", int2_array()),
            ("conexclop", int4_array()),
            ("conbin", Utf8),
        ],
        _ => return None,
    };
    Some(Arc::new(Schema::new(
        columns
            .into_iter()
            .map(|(n, t)| Field::new(n, t, true))
            .collect::<Vec<_>>(),
    )))
}

fn text_array() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// Replaces `pg_catalog` in `catalog` by itself with the extra columns.
pub(crate) fn extend(catalog: &dyn CatalogProvider) -> Result<()> {
    if let Some(inner) = catalog.schema("pg_catalog") {
        catalog.register_schema("pg_catalog", Arc::new(Extended { inner }))?;
    }
    Ok(())
}

#[derive(Debug)]
struct Extended {
    inner: Arc<dyn SchemaProvider>,
}

#[async_trait]
impl SchemaProvider for Extended {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        if let Some(schema) = empty_table_schema(name) {
            return Ok(Some(Arc::new(MemTable::try_new(schema, vec![vec![]])?)));
        }
        let extra: Vec<_> = EXTRA_COLUMNS
            .iter()
            .filter(|(t, c, _)| *t == name && table.schema().field_with_name(c).is_err())
            .collect();
        if extra.is_empty() {
            return Ok(Some(table));
        }
        // Scanned by its full name, so the plan checks (sextant_sql's
        // GuardedPlanner) know it for a catalog table, not a user's table.
        let rel = datafusion::common::TableReference::partial("pg_catalog", name);
        let mut columns: Vec<_> = table
            .schema()
            .fields()
            .iter()
            .map(|f| Expr::Column(Column::new(Some(rel.clone()), f.name())))
            .collect();
        for (_, column, ty) in extra {
            columns.push(lit(ScalarValue::try_from(&ty())?).alias(*column));
        }
        let plan = LogicalPlanBuilder::scan(rel, provider_as_source(table), None)?
            .project(columns)?
            .build()?;
        Ok(Some(Arc::new(ViewTable::new(plan, None))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

// ---------------------------------------------------------------------------
// Functions

/// Registers the functions clients call that datafusion-pg-catalog lacks.
pub(crate) fn register_functions(ctx: &SessionContext) {
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
    ];
    for f in functions {
        ctx.register_udf(ScalarUDF::new_from_impl(f));
    }
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
pub(crate) fn version() -> String {
    format!(
        "PostgreSQL {} on {}-linux, compiled by rustc, 64-bit",
        sextant_sql::settings::SERVER_VERSION,
        std::env::consts::ARCH
    )
}

fn started() -> &'static chrono::DateTime<chrono::Utc> {
    static STARTED: OnceLock<chrono::DateTime<chrono::Utc>> = OnceLock::new();
    STARTED.get_or_init(chrono::Utc::now)
}

/// `current_setting(name [, missing_ok])`: the server's default of a
/// setting (a connection's own `SET` values answer `SHOW`).
fn current_setting(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let missing_ok = match args.get(1) {
        Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(b)))) => *b,
        _ => false,
    };
    let lookup = |name: Option<&str>| -> Result<Option<String>> {
        let Some(name) = name else { return Ok(None) };
        match sextant_sql::settings::default_setting(name) {
            Some((_, v)) => Ok(Some(v.to_string())),
            None if missing_ok => Ok(None),
            None => Err(datafusion::error::DataFusionError::External(Box::new(
                sextant_sql::SqlError::new(
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                ),
            ))),
        }
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
            let values = names.iter().map(lookup).collect::<Result<StringArray>>()?;
            Ok(ColumnarValue::Array(Arc::new(values)))
        }
    }
}

/// A Postgres function with a fixed result type: its name, the argument
/// counts it takes (any types), and what it computes.
/// What a [`PgFunction`] computes from its arguments.
type Eval = dyn Fn(&[ColumnarValue]) -> Result<ColumnarValue> + Send + Sync;

struct PgFunction {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    eval: Box<Eval>,
}

impl PgFunction {
    fn new(
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
    let rows = args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1);
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

// ---------------------------------------------------------------------------
// Types

/// SQL types DataFusion does not know that Postgres clients use: `uuid`,
/// `json` and `jsonb` are stored as text, marked with their Postgres type
/// in the field's metadata (arrow-pg reports and encodes them as that type). Every
/// other type goes to the planner datafusion-pg-catalog installed.
#[derive(Debug)]
struct PgTypes {
    inner: Option<Arc<dyn TypePlanner>>,
}

impl TypePlanner for PgTypes {
    fn plan_type_field(&self, sql_type: &SqlDataType) -> Result<Option<FieldRef>> {
        match sql_type {
            SqlDataType::Uuid | SqlDataType::JSON | SqlDataType::JSONB => {
                let name = match sql_type {
                    SqlDataType::Uuid => "uuid",
                    SqlDataType::JSON => "json",
                    _ => "jsonb",
                };
                let metadata = [(PG_TYPE_KEY.to_string(), name.to_string())].into();
                Ok(Some(Arc::new(
                    Field::new("", DataType::Utf8, true).with_metadata(metadata),
                )))
            }
            other => match &self.inner {
                Some(inner) => inner.plan_type_field(other),
                None => Ok(None),
            },
        }
    }
}

/// Installs [`PgTypes`] in front of the session's type planner.
pub(crate) fn register_types(ctx: &SessionContext) {
    let state = ctx.state_ref();
    let mut builder = SessionStateBuilder::new_from_existing(state.read().clone());
    let inner = builder.type_planner().clone();
    let new_state = builder
        .with_type_planner(Arc::new(PgTypes { inner }))
        .build();
    *state.write() = new_state;
}

// ---------------------------------------------------------------------------
// information_schema

/// DataFusion's `information_schema`, with `columns` speaking Postgres:
/// `data_type` as Postgres spells a type (`timestamp with time zone`,
/// `double precision`, ...) and the `udt_name` columns (`timestamptz`,
/// `float8`, ...) that tools read to recognize a column's type.
#[derive(Debug)]
struct PgInformationSchema {
    inner: InformationSchemaProvider,
}

/// Replaces DataFusion's own `information_schema` (turn it off in the
/// session config) by [`PgInformationSchema`] in `catalog`.
pub(crate) fn register_information_schema(
    ctx: &SessionContext,
    catalog: &dyn CatalogProvider,
) -> Result<()> {
    let inner = InformationSchemaProvider::new(ctx.state().catalog_list().clone());
    catalog.register_schema(INFORMATION_SCHEMA, Arc::new(PgInformationSchema { inner }))?;
    Ok(())
}

#[async_trait]
impl SchemaProvider for PgInformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        if !name.eq_ignore_ascii_case("columns") {
            return Ok(Some(table));
        }
        // Scanned by its full name, so the plan checks (sextant_sql's
        // GuardedPlanner) know it for a catalog table, not a user's table.
        let rel = datafusion::common::TableReference::partial(INFORMATION_SCHEMA, "columns");
        let pg = |kind: &str| {
            Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
                Arc::new(ScalarUDF::new_from_impl(if kind == "data_type" {
                    PgFunction::new(
                        "pg_data_type_of_arrow",
                        &[1],
                        DataType::Utf8,
                        data_type_names,
                    )
                } else {
                    PgFunction::new("pg_udt_name_of_arrow", &[1], DataType::Utf8, udt_names)
                })),
                vec![Expr::Column(Column::new(Some(rel.clone()), "data_type"))],
            ))
        };
        let mut columns: Vec<Expr> = table
            .schema()
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "data_type" => pg("data_type").alias("data_type"),
                other => Expr::Column(Column::new(Some(rel.clone()), other)),
            })
            .collect();
        columns.push(lit(DATABASE_NAME).alias("udt_catalog"));
        columns.push(lit("pg_catalog").alias("udt_schema"));
        columns.push(pg("udt_name").alias("udt_name"));
        let plan = LogicalPlanBuilder::scan(rel.clone(), provider_as_source(table), None)?
            .project(columns)?
            .build()?;
        Ok(Some(Arc::new(ViewTable::new(plan, None))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// Postgres' `information_schema` spelling and `udt_name` of an Arrow type
/// (given as DataFusion's `information_schema` prints it).
fn pg_type_of(arrow: &str) -> (&'static str, &'static str) {
    use DataType::*;
    let Ok(t) = arrow.parse::<DataType>() else {
        return ("text", "text");
    };
    match t {
        Boolean => ("boolean", "bool"),
        Int8 | Int16 | UInt8 => ("smallint", "int2"),
        Int32 | UInt16 => ("integer", "int4"),
        Int64 | UInt32 => ("bigint", "int8"),
        UInt64 | Decimal32(_, _) | Decimal64(_, _) | Decimal128(_, _) | Decimal256(_, _) => {
            ("numeric", "numeric")
        }
        Float16 | Float32 => ("real", "float4"),
        Float64 => ("double precision", "float8"),
        Utf8 | LargeUtf8 | Utf8View => ("text", "text"),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => ("bytea", "bytea"),
        Timestamp(_, Some(_)) => ("timestamp with time zone", "timestamptz"),
        Timestamp(_, None) => ("timestamp without time zone", "timestamp"),
        Date32 | Date64 => ("date", "date"),
        Time32(_) | Time64(_) => ("time without time zone", "time"),
        Interval(_) | Duration(_) => ("interval", "interval"),
        List(_) | LargeList(_) | FixedSizeList(_, _) | ListView(_) | LargeListView(_) => {
            ("ARRAY", "_text")
        }
        _ => ("USER-DEFINED", "text"),
    }
}

fn map_strings(args: &[ColumnarValue], f: fn(&str) -> &'static str) -> Result<ColumnarValue> {
    match &args[0] {
        ColumnarValue::Scalar(s) => {
            let ScalarValue::Utf8(v) = s.cast_to(&DataType::Utf8)? else {
                return plan_err!("expected a type name");
            };
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                v.as_deref().map(|v| f(v).to_string()),
            )))
        }
        ColumnarValue::Array(a) => {
            let a = cast(a, &DataType::Utf8)?;
            let out: StringArray = a.as_string::<i32>().iter().map(|v| v.map(f)).collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }
    }
}

fn data_type_names(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    map_strings(args, |t| pg_type_of(t).0)
}

fn udt_names(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    map_strings(args, |t| pg_type_of(t).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_in_postgres_words() {
        assert_eq!(
            pg_type_of("Timestamp(ns, \"UTC\")"),
            ("timestamp with time zone", "timestamptz")
        );
        assert_eq!(
            pg_type_of("Timestamp(ns)"),
            ("timestamp without time zone", "timestamp")
        );
        assert_eq!(pg_type_of("Float64"), ("double precision", "float8"));
        assert_eq!(pg_type_of("Utf8View"), ("text", "text"));
        assert_eq!(pg_type_of("Int64"), ("bigint", "int8"));
        assert_eq!(pg_type_of("Decimal128(10, 2)"), ("numeric", "numeric"));
    }
}
