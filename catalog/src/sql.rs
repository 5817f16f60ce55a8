//! The catalog's logic, written once over [`Store`]: [`SqlCatalog`]
//! implements [`Catalog`] by running each call in one transaction of its
//! store, with the statements of the module of its domain: [`tables`]
//! (tables, their files, compactions and indexes), [`views`] (materialized
//! views, their invalidations, plain views), [`metadata`] (Prometheus
//! metric metadata), [`alerts`] (rules, events and
//! the delivery outbox), [`users`] (users and tokens) and [`nodes`] (the
//! registry of nodes). A catalog is opened for one node
//! ([`for_node`]): the WAL positions it reads and writes are
//! that node's.

mod alerts;
mod metadata;
mod nodes;
pub(crate) mod tables;
#[cfg(test)]
mod tests;
mod users;
mod views;

use arrow_schema::SchemaRef;
use serde::Serialize;
use sextant_clock::Clock;

use crate::db::{Store, Tx, params};
use crate::{
    AlertEvent, Catalog, CatalogError, CompactionRun, Delivery, IndexDef, Invalidation, Lease,
    MetricMetadata, NewParquetFile, NewTable, NewView, NodeInfo, ParquetFile, PlainView, Refresh,
    Result, StoredAlert, StoredToken, StoredUser, TableDef, TableOptions, ViewDef, ViewProgress,
};

/// The catalog kept in a SQL database: SQLite ([`crate::SqliteCatalog`]) or
/// PostgreSQL ([`crate::PostgresCatalog`]).
#[derive(Debug)]
pub struct SqlCatalog<S> {
    pub(crate) store: S,
    /// The time the catalog records (creation and commit times).
    pub(crate) clock: Clock,
    /// The node whose WAL positions this catalog reads and writes.
    node: String,
}

impl<S> SqlCatalog<S> {
    pub(crate) fn new(store: S) -> Self {
        Self {
            store,
            clock: Clock::System,
            node: String::new(),
        }
    }

    /// The catalog with its times read from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> i64 {
        self.clock.now_ns()
    }
}

/// `cat` as the node `id` sees it: table definitions carry that node's WAL
/// positions. The node takes over the positions of a catalog from before
/// nodes, unless it has its own.
pub(crate) fn for_node<S: Store>(mut cat: SqlCatalog<S>, id: &str) -> Result<SqlCatalog<S>> {
    in_tx(&cat, |tx| {
        tables::adopt_positions(tx, id)?;
        views::adopt_invalidations(tx, id)
    })?;
    cat.node = id.to_string();
    Ok(cat)
}

/// `body` in one transaction of the catalog's store.
fn in_tx<S: Store, R: Send>(
    cat: &SqlCatalog<S>,
    mut body: impl FnMut(&mut dyn Tx) -> Result<R> + Send,
) -> Result<R> {
    cat.store.transaction(&mut body)
}

/// Deletes the row named `name` from `table`; whether there was one.
fn delete_named(tx: &mut dyn Tx, table: &str, name: &str) -> Result<bool> {
    Ok(tx.execute(
        &format!("DELETE FROM {table} WHERE name = $1"),
        params![name],
    )? > 0)
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| CatalogError::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(format!("{what}: {e}")))
}

impl<S: Store> Catalog for SqlCatalog<S> {
    fn create_table(&self, table: NewTable) -> Result<TableDef> {
        let now = self.now();
        in_tx(self, |tx| tables::insert_table(tx, &self.node, &table, now))
    }

    fn drop_table(&self, name: &str) -> Result<(TableDef, Vec<ParquetFile>)> {
        in_tx(self, |tx| tables::drop_table(tx, &self.node, name))
    }

    fn tables(&self) -> Result<Vec<TableDef>> {
        in_tx(self, |tx| tables::tables(tx, &self.node))
    }

    fn table(&self, name: &str) -> Result<Option<TableDef>> {
        in_tx(self, |tx| tables::table_by_name(tx, &self.node, name))
    }

    fn set_options(&self, name: &str, options: TableOptions) -> Result<TableDef> {
        in_tx(self, |tx| {
            tables::set_options(tx, &self.node, name, &options)
        })
    }

    fn set_schema(&self, name: &str, schema: SchemaRef) -> Result<TableDef> {
        in_tx(self, |tx| tables::set_schema(tx, &self.node, name, &schema))
    }

