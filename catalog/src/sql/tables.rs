//! Tables and their Parquet files: a table's row (its schema and options as
//! JSON), the files committed to it (with per-column statistics), drops
//! that hand back the files to delete, file replacement by compaction and
//! the record of compaction runs, each node's persisted WAL positions, and
//! the indexes recorded on tables.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::views::insert_invalidations;
use super::{from_json, to_json};
use crate::db::{Row, Tx, params};
use crate::{
    CatalogError, CompactionRun, FilesAt, IndexDef, Invalidation, NewParquetFile, NewTable,
    ParquetFile, Result, TableDef, TableOptions,
};

/// A column as stored: Arrow's own type spelling round-trips through
/// `Display`/`FromStr`, so the catalog needs no type table of its own.
#[derive(Serialize, Deserialize)]
struct StoredColumn {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
    nullable: bool,
    /// The field's metadata (e.g. the Postgres type of a text column).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct StoredOptions {
    retention_secs: Option<u64>,
    partition_secs: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reference: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<crate::TableKey>,
    #[serde(default, skip_serializing_if = "is_auto")]
    token_index: crate::TokenIndex,
}

fn is_auto(t: &crate::TokenIndex) -> bool {
    *t == crate::TokenIndex::Auto
}

/// Inserts `files` of a table; their catalog ids, in order. The
/// transaction may run again (a retry), so it only borrows the files;
/// [`committed`] makes the entries of them once it has committed.
pub(super) fn insert_files(
    tx: &mut dyn Tx,
    table_id: i64,
    files: &[NewParquetFile],
    now: i64,
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(files.len());
    for f in files {
        ids.push(tx.query_int(
            "INSERT INTO files (table_id, path, partition_start_ns, min_time_ns, max_time_ns, \
             rows, bytes, column_stats, created_at_ns) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            params![
                table_id,
                &f.path,
                f.partition_start_ns,
                f.min_time_ns,
                f.max_time_ns,
                f.rows,
                f.bytes,
                to_json(&f.column_stats)?,
                now
            ],
        )?);
    }
    Ok(ids)
}

/// The committed entries of `files` inserted as `ids` at `now` (moved,
/// not copied: a persistence step can commit thousands of files, each
/// with its columns' statistics).
pub(crate) fn committed(
    table_id: i64,
    files: Vec<NewParquetFile>,
    ids: Vec<i64>,
    now: i64,
) -> Vec<ParquetFile> {
    debug_assert_eq!(files.len(), ids.len());
    files
        .into_iter()
        .zip(ids)
        .map(|(file, id)| ParquetFile {
            id,
            table_id,
            file,
            created_at_ns: now,
        })
        .collect()
}

