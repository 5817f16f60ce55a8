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
/// JSON functions; `now()` reads the engine's clock when it is manual.
pub fn session_context(
    engine: &Engine,
    store: Arc<dyn ObjectStore>,
    memory_limit: u64,
    directory: &Arc<Directory>,
    system_schema: Arc<dyn SchemaProvider>,
) -> Result<SessionContext> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit as usize, 1.0)
        .build_arc()?;
    runtime.register_object_store(object_store_url().as_ref(), store);
    let config = SessionConfig::new()
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
        .with_query_planner(Arc::new(GuardedPlanner::new(directory.clone())))
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
    crate::clock::register_time_functions(&ctx, engine.clock());
    Ok(ctx)
}
