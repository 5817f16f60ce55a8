//! Tables and their Parquet files: a table's row (its schema and options as
//! JSON), the files committed to it (with per-column statistics), drops
//! that hand back the files to delete, file replacement by compaction and
//! the record of compaction runs, and the highest persisted WAL sequence.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::SqliteCatalog;
use super::views::insert_invalidations;
use crate::{
    CatalogError, CompactionRun, IndexDef, Invalidation, NewParquetFile, NewTable, ParquetFile,
    Result, TableDef, TableOptions,
};

/// A column as stored: Arrow's own type spelling round-trips through
/// `Display`/`FromStr`, so the catalog needs no type table of its own.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredColumn {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
    nullable: bool,
    /// The field's metadata (e.g. the Postgres type of a text column).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredOptions {
    retention_secs: Option<u64>,
    partition_secs: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reference: bool,
}

/// Inserts `files` of a table within `tx`.
pub(super) fn insert_files(
    tx: &rusqlite::Transaction<'_>,
    table_id: i64,
    files: &[NewParquetFile],
    now: i64,
) -> Result<Vec<ParquetFile>> {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let stats = serde_json::to_string(&f.column_stats)
            .map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        tx.execute(
            &format!(
                "INSERT INTO files ({}) VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                FILE_COLUMNS
            ),
            params![
                table_id,
                f.path,
                f.partition_start_ns,
                f.min_time_ns,
                f.max_time_ns,
                f.rows as i64,
                f.bytes as i64,
                stats,
                now
            ],
        )?;
        out.push(ParquetFile {
            id: tx.last_insert_rowid(),
            table_id,
            file: f.clone(),
            created_at_ns: now,
        });
    }
    Ok(out)
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
    serde_json::to_string(&cols).map_err(|e| CatalogError::Corrupt(e.to_string()))
}

