//! Sextant's additions to datafusion-pg-catalog's `pg_catalog`: columns
//! its tables lack that clients read (answered as NULL: Sextant has no
//! such property), and tables describing what Sextant tables never have
//! (constraints), empty. The catalog itself (tables, types, attributes)
//! stays datafusion-pg-catalog's; `information_schema` is DataFusion's,
//! speaking Postgres ([`information_schema`]).

mod information_schema;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, lit};

pub(crate) use information_schema::register_information_schema;

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
