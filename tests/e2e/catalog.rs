//! The server on a catalog in PostgreSQL (`--catalog postgres://...`), a
//! real PostgreSQL 15 (`SEXTANT_TEST_POSTGRES`, which tests/run-all.sh
//! starts): tables from SQL and from line protocol, new columns, views,
//! alerts, compaction and a `kill -9` leave the same answers and the same
//! catalog rows in PostgreSQL; nothing is kept in a SQLite file; an
//! unreachable catalog database stops the start with a message naming it.

use sextant_tests::{Server, http_post, start_expecting_failure, text_rows};

/// A database of its own on the test server; its URL.
async fn fresh_database(name: &str) -> String {
    let base = std::env::var("SEXTANT_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "SEXTANT_TEST_POSTGRES is not set: tests/run-all.sh starts PostgreSQL 15 and sets it \
             (or set it to postgres://user@host:port of a server where the user may create databases)"
        )
    });
    let db = format!("e2e_{name}_{}", std::process::id());
    let (client, connection) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {base}: {e}"));
    tokio::spawn(connection);
    // One statement per query: neither may run inside a transaction block.
    for sql in [
        format!("DROP DATABASE IF EXISTS {db}"),
        format!("CREATE DATABASE {db}"),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }
    format!("{base}/{db}")
}

async fn catalog_rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    text_rows(&client, sql).await
}

const SUMMARY: &str = "SELECT host, count(*), sum(v) FROM m GROUP BY host ORDER BY host";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_a_postgres_catalog_keeps_everything_there() {
    let url = fresh_database("server").await;
    let mut server = Server::start(&["--catalog", &url]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, v BIGINT) WITH (retention = '3650 days'); \
             INSERT INTO m SELECT to_timestamp(1704067200 + value), 'h' || (value % 3)::TEXT, value \
             FROM generate_series(1, 300); \
             FLUSH TABLE m; \
             INSERT INTO m VALUES ('2024-01-01T00:30:00Z', 'h9', 1000); \
             FLUSH TABLE m; \
             CREATE VIEW busy AS SELECT host FROM m WHERE v > 100; \
             CREATE INDEX ON m (host)",
        )
        .await
        .unwrap();
    let lp = http_post(
        server.http_addr(),
        "/api/v2/write?precision=s",
        &[],
        b"cpu,host=a usage=1 1704067200\ncpu,host=b usage=2,extra=3i 1704067201\n",
    )
    .unwrap();
    assert_eq!(lp.status, 204, "{lp:?}");
    let before = text_rows(&client, SUMMARY).await;
    assert_eq!(before.len(), 4);
    assert_eq!(
        text_rows(&client, "COMPACT TABLE m").await.len(),
        0,
        "COMPACT returns no rows"
    );
    drop(client);

    // The catalog is in PostgreSQL, not in the data directory.
    assert!(!server.data_dir().join("catalog.sqlite").exists());
    assert_eq!(
        catalog_rows(&url, "SELECT name FROM sextant.tables ORDER BY name").await,
        vec![vec!["cpu".to_string()], vec!["m".to_string()]]
    );
    assert_eq!(
        catalog_rows(&url, "SELECT count(*)::TEXT FROM sextant.files f JOIN sextant.tables t ON t.id = f.table_id WHERE t.name = 'm'").await,
        vec![vec!["1".to_string()]],
        "two flushes compacted into one file"
    );
    let columns = catalog_rows(
        &url,
        "SELECT columns FROM sextant.tables WHERE name = 'cpu'",
    )
    .await;
    assert!(columns[0][0].contains("\"extra\""), "{columns:?}");

    server.kill9();
    server.restart();
    let client = server.connect().await;
    assert_eq!(text_rows(&client, SUMMARY).await, before);
    assert_eq!(
        text_rows(&client, "SELECT host, usage, extra FROM cpu ORDER BY host").await,
        vec![
            vec!["a".to_string(), "1".to_string(), "NULL".to_string()],
            vec!["b".to_string(), "2".to_string(), "3".to_string()],
        ]
    );
    assert_eq!(
        text_rows(&client, "SELECT count(*) FROM busy").await,
        vec![vec!["201".to_string()]]
    );
    // The index was recorded in the catalog, and is there to drop.
    client.batch_execute("DROP INDEX m_host_idx").await.unwrap();
    assert_eq!(
        catalog_rows(&url, "SELECT count(*)::TEXT FROM sextant.indexes").await,
        vec![vec!["0".to_string()]]
    );
}

#[test]
fn an_unreachable_catalog_database_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = start_expecting_failure(
        dir.path(),
        &["--catalog", "postgres://sextant:secret@127.0.0.1:1/catalog"],
    );
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot open the catalog in PostgreSQL (--catalog)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password is in the message: {stderr}"
    );
}
