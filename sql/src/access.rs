//! Who may do what, in SQL.
//!
//! The statements that manage users (`CREATE USER`, `ALTER USER`, `DROP
//! USER`), privileges (`GRANT`, `REVOKE`) and tokens (`CREATE TOKEN`, `DROP
//! TOKEN`) are parsed here and carried out by the server's [`Directory`]
//! (a session-config extension).
//!
//! Checks happen in two places. Sextant's own statements are checked before
//! they run ([`authorize_statement`]). Every plan DataFusion executes goes
//! through [`GuardedPlanner`], which walks the whole logical plan, subqueries
//! included, for the principal of the current task ([`run_as`]): a table scan
//! needs SELECT, an INSERT (however it is reached: `INSERT ... SELECT`, a
//! prepared statement, `EXPLAIN ANALYZE`) needs INSERT, `COPY ... TO` a file
//! needs admin; for a non-admin the system tables are filtered down to the
//! rows that are theirs. Work with no principal (materialized views, alert
//! rules, the server's own telemetry) is the server's own and is not checked.
//!
//! ```sql
//! CREATE USER [IF NOT EXISTS] name [WITH] PASSWORD '...' [MD5] [SUPERUSER]
//! ALTER USER name [WITH] [PASSWORD '...' [MD5]] [SUPERUSER | NOSUPERUSER]
//! DROP USER [IF EXISTS] name [, ...]
//! GRANT {SELECT | INSERT | ALL | read | write | admin} [, ...]
//!   ON {DATABASE sextant | ALL TABLES | [TABLE] t [, ...]} TO user [, ...]
//! REVOKE ... ON ... FROM user [, ...]
//! CREATE TOKEN name FOR [USER] user [INSERT ON table] [EXPIRES IN '30 days' | EXPIRES '2027-01-01T00:00:00Z']
//! DROP TOKEN [IF EXISTS] name
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{
    Expr, Filter, JoinType, LogicalPlan, LogicalPlanBuilder, Projection, TableScan,
    TableScanBuilder, TableSource, WriteOp, lit,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use sextant_auth::{Action, AuthError, Directory, Principal};

use crate::SqlError;
use crate::ast::table_name;
use crate::classify::SextantStatement;

mod statement;
pub use statement::{AccessStatement, Expiry, Grant, Secret, redact};
pub(crate) use statement::{execute, parse};

impl From<AuthError> for SqlError {
    fn from(e: AuthError) -> Self {
        SqlError::new(e.sqlstate(), e.to_string())
    }
}

tokio::task_local! {
    static PRINCIPAL: Principal;
}

/// Runs `fut` as `who`: every plan it executes is checked for `who`.
pub async fn run_as<F: std::future::Future>(who: Principal, fut: F) -> F::Output {
    PRINCIPAL.scope(who, fut).await
}

/// The principal of the current task, if a front end set one.
fn current() -> Option<Principal> {
    PRINCIPAL.try_with(Principal::clone).ok()
}

/// The server's directory of users, from the session.
pub fn directory(ctx: &SessionContext) -> Result<Arc<Directory>, SqlError> {
    ctx.state_ref()
        .read()
        .config()
        .get_extension::<Directory>()
        .ok_or_else(|| SqlError::internal("the session has no user directory"))
}

// ---------------------------------------------------------------------------
// The physical planner every front end's plans go through

/// DataFusion's physical planner, after [`authorize_plan`] for the current
/// task's principal.
#[derive(Debug)]
pub struct GuardedPlanner {
    directory: Arc<Directory>,
}

impl GuardedPlanner {
    pub fn new(directory: Arc<Directory>) -> Self {
        Self { directory }
    }
}

#[async_trait]
impl QueryPlanner for GuardedPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        state: &dyn Session,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let planner = DefaultPhysicalPlanner::default();
        match current() {
            None => planner.create_physical_plan(plan, state).await,
            Some(who) => {
                let pg_class = pg_class(plan, state).await?;
                let plan =
                    crate::pgcompat::privileges::bind(plan.clone(), &self.directory, &who, || {
                        crate::pgcompat::privileges::Names::of(state)
                    })?;
                let plan = {
                    let session = SessionTables {
                        user_tables: &|| user_tables(state),
                        pg_class,
                    };
                    authorize_plan(plan, &self.directory, &who, &session)
                        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
                };
                planner.create_physical_plan(&plan, state).await
            }
        }
    }
}

/// What the catalog filters of [`authorize_plan`] read of the session.
pub struct SessionTables<'a> {
    /// The names of Sextant's tables, all of them.
    pub user_tables: &'a dyn Fn() -> Vec<String>,
    /// `pg_catalog.pg_class`, which tells whose `pg_attribute` rows are
    /// (there by oid only); given when the plan reads `pg_attribute`.
    pub pg_class: Option<Arc<dyn TableSource>>,
}

