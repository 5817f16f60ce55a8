//! The functions of a relation that psql's `\dt+` and `\d+` call, answered
//! from the engine: a relation's oid (from `pg_class`, or `'t'::regclass`)
//! → the table datafusion-pg-catalog gave that oid ([`RelationOids`]) → its
//! Parquet files, or its view definition. A relation's name works too, as
//! Postgres reads `pg_relation_size('cpu')` (the literal is a `regclass`):
//! `relation "x" does not exist` (42P01) for a name that is not a table.
//!
//! - `pg_relation_size(oid [, fork])`, `pg_table_size(oid)`,
//!   `pg_total_relation_size(oid)`: the table's Parquet bytes. Rows still
//!   in the write buffer are on disk only in the WAL, which is not the
//!   table's, so they are not counted until they are persisted. A
//!   relation that is not one of Sextant's tables (a `pg_catalog` or
//!   `system` table) has no files: 0. An oid that names no relation: NULL,
//!   as in Postgres.
//! - `pg_indexes_size(oid)`: 0; Sextant keeps no indexes.
//! - `pg_size_pretty(bigint)`: Postgres' own rounding and units.
//! - `pg_get_viewdef(oid [, pretty])`: a view's query (a plain view's as
//!   the statement layer keeps it), as
//!   Postgres prints a definition (` SELECT ...;`); NULL for a relation that
//!   is not a view.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, RelationOids};
use sextant_catalog::{DATABASE_NAME, SCHEMA_NAME};
use sextant_storage::Engine;

use super::functions::PgFunction;

