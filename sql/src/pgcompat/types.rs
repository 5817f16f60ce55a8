//! Postgres types DataFusion does not know: `CREATE TABLE t (id uuid,
//! doc jsonb)` and `'...'::uuid` plan as text columns that say which
//! Postgres type they are.

use std::sync::Arc;

use arrow_pg::datatypes::PG_TYPE_KEY;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::error::Result;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::DataType as SqlDataType;

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
pub(crate) fn register(ctx: &SessionContext) {
    let state = ctx.state_ref();
    let mut builder = SessionStateBuilder::new_from_existing(state.read().clone());
    let inner = builder.type_planner().clone();
    let new_state = builder
        .with_type_planner(Arc::new(PgTypes { inner }))
        .build();
    *state.write() = new_state;
}
