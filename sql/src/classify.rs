//! Which statement is whose: a query string is split into statements with
//! the SQL tokenizer (so `;` inside strings and comments is no separator)
//! ([`split`]), and each is classified ([`classify`]) as one of Sextant's
//! own, parsed once here into a typed [`SextantStatement`] (tables, access
//! control, views, alerts, `KILL`) that the access check and the executor
//! read; rewritten (`SHOW TABLES`, `SHOW ALERTS`); or passed on unchanged
//! to DataFusion.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use datafusion::sql::sqlparser::ast::{CreateTable, CreateView, ObjectType};
use sextant_alerts::AlertDef;

pub use crate::access::AccessStatement;
use crate::ast::LineIndex;
pub use crate::ast::{AlterTable, DropObjects};
use crate::error::SqlError;

/// A statement as the statement layer classified it.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// Handled here.
    Sextant(SextantStatement),
    /// Handed to DataFusion as this text (possibly rewritten).
    Sql(String),
}

/// Statements Sextant executes itself, as [`classify`] parsed them.
#[derive(Debug, Clone, PartialEq)]
pub enum SextantStatement {
    /// `CREATE TABLE`, as sqlparser reads it.
    CreateTable(Box<CreateTable>),
    /// `ALTER TABLE t SET (...) | RESET (...)`.
    AlterTable(AlterTable),
    /// `DROP TABLE [IF EXISTS] a, b`.
    DropTable(DropObjects),
    /// `FLUSH TABLE a, b`.
    Flush(Vec<String>),
    /// `COMPACT TABLE a, b`.
    Compact(Vec<String>),
    /// `CHECK TABLE a, b`: reads every persisted file of the tables whole.
    Check(Vec<String>),
    /// `CREATE MATERIALIZED VIEW`, as sqlparser reads it.
    CreateView(Box<CreateView>),
    /// `DROP MATERIALIZED VIEW [IF EXISTS] a, b`.
    DropView(DropObjects),
    /// `CREATE [OR REPLACE] VIEW v AS SELECT ...`: a plain view.
    CreatePlainView {
        name: String,
        query: String,
        or_replace: bool,
        if_not_exists: bool,
    },
    /// `DROP VIEW [IF EXISTS] a, b`.
    DropPlainView(DropObjects),
    /// `CREATE INDEX ... ON table (columns)` (see [`crate::indexes`]).
    CreateIndex(crate::indexes::CreateIndex),
    /// `DROP INDEX [IF EXISTS] a, b`.
    DropIndex(DropObjects),
    /// `REFRESH MATERIALIZED VIEW v`.
    RefreshView(String),
    /// `CREATE ALERT [IF NOT EXISTS] ...`.
    CreateAlert {
        def: Box<AlertDef>,
        if_not_exists: bool,
    },
    /// `ALTER ALERT name PAUSE | RESUME`.
    AlterAlert { name: String, paused: bool },
    /// `DROP ALERT [IF EXISTS] name`.
    DropAlert { name: String, if_exists: bool },
    /// `KILL [QUERY] id`.
    Kill(u64),
    /// `DELETE FROM t [WHERE ...]` (see [`crate::delete`]).
    Delete(crate::delete::DeleteStatement),
    /// `CREATE USER`, `ALTER USER`, `DROP USER`, `GRANT`, `REVOKE`,
    /// `CREATE TOKEN`, `DROP TOKEN` (see [`crate::access`]).
    Access(AccessStatement),
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

/// Decides who runs one statement, and parses Sextant's own: a statement
/// of Sextant's that does not parse is refused here (42601 and its usage).
pub fn classify(stmt: &str) -> Result<Classified, SqlError> {
    use SextantStatement as S;
    let parsed = |s: SextantStatement| Ok(Classified::Sextant(s));
    Ok(match kind(stmt) {
        Kind::Sql(text) => Classified::Sql(text),
        Kind::CreateTable => return parsed(S::CreateTable(crate::ast::parse_create_table(stmt)?)),
        Kind::AlterTable => return parsed(S::AlterTable(crate::ast::parse_alter(stmt)?)),
        Kind::DropTable => {
            return parsed(S::DropTable(crate::ast::parse_drop(
                stmt,
                ObjectType::Table,
            )?));
        }
        Kind::Flush => return parsed(S::Flush(crate::ast::table_list(stmt, "FLUSH")?)),
        Kind::Compact => return parsed(S::Compact(crate::ast::table_list(stmt, "COMPACT")?)),
        Kind::Check => return parsed(S::Check(crate::ast::table_list(stmt, "CHECK")?)),
        Kind::CreateView => return parsed(S::CreateView(crate::views::parse_create(stmt)?)),
        Kind::CreatePlainView => return parsed(crate::views::parse_create_plain(stmt)?),
        Kind::DropPlainView => {
            return parsed(S::DropPlainView(crate::ast::parse_drop(
                stmt,
                ObjectType::View,
            )?));
        }
        Kind::CreateIndex => return parsed(S::CreateIndex(crate::indexes::parse_create(stmt)?)),
        Kind::DropIndex => {
            return parsed(S::DropIndex(crate::ast::parse_drop(
                stmt,
                ObjectType::Index,
            )?));
        }
        Kind::DropView => {
            return parsed(S::DropView(crate::ast::parse_drop(
                stmt,
                ObjectType::MaterializedView,
            )?));
        }
        Kind::RefreshView => return parsed(S::RefreshView(crate::ast::refresh_target(stmt)?)),
        Kind::CreateAlert => {
            let (def, if_not_exists) = crate::alerts::parse_create(stmt)?;
            return parsed(S::CreateAlert {
                def: Box::new(def),
                if_not_exists,
            });
        }
        Kind::AlterAlert => {
            let (name, paused) = crate::alerts::parse_alter(stmt)?;
            return parsed(S::AlterAlert { name, paused });
        }
        Kind::DropAlert => {
            let (name, if_exists) = crate::alerts::parse_drop(stmt)?;
            return parsed(S::DropAlert { name, if_exists });
        }
        Kind::Kill => return parsed(S::Kill(crate::queries::parse_kill(stmt)?)),
        Kind::Delete => return parsed(S::Delete(crate::delete::parse(stmt)?)),
        Kind::Access => return parsed(S::Access(crate::access::parse(stmt)?)),
    })
}

/// What a statement's first words make it.
enum Kind {
    CreateTable,
    AlterTable,
    DropTable,
    Flush,
    Compact,
    Check,
    CreateView,
    CreatePlainView,
    DropPlainView,
    CreateIndex,
    DropIndex,
    DropView,
    RefreshView,
    CreateAlert,
    AlterAlert,
    DropAlert,
    Kill,
    Access,
    Delete,
    /// DataFusion's, as this text.
    Sql(String),
}

fn kind(stmt: &str) -> Kind {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, stmt).tokenize() else {
        return Kind::Sql(stmt.to_string());
    };
    let words: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let kw = |i: usize| match words.get(i) {
        Some(Token::Word(w)) => w.keyword,
        _ => Keyword::NoKeyword,
    };
    let first = |s: &str| matches!(words.first(), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(s));
    let second = |s: &str| matches!(words.get(1), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(s));
    if second("alert") {
        match kw(0) {
            Keyword::CREATE => return Kind::CreateAlert,
            Keyword::ALTER => return Kind::AlterAlert,
            Keyword::DROP => return Kind::DropAlert,
            _ => {}
        }
    }
    if is_access_statement(&words) {
        return Kind::Access;
    }
    if first("kill") {
        return Kind::Kill;
    }
    if kw(0) == Keyword::DELETE {
        return Kind::Delete;
    }
    if kw(0) == Keyword::SHOW && second("alerts") && words.len() == 2 {
        return Kind::Sql(SHOW_ALERTS.to_string());
    }
    match (kw(0), kw(1)) {
        (Keyword::CREATE, Keyword::MATERIALIZED) => Kind::CreateView,
        (Keyword::CREATE, Keyword::VIEW) => Kind::CreatePlainView,
        (Keyword::CREATE, Keyword::OR) if kw(3) == Keyword::VIEW => Kind::CreatePlainView,
        (Keyword::DROP, Keyword::VIEW) => Kind::DropPlainView,
        (Keyword::CREATE, Keyword::INDEX) => Kind::CreateIndex,
        (Keyword::CREATE, Keyword::UNIQUE) if kw(2) == Keyword::INDEX => Kind::CreateIndex,
        (Keyword::DROP, Keyword::INDEX) => Kind::DropIndex,
        (Keyword::DROP, Keyword::MATERIALIZED) => Kind::DropView,
        (_, Keyword::MATERIALIZED) if first("refresh") => Kind::RefreshView,
        (Keyword::CREATE, Keyword::TABLE) => Kind::CreateTable,
        (Keyword::ALTER, Keyword::TABLE) => Kind::AlterTable,
        (Keyword::NoKeyword, Keyword::TABLE | Keyword::TABLES) if first("compact") => Kind::Compact,
        (Keyword::DROP, Keyword::TABLE) => Kind::DropTable,
        (Keyword::FLUSH, Keyword::TABLE | Keyword::TABLES) => Kind::Flush,
        (Keyword::CHECK, Keyword::TABLE | Keyword::TABLES) => Kind::Check,
        (Keyword::SHOW, Keyword::TABLES) if words.len() == 2 => {
            Kind::Sql("SELECT table_name FROM system.tables ORDER BY table_name".to_string())
        }
        _ => Kind::Sql(stmt.to_string()),
    }
}

