//! The embedded SQLite catalog.
//!
//! One file, `catalog.sqlite`, opened in WAL journal mode with
//! `synchronous=FULL` so a commit is durable when it returns. The file is
//! recognized by its `application_id` and its layout by `user_version`.
//!
//! [`SqliteCatalog`] implements [`Catalog`] by handing each call to the
//! module of its domain, which runs it on the one connection: [`schema`]
//! (the layout and its migrations, checked at open), [`tables`] (tables,
//! their files and compactions), [`views`] (materialized views and their
//! invalidations), [`alerts`] (rules, events and the delivery outbox) and
//! [`users`] (users and tokens).

mod alerts;
mod schema;
mod tables;
#[cfg(test)]
mod tests;
mod users;
mod views;

use std::path::Path;
use std::sync::Mutex;

use arrow_schema::SchemaRef;
use rusqlite::Connection;
use serde::Serialize;
use sextant_clock::Clock;

use crate::{
    AlertEvent, Catalog, CatalogError, CompactionRun, Delivery, IndexDef, Invalidation,
    NewParquetFile, NewTable, NewView, ParquetFile, PlainView, Refresh, Result, StoredAlert,
    StoredToken, StoredUser, TableDef, TableOptions, ViewDef, ViewProgress,
};

/// Catalog kept in an embedded SQLite database file.
#[derive(Debug)]
pub struct SqliteCatalog {
    conn: Mutex<Connection>,
    /// The time the catalog records (creation and commit times).
    clock: Clock,
}

impl SqliteCatalog {
    /// Opens (or creates) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn, &path.display().to_string())
    }

    /// An in-memory catalog, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?, ":memory:")
    }

    /// The catalog with its times read from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent
        // (transactions roll back), so the poisoned guard is safe to reuse.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Deletes the row named `name` from `table`; whether there was one.
fn delete_named(cat: &SqliteCatalog, table: &str, name: &str) -> Result<bool> {
    let sql = format!("DELETE FROM {table} WHERE name = ?1");
    Ok(cat.conn().execute(&sql, [name])? > 0)
}

/// The rows of `sql`: three texts and a number (a name, what it holds, and
/// when it was made), as the plain views and indexes are read.
fn named_rows(cat: &SqliteCatalog, sql: &str) -> Result<Vec<(String, String, String, i64)>> {
    let conn = cat.conn();
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| CatalogError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(format!("{what}: {e}")))
}

impl Catalog for SqliteCatalog {
    fn create_table(&self, table: NewTable) -> Result<TableDef> {
        tables::create_table(self, table)
    }

    fn drop_table(&self, name: &str) -> Result<(TableDef, Vec<ParquetFile>)> {
        tables::drop_table(self, name)
    }

    fn tables(&self) -> Result<Vec<TableDef>> {
        tables::tables(self)
    }

    fn table(&self, name: &str) -> Result<Option<TableDef>> {
        tables::table(self, name)
    }

    fn set_options(&self, name: &str, options: TableOptions) -> Result<TableDef> {
        tables::set_options(self, name, options)
    }

    fn set_schema(&self, name: &str, schema: SchemaRef) -> Result<TableDef> {
        tables::set_schema(self, name, schema)
    }

    fn commit_files_invalidating(
        &self,
        table_id: i64,
        files: Vec<NewParquetFile>,
        persisted_seq: u64,
        invalidate: &[Invalidation],
    ) -> Result<Vec<ParquetFile>> {
        tables::commit_files_invalidating(self, table_id, files, persisted_seq, invalidate)
    }

    fn create_view(&self, table: NewTable, view: NewView) -> Result<(TableDef, ViewDef)> {
        views::create_view(self, table, view)
    }

    fn views(&self) -> Result<Vec<ViewDef>> {
        views::views(self)
    }

    fn invalidations(&self) -> Result<Vec<Invalidation>> {
        views::invalidations(self)
    }

    fn set_view_progress(&self, view_id: i64, progress: &ViewProgress) -> Result<()> {
        views::set_view_progress(self, view_id, progress)
    }

    fn commit_refresh(&self, r: Refresh<'_>) -> Result<Vec<ParquetFile>> {
        views::commit_refresh(self, r)
    }

    fn replace_files(
        &self,
        table_id: i64,
        remove: &[i64],
        add: Vec<NewParquetFile>,
    ) -> Result<Vec<ParquetFile>> {
        tables::replace_files(self, table_id, remove, add)
    }

    fn record_compaction(&self, run: &CompactionRun) -> Result<()> {
        tables::record_compaction(self, run)
    }

    fn compactions(&self, limit: usize) -> Result<Vec<CompactionRun>> {
        tables::compactions(self, limit)
    }

    fn files(&self, table_id: i64) -> Result<Vec<ParquetFile>> {
        tables::files(self, table_id)
    }

    fn create_plain_view(&self, view: &PlainView, replace: bool) -> Result<()> {
        views::create_plain_view(self, view, replace)
    }

    fn drop_plain_view(&self, name: &str) -> Result<()> {
        views::drop_plain_view(self, name)
    }

    fn plain_views(&self) -> Result<Vec<PlainView>> {
        views::plain_views(self)
    }

    fn create_index(&self, index: &IndexDef) -> Result<()> {
        tables::create_index(self, index)
    }

    fn drop_index(&self, name: &str) -> Result<()> {
        tables::drop_index(self, name)
    }

    fn indexes(&self) -> Result<Vec<IndexDef>> {
        tables::indexes(self)
    }

    fn create_alert(&self, alert: &StoredAlert) -> Result<()> {
        alerts::create_alert(self, alert)
    }

    fn drop_alert(&self, name: &str) -> Result<()> {
        alerts::drop_alert(self, name)
    }

    fn alerts(&self) -> Result<Vec<StoredAlert>> {
        alerts::alerts(self)
    }

    fn commit_alert(
        &self,
        name: &str,
        state: &str,
        events: &[AlertEvent],
        deliveries: &[String],
    ) -> Result<Vec<i64>> {
        alerts::commit_alert(self, name, state, events, deliveries)
    }

    fn finish_delivery(&self, id: i64, event: &AlertEvent, retry: Option<&str>) -> Result<()> {
        alerts::finish_delivery(self, id, event, retry)
    }

    fn deliveries(&self) -> Result<Vec<Delivery>> {
        alerts::deliveries(self)
    }

    fn alert_events(&self, limit: usize) -> Result<Vec<AlertEvent>> {
        alerts::alert_events(self, limit)
    }

    fn users(&self) -> Result<Vec<StoredUser>> {
        users::users(self)
    }

    fn create_user(&self, user: &StoredUser) -> Result<()> {
        users::create_user(self, user)
    }

    fn update_user(&self, name: &str, body: &str) -> Result<()> {
        users::update_user(self, name, body)
    }

    fn drop_user(&self, name: &str) -> Result<()> {
        users::drop_user(self, name)
    }

    fn tokens(&self) -> Result<Vec<StoredToken>> {
        users::tokens(self)
    }

    fn create_token(&self, token: &StoredToken) -> Result<()> {
        users::create_token(self, token)
    }

    fn drop_token(&self, name: &str) -> Result<()> {
        users::drop_token(self, name)
    }

    fn max_persisted_seq(&self) -> Result<u64> {
        tables::max_persisted_seq(self)
    }
}
