//! Which statement is whose: a query string is split into statements with
//! the SQL tokenizer (so `;` inside strings and comments is no separator)
//! ([`split`]), and each is classified ([`classify`]) as one of Sextant's
//! own ([`SextantStatement`]: tables, access control, views, alerts,
//! `KILL`), rewritten (`SHOW TABLES`, `SHOW ALERTS`), or passed on
//! unchanged to DataFusion.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::ast::LineIndex;
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
    if is_access_statement(&words) {
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
}
