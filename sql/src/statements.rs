//! Sextant's own SQL statements, recognized before DataFusion sees the text.
//!
//! A query string is split into statements with the SQL tokenizer (so `;`
//! inside strings and comments is no separator). Each statement is either one
//! of ours (`CREATE TABLE`, `ALTER TABLE ... SET/RESET (...)`, `DROP TABLE`,
//! `FLUSH TABLE`, `COMPACT TABLE`, materialized views, alerts), rewritten
//! (`SHOW TABLES`, `SHOW ALERTS`), or passed on unchanged to DataFusion.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    CreateTable, CreateTableOptions, Expr, Ident, ObjectName, ObjectType, SqlOption, Statement,
    Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use sextant_auth::Principal;
use sextant_catalog::{NewTable, TIME_COLUMN, TableOptions};
use sextant_storage::Engine;

use crate::error::SqlError;

/// A statement as the statement layer classified it.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// Handled here.
    Sextant(SextantStatement),
    /// Handed to DataFusion as this text (possibly rewritten).
    Sql(String),
}

/// Statements Sextant executes itself.
#[derive(Debug, Clone, PartialEq)]
pub enum SextantStatement {
    CreateTable(String),
    AlterTable(String),
    DropTable(String),
    Flush(String),
    Compact(String),
    CreateView(String),
    DropView(String),
    RefreshView(String),
    CreateAlert(String),
    AlterAlert(String),
    DropAlert(String),
    Kill(String),
    /// `CREATE USER`, `ALTER USER`, `DROP USER`, `GRANT`, `REVOKE`,
    /// `CREATE TOKEN`, `DROP TOKEN` (see [`crate::access`]).
    Access(String),
}

/// Splits `sql` into statements (without the `;`), skipping empty ones.
pub fn split(sql: &str) -> Result<Vec<String>, SqlError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::syntax(e.to_string()))?;
    let index = LineIndex::new(sql);
    let mut out = vec![];
    let mut start: Option<Location> = None;
    let mut end = Location::new(1, 1);
    let flush = |out: &mut Vec<String>, start: Option<Location>, end: Location| {
        if let Some(s) = start {
            let text = sql[index.offset(s)..index.offset(end)].trim();
            if !text.is_empty() {
                out.push(text.to_string());
            }
        }
    };
    for TokenWithSpan { token, span } in tokens {
        match token {
            Token::SemiColon => {
                flush(&mut out, start.take(), end);
            }
            Token::Whitespace(_) => {}
            _ => {
                start.get_or_insert(span.start);
                end = span.end;
            }
        }
    }
    flush(&mut out, start, end);
    Ok(out)
}

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

/// Decides who runs one statement.
pub fn classify(stmt: &str) -> Classified {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, stmt).tokenize() else {
        return Classified::Sql(stmt.to_string());
    };
    let words: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let kw = |i: usize| match words.get(i) {
        Some(Token::Word(w)) => w.keyword,
        _ => Keyword::NoKeyword,
    };
    let refresh =
        matches!(words.first(), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("refresh"));
    let second = |s: &str| matches!(words.get(1), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(s));
    if second("alert") {
        match kw(0) {
            Keyword::CREATE => {
                return Classified::Sextant(SextantStatement::CreateAlert(stmt.to_string()));
            }
            Keyword::ALTER => {
                return Classified::Sextant(SextantStatement::AlterAlert(stmt.to_string()));
            }
            Keyword::DROP => {
                return Classified::Sextant(SextantStatement::DropAlert(stmt.to_string()));
            }
            _ => {}
        }
    }
    if crate::access::is_access_statement(&words) {
        return Classified::Sextant(SextantStatement::Access(stmt.to_string()));
    }
    if matches!(words.first(), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("kill"))
    {
        return Classified::Sextant(SextantStatement::Kill(stmt.to_string()));
    }
    if kw(0) == Keyword::SHOW && second("alerts") && words.len() == 2 {
        return Classified::Sql(SHOW_ALERTS.to_string());
    }
    match (kw(0), kw(1)) {
        (Keyword::CREATE, Keyword::MATERIALIZED) => {
            Classified::Sextant(SextantStatement::CreateView(stmt.to_string()))
        }
        (Keyword::DROP, Keyword::MATERIALIZED) => {
            Classified::Sextant(SextantStatement::DropView(stmt.to_string()))
        }
        (_, Keyword::MATERIALIZED) if refresh => {
            Classified::Sextant(SextantStatement::RefreshView(stmt.to_string()))
        }
        (Keyword::CREATE, Keyword::TABLE) => {
            Classified::Sextant(SextantStatement::CreateTable(stmt.to_string()))
        }
        (Keyword::ALTER, Keyword::TABLE) => {
            Classified::Sextant(SextantStatement::AlterTable(stmt.to_string()))
        }
        (Keyword::NoKeyword, Keyword::TABLE | Keyword::TABLES) if matches!(words.first(), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("compact")) => {
            Classified::Sextant(SextantStatement::Compact(stmt.to_string()))
        }
        (Keyword::DROP, Keyword::TABLE) => {
            Classified::Sextant(SextantStatement::DropTable(stmt.to_string()))
        }
        (Keyword::FLUSH, Keyword::TABLE) | (Keyword::FLUSH, Keyword::TABLES) => {
            Classified::Sextant(SextantStatement::Flush(stmt.to_string()))
        }
        (Keyword::SHOW, Keyword::TABLES) if words.len() == 2 => {
            Classified::Sql("SELECT table_name FROM system.tables ORDER BY table_name".to_string())
        }
        _ => Classified::Sql(stmt.to_string()),
    }
}

