//! Postgres SQL as Sextant reads it: one statement's text in, a statement
//! DataFusion can plan out, for every SQL front end alike.
//!
//! Catalog queries (a tool reading `pg_catalog` or `information_schema`) go
//! through datafusion-pg-catalog's compatibility parser, which is made for
//! them: it swaps a few whole client queries it knows for ones DataFusion
//! can run, and rewrites catalog idioms. Every other statement is parsed as
//! written and gets the same rewrite rules except one: the rule that turns
//! a correlated subquery in a select list into NULL (right for catalog
//! queries DataFusion cannot plan, a silently wrong answer for a user's
//! query, which DataFusion plans well). Both then get Sextant's own rules:
//! Postgres' names for output columns, the session's user and settings
//! (`current_user`, `current_setting('...')`), and `ARRAY(subquery)`.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, OnceLock};

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    LambdaFunction, LambdaFunctionParameter, LambdaSyntax, ObjectName, OneOrManyWithParens, Query,
    Select, SelectItem, SetExpr, Statement, TableAlias, TableAliasColumnDef, TableFactor,
    TableWithJoins, Visit, VisitMut, Visitor, VisitorMut,
};
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

use crate::SqlError;

/// What a statement may ask of its session: `current_user` and
/// `current_setting('name')` become these values.
pub struct Session<'a> {
    /// The user the connection logged in as.
    pub user: &'a str,
    /// A setting's value in this session, if it has one.
    pub setting: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
}

/// Parses one statement (`sql` holds exactly one, as [`crate::split`] gives).
pub fn parse_statement(sql: &str, session: &Session<'_>) -> Result<Statement, SqlError> {
    let dialect = PostgreSqlDialect {};
    let plain = Parser::parse_sql(&dialect, sql);
    let mut stmt = match plain {
        Ok(mut stmts) if stmts.len() == 1 && !is_catalog_query(&stmts[0]) => {
            let mut stmt = stmts.remove(0);
            name_output_columns(&mut stmt);
            for rule in user_rules() {
                stmt = rule.rewrite(stmt);
            }
            stmt
        }
        // Catalog queries, and text only the compatibility parser reads
        // (e.g. `ABORT`): its whole pipeline.
        plain => {
            let mut stmts = compatibility_parser().parse(sql).map_err(|e| match plain {
                // The plain parser's message reads better when both fail.
                Err(plain) => SqlError::from(datafusion::error::DataFusionError::from(plain)),
                Ok(_) => SqlError::from(datafusion::error::DataFusionError::from(e)),
            })?;
            if stmts.len() != 1 {
                return Err(SqlError::syntax("expected exactly one statement"));
            }
            let mut stmt = stmts.remove(0);
            name_output_columns(&mut stmt);
            stmt
        }
    };
    let _ = VisitMut::visit(&mut stmt, &mut SessionFunctions { session });
    Ok(stmt)
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
    Ok(ctx
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            stmt,
        )))
        .await?)
}

// ---------------------------------------------------------------------------
// Output column names

/// Gives every computed output column the name Postgres gives it (`count`
/// for `count(*)`, `?column?` for `1 + 1`, `int4` for `1::int4`, ...), where
/// DataFusion would name it after the whole expression. Columns that would
/// share a name get a `_2`, `_3`, ... suffix: DataFusion needs unique names
/// where Postgres allows repeats.
fn name_output_columns(stmt: &mut Statement) {
    struct Namer;
    impl VisitorMut for Namer {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            name_set_expr(&mut query.body);
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Namer);
}

fn name_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => name_select(select),
        // The first branch names a set operation's columns.
        SetExpr::SetOperation { left, .. } => name_set_expr(left),
        SetExpr::Query(q) => name_set_expr(&mut q.body),
        _ => {}
    }
}

fn name_select(select: &mut Select) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in &mut select.projection {
        let name = match item {
            SelectItem::UnnamedExpr(Expr::Identifier(id)) => Some(normalized(id)),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(ids)) => ids.last().map(normalized),
            SelectItem::UnnamedExpr(e) => {
                let name = figure_name(e).unwrap_or_else(|| "?column?".to_string());
                *item = SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::with_quote('"', name.clone()),
                };
                Some(name)
            }
            SelectItem::ExprWithAlias { alias, .. } => Some(normalized(alias)),
            _ => None,
        };
        let Some(name) = name else { continue };
        let n = seen.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            let unique = format!("{name}_{n}");
            match item {
                SelectItem::ExprWithAlias { alias, .. } => {
                    *alias = Ident::with_quote('"', unique);
                }
                SelectItem::UnnamedExpr(e) => {
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias: Ident::with_quote('"', unique),
                    };
                }
                _ => {}
            }
        }
    }
}