pub(super) fn decode_schema(text: &str) -> Result<SchemaRef> {
    let cols: Vec<StoredColumn> =
        serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
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

pub(super) fn encode_options(o: &TableOptions) -> Result<String> {
    serde_json::to_string(&StoredOptions {
        retention_secs: o.retention.map(|d| d.as_secs()),
        partition_secs: o.partition_duration.as_secs(),
        reference: o.reference,
    })
    .map_err(|e| CatalogError::Corrupt(e.to_string()))
}

pub(super) fn decode_options(text: &str) -> Result<TableOptions> {
    let o: StoredOptions =
        serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
    Ok(TableOptions {
        retention: o.retention_secs.map(Duration::from_secs),
        partition_duration: Duration::from_secs(o.partition_secs),
        reference: o.reference,
    })
}

pub(super) const TABLE_COLUMNS: &str =
    "id, name, columns, time_column, options, created_at_ns, persisted_seq";

pub(super) fn read_table(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<TableDef>> {
    let columns: String = row.get(2)?;
    let options: String = row.get(4)?;
    let persisted_seq: i64 = row.get(6)?;
    let id: i64 = row.get(0)?;
    let name: String = row.get(1)?;
    let time_column: String = row.get(3)?;
    let created_at_ns: i64 = row.get(5)?;
    Ok((|| {
        Ok(TableDef {
            id,
            name,
            schema: decode_schema(&columns)?,
            time_column,
            options: decode_options(&options)?,
            created_at_ns,
            persisted_seq: persisted_seq as u64,
        })
    })())
}

pub(super) const FILE_COLUMNS: &str = "id, table_id, path, partition_start_ns, min_time_ns, max_time_ns, \
                            rows, bytes, column_stats, created_at_ns";

pub(super) fn read_file(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ParquetFile>> {
    let stats: String = row.get(8)?;
    let rows: i64 = row.get(6)?;
    let bytes: i64 = row.get(7)?;
    let file = NewParquetFile {
        path: row.get(2)?,
        partition_start_ns: row.get(3)?,
        min_time_ns: row.get(4)?,
        max_time_ns: row.get(5)?,
        rows: rows as u64,
        bytes: bytes as u64,
        column_stats: Default::default(),
    };
    let id = row.get(0)?;
    let table_id = row.get(1)?;
    let created_at_ns = row.get(9)?;
    Ok(serde_json::from_str(&stats)
        .map_err(|e| CatalogError::Corrupt(format!("file {}: statistics: {e}", file.path)))
        .map(|column_stats| ParquetFile {
            id,
            table_id,
            file: NewParquetFile {
                column_stats,
                ..file
            },
            created_at_ns,
        }))
}

pub(super) fn table_by_name(conn: &Connection, name: &str) -> Result<Option<TableDef>> {
    conn.query_row(
        &format!("SELECT {TABLE_COLUMNS} FROM tables WHERE name = ?1"),
        [name],
        read_table,
    )
    .optional()?
    .transpose()
}

pub(super) fn files_of(conn: &Connection, table_id: i64) -> Result<Vec<ParquetFile>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE table_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([table_id], read_file)?;
    rows.map(|r| r?).collect()
}

/// Inserts a table row (its name must be free); returns its definition.
pub(super) fn insert_table(conn: &Connection, table: &NewTable, now: i64) -> Result<TableDef> {
    if table_by_name(conn, &table.name)?.is_some() {
        return Err(CatalogError::TableExists(table.name.clone()));
    }
    let view: i64 = conn.query_row(
        "SELECT count(*) FROM plain_views WHERE name = ?1",
        [&table.name],
        |r| r.get(0),
    )?;
    if view > 0 {
        return Err(CatalogError::RelationExists(table.name.clone()));
    }
    conn.execute(
        "INSERT INTO tables (name, columns, time_column, options, created_at_ns, persisted_seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0)",
        params![
            table.name,
            encode_schema(&table.schema)?,
            table.time_column,
            encode_options(&table.options)?,
            now
        ],
    )?;
    table_by_name(conn, &table.name)?.ok_or_else(|| CatalogError::TableNotFound(table.name.clone()))
}

pub(super) fn create_table(cat: &SqliteCatalog, table: NewTable) -> Result<TableDef> {
    insert_table(&cat.conn(), &table, cat.clock.now_ns())
}

pub(super) fn drop_table(cat: &SqliteCatalog, name: &str) -> Result<(TableDef, Vec<ParquetFile>)> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    let def = table_by_name(&tx, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))?;
    let dependent: Option<String> = tx
        .query_row(
            "SELECT t.name FROM views v JOIN tables t ON t.id = v.table_id \
             WHERE v.base_table_id = ?1 ORDER BY t.name LIMIT 1",
            [def.id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(view) = dependent {
        return Err(CatalogError::HasDependents {
            table: name.to_string(),
            view,
        });
    }
    tx.execute("DELETE FROM views WHERE table_id = ?1", [def.id])?;
    tx.execute("DELETE FROM invalidations WHERE view_id = ?1", [def.id])?;
    let files = files_of(&tx, def.id)?;
    // Keep the WAL floor: the dropped table's persisted_seq still bounds
    // which sequence numbers were handed out.
    tx.execute(
        "UPDATE seq_floor SET seq = max(seq, ?1) WHERE id = 0",
        [def.persisted_seq as i64],
    )?;
    tx.execute("DELETE FROM files WHERE table_id = ?1", [def.id])?;
    tx.execute("DELETE FROM indexes WHERE table_id = ?1", [def.id])?;
    tx.execute("DELETE FROM tables WHERE id = ?1", [def.id])?;
    tx.commit()?;
    Ok((def, files))
}

pub(super) fn tables(cat: &SqliteCatalog) -> Result<Vec<TableDef>> {
    let conn = cat.conn();
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {TABLE_COLUMNS} FROM tables ORDER BY name"))?;
    let rows = stmt.query_map([], read_table)?;
    rows.map(|r| r?).collect()
}

pub(super) fn table(cat: &SqliteCatalog, name: &str) -> Result<Option<TableDef>> {
    table_by_name(&cat.conn(), name)
}

pub(super) fn set_options(
    cat: &SqliteCatalog,
    name: &str,
    options: TableOptions,
) -> Result<TableDef> {
    let conn = cat.conn();
    let n = conn.execute(
        "UPDATE tables SET options = ?1 WHERE name = ?2",
        params![encode_options(&options)?, name],
    )?;
    if n == 0 {
        return Err(CatalogError::TableNotFound(name.into()));
    }
    table_by_name(&conn, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))
}

pub(super) fn set_schema(cat: &SqliteCatalog, name: &str, schema: SchemaRef) -> Result<TableDef> {
    let conn = cat.conn();
    let n = conn.execute(
        "UPDATE tables SET columns = ?1 WHERE name = ?2",
        params![encode_schema(&schema)?, name],
    )?;
    if n == 0 {
        return Err(CatalogError::TableNotFound(name.into()));
    }
    table_by_name(&conn, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))
}

pub(super) fn commit_files_invalidating(
    cat: &SqliteCatalog,
    table_id: i64,
    files: Vec<NewParquetFile>,
    persisted_seq: u64,
    invalidate: &[Invalidation],
) -> Result<Vec<ParquetFile>> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    let n = tx.execute(
        "UPDATE tables SET persisted_seq = max(persisted_seq, ?1) WHERE id = ?2",
        params![persisted_seq as i64, table_id],
    )?;
    if n == 0 {
        return Err(CatalogError::TableNotFound(format!("id {table_id}")));
    }
    let committed = insert_files(&tx, table_id, &files, cat.clock.now_ns())?;
    insert_invalidations(&tx, invalidate)?;
    tx.commit()?;
    Ok(committed)
}