/// `SHOW ALERTS`: each rule's state at a glance.
const SHOW_ALERTS: &str = "SELECT alert_name, state, health, every, \"for\", firing, pending, \
     last_evaluation, next_run, last_error FROM system.alerts ORDER BY alert_name";

/// What a Sextant statement reports back (the command tag).
#[derive(Debug, PartialEq)]
pub struct Done {
    pub tag: &'static str,
    pub rows: Option<usize>,
    /// Rows to show, for a statement that answers with some (`CREATE TOKEN`
    /// shows the token's secret, once).
    pub batch: Option<arrow::array::RecordBatch>,
}

/// Runs one of Sextant's statements for `who`, as [`crate::plan`] gave it
/// (having checked that `who` may).
pub async fn execute(
    stmt: &SextantStatement,
    engine: &Engine,
    ctx: &SessionContext,
    who: &Principal,
) -> Result<Done, SqlError> {
    let directory = crate::access::directory(ctx)?;
    match stmt {
        SextantStatement::Access(sql) => crate::access::execute(sql, &directory, who),
        SextantStatement::CreateTable(sql) => create_table(sql, engine, ctx).await,
        SextantStatement::AlterTable(sql) => alter_table(sql, engine).await,
        SextantStatement::DropTable(sql) => drop_table(sql, engine).await,
        SextantStatement::Flush(sql) => flush(sql, engine).await,
        SextantStatement::Compact(sql) => compact(sql, engine).await,
        SextantStatement::CreateView(sql) => crate::views::create(sql, engine, ctx).await,
        SextantStatement::DropView(sql) => crate::views::drop(sql, engine).await,
        SextantStatement::RefreshView(sql) => crate::views::refresh(sql, engine, ctx).await,
        SextantStatement::CreateAlert(sql) => crate::alerts::create(sql, ctx).await,
        SextantStatement::AlterAlert(sql) => crate::alerts::alter(sql, ctx),
        SextantStatement::DropAlert(sql) => crate::alerts::drop(sql, ctx),
        SextantStatement::Kill(sql) => {
            let queries = ctx
                .state_ref()
                .read()
                .config()
                .get_extension::<crate::Queries>()
                .ok_or_else(|| SqlError::unsupported("KILL is not available in this session"))?;
            let own = (!directory.is_admin(who)).then(|| who.user());
            crate::queries::kill(sql, &queries, own)
        }
    }
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

fn normalize(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

async fn create_table(sql: &str, engine: &Engine, ctx: &SessionContext) -> Result<Done, SqlError> {
    let Statement::CreateTable(mut ct) = parse_one(sql)? else {
        return Err(SqlError::syntax("expected CREATE TABLE"));
    };
    let name = table_name(&ct.name)?;
    if ct.query.is_some() {
        return Err(SqlError::unsupported(
            "CREATE TABLE ... AS SELECT is not supported yet: create the table, then INSERT INTO ... SELECT",
        ));
    }
    if ct.external || ct.temporary {
        return Err(SqlError::unsupported(
            "only plain CREATE TABLE is supported (no EXTERNAL or TEMPORARY)",
        ));
    }
    let options = table_options(&ct.table_options)?;
    if ct.if_not_exists && engine.table(&name).is_some() {
        return Ok(Done {
            tag: "CREATE TABLE",
            rows: None,
            batch: None,
        });
    }
    let schema = column_schema(&mut ct, ctx).await?;
    let schema = with_time_column(&name, schema)?;
    match engine
        .create_table(NewTable {
            name,
            schema: Arc::new(schema),
            time_column: TIME_COLUMN.to_string(),
            options,
        })
        .await
    {
        Ok(_) => {}
        Err(sextant_storage::StorageError::Catalog(
            sextant_catalog::CatalogError::TableExists(_),
        )) if ct.if_not_exists => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Done {
        tag: "CREATE TABLE",
        rows: None,
        batch: None,
    })
}

/// Arrow types of the columns, as DataFusion maps SQL type names.
async fn column_schema(ct: &mut CreateTable, ctx: &SessionContext) -> Result<Schema, SqlError> {
    let mut plain = ct.clone();
    plain.table_options = CreateTableOptions::None;
    plain.if_not_exists = false;
    plain.name = ObjectName::from(vec![Ident::new("sextant_column_probe")]);
    let plan = ctx
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            Statement::CreateTable(plain),
        )))
        .await?;
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
            Ok(c.input.schema().as_arrow().clone())
        }
        other => Err(SqlError::internal(format!(
            "CREATE TABLE planned as {}",
            other.display()
        ))),
    }
}

