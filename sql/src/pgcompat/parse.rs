//! Parsing and planning one statement: the order the rules run in
//! ([`parse_statement`]: on every statement) and the fallbacks of a catalog
//! query DataFusion cannot plan as written ([`plan_query`]).

use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use datafusion::sql::sqlparser::ast::{ObjectName, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall,
    FixArrayLiteral, FixVersionColumnName, PrependUnqualifiedPgTableName,
    ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation, RewritePgCatalogOperator,
    RewriteRegCastToSubquery, SqlStatementRewriteRule, StripCallableQualifier, StripCollate,
};

use super::rules::array_subquery::array_subqueries;
use super::rules::functions_in_from::functions_in_from;
use super::rules::in_subquery::in_subqueries_outside_filters;
use super::rules::names_that_must_resolve::names_that_must_resolve;
use super::rules::output_names::name_output_columns;
use super::rules::percentile_arrays::percentile_arrays;
use super::rules::scalar_subqueries_as_aggregates::scalar_subqueries_as_aggregates;
use super::rules::session_functions::session_functions;
use super::rules::subqueries_under_case_as_null::subqueries_under_case_as_null;
use super::rules::time_literals::time_literals;
use crate::SqlError;
use crate::session::Session;

/// Parses one statement (`sql` holds exactly one, as [`crate::split`] gives),
/// as written; text only the compatibility parser reads (e.g. `ABORT`) goes
/// through it.
pub fn parse_statement(sql: &str, session: &Session<'_>) -> Result<Statement, SqlError> {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(mut stmts) if stmts.len() == 1 => {
            let mut stmt = stmts.remove(0);
            // sqlparser reads a bare `SHOW` as showing no variable, which
            // the SHOW hook indexes (a panic); PostgreSQL's error instead.
            if matches!(&stmt, Statement::ShowVariable { variable } if variable.is_empty()) {
                return Err(SqlError::syntax("syntax error at end of input"));
            }
            super::arithmetic::literals_in_range(&stmt)?;
            super::arithmetic::parameters_in_range(&stmt)?;
            super::arithmetic::subqueries_have_a_column(&stmt)?;
            super::rules::templates::templates(&mut stmt)?;
            name_output_columns(&mut stmt);
            names_that_must_resolve(&mut stmt);
            for rule in user_rules() {
                stmt = rule.rewrite(stmt);
            }
            sextant_rules(&mut stmt, session);
            Ok(stmt)
        }
        Ok(_) => Err(SqlError::syntax("expected exactly one statement")),
        Err(plain) => compatibility_parse(sql, session).map_err(|_| {
            // The plain parser's message reads better when both fail.
            SqlError::from(datafusion::error::DataFusionError::from(plain))
        }),
    }
}

/// Plans a statement from [`parse_statement`]. A catalog query DataFusion
/// cannot plan as written gets a second chance through datafusion-pg-catalog's
/// compatibility parser (its whole-query substitutions and the rule that
/// answers unplannable select-list subqueries with NULL); a user's query
/// never does, so it fails rather than answer wrongly.
pub async fn plan_query(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    stmt: Statement,
    session: &Session<'_>,
) -> Result<(Statement, datafusion::logical_expr::LogicalPlan), SqlError> {
    let mut stmt = stmt;
    functions_in_from(&mut stmt, ctx.state().table_functions());
    let first = match plan_checked(ctx, stmt.clone()).await {
        Ok(plan) => return Ok((stmt, plan)),
        Err(e) if !is_catalog_query(&stmt) => return Err(e),
        Err(e) => e,
    };
    // A catalog lookup by key returns at most one row per outer row, so its
    // scalar subqueries can be made aggregates, which DataFusion decorrelates.
    let mut aggregated = stmt;
    if scalar_subqueries_as_aggregates(&mut aggregated)
        && let Ok(plan) = plan_checked(ctx, aggregated.clone()).await
    {
        return Ok((aggregated, plan));
    }
    let Ok(mut compat) = compatibility_parse(sql, session) else {
        return Err(first);
    };
    functions_in_from(&mut compat, ctx.state().table_functions());
    scalar_subqueries_as_aggregates(&mut compat);
    if let Ok(plan) = plan_checked(ctx, compat.clone()).await {
        return Ok((compat, plan));
    }
    // Last: what datafusion-pg-catalog does for subqueries it cannot plan in
    // a select list, also under CASE (SQLAlchemy's column reflection): NULL.
    if subqueries_under_case_as_null(&mut compat)
        && let Ok(plan) = plan_checked(ctx, compat.clone()).await
    {
        return Ok((compat, plan));
    }
    Err(first)
}