fn normalized(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// The name Postgres gives an output column computed by `e` (its
/// `FigureColname`), or `None` for `?column?`.
fn figure_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(normalized(id)),
        Expr::CompoundIdentifier(ids) => ids.last().map(normalized),
        Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).map(normalized),
        Expr::Cast {
            expr, data_type, ..
        } => figure_name_strong(expr).or_else(|| Some(type_name(data_type))),
        Expr::Nested(inner) => figure_name(inner),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Array(_) => Some("array".into()),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Trim { .. } => Some("btrim".into()),
        Expr::Overlay { .. } => Some("overlay".into()),
        Expr::AtTimeZone { .. } => Some("timezone".into()),
        Expr::Interval(_) => Some("interval".into()),
        Expr::TypedString(t) => Some(type_name(&t.data_type)),
        Expr::CompoundFieldAccess { root, .. } => figure_name(root),
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(s) => match s.projection.first() {
                Some(SelectItem::ExprWithAlias { alias, .. }) => Some(normalized(alias)),
                Some(SelectItem::UnnamedExpr(e)) => figure_name(e),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// A name from a column or function only (what a cast defers to).
fn figure_name_strong(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Function(_) => figure_name(e),
        Expr::Nested(inner) => figure_name_strong(inner),
        Expr::Cast { .. } => figure_name(e),
        _ => None,
    }
}

/// A SQL type as Postgres names it in `pg_type` (`int4`, `float8`, ...).
fn type_name(t: &datafusion::sql::sqlparser::ast::DataType) -> String {
    use datafusion::sql::sqlparser::ast::{DataType as T, TimezoneInfo};
    match t {
        T::SmallInt(_) | T::Int2(_) => "int2".into(),
        T::Int(_) | T::Integer(_) | T::Int4(_) => "int4".into(),
        T::BigInt(_) | T::Int8(_) => "int8".into(),
        T::Real | T::Float4 => "float4".into(),
        T::Double(_) | T::DoublePrecision | T::Float8 | T::Float(_) => "float8".into(),
        T::Numeric(_) | T::Decimal(_) | T::Dec(_) => "numeric".into(),
        T::Text | T::String(_) => "text".into(),
        T::Varchar(_) | T::CharacterVarying(_) => "varchar".into(),
        T::Char(_) | T::Character(_) => "bpchar".into(),
        T::Boolean | T::Bool => "bool".into(),
        T::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => "timestamptz".into(),
        T::Timestamp(_, _) => "timestamp".into(),
        T::Date => "date".into(),
        T::Time(_, _) => "time".into(),
        T::Interval { .. } => "interval".into(),
        T::Bytea => "bytea".into(),
        T::Uuid => "uuid".into(),
        T::JSON => "json".into(),
        T::JSONB => "jsonb".into(),
        T::Custom(name, _) => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(normalized)
            .unwrap_or_else(|| "?column?".into()),
        other => other.to_string().to_lowercase(),
    }
}

// ---------------------------------------------------------------------------
// The session's user and settings, and `ARRAY(subquery)`

struct SessionFunctions<'a, 'b> {
    session: &'a Session<'b>,
}

/// `f` is a call of `name` (unqualified or in `pg_catalog`).
fn is_call(f: &Function, name: &str) -> bool {
    let parts: Vec<&Ident> = f.name.0.iter().filter_map(|p| p.as_ident()).collect();
    match parts.as_slice() {
        [n] => n.quote_style.is_none() && n.value.eq_ignore_ascii_case(name),
        [s, n] => s.value.eq_ignore_ascii_case("pg_catalog") && n.value.eq_ignore_ascii_case(name),
        _ => false,
    }
}

fn no_args(f: &Function) -> bool {
    match &f.args {
        FunctionArguments::None => true,
        FunctionArguments::List(l) => l.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    }
}

fn string_literal(s: String) -> Expr {
    Expr::Value(datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s).with_empty_span())
}

impl VisitorMut for SessionFunctions<'_, '_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        // `user`, `current_user`, `session_user` (which datafusion-pg-catalog
        // turns `current_user` into): the connection's user.
        if ["user", "current_user", "session_user", "current_role"]
            .iter()
            .any(|n| is_call(f, n))
            && no_args(f)
        {
            *expr = string_literal(self.session.user.to_string());
        } else if is_call(f, "current_setting")
            && let FunctionArguments::List(l) = &f.args
            && let [
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))),
                rest @ ..,
            ] = l.args.as_slice()
            && rest.len() <= 1
            && let datafusion::sql::sqlparser::ast::Value::SingleQuotedString(name) = &v.value
            && let Some(value) = (self.session.setting)(name)
        {
            // A literal name: this session's value (a computed name gets
            // the server's default from the function itself).
            *expr = string_literal(value);
        } else if is_call(f, "array")
            && f.name.0.len() == 1
            && let FunctionArguments::Subquery(q) = &f.args
            && let Some(e) = array_of_subquery(q)
        {
            *expr = e;
        }
        ControlFlow::Continue(())
    }
}

