//! Losing the machine: with the Parquet files on an object store outside
//! the data directory, a node whose disk is gone (WAL, SQLite catalog and
//! all) is replaced by a new node on an empty data directory and the same
//! store, which restores the catalog from the snapshot the old one kept
//! there (`_catalog/`) and serves every table, view, alert, user and
//! persisted row; the log says how many acknowledged rows were only in the
//! lost WAL.

use std::time::{Duration, Instant};

use sextant_tests::{Server, http_post, start_expecting_failure, text_rows};

/// One value of `sql`'s first row.
async fn one(client: &tokio_postgres::Client, sql: &str) -> String {
    text_rows(client, sql).await[0][0].clone()
}

/// Waits until the manifest of the catalog snapshot in `objects` says
/// `unpersisted_rows` is `rows` and lists `tables` tables.
fn wait_for_snapshot(objects: &std::path::Path, tables: u64, rows: u64) -> serde_json::Value {
    let path = objects.join("_catalog/manifest.json");
    let started = Instant::now();
    loop {
        let manifest: Option<serde_json::Value> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(m) = &manifest
            && m["tables"] == tables
            && m["unpersisted_rows"] == rows
        {
            return m.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no snapshot with {tables} tables and {rows} unpersisted rows after 30 s; last manifest: {manifest:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_restores_the_catalog_from_the_object_store() {
    let objects = tempfile::tempdir().expect("object directory");
    let store = format!("file://{}", objects.path().display());
    let args = [
        "--object-store",
        &store,
        "--catalog-snapshot-interval",
        "1s",
    ];
    let mut old = Server::start(&args);
    let c = old.connect().await;
    c.batch_execute(
        "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, v BIGINT);
         INSERT INTO m VALUES ('2026-01-01T00:00:00Z', 'a', 1), ('2026-01-01T00:10:00Z', 'b', 2);
         FLUSH TABLE m;
         INSERT INTO m VALUES ('2026-01-01T00:20:00Z', 'a', 3), ('2026-01-01T01:10:00Z', 'c', 4);
         FLUSH TABLE m;
         INSERT INTO m VALUES ('2026-01-01T00:30:00Z', 'b', 5);
         FLUSH TABLE m;
         COMPACT TABLE m;
         CREATE MATERIALIZED VIEW m_hourly AS
           SELECT date_bin(INTERVAL '1 hour', time) AS time, host, count(*) AS n, sum(v) AS total
           FROM m GROUP BY 1, 2;
         REFRESH MATERIALIZED VIEW m_hourly;
         CREATE VIEW big AS SELECT * FROM m WHERE v > 2;
         CREATE ALERT too_many AS SELECT host, count(*) AS n FROM m GROUP BY host HAVING count(*) > 100
           EVERY '1 minute' NOTIFY WEBHOOK 'http://127.0.0.1:9/hook';",
    )
    .await
    .expect("set up the old node");
    let r = http_post(
        old.http_addr(),
        "/api/v2/write?bucket=b&precision=s",
        &[],
        b"lp,host=a v=1 1767225600\nlp,host=b v=2 1767225601\n",
    )
    .expect("line protocol");
    assert_eq!(r.status, 204, "{}", r.body);
    c.batch_execute(
        "FLUSH TABLE lp;
         CREATE USER root WITH SUPERUSER PASSWORD 'root-pw';
         CREATE USER bob WITH PASSWORD 'b';
         GRANT SELECT ON TABLE m TO bob;",
    )
    .await
    .expect("flush and users");
    drop(c);
    let c = old
        .connect_as("root", "root-pw")
        .await
        .expect("root logs in");
    // Acknowledged, never persisted: only in the WAL that will be lost.
    c.batch_execute(
        "INSERT INTO m VALUES ('2026-01-01T02:00:00Z', 'z', 100), ('2026-01-01T02:00:01Z', 'z', 101), ('2026-01-01T02:00:02Z', 'z', 102)",
    )
    .await
    .expect("rows the lost disk takes with it");
    // The view is refreshed from them: its Parquet files, which the catalog
    // copy lists, are now ahead of its base's.
    c.batch_execute("REFRESH MATERIALIZED VIEW m_hourly")
        .await
        .expect("refresh the view");
    assert_eq!(
        one(&c, "SELECT count(*) FROM m_hourly WHERE host = 'z'").await,
        "1"
    );
    let expected = (
        one(&c, "SELECT count(*) FROM m WHERE host <> 'z'").await,
        one(&c, "SELECT CAST(sum(v) AS BIGINT) FROM m WHERE host <> 'z'").await,
        text_rows(&c, "SELECT host, v FROM lp ORDER BY host").await,
        // The view's query over what the new node will have.
        text_rows(
            &c,
            "SELECT host, CAST(sum(v) AS BIGINT) FROM m WHERE host <> 'z' \
             GROUP BY date_bin(INTERVAL '1 hour', time), host \
             ORDER BY date_bin(INTERVAL '1 hour', time), host",
        )
        .await,
    );
    drop(c);
    let manifest = wait_for_snapshot(objects.path(), 3, 3);
    println!("snapshot manifest before the loss: {manifest}");

    // The machine is lost: the process and its whole data directory.
    old.kill9();
    std::fs::remove_dir_all(old.data_dir()).expect("lose the data directory");

    // Without snapshots, a new node refuses the store's files it cannot
    // read rather than starting empty.
    let bare = tempfile::tempdir().expect("data directory");
    let (status, stderr) = start_expecting_failure(
        bare.path(),
        &[
            "--object-store",
            &store,
            "--catalog-snapshot-interval",
            "0s",
        ],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("holds Parquet files"), "{stderr}");

    let new = Server::start(&args);
    let log = new.log();
    let restored = log
        .lines()
        .find(|l| l.contains("restored it from the snapshot on the object store"))
        .unwrap_or_else(|| panic!("the new node did not say it restored the catalog:\n{log}"));
    println!("{restored}");
    assert!(
        restored.contains("3 acknowledged rows were in the old node's WAL and write buffer only"),
        "{restored}"
    );

    let c = new
        .connect_as("root", "root-pw")
        .await
        .expect("root logs in");
    assert_eq!(one(&c, "SELECT count(*) FROM m").await, expected.0);
    assert_eq!(
        one(&c, "SELECT CAST(sum(v) AS BIGINT) FROM m").await,
        expected.1
    );
    assert_eq!(
        text_rows(&c, "SELECT host, v FROM lp ORDER BY host").await,
        expected.2
    );
    // The restored view's files held the bucket the old node refreshed
    // from rows that were only in its WAL: the new node recomputed the view
    // from what was restored before it served.
    assert_eq!(
        text_rows(
            &c,
            "SELECT host, CAST(total AS BIGINT) FROM m_hourly ORDER BY time, host"
        )
        .await,
        expected.3
    );
    assert!(
        new.log().contains("materialized view refreshed in full"),
        "{}",
        new.log()
    );
    assert_eq!(one(&c, "SELECT count(*) FROM big").await, "3");
    assert_eq!(
        one(
            &c,
            "SELECT count(*) FROM system.alerts WHERE alert_name = 'too_many'"
        )
        .await,
        "1"
    );
    // Every file the catalog lists is there and whole (compaction's
    // replaced files were not deleted before a snapshot stopped naming
    // them).
    for row in text_rows(&c, "CHECK TABLE m, lp, m_hourly").await {
        assert_eq!(row[3], "ok", "{row:?}");
    }
    // Grants came back with the users.
    let bob = new.connect_as("bob", "b").await.expect("bob logs in");
    assert_eq!(one(&bob, "SELECT count(*) FROM m").await, expected.0);
    assert!(bob.batch_execute("SELECT * FROM lp").await.is_err());

    // The new node goes on: writes, persistence, a restart.
    c.batch_execute(
        "INSERT INTO m VALUES ('2026-01-01T03:00:00Z', 'n', 7); FLUSH TABLE m; \
         REFRESH MATERIALIZED VIEW m_hourly",
    )
    .await
    .expect("write on the new node");
    drop((c, bob));
    let mut new = new;
    new.terminate();
    new.restart();
    let c = new
        .connect_as("root", "root-pw")
        .await
        .expect("root logs in");
    let count: i64 = one(&c, "SELECT count(*) FROM m").await.parse().unwrap();
    assert_eq!(count, expected.0.parse::<i64>().unwrap() + 1);
    assert_eq!(
        one(&c, "SELECT CAST(sum(n) AS BIGINT) FROM m_hourly").await,
        count.to_string()
    );
}
