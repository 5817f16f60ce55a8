//! One SQL statement over Flight SQL: planned through the statement layer,
//! its parameters bound, and then either streamed (a query) or run once (a
//! statement that changes something).

use sextant_sqlstate::SqlState;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::compute::kernels::cast::can_cast_types;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::{LogicalPlan, Statement};
use datafusion::prelude::SessionContext;
use sextant_auth::Principal;
use sextant_sql::{Done, SextantStatement, SqlError};
use sextant_storage::Engine;

/// A planned statement.
#[derive(Clone)]
pub(crate) enum Planned {
    /// Returns rows: streamed by DoGet.
    Query(LogicalPlan),
    /// Changes something (INSERT, DDL, `FLUSH TABLE`, ...): run once.
    Change(Change),
}

#[derive(Clone)]
pub(crate) enum Change {
    Sextant(SextantStatement),
    Plan(LogicalPlan),
}

/// What a statement that changes something reports: its result rows (the
/// `count` of an INSERT; none for DDL) and its record count.
pub(crate) struct Outcome {
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Vec<RecordBatch>,
    /// Rows written (INSERT), files persisted (`FLUSH TABLE`), 0 for DDL.
    pub(crate) count: i64,
}

/// The one statement of `sql`, its `?` parameters numbered
/// ([`numbered_parameters`]); several statements are refused.
pub(crate) fn single(sql: &str) -> Result<String, SqlError> {
    let mut stmts = sextant_sql::split(sql)?;
    match stmts.len() {
        1 => Ok(numbered_parameters(&stmts.remove(0))),
        0 => Err(SqlError::syntax("the query is empty")),
        n => Err(SqlError::syntax(format!(
            "one statement per request, got {n}: send them one at a time"
        ))),
    }
}

/// `sql` with its positional `?` parameters as `$1`, `$2`, ...: ADBC's
/// DB-API and the Flight SQL JDBC driver write parameters as `?`, and the
/// statement layer reads PostgreSQL's `$n`. A `?` inside a string, a quoted
/// name or a comment stays; a statement that already numbers its
/// parameters is left as it is. (PostgreSQL's jsonb operator `?` is not
/// Sextant's: attributes are read with `->>`.)
pub(crate) fn numbered_parameters(sql: &str) -> String {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    if tokens
        .iter()
        .any(|t| matches!(&t.token, Token::Placeholder(p) if p.starts_with('$')))
    {
        return sql.to_string();
    }
    // Byte offsets of the `?` tokens, from their lines and columns.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut marks = vec![];
    for t in &tokens {
        let question = matches!(&t.token, Token::Question)
            || matches!(&t.token, Token::Placeholder(p) if p == "?");
        if !question {
            continue;
        }
        let (line, column) = (t.span.start.line as usize, t.span.start.column as usize);
        let Some(start) = line_starts.get(line.wrapping_sub(1)) else {
            return sql.to_string();
        };
        let Some((offset, _)) = sql[*start..].char_indices().nth(column.wrapping_sub(1)) else {
            return sql.to_string();
        };
        marks.push(start + offset);
    }
    let mut out = String::with_capacity(sql.len() + marks.len() * 2);
    let mut last = 0;
    for (n, at) in marks.into_iter().enumerate() {
        if sql.as_bytes().get(at) != Some(&b'?') {
            return sql.to_string();
        }
        out.push_str(&sql[last..at]);
        out.push_str(&format!("${}", n + 1));
        last = at + 1;
    }
    out.push_str(&sql[last..]);
    out
}

/// Plans one statement for `who`, through the statement layer's one
/// pipeline ([`sextant_sql::plan`]), which checks it for `who`.
pub(crate) async fn plan(
    ctx: &SessionContext,
    stmt: &str,
    who: &Principal,
) -> Result<Planned, SqlError> {
    // The server's default settings: Flight SQL has no per-client SET.
    let session = sextant_sql::Session {
        user: who.user(),
        principal: Some(who),
        ..sextant_sql::Session::server()
    };
    let plan = match sextant_sql::plan(ctx, stmt, &session).await? {
        // A DELETE's condition may take parameters: their types, to
        // describe and bind them.
        sextant_sql::Planned::Sextant(SextantStatement::Delete(mut d)) => {
            d.param_types = d.parameter_types(ctx).await?;
            return Ok(Planned::Change(Change::Sextant(SextantStatement::Delete(
                d,
            ))));
        }
        sextant_sql::Planned::Sextant(s) => return Ok(Planned::Change(Change::Sextant(s))),
        sextant_sql::Planned::Query { plan, .. } => plan,
        sextant_sql::Planned::Other(stmt) => sextant_sql::plan_other(ctx, stmt, &session).await?,
    };
    match &plan {
        LogicalPlan::Statement(s) => match s {
            Statement::TransactionStart(_) | Statement::TransactionEnd(_) => {}
            Statement::SetVariable(_) | Statement::ResetVariable(_) => {
                return Err(SqlError::unsupported(
                    "SET and RESET are not supported over Flight SQL (settings would change for every client)",
                ));
            }
            Statement::Prepare(_) | Statement::Execute(_) | Statement::Deallocate(_) => {
                return Err(SqlError::unsupported(
                    "PREPARE, EXECUTE and DEALLOCATE are not supported over Flight SQL: use its prepared statements (CreatePreparedStatement)",
                ));
            }
        },
        LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) => {}
        _ => return Ok(Planned::Query(plan)),
    }
    Ok(Planned::Change(Change::Plan(plan)))
}