    fn commit_files_invalidating(
        &self,
        table_id: i64,
        files: Vec<NewParquetFile>,
        persisted_seq: u64,
        invalidate: &[Invalidation],
        deletes_seen: i64,
    ) -> Result<Vec<ParquetFile>> {
        let now = self.now();
        let ids = in_tx(self, |tx| {
            if !files.is_empty() {
                tables::check_deletes_seen(tx, table_id, deletes_seen)?;
            }
            tables::commit_files_invalidating(
                tx,
                &self.node,
                table_id,
                &files,
                persisted_seq,
                invalidate,
                now,
            )
        })?;
        Ok(tables::committed(table_id, files, ids, now))
    }

    fn create_view(&self, table: NewTable, view: NewView) -> Result<(TableDef, ViewDef)> {
        let now = self.now();
        in_tx(self, |tx| {
            views::create_view(tx, &self.node, &table, &view, now)
        })
    }

    fn views(&self) -> Result<Vec<ViewDef>> {
        in_tx(self, views::views)
    }

    fn invalidations(&self) -> Result<Vec<Invalidation>> {
        in_tx(self, views::invalidations)
    }

    fn add_delete(&self, delete: crate::Delete) -> Result<crate::Delete> {
        let now = self.now();
        in_tx(self, |tx| tables::add_delete(tx, &delete, now))
    }

    fn deletes(&self) -> Result<Vec<crate::Delete>> {
        in_tx(self, tables::deletes)
    }

    fn bound_delete(&self, id: i64, node: &str, seq: u64, rows: u64) -> Result<Option<u64>> {
        in_tx(self, |tx| tables::bound_delete(tx, id, node, seq, rows))
    }

    fn forget_deletes(&self, ids: &[i64]) -> Result<()> {
        in_tx(self, |tx| tables::forget_deletes(tx, ids))
    }

    fn view_invalidations(&self, view_id: i64, limit: usize) -> Result<Vec<Invalidation>> {
        in_tx(self, |tx| views::view_invalidations(tx, view_id, limit))
    }

    fn add_invalidations(&self, invalidations: &[Invalidation]) -> Result<()> {
        in_tx(self, |tx| views::insert_invalidations(tx, invalidations))
    }

    fn set_view_progress(&self, view_id: i64, progress: &ViewProgress) -> Result<()> {
        in_tx(self, |tx| views::set_view_progress(tx, view_id, progress))
    }

    fn commit_refresh(&self, r: Refresh<'_>) -> Result<Vec<ParquetFile>> {
        let now = self.now();
        let ids = in_tx(self, |tx| views::commit_refresh(tx, &r, now))?;
        Ok(tables::committed(r.view_id, r.add, ids, now))
    }

    fn replace_files(
        &self,
        table_id: i64,
        remove: &[i64],
        add: Vec<NewParquetFile>,
        deletes_seen: i64,
    ) -> Result<Vec<ParquetFile>> {
        let now = self.now();
        in_tx(self, |tx| {
            if !add.is_empty() {
                tables::check_deletes_seen(tx, table_id, deletes_seen)?;
            }
            tables::delete_files(tx, table_id, remove)?;
            tables::insert_files(tx, table_id, &add, now)
        })
        .map(|ids| tables::committed(table_id, add, ids, now))
    }

    fn record_compaction(&self, run: &CompactionRun) -> Result<()> {
        in_tx(self, |tx| tables::record_compaction(tx, run))
    }

    fn compactions(&self, limit: usize) -> Result<Vec<CompactionRun>> {
        in_tx(self, |tx| tables::compactions(tx, limit))
    }

    fn files(&self, table_id: i64) -> Result<Vec<ParquetFile>> {
        in_tx(self, |tx| tables::files(tx, table_id))
    }

    fn files_and_positions(&self, table_id: i64) -> Result<crate::FilesAt> {
        in_tx(self, |tx| {
            Ok((
                tables::files(tx, table_id)?,
                tables::positions(tx, table_id)?,
            ))
        })
    }

    fn all_files_and_positions(&self) -> Result<std::collections::BTreeMap<i64, crate::FilesAt>> {
        in_tx(self, tables::all_files_and_positions)
    }

    fn create_plain_view(&self, view: &PlainView, replace: bool) -> Result<()> {
        in_tx(self, |tx| views::create_plain_view(tx, view, replace))
    }

    fn drop_plain_view(&self, name: &str) -> Result<()> {
        in_tx(self, |tx| match delete_named(tx, "plain_views", name)? {
            true => Ok(()),
            false => Err(CatalogError::ViewNotFound(name.to_string())),
        })
    }

