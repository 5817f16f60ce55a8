//! Unit tests of the catalog, each on both stores: tables, files, views,
//! alerts, users and tokens through a reopen; the layout checks and
//! upgrades of each store; nodes writing to one PostgreSQL catalog at once.
//!
//! The PostgreSQL tests need a server: `SEXTANT_TEST_POSTGRES` names it
//! (`postgres://user@host:port`, without a database: each test creates its
//! own). tests/run-all.sh starts PostgreSQL 15 and sets it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use rusqlite::Connection;

use crate::sqlite::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION};
use crate::*;

/// Where a test's catalog lives; [`Place::open`] opens it (again).
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Place {
    fn sqlite() -> Self {
        Place::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A database of its own on the test server.
    fn postgres() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let base = postgres_server();
        let name = format!(
            "catalog_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        admin(
            &format!("{base}/postgres"),
            &format!("CREATE DATABASE {name}"),
        );
        Place::Postgres(format!("{base}/{name}"))
    }

    fn open(&self) -> Box<dyn Catalog> {
        self.open_as("")
    }

    /// The catalog as the node `node` sees it.
    fn open_as(&self, node: &str) -> Box<dyn Catalog> {
        match self {
            Place::Sqlite(dir) => Box::new(
                SqliteCatalog::open(&dir.path().join("catalog.sqlite"))
                    .unwrap()
                    .for_node(node)
                    .unwrap(),
            ),
            Place::Postgres(url) => Box::new(
                PostgresCatalog::connect(url)
                    .unwrap()
                    .for_node(node)
                    .unwrap(),
            ),
        }
    }
}

fn postgres_server() -> String {
    std::env::var("SEXTANT_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "SEXTANT_TEST_POSTGRES is not set: the catalog tests run on PostgreSQL too. \
             tests/run-all.sh starts PostgreSQL 15 and sets it; or set it to a server \
             (postgres://user@host:port) where the user may create databases"
        )
    })
}

/// Runs `sql` on the database at `url`, as the test's administrator.
fn admin(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        tokio::spawn(connection);
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    });
}

/// Each test of both stores, as `sqlite_store::NAME` and `postgres_store::NAME`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite_store {
            $(#[test] fn $name() { super::$name(&super::Place::sqlite()) })*
        }
        mod postgres_store {
            $(#[test] fn $name() { super::$name(&super::Place::postgres()) })*
        }
    };
}

on_both_stores!(
    tables_and_files_survive_reopen,
    replace_files_is_all_or_nothing,
    compactions_are_recorded_newest_first,
    views_and_their_invalidations,
    users_and_tokens_survive_reopen_and_go_together,
    alerts_their_events_and_outbox_survive_reopen,
    duplicate_and_missing_tables_are_errors,
    drop_returns_files_and_keeps_the_seq_floor,
    options_and_schema_can_change,
    plain_views_are_kept_replaced_and_dropped,
    indexes_are_kept_and_go_with_their_table,
    each_node_has_its_own_wal_positions,
    nodes_register_heartbeat_and_stop,
    a_lease_is_held_renewed_and_taken_over_once_expired,
    deletes_survive_reopen_and_go_with_their_table,
    a_delete_covers_every_earlier_file_and_fences_later_ones,
    metric_metadata_is_replaced_by_family_and_survives_reopen,
);

fn metric_metadata_is_replaced_by_family_and_survives_reopen(place: &Place) {
    let meta = |metric: &str, kind: &str, help: &str| crate::MetricMetadata {
        metric: metric.into(),
        kind: kind.into(),
        help: help.into(),
        unit: String::new(),
    };
    {
        let c = place.open();
        assert!(c.metric_metadata().unwrap().is_empty());
        c.put_metric_metadata(&[
            meta("up", "gauge", "1 if the target is up"),
            meta("http_requests_total", "counter", "requests"),
        ])
        .unwrap();
        c.put_metric_metadata(&[meta("up", "unknown", "it's \"up\"")])
            .unwrap();
    }
    assert_eq!(
        place.open().metric_metadata().unwrap(),
        [
            meta("http_requests_total", "counter", "requests"),
            meta("up", "unknown", "it's \"up\""),
        ]
    );
}

