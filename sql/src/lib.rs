//! Sextant's SQL statement layer, shared by every SQL front end (pgwire,
//! Flight SQL).
//!
//! Text in → [`split`] into statements → [`plan`] each (the one pipeline
//! every front end, view and alert rule calls): Sextant's own statements
//! (`CREATE TABLE`, `FLUSH TABLE`, ...) are checked and run through
//! [`execute`] against the engine; queries and INSERTs are planned by
//! DataFusion and checked; the rest is answered by the front end's
//! session. Sextant's statements are parsed once, by [`classify`], into a
//! typed [`SextantStatement`] that the check and the executor read. Every
//! failure is a [`SqlError`] with a [`sextant_sqlstate::SqlState`], from
//! which each front end derives its own protocol's errors.
//! Who may run what is checked here too ([`run_as`], [`GuardedPlanner`]).
//! Postgres compatibility (parsing, rewrite rules, `pg_catalog`,
//! functions, types, settings) is [`pgcompat`]; the DataFusion session
//! they all share is built by [`session_context`].

mod access;
mod alerts;
mod ast;
mod classify;
mod clock;
mod context;
mod delete;
mod error;
mod indexes;
pub mod pgcompat;
mod pipeline;
mod queries;
mod session;
mod statements;
mod utc_trunc;
mod views;
mod words;

pub use access::{
    Expiry, Grant, GuardedPlanner, Secret, SessionTables, authorize_other, authorize_plan,
    directory, redact, run_as,
};
pub use alerts::{DEFAULT_RETRIES, DEFAULT_WEBHOOK_TIMEOUT, RulePlanner};
pub use ast::{Done, table_name};
pub use classify::{
    AccessStatement, AlterTable, Classified, DropObjects, SextantStatement, classify, split,
};
pub use context::session_context;
pub use delete::DeleteStatement;
pub use error::{SqlError, contain_panic};
pub use pipeline::{Planned, plan, plan_other, plan_select};
pub use queries::{
    CANCELED, Queries, QueryGuard, QueryInfo, RowStream, TIMED_OUT, guarded,
    register_cancel_backend,
};
pub use session::Session;
pub use statements::{check_schema, execute};
pub use views::runtime::{rebuild_views, run_refresher, start_views};
