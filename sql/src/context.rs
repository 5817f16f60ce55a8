//! The DataFusion session every SQL front end (pgwire, Flight SQL),
//! materialized view and alert rule of a server shares.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider};
use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::object_store::ObjectStore;
use datafusion::prelude::{SessionConfig, SessionContext};
use sextant_auth::Directory;
use sextant_catalog::{DATABASE_NAME, SCHEMA_NAME};
use sextant_storage::{Engine, SextantSchema, object_store_url};

use crate::GuardedPlanner;

/// The session: `sextant.public` is `engine`'s tables (its Parquet files in
/// `store`), `sextant.system` is `system_schema`; queries share
/// `memory_limit` bytes; every plan is checked for the principal running
/// it against `directory` ([`crate::run_as`]); Postgres' catalog,
/// functions and types are there ([`crate::pgcompat::register`]), and the
/// JSON functions and `matches_term`; `now()` reads the engine's clock when it is manual.
/// `distribute`, on a node of a cluster, makes the planner distribute
/// the plans it makes (around the guarded planner).
pub fn session_context(
    engine: &Engine,
    store: Arc<dyn ObjectStore>,
    memory_limit: u64,
    directory: &Arc<Directory>,
    system_schema: Arc<dyn SchemaProvider>,
    distribute: Option<&dyn Fn(SessionStateBuilder) -> SessionStateBuilder>,
) -> Result<SessionContext> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit as usize, 1.0)
        .build_arc()?;
    runtime.register_object_store(object_store_url().as_ref(), store);
    // DataFusion's own options may be set in the environment, each as its
    // name in capitals with `_` for `.` (DATAFUSION_EXECUTION_BATCH_SIZE).
    let config = SessionConfig::from_env()?
        .with_default_catalog_and_schema(DATABASE_NAME, SCHEMA_NAME)
        .with_create_default_catalog_and_schema(false)
        // Sextant's own information_schema (pgcompat::register).
        .with_information_schema(false)
        // `timestamptz` and `now()` are in UTC, as Sextant stores time.
        .set_str("datafusion.execution.time_zone", "UTC");
    // Every plan is checked for the principal running it (run_as).
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rules(crate::pgcompat::optimizer_rules())
        .with_query_planner(Arc::new(GuardedPlanner::new(directory.clone())));
    let state = match distribute {
        Some(distribute) => distribute(state),
        None => state,
    }
    .build();
    let mut ctx = SessionContext::new_with_state(state);
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(directory.clone());
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(SCHEMA_NAME, Arc::new(SextantSchema::new(engine.clone())))?;
    catalog.register_schema("system", system_schema)?;
    ctx.register_catalog(DATABASE_NAME, Arc::new(catalog));
    datafusion_functions_json::register_all(&mut ctx)?;
    crate::pgcompat::register(&ctx, engine)?;
    crate::utc_trunc::register(&ctx);
    // Token search, which the token index answers where files have one.
    ctx.register_udf(sextant_storage::matches_term_udf());
    crate::clock::register_time_functions(&ctx, engine.clock());
    drop_stale_aliases(&ctx);
    Ok(ctx)
}

/// Drops the aliases that still lead to a function Sextant registered over
/// (DataFusion's `date_format` is its chrono `to_char`): DataFusion puts a
/// session's functions back by their names when it rebuilds the session
/// (a config change does), so a stale alias would bring the old function
/// back under the name, in an order that changes from one start to the
/// next.
pub(crate) fn drop_stale_aliases(ctx: &SessionContext) {
    let stale: Vec<String> = {
        let state = ctx.state();
        let functions = state.scalar_functions();
        functions
            .iter()
            .filter(|(key, udf)| {
                key.as_str() != udf.name()
                    && functions
                        .get(udf.name())
                        .is_some_and(|current| !Arc::ptr_eq(current, udf))
            })
            .map(|(key, _)| key.clone())
            .collect()
    };
    for alias in stale {
        tracing::debug!(%alias, "dropping an alias of a function registered over");
        ctx.deregister_udf(&alias);
    }
}

/// The rows of one table as `snapshot` has them, in a session of their own
/// (a view's backfill, a DELETE's count).
pub(crate) fn snapshot_frame(
    engine: &Engine,
    snapshot: sextant_storage::Snapshot,
) -> Result<datafusion::prelude::DataFrame> {
    let ctx = SessionContext::new();
    ctx.register_object_store(object_store_url().as_ref(), engine.object_store().clone());
    let table = Arc::new(sextant_storage::SextantTable::from_snapshot(
        engine.clone(),
        snapshot,
    ));
    ctx.read_table(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::execution::FunctionRegistry;
    use datafusion::logical_expr::{ColumnarValue, ScalarUDF};

    /// A function registered over one of DataFusion's that has an alias
    /// (`to_char`, alias `date_format`) stays when the session state is
    /// rebuilt, as views and alerts rebuild it, once the stale alias is
    /// dropped; without that, the rebuild may put DataFusion's back.
    #[tokio::test]
    async fn functions_registered_over_others_survive_a_rebuild() {
        let ours = || {
            ScalarUDF::new_from_impl(crate::pgcompat::functions::PgFunction::new(
                "to_char",
                &[2],
                DataType::Utf8,
                |_| Ok(ColumnarValue::Scalar("ours".into())),
            ))
        };
        for _ in 0..20 {
            let ctx = SessionContext::new();
            ctx.register_udf(ours());
            drop_stale_aliases(&ctx);
            assert!(ctx.udf("date_format").is_err(), "the stale alias is gone");
            let rebuilt = SessionContext::new_with_state(
                SessionStateBuilder::new_from_existing(ctx.state()).build(),
            );
            let answer = rebuilt
                .sql("SELECT to_char(now(), 'YYYY')")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&answer)
                .unwrap()
                .to_string();
            assert!(text.contains("ours"), "{text}");
        }
    }
}