fn deletes_survive_reopen_and_go_with_their_table(place: &Place) {
    let t = place.open().create_table(new_table("cpu")).unwrap();
    let delete = |predicate: &str, files_upto, seq| Delete {
        id: 0,
        table_id: t.id,
        predicate: predicate.into(),
        files_upto,
        node: "n".into(),
        seq,
        created_at_ns: 0,
        bounds: BTreeMap::new(),
        removed: BTreeMap::new(),
    };
    let a = place
        .open()
        .add_delete(delete("host = 'a'", 3, 10))
        .unwrap();
    let b = place.open().add_delete(delete("v > 1", 5, 12)).unwrap();
    assert!(a.id < b.id && a.created_at_ns > 0);
    let c = place.open();
    assert_eq!(c.deletes().unwrap(), vec![a.clone(), b.clone()]);
    c.forget_deletes(&[a.id]).unwrap();
    assert_eq!(c.deletes().unwrap(), vec![b]);
    assert!(matches!(
        c.add_delete(Delete {
            table_id: 999,
            ..delete("x", 0, 0)
        }),
        Err(CatalogError::TableNotFound(_))
    ));
    c.drop_table("cpu").unwrap();
    assert!(c.deletes().unwrap().is_empty());
}

fn a_delete_covers_every_earlier_file_and_fences_later_ones(place: &Place) {
    let c = place.open();
    let t = c.create_table(new_table("cpu")).unwrap();
    let files = c
        .commit_files(t.id, vec![file("cpu/a.parquet")], 3)
        .unwrap();
    // Another node committed a file this node did not know of yet.
    let d = c
        .add_delete(Delete {
            id: 0,
            table_id: t.id,
            predicate: "host = 'a'".into(),
            files_upto: 0,
            node: "n1".into(),
            seq: 10,
            created_at_ns: 0,
            bounds: BTreeMap::new(),
            removed: BTreeMap::new(),
        })
        .unwrap();
    assert_eq!(d.files_upto, files[0].id);
    assert_eq!(d.bounds, BTreeMap::from([("n1".to_string(), 10)]));
    // A node that has not taken the delete in commits no file.
    let seen = d.id - 1;
    let refused = c.commit_files_invalidating(t.id, vec![file("cpu/b.parquet")], 4, &[], seen);
    assert!(
        matches!(refused, Err(CatalogError::Conflict(_))),
        "{refused:?}"
    );
    let refused = c.replace_files(t.id, &[files[0].id], vec![file("cpu/c.parquet")], seen);
    assert!(
        matches!(refused, Err(CatalogError::Conflict(_))),
        "{refused:?}"
    );
    // Removing files only (retention) needs no delete taken in.
    assert_eq!(c.files(t.id).unwrap().len(), 1);
    // Once it has, it does; its bound is recorded once.
    assert_eq!(c.bound_delete(d.id, "n2", 7, 4).unwrap(), Some(7));
    assert_eq!(c.bound_delete(d.id, "n2", 9, 5).unwrap(), Some(7));
    c.commit_files_invalidating(t.id, vec![file("cpu/b.parquet")], 4, &[], d.id)
        .unwrap();
    let reopened = place.open().deletes().unwrap();
    assert_eq!(
        reopened[0].bounds,
        BTreeMap::from([("n1".to_string(), 10), ("n2".to_string(), 7)])
    );
    assert_eq!(
        reopened[0].removed,
        BTreeMap::from([("n1".to_string(), 0), ("n2".to_string(), 4)])
    );
    c.forget_deletes(&[d.id]).unwrap();
    assert_eq!(c.bound_delete(d.id, "n3", 1, 0).unwrap(), None);
    assert!(c.deletes().unwrap().is_empty());
}

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

