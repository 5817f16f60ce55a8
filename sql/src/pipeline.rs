//! The one way a statement becomes something to run, for every front end
//! (pgwire, Flight SQL), materialized view and alert rule.
//!
//! One statement's text (as [`crate::split`] gives it) → [`crate::classify`]
//! → one of Sextant's statements, checked for the principal, or SQL parsed
//! as Postgres reads it ([`crate::pgcompat::parse_statement`]) → a query or an
//! INSERT is planned by DataFusion ([`crate::pgcompat::plan_query`]) and its plan
//! checked for the principal, so a statement that may not run is refused
//! before anyone sees its result's columns; any other statement (SET, SHOW,
//! transactions, cursors, DESCRIBE) is checked and handed back for the
//! front end's session to answer. The physical planner checks every plan
//! again as it runs ([`crate::GuardedPlanner`]), and filters the catalog
//! and system tables down to what the principal may see.

use crate::session::Session;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use sextant_sqlstate::SqlState;

use crate::classify::{Classified, SextantStatement, classify};
use crate::{SqlError, access};

impl Session<'static> {
    /// The server's own work: the default settings, no principal.
    pub fn server() -> Self {
        Session {
            user: "sextant",
            pid: None,
            setting: &|name| {
                crate::pgcompat::settings::default_setting(name).map(|(_, v)| v.to_string())
            },
            principal: None,
        }
    }
}

/// A statement, ready to run.
#[derive(Debug, Clone)]
pub enum Planned {
    /// One of Sextant's own statements ([`crate::execute`] runs it).
    Sextant(SextantStatement),
    /// A query or an INSERT, as rewritten for DataFusion, and its logical
    /// plan (parameters unbound).
    Query {
        statement: Statement,
        plan: LogicalPlan,
    },
    /// A statement the front end's session answers (SET, SHOW,
    /// transactions, cursors, DESCRIBE, DDL through DataFusion), as
    /// rewritten; [`plan_other`] plans it where a front end needs a plan.
    Other(Statement),
}

/// Classifies, parses, plans and checks one statement for
/// `session.principal`. The text is one statement, without its `;`.
pub async fn plan(
    ctx: &SessionContext,
    text: &str,
    session: &Session<'_>,
) -> Result<Planned, SqlError> {
    let sql = match classify(text)? {
        Classified::Sextant(stmt) => {
            if let Some(who) = session.principal {
                let directory = access::directory(ctx)?;
                access::authorize_statement(&stmt, &directory, who)?;
            }
            return Ok(Planned::Sextant(stmt));
        }
        Classified::Sql(sql) => sql,
    };
    let stmt = crate::pgcompat::parse_statement(&sql, session)?;
    if !matches!(stmt, Statement::Query(_) | Statement::Insert(_)) {
        if let Some(who) = session.principal {
            access::authorize_other(&stmt, &*access::directory(ctx)?, who)?;
        }
        return Ok(Planned::Other(stmt));
    }
    let mut stmt = stmt;
    insert_arity(&stmt)?;
    fill_insert_columns(ctx, &mut stmt).await?;
    values_fit_not_null(ctx, &stmt).await?;
    let (statement, plan) = crate::pgcompat::plan_query(ctx, &sql, stmt, session).await?;
    let plan = crate::pgcompat::json_results(ctx, plan)?;
    if let Some(who) = session.principal {
        access::check_plan(&plan, &*access::directory(ctx)?, who)?;
    }
    Ok(Planned::Query { statement, plan })
}

/// DataFusion's plan of a statement [`plan`] handed back as
/// [`Planned::Other`], checked for `session.principal` (DDL needs admin).
pub async fn plan_other(
    ctx: &SessionContext,
    stmt: Statement,
    session: &Session<'_>,
) -> Result<LogicalPlan, SqlError> {
    let text = stmt.to_string();
    let (_, plan) = crate::pgcompat::plan_query(ctx, &text, stmt, session).await?;
    if let Some(who) = session.principal {
        access::check_plan(&plan, &*access::directory(ctx)?, who)?;
    }
    Ok(plan)
}

/// Plans the one SELECT of a materialized view or an alert rule: the
/// server's own work, read as a client's query is. `what` says what must
/// be a SELECT, for the error when it is not (42809).
pub async fn plan_select(
    ctx: &SessionContext,
    query: &str,
    what: &str,
) -> Result<LogicalPlan, SqlError> {
    let not_a_select = |text: &str| {
        SqlError::new(
            SqlState::WRONG_OBJECT_TYPE,
            format!(
                "{what} is one SELECT, not {}",
                text.split_whitespace()
                    .next()
                    .unwrap_or("an empty statement")
            ),
        )
    };
    let mut stmts = crate::split(query)?;
    let text = match (stmts.pop(), stmts.is_empty()) {
        (Some(text), true) => text,
        (Some(_), false) => return Err(not_a_select("several statements")),
        (None, _) => return Err(not_a_select("")),
    };
    match plan(ctx, &text, &Session::server()).await? {
        Planned::Query {
            statement: Statement::Query(_),
            plan,
        } => Ok(plan),
        _ => Err(not_a_select(&text)),
    }
}