/// `pg_catalog.pg_class` of the session, if `plan` reads `pg_attribute`.
async fn pg_class(
    plan: &LogicalPlan,
    state: &dyn Session,
) -> datafusion::error::Result<Option<Arc<dyn TableSource>>> {
    let mut reads = false;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            reads |= is_pg_attribute(&scan.table_name);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Some(state) = state
        .as_any()
        .downcast_ref::<datafusion::execution::SessionState>()
        .filter(|_| reads)
    else {
        return Ok(None);
    };
    let defaults = &state.config().options().catalog;
    let Some(schema) = state
        .catalog_list()
        .catalog(&defaults.default_catalog)
        .and_then(|c| c.schema("pg_catalog"))
    else {
        return Ok(None);
    };
    Ok(schema.table("pg_class").await?.map(provider_as_source))
}

fn is_pg_attribute(t: &TableReference) -> bool {
    t.schema() == Some("pg_catalog") && t.table() == "pg_attribute"
}

/// The names of the tables in the session's default schema (Sextant's
/// tables).
fn user_tables(state: &dyn Session) -> Vec<String> {
    crate::pgcompat::privileges::Names::of(state).tables
}

/// Checks every node of `plan` for `who`, and for a non-admin filters the
/// system tables down to what is theirs, and the catalog tables
/// (`information_schema`, `pg_catalog`) down to the tables it may read
/// (`session` lists them all).
pub fn authorize_plan(
    plan: LogicalPlan,
    directory: &Directory,
    who: &Principal,
    session: &SessionTables<'_>,
) -> Result<LogicalPlan, SqlError> {
    check_plan(&plan, directory, who)?;
    if directory.is_admin(who) {
        return Ok(plan);
    }
    // The tables it may not read, once a catalog table asks for them.
    let mut hidden: Option<Vec<String>> = None;
    let mut hidden = || {
        hidden
            .get_or_insert_with(|| match directory.readable_tables(who) {
                None => vec![],
                Some(readable) => (session.user_tables)()
                    .into_iter()
                    .filter(|t| !readable.contains(t))
                    .collect(),
            })
            .clone()
    };
    let filtered = plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::TableScan(scan) if is_system(&scan.table_name) => {
            Ok(Transformed::yes(filter_system(scan, directory, who)?))
        }
        LogicalPlan::TableScan(scan) if is_pg_attribute(&scan.table_name) => {
            let hidden = hidden();
            match &session.pg_class {
                Some(pg_class) if !hidden.is_empty() => Ok(Transformed::yes(filter_attributes(
                    scan,
                    hidden,
                    Arc::clone(pg_class),
                )?)),
                // No pg_class to tell the rows apart: none of them.
                None if !hidden.is_empty() => Ok(Transformed::yes(with_filter(scan, lit(false))?)),
                _ => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
            }
        }
        LogicalPlan::TableScan(scan) if catalog_names(&scan.table_name).is_some() => {
            let hidden = hidden();
            if hidden.is_empty() {
                Ok(Transformed::no(LogicalPlan::TableScan(scan)))
            } else {
                Ok(Transformed::yes(filter_catalog(scan, hidden)?))
            }
        }
        other => Ok(Transformed::no(other)),
    })?;
    Ok(filtered.data)
}

/// Rows a front end put in memory itself (`CREATE TOKEN`'s answer, read
/// as a batch): no table of anyone's.
fn is_in_memory(scan: &TableScan) -> bool {
    scan.table_name.table() == datafusion::logical_expr::UNNAMED_TABLE
        && datafusion::datasource::source_as_provider(&scan.source).is_ok_and(|p| {
            p.downcast_ref::<datafusion::datasource::MemTable>()
                .is_some()
        })
}

fn is_system(t: &TableReference) -> bool {
    t.schema() == Some("system")
}

/// For a catalog table that lists tables by name: the column of the name,
/// and of its schema if it has one.
fn catalog_names(t: &TableReference) -> Option<(&'static str, Option<&'static str>)> {
    match (t.schema()?, t.table()) {
        ("information_schema", "tables" | "columns" | "views") => {
            Some(("table_name", Some("table_schema")))
        }
        ("pg_catalog", "pg_tables") => Some(("tablename", Some("schemaname"))),
        ("pg_catalog", "pg_views") => Some(("viewname", Some("schemaname"))),
        ("pg_catalog", "pg_class") => Some(("relname", None)),
        _ => None,
    }
}

