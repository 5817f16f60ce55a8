//! `CREATE INDEX` and `DROP INDEX`, so that a schema script written for
//! PostgreSQL runs: an index is checked (its table and columns exist, its
//! name is free) and recorded in the catalog, and `DROP INDEX` or dropping
//! its table removes it. Sextant builds no secondary index: a scan prunes
//! Parquet files and row groups by their statistics, with or without one,
//! so an index changes no answer and no plan. `CREATE UNIQUE INDEX` is
//! refused, because Sextant does not enforce uniqueness.

use datafusion::sql::sqlparser::ast::{Expr, Statement};
use sextant_catalog::IndexDef;
use sextant_sqlstate::SqlState;
use sextant_storage::Engine;

use crate::ast::{Done, DropObjects, normalize, parse_one, table_name};
use crate::error::SqlError;

/// `CREATE INDEX`, as parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateIndex {
    /// Its name; PostgreSQL's `<table>_<columns>_idx` when none is given.
    pub name: Option<String>,
    pub table: String,
    /// Each key: a column's name, or an expression as written.
    pub keys: Vec<Key>,
    pub if_not_exists: bool,
}

/// One key of an index.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Column(String),
    Expression(String),
}

/// Parses `CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] [name] ON
/// table [USING method] (keys) [INCLUDE (...)] [WHERE ...]`.
pub(crate) fn parse_create(sql: &str) -> Result<CreateIndex, SqlError> {
    let Statement::CreateIndex(ci) = parse_one(sql)? else {
        return Err(SqlError::syntax(
            "expected CREATE INDEX [name] ON table (columns)",
        ));
    };
    if ci.unique {
        return Err(SqlError::unsupported(
            "Sextant does not enforce uniqueness, so it has no unique indexes: \
             create the index without UNIQUE",
        ));
    }
    let keys = ci
        .columns
        .iter()
        .map(|c| match &c.column.expr {
            Expr::Identifier(id) => Key::Column(normalize(id)),
            e => Key::Expression(e.to_string()),
        })
        .collect();
    Ok(CreateIndex {
        name: ci.name.as_ref().map(table_name).transpose()?,
        table: table_name(&ci.table_name)?,
        keys,
        if_not_exists: ci.if_not_exists,
    })
}

/// Records the index (see the module documentation).
pub(crate) async fn create(ci: &CreateIndex, engine: &Engine) -> Result<Done, SqlError> {
    let done = Ok(Done {
        tag: "CREATE INDEX",
        rows: None,
        batch: None,
    });
    let Some(table) = engine.table(&ci.table) else {
        return Err(SqlError::new(
            SqlState::UNDEFINED_TABLE,
            format!("relation \"{}\" does not exist", ci.table),
        ));
    };
    let schema = table.visible_schema();
    for key in &ci.keys {
        if let Key::Column(c) = key
            && schema.index_of(c).is_err()
        {
            return Err(SqlError::new(
                SqlState::UNDEFINED_COLUMN,
                format!("column \"{c}\" does not exist"),
            ));
        }
    }
    let name = match &ci.name {
        Some(name) => name.clone(),
        None => {
            // PostgreSQL's choice: the table, the key columns ("expr" for
            // an expression), "idx", and a number if that is taken.
            let indexes = engine
                .catalog()
                .indexes()
                .map_err(sextant_storage::StorageError::from)?;
            let taken = |name: &str| {
                engine.table(name).is_some()
                    || engine.plain_view(name).is_some()
                    || indexes.iter().any(|i| i.name == name)
            };
            let columns: Vec<&str> = ci
                .keys
                .iter()
                .map(|k| match k {
                    Key::Column(c) => c.as_str(),
                    Key::Expression(_) => "expr",
                })
                .collect();
            let base = format!("{}_{}_idx", ci.table, columns.join("_"));
            let mut name = base.clone();
            let mut n = 0;
            while taken(&name) {
                n += 1;
                name = format!("{base}{n}");
            }
            name
        }
    };
    let columns = ci
        .keys
        .iter()
        .map(|k| match k {
            Key::Column(c) | Key::Expression(c) => c.clone(),
        })
        .collect();
    // The catalog refuses a name a table, view or index has (42P07).
    match engine
        .create_index(IndexDef {
            name,
            table: ci.table.clone(),
            columns,
            created_at_ns: engine.now_ns(),
        })
        .await
    {
        Err(sextant_storage::StorageError::Catalog(
            sextant_catalog::CatalogError::RelationExists(_),
        )) if ci.if_not_exists => done,
        Err(e) => Err(e.into()),
        Ok(()) => done,
    }
}

/// `DROP INDEX [IF EXISTS] a, b`.
pub(crate) async fn drop(drop: &DropObjects, engine: &Engine) -> Result<Done, SqlError> {
    for name in &drop.names {
        match engine.drop_index(name).await {
            Ok(()) => {}
            Err(sextant_storage::StorageError::Catalog(
                sextant_catalog::CatalogError::IndexNotFound(_),
            )) if drop.if_exists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Done {
        tag: "DROP INDEX",
        rows: None,
        batch: None,
    })
}
