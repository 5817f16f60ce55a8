//! The catalog file's layout: the `application_id` that marks a Sextant
//! catalog, the tables of each layout version and the migrations between
//! them. Opening a file → [`init`] checks it is empty or a
//! Sextant catalog of a layout it knows, creates or upgrades it (each
//! migration in its own transaction), and hands back the catalog.

use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

use super::SqliteStore;
use crate::{CatalogError, Result};

/// `application_id` of a Sextant catalog: "SXTC".
pub(crate) const APPLICATION_ID: i64 = 0x5358_5443;
/// Layout version written by this build. Version 1 catalogs are upgraded
/// in place (see [`MIGRATIONS`]).
pub(crate) const SCHEMA_VERSION: i64 = 13;

pub(crate) const SCHEMA_V1: &str = "
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
pub(super) const SCHEMA_V2: &str = "
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
pub(super) const SCHEMA_V3: &str = "
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
pub(super) const SCHEMA_V4: &str = "
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
pub(super) const SCHEMA_V5: &str = "
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

/// Plain views (`CREATE VIEW`): the query and its result's columns.
pub(super) const SCHEMA_V6: &str = "
CREATE TABLE plain_views (
    name TEXT PRIMARY KEY,
    query TEXT NOT NULL,
    columns TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
);
";

/// Indexes (`CREATE INDEX`): recorded with their table, which drops them.
pub(super) const SCHEMA_V7: &str = "
CREATE TABLE indexes (
    name TEXT PRIMARY KEY,
    table_id INTEGER NOT NULL REFERENCES tables (id),
    columns TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
);
";

/// Nodes: each node's position in each table (its own WAL's), the floor of
/// its positions that outlives dropped tables, and the registry of nodes.
/// The positions of a catalog from before nodes belong to node `''`, which
/// the first node to open it adopts (`SqlCatalog::for_node`).
pub(super) const SCHEMA_V8: &str = "
CREATE TABLE persisted (
    table_id INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (table_id, node_id)
) WITHOUT ROWID;
INSERT INTO persisted SELECT id, '', persisted_seq FROM tables WHERE persisted_seq > 0;
CREATE TABLE node_seq_floor (node_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
INSERT INTO node_seq_floor SELECT '', seq FROM seq_floor WHERE seq > 0;
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    modes TEXT NOT NULL,
    addresses TEXT NOT NULL,
    started_at_ns INTEGER NOT NULL,
    last_heartbeat_ns INTEGER NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0
);
";

/// Leases: which node runs each singleton job (compaction and retention,
/// view refresh, alert evaluation), until when.
pub(super) const SCHEMA_V9: &str = "
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    acquired_at_ns INTEGER NOT NULL,
    expires_at_ns INTEGER NOT NULL
);
";

/// Invalidations by node: each node's generations count on their own, so
/// a refresh clears only the ones it read of the node that made them.
/// Those of a catalog from before belong to node `''`, which the first
/// node to open it adopts.
pub(super) const SCHEMA_V10: &str = "
CREATE TABLE invalidations_by_node (
    view_id INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    bucket_ns INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (view_id, node_id, bucket_ns)
) WITHOUT ROWID;
INSERT INTO invalidations_by_node SELECT view_id, '', bucket_ns, generation FROM invalidations;
DROP TABLE invalidations;
ALTER TABLE invalidations_by_node RENAME TO invalidations;
";

/// Deletes (`DELETE FROM t WHERE ...`): a predicate that hides the rows of
/// the table's files up to `files_upto` (by id) until compaction rewrites
/// them, and the node's buffered rows up to its WAL sequence `seq`.
pub(super) const SCHEMA_V11: &str = "
CREATE TABLE deletes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_id INTEGER NOT NULL,
    predicate TEXT NOT NULL,
    files_upto INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_at_ns INTEGER NOT NULL
);
";

/// Each node's WAL position a delete covers and the rows it removed from
/// its buffer (a cluster's ingest nodes each cut their own buffer; the
/// node that ran it has a row too).
pub(super) const SCHEMA_V12: &str = "
CREATE TABLE delete_bounds (
    delete_id INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (delete_id, node_id)
);
INSERT INTO delete_bounds (delete_id, node_id, seq) SELECT id, node_id, seq FROM deletes;
";

/// Prometheus metric metadata from remote write, by family name.
pub(super) const SCHEMA_V13: &str = "
CREATE TABLE metric_metadata (
    metric TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    help TEXT NOT NULL,
    unit TEXT NOT NULL,
    updated_at_ns INTEGER NOT NULL
);
";

/// `(version, statements)`: applied in order to bring an older catalog up
/// to [`SCHEMA_VERSION`], each in the transaction that sets its version.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (2, SCHEMA_V2),
    (3, SCHEMA_V3),
    (4, SCHEMA_V4),
    (5, SCHEMA_V5),
    (6, SCHEMA_V6),
    (7, SCHEMA_V7),
    (8, SCHEMA_V8),
    (9, SCHEMA_V9),
    (10, SCHEMA_V10),
    (11, SCHEMA_V11),
    (12, SCHEMA_V12),
    (13, SCHEMA_V13),
];

/// SQLite's `quick_check` of an existing catalog: a damaged catalog stops
/// start-up with what SQLite found, rather than serving (or silently
/// rewriting) a partial one.
fn check_integrity(conn: &Connection, path: &str) -> Result<()> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(CatalogError::Corrupt(format!(
        "{path} is damaged (SQLite's quick_check: {}); refusing to start: restore the catalog from a backup",
        problems.join("; ")
    )))
}

/// Opens the catalog on `conn` (`path` names it in errors): checks,
/// creates or upgrades its layout. A file SQLite cannot read as a database
/// is [`CatalogError::Corrupt`].
/// `create`: make the layout in a file that has none; otherwise such a file
/// is [`CatalogError::Empty`] and is not written.
pub(super) fn init(conn: Connection, path: &str, create: bool) -> Result<SqliteStore> {
    init_checked(conn, path, create).map_err(|e| match e {
        CatalogError::Sqlite(rusqlite::Error::SqliteFailure(f, msg))
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            CatalogError::Corrupt(format!(
                "{path} is damaged ({}); refusing to start: restore the catalog from a backup",
                msg.unwrap_or_else(|| f.to_string())
            ))
        }
        e => e,
    })
}

fn init_checked(conn: Connection, path: &str, create: bool) -> Result<SqliteStore> {
    if !create {
        // Read before anything writes: a file without a catalog stays as
        // it is for whoever recovers it.
        let app_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
        if app_id == 0 {
            return Err(CatalogError::Empty(path.to_string()));
        }
    }
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
            check_integrity(&conn, path)?;
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
    Ok(SqliteStore {
        conn: Mutex::new(conn),
        path: (path != ":memory:").then(|| std::path::PathBuf::from(path)),
    })
}