/// `INSERT INTO t VALUES (...)` with fewer values than the table has
/// columns (a table line protocol widened, say) fills the rest with NULL,
/// as Postgres does: the statement gets the column list of the table's
/// first columns. More values than columns, or rows of different lengths,
/// are refused in Postgres' words (42601).
async fn fill_insert_columns(ctx: &SessionContext, stmt: &mut Statement) -> Result<(), SqlError> {
    use datafusion::sql::sqlparser::ast::{Ident, ObjectName};
    let Statement::Insert(insert) = stmt else {
        return Ok(());
    };
    if !insert.columns.is_empty() {
        return Ok(());
    }
    let Some(values) = insert_values(insert) else {
        return Ok(());
    };
    let Some(first) = values.rows.first() else {
        return Ok(());
    };
    let width = first.content.len();
    if values.rows.iter().any(|r| r.content.len() != width) {
        return Err(SqlError::syntax("VALUES lists must all be the same length"));
    }
    let Some((_, schema)) = insert_target(ctx, insert).await else {
        return Ok(());
    };
    match width.cmp(&schema.fields().len()) {
        std::cmp::Ordering::Greater => Err(SqlError::syntax(
            "INSERT has more expressions than target columns",
        )),
        std::cmp::Ordering::Less => {
            insert.columns = schema
                .fields()
                .iter()
                .take(width)
                .map(|f| ObjectName::from(vec![Ident::with_quote('"', f.name())]))
                .collect();
            Ok(())
        }
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// The rows of an `INSERT ... VALUES` (`None` for `INSERT ... SELECT`).
fn insert_values(
    insert: &datafusion::sql::sqlparser::ast::Insert,
) -> Option<&datafusion::sql::sqlparser::ast::Values> {
    match insert.source.as_deref().map(|q| q.body.as_ref()) {
        Some(SetExpr::Values(values)) => Some(values),
        _ => None,
    }
}

/// The table an INSERT writes to and the columns clients see in it;
/// `None` for a table that does not exist (DataFusion reports it, as for
/// any statement).
async fn insert_target(
    ctx: &SessionContext,
    insert: &datafusion::sql::sqlparser::ast::Insert,
) -> Option<(String, datafusion::arrow::datatypes::SchemaRef)> {
    let datafusion::sql::sqlparser::ast::TableObject::TableName(name) = &insert.table else {
        return None;
    };
    let table = crate::table_name(name).ok()?;
    let provider = ctx.table_provider(table.as_str()).await.ok()?;
    Some((table, provider.schema()))
}

/// `INSERT ... VALUES` that would put NULL in a NOT NULL column (a NULL
/// written there, or the column left out) fails as PostgreSQL fails, naming
/// the column and the table; DataFusion's own check names the VALUES list's
/// column (`column2`) instead.
async fn values_fit_not_null(ctx: &SessionContext, stmt: &Statement) -> Result<(), SqlError> {
    use datafusion::sql::sqlparser::ast::{Expr, Value};
    let Statement::Insert(insert) = stmt else {
        return Ok(());
    };
    let Some(values) = insert_values(insert) else {
        return Ok(());
    };
    let Some((table, schema)) = insert_target(ctx, insert).await else {
        return Ok(());
    };
    let targets: Vec<String> = if insert.columns.is_empty() {
        schema.fields().iter().map(|f| f.name().clone()).collect()
    } else {
        insert
            .columns
            .iter()
            .map(|c| crate::table_name(c).unwrap_or_else(|_| c.to_string()))
            .collect()
    };
    let violation = |column: &str| {
        SqlError::new(
            SqlState::NOT_NULL_VIOLATION,
            format!(
                "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
            ),
        )
    };
    for field in schema.fields().iter().filter(|f| !f.is_nullable()) {
        let Some(at) = targets.iter().position(|t| t == field.name()) else {
            return Err(violation(field.name()));
        };
        let null = |e: &Expr| matches!(e, Expr::Value(v) if matches!(v.value, Value::Null));
        if values
            .rows
            .iter()
            .any(|r| r.content.get(at).is_some_and(null))
        {
            return Err(violation(field.name()));
        }
    }
    Ok(())
}

/// `INSERT INTO t (a, b) VALUES (1, 2, 3)`: refused as Postgres refuses it
/// (42601, in its words), not with DataFusion's plan error.
fn insert_arity(stmt: &Statement) -> Result<(), SqlError> {
    let Statement::Insert(insert) = stmt else {
        return Ok(());
    };
    let Some(source) = insert
        .source
        .as_deref()
        .filter(|_| !insert.columns.is_empty())
    else {
        return Ok(());
    };
    let SetExpr::Values(values) = source.body.as_ref() else {
        return Ok(());
    };
    for row in &values.rows {
        match row.content.len().cmp(&insert.columns.len()) {
            std::cmp::Ordering::Greater => {
                return Err(SqlError::syntax(
                    "INSERT has more expressions than target columns",
                ));
            }
            std::cmp::Ordering::Less => {
                return Err(SqlError::syntax(
                    "INSERT has more target columns than expressions",
                ));
            }
            std::cmp::Ordering::Equal => {}
        }
    }
    Ok(())
}
