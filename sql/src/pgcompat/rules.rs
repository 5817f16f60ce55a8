//! Sextant's rewrite rules: one file per Postgres idiom that DataFusion
//! does not read as Postgres does, each rewriting the parsed statement into
//! SQL DataFusion plans to the same answer ([`super::parse`] says which run
//! on every statement and which only as a catalog query's fallbacks). This
//! file holds the AST pieces they share and registers the functions their
//! rewrites call.

pub(crate) mod array_subquery;
pub(crate) mod functions_in_from;
pub(crate) mod in_subquery;
pub(crate) mod names_that_must_resolve;
pub(crate) mod output_names;
pub(crate) mod percentile_arrays;
pub(crate) mod scalar_subqueries_as_aggregates;
pub(crate) mod session_functions;
pub(crate) mod subqueries_under_case_as_null;
pub(crate) mod templates;
pub(crate) mod time_literals;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, Query, Select, SelectItem, SetExpr, Statement, TableAlias, TableFactor,
    TableWithJoins,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Registers the functions the rewrites call (`sextant_null`,
/// `sextant_reg_found`).
pub(crate) fn register(ctx: &SessionContext) {
    subqueries_under_case_as_null::register(ctx);
    names_that_must_resolve::register(ctx);
    in_subquery::register(ctx);
}

/// An identifier as Postgres folds it: lower case unless quoted.
pub(crate) fn normalized(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// `f` is a call of `name` (unqualified or in `pg_catalog`).
pub(crate) fn is_call(f: &Function, name: &str) -> bool {
    let parts: Vec<&Ident> = f.name.0.iter().filter_map(|p| p.as_ident()).collect();
    match parts.as_slice() {
        [n] => n.quote_style.is_none() && n.value.eq_ignore_ascii_case(name),
        [s, n] => s.value.eq_ignore_ascii_case("pg_catalog") && n.value.eq_ignore_ascii_case(name),
        _ => false,
    }
}

/// `f` is called without arguments (`f()` or `f`).
pub(crate) fn no_args(f: &Function) -> bool {
    match &f.args {
        FunctionArguments::None => true,
        FunctionArguments::List(l) => l.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    }
}

/// `'s'`.
pub(crate) fn string_literal(s: String) -> Expr {
    Expr::Value(datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s).with_empty_span())
}

/// `(SELECT projection FROM from) AS alias`.
pub(crate) fn derived(
    projection: Vec<SelectItem>,
    from: Vec<TableFactor>,
    alias: TableAlias,
) -> TableFactor {
    let subquery = Query {
        body: Box::new(SetExpr::Select(Box::new(Select {
            projection,
            from: from
                .into_iter()
                .map(|relation| TableWithJoins {
                    relation,
                    joins: vec![],
                })
                .collect(),
            ..empty_select()
        }))),
        ..empty_query()
    };
    TableFactor::Derived {
        lateral: false,
        subquery: Box::new(subquery),
        alias: Some(alias),
        sample: None,
    }
}

/// `name(args...)`.
pub(crate) fn call(name: &str, args: Vec<Expr>) -> Expr {
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

/// `SELECT 1` as a [`Select`], to fill in with `..empty_select()`.
pub(crate) fn empty_select() -> Select {
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

/// `SELECT 1` as a [`Query`], to fill in with `..empty_query()`.
pub(crate) fn empty_query() -> Query {
    match Parser::parse_sql(&PostgreSqlDialect {}, "SELECT 1") {
        Ok(mut s) => match s.pop() {
            Some(Statement::Query(q)) => *q,
            _ => unreachable!("SELECT 1 is a query"),
        },
        Err(_) => unreachable!("SELECT 1 parses"),
    }
}
