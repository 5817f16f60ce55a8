//! What Sextant's statements share once split: the parsing helpers the
//! statement modules (tables, access, views, alerts, KILL) all use, and the
//! [`Done`] each reports back. Text in → one parsed statement
//! ([`parse_one`]), a table's name as stored ([`table_name`]: qualified
//! names checked, unquoted names folded), a `WITH (...)` option's text
//! ([`option_text`], [`set_option`]), an interval or retention
//! ([`parse_interval`], [`parse_retention`]), the tables a statement names
//! ([`parse_create_table`], [`parse_alter`], [`parse_drop`], [`table_list`],
//! [`refresh_target`]), and byte offsets
//! of token locations ([`LineIndex`]). It imports no other statement module.

use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    CreateTable, Expr, Ident, ObjectName, ObjectType, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token};
use sextant_catalog::{TableOptions, TokenIndex};

use crate::error::SqlError;

/// Byte offsets of line/column locations (1-based, columns in chars).
pub(crate) struct LineIndex<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self { sql, line_starts }
    }

    pub(crate) fn offset(&self, loc: Location) -> usize {
        let Some(&line_start) = self.line_starts.get(loc.line.saturating_sub(1) as usize) else {
            return self.sql.len();
        };
        self.sql[line_start..]
            .char_indices()
            .nth(loc.column.saturating_sub(1) as usize)
            .map(|(i, _)| line_start + i)
            .unwrap_or(self.sql.len())
    }
}

/// What a Sextant statement reports back (the command tag).
#[derive(Debug, PartialEq)]
pub struct Done {
    pub tag: &'static str,
    pub rows: Option<usize>,
    /// Rows to show, for a statement that answers with some (`CREATE TOKEN`
    /// shows the token's secret, once).
    pub batch: Option<arrow::array::RecordBatch>,
}

pub(crate) fn parse_one(sql: &str) -> Result<Statement, SqlError> {
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| SqlError::syntax(e.to_string()))?;
    match stmts.len() {
        1 => Ok(stmts.remove(0)),
        _ => Err(SqlError::syntax("expected exactly one statement")),
    }
}

/// The table name of `name`, which may be qualified as `public.t` or
/// `sextant.public.t`. Unquoted identifiers fold to lower case.
pub fn table_name(name: &ObjectName) -> Result<String, SqlError> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(normalize).unwrap_or_else(|| p.to_string()))
        .collect();
    match parts.as_slice() {
        [t] => Ok(t.clone()),
        [s, t] if s == sextant_catalog::SCHEMA_NAME => Ok(t.clone()),
        [d, s, t] if d == sextant_catalog::DATABASE_NAME && s == sextant_catalog::SCHEMA_NAME => {
            Ok(t.clone())
        }
        _ => Err(SqlError::invalid_schema(format!(
            "tables live in schema \"public\" of database \"sextant\"; cannot use \"{name}\""
        ))),
    }
}

pub(crate) fn normalize(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// Sets one table option from its text.
pub(crate) fn set_option(out: &mut TableOptions, key: &str, text: &str) -> Result<(), SqlError> {
    match key {
        "retention" => out.retention = parse_retention(text)?,
        "partition" | "partition_duration" => {
            let d = parse_interval(text)?;
            if d < Duration::from_secs(60) || d > Duration::from_secs(7 * 86400) {
                return Err(SqlError::invalid_parameter(format!(
                    "partition must be between 1 minute and 7 days, got '{text}'"
                )));
            }
            if 86400 % d.as_secs() != 0 && d.as_secs() % 86400 != 0 {
                return Err(SqlError::invalid_parameter(format!(
                    "partition '{text}' must divide a day evenly (e.g. 15 minutes, 1 hour, 1 day)"
                )));
            }
            out.partition_duration = d;
        }
        "token_index" => out.token_index = parse_token_index(text)?,
        _ => {
            return Err(SqlError::invalid_parameter(format!(
                "unknown table option \"{key}\" (known: {KNOWN_TABLE_OPTIONS})"
            )));
        }
    }
    Ok(())
}

/// The options a table takes, for errors.
pub(crate) const KNOWN_TABLE_OPTIONS: &str = "retention, partition, token_index";

/// `token_index`: `'auto'` (text columns named for messages), `'off'`, or
/// the text columns to index, `'body, attributes'` (names as stored).
fn parse_token_index(text: &str) -> Result<TokenIndex, SqlError> {
    match text.trim().to_lowercase().as_str() {
        "auto" | "default" => return Ok(TokenIndex::Auto),
        "off" | "none" | "false" => return Ok(TokenIndex::Off),
        _ => {}
    }
    let columns: Vec<String> = text.split(',').map(|c| c.trim().to_string()).collect();
    if columns.iter().any(|c| c.is_empty()) {
        return Err(SqlError::invalid_parameter(format!(
            "token_index is 'auto', 'off' or a list of text columns such as 'body, message', got '{text}'"
        )));
    }
    Ok(TokenIndex::Columns(columns))
}

/// Checks that the columns a `token_index` lists that `schema` has are
/// text (the others may come with later writes).
pub(crate) fn check_token_index(
    table: &str,
    options: &TableOptions,
    schema: &arrow::datatypes::Schema,
) -> Result<(), SqlError> {
    let TokenIndex::Columns(columns) = &options.token_index else {
        return Ok(());
    };
    for c in columns {
        if let Ok(field) = schema.field_with_name(c)
            && !sextant_storage::is_text(field.data_type())
        {
            return Err(SqlError::invalid_parameter(format!(
                "token_index: column \"{c}\" of table \"{table}\" is {}, not text",
                field.data_type()
            )));
        }
    }
    Ok(())
}

/// `ALTER TABLE [IF EXISTS] name SET (key = 'value', ...) | RESET (key, ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterTable {
    pub name: String,
    pub if_exists: bool,
    /// Each option set (`Some`) or reset (`None`), keys in lower case.
    pub changes: Vec<(String, Option<String>)>,
}