fn tables_and_files_survive_reopen(place: &Place) {
    let (id, committed) = {
        let c = place.open();
        let t = c.create_table(new_table("cpu")).unwrap();
        assert_eq!(t.schema, schema());
        let committed = c
            .commit_files(t.id, vec![file("cpu/a.parquet"), file("cpu/b.parquet")], 42)
            .unwrap();
        (t.id, committed)
    };
    let c = place.open();
    let t = c.table("cpu").unwrap().unwrap();
    assert_eq!(t.id, id);
    assert_eq!(t.persisted_seq, 42);
    assert_eq!(t.schema, schema());
    assert_eq!(t.options.retention, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(c.files(id).unwrap(), committed);
    assert_eq!(c.max_persisted_seq().unwrap(), 42);
}

fn replace_files_is_all_or_nothing(place: &Place) {
    let c = place.open();
    let t = c.create_table(new_table("cpu")).unwrap();
    let old = c
        .commit_files(t.id, vec![file("cpu/a.parquet"), file("cpu/b.parquet")], 1)
        .unwrap();
    // One of the files to remove is unknown: nothing changes.
    let err = c
        .replace_files(
            t.id,
            &[old[0].id, 999],
            vec![file("cpu/c.parquet")],
            i64::MAX,
        )
        .unwrap_err();
    assert!(matches!(err, CatalogError::FileNotFound(999)), "{err}");
    assert_eq!(c.files(t.id).unwrap(), old);
    // Both known: swapped in one transaction.
    let added = c
        .replace_files(
            t.id,
            &[old[0].id, old[1].id],
            vec![file("cpu/c.parquet")],
            i64::MAX,
        )
        .unwrap();
    assert_eq!(c.files(t.id).unwrap(), added);
    assert_eq!(added[0].file.path, "cpu/c.parquet");
    // A file of another table is not this table's.
    let u = c.create_table(new_table("mem")).unwrap();
    assert!(
        c.replace_files(u.id, &[added[0].id], vec![], i64::MAX)
            .is_err()
    );
}

fn compactions_are_recorded_newest_first(place: &Place) {
    let c = place.open();
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
    let version: i64 = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn views_and_their_invalidations(place: &Place) {
    let c = place.open();
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
    let by = |node: &str, bucket_ns, generation| Invalidation {
        view_id: t.id,
        node: node.into(),
        bucket_ns,
        generation,
    };
    let inv = |bucket_ns, generation| by("a", bucket_ns, generation);
    // Persisting base rows records their buckets; a later generation wins.
    c.commit_files_invalidating(base.id, vec![], 5, &[inv(60, 1), inv(120, 2)], i64::MAX)
        .unwrap();
    c.commit_files_invalidating(base.id, vec![], 6, &[inv(60, 3), inv(60, 1)], i64::MAX)
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
        lease: None,
    })
    .unwrap();
    assert_eq!(c.invalidations().unwrap(), vec![inv(60, 3)]);
    assert_eq!(c.views().unwrap()[0].progress, progress);
    // Each node's generations count on their own: a refresh that read node
    // a's generation 3 leaves node b's generation 1 of the same bucket, and
    // a node publishes the buckets its buffered rows touch without files.
    c.add_invalidations(&[by("b", 60, 1), by("b", 180, 9)])
        .unwrap();
    assert_eq!(
        c.view_invalidations(t.id, 2).unwrap(),
        vec![inv(60, 3), by("b", 60, 1)]
    );
    c.commit_refresh(Refresh {
        view_id: t.id,
        remove: &[],
        add: vec![],
        done: &[inv(60, 3), by("b", 180, 9)],
        invalidate: &[],
        progress: None,
        lease: None,
    })
    .unwrap();
    assert_eq!(c.invalidations().unwrap(), vec![by("b", 60, 1)]);
    // On a shared catalog only the holder of the views lease commits.
    let refresh = |holder| Refresh {
        view_id: t.id,
        remove: &[],
        add: vec![],
        done: &[],
        invalidate: &[],
        progress: None,
        lease: Some(("views", holder)),
    };
    assert!(matches!(
        c.commit_refresh(refresh("a")),
        Err(CatalogError::LeaseNotHeld { .. })
    ));
    assert!(
        c.hold_lease("views", "a", now_ns(), 3_600_000_000_000)
            .unwrap()
    );
    c.commit_refresh(refresh("a")).unwrap();
    let Err(e) = c.commit_refresh(refresh("b")) else {
        panic!("node b committed a refresh under node a's lease");
    };
    assert_eq!(
        e.to_string(),
        "this node does not hold the \"views\" lease (node a holds it)"
    );
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

fn users_and_tokens_survive_reopen_and_go_together(place: &Place) {
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
        let c = place.open();
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
    let c = place.open();
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

fn alerts_their_events_and_outbox_survive_reopen(place: &Place) {
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
        let c = place.open();
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
    let c = place.open();
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

fn duplicate_and_missing_tables_are_errors(place: &Place) {
    let c = place.open();
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

fn drop_returns_files_and_keeps_the_seq_floor(place: &Place) {
    let c = place.open();
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

fn options_and_schema_can_change(place: &Place) {
    let c = place.open();
    c.create_table(new_table("cpu")).unwrap();
    let t = c.set_options("cpu", TableOptions::default()).unwrap();
    assert_eq!(t.options.retention, None);
    // The token index's choice is kept, and read back after a reopen.
    for choice in [
        crate::TokenIndex::Columns(vec!["note".into(), "Body".into()]),
        crate::TokenIndex::Off,
        crate::TokenIndex::Auto,
    ] {
        let options = TableOptions {
            token_index: choice.clone(),
            ..TableOptions::default()
        };
        assert_eq!(
            c.set_options("cpu", options).unwrap().options.token_index,
            choice
        );
        let again = place.open();
        let t = again
            .tables()
            .unwrap()
            .into_iter()
            .find(|t| t.name == "cpu")
            .unwrap();
        assert_eq!(t.options.token_index, choice);
    }
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

fn plain_views_are_kept_replaced_and_dropped(place: &Place) {
    let cat = place.open();
    let columns = Arc::new(Schema::new(vec![Field::new("host", DataType::Utf8, true)]));
    let view = |query: &str| PlainView {
        name: "busy".into(),
        query: query.into(),
        columns: columns.clone(),
        created_at_ns: 1,
    };
    cat.create_plain_view(&view("SELECT host FROM cpu"), false)
        .unwrap();
    assert!(matches!(
        cat.create_plain_view(&view("SELECT 1"), false),
        Err(CatalogError::RelationExists(_))
    ));
    cat.create_plain_view(&view("SELECT host FROM cpu WHERE usage > 1"), true)
        .unwrap();
    assert_eq!(
        cat.plain_views().unwrap(),
        vec![view("SELECT host FROM cpu WHERE usage > 1")]
    );
    // A table cannot take a view's name, nor a view a table's.
    assert!(matches!(
        cat.create_table(new_table("busy")),
        Err(CatalogError::RelationExists(_))
    ));
    cat.create_table(new_table("cpu")).unwrap();
    assert!(matches!(
        cat.create_plain_view(
            &PlainView {
                name: "cpu".into(),
                ..view("SELECT 1")
            },
            true
        ),
        Err(CatalogError::RelationExists(_))
    ));
    cat.drop_plain_view("busy").unwrap();
    assert!(matches!(
        cat.drop_plain_view("busy"),
        Err(CatalogError::ViewNotFound(_))
    ));
    assert!(cat.plain_views().unwrap().is_empty());
}

fn indexes_are_kept_and_go_with_their_table(place: &Place) {
    let cat = place.open();
    let index = |name: &str, table: &str| IndexDef {
        name: name.into(),
        table: table.into(),
        columns: vec!["host".into(), "(a + b)".into()],
        created_at_ns: 7,
    };
    assert!(matches!(
        cat.create_index(&index("cpu_host", "cpu")),
        Err(CatalogError::TableNotFound(_))
    ));
    cat.create_table(new_table("cpu")).unwrap();
    cat.create_index(&index("cpu_host", "cpu")).unwrap();
    // Names are shared with tables, views and other indexes.
    for taken in ["cpu_host", "cpu"] {
        assert!(matches!(
            cat.create_index(&index(taken, "cpu")),
            Err(CatalogError::RelationExists(_))
        ));
    }
    cat.create_index(&index("cpu_other", "cpu")).unwrap();
    drop(cat);
    let cat = place.open();
    assert_eq!(
        cat.indexes().unwrap(),
        vec![index("cpu_host", "cpu"), index("cpu_other", "cpu")]
    );
    cat.drop_index("cpu_host").unwrap();
    assert!(matches!(
        cat.drop_index("cpu_host"),
        Err(CatalogError::IndexNotFound(_))
    ));
    cat.drop_table("cpu").unwrap();
    assert!(cat.indexes().unwrap().is_empty());
}

#[test]
fn a_newer_postgres_layout_is_refused() {
    let place = Place::postgres();
    drop(place.open());
    let Place::Postgres(url) = &place else {
        unreachable!()
    };
    admin(
        url,
        "UPDATE sextant.meta SET value = 99 WHERE key = 'layout'",
    );
    let err = PostgresCatalog::connect(url).unwrap_err();
    assert!(
        matches!(err, CatalogError::UnsupportedVersion { found: 99, .. }),
        "{err}"
    );
    // The message names the database, not the password.
    let with_password = url.replacen("://", "://sextant:secret@", 1);
    let err = PostgresCatalog::connect(&with_password).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn a_foreign_sextant_schema_is_refused() {
    let place = Place::postgres();
    let Place::Postgres(url) = &place else {
        unreachable!()
    };
    admin(url, "CREATE SCHEMA sextant; CREATE TABLE sextant.x (a INT)");
    let err = PostgresCatalog::connect(url).unwrap_err();
    assert!(err.to_string().contains("not a Sextant catalog"), "{err}");
}

/// Nodes that start together create the layout once; nodes that commit
/// files to one table at once each see every commit applied exactly once,
/// and of two nodes creating one table, one does and the other is told it
/// exists.
#[test]
fn nodes_writing_at_once_to_one_postgres_catalog() {
    let place = Place::postgres();
    let nodes: Vec<Box<dyn Catalog>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| place.open())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let table = nodes[0].create_table(new_table("cpu")).unwrap().id;
    let created = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                s.spawn(move || {
                    for i in 0..25u64 {
                        node.commit_files(
                            table,
                            vec![file(&format!("cpu/{n}-{i}.parquet"))],
                            (n as u64) * 100 + i,
                        )
                        .unwrap();
                    }
                    node.create_table(new_table("mem"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let files = nodes[3].files(table).unwrap();
    assert_eq!(files.len(), 100);
    let mut paths: Vec<_> = files.iter().map(|f| f.file.path.clone()).collect();
    paths.dedup();
    assert_eq!(paths.len(), 100);
    assert_eq!(nodes[1].table("cpu").unwrap().unwrap().persisted_seq, 324);
    assert_eq!(
        created.iter().filter(|r| r.is_ok()).count(),
        1,
        "{created:?}"
    );
    assert!(
        created
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, CatalogError::TableExists(_))),
        "{created:?}"
    );
}

/// Two nodes writing to one table each keep their own WAL position in it,
/// and their own floor once it is dropped.
fn each_node_has_its_own_wal_positions(place: &Place) {
    let a = place.open_as("a");
    let b = place.open_as("b");
    let t = a.create_table(new_table("cpu")).unwrap();
    a.commit_files(t.id, vec![file("cpu/a.parquet")], 10)
        .unwrap();
    b.commit_files(t.id, vec![file("cpu/b.parquet")], 3)
        .unwrap();
    a.commit_files(t.id, vec![], 7).unwrap();
    assert_eq!(a.table("cpu").unwrap().unwrap().persisted_seq, 10);
    assert_eq!(b.table("cpu").unwrap().unwrap().persisted_seq, 3);
    assert_eq!(b.tables().unwrap()[0].persisted_seq, 3);
    assert_eq!(a.files(t.id).unwrap().len(), 2);
    // What a query reads: the files with each node's position, from any node.
    let positions = BTreeMap::from([("a".to_string(), 10), ("b".to_string(), 3)]);
    let (files, at) = b.files_and_positions(t.id).unwrap();
    assert_eq!((files.len(), &at), (2, &positions));
    let other = a.create_table(new_table("mem")).unwrap();
    let all = a.all_files_and_positions().unwrap();
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![t.id]);
    assert_eq!(all[&t.id].0, files);
    assert_eq!(all[&t.id].1, positions);
    assert!(
        !all.contains_key(&other.id),
        "a table with neither is absent"
    );
    assert_eq!(
        (
            a.max_persisted_seq().unwrap(),
            b.max_persisted_seq().unwrap()
        ),
        (10, 3)
    );
    let (dropped, files) = b.drop_table("cpu").unwrap();
    assert_eq!((dropped.persisted_seq, files.len()), (3, 2));
    assert_eq!(
        (
            a.max_persisted_seq().unwrap(),
            b.max_persisted_seq().unwrap()
        ),
        (10, 3),
        "each node's floor outlives the table"
    );
    assert_eq!(place.open_as("c").max_persisted_seq().unwrap(), 0);
}

fn nodes_register_heartbeat_and_stop(place: &Place) {
    let c = place.open();
    let node = |id: &str, started: i64| NodeInfo {
        id: id.into(),
        modes: "ingest,query,compact".into(),
        addresses: "{\"pg\":\"127.0.0.1:5433\"}".into(),
        started_at_ns: started,
        last_heartbeat_ns: started,
        stopped: false,
    };
    c.register_node(&node("b", 10)).unwrap();
    c.register_node(&node("a", 20)).unwrap();
    c.heartbeat("a", 25).unwrap();
    c.stop_node("b", 30).unwrap();
    assert!(c.heartbeat("nope", 1).is_err());
    let nodes = place.open().nodes().unwrap();
    assert_eq!(
        nodes,
        vec![
            NodeInfo {
                last_heartbeat_ns: 25,
                ..node("a", 20)
            },
            NodeInfo {
                last_heartbeat_ns: 30,
                stopped: true,
                ..node("b", 10)
            },
        ]
    );
    // A node that starts again is no longer stopped.
    c.register_node(&node("b", 40)).unwrap();
    assert_eq!(c.nodes().unwrap()[1], node("b", 40));
}

/// A catalog from before nodes (SQLite layout 7): the first node to open it
/// takes over its WAL positions; another node starts from none.
#[test]
fn a_sqlite_catalog_from_before_nodes_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        let v7: String = MIGRATIONS
            .iter()
            .filter(|(v, _)| *v <= 7)
            .map(|(_, m)| *m)
            .collect();
        conn.execute_batch(&format!(
            "{SCHEMA_V1} {v7} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 7; \
             INSERT INTO tables (name, columns, time_column, options, created_at_ns, persisted_seq) \
             VALUES ('cpu', '[]', 'time', '{{\"retention_secs\":null,\"partition_secs\":3600}}', 1, 42); \
             UPDATE seq_floor SET seq = 50; \
             INSERT INTO invalidations VALUES (9, 60, 4);"
        ))
        .unwrap();
    }
    let c = SqliteCatalog::open(&path).unwrap().for_node("n1").unwrap();
    assert_eq!(c.table("cpu").unwrap().unwrap().persisted_seq, 42);
    assert_eq!(c.max_persisted_seq().unwrap(), 50);
    // Its invalidations (layout 10 adds their node) are n1's too.
    assert_eq!(
        c.invalidations().unwrap(),
        vec![Invalidation {
            view_id: 9,
            node: "n1".into(),
            bucket_ns: 60,
            generation: 4
        }]
    );
    let other = SqliteCatalog::open(&path).unwrap().for_node("n2").unwrap();
    assert_eq!(other.table("cpu").unwrap().unwrap().persisted_seq, 0);
    assert_eq!(other.max_persisted_seq().unwrap(), 0);
}

/// The same for PostgreSQL layout 1, upgraded in place to layout 2.
#[test]
fn a_postgres_catalog_from_before_nodes_is_upgraded_and_adopted() {
    let place = Place::postgres();
    let Place::Postgres(url) = &place else {
        unreachable!()
    };
    admin(
        url,
        &format!(
            "{} INSERT INTO sextant.meta VALUES ('layout', 1); \
             INSERT INTO sextant.tables (name, columns, time_column, options, created_at_ns, persisted_seq) \
             VALUES ('cpu', '[]', 'time', '{{\"retention_secs\":null,\"partition_secs\":3600}}', 1, 42); \
             UPDATE sextant.seq_floor SET seq = 50;",
            crate::postgres::LAYOUT_V1
        ),
    );
    let c = place.open_as("n1");
    assert_eq!(c.table("cpu").unwrap().unwrap().persisted_seq, 42);
    assert_eq!(c.max_persisted_seq().unwrap(), 50);
    assert_eq!(place.open_as("n2").max_persisted_seq().unwrap(), 0);
    assert!(c.nodes().unwrap().is_empty());
}

/// A change one connection commits moves the other's change counter; its
/// own changes and plain reads do not move its own.
#[test]
fn other_connections_changes_are_notified() {
    let place = Place::postgres();
    let a = place.open_as("a");
    let b = place.open_as("b");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut changes = a.changes().expect("PostgreSQL notifies changes");
    // The listening connection is up once a change of b's arrives.
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            for n in 0.. {
                b.create_user(&StoredUser {
                    name: format!("u{n}"),
                    body: "{}".into(),
                    created_at_ns: 1,
                })
                .ok();
                if tokio::time::timeout(std::time::Duration::from_millis(200), changes.changed())
                    .await
                    .is_ok()
                {
                    return;
                }
            }
        })
        .await
        .expect("a change of b's reached a within 10 s");
    });
    let seen = *changes.borrow_and_update();
    a.create_table(new_table("cpu")).unwrap();
    a.tables().unwrap();
    b.tables().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !changes.has_changed().unwrap(),
        "its own change or a read notified it"
    );
    b.drop_table("cpu").unwrap();
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
            .await
            .expect("b's drop reached a")
            .unwrap();
    });
    assert!(*changes.borrow() > seen);
    assert!(place_sqlite_has_no_changes());
}