pub(super) fn encode_schema(schema: &Schema) -> Result<String> {
    let cols: Vec<StoredColumn> = schema
        .fields()
        .iter()
        .map(|f| StoredColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
            metadata: f
                .metadata()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .collect();
    to_json(&cols)
}

pub(crate) fn decode_schema(text: &str) -> Result<SchemaRef> {
    let cols: Vec<StoredColumn> = from_json(text, "columns")?;
    let fields = cols
        .into_iter()
        .map(|c| {
            let dt = DataType::from_str(&c.data_type).map_err(|e| {
                CatalogError::Corrupt(format!("column {}: type {}: {e}", c.name, c.data_type))
            })?;
            Ok(Field::new(c.name, dt, c.nullable).with_metadata(c.metadata.into_iter().collect()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

fn encode_options(o: &TableOptions) -> Result<String> {
    to_json(&StoredOptions {
        retention_secs: o.retention.map(|d| d.as_secs()),
        partition_secs: o.partition_duration.as_secs(),
        reference: o.reference,
        key: o.key.clone(),
        token_index: o.token_index.clone(),
    })
}

pub(crate) fn decode_options(text: &str) -> Result<TableOptions> {
    let o: StoredOptions = from_json(text, "options")?;
    Ok(TableOptions {
        retention: o.retention_secs.map(Duration::from_secs),
        partition_duration: Duration::from_secs(o.partition_secs),
        reference: o.reference,
        key: o.key,
        token_index: o.token_index,
    })
}

/// Tables with `node`'s ($1) position in each.
const TABLE_QUERY: &str = "SELECT t.id, t.name, t.columns, t.time_column, t.options, \
     t.created_at_ns, coalesce(p.seq, 0) FROM tables t \
     LEFT JOIN persisted p ON p.table_id = t.id AND p.node_id = $1";

fn read_table(row: &Row) -> Result<TableDef> {
    Ok(TableDef {
        id: row.int(0)?,
        name: row.text(1)?,
        schema: decode_schema(&row.text(2)?)?,
        time_column: row.text(3)?,
        options: decode_options(&row.text(4)?)?,
        created_at_ns: row.int(5)?,
        persisted_seq: row.uint(6)?,
    })
}

const FILE_COLUMNS: &str = "id, table_id, path, partition_start_ns, min_time_ns, max_time_ns, \
                            rows, bytes, column_stats, created_at_ns";

/// A file's column statistics as the catalog keeps them (JSON).
pub(crate) fn decode_column_stats(
    path: &str,
    text: &str,
) -> Result<std::collections::BTreeMap<String, crate::ColumnStats>> {
    serde_json::from_str(text)
        .map_err(|e| CatalogError::Corrupt(format!("file {path}: statistics: {e}")))
}

fn read_file(row: &Row) -> Result<ParquetFile> {
    let path = row.text(2)?;
    let column_stats = decode_column_stats(&path, &row.text(8)?)?;
    Ok(ParquetFile {
        id: row.int(0)?,
        table_id: row.int(1)?,
        file: NewParquetFile {
            path,
            partition_start_ns: row.int(3)?,
            min_time_ns: row.int(4)?,
            max_time_ns: row.int(5)?,
            rows: row.uint(6)?,
            bytes: row.uint(7)?,
            column_stats,
        },
        created_at_ns: row.int(9)?,
    })
}

pub(super) fn table_by_name(tx: &mut dyn Tx, node: &str, name: &str) -> Result<Option<TableDef>> {
    tx.query_opt(
        &format!("{TABLE_QUERY} WHERE t.name = $2"),
        params![node, name],
    )?
    .as_ref()
    .map(read_table)
    .transpose()
}

fn table_id(tx: &mut dyn Tx, name: &str) -> Result<Option<i64>> {
    tx.query_opt("SELECT id FROM tables WHERE name = $1", params![name])?
        .map(|r| r.int(0))
        .transpose()
}

fn files_of(tx: &mut dyn Tx, table_id: i64) -> Result<Vec<ParquetFile>> {
    tx.query(
        &format!("SELECT {FILE_COLUMNS} FROM files WHERE table_id = $1 ORDER BY id"),
        params![table_id],
    )?
    .iter()
    .map(read_file)
    .collect()
}

/// Inserts a table row (its name must be free); returns its definition.
pub(super) fn insert_table(
    tx: &mut dyn Tx,
    node: &str,
    table: &NewTable,
    now: i64,
) -> Result<TableDef> {
    if table_id(tx, &table.name)?.is_some() {
        return Err(CatalogError::TableExists(table.name.clone()));
    }
    let views = tx.query_int(
        "SELECT count(*) FROM plain_views WHERE name = $1",
        params![&table.name],
    )?;
    if views > 0 {
        return Err(CatalogError::RelationExists(table.name.clone()));
    }
    tx.execute(
        "INSERT INTO tables (name, columns, time_column, options, created_at_ns, persisted_seq) \
         VALUES ($1, $2, $3, $4, $5, 0)",
        params![
            &table.name,
            encode_schema(&table.schema)?,
            &table.time_column,
            encode_options(&table.options)?,
            now
        ],
    )?;
    table_by_name(tx, node, &table.name)?
        .ok_or_else(|| CatalogError::TableNotFound(table.name.clone()))
}

pub(super) fn drop_table(
    tx: &mut dyn Tx,
    node: &str,
    name: &str,
) -> Result<(TableDef, Vec<ParquetFile>)> {
    let def =
        table_by_name(tx, node, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))?;
    let dependent = tx.query_opt(
        "SELECT t.name FROM views v JOIN tables t ON t.id = v.table_id \
         WHERE v.base_table_id = $1 ORDER BY t.name LIMIT 1",
        params![def.id],
    )?;
    if let Some(view) = dependent {
        return Err(CatalogError::HasDependents {
            table: name.to_string(),
            view: view.text(0)?,
        });
    }
    tx.execute("DELETE FROM views WHERE table_id = $1", params![def.id])?;
    tx.execute(
        "DELETE FROM invalidations WHERE view_id = $1",
        params![def.id],
    )?;
    let files = files_of(tx, def.id)?;
    // Keep each node's WAL floor: the dropped table's positions still bound
    // which sequence numbers each node handed out.
    tx.execute(
        "INSERT INTO node_seq_floor (node_id, seq) SELECT node_id, seq FROM persisted \
         WHERE table_id = $1 ON CONFLICT (node_id) DO UPDATE SET seq = \
         CASE WHEN node_seq_floor.seq > excluded.seq THEN node_seq_floor.seq ELSE excluded.seq END",
        params![def.id],
    )?;
    tx.execute("DELETE FROM persisted WHERE table_id = $1", params![def.id])?;
    tx.execute("DELETE FROM files WHERE table_id = $1", params![def.id])?;
    tx.execute("DELETE FROM indexes WHERE table_id = $1", params![def.id])?;
    tx.execute(
        "DELETE FROM delete_bounds WHERE delete_id IN (SELECT id FROM deletes WHERE table_id = $1)",
        params![def.id],
    )?;
    tx.execute("DELETE FROM deletes WHERE table_id = $1", params![def.id])?;
    tx.execute("DELETE FROM tables WHERE id = $1", params![def.id])?;
    Ok((def, files))
}

pub(super) fn tables(tx: &mut dyn Tx, node: &str) -> Result<Vec<TableDef>> {
    tx.query(&format!("{TABLE_QUERY} ORDER BY t.name"), params![node])?
        .iter()
        .map(read_table)
        .collect()
}

pub(super) fn set_options(
    tx: &mut dyn Tx,
    node: &str,
    name: &str,
    options: &TableOptions,
) -> Result<TableDef> {
    let n = tx.execute(
        "UPDATE tables SET options = $1 WHERE name = $2",
        params![encode_options(options)?, name],
    )?;
    if n == 0 {
        return Err(CatalogError::TableNotFound(name.into()));
    }
    table_by_name(tx, node, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))
}

/// Widens a table's schema: the columns of `schema` it lacks are appended
/// to the catalog's current ones (which another node may have widened
/// since the caller read them).
pub(super) fn set_schema(
    tx: &mut dyn Tx,
    node: &str,
    name: &str,
    schema: &Schema,
) -> Result<TableDef> {
    let current =
        table_by_name(tx, node, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))?;
    let mut fields: Vec<Field> = current
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for f in schema.fields() {
        if current.schema.field_with_name(f.name()).is_err() {
            fields.push(f.as_ref().clone());
        }
    }
    tx.execute(
        "UPDATE tables SET columns = $1 WHERE name = $2",
        params![encode_schema(&Schema::new(fields))?, name],
    )?;
    table_by_name(tx, node, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))
}

pub(super) fn commit_files_invalidating(
    tx: &mut dyn Tx,
    node: &str,
    table_id: i64,
    files: &[NewParquetFile],
    persisted_seq: u64,
    invalidate: &[Invalidation],
    now: i64,
) -> Result<Vec<i64>> {
    if tx.query_int(
        "SELECT count(*) FROM tables WHERE id = $1",
        params![table_id],
    )? == 0
    {
        return Err(CatalogError::TableNotFound(format!("id {table_id}")));
    }
    tx.execute(
        "INSERT INTO persisted (table_id, node_id, seq) VALUES ($1, $2, $3) \
         ON CONFLICT (table_id, node_id) DO UPDATE SET seq = \
         CASE WHEN persisted.seq > excluded.seq THEN persisted.seq ELSE excluded.seq END",
        params![table_id, node, persisted_seq],
    )?;
    let ids = insert_files(tx, table_id, files, now)?;
    insert_invalidations(tx, invalidate)?;
    Ok(ids)
}

/// Deletes the files `remove` of a table; all or nothing.
pub(super) fn delete_files(tx: &mut dyn Tx, table_id: i64, remove: &[i64]) -> Result<()> {
    for id in remove {
        let n = tx.execute(
            "DELETE FROM files WHERE id = $1 AND table_id = $2",
            params![*id, table_id],
        )?;
        if n == 0 {
            return Err(CatalogError::FileNotFound(*id));
        }
    }
    Ok(())
}

pub(super) fn record_compaction(tx: &mut dyn Tx, run: &CompactionRun) -> Result<()> {
    tx.execute(
        "INSERT INTO compactions (table_name, partition_start_ns, files_in, files_out, rows, \
         bytes_in, bytes_out, started_at_ns, duration_us, trigger) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        params![
            &run.table,
            run.partition_start_ns,
            run.files_in,
            run.files_out,
            run.rows,
            run.bytes_in,
            run.bytes_out,
            run.started_at_ns,
            run.duration.as_micros() as i64,
            &run.trigger
        ],
    )?;
    Ok(())
}

pub(super) fn compactions(tx: &mut dyn Tx, limit: usize) -> Result<Vec<CompactionRun>> {
    tx.query(
        "SELECT table_name, partition_start_ns, files_in, files_out, rows, bytes_in, \
         bytes_out, started_at_ns, duration_us, trigger FROM compactions \
         ORDER BY id DESC LIMIT $1",
        params![limit as i64],
    )?
    .iter()
    .map(|r| {
        Ok(CompactionRun {
            table: r.text(0)?,
            partition_start_ns: r.int(1)?,
            files_in: r.uint(2)?,
            files_out: r.uint(3)?,
            rows: r.uint(4)?,
            bytes_in: r.uint(5)?,
            bytes_out: r.uint(6)?,
            started_at_ns: r.int(7)?,
            duration: Duration::from_micros(r.uint(8)?),
            trigger: r.text(9)?,
        })
    })
    .collect()
}

pub(super) fn files(tx: &mut dyn Tx, table_id: i64) -> Result<Vec<ParquetFile>> {
    files_of(tx, table_id)
}

/// Every table's files and each node's positions for it, by table id
/// (tables without files or positions are absent).
pub(super) fn all_files_and_positions(tx: &mut dyn Tx) -> Result<BTreeMap<i64, FilesAt>> {
    let mut out: BTreeMap<i64, FilesAt> = BTreeMap::new();
    for r in tx.query(
        &format!("SELECT {FILE_COLUMNS} FROM files ORDER BY id"),
        &[],
    )? {
        let f = read_file(&r)?;
        out.entry(f.table_id).or_default().0.push(f);
    }
    for r in tx.query("SELECT table_id, node_id, seq FROM persisted", &[])? {
        out.entry(r.int(0)?)
            .or_default()
            .1
            .insert(r.text(1)?, r.int(2)? as u64);
    }
    Ok(out)
}

/// Each node's persisted WAL position for one table.
pub(super) fn positions(tx: &mut dyn Tx, table_id: i64) -> Result<BTreeMap<String, u64>> {
    tx.query(
        "SELECT node_id, seq FROM persisted WHERE table_id = $1",
        params![table_id],
    )?
    .iter()
    .map(|r| Ok((r.text(0)?, r.int(1)? as u64)))
    .collect()
}

pub(super) fn max_persisted_seq(tx: &mut dyn Tx, node: &str) -> Result<u64> {
    let floor = tx
        .query_opt(
            "SELECT seq FROM node_seq_floor WHERE node_id = $1",
            params![node],
        )?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
    let tables = tx
        .query_opt(
            "SELECT max(seq) FROM persisted WHERE node_id = $1",
            params![node],
        )?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten()
        .unwrap_or(0);
    Ok(floor.max(tables) as u64)
}

/// Gives `node` the positions of the catalog from before nodes (node
/// `''`), unless it has positions of its own already.
pub(super) fn adopt_positions(tx: &mut dyn Tx, node: &str) -> Result<()> {
    tx.execute(
        "UPDATE persisted SET node_id = $1 WHERE node_id = '' \
         AND NOT EXISTS (SELECT 1 FROM persisted p WHERE p.node_id = $1)",
        params![node],
    )?;
    tx.execute(
        "UPDATE node_seq_floor SET node_id = $1 WHERE node_id = '' \
         AND NOT EXISTS (SELECT 1 FROM node_seq_floor f WHERE f.node_id = $1)",
        params![node],
    )?;
    Ok(())
}

pub(super) fn create_index(tx: &mut dyn Tx, index: &IndexDef) -> Result<()> {
    let table = table_id(tx, &index.table)?
        .ok_or_else(|| CatalogError::TableNotFound(index.table.clone()))?;
    // Indexes share their names with tables and views, as in PostgreSQL.
    let taken = tx.query_int(
        "SELECT (SELECT count(*) FROM tables WHERE name = $1) \
              + (SELECT count(*) FROM plain_views WHERE name = $1) \
              + (SELECT count(*) FROM indexes WHERE name = $1)",
        params![&index.name],
    )?;
    if taken > 0 {
        return Err(CatalogError::RelationExists(index.name.clone()));
    }
    tx.execute(
        "INSERT INTO indexes (name, table_id, columns, created_at_ns) VALUES ($1, $2, $3, $4)",
        params![
            &index.name,
            table,
            to_json(&index.columns)?,
            index.created_at_ns
        ],
    )?;
    Ok(())
}

pub(super) fn indexes(tx: &mut dyn Tx) -> Result<Vec<IndexDef>> {
    tx.query(
        "SELECT i.name, t.name, i.columns, i.created_at_ns FROM indexes i \
         JOIN tables t ON t.id = i.table_id ORDER BY i.name",
        &[],
    )?
    .iter()
    .map(|r| {
        let name = r.text(0)?;
        Ok(IndexDef {
            columns: from_json(&r.text(2)?, &format!("index {name} columns"))?,
            table: r.text(1)?,
            created_at_ns: r.int(3)?,
            name,
        })
    })
    .collect()
}

pub(super) fn add_delete(tx: &mut dyn Tx, d: &crate::Delete, now: i64) -> Result<crate::Delete> {
    if tx.query_int(
        "SELECT count(*) FROM tables WHERE id = $1",
        params![d.table_id],
    )? == 0
    {
        return Err(CatalogError::TableNotFound(format!("id {}", d.table_id)));
    }
    // Every file committed before the delete is covered: a file another
    // node commits later is refused until that node has taken the delete
    // in ([`check_deletes_seen`]).
    let newest_file = tx.query_int(
        "SELECT coalesce(max(id), 0) FROM files WHERE table_id = $1",
        params![d.table_id],
    )?;
    let files_upto = d.files_upto.max(newest_file);
    let id = tx.query_int(
        "INSERT INTO deletes (table_id, predicate, files_upto, node_id, seq, created_at_ns) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        params![d.table_id, &d.predicate, files_upto, &d.node, d.seq, now],
    )?;
    tx.execute(
        "INSERT INTO delete_bounds (delete_id, node_id, seq) VALUES ($1, $2, $3)",
        params![id, &d.node, d.seq],
    )?;
    let mut bounds = d.bounds.clone();
    bounds.insert(d.node.clone(), d.seq);
    let mut removed = d.removed.clone();
    removed.insert(d.node.clone(), 0);
    Ok(crate::Delete {
        id,
        files_upto,
        created_at_ns: now,
        bounds,
        removed,
        ..d.clone()
    })
}

/// Records how far `node`'s buffer a delete covers and the rows it
/// removed there, unless it already said; returns the recorded position,
/// `None` if the delete is gone.
pub(super) fn bound_delete(
    tx: &mut dyn Tx,
    id: i64,
    node: &str,
    seq: u64,
    rows: u64,
) -> Result<Option<u64>> {
    if tx.query_int("SELECT count(*) FROM deletes WHERE id = $1", params![id])? == 0 {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO delete_bounds (delete_id, node_id, seq, rows) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (delete_id, node_id) DO NOTHING",
        params![id, node, seq, rows],
    )?;
    let row = tx.query_opt(
        "SELECT seq FROM delete_bounds WHERE delete_id = $1 AND node_id = $2",
        params![id, node],
    )?;
    row.map(|r| r.uint(0)).transpose()
}

/// Refuses a commit of files of `table_id` by a node that has not taken
/// in every delete of the table (the newest it has is `seen`): its files
/// could hold rows such a delete removes, and no delete covers them.
pub(super) fn check_deletes_seen(tx: &mut dyn Tx, table_id: i64, seen: i64) -> Result<()> {
    let newest = tx.query_int(
        "SELECT coalesce(max(id), 0) FROM deletes WHERE table_id = $1",
        params![table_id],
    )?;
    if newest > seen {
        return Err(CatalogError::Conflict(format!(
            "a DELETE (id {newest}) of this table ran on another node since this node last read \
             the catalog; it takes the delete in and commits again"
        )));
    }
    Ok(())
}

pub(super) fn deletes(tx: &mut dyn Tx) -> Result<Vec<crate::Delete>> {
    type ByNode = std::collections::BTreeMap<String, u64>;
    let mut bounds: std::collections::BTreeMap<i64, (ByNode, ByNode)> = Default::default();
    for r in tx.query(
        "SELECT delete_id, node_id, seq, rows FROM delete_bounds",
        &[],
    )? {
        let (seqs, rows) = bounds.entry(r.int(0)?).or_default();
        seqs.insert(r.text(1)?, r.uint(2)?);
        rows.insert(r.text(1)?, r.uint(3)?);
    }
    tx.query(
        "SELECT id, table_id, predicate, files_upto, node_id, seq, created_at_ns \
         FROM deletes ORDER BY id",
        &[],
    )?
    .iter()
    .map(|r| {
        let id = r.int(0)?;
        let (bounds, removed) = bounds.remove(&id).unwrap_or_default();
        Ok(crate::Delete {
            id,
            table_id: r.int(1)?,
            predicate: r.text(2)?,
            files_upto: r.int(3)?,
            node: r.text(4)?,
            seq: r.uint(5)?,
            created_at_ns: r.int(6)?,
            bounds,
            removed,
        })
    })
    .collect()
}

pub(super) fn forget_deletes(tx: &mut dyn Tx, ids: &[i64]) -> Result<()> {
    for id in ids {
        tx.execute("DELETE FROM deletes WHERE id = $1", params![*id])?;
        tx.execute(
            "DELETE FROM delete_bounds WHERE delete_id = $1",
            params![*id],
        )?;
    }
    Ok(())
}