/// Plans `stmt` and, when it has subqueries or reads the catalog, runs the
/// optimizer over the plan once, so a plan DataFusion cannot execute (an
/// undecorrelatable subquery) fails here; the plan returned is the
/// unoptimized one, which parameters bind into.
async fn plan_checked(
    ctx: &datafusion::prelude::SessionContext,
    stmt: Statement,
) -> Result<datafusion::logical_expr::LogicalPlan, SqlError> {
    let catalog = is_catalog_query(&stmt);
    let plan = plan_statement(ctx, stmt).await?;
    // Without subqueries the optimizer finds nothing here that it would
    // not find when the statement runs, and optimizing twice doubles the
    // planning of a join of many tables (most of it in the optimizer).
    if !catalog && !has_subquery(&plan)? {
        return Ok(plan);
    }
    let state = ctx.state();
    let optimized = state.optimize(&plan)?;
    // A catalog query is small: build its physical plan too, so that a
    // subquery DataFusion cannot execute fails here, while there is a
    // fallback, rather than when it runs.
    if catalog {
        // Parameters are bound later; NULLs of their types stand in here.
        let types = plan.get_parameter_types()?;
        let checked = if types.is_empty() {
            optimized
        } else {
            // By name: a rewrite may have dropped some of `$1`..`$n`.
            let nulls = types
                .into_iter()
                .map(|(name, t)| {
                    let null = t.map_or(Ok(datafusion::common::ScalarValue::Null), |t| {
                        datafusion::common::ScalarValue::try_from(&t)
                    })?;
                    Ok((name.trim_start_matches('$').to_string(), null))
                })
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            state.optimize(&plan.clone().with_param_values(nulls)?)?
        };
        state.create_physical_plan(&checked).await?;
    }
    Ok(plan)
}

fn has_subquery(plan: &datafusion::logical_expr::LogicalPlan) -> Result<bool, SqlError> {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::LogicalPlan;
    Ok(plan.exists(|p| {
        Ok(matches!(p, LogicalPlan::Subquery(_))
            || p.expressions().iter().any(|e| {
                e.exists(|e| Ok(super::correlated::is_subquery(e)))
                    .unwrap_or(true)
            }))
    })?)
}

fn compatibility_parse(sql: &str, session: &Session<'_>) -> Result<Statement, SqlError> {
    let mut stmts = compatibility_parser()
        .parse(sql)
        .map_err(|e| SqlError::from(datafusion::error::DataFusionError::from(e)))?;
    if stmts.len() != 1 {
        return Err(SqlError::syntax("expected exactly one statement"));
    }
    let mut stmt = stmts.remove(0);
    super::arithmetic::parameters_in_range(&stmt)?;
    name_output_columns(&mut stmt);
    sextant_rules(&mut stmt, session);
    Ok(stmt)
}

/// Sextant's rules that run after datafusion-pg-catalog's (and on what its
/// compatibility parser gives).
fn sextant_rules(stmt: &mut Statement, session: &Session<'_>) {
    session_functions(stmt, session);
    time_literals(stmt);
    percentile_arrays(stmt);
    array_subqueries(stmt);
    in_subqueries_outside_filters(stmt);
}

fn compatibility_parser() -> &'static PostgresCompatibilityParser {
    static PARSER: OnceLock<PostgresCompatibilityParser> = OnceLock::new();
    PARSER.get_or_init(PostgresCompatibilityParser::new)
}

/// datafusion-pg-catalog's rules, in its order, without
/// `RemoveSubqueryFromProjection`.
fn user_rules() -> &'static [Arc<dyn SqlStatementRewriteRule>] {
    static RULES: OnceLock<Vec<Arc<dyn SqlStatementRewriteRule>>> = OnceLock::new();
    RULES.get_or_init(|| {
        vec![
            Arc::new(AliasDuplicatedProjectionRewrite),
            Arc::new(ResolveUnqualifiedIdentifier),
            Arc::new(RewriteArrayAnyAllOperation),
            Arc::new(PrependUnqualifiedPgTableName),
            Arc::new(StripCallableQualifier),
            Arc::new(FixArrayLiteral),
            Arc::new(CurrentUserVariableToSessionUserFunctionCall),
            Arc::new(StripCollate),
            Arc::new(RewritePgCatalogOperator),
            Arc::new(RewriteRegCastToSubquery::new()),
            Arc::new(FixVersionColumnName),
        ]
    })
}