pub(super) fn replace_files(
    cat: &SqliteCatalog,
    table_id: i64,
    remove: &[i64],
    add: Vec<NewParquetFile>,
) -> Result<Vec<ParquetFile>> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    for id in remove {
        let n = tx.execute(
            "DELETE FROM files WHERE id = ?1 AND table_id = ?2",
            params![id, table_id],
        )?;
        if n == 0 {
            return Err(CatalogError::FileNotFound(*id));
        }
    }
    let added = insert_files(&tx, table_id, &add, cat.clock.now_ns())?;
    tx.commit()?;
    Ok(added)
}

pub(super) fn record_compaction(cat: &SqliteCatalog, run: &CompactionRun) -> Result<()> {
    cat.conn().execute(
        "INSERT INTO compactions (table_name, partition_start_ns, files_in, files_out, rows, \
         bytes_in, bytes_out, started_at_ns, duration_us, trigger) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            run.table,
            run.partition_start_ns,
            run.files_in as i64,
            run.files_out as i64,
            run.rows as i64,
            run.bytes_in as i64,
            run.bytes_out as i64,
            run.started_at_ns,
            run.duration.as_micros() as i64,
            run.trigger
        ],
    )?;
    Ok(())
}

pub(super) fn compactions(cat: &SqliteCatalog, limit: usize) -> Result<Vec<CompactionRun>> {
    let conn = cat.conn();
    let mut stmt = conn.prepare(
        "SELECT table_name, partition_start_ns, files_in, files_out, rows, bytes_in, \
         bytes_out, started_at_ns, duration_us, trigger FROM compactions \
         ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64], |r| {
        Ok(CompactionRun {
            table: r.get(0)?,
            partition_start_ns: r.get(1)?,
            files_in: r.get::<_, i64>(2)? as u64,
            files_out: r.get::<_, i64>(3)? as u64,
            rows: r.get::<_, i64>(4)? as u64,
            bytes_in: r.get::<_, i64>(5)? as u64,
            bytes_out: r.get::<_, i64>(6)? as u64,
            started_at_ns: r.get(7)?,
            duration: Duration::from_micros(r.get::<_, i64>(8)? as u64),
            trigger: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn files(cat: &SqliteCatalog, table_id: i64) -> Result<Vec<ParquetFile>> {
    files_of(&cat.conn(), table_id)
}

pub(super) fn max_persisted_seq(cat: &SqliteCatalog) -> Result<u64> {
    let conn = cat.conn();
    let seq: i64 = conn.query_row(
        "SELECT max((SELECT seq FROM seq_floor WHERE id = 0), \
                    coalesce((SELECT max(persisted_seq) FROM tables), 0))",
        [],
        |r| r.get(0),
    )?;
    Ok(seq as u64)
}

pub(super) fn create_index(cat: &SqliteCatalog, index: &IndexDef) -> Result<()> {
    let mut conn = cat.conn();
    let tx = conn.transaction()?;
    let def = table_by_name(&tx, &index.table)?
        .ok_or_else(|| CatalogError::TableNotFound(index.table.clone()))?;
    // Indexes share their names with tables and views, as in PostgreSQL.
    let taken: i64 = tx.query_row(
        "SELECT (SELECT count(*) FROM tables WHERE name = ?1) \
              + (SELECT count(*) FROM plain_views WHERE name = ?1) \
              + (SELECT count(*) FROM indexes WHERE name = ?1)",
        [&index.name],
        |r| r.get(0),
    )?;
    if taken > 0 {
        return Err(CatalogError::RelationExists(index.name.clone()));
    }
    let columns = super::to_json(&index.columns)?;
    tx.execute(
        "INSERT INTO indexes (name, table_id, columns, created_at_ns) VALUES (?1, ?2, ?3, ?4)",
        params![index.name, def.id, columns, index.created_at_ns],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn drop_index(cat: &SqliteCatalog, name: &str) -> Result<()> {
    if !super::delete_named(cat, "indexes", name)? {
        return Err(CatalogError::IndexNotFound(name.to_string()));
    }
    Ok(())
}

pub(super) fn indexes(cat: &SqliteCatalog) -> Result<Vec<IndexDef>> {
    let rows = super::named_rows(
        cat,
        "SELECT i.name, t.name, i.columns, i.created_at_ns FROM indexes i \
         JOIN tables t ON t.id = i.table_id ORDER BY i.name",
    )?;
    rows.into_iter()
        .map(|(name, table, columns, created_at_ns)| {
            let columns = super::from_json(&columns, &format!("index {name} columns"))?;
            Ok(IndexDef {
                name,
                table,
                columns,
                created_at_ns,
            })
        })
        .collect()
}