/// A catalog table without the rows of `hidden` tables (of the default
/// schema, where the table says its schema).
fn filter_catalog(scan: TableScan, hidden: Vec<String>) -> datafusion::error::Result<LogicalPlan> {
    let Some((name, schema)) = catalog_names(&scan.table_name) else {
        return Ok(LogicalPlan::TableScan(scan));
    };
    let column = |c: &str| Expr::Column(Column::new(Some(scan.table_name.clone()), c));
    let mut is_hidden = column(name).in_list(hidden.into_iter().map(lit).collect(), false);
    if let Some(schema) = schema {
        is_hidden = is_hidden.and(column(schema).eq(lit("public")));
    }
    with_filter(scan, !is_hidden)
}

/// `pg_attribute` without the columns of `hidden` tables: the rows whose
/// `attrelid` is not the oid `pg_class` gives one of them.
fn filter_attributes(
    scan: TableScan,
    hidden: Vec<String>,
    pg_class: Arc<dyn TableSource>,
) -> datafusion::error::Result<LogicalPlan> {
    let attrelid = Column::new(Some(scan.table_name.clone()), "attrelid");
    let (wanted, attributes) = all_columns(scan)?;
    // Sextant's pg_class is a view over datafusion-pg-catalog's: its plan,
    // not the view, or planning the view would filter it for this user too.
    let rel = TableReference::partial("pg_catalog", "pg_class");
    let classes = match pg_class.get_logical_plan() {
        Some(plan) => LogicalPlanBuilder::from(plan.into_owned()),
        None => LogicalPlanBuilder::scan(rel, pg_class, None)?,
    };
    let names = hidden.into_iter().map(lit).collect();
    let hidden_oids = classes
        .filter(Expr::Column(Column::from_name("relname")).in_list(names, false))?
        .project([Expr::Column(Column::from_name("oid")).alias("hidden_oid")])?
        .build()?;
    LogicalPlanBuilder::from(LogicalPlan::TableScan(attributes))
        .join(
            hidden_oids,
            JoinType::LeftAnti,
            (vec![attrelid], vec![Column::from_name("hidden_oid")]),
            None,
        )?
        .project(wanted)?
        .build()
}

