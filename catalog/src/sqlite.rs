//! The embedded SQLite catalog.
//!
//! One file, `catalog.sqlite`, opened in WAL journal mode with
//! `synchronous=FULL` so a commit is durable when it returns. The file is
//! recognized by its `application_id` and its layout by `user_version`
//! ([`schema`]: the layout and its migrations, checked at open). Every
//! call of the [`crate::Catalog`] runs in one transaction on the one
//! connection.

pub(crate) mod schema;

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::Result;
use crate::db::{Row, Store, Tx, Value};
use crate::sql::SqlCatalog;

/// The catalog in an embedded SQLite database file.
pub type SqliteCatalog = SqlCatalog<SqliteStore>;

/// The connection to the catalog's SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The database file (`None` in memory).
    path: Option<std::path::PathBuf>,
}

impl SqlCatalog<SqliteStore> {
    /// The catalog as the node `id` sees it: table definitions carry that
    /// node's WAL positions. The node takes over the positions of a catalog
    /// from before nodes, unless it has its own.
    pub fn for_node(self, id: &str) -> Result<Self> {
        crate::sql::for_node(self, id)
    }

    /// Opens (or creates) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Ok(Self::new(schema::init(
            conn,
            &path.display().to_string(),
            true,
        )?))
    }

    /// Opens the catalog at `path`, which must hold one: a missing file, or
    /// one without a Sextant catalog in it, is [`crate::CatalogError::Empty`]
    /// and is left as it is (nothing is created or written).
    pub fn open_existing(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        if !path.exists() {
            return Err(crate::CatalogError::Empty(name));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )?;
        Ok(Self::new(schema::init(conn, &name, false)?))
    }

    /// An in-memory catalog, for tests.
    pub fn in_memory() -> Result<Self> {
        Ok(Self::new(schema::init(
            Connection::open_in_memory()?,
            ":memory:",
            true,
        )?))
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

/// `sql` with SQLite's `?N` for each `$N`.
fn placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

impl Tx for rusqlite::Transaction<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self.prepare_cached(&placeholders(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.prepare_cached(&placeholders(sql))?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = vec![];
        while let Some(row) = rows.next()? {
            let values = (0..columns)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(v) => Value::Int(v),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Real(v) => Value::Int(v as i64),
                        ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn transaction<R: Send>(
        &self,
        body: &mut (dyn FnMut(&mut dyn Tx) -> Result<R> + Send),
    ) -> Result<R> {
        // A panic while holding the lock leaves SQLite itself consistent
        // (transactions roll back), so the poisoned guard is safe to reuse.
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut tx = conn.transaction()?;
        let out = body(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// `VACUUM INTO` a file beside the catalog (`<catalog>.snapshot`), read
    /// back and removed: one consistent, compact database file, taken
    /// between two transactions.
    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let mut name = path.as_os_str().to_owned();
        name.push(".snapshot");
        let copy = std::path::PathBuf::from(name);
        let io = |what: &str, e: std::io::Error| {
            crate::CatalogError::Io(format!("{what} {}: {e}", copy.display()))
        };
        // VACUUM INTO refuses an existing file (one left by a crash).
        match std::fs::remove_file(&copy) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", e)),
        }
        {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            conn.execute("VACUUM INTO ?1", [copy.to_string_lossy().as_ref()])?;
        }
        let bytes = std::fs::read(&copy).map_err(|e| io("cannot read", e))?;
        std::fs::remove_file(&copy).map_err(|e| io("cannot remove", e))?;
        Ok(Some(bytes))
    }

    fn change_count(&self) -> u64 {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .total_changes()
    }
}
