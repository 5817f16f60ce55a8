//! Sextant's additions to datafusion-pg-catalog's `pg_catalog`: columns
//! its tables lack that clients read (answered as NULL: Sextant has no
//! such property), and the functions clients call that it does not define.
//! The catalog itself (tables, types, attributes) stays datafusion-pg-catalog's.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, lit};

/// A column a catalog table lacks: table, column, type.
type ExtraColumn = (&'static str, &'static str, fn() -> DataType);

/// Columns Postgres' catalog tables have and datafusion-pg-catalog's lack.
const EXTRA_COLUMNS: &[ExtraColumn] = &[
    // psql `\d+`: storage options of a table and of its TOAST table.
    ("pg_class", "reloptions", text_array),
];

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
        let extra: Vec<_> = EXTRA_COLUMNS
            .iter()
            .filter(|(t, c, _)| *t == name && table.schema().field_with_name(c).is_err())
            .collect();
        if extra.is_empty() {
            return Ok(Some(table));
        }
        let mut columns: Vec<_> = table
            .schema()
            .fields()
            .iter()
            .map(|f| Expr::Column(Column::new(Some(name), f.name())))
            .collect();
        for (_, column, ty) in extra {
            columns.push(lit(ScalarValue::try_from(&ty())?).alias(*column));
        }
        let plan = LogicalPlanBuilder::scan(name, provider_as_source(table), None)?
            .project(columns)?
            .build()?;
        Ok(Some(Arc::new(ViewTable::new(plan, None))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}