/// Registers the size functions over `engine`'s files, where `ctx`'s
/// `pg_catalog` is datafusion-pg-catalog's (before [`super::catalog::extend`]
/// wraps it).
pub(crate) fn register(ctx: &SessionContext, engine: &Engine) {
    let Some(oids) = relation_oids(ctx) else {
        return;
    };
    let sizes = {
        let (engine, oids) = (engine.clone(), oids.clone());
        move |args: &[ColumnarValue]| relation_sizes(&args[0], &oids, &engine)
    };
    let sizes = Arc::new(sizes);
    for (name, arities) in [
        ("pg_relation_size", &[1, 2][..]),
        ("pg_table_size", &[1]),
        ("pg_total_relation_size", &[1]),
    ] {
        let sizes = sizes.clone();
        ctx.register_udf(ScalarUDF::new_from_impl(PgFunction::new(
            name,
            arities,
            DataType::Int64,
            move |args| sizes(args),
        )));
    }
    let engine = engine.clone();
    ctx.register_udf(ScalarUDF::new_from_impl(PgFunction::new(
        "pg_get_viewdef",
        &[1, 2],
        DataType::Utf8,
        move |args| {
            let definitions: StringArray = tables(&args[0], &oids, &engine)?
                .into_iter()
                .map(|t| {
                    let name = t??;
                    let query = match engine.view(&name) {
                        Some(view) => view.query,
                        None => engine.plain_view(&name)?.query,
                    };
                    Some(format!(" {};", query.trim().trim_end_matches(';')))
                })
                .collect();
            super::functions::answer(&args[..1], Arc::new(definitions))
        },
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(PgFunction::new(
        "pg_indexes_size",
        &[1],
        DataType::Int64,
        |args| {
            let oids = to_i64(&args[0])?;
            let zeros: Int64Array = oids.iter().map(|o| o.map(|_| 0)).collect();
            Ok(ColumnarValue::Array(Arc::new(zeros)))
        },
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(PgFunction::new(
        "pg_size_pretty",
        &[1],
        DataType::Utf8,
        |args| {
            let sizes = to_i64(&args[0])?;
            let text: StringArray = sizes.iter().map(|s| s.map(size_pretty)).collect();
            Ok(ColumnarValue::Array(Arc::new(text)))
        },
    )));
}

/// The oids datafusion-pg-catalog's `pg_class` hands out.
fn relation_oids(ctx: &SessionContext) -> Option<RelationOids> {
    type Provider = PgCatalogSchemaProvider<
        Arc<dyn datafusion::catalog::CatalogProviderList>,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    >;
    let schema = ctx.catalog(DATABASE_NAME)?.schema("pg_catalog")?;
    Some(schema.downcast_ref::<Provider>()?.relation_oids())
}

/// `arg` as bigints, one per row.
fn to_i64(arg: &ColumnarValue) -> Result<Int64Array> {
    let array: ArrayRef = arg.to_array(1)?;
    Ok(cast(&array, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// The Sextant table each row's relation names (`None`: a relation that is
/// not one of Sextant's tables, or NULL), from an oid or a name.
#[allow(clippy::type_complexity)]
fn tables(
    arg: &ColumnarValue,
    oids: &RelationOids,
    engine: &Engine,
) -> Result<Vec<Option<Option<String>>>> {
    let array: ArrayRef = arg.to_array(1)?;
    if matches!(
        array.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        let names = cast(&array, &DataType::Utf8)?;
        return names
            .as_string::<i32>()
            .iter()
            .map(|name| name.map(|n| by_name(n, engine)).transpose())
            .collect();
    }
    Ok(to_i64(arg)?
        .iter()
        .map(|oid| {
            let oid = u32::try_from(oid?).ok()?;
            let (catalog, schema, table) = oids.table(oid)?;
            Some((catalog == DATABASE_NAME && schema == SCHEMA_NAME).then_some(table))
        })
        .collect())
}

/// The table a relation's name (`cpu`, `public.cpu`, `"Cpu"`) names, as
/// Postgres reads it as a `regclass`. `Some(None)` for a system or catalog
/// table.
fn by_name(text: &str, engine: &Engine) -> Result<Option<String>> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let missing = || {
        datafusion::error::DataFusionError::External(Box::new(crate::SqlError::new(
            sextant_sqlstate::SqlState::UNDEFINED_TABLE,
            format!("relation \"{text}\" does not exist"),
        )))
    };
    let name = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_object_name(false))
        .map_err(|_| missing())?;
    let parts: Vec<String> = name.0.iter().map(|p| p.to_string()).collect();
    if matches!(
        parts.first().map(String::as_str),
        Some("pg_catalog" | "system" | "information_schema")
    ) && parts.len() == 2
    {
        return Ok(None);
    }
    match crate::table_name(&name) {
        Ok(table) if engine.table(&table).is_some() || engine.plain_view(&table).is_some() => {
            Ok(Some(table))
        }
        _ => Err(missing()),
    }
}

fn relation_sizes(
    arg: &ColumnarValue,
    oids: &RelationOids,
    engine: &Engine,
) -> Result<ColumnarValue> {
    let mut bytes: HashMap<String, i64> = HashMap::new();
    for (table, file) in engine.files() {
        *bytes.entry(table).or_default() += file.file.bytes as i64;
    }
    let sizes: Int64Array = tables(arg, oids, engine)?
        .into_iter()
        .map(|t| Some(t?.map_or(0, |name| bytes.get(&name).copied().unwrap_or(0))))
        .collect();
    super::functions::answer(std::slice::from_ref(arg), Arc::new(sizes))
}

/// `pg_size_pretty(size)` as Postgres 15 writes it (src/backend/utils/adt/
/// dbsize.c): bytes below 10 kB, then kB, MB, GB, TB and PB, each below
/// 20 × 1024 − 1 of itself, rounded half away from zero.
fn size_pretty(size: i64) -> String {
    // (name, limit, rounds, bits of the unit)
    const UNITS: [(&str, i64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    let mut size = size;
    for (i, &(name, limit, round, bits)) in UNITS.iter().enumerate() {
        let last = i + 1 == UNITS.len();
        if last || size.unsigned_abs() < limit as u64 {
            if round {
                size = half_rounded(size);
            }
            return format!("{size} {name}");
        }
        let (_, _, next_round, next_bits) = UNITS[i + 1];
        let shift = next_bits - bits - u32::from(next_round) + u32::from(round);
        size /= 1i64 << shift;
    }
    unreachable!("the last unit always answers")
}

#[cfg(test)]
mod tests {
    use super::size_pretty;

    #[test]
    fn sizes_read_as_postgres_writes_them() {
        // Each from PostgreSQL 15: SELECT pg_size_pretty(n::bigint).
        let cases = [
            (0, "0 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (1_000_000, "977 kB"),
            (20_971_519, "20 MB"),
            (20_971_520, "20 MB"),
            (123_456_789_012, "115 GB"),
            (-10240, "-10 kB"),
            (i64::MAX, "8192 PB"),
        ];
        for (n, want) in cases {
            assert_eq!(size_pretty(n), want, "{n}");
        }
    }
}
