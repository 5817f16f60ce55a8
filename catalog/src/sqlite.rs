//! The embedded SQLite catalog.
//!
//! One file, `catalog.sqlite`, opened in WAL journal mode with
//! `synchronous=FULL` so a commit is durable when it returns. The file is
//! recognized by its `application_id` and its layout by `user_version`.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sextant_clock::Clock;

use crate::{
    AlertEvent, Catalog, CatalogError, CompactionRun, Delivery, Invalidation, NewParquetFile,
    NewTable, NewView, ParquetFile, Refresh, Result, StoredAlert, StoredToken, StoredUser,
    TableDef, TableOptions, ViewDef, ViewProgress, ViewSpec,
};

/// `application_id` of a Sextant catalog: "SXTC".
const APPLICATION_ID: i64 = 0x5358_5443;
/// Layout version written by this build. Version 1 catalogs are upgraded
/// in place (see [`MIGRATIONS`]).
const SCHEMA_VERSION: i64 = 5;

const SCHEMA_V1: &str = "
CREATE TABLE tables (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    columns TEXT NOT NULL,
    time_column TEXT NOT NULL,
    options TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    persisted_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_id INTEGER NOT NULL,
    path TEXT NOT NULL UNIQUE,
    partition_start_ns INTEGER NOT NULL,
    min_time_ns INTEGER NOT NULL,
    max_time_ns INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    column_stats TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
);
CREATE INDEX files_by_table ON files (table_id, id);
CREATE TABLE seq_floor (id INTEGER PRIMARY KEY CHECK (id = 0), seq INTEGER NOT NULL);
INSERT INTO seq_floor VALUES (0, 0);
";

/// What each layout version adds to the one before it.
const SCHEMA_V2: &str = "
CREATE TABLE compactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name TEXT NOT NULL,
    partition_start_ns INTEGER NOT NULL,
    files_in INTEGER NOT NULL,
    files_out INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    started_at_ns INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    trigger TEXT NOT NULL
);
";

/// Materialized views: a view is a row of `tables` (its storage) and a row
/// of `views` (its query); `invalidations` holds the buckets of aggregating
/// views whose base rows changed and are already out of the WAL.
const SCHEMA_V3: &str = "
CREATE TABLE views (
    table_id INTEGER PRIMARY KEY,
    base_table_id INTEGER NOT NULL,
    query TEXT NOT NULL,
    spec TEXT NOT NULL,
    progress TEXT NOT NULL
);
CREATE TABLE invalidations (
    view_id INTEGER NOT NULL,
    bucket_ns INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (view_id, bucket_ns)
) WITHOUT ROWID;
";

/// Alert rules: the definition and the evaluation state (instances, next
/// run) of each rule as JSON the alert scheduler owns; the history of its
/// transitions and notification attempts; and the notifications not yet
/// delivered (an outbox, written with the state change that caused them).
const SCHEMA_V4: &str = "
CREATE TABLE alerts (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
);
CREATE TABLE alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert TEXT NOT NULL,
    body TEXT NOT NULL
);
";

/// Users and their access tokens: credentials and grants as JSON the auth
/// crate owns (a SCRAM verifier, a token's SHA-256; never a secret).
const SCHEMA_V5: &str = "
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
);
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users (name),
    body TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
);
";

/// How many alert events the catalog keeps (the oldest go first).
const ALERT_EVENTS_KEPT: i64 = 100_000;