/// `ARRAY(SELECT f(x) FROM unnest(a) x [WHERE p(x)])` becomes
/// `array_transform(array_filter(a, x -> p(x)), x -> f(x))`; any other
/// `ARRAY(subquery)` becomes `(SELECT array_agg(v) FROM (subquery) AS s(v))`.
fn array_of_subquery(q: &Query) -> Option<Expr> {
    if let Some(e) = array_over_unnest(q) {
        return Some(e);
    }
    let sub = Query {
        body: Box::new(SetExpr::Select(Box::new(Select {
            projection: vec![SelectItem::UnnamedExpr(call(
                "array_agg",
                vec![Expr::CompoundIdentifier(vec![
                    Ident::new("__sextant_array"),
                    Ident::new("v"),
                ])],
            ))],
            from: vec![TableWithJoins {
                relation: TableFactor::Derived {
                    lateral: false,
                    subquery: Box::new(q.clone()),
                    alias: Some(TableAlias {
                        explicit: true,
                        name: Ident::new("__sextant_array"),
                        columns: vec![TableAliasColumnDef::from_name("v")],
                        at: None,
                    }),
                    sample: None,
                },
                joins: vec![],
            }],
            ..empty_select()
        }))),
        ..empty_query()
    };
    Some(Expr::Subquery(Box::new(sub)))
}

fn array_over_unnest(q: &Query) -> Option<Expr> {
    if q.order_by.is_some() || q.limit_clause.is_some() || q.with.is_some() {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [SelectItem::UnnamedExpr(body) | SelectItem::ExprWithAlias { expr: body, .. }] =
        s.projection.as_slice()
    else {
        return None;
    };
    let [TableWithJoins { relation, joins }] = s.from.as_slice() else {
        return None;
    };
    if !joins.is_empty()
        || s.group_by != datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(vec![], vec![])
        || s.having.is_some()
        || s.distinct.is_some()
    {
        return None;
    }
    let (array, alias) = match relation {
        TableFactor::UNNEST {
            alias: Some(alias),
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } if array_exprs.len() == 1 => (array_exprs[0].clone(), alias),
        TableFactor::Table {
            name,
            alias: Some(alias),
            args: Some(args),
            ..
        } if name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| i.value.eq_ignore_ascii_case("unnest"))
            && args.args.len() == 1 =>
        {
            let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = &args.args[0] else {
                return None;
            };
            (e.clone(), alias)
        }
        _ => return None,
    };
    // The element is named by the alias's column list, else by the alias.
    let param = match alias.columns.as_slice() {
        [] => alias.name.clone(),
        [c] => c.name.clone(),
        _ => return None,
    };
    let lambda = |body: Expr| {
        Expr::Lambda(LambdaFunction {
            params: OneOrManyWithParens::One(LambdaFunctionParameter {
                name: param.clone(),
                data_type: None,
            }),
            body: Box::new(body),
            syntax: LambdaSyntax::Arrow,
        })
    };
    let mut array = array;
    if let Some(predicate) = &s.selection {
        array = call("array_filter", vec![array, lambda(predicate.clone())]);
    }
    Some(call("array_transform", vec![array, lambda(body.clone())]))
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn empty_select() -> Select {
    match Parser::parse_sql(&PostgreSqlDialect {}, "SELECT 1") {
        Ok(mut s) => match s.pop() {
            Some(Statement::Query(q)) => match *q.body {
                SetExpr::Select(s) => *s,
                _ => unreachable!("SELECT 1 is a select"),
            },
            _ => unreachable!("SELECT 1 is a query"),
        },
        Err(_) => unreachable!("SELECT 1 parses"),
    }
}

fn empty_query() -> Query {
    match Parser::parse_sql(&PostgreSqlDialect {}, "SELECT 1") {
        Ok(mut s) => match s.pop() {
            Some(Statement::Query(q)) => *q,
            _ => unreachable!("SELECT 1 is a query"),
        },
        Err(_) => unreachable!("SELECT 1 parses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> String {
        let setting = |name: &str| (name == "search_path").then(|| "public".to_string());
        let session = Session {
            user: "alice",
            setting: &setting,
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
        // A catalog query goes through the compatibility parser.
        let s = sql(
            "SELECT (SELECT relname FROM pg_catalog.pg_class c2 WHERE c2.oid = c.oid) FROM pg_catalog.pg_class c",
        );
        assert!(s.contains("NULL"), "{s}");
    }

    #[test]
    fn user_and_array_subqueries() {
        assert_eq!(sql("SELECT user"), "SELECT 'alice' AS \"user\"");
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