/// Every table has `time` as a nanosecond UTC timestamp that is never null.
fn with_time_column(table: &str, schema: Schema) -> Result<Schema, SqlError> {
    let Ok(idx) = schema.index_of(TIME_COLUMN) else {
        return Err(SqlError::invalid_definition(format!(
            "table \"{table}\" needs a time column: add \"time TIMESTAMP NOT NULL\""
        )));
    };
    if !matches!(schema.field(idx).data_type(), DataType::Timestamp(_, _)) {
        return Err(SqlError::invalid_definition(format!(
            "column \"time\" of table \"{table}\" must be TIMESTAMP, not {}",
            schema.field(idx).data_type()
        )));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == idx {
                Field::new(
                    TIME_COLUMN,
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                    false,
                )
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Ok(Schema::new(fields))
}

fn table_options(opts: &CreateTableOptions) -> Result<TableOptions, SqlError> {
    let list: &[SqlOption] = match opts {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(l) => l,
        _ => {
            return Err(SqlError::syntax(
                "table options go in WITH (retention = '30 days', partition = '1 hour')",
            ));
        }
    };
    let mut out = TableOptions::default();
    for opt in list {
        let SqlOption::KeyValue { key, value } = opt else {
            return Err(SqlError::syntax(format!("unsupported table option {opt}")));
        };
        set_option(&mut out, &key.value.to_lowercase(), &option_text(value)?)?;
    }
    Ok(out)
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
        _ => {
            return Err(SqlError::invalid_parameter(format!(
                "unknown table option \"{key}\" (known: retention, partition)"
            )));
        }
    }
    Ok(())
}

/// Table, IF EXISTS, and the options set (`Some`) or reset (`None`).
type AlterTable = (String, bool, Vec<(String, Option<String>)>);

pub(crate) fn parse_alter(sql: &str) -> Result<AlterTable, SqlError> {
    let usage = "ALTER TABLE supports SET (retention = '7 days') and RESET (retention); \
                 new columns are added by writing rows that have them";
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
    Ok((name, if_exists, changes))
}

/// `ALTER TABLE t SET (retention = '7 days')`, `ALTER TABLE t RESET
/// (retention)`. Columns are added by writing them, so these are the only
/// changes a table takes.
async fn alter_table(sql: &str, engine: &Engine) -> Result<Done, SqlError> {
    let (name, if_exists, changes) = parse_alter(sql)?;
    let Some(def) = engine.table(&name) else {
        if if_exists {
            return Ok(Done {
                tag: "ALTER TABLE",
                rows: None,
                batch: None,
            });
        }
        return Err(sextant_storage::StorageError::from(
            sextant_catalog::CatalogError::TableNotFound(name),
        )
        .into());
    };
    let mut options = def.options.clone();
    for (key, value) in changes {
        match (key.as_str(), value) {
            ("partition" | "partition_duration", _) => {
                return Err(SqlError::unsupported(format!(
                    "the partition of table \"{name}\" cannot change: its files are laid out by it; \
                     create a new table and INSERT INTO ... SELECT"
                )));
            }
            (key, Some(text)) => set_option(&mut options, key, &text)?,
            ("retention", None) => options.retention = TableOptions::default().retention,
            (key, None) => {
                return Err(SqlError::invalid_parameter(format!(
                    "unknown table option \"{key}\" (known: retention, partition)"
                )));
            }
        }
    }
    engine.set_options(&name, options).await?;
    Ok(Done {
        tag: "ALTER TABLE",
        rows: None,
        batch: None,
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
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            SqlError::invalid_parameter(format!(
                "'{text}' is not a duration: use e.g. '30 days', '12 hours', '15 minutes'"
            ))
        })
}

async fn drop_table(sql: &str, engine: &Engine) -> Result<Done, SqlError> {
    let Statement::Drop {
        object_type: ObjectType::Table,
        if_exists,
        names,
        ..
    } = parse_one(sql)?
    else {
        return Err(SqlError::syntax("expected DROP TABLE"));
    };
    let names = names
        .iter()
        .map(table_name)
        .collect::<Result<Vec<_>, _>>()?;
    for name in &names {
        if engine.view(name).is_some() {
            return Err(SqlError::new(
                "42809",
                format!("\"{name}\" is a materialized view: use DROP MATERIALIZED VIEW {name}"),
            ));
        }
        if engine.table(name).is_none() {
            if if_exists {
                continue;
            }
            return Err(sextant_storage::StorageError::Catalog(
                sextant_catalog::CatalogError::TableNotFound(name.clone()),
            )
            .into());
        }
        engine.drop_table(name).await?;
    }
    Ok(Done {
        tag: "DROP TABLE",
        rows: None,
        batch: None,
    })
}

async fn flush(sql: &str, engine: &Engine) -> Result<Done, SqlError> {
    let mut files = 0;
    for name in flush_targets(sql)? {
        files += engine.flush_table(&name).await?;
    }
    Ok(Done {
        tag: "FLUSH",
        rows: Some(files),
        batch: None,
    })
}

/// `COMPACT TABLE a, b`: merges each table's small files now; the count is
/// the number of files merged away.
async fn compact(sql: &str, engine: &Engine) -> Result<Done, SqlError> {
    let mut files = 0;
    for name in table_list(sql, "COMPACT")? {
        files += engine.compact_table(&name).await?.files_in;
    }
    Ok(Done {
        tag: "COMPACT",
        rows: Some(files),
        batch: None,
    })
}

/// The tables of `FLUSH TABLE a, b`.
fn flush_targets(sql: &str) -> Result<Vec<String>, SqlError> {
    table_list(sql, "FLUSH")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_strings_and_comments() {
        let s = split("SELECT 'a;b'; -- c;d\nFLUSH TABLE t;;  SELECT 1").unwrap();
        // Comments around a statement are not part of its text.
        assert_eq!(s, vec!["SELECT 'a;b'", "FLUSH TABLE t", "SELECT 1"]);
        assert_eq!(split(" ; ;").unwrap(), Vec::<String>::new());
        let s = split("SELECT 'é';\nSELECT 'ü'").unwrap();
        assert_eq!(s, vec!["SELECT 'é'", "SELECT 'ü'"]);
    }

    #[test]
    fn classify_statements() {
        assert!(matches!(
            classify("flush table cpu"),
            Classified::Sextant(SextantStatement::Flush(_))
        ));
        assert!(matches!(
            classify("-- hi\nCREATE TABLE x (time TIMESTAMP)"),
            Classified::Sextant(SextantStatement::CreateTable(_))
        ));
        assert_eq!(
            classify("show tables"),
            Classified::Sql("SELECT table_name FROM system.tables ORDER BY table_name".into())
        );
        assert_eq!(classify("SELECT 1"), Classified::Sql("SELECT 1".into()));
    }

    #[test]
    fn options() {
        let o = table_options(&CreateTableOptions::None).unwrap();
        assert_eq!(o, TableOptions::default());
        assert_eq!(
            parse_retention("30 days").unwrap(),
            Some(Duration::from_secs(30 * 86400))
        );
        assert_eq!(parse_retention("infinite").unwrap(), None);
        assert!(parse_interval("soon").is_err());
    }

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