/// `(version, statements)`: applied in order to bring an older catalog up
/// to [`SCHEMA_VERSION`], each in the transaction that sets its version.
const MIGRATIONS: &[(i64, &str)] = &[
    (2, SCHEMA_V2),
    (3, SCHEMA_V3),
    (4, SCHEMA_V4),
    (5, SCHEMA_V5),
];

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
}

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

    fn init(conn: Connection, path: &str) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let app_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match (app_id, version) {
            (0, 0) => {
                let table_count: i64 =
                    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
                if table_count != 0 {
                    return Err(CatalogError::Corrupt(format!(
                        "{path} is a SQLite database but not a Sextant catalog"
                    )));
                }
                let all: String = MIGRATIONS.iter().map(|(_, m)| *m).collect();
                conn.execute_batch(&format!(
                    "BEGIN; {SCHEMA_V1} {all} PRAGMA application_id = {APPLICATION_ID}; \
                     PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))?;
            }
            (APPLICATION_ID, v) if v > SCHEMA_VERSION => {
                return Err(CatalogError::UnsupportedVersion {
                    path: path.to_string(),
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            (APPLICATION_ID, v) => {
                for (to, statements) in MIGRATIONS.iter().filter(|(to, _)| *to > v) {
                    conn.execute_batch(&format!(
                        "BEGIN; {statements} PRAGMA user_version = {to}; COMMIT;"
                    ))?;
                    tracing::info!(%path, from = v, to, "catalog layout upgraded");
                }
            }
            _ => {
                return Err(CatalogError::Corrupt(format!(
                    "{path} is not a Sextant catalog (application_id {app_id:#x})"
                )));
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
            clock: Clock::System,
        })
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

/// Inserts `files` of a table within `tx`.
fn insert_files(
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

fn encode_schema(schema: &Schema) -> Result<String> {
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

fn decode_schema(text: &str) -> Result<SchemaRef> {
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

fn encode_options(o: &TableOptions) -> Result<String> {
    serde_json::to_string(&StoredOptions {
        retention_secs: o.retention.map(|d| d.as_secs()),
        partition_secs: o.partition_duration.as_secs(),
    })
    .map_err(|e| CatalogError::Corrupt(e.to_string()))
}

fn decode_options(text: &str) -> Result<TableOptions> {
    let o: StoredOptions =
        serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
    Ok(TableOptions {
        retention: o.retention_secs.map(Duration::from_secs),
        partition_duration: Duration::from_secs(o.partition_secs),
    })
}

const TABLE_COLUMNS: &str = "id, name, columns, time_column, options, created_at_ns, persisted_seq";

fn read_table(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<TableDef>> {
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

const FILE_COLUMNS: &str = "id, table_id, path, partition_start_ns, min_time_ns, max_time_ns, \
                            rows, bytes, column_stats, created_at_ns";

fn read_file(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ParquetFile>> {
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

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| CatalogError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| CatalogError::Corrupt(format!("{what}: {e}")))
}

/// Records invalidations; a bucket already invalid keeps the newer generation.
fn insert_invalidations(tx: &rusqlite::Transaction<'_>, inv: &[Invalidation]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO invalidations (view_id, bucket_ns, generation) VALUES (?1, ?2, ?3) \
         ON CONFLICT (view_id, bucket_ns) DO UPDATE SET \
         generation = max(generation, excluded.generation)",
    )?;
    for i in inv {
        stmt.execute(params![i.view_id, i.bucket_ns, i.generation as i64])?;
    }
    Ok(())
}

/// Appends alert events, dropping the oldest beyond [`ALERT_EVENTS_KEPT`].
fn insert_alert_events(tx: &rusqlite::Transaction<'_>, events: &[AlertEvent]) -> Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT INTO alert_events (alert, time_ns, body) VALUES (?1, ?2, ?3)")?;
    for e in events {
        stmt.execute(params![e.alert, e.time_ns, e.body])?;
    }
    if !events.is_empty() {
        tx.execute(
            "DELETE FROM alert_events WHERE id <= (SELECT max(id) FROM alert_events) - ?1",
            [ALERT_EVENTS_KEPT],
        )?;
    }
    Ok(())
}

const VIEW_QUERY: &str = "SELECT v.table_id, t.name, v.base_table_id, coalesce(b.name, ''), \
     v.query, v.spec, v.progress FROM views v JOIN tables t ON t.id = v.table_id \
     LEFT JOIN tables b ON b.id = v.base_table_id";

fn read_view(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ViewDef>> {
    let name: String = row.get(1)?;
    let spec: String = row.get(5)?;
    let progress: String = row.get(6)?;
    let table_id = row.get(0)?;
    let base_table_id = row.get(2)?;
    let base_table = row.get(3)?;
    let query = row.get(4)?;
    Ok((|| {
        Ok(ViewDef {
            spec: from_json::<ViewSpec>(&spec, &format!("view {name}"))?,
            progress: from_json::<ViewProgress>(&progress, &format!("view {name}"))?,
            table_id,
            name,
            base_table_id,
            base_table,
            query,
        })
    })())
}

fn table_by_name(conn: &Connection, name: &str) -> Result<Option<TableDef>> {
    conn.query_row(
        &format!("SELECT {TABLE_COLUMNS} FROM tables WHERE name = ?1"),
        [name],
        read_table,
    )
    .optional()?
    .transpose()
}

fn files_of(conn: &Connection, table_id: i64) -> Result<Vec<ParquetFile>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE table_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt.query_map([table_id], read_file)?;
    rows.map(|r| r?).collect()
}

/// Inserts a table row (its name must be free); returns its definition.
fn insert_table(conn: &Connection, table: &NewTable, now: i64) -> Result<TableDef> {
    if table_by_name(conn, &table.name)?.is_some() {
        return Err(CatalogError::TableExists(table.name.clone()));
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

impl Catalog for SqliteCatalog {
    fn create_table(&self, table: NewTable) -> Result<TableDef> {
        insert_table(&self.conn(), &table, self.clock.now_ns())
    }

    fn drop_table(&self, name: &str) -> Result<(TableDef, Vec<ParquetFile>)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let def =
            table_by_name(&tx, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))?;
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
        tx.execute("DELETE FROM tables WHERE id = ?1", [def.id])?;
        tx.commit()?;
        Ok((def, files))
    }

    fn tables(&self) -> Result<Vec<TableDef>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {TABLE_COLUMNS} FROM tables ORDER BY name"))?;
        let rows = stmt.query_map([], read_table)?;
        rows.map(|r| r?).collect()
    }

    fn table(&self, name: &str) -> Result<Option<TableDef>> {
        table_by_name(&self.conn(), name)
    }

    fn set_options(&self, name: &str, options: TableOptions) -> Result<TableDef> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE tables SET options = ?1 WHERE name = ?2",
            params![encode_options(&options)?, name],
        )?;
        if n == 0 {
            return Err(CatalogError::TableNotFound(name.into()));
        }
        table_by_name(&conn, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))
    }

    fn set_schema(&self, name: &str, schema: SchemaRef) -> Result<TableDef> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE tables SET columns = ?1 WHERE name = ?2",
            params![encode_schema(&schema)?, name],
        )?;
        if n == 0 {
            return Err(CatalogError::TableNotFound(name.into()));
        }
        table_by_name(&conn, name)?.ok_or_else(|| CatalogError::TableNotFound(name.into()))
    }

    fn commit_files_invalidating(
        &self,
        table_id: i64,
        files: Vec<NewParquetFile>,
        persisted_seq: u64,
        invalidate: &[Invalidation],
    ) -> Result<Vec<ParquetFile>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE tables SET persisted_seq = max(persisted_seq, ?1) WHERE id = ?2",
            params![persisted_seq as i64, table_id],
        )?;
        if n == 0 {
            return Err(CatalogError::TableNotFound(format!("id {table_id}")));
        }
        let committed = insert_files(&tx, table_id, &files, self.clock.now_ns())?;
        insert_invalidations(&tx, invalidate)?;
        tx.commit()?;
        Ok(committed)
    }

    fn create_view(&self, table: NewTable, view: NewView) -> Result<(TableDef, ViewDef)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let def = insert_table(&tx, &table, self.clock.now_ns())?;
        let id = def.id;
        tx.execute(
            "INSERT INTO views (table_id, base_table_id, query, spec, progress) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                view.base_table_id,
                view.query,
                to_json(&view.spec)?,
                to_json(&view.progress)?
            ],
        )?;
        let vdef = tx.query_row(
            &format!("{VIEW_QUERY} WHERE v.table_id = ?1"),
            [id],
            read_view,
        )??;
        tx.commit()?;
        Ok((def, vdef))
    }

    fn views(&self) -> Result<Vec<ViewDef>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{VIEW_QUERY} ORDER BY t.name"))?;
        let rows = stmt.query_map([], read_view)?;
        rows.map(|r| r?).collect()
    }

    fn invalidations(&self) -> Result<Vec<Invalidation>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT view_id, bucket_ns, generation FROM invalidations ORDER BY view_id, bucket_ns",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Invalidation {
                view_id: r.get(0)?,
                bucket_ns: r.get(1)?,
                generation: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn set_view_progress(&self, view_id: i64, progress: &ViewProgress) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE views SET progress = ?1 WHERE table_id = ?2",
            params![to_json(progress)?, view_id],
        )?;
        if n == 0 {
            return Err(CatalogError::TableNotFound(format!("view id {view_id}")));
        }
        Ok(())
    }

    fn commit_refresh(&self, r: Refresh<'_>) -> Result<Vec<ParquetFile>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for id in r.remove {
            let n = tx.execute(
                "DELETE FROM files WHERE id = ?1 AND table_id = ?2",
                params![id, r.view_id],
            )?;
            if n == 0 {
                return Err(CatalogError::FileNotFound(*id));
            }
        }
        let added = insert_files(&tx, r.view_id, &r.add, self.clock.now_ns())?;
        {
            let mut clear = tx.prepare_cached(
                "DELETE FROM invalidations WHERE view_id = ?1 AND bucket_ns = ?2 \
                 AND generation <= ?3",
            )?;
            for d in r.done {
                clear.execute(params![r.view_id, d.bucket_ns, d.generation as i64])?;
            }
        }
        insert_invalidations(&tx, r.invalidate)?;
        if let Some(p) = r.progress {
            tx.execute(
                "UPDATE views SET progress = ?1 WHERE table_id = ?2",
                params![to_json(p)?, r.view_id],
            )?;
        }
        tx.commit()?;
        Ok(added)
    }

    fn replace_files(
        &self,
        table_id: i64,
        remove: &[i64],
        add: Vec<NewParquetFile>,
    ) -> Result<Vec<ParquetFile>> {
        let mut conn = self.conn();
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
        let added = insert_files(&tx, table_id, &add, self.clock.now_ns())?;
        tx.commit()?;
        Ok(added)
    }

    fn record_compaction(&self, run: &CompactionRun) -> Result<()> {
        self.conn().execute(
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

    fn compactions(&self, limit: usize) -> Result<Vec<CompactionRun>> {
        let conn = self.conn();
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

    fn files(&self, table_id: i64) -> Result<Vec<ParquetFile>> {
        files_of(&self.conn(), table_id)
    }

    fn create_alert(&self, alert: &StoredAlert) -> Result<()> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT INTO alerts (name, definition, state, created_at_ns) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO NOTHING",
            params![
                alert.name,
                alert.definition,
                alert.state,
                alert.created_at_ns
            ],
        )?;
        if n == 0 {
            return Err(CatalogError::AlertExists(alert.name.clone()));
        }
        Ok(())
    }

    fn drop_alert(&self, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx.execute("DELETE FROM alerts WHERE name = ?1", [name])? == 0 {
            return Err(CatalogError::AlertNotFound(name.to_string()));
        }
        tx.execute("DELETE FROM alert_outbox WHERE alert = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    fn alerts(&self) -> Result<Vec<StoredAlert>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name, definition, state, created_at_ns FROM alerts ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredAlert {
                name: r.get(0)?,
                definition: r.get(1)?,
                state: r.get(2)?,
                created_at_ns: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn commit_alert(
        &self,
        name: &str,
        state: &str,
        events: &[AlertEvent],
        deliveries: &[String],
    ) -> Result<Vec<i64>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx.execute(
            "UPDATE alerts SET state = ?2 WHERE name = ?1",
            [name, state],
        )? == 0
        {
            return Err(CatalogError::AlertNotFound(name.to_string()));
        }
        insert_alert_events(&tx, events)?;
        let mut ids = Vec::with_capacity(deliveries.len());
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO alert_outbox (alert, body) VALUES (?1, ?2)")?;
            for body in deliveries {
                stmt.execute([name, body])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    fn finish_delivery(&self, id: i64, event: &AlertEvent, retry: Option<&str>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_alert_events(&tx, std::slice::from_ref(event))?;
        match retry {
            Some(body) => tx.execute(
                "UPDATE alert_outbox SET body = ?2 WHERE id = ?1",
                params![id, body],
            )?,
            None => tx.execute("DELETE FROM alert_outbox WHERE id = ?1", [id])?,
        };
        tx.commit()?;
        Ok(())
    }

    fn deliveries(&self) -> Result<Vec<Delivery>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id, alert, body FROM alert_outbox ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(Delivery {
                id: r.get(0)?,
                alert: r.get(1)?,
                body: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn alert_events(&self, limit: usize) -> Result<Vec<AlertEvent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT alert, time_ns, body FROM \
             (SELECT id, alert, time_ns, body FROM alert_events ORDER BY id DESC LIMIT ?1) \
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok(AlertEvent {
                alert: r.get(0)?,
                time_ns: r.get(1)?,
                body: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn users(&self) -> Result<Vec<StoredUser>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT name, body, created_at_ns FROM users ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredUser {
                name: r.get(0)?,
                body: r.get(1)?,
                created_at_ns: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn create_user(&self, user: &StoredUser) -> Result<()> {
        let n = self.conn().execute(
            "INSERT INTO users (name, body, created_at_ns) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO NOTHING",
            params![user.name, user.body, user.created_at_ns],
        )?;
        if n == 0 {
            return Err(CatalogError::UserExists(user.name.clone()));
        }
        Ok(())
    }

    fn update_user(&self, name: &str, body: &str) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE users SET body = ?2 WHERE name = ?1",
            params![name, body],
        )?;
        if n == 0 {
            return Err(CatalogError::UserNotFound(name.to_string()));
        }
        Ok(())
    }

    fn drop_user(&self, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM tokens WHERE user_name = ?1", [name])?;
        if tx.execute("DELETE FROM users WHERE name = ?1", [name])? == 0 {
            return Err(CatalogError::UserNotFound(name.to_string()));
        }
        tx.commit()?;
        Ok(())
    }

    fn tokens(&self) -> Result<Vec<StoredToken>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name, user_name, body, created_at_ns FROM tokens ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredToken {
                name: r.get(0)?,
                user: r.get(1)?,
                body: r.get(2)?,
                created_at_ns: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn create_token(&self, token: &StoredToken) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let user: Option<String> = tx
            .query_row(
                "SELECT name FROM users WHERE name = ?1",
                [&token.user],
                |r| r.get(0),
            )
            .optional()?;
        if user.is_none() {
            return Err(CatalogError::UserNotFound(token.user.clone()));
        }
        let n = tx.execute(
            "INSERT INTO tokens (name, user_name, body, created_at_ns) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO NOTHING",
            params![token.name, token.user, token.body, token.created_at_ns],
        )?;
        if n == 0 {
            return Err(CatalogError::TokenExists(token.name.clone()));
        }
        tx.commit()?;
        Ok(())
    }

    fn drop_token(&self, name: &str) -> Result<()> {
        if self
            .conn()
            .execute("DELETE FROM tokens WHERE name = ?1", [name])?
            == 0
        {
            return Err(CatalogError::TokenNotFound(name.to_string()));
        }
        Ok(())
    }

    fn max_persisted_seq(&self) -> Result<u64> {
        let conn = self.conn();
        let seq: i64 = conn.query_row(
            "SELECT max((SELECT seq FROM seq_floor WHERE id = 0), \
                        coalesce((SELECT max(persisted_seq) FROM tables), 0))",
            [],
            |r| r.get(0),
        )?;
        Ok(seq as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow_schema::TimeUnit;

    use super::*;
    use crate::ColumnStats;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("host", DataType::Utf8, true),
            Field::new("usage", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("small", DataType::Int16, true),
            Field::new("raw", DataType::Binary, true),
            // Field metadata survives too (a text column holding jsonb).
            Field::new("attrs", DataType::Utf8, true)
                .with_metadata([("pg.type".to_string(), "jsonb".to_string())].into()),
        ]))
    }

    fn new_table(name: &str) -> NewTable {
        NewTable {
            name: name.into(),
            schema: schema(),
            time_column: "time".into(),
            options: TableOptions {
                retention: Some(Duration::from_secs(30 * 86400)),
                ..Default::default()
            },
        }
    }

    fn file(path: &str) -> NewParquetFile {
        let mut stats = BTreeMap::new();
        stats.insert(
            "host".to_string(),
            ColumnStats {
                min: Some("a".into()),
                max: Some("z".into()),
                null_count: 1,
            },
        );
        NewParquetFile {
            path: path.into(),
            partition_start_ns: 3_600_000_000_000,
            min_time_ns: 3_600_000_000_001,
            max_time_ns: 3_700_000_000_000,
            rows: 10,
            bytes: 1234,
            column_stats: stats,
        }
    }

    #[test]
    fn tables_and_files_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let (id, committed) = {
            let c = SqliteCatalog::open(&path).unwrap();
            let t = c.create_table(new_table("cpu")).unwrap();
            assert_eq!(t.schema, schema());
            let committed = c
                .commit_files(t.id, vec![file("cpu/a.parquet"), file("cpu/b.parquet")], 42)
                .unwrap();
            (t.id, committed)
        };
        let c = SqliteCatalog::open(&path).unwrap();
        let t = c.table("cpu").unwrap().unwrap();
        assert_eq!(t.id, id);
        assert_eq!(t.persisted_seq, 42);
        assert_eq!(t.schema, schema());
        assert_eq!(t.options.retention, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(c.files(id).unwrap(), committed);
        assert_eq!(c.max_persisted_seq().unwrap(), 42);
    }

    #[test]
    fn replace_files_is_all_or_nothing() {
        let c = SqliteCatalog::in_memory().unwrap();
        let t = c.create_table(new_table("cpu")).unwrap();
        let old = c
            .commit_files(t.id, vec![file("cpu/a.parquet"), file("cpu/b.parquet")], 1)
            .unwrap();
        // One of the files to remove is unknown: nothing changes.
        let err = c
            .replace_files(t.id, &[old[0].id, 999], vec![file("cpu/c.parquet")])
            .unwrap_err();
        assert!(matches!(err, CatalogError::FileNotFound(999)), "{err}");
        assert_eq!(c.files(t.id).unwrap(), old);
        // Both known: swapped in one transaction.
        let added = c
            .replace_files(t.id, &[old[0].id, old[1].id], vec![file("cpu/c.parquet")])
            .unwrap();
        assert_eq!(c.files(t.id).unwrap(), added);
        assert_eq!(added[0].file.path, "cpu/c.parquet");
        // A file of another table is not this table's.
        let u = c.create_table(new_table("mem")).unwrap();
        assert!(c.replace_files(u.id, &[added[0].id], vec![]).is_err());
    }

    #[test]
    fn compactions_are_recorded_newest_first() {
        let c = SqliteCatalog::in_memory().unwrap();
        let run = |n: u64| CompactionRun {
            table: "cpu".into(),
            partition_start_ns: 3_600_000_000_000,
            files_in: n,
            files_out: 1,
            rows: 100,
            bytes_in: 1000,
            bytes_out: 800,
            started_at_ns: n as i64,
            duration: Duration::from_millis(12),
            trigger: "background".into(),
        };
        c.record_compaction(&run(5)).unwrap();
        c.record_compaction(&run(7)).unwrap();
        assert_eq!(c.compactions(10).unwrap(), vec![run(7), run(5)]);
        assert_eq!(c.compactions(1).unwrap(), vec![run(7)]);
    }

    #[test]
    fn version_1_catalogs_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{SCHEMA_V1} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1;"
            ))
            .unwrap();
        }
        let c = SqliteCatalog::open(&path).unwrap();
        assert!(c.compactions(10).unwrap().is_empty());
        let version: i64 = c
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn views_and_their_invalidations() {
        let c = SqliteCatalog::in_memory().unwrap();
        let base = c.create_table(new_table("cpu")).unwrap();
        let spec = ViewSpec {
            kind: crate::ViewKind::Aggregate,
            bucket_ns: 60_000_000_000,
            origin_ns: 0,
            refresh_interval_secs: 0,
        };
        let (t, v) = c
            .create_view(
                new_table("cpu_1m"),
                NewView {
                    base_table_id: base.id,
                    query: "SELECT ...".into(),
                    spec: spec.clone(),
                    progress: ViewProgress {
                        backfill: Some((0, 10)),
                        backfilled_to_ns: 0,
                    },
                },
            )
            .unwrap();
        assert_eq!((v.table_id, v.base_table.as_str()), (t.id, "cpu"));
        assert_eq!(c.views().unwrap(), vec![v.clone()]);
        let inv = |bucket_ns, generation| Invalidation {
            view_id: t.id,
            bucket_ns,
            generation,
        };
        // Persisting base rows records their buckets; a later generation wins.
        c.commit_files_invalidating(base.id, vec![], 5, &[inv(60, 1), inv(120, 2)])
            .unwrap();
        c.commit_files_invalidating(base.id, vec![], 6, &[inv(60, 3), inv(60, 1)])
            .unwrap();
        assert_eq!(c.invalidations().unwrap(), vec![inv(60, 3), inv(120, 2)]);
        // A refresh that read generation 2 of bucket 60 leaves generation 3.
        let progress = ViewProgress::default();
        c.commit_refresh(Refresh {
            view_id: t.id,
            remove: &[],
            add: vec![file("cpu_1m/a.parquet")],
            done: &[inv(60, 2), inv(120, 2)],
            invalidate: &[],
            progress: Some(&progress),
        })
        .unwrap();
        assert_eq!(c.invalidations().unwrap(), vec![inv(60, 3)]);
        assert_eq!(c.views().unwrap()[0].progress, progress);
        assert_eq!(c.files(t.id).unwrap().len(), 1);
        // The base cannot go while the view reads it; the view can.
        assert!(matches!(
            c.drop_table("cpu"),
            Err(CatalogError::HasDependents { .. })
        ));
        c.drop_table("cpu_1m").unwrap();
        assert!(c.views().unwrap().is_empty());
        assert!(c.invalidations().unwrap().is_empty());
        c.drop_table("cpu").unwrap();
    }

    #[test]
    fn users_and_tokens_survive_reopen_and_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let user = |name: &str| StoredUser {
            name: name.into(),
            body: "{}".into(),
            created_at_ns: 1,
        };
        let token = |name: &str, user: &str| StoredToken {
            name: name.into(),
            user: user.into(),
            body: "{\"hash\":\"h\"}".into(),
            created_at_ns: 2,
        };
        {
            let c = SqliteCatalog::open(&path).unwrap();
            c.create_user(&user("alice")).unwrap();
            c.create_user(&user("bob")).unwrap();
            assert!(matches!(
                c.create_user(&user("alice")),
                Err(CatalogError::UserExists(_))
            ));
            c.update_user("alice", "{\"admin\":true}").unwrap();
            assert!(matches!(
                c.update_user("carol", "{}"),
                Err(CatalogError::UserNotFound(_))
            ));
            c.create_token(&token("t1", "alice")).unwrap();
            c.create_token(&token("t2", "bob")).unwrap();
            assert!(matches!(
                c.create_token(&token("t1", "bob")),
                Err(CatalogError::TokenExists(_))
            ));
            assert!(matches!(
                c.create_token(&token("t3", "carol")),
                Err(CatalogError::UserNotFound(_))
            ));
        }
        let c = SqliteCatalog::open(&path).unwrap();
        let users = c.users().unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].body, "{\"admin\":true}");
        assert_eq!(c.tokens().unwrap().len(), 2);
        c.drop_user("bob").unwrap();
        let tokens = c.tokens().unwrap();
        assert_eq!(tokens, vec![token("t1", "alice")]);
        c.drop_token("t1").unwrap();
        assert!(matches!(
            c.drop_token("t1"),
            Err(CatalogError::TokenNotFound(_))
        ));
        assert!(matches!(
            c.drop_user("bob"),
            Err(CatalogError::UserNotFound(_))
        ));
    }

    #[test]
    fn alerts_their_events_and_outbox_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let alert = StoredAlert {
            name: "a".into(),
            definition: "{}".into(),
            state: "s0".into(),
            created_at_ns: 7,
        };
        let event = |body: &str| AlertEvent {
            alert: "a".into(),
            time_ns: 1,
            body: body.into(),
        };
        {
            let c = SqliteCatalog::open(&path).unwrap();
            c.create_alert(&alert).unwrap();
            assert!(matches!(
                c.create_alert(&alert),
                Err(CatalogError::AlertExists(_))
            ));
            let ids = c
                .commit_alert("a", "s1", &[event("e1")], &["d1".into(), "d2".into()])
                .unwrap();
            assert_eq!(ids.len(), 2);
            c.finish_delivery(ids[0], &event("e2"), None).unwrap();
            c.finish_delivery(ids[1], &event("e3"), Some("d2'"))
                .unwrap();
            assert!(matches!(
                c.commit_alert("nope", "s", &[], &[]),
                Err(CatalogError::AlertNotFound(_))
            ));
        }
        let c = SqliteCatalog::open(&path).unwrap();
        assert_eq!(
            c.alerts().unwrap(),
            vec![StoredAlert {
                state: "s1".into(),
                ..alert.clone()
            }]
        );
        let d = c.deliveries().unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].body, "d2'");
        let bodies: Vec<String> = c
            .alert_events(10)
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect();
        assert_eq!(bodies, vec!["e1", "e2", "e3"]);
        let last: Vec<String> = c
            .alert_events(1)
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect();
        assert_eq!(last, vec!["e3"]);
        // Dropping a rule drops what it still owes, not its history.
        c.drop_alert("a").unwrap();
        assert!(c.alerts().unwrap().is_empty());
        assert!(c.deliveries().unwrap().is_empty());
        assert_eq!(c.alert_events(10).unwrap().len(), 3);
        assert!(matches!(
            c.drop_alert("a"),
            Err(CatalogError::AlertNotFound(_))
        ));
    }

    #[test]
    fn duplicate_and_missing_tables_are_errors() {
        let c = SqliteCatalog::in_memory().unwrap();
        c.create_table(new_table("cpu")).unwrap();
        assert!(matches!(
            c.create_table(new_table("cpu")),
            Err(CatalogError::TableExists(n)) if n == "cpu"
        ));
        assert!(matches!(
            c.drop_table("nope"),
            Err(CatalogError::TableNotFound(_))
        ));
        assert!(c.table("nope").unwrap().is_none());
    }

    #[test]
    fn drop_returns_files_and_keeps_the_seq_floor() {
        let c = SqliteCatalog::in_memory().unwrap();
        let t = c.create_table(new_table("cpu")).unwrap();
        c.commit_files(t.id, vec![file("cpu/a.parquet")], 7)
            .unwrap();
        let (def, files) = c.drop_table("cpu").unwrap();
        assert_eq!(def.id, t.id);
        assert_eq!(files.len(), 1);
        assert!(c.tables().unwrap().is_empty());
        assert_eq!(c.max_persisted_seq().unwrap(), 7);
        let t2 = c.create_table(new_table("cpu")).unwrap();
        assert_ne!(t2.id, t.id, "ids are never reused");
        assert!(c.files(t2.id).unwrap().is_empty());
    }

    #[test]
    fn options_and_schema_can_change() {
        let c = SqliteCatalog::in_memory().unwrap();
        c.create_table(new_table("cpu")).unwrap();
        let t = c.set_options("cpu", TableOptions::default()).unwrap();
        assert_eq!(t.options.retention, None);
        let mut fields = schema().fields().to_vec();
        fields.push(Arc::new(Field::new("extra", DataType::Float32, true)));
        let wider = Arc::new(Schema::new(fields));
        let t = c.set_schema("cpu", wider.clone()).unwrap();
        assert_eq!(t.schema, wider);
    }

    #[test]
    fn a_foreign_sqlite_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE x (a INTEGER)")
            .unwrap();
        let err = SqliteCatalog::open(&path).unwrap_err();
        assert!(err.to_string().contains("not a Sextant catalog"), "{err}");
    }

    #[test]
    fn a_newer_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        drop(SqliteCatalog::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteCatalog::open(&path).unwrap_err();
        assert!(matches!(
            err,
            CatalogError::UnsupportedVersion { found: 99, .. }
        ));
    }
}