/// Whether `stmt` reads a relation of `pg_catalog` or `information_schema`
/// (qualified, or a `pg_catalog` table name alone, as Postgres resolves it).
pub fn is_catalog_query(stmt: &Statement) -> bool {
    struct Finder(bool);
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let parts: Vec<String> = name
                .0
                .iter()
                .filter_map(|p| p.as_ident())
                .map(|i| i.value.to_lowercase())
                .collect();
            let catalog = match parts.as_slice() {
                [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
                [table] => PG_CATALOG_TABLES.contains(&table.as_str()),
                [] => false,
            };
            if catalog {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut f = Finder(false);
    let _ = stmt.visit(&mut f);
    f.0
}

/// Parses one statement as written (for statements a front end runs itself,
/// such as COPY).
pub fn parse_plain(sql: &str) -> Result<Statement, SqlError> {
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| SqlError::from(datafusion::error::DataFusionError::from(e)))?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        _ => Err(SqlError::syntax("expected exactly one statement")),
    }
}

/// Plans a statement from [`parse_statement`].
pub async fn plan_statement(
    ctx: &datafusion::prelude::SessionContext,
    stmt: Statement,
) -> Result<datafusion::logical_expr::LogicalPlan, SqlError> {
    crate::error::plan_contained(ctx, stmt).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> String {
        let setting = |name: &str| (name == "search_path").then(|| "public".to_string());
        let session = Session {
            user: "alice",
            pid: Some(4242),
            setting: &setting,
            principal: None,
        };
        parse_statement(s, &session).unwrap().to_string()
    }

    #[test]
    fn output_names_follow_postgres() {
        assert_eq!(
            sql(
                "SELECT 1, count(*), max(v), v, t.w, 1::int2, x::text, now()::date, CASE WHEN true THEN 1 END FROM t"
            ),
            "SELECT 1 AS \"?column?\", count(*) AS \"count\", max(v) AS \"max\", v, t.w, 1::INT2 AS \"int2\", x::TEXT AS \"x\", now()::DATE AS \"now\", CASE WHEN true THEN 1 END AS \"case\" FROM t"
        );
        // Repeats get a suffix; explicit aliases are kept.
        assert_eq!(
            sql("SELECT 1, 2, 3 AS a, 4 AS a"),
            "SELECT 1 AS \"?column?\", 2 AS \"?column?_2\", 3 AS a, 4 AS \"a_2\""
        );
        // Inside subqueries too, so an outer query can use the names.
        assert_eq!(
            sql("SELECT count FROM (SELECT count(*) FROM t) s"),
            "SELECT count FROM (SELECT count(*) AS \"count\" FROM t) s"
        );
    }

    #[test]
    fn correlated_subqueries_of_user_queries_are_kept() {
        let s = sql("SELECT host, (SELECT max(v) FROM m m2 WHERE m2.host = m.host) AS top FROM m");
        assert!(s.contains("(SELECT max(v)"), "{s}");
        // Catalog queries too, as long as DataFusion can plan them.
        let s = sql(
            "SELECT (SELECT relname FROM pg_catalog.pg_class c2 WHERE c2.oid = c.oid) FROM pg_catalog.pg_class c",
        );
        assert!(s.contains("(SELECT relname"), "{s}");
    }

    #[test]
    fn user_and_array_subqueries() {
        assert_eq!(sql("SELECT user"), "SELECT 'alice' AS \"user\"");
        assert_eq!(
            sql("SELECT pg_backend_pid()"),
            "SELECT 4242 AS \"pg_backend_pid\""
        );
        assert_eq!(
            sql("SELECT current_user, session_user"),
            "SELECT 'alice' AS \"current_user\", 'alice' AS \"session_user\""
        );
        assert_eq!(
            sql("SELECT current_setting('search_path'), current_setting('x', true)"),
            "SELECT 'public' AS \"current_setting\", current_setting('x', true) AS \"current_setting_2\""
        );
        assert_eq!(
            sql("SELECT array(SELECT 'toast.' || x FROM unnest(r) x)"),
            "SELECT array_transform(r, x -> 'toast.' || x) AS \"array\""
        );
        assert_eq!(
            sql("SELECT array(SELECT x FROM unnest(r) AS u(x) WHERE x > 1)"),
            "SELECT array_transform(array_filter(r, x -> x > 1), x -> x) AS \"array\""
        );
        assert_eq!(
            sql("SELECT array(SELECT a FROM t)"),
            "SELECT (SELECT array_agg(__sextant_array.v) FROM (SELECT a FROM t) AS __sextant_array (v)) AS \"array\""
        );
    }

    #[test]
    fn catalog_queries_are_recognized() {
        let q =
            |s: &str| is_catalog_query(&Parser::parse_sql(&PostgreSqlDialect {}, s).unwrap()[0]);
        assert!(q("SELECT * FROM pg_catalog.pg_class"));
        assert!(q("SELECT * FROM pg_namespace"));
        assert!(q("SELECT * FROM information_schema.columns"));
        assert!(!q("SELECT * FROM cpu"));
        assert!(!q("SELECT * FROM system.tables"));
    }
}