/// `DROP ... [IF EXISTS] a, b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropObjects {
    /// The names, as Postgres folds them.
    pub names: Vec<String>,
    pub if_exists: bool,
}

/// `CREATE TABLE ...`.
pub(crate) fn parse_create_table(sql: &str) -> Result<Box<CreateTable>, SqlError> {
    match parse_one(sql)? {
        Statement::CreateTable(ct) => Ok(Box::new(ct)),
        _ => Err(SqlError::syntax("expected CREATE TABLE")),
    }
}

/// `DROP TABLE [IF EXISTS] a, b`, or another kind of object's `DROP`.
pub(crate) fn parse_drop(sql: &str, kind: ObjectType) -> Result<DropObjects, SqlError> {
    match parse_one(sql)? {
        Statement::Drop {
            object_type,
            if_exists,
            names,
            ..
        } if object_type == kind => Ok(DropObjects {
            names: names
                .iter()
                .map(table_name)
                .collect::<Result<Vec<_>, _>>()?,
            if_exists,
        }),
        _ => Err(SqlError::syntax(format!("expected DROP {kind} name"))),
    }
}

pub(crate) fn parse_alter(sql: &str) -> Result<AlterTable, SqlError> {
    let usage = "ALTER TABLE supports SET (retention = '7 days', token_index = 'off') and \
                 RESET (retention, token_index); new columns are added by writing rows that have them";
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| SqlError::syntax(e.to_string()))?;
    let syntax = |e: datafusion::sql::sqlparser::parser::ParserError| {
        SqlError::syntax(format!("{e}; {usage}"))
    };
    p.expect_keywords(&[Keyword::ALTER, Keyword::TABLE])
        .map_err(syntax)?;
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = table_name(&p.parse_object_name(false).map_err(syntax)?)?;
    // (key, Some(value)) for SET, (key, None) for RESET.
    let changes: Vec<(String, Option<String>)> = if p.parse_keyword(Keyword::SET) {
        p.expect_token(&Token::LParen).map_err(syntax)?;
        let pairs = p
            .parse_comma_separated(|p| {
                let key = p.parse_identifier()?;
                p.expect_token(&Token::Eq)?;
                Ok((key, p.parse_expr()?))
            })
            .map_err(syntax)?;
        p.expect_token(&Token::RParen).map_err(syntax)?;
        pairs
            .into_iter()
            .map(|(k, v)| Ok((k.value.to_lowercase(), Some(option_text(&v)?))))
            .collect::<Result<_, SqlError>>()?
    } else if p.parse_keyword(Keyword::RESET) {
        p.expect_token(&Token::LParen).map_err(syntax)?;
        let keys = p
            .parse_comma_separated(|p| p.parse_identifier())
            .map_err(syntax)?;
        p.expect_token(&Token::RParen).map_err(syntax)?;
        keys.into_iter()
            .map(|k| (k.value.to_lowercase(), None))
            .collect()
    } else {
        return Err(SqlError::unsupported(usage));
    };
    if p.peek_token().token != Token::EOF {
        return Err(SqlError::syntax(format!(
            "unexpected {} after the option list",
            p.peek_token().token
        )));
    }
    Ok(AlterTable {
        name,
        if_exists,
        changes,
    })
}

