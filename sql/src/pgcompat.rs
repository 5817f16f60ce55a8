//! Postgres compatibility, in one place: SQL as Postgres clients write it,
//! read so that DataFusion answers it as Postgres would, and the catalog,
//! functions, types and settings those clients expect. The same for every
//! SQL front end (pgwire, Flight SQL), materialized view and alert rule.
//!
//! How one statement goes through it ([`crate::plan`] calls it):
//!
//! 1. **Parse as written** ([`parse_statement`], `parse.rs`), Postgres'
//!    dialect; text only datafusion-pg-catalog's compatibility parser reads
//!    (e.g. `ABORT`) goes through that parser.
//! 2. **Rules**, one file each in `rules/`, in this order: Postgres' names
//!    for output columns (`output_names.rs`) and names cast to `regclass`
//!    and friends that must exist (`names_that_must_resolve.rs`); then
//!    datafusion-pg-catalog's rewrite rules (`= ANY(array)`, `'{a,b}'`,
//!    `OPERATOR(pg_catalog.~)`, `COLLATE`, `'t'::regclass`, ...) except the
//!    one that turns a correlated subquery in a select list into NULL (a
//!    silently wrong answer for a query DataFusion plans well); then
//!    Sextant's: the session's user and settings (`session_functions.rs`),
//!    `ARRAY(subquery)` (`array_subquery.rs`) and `x IN (subquery)` outside
//!    filters (`in_subquery.rs`).
//! 3. **Plan** ([`plan_query`]): functions in FROM read as Postgres reads
//!    them (`functions_in_from.rs`, which needs the session's table
//!    functions), then DataFusion plans the statement and checks the plan
//!    can run. A user's query that fails here fails: it never gets the
//!    fallbacks, which could answer it differently.
//! 4. **Catalog-query fallbacks**: a query reading `pg_catalog` or
//!    `information_schema` ([`is_catalog_query`]) that DataFusion cannot
//!    plan gets more chances, in order: its scalar subqueries made
//!    aggregates (`scalar_subqueries_as_aggregates.rs`); the statement
//!    parsed again by datafusion-pg-catalog's compatibility parser (all its
//!    rules, and ready-made substitutes for the client queries it knows:
//!    psql's `\d`, pgcli, DBeaver) with the output names, Sextant's own
//!    rules of step 2, functions in FROM and the aggregates; last, its
//!    subqueries under CASE in the select list as NULL
//!    (`subqueries_under_case_as_null.rs`).
//!
//! What the plans then read and call is registered by [`register`]:
//! datafusion-pg-catalog's `pg_catalog` with Sextant's additions
//! (`catalog.rs`), `information_schema` in Postgres' words
//! (`catalog/information_schema.rs`), the Postgres functions clients call
//! (`functions.rs`), the privilege functions answered from Sextant's grants
//! (`privileges.rs`), the functions the rules' rewrites call, and the
//! Postgres types DataFusion lacks (`types.rs`). The settings Sextant
//! reports (`SHOW`, `current_setting`) are in [`settings`].

mod arithmetic;
mod catalog;
mod correlated;
pub(crate) mod functions;
mod json_results;
mod ordered_set;
mod parse;
pub(crate) mod privileges;
mod relations;
mod rules;
pub mod settings;
mod text;
pub(crate) mod to_char;
mod types;

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::setup_pg_catalog;
use sextant_catalog::DATABASE_NAME;
use sextant_storage::Engine;

pub use functions::set_server_port;
pub use json_results::json_results;
pub use parse::{is_catalog_query, parse_plain, parse_statement, plan_query, plan_statement};

/// DataFusion's optimizer rules, with Sextant's: correlated subqueries
/// DataFusion cannot decorrelate, just before its rule that does
/// ([`correlated::CorrelatedByDomain`]); and its rewrite of `count(DISTINCT
/// x)` beside other aggregates into two aggregations kept from `sum` of a
/// smaller integer ([`arithmetic::SumKeepsItsType`]).
pub(crate) fn optimizer_rules()
-> Vec<std::sync::Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> {
    use std::sync::Arc;
    let mut rules = datafusion::optimizer::Optimizer::new().rules;
    for rule in rules.iter_mut() {
        if rule.name() == "single_distinct_aggregation_to_group_by" {
            *rule = Arc::new(arithmetic::SumKeepsItsType(Arc::clone(rule)));
        }
    }
    let at = rules
        .iter()
        .position(|r| r.name() == "scalar_subquery_to_join")
        .unwrap_or(0);
    rules.insert(at, Arc::new(correlated::CorrelatedByDomain));
    rules
}

/// Registers everything Postgres clients expect in `ctx`, whose catalog
/// [`DATABASE_NAME`] must exist: datafusion-pg-catalog's `pg_catalog` and
/// Sextant's additions to it, the relation functions over `engine`'s
/// tables, `information_schema` (turn DataFusion's own off in the session
/// config), the Postgres types, the Postgres functions, the privilege
/// functions and the functions the rules call. The steps that rebuild the
/// session state (pg_catalog's setup, the types) come before the functions
/// registered over others, so that no rebuild puts an old one back.
pub fn register(ctx: &SessionContext, engine: &Engine) -> Result<()> {
    setup_pg_catalog(ctx, DATABASE_NAME, EmptyContextProvider)
        .map_err(|e| DataFusionError::Context("setting up pg_catalog".to_string(), e))?;
    types::register(ctx);
    // Over datafusion-pg-catalog's size functions, which answer 0.
    relations::register(ctx, engine);
    if let Some(catalog) = ctx.catalog(DATABASE_NAME) {
        catalog::extend(catalog.as_ref())?;
        catalog::register_information_schema(ctx, catalog.as_ref())?;
    }
    functions::register(ctx);
    // Over DataFusion's, which reads chrono's patterns.
    to_char::register(ctx);
    rules::register(ctx);
    // Over datafusion-pg-catalog's stubs, which say yes to everything.
    privileges::register(ctx);
    arithmetic::register(ctx);
    ordered_set::register(ctx);
    text::register(ctx);
    json_results::register(ctx);
    Ok(())
}
