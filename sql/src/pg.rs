//! Postgres SQL as Sextant reads it: one statement's text in, a statement
//! DataFusion can plan out, for every SQL front end alike.
//!
//! A statement is parsed as written and gets datafusion-pg-catalog's rewrite
//! rules (Postgres idioms DataFusion lacks) except one: the rule that turns
//! a correlated subquery in a select list into NULL (a silently wrong answer
//! for a query DataFusion plans well). Then Sextant's own rules: Postgres'
//! names for output columns, the session's user and settings
//! (`current_user`, `current_setting('...')`), and `ARRAY(subquery)`. Only a
//! catalog query (a tool reading `pg_catalog` or `information_schema`) that
//! DataFusion cannot plan as written goes through datafusion-pg-catalog's
//! whole compatibility parser, which swaps the client queries it knows for
//! ones DataFusion can run ([`plan_query`]).

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
use crate::pipeline::Session;

/// Parses one statement (`sql` holds exactly one, as [`crate::split`] gives),
/// as written; text only the compatibility parser reads (e.g. `ABORT`) goes
/// through it.
pub fn parse_statement(sql: &str, session: &Session<'_>) -> Result<Statement, SqlError> {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(mut stmts) if stmts.len() == 1 => {
            let mut stmt = stmts.remove(0);
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

/// The function the rewrites use for a NULL that keeps its arguments'
/// parameters in the statement ([`register_functions`]).
const NULL_FUNCTION: &str = "sextant_null";

/// The function [`names_that_must_resolve`] wraps a name's oid in.
const FOUND_FUNCTION: &str = "sextant_reg_found";

/// Registers the functions the rewrites of this module call, and
/// Sextant's privilege functions (`has_table_privilege`, ...).
pub fn register_functions(ctx: &datafusion::prelude::SessionContext) {
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        NullFunction::new(),
    ));
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        FoundFunction::new(),
    ));
    crate::privileges::register(ctx);
}

/// The oid-alias types whose casts from a name look the name up, and what
/// Postgres says when there is no such name.
const REG_TYPES: &[(&str, &str, &str)] = &[
    ("regclass", "42P01", "relation"),
    ("regnamespace", "3F000", "schema"),
    ("regtype", "42704", "type"),
    ("regproc", "42883", "function"),
];

/// `'name'::regclass` (and `$1::regclass`, regnamespace, regtype, regproc)
/// as `sextant_reg_found('regclass', 'name', 'name'::regclass)`:
/// datafusion-pg-catalog then makes the cast a lookup subquery, which is
/// NULL for a name that is not there (or that the user may not see), and
/// the function makes that Postgres' error, `relation "name" does not
/// exist`, rather than NULL in a column declared NOT NULL. A numeric
/// string is an oid already and stays as it is; a `pg_catalog` table's
/// name alone is qualified, as Postgres finds it there first.
fn names_that_must_resolve(stmt: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{DataType, Value};
    struct Casts;
    impl VisitorMut for Casts {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Cast {
                expr: operand,
                data_type,
                ..
            } = e
            else {
                return ControlFlow::Continue(());
            };
            let lower = data_type.to_string().to_lowercase();
            let kind = lower.strip_prefix("pg_catalog.").unwrap_or(&lower);
            let Some((kind, ..)) = REG_TYPES.iter().find(|(k, ..)| *k == kind) else {
                return ControlFlow::Continue(());
            };
            let Expr::Value(v) = operand.as_ref() else {
                return ControlFlow::Continue(());
            };
            let name = match &v.value {
                Value::SingleQuotedString(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
                    return ControlFlow::Continue(());
                }
                Value::SingleQuotedString(s) => {
                    let name = operand.as_ref().clone();
                    // Postgres finds a relation in pg_catalog before the
                    // search path; the lookup looks in the current schema.
                    if *kind == "regclass" && PG_CATALOG_TABLES.contains(&s.as_str()) {
                        **operand =
                            Expr::value(Value::SingleQuotedString(format!("pg_catalog.{s}")));
                    }
                    name
                }
                Value::Placeholder(_) => Expr::Cast {
                    kind: datafusion::sql::sqlparser::ast::CastKind::DoubleColon,
                    expr: operand.clone(),
                    data_type: DataType::Text,
                    array: false,
                    format: None,
                },
                _ => return ControlFlow::Continue(()),
            };
            let kind = Expr::value(Value::SingleQuotedString((*kind).to_string()));
            *e = call(FOUND_FUNCTION, vec![kind, name, e.clone()]);
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Casts);
}

/// `sextant_reg_found(kind, name, oid)`: the oid, or Postgres' error for a
/// `kind` name that is not there when it is NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FoundFunction {
    signature: datafusion::logical_expr::Signature,
}