fn place_sqlite_has_no_changes() -> bool {
    Place::sqlite().open().changes().is_none()
}

fn a_lease_is_held_renewed_and_taken_over_once_expired(place: &Place) {
    let a = place.open_as("a");
    let b = place.open_as("b");
    assert!(a.hold_lease("lifecycle", "a", 100, 10).unwrap());
    assert!(
        !b.hold_lease("lifecycle", "b", 105, 10).unwrap(),
        "a holds it"
    );
    assert!(
        a.hold_lease("lifecycle", "a", 108, 10).unwrap(),
        "renewed to 118"
    );
    assert!(
        !b.hold_lease("lifecycle", "b", 115, 10).unwrap(),
        "still a's"
    );
    assert!(
        b.hold_lease("lifecycle", "b", 119, 10).unwrap(),
        "expired: b takes it"
    );
    assert!(!a.hold_lease("lifecycle", "a", 120, 10).unwrap(), "now b's");
    assert!(a.hold_lease("alerts", "a", 120, 10).unwrap(), "another job");
    assert_eq!(
        a.leases().unwrap(),
        vec![
            Lease {
                name: "alerts".into(),
                holder: "a".into(),
                acquired_at_ns: 120,
                expires_at_ns: 130
            },
            Lease {
                name: "lifecycle".into(),
                holder: "b".into(),
                acquired_at_ns: 119,
                expires_at_ns: 129
            },
        ]
    );
}