    fn plain_views(&self) -> Result<Vec<PlainView>> {
        in_tx(self, views::plain_views)
    }

    fn create_index(&self, index: &IndexDef) -> Result<()> {
        in_tx(self, |tx| tables::create_index(tx, index))
    }

    fn drop_index(&self, name: &str) -> Result<()> {
        in_tx(self, |tx| match delete_named(tx, "indexes", name)? {
            true => Ok(()),
            false => Err(CatalogError::IndexNotFound(name.to_string())),
        })
    }

    fn indexes(&self) -> Result<Vec<IndexDef>> {
        in_tx(self, tables::indexes)
    }

    fn create_alert(&self, alert: &StoredAlert) -> Result<()> {
        in_tx(self, |tx| alerts::create_alert(tx, alert))
    }

    fn drop_alert(&self, name: &str) -> Result<()> {
        in_tx(self, |tx| alerts::drop_alert(tx, name))
    }

    fn alerts(&self) -> Result<Vec<StoredAlert>> {
        in_tx(self, alerts::alerts)
    }

    fn commit_alert(
        &self,
        name: &str,
        state: &str,
        events: &[AlertEvent],
        deliveries: &[String],
    ) -> Result<Vec<i64>> {
        in_tx(self, |tx| {
            alerts::commit_alert(tx, name, state, events, deliveries)
        })
    }

    fn finish_delivery(&self, id: i64, event: &AlertEvent, retry: Option<&str>) -> Result<()> {
        in_tx(self, |tx| alerts::finish_delivery(tx, id, event, retry))
    }

    fn deliveries(&self) -> Result<Vec<Delivery>> {
        in_tx(self, alerts::deliveries)
    }

    fn alert_events(&self, limit: usize) -> Result<Vec<AlertEvent>> {
        in_tx(self, |tx| alerts::alert_events(tx, limit))
    }

    fn users(&self) -> Result<Vec<StoredUser>> {
        in_tx(self, users::users)
    }

    fn create_user(&self, user: &StoredUser) -> Result<()> {
        in_tx(self, |tx| users::create_user(tx, user))
    }

    fn update_user(&self, name: &str, body: &str) -> Result<()> {
        in_tx(self, |tx| users::update_user(tx, name, body))
    }

    fn drop_user(&self, name: &str) -> Result<()> {
        in_tx(self, |tx| users::drop_user(tx, name))
    }

    fn tokens(&self) -> Result<Vec<StoredToken>> {
        in_tx(self, users::tokens)
    }

    fn create_token(&self, token: &StoredToken) -> Result<()> {
        in_tx(self, |tx| users::create_token(tx, token))
    }

    fn put_metric_metadata(&self, metadata: &[MetricMetadata]) -> Result<()> {
        let now = self.now();
        in_tx(self, |tx| metadata::put(tx, metadata, now))
    }

    fn metric_metadata(&self) -> Result<Vec<MetricMetadata>> {
        in_tx(self, metadata::all)
    }

    fn drop_token(&self, name: &str) -> Result<()> {
        in_tx(self, |tx| match delete_named(tx, "tokens", name)? {
            true => Ok(()),
            false => Err(CatalogError::TokenNotFound(name.to_string())),
        })
    }

    fn register_node(&self, node: &NodeInfo) -> Result<()> {
        in_tx(self, |tx| nodes::register_node(tx, node))
    }

    fn heartbeat(&self, id: &str, now_ns: i64) -> Result<()> {
        in_tx(self, |tx| nodes::beat(tx, id, now_ns, false))
    }

    fn stop_node(&self, id: &str, now_ns: i64) -> Result<()> {
        in_tx(self, |tx| nodes::beat(tx, id, now_ns, true))
    }

    fn nodes(&self) -> Result<Vec<NodeInfo>> {
        in_tx(self, nodes::nodes)
    }

    fn hold_lease(&self, name: &str, holder: &str, now_ns: i64, ttl_ns: i64) -> Result<bool> {
        in_tx(self, |tx| {
            nodes::hold_lease(tx, name, holder, now_ns, ttl_ns)
        })
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        in_tx(self, nodes::leases)
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.store.changes()
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        self.store.snapshot()
    }

    fn change_count(&self) -> u64 {
        self.store.change_count()
    }

    fn max_persisted_seq(&self) -> Result<u64> {
        in_tx(self, |tx| tables::max_persisted_seq(tx, &self.node))
    }
}