pub(crate) fn option_text(value: &Expr) -> Result<String, SqlError> {
    match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Ok(s.clone()),
            Value::Number(n, _) => Ok(n.clone()),
            other => Ok(other.to_string()),
        },
        Expr::Identifier(id) => Ok(id.value.clone()),
        Expr::Interval(i) => Ok(i.value.to_string().trim_matches('\'').to_string()),
        other => Err(SqlError::invalid_parameter(format!(
            "option value must be a string such as '30 days', got {other}"
        ))),
    }
}

pub(crate) fn parse_retention(text: &str) -> Result<Option<Duration>, SqlError> {
    match text.trim().to_lowercase().as_str() {
        "none" | "infinite" | "forever" => Ok(None),
        _ => {
            let d = parse_interval(text)?;
            if d < Duration::from_secs(1) {
                return Err(SqlError::invalid_parameter(format!(
                    "retention must be at least 1 second, got '{text}'"
                )));
            }
            Ok(Some(d))
        }
    }
}

/// `'30 days'`, `'7d'`, `'1 hour'`, `'90m'`: humantime's grammar, which also
/// accepts a space between number and unit.
pub(crate) fn parse_interval(text: &str) -> Result<Duration, SqlError> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(SqlError::invalid_parameter(format!(
            "'{text}' is zero: give an interval longer than that"
        )));
    }
    Ok(d)
}

/// A duration as `'5 minutes'`, `'1h30m'` or `'0 seconds'` spell it.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, SqlError> {
    humantime::parse_duration(text.trim()).map_err(|_| {
        SqlError::invalid_parameter(format!(
            "'{text}' is not a duration: use e.g. '30 days', '12 hours', '15 minutes'"
        ))
    })
}

/// The tables of `<VERB> TABLE a, b`.
pub(crate) fn table_list(sql: &str, verb: &str) -> Result<Vec<String>, SqlError> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| SqlError::syntax(e.to_string()))?;
    let usage = format!("usage: {verb} TABLE name [, name ...]");
    let usage = usage.as_str();
    match parser.next_token().token {
        Token::Word(w) if w.value.eq_ignore_ascii_case(verb) => {}
        _ => return Err(SqlError::syntax(usage)),
    }
    if !parser.parse_keyword(Keyword::TABLE) && !parser.parse_keyword(Keyword::TABLES) {
        return Err(SqlError::syntax(usage));
    }
    let names = parser
        .parse_comma_separated(|p| p.parse_object_name(false))
        .map_err(|e| SqlError::syntax(format!("{e}; {usage}")))?;
    if parser.peek_token().token != Token::EOF {
        return Err(SqlError::syntax(usage));
    }
    names.iter().map(table_name).collect()
}

/// The view of `REFRESH MATERIALIZED VIEW [CONCURRENTLY] v` (every
/// refresh is concurrent with readers here).
pub(crate) fn refresh_target(sql: &str) -> Result<String, SqlError> {
    let usage = "usage: REFRESH MATERIALIZED VIEW name";
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| SqlError::syntax(e.to_string()))?;
    match p.next_token().token {
        Token::Word(w) if w.value.eq_ignore_ascii_case("refresh") => {}
        _ => return Err(SqlError::syntax(usage)),
    }
    if !p.parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW]) {
        return Err(SqlError::syntax(usage));
    }
    let _ = p.parse_keyword(Keyword::CONCURRENTLY);
    let name = table_name(
        &p.parse_object_name(false)
            .map_err(|e| SqlError::syntax(format!("{e}; {usage}")))?,
    )?;
    if p.peek_token().token != Token::EOF {
        return Err(SqlError::syntax(usage));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        let n = |s: &str| {
            let Statement::Drop { names, .. } = parse_one(&format!("DROP TABLE {s}")).unwrap()
            else {
                panic!()
            };
            table_name(&names[0])
        };
        assert_eq!(n("CPU").unwrap(), "cpu");
        assert_eq!(n("\"CPU\"").unwrap(), "CPU");
        assert_eq!(n("public.cpu").unwrap(), "cpu");
        assert_eq!(n("sextant.public.cpu").unwrap(), "cpu");
        assert!(n("other.cpu").is_err());
    }
}