impl Planned {
    /// The schema of the rows the statement returns.
    pub(crate) fn schema(&self) -> SchemaRef {
        match self {
            Planned::Query(p) | Planned::Change(Change::Plan(p)) => {
                if is_no_op(p) {
                    Arc::new(Schema::empty())
                } else {
                    Arc::new(p.schema().as_arrow().clone())
                }
            }
            Planned::Change(Change::Sextant(s)) => match s {
                SextantStatement::Flush(_)
                | SextantStatement::Compact(_)
                | SextantStatement::Delete(_) => count_schema(),
                SextantStatement::Check(_) => sextant_sql::check_schema(),
                SextantStatement::CreateTable(_)
                | SextantStatement::AlterTable(_)
                | SextantStatement::DropTable(_)
                | SextantStatement::CreateView(_)
                | SextantStatement::DropView(_)
                | SextantStatement::CreatePlainView { .. }
                | SextantStatement::DropPlainView(_)
                | SextantStatement::CreateIndex(_)
                | SextantStatement::DropIndex(_)
                | SextantStatement::RefreshView(_)
                | SextantStatement::CreateAlert { .. }
                | SextantStatement::AlterAlert { .. }
                | SextantStatement::DropAlert { .. }
                | SextantStatement::Kill(_)
                | SextantStatement::Access(_) => Arc::new(Schema::empty()),
            },
        }
    }

    /// The parameters (`$1`, `$2`, ...) the statement takes, in order; a
    /// type is `Null` where DataFusion cannot infer it.
    pub(crate) fn parameter_schema(&self) -> Result<Schema, SqlError> {
        if let Planned::Change(Change::Sextant(SextantStatement::Delete(d))) = self {
            return Ok(Schema::new(
                d.param_types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        Field::new(
                            format!("${}", i + 1),
                            t.clone().unwrap_or(DataType::Null),
                            true,
                        )
                    })
                    .collect::<Vec<_>>(),
            ));
        }
        let (Planned::Query(p) | Planned::Change(Change::Plan(p))) = self else {
            return Ok(Schema::empty());
        };
        let types = p.get_parameter_types()?;
        let mut params: Vec<(usize, String, DataType)> = types
            .into_iter()
            .map(|(name, ty)| {
                let pos = name
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        SqlError::syntax(format!(
                            "parameter {name}: only positional parameters ($1, $2, ...) are supported"
                        ))
                    })?;
                Ok((pos, name, ty.unwrap_or(DataType::Null)))
            })
            .collect::<Result<_, SqlError>>()?;
        params.sort_by_key(|(pos, _, _)| *pos);
        if let Some((i, (pos, _, _))) = params.iter().enumerate().find(|(i, (p, _, _))| *p != i + 1)
        {
            return Err(SqlError::syntax(format!(
                "parameter ${} is missing (parameters are numbered from $1 without gaps; found ${pos})",
                i + 1
            )));
        }
        Ok(Schema::new(
            params
                .into_iter()
                .map(|(_, name, ty)| Field::new(name, ty, true))
                .collect::<Vec<_>>(),
        ))
    }

    /// Binds `params` (row `row` of a batch whose columns are `$1`, `$2`,
    /// ... in order). Without parameters, the statement must take none.
    pub(crate) fn bind(self, params: Option<(&RecordBatch, usize)>) -> Result<Self, SqlError> {
        let expected = self.parameter_schema()?;
        let Some((batch, row)) = params else {
            if expected.fields().is_empty() {
                return Ok(self);
            }
            return Err(SqlError::new(
                SqlState::USING_CLAUSE_DOES_NOT_MATCH_PARAMETERS,
                format!(
                    "the statement has {} parameter(s) but none were bound: bind them first (DoPut of one row)",
                    expected.fields().len()
                ),
            ));
        };
        if batch.num_columns() != expected.fields().len() {
            return Err(SqlError::new(
                SqlState::USING_CLAUSE_DOES_NOT_MATCH_PARAMETERS,
                format!(
                    "the statement has {} parameter(s) but {} were bound",
                    expected.fields().len(),
                    batch.num_columns()
                ),
            ));
        }
        let mut values = Vec::with_capacity(batch.num_columns());
        for (i, field) in expected.fields().iter().enumerate() {
            let value = ScalarValue::try_from_array(batch.column(i), row)?;
            values.push(coerce(value, field.data_type(), i + 1)?);
        }
        let bind = |p: LogicalPlan| -> Result<LogicalPlan, SqlError> {
            Ok(p.with_param_values(ParamValues::from(values.clone()))?)
        };
        Ok(match self {
            Planned::Query(p) => Planned::Query(bind(p)?),
            Planned::Change(Change::Plan(p)) => Planned::Change(Change::Plan(bind(p)?)),
            Planned::Change(Change::Sextant(SextantStatement::Delete(mut d))) => {
                d.params = values;
                Planned::Change(Change::Sextant(SextantStatement::Delete(d)))
            }
            s @ Planned::Change(Change::Sextant(_)) => s,
        })
    }
}