impl FoundFunction {
    fn new() -> Self {
        use datafusion::logical_expr::{Signature, Volatility};
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for FoundFunction {
    fn name(&self) -> &str {
        FOUND_FUNCTION
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        args: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::DataType> {
        Ok(args[2].clone())
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::arrow::array::Array;
        use datafusion::logical_expr::ColumnarValue;
        let [kind, name, oid] = args.args.as_slice() else {
            return datafusion::common::exec_err!("{FOUND_FUNCTION} takes 3 arguments");
        };
        let oids = oid.to_array(args.number_rows)?;
        let Some(row) = (0..oids.len()).find(|&i| oids.is_null(i)) else {
            return Ok(oid.clone());
        };
        let text = |v: &ColumnarValue| -> datafusion::error::Result<String> {
            let a = datafusion::arrow::compute::cast(
                &v.to_array(args.number_rows)?,
                &datafusion::arrow::datatypes::DataType::Utf8,
            )?;
            let a = datafusion::common::cast::as_string_array(&a)?;
            Ok(if a.is_null(row) {
                String::new()
            } else {
                a.value(row).to_string()
            })
        };
        let kind = text(kind)?;
        let (_, code, what) = REG_TYPES
            .iter()
            .find(|(k, ..)| *k == kind)
            .copied()
            .unwrap_or(("", "42704", "object"));
        Err(datafusion::error::DataFusionError::External(Box::new(
            SqlError::new(code, format!("{what} \"{}\" does not exist", text(name)?)),
        )))
    }
}

/// `sextant_null(...)`: NULL, whatever its arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullFunction {
    signature: datafusion::logical_expr::Signature,
}

impl NullFunction {
    fn new() -> Self {
        use datafusion::logical_expr::{Signature, TypeSignature, Volatility};
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
                Volatility::Immutable,
            ),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for NullFunction {
    fn name(&self) -> &str {
        NULL_FUNCTION
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _args: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::DataType> {
        Ok(datafusion::arrow::datatypes::DataType::Null)
    }

    fn invoke_with_args(
        &self,
        _args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        Ok(datafusion::logical_expr::ColumnarValue::Scalar(
            datafusion::common::ScalarValue::Null,
        ))
    }
}

/// Replaces scalar subqueries inside CASE expressions of select lists with
/// NULL; true if there were any. Catalog queries only (see [`plan_query`]).
fn subqueries_under_case_as_null(stmt: &mut Statement) -> bool {
    struct Null(bool);
    impl VisitorMut for Null {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if matches!(e, Expr::Subquery(_)) {
                // Its parameters stay in the statement (as arguments of a
                // function that is always NULL): clients bind `$1`..`$n`
                // by position.
                let mut params = vec![];
                let _ = Visit::visit(&*e, &mut Placeholders(&mut params));
                *e = call(NULL_FUNCTION, params);
                self.0 = true;
            }
            ControlFlow::Continue(())
        }
    }
    struct Placeholders<'a>(&'a mut Vec<Expr>);
    impl Visitor for Placeholders<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = e
                && matches!(
                    v.value,
                    datafusion::sql::sqlparser::ast::Value::Placeholder(_)
                )
            {
                self.0.push(e.clone());
            }
            ControlFlow::Continue(())
        }
    }
    struct Cases(bool);
    impl VisitorMut for Cases {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = q.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(e @ Expr::Case { .. })
                    | SelectItem::ExprWithAlias {
                        expr: e @ Expr::Case { .. },
                        ..
                    } = item
                    {
                        let mut n = Null(false);
                        let _ = VisitMut::visit(e, &mut n);
                        self.0 |= n.0;
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut c = Cases(false);
    let _ = VisitMut::visit(stmt, &mut c);
    c.0
}

/// Wraps the value of every scalar subquery that is not already an
/// aggregate in `max(...)`; true if any was. Only for catalog queries:
/// for a subquery returning several rows Postgres fails where this picks
/// one.
fn scalar_subqueries_as_aggregates(stmt: &mut Statement) -> bool {
    const AGGREGATES: &[&str] = &[
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "first_value",
        "last_value",
        "json_agg",
    ];
    struct Wrap(bool);
    impl VisitorMut for Wrap {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Subquery(q) = e else {
                return ControlFlow::Continue(());
            };
            let SetExpr::Select(select) = q.body.as_mut() else {
                return ControlFlow::Continue(());
            };
            let grouped = !matches!(
                &select.group_by,
                datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(g, _) if g.is_empty()
            );
            if grouped || select.projection.len() != 1 {
                return ControlFlow::Continue(());
            }
            let (SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }) =
                &mut select.projection[0]
            else {
                return ControlFlow::Continue(());
            };
            let aggregated = matches!(value, Expr::Function(f)
                if f.over.is_none() && AGGREGATES.iter().any(|a| is_call(f, a)));
            if !aggregated {
                *value = call("max", vec![value.clone()]);
                self.0 = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut w = Wrap(false);
    let _ = VisitMut::visit(stmt, &mut w);
    w.0
}

/// Plans `stmt` and runs the optimizer over the plan once, so a plan
/// DataFusion cannot execute (an undecorrelatable subquery) fails here;
/// the plan returned is the unoptimized one, which parameters bind into.
async fn plan_checked(
    ctx: &datafusion::prelude::SessionContext,
    stmt: Statement,
) -> Result<datafusion::logical_expr::LogicalPlan, SqlError> {
    let catalog = is_catalog_query(&stmt);
    let plan = plan_statement(ctx, stmt).await?;
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

/// Functions in FROM as Postgres reads them: a set-returning function of
/// one column (`generate_series(1, 3) AS i`) names its column after the
/// alias, and a scalar function (`string_to_array(x, ',') AS s`) is one row
/// holding its value, as `(SELECT f(...) AS s) AS s`.
fn functions_in_from(
    stmt: &mut Statement,
    table_functions: &HashMap<String, Arc<datafusion::catalog::TableFunction>>,
) {
    struct Rewriter<'a>(&'a HashMap<String, Arc<datafusion::catalog::TableFunction>>);
    impl VisitorMut for Rewriter<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias: Some(alias),
                args: Some(args),
                with_ordinality: false,
                ..
            } = t
            else {
                return ControlFlow::Continue(());
            };
            let Some(fname) = name.0.last().and_then(|p| p.as_ident()).map(normalized) else {
                return ControlFlow::Continue(());
            };
            if self.0.contains_key(&fname) {
                // DataFusion's one-column set-returning functions name their
                // column `value`; keep it, and add the alias's name for it.
                if alias.columns.is_empty() && matches!(fname.as_str(), "generate_series" | "range")
                {
                    let value = Ident::new("value");
                    let projection = vec![
                        SelectItem::UnnamedExpr(Expr::Identifier(value.clone())),
                        SelectItem::ExprWithAlias {
                            expr: Expr::Identifier(value),
                            alias: alias.name.clone(),
                        },
                    ];
                    let alias = alias.clone();
                    let mut inner = t.clone();
                    if let TableFactor::Table { alias, .. } = &mut inner {
                        *alias = None;
                    }
                    *t = derived(projection, vec![inner], alias);
                }
                return ControlFlow::Continue(());
            }
            let column = alias
                .columns
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_else(|| alias.name.clone());
            let value = Expr::Function(Function {
                name: name.clone(),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: args.args.clone(),
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
            let alias = TableAlias {
                columns: vec![],
                ..alias.clone()
            };
            let projection = vec![SelectItem::ExprWithAlias {
                expr: value,
                alias: column,
            }];
            *t = derived(projection, vec![], alias);
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Rewriter(table_functions));
}

fn compatibility_parse(sql: &str, session: &Session<'_>) -> Result<Statement, SqlError> {
    let mut stmts = compatibility_parser()
        .parse(sql)
        .map_err(|e| SqlError::from(datafusion::error::DataFusionError::from(e)))?;
    if stmts.len() != 1 {
        return Err(SqlError::syntax("expected exactly one statement"));
    }
    let mut stmt = stmts.remove(0);
    name_output_columns(&mut stmt);
    sextant_rules(&mut stmt, session);
    Ok(stmt)
}

fn sextant_rules(stmt: &mut Statement, session: &Session<'_>) {
    let _ = VisitMut::visit(stmt, &mut SessionFunctions { session });
    in_subqueries_outside_filters(stmt);
}

/// `x IN (subquery)` in a select list or ORDER BY, where DataFusion plans
/// subqueries only in filters: `array_has((SELECT array_agg(v) FROM
/// (subquery) AS s(v)), x)` (`NOT` for `NOT IN`). Only the NULL cases differ
/// from Postgres (no match with a NULL in the subquery is false, not NULL).
fn in_subqueries_outside_filters(stmt: &mut Statement) {
    struct InToArray;
    impl VisitorMut for InToArray {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if let Expr::InSubquery {
                expr,
                subquery,
                negated,
            } = e
                && let Some(array) = array_of_subquery(subquery)
            {
                let has = call("array_has", vec![array, expr.as_ref().clone()]);
                *e = if *negated {
                    Expr::UnaryOp {
                        op: datafusion::sql::sqlparser::ast::UnaryOperator::Not,
                        expr: Box::new(has),
                    }
                } else {
                    has
                };
            }
            ControlFlow::Continue(())
        }
    }
    struct Queries;
    impl VisitorMut for Queries {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = q.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } =
                        item
                    {
                        let _ = VisitMut::visit(e, &mut InToArray);
                    }
                }
            }
            if let Some(order_by) = &mut q.order_by
                && let datafusion::sql::sqlparser::ast::OrderByKind::Expressions(exprs) =
                    &mut order_by.kind
            {
                for o in exprs {
                    let _ = VisitMut::visit(&mut o.expr, &mut InToArray);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = VisitMut::visit(stmt, &mut Queries);
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
        } else if is_call(f, "pg_backend_pid")
            && no_args(f)
            && let Some(pid) = self.session.pid
        {
            *expr = Expr::Value(
                datafusion::sql::sqlparser::ast::Value::Number(pid.to_string(), false)
                    .with_empty_span(),
            );
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

/// `(SELECT projection FROM from) AS alias`.
fn derived(projection: Vec<SelectItem>, from: Vec<TableFactor>, alias: TableAlias) -> TableFactor {
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