/// Whether `who` may run `plan`: SELECT on every table it reads, INSERT on
/// the table it inserts into, admin for DDL and for writing files. Nothing
/// is filtered; [`authorize_plan`] does that once the plan runs.
pub(crate) fn check_plan(
    plan: &LogicalPlan,
    directory: &Directory,
    who: &Principal,
) -> Result<(), SqlError> {
    let mut denied = None;
    plan.apply_with_subqueries(|node| {
        if let Err(e) = check_node(node, directory, who) {
            denied = Some(e);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match denied {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn check_node(node: &LogicalPlan, directory: &Directory, who: &Principal) -> Result<(), AuthError> {
    match node {
        LogicalPlan::TableScan(scan) => match scan.table_name.schema() {
            Some("system" | "pg_catalog" | "information_schema") => Ok(()),
            _ if is_in_memory(scan) => Ok(()),
            _ => directory.check(who, Action::Select(scan.table_name.table())),
        },
        LogicalPlan::Dml(dml) => match dml.op {
            WriteOp::Insert(_) => directory.check(who, Action::Insert(dml.table_name.table())),
            _ => directory.check(who, Action::Manage(dml.table_name.table())),
        },
        LogicalPlan::Copy(_) => directory.check(who, Action::Admin("write files on the server")),
        LogicalPlan::Ddl(_) => directory.check(who, Action::Admin("run DDL through DataFusion")),
        _ => Ok(()),
    }
}

/// What of a system table a non-admin sees: its own statements, user,
/// grants and tokens; the tables, files and views it may read; nothing of
/// the rest (WAL, metrics, alert rules).
fn filter_system(
    scan: TableScan,
    directory: &Directory,
    who: &Principal,
) -> datafusion::error::Result<LogicalPlan> {
    let own = |column: &'static str| Some((column, vec![who.user().to_string()]));
    let readable = |column: &'static str| {
        directory
            .readable_tables(who)
            .map(|tables| (column, tables))
    };
    let rule: Option<Option<(&'static str, Vec<String>)>> = match scan.table_name.table() {
        "queries" | "users" | "grants" | "tokens" => Some(own("user_name")),
        "tables" | "files" | "compactions" | "deletes" => Some(readable("table_name")),
        "materialized_views" => Some(readable("view_name")),
        // Its figures name every table, as /metrics does.
        "metrics" if directory.readable_tables(who).is_none() => Some(None),
        _ => None,
    };
    let predicate = match rule {
        // Everything it may read: no filter.
        Some(None) => return Ok(LogicalPlan::TableScan(scan)),
        Some(Some((column, values))) => {
            let c = Expr::Column(Column::new(Some(scan.table_name.clone()), column));
            if values.is_empty() {
                lit(false)
            } else {
                c.in_list(values.into_iter().map(lit).collect(), false)
            }
        }
        None => lit(false),
    };
    with_filter(scan, predicate)
}

/// `scan` with only the rows `predicate` keeps. The filter's column may
/// have been projected out of the scan by the optimizer: scan all columns,
/// filter, then project what was asked.
fn with_filter(scan: TableScan, predicate: Expr) -> datafusion::error::Result<LogicalPlan> {
    let (wanted, full) = all_columns(scan)?;
    let filter = Filter::try_new(predicate, Arc::new(LogicalPlan::TableScan(full)))?;
    Ok(LogicalPlan::Projection(Projection::try_new(
        wanted,
        Arc::new(LogicalPlan::Filter(filter)),
    )?))
}

/// The columns `scan` gives, and `scan` with all the table's columns and
/// no limit, to filter before those columns are projected.
fn all_columns(scan: TableScan) -> datafusion::error::Result<(Vec<Expr>, TableScan)> {
    let wanted = scan
        .projected_schema
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let full = TableScanBuilder::from(scan)
        .with_projection(None)
        .with_fetch(None)
        .build()?;
    Ok((wanted, full))
}

/// A statement DataFusion answers without a plan to check (not a query or
/// an INSERT): settings, transactions and cursors are for anyone (the
/// queries a cursor, EXPLAIN, SHOW TABLES or SHOW COLUMNS runs are checked
/// when they are planned), `DESCRIBE t` needs SELECT on t; anything else that changes the database
/// is for an admin.
pub fn authorize_other(
    stmt: &Statement,
    directory: &Directory,
    who: &Principal,
) -> Result<(), SqlError> {
    use Statement as S;
    match stmt {
        S::Set(_)
        | S::ShowVariable { .. }
        | S::ShowVariables { .. }
        | S::ShowStatus { .. }
        | S::ShowColumns { .. }
        | S::ShowTables { .. }
        | S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. }
        | S::Declare { .. }
        | S::Fetch { .. }
        | S::Close { .. }
        | S::Discard { .. }
        | S::Deallocate { .. }
        | S::Prepare { .. }
        | S::Execute { .. }
        | S::Explain { .. }
        | S::Query(_)
        | S::Insert(_) => Ok(()),
        // DESCRIBE t shows t's columns: as much as a SELECT would.
        S::ExplainTable { table_name, .. } => match crate::ast::table_name(table_name) {
            Ok(t) => Ok(directory.check(who, Action::Select(&t))?),
            // Not a Sextant table: a catalog or system table, for anyone.
            Err(_) => Ok(()),
        },
        _ => Ok(directory.check(who, Action::Admin("run this statement"))?),
    }
}

// ---------------------------------------------------------------------------
// Sextant's own statements

/// Checks one of Sextant's statements before it runs.
pub(crate) fn authorize_statement(
    stmt: &SextantStatement,
    directory: &Directory,
    who: &Principal,
) -> Result<(), SqlError> {
    use SextantStatement as S;
    let each = |tables: &[String]| -> Result<(), SqlError> {
        for t in tables {
            directory.check(who, Action::Manage(t))?;
        }
        Ok(())
    };
    match stmt {
        S::CreateTable(ct) => each(&[table_name(&ct.name)?]),
        S::CreateIndex(ci) => each(std::slice::from_ref(&ci.table)),
        S::DropIndex(_) => Ok(directory.check(who, Action::Admin("drop indexes"))?),
        S::AlterTable(alter) => each(std::slice::from_ref(&alter.name)),
        S::DropTable(drop) => each(&drop.names),
        S::Flush(tables) | S::Compact(tables) | S::Check(tables) => each(tables),
        // Removing rows changes the table: ALL on it (or an admin).
        S::Delete(d) => each(std::slice::from_ref(&d.table)),
        S::RefreshView(name) => each(std::slice::from_ref(name)),
        S::CreateView(_) | S::DropView(_) => {
            Ok(directory.check(who, Action::Admin("create or drop materialized views"))?)
        }
        S::CreatePlainView { .. } | S::DropPlainView(_) => {
            Ok(directory.check(who, Action::Admin("create or drop views"))?)
        }
        S::CreateAlert { .. } | S::AlterAlert { .. } | S::DropAlert { .. } => {
            Ok(directory.check(who, Action::Admin("manage alert rules"))?)
        }
        // Checked as they run: KILL of one's own statement, ALTER USER of
        // one's own password, tokens of one's own.
        S::Kill(_) | S::Access(_) => Ok(()),
    }
}
