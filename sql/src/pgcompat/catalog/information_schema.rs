//! `information_schema` as Postgres clients read it: DataFusion's, with
//! `columns` giving Postgres' type names. `SELECT data_type, udt_name FROM
//! information_schema.columns` answers `timestamp with time zone`,
//! `timestamptz` where DataFusion says `Timestamp(ns, "UTC")`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, InformationSchemaProvider};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{Column, ScalarValue, plan_err};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, Expr, LogicalPlanBuilder, ScalarUDF, lit};
use datafusion::prelude::SessionContext;
use sextant_catalog::DATABASE_NAME;

use crate::pgcompat::functions::PgFunction;

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