/// Brings a parameter to the type the statement expects: integers widen,
/// text parses as a timestamp, timestamps change unit and zone; a float
/// never becomes an integer, and anything else that does not fit is an error
/// that names the parameter.
fn coerce(value: ScalarValue, expected: &DataType, pos: usize) -> Result<ScalarValue, SqlError> {
    let actual = value.data_type();
    if expected == &DataType::Null || &actual == expected {
        return Ok(value);
    }
    if value.is_null() {
        return Ok(ScalarValue::try_from(expected)?);
    }
    if actual.is_floating() && expected.is_integer() || !can_cast_types(&actual, expected) {
        return Err(SqlError::new(
            SqlState::DATATYPE_MISMATCH,
            format!("parameter ${pos} must be {expected}, but the value bound is {actual}"),
        ));
    }
    value.cast_to(expected).map_err(|e| {
        SqlError::new(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!("parameter ${pos}: cannot use the {actual} value as {expected}: {e}"),
        )
    })
}

/// Transaction statements: accepted, and nothing happens (every write is
/// committed when it is acknowledged).
fn is_no_op(p: &LogicalPlan) -> bool {
    matches!(
        p,
        LogicalPlan::Statement(Statement::TransactionStart(_) | Statement::TransactionEnd(_))
    )
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

/// Runs a statement that changes something.
pub(crate) async fn run(
    change: Change,
    ctx: &SessionContext,
    engine: &Engine,
    who: &Principal,
) -> Result<Outcome, SqlError> {
    match change {
        Change::Sextant(stmt) => {
            let Done { rows, batch, .. } = sextant_sql::execute(&stmt, engine, ctx, who).await?;
            if let Some(batch) = batch {
                return Ok(Outcome {
                    schema: batch.schema(),
                    batches: vec![batch],
                    count: 0,
                });
            }
            let schema = Planned::Change(Change::Sextant(stmt)).schema();
            let Some(n) = rows else {
                return Ok(Outcome {
                    schema,
                    batches: vec![],
                    count: 0,
                });
            };
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(UInt64Array::from(vec![n as u64]))],
            )
            .map_err(|e| SqlError::internal(e.to_string()))?;
            Ok(Outcome {
                schema,
                batches: vec![batch],
                count: n as i64,
            })
        }
        Change::Plan(plan) if is_no_op(&plan) => Ok(Outcome {
            schema: Arc::new(Schema::empty()),
            batches: vec![],
            count: 0,
        }),
        Change::Plan(plan) => {
            let is_dml = matches!(plan, LogicalPlan::Dml(_));
            let df = ctx.execute_logical_plan(plan).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            let count = if is_dml {
                batches
                    .iter()
                    .filter_map(|b| b.column_by_name("count"))
                    .filter_map(|c| c.as_any().downcast_ref::<UInt64Array>())
                    .flat_map(|c| c.iter().flatten())
                    .sum::<u64>() as i64
            } else {
                0
            };
            Ok(Outcome {
                schema,
                batches,
                count,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::numbered_parameters;

    #[test]
    fn question_marks_are_numbered() {
        let cases = [
            (
                "SELECT * FROM cpu WHERE host = ? AND usage > ?",
                "SELECT * FROM cpu WHERE host = $1 AND usage > $2",
            ),
            (
                "INSERT INTO t VALUES (?, ?,?)",
                "INSERT INTO t VALUES ($1, $2,$3)",
            ),
            (
                "SELECT 'is it?', \"what?\" FROM t -- why?\nWHERE a = ?",
                "SELECT 'is it?', \"what?\" FROM t -- why?\nWHERE a = $1",
            ),
            ("SELECT 'é' || ?", "SELECT 'é' || $1"),
            ("SELECT $1, ?", "SELECT $1, ?"),
            ("SELECT 1", "SELECT 1"),
        ];
        for (sql, want) in cases {
            assert_eq!(numbered_parameters(sql), want, "{sql}");
        }
    }
}