/// `SHOW ALERTS`: each rule's state at a glance.
const SHOW_ALERTS: &str = "SELECT alert_name, state, health, every, \"for\", firing, pending, \
     last_evaluation, next_run, last_error FROM system.alerts ORDER BY alert_name";

/// Whether the statement's first words make it one of this module's.
fn is_access_statement(words: &[&Token]) -> bool {
    let w = |i: usize| match words.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
        _ => String::new(),
    };
    matches!(
        (w(0).as_str(), w(1).as_str()),
        ("grant" | "revoke", _)
            | ("create" | "alter" | "drop", "user" | "role")
            | ("create" | "drop", "token")
    )
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
        assert_eq!(
            classify("flush table cpu, \"Mem\"").unwrap(),
            Classified::Sextant(SextantStatement::Flush(vec!["cpu".into(), "Mem".into()]))
        );
        assert!(matches!(
            classify("-- hi\nCREATE TABLE x (time TIMESTAMP)").unwrap(),
            Classified::Sextant(SextantStatement::CreateTable(ct)) if ct.name.to_string() == "x"
        ));
        assert_eq!(
            classify("DROP TABLE IF EXISTS a, public.b").unwrap(),
            Classified::Sextant(SextantStatement::DropTable(DropObjects {
                names: vec!["a".into(), "b".into()],
                if_exists: true
            }))
        );
        assert_eq!(
            classify("kill query 12").unwrap(),
            Classified::Sextant(SextantStatement::Kill(12))
        );
        assert_eq!(
            classify("show tables").unwrap(),
            Classified::Sql("SELECT table_name FROM system.tables ORDER BY table_name".into())
        );
        assert_eq!(
            classify("SELECT 1").unwrap(),
            Classified::Sql("SELECT 1".into())
        );
        // Sextant's statements are parsed here: a malformed one is refused
        // before it is checked or run.
        let e = classify("FLUSH TABLE").unwrap_err();
        assert_eq!(e.state, sextant_sqlstate::SqlState::SYNTAX_ERROR);
        assert!(classify("kill query soon").is_err());
    }
}
