//! The one SQL surface the catalog's logic is written against, so that the
//! same statements run on SQLite (the embedded catalog) and PostgreSQL (the
//! shared one): a [`Store`] runs a closure in a transaction, handing it a
//! [`Tx`] that executes statements with `$1, $2, ...` placeholders and
//! answers rows of [`Value`]s. The statements keep to what both dialects
//! share (no `max(a, b)`, `RETURNING id` rather than a last-rowid call,
//! every integer a 64-bit one).

use std::fmt::Debug;

use crate::{CatalogError, Result};

/// A parameter or a column value: the catalog stores only integers and text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v as i64)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

/// `[Value]` of the arguments, for a statement's parameters.
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::db::Value::from($v)),*][..] };
}
pub(crate) use params;

/// One row of a query's answer.
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    pub(crate) fn int(&self, i: usize) -> Result<i64> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            other => Err(CatalogError::Corrupt(format!(
                "column {i}: expected an integer, found {other:?}"
            ))),
        }
    }

    pub(crate) fn uint(&self, i: usize) -> Result<u64> {
        Ok(self.int(i)? as u64)
    }

    pub(crate) fn text(&self, i: usize) -> Result<String> {
        match self.0.get(i) {
            Some(Value::Text(v)) => Ok(v.clone()),
            other => Err(CatalogError::Corrupt(format!(
                "column {i}: expected text, found {other:?}"
            ))),
        }
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.int(i).map(Some),
        }
    }
}

/// Statements inside one transaction.
pub(crate) trait Tx {
    /// Runs `sql` (placeholders `$1`, `$2`, ...); the number of rows changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// The rows `sql` answers.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
}

impl dyn Tx + '_ {
    /// The one row `sql` answers, or none.
    pub(crate) fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The integer of the one row and column `sql` answers (a count, an id).
    pub(crate) fn query_int(&mut self, sql: &str, params: &[Value]) -> Result<i64> {
        match self.query_opt(sql, params)? {
            Some(row) => row.int(0),
            None => Err(CatalogError::Corrupt(format!("no row from {sql}"))),
        }
    }
}

/// Where the catalog's rows live.
pub(crate) trait Store: Send + Sync + Debug {
    /// Runs `body` in a transaction and commits it if `body` succeeds; a
    /// store whose transactions can conflict with other writers' (PostgreSQL,
    /// serializable) runs `body` again after a conflict.
    fn transaction<R: Send>(
        &self,
        body: &mut (dyn FnMut(&mut dyn Tx) -> Result<R> + Send),
    ) -> Result<R>;

    /// See [`crate::Catalog::changes`].
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// See [`crate::Catalog::snapshot`].
    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// See [`crate::Catalog::change_count`].
    fn change_count(&self) -> u64 {
        0
    }
}
