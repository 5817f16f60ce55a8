//! Token helpers for the statements Sextant parses itself (users, grants
//! and tokens in `access`, alert rules in `alerts`): a [`Usage`] puts the
//! statement family's usage line into every syntax error it makes.

use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::SqlError;

/// Consumes the unquoted word `w` (any case) if it comes next.
pub(crate) fn word(p: &mut Parser<'_>, w: &str) -> bool {
    match &p.peek_token().token {
        Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w) => {
            p.next_token();
            true
        }
        _ => false,
    }
}

/// A quoted string (`'...'`); `what` names it in the error.
pub(crate) fn quoted(p: &mut Parser<'_>, what: &str) -> Result<String, SqlError> {
    match p.next_token().token {
        Token::SingleQuotedString(s) => Ok(s),
        other => Err(SqlError::syntax(format!(
            "syntax error: expected {what} as a quoted string, found {other}"
        ))),
    }
}

/// The usage line of a statement family, for its syntax errors.
#[derive(Clone, Copy)]
pub(crate) struct Usage(pub &'static str);

impl Usage {
    /// A parser error as a 42601 with the usage.
    pub(crate) fn syntax(self, e: ParserError) -> SqlError {
        let m = match e {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
            other => other.to_string(),
        };
        SqlError::syntax(format!("syntax error: {m}; usage: {}", self.0))
    }

    /// The word `w`, or a 42601 saying what came instead.
    pub(crate) fn expect(self, p: &mut Parser<'_>, w: &str) -> Result<(), SqlError> {
        if word(p, w) {
            Ok(())
        } else {
            Err(SqlError::syntax(format!(
                "syntax error: expected {}, found {}; usage: {}",
                w.to_uppercase(),
                p.peek_token().token,
                self.0
            )))
        }
    }

    /// A name: lower-cased unless quoted, as PostgreSQL folds identifiers.
    pub(crate) fn name(self, p: &mut Parser<'_>) -> Result<String, SqlError> {
        let id = p.parse_identifier().map_err(|e| self.syntax(e))?;
        Ok(if id.quote_style.is_some() {
            id.value
        } else {
            id.value.to_lowercase()
        })
    }

    /// The end of the statement, or a 42601 naming what follows.
    pub(crate) fn end(self, p: &mut Parser<'_>) -> Result<(), SqlError> {
        match p.peek_token().token {
            Token::EOF => Ok(()),
            other => Err(SqlError::syntax(format!(
                "syntax error: unexpected {other}; usage: {}",
                self.0
            ))),
        }
    }
}
