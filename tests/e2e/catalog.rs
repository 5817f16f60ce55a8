//! The server on a catalog in PostgreSQL (`--catalog postgres://...`), a
//! real PostgreSQL 15 (`SEXTANT_TEST_POSTGRES`, which tests/run-all.sh
//! starts): tables from SQL and from line protocol, new columns, views,
//! alerts, compaction and a `kill -9` leave the same answers and the same
//! catalog rows in PostgreSQL; nothing is kept in a SQLite file; an
//! unreachable catalog database stops the start with a message naming it.

use sextant_tests::{Server, http_post, message_rows, start_expecting_failure, text_rows};

/// The cluster secret every node of these tests shares.
pub(crate) const SECRET: &str = "e2e-cluster-secret-0123456789";

/// Node `id` on the shared catalog `url` and the object store `store`,
/// with `extra` flags.
pub(crate) fn node_on(url: &str, store: &str, id: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--cluster-secret",
        SECRET,
        "--catalog",
        url,
        "--object-store",
        store,
        "--node-id",
        id,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A database of its own on the test server; its URL.
pub(crate) async fn fresh_database(name: &str) -> String {
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
    let mut server = Server::start(&["--cluster-secret", SECRET, "--catalog", &url]);
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
        &[
            "--cluster-secret",
            SECRET,
            "--catalog",
            "postgres://sextant:secret@127.0.0.1:1/catalog",
        ],
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

/// Nodes register in the shared catalog with their addresses, are seen by
/// each other in `system.nodes`, record a clean stop, and keep their id in
/// their data directory (another id for it is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_in_the_shared_catalog_and_keep_their_ids() {
    let url = fresh_database("nodes").await;
    let mut alpha = Server::start(&[
        "--cluster-secret",
        SECRET,
        "--catalog",
        &url,
        "--node-id",
        "alpha",
    ]);
    let beta = Server::start(&[
        "--cluster-secret",
        SECRET,
        "--catalog",
        &url,
        "--node-id",
        "beta",
    ]);
    assert_eq!(
        std::fs::read_to_string(alpha.data_dir().join("node-id")).unwrap(),
        "alpha\n"
    );
    let nodes =
        "SELECT node_id, modes, pg_addr, http_addr, state FROM system.nodes ORDER BY node_id";
    let client = beta.connect().await;
    assert_eq!(
        text_rows(&client, nodes).await,
        vec![
            vec![
                "alpha".to_string(),
                "ingest,query,compact".to_string(),
                alpha.pg_addr().to_string(),
                alpha.http_addr().to_string(),
                "up".to_string()
            ],
            vec![
                "beta".to_string(),
                "ingest,query,compact".to_string(),
                beta.pg_addr().to_string(),
                beta.http_addr().to_string(),
                "up".to_string()
            ],
        ]
    );

    let status = tokio::task::block_in_place(|| alpha.terminate());
    assert!(status.success(), "{status}");
    assert_eq!(
        text_rows(
            &client,
            "SELECT node_id, state FROM system.nodes ORDER BY node_id"
        )
        .await,
        vec![
            vec!["alpha".to_string(), "stopped".to_string()],
            vec!["beta".to_string(), "up".to_string()],
        ]
    );
    // The data directory is alpha's.
    let (status, stderr) = start_expecting_failure(
        alpha.data_dir(),
        &[
            "--cluster-secret",
            SECRET,
            "--catalog",
            &url,
            "--node-id",
            "beta",
        ],
    );
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("belongs to node alpha"),
        "the refusal names the node: {stderr}"
    );
    tokio::task::block_in_place(|| alpha.restart());
    assert_eq!(
        text_rows(
            &client,
            "SELECT state FROM system.nodes WHERE node_id = 'alpha'"
        )
        .await,
        vec![vec!["up".to_string()]]
    );
}

/// Polls `sql` on `client` until it answers `want` (10 s at most).
pub(crate) async fn eventually_rows(
    client: &tokio_postgres::Client,
    sql: &str,
    want: Vec<Vec<String>>,
) {
    eventually_rows_within(client, sql, want, 10).await
}

/// [`eventually_rows`], waiting `secs` at most.
pub(crate) async fn eventually_rows_within(
    client: &tokio_postgres::Client,
    sql: &str,
    want: Vec<Vec<String>>,
    secs: u64,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let got = match client.simple_query(sql).await {
            Ok(messages) => message_rows(messages),
            Err(e) => vec![vec![format!(
                "error: {}",
                e.as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string())
            )]],
        };
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: {got:?} after {secs} s, want {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub(crate) fn rows(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect()
}

/// Two nodes on one catalog and one object store: a table created, written
/// and flushed on one is read on the other, a column added on one is seen
/// on the other, a drop too, and a user created on one logs in on the
/// other; each within moments (the catalog notifies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_commits_the_other_sees() {
    let url = fresh_database("follow").await;
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let a = node_on(&url, &store, "a", &[]);
    let b = node_on(&url, &store, "b", &[]);
    let on_a = a.connect().await;
    let on_b = b.connect().await;
    on_a.batch_execute(
        "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, v BIGINT); \
         INSERT INTO m VALUES ('2024-01-01T00:00:00Z', 'x', 1), ('2024-01-01T00:00:01Z', 'y', 2); \
         FLUSH TABLE m",
    )
    .await
    .unwrap();
    eventually_rows(
        &on_b,
        "SELECT count(*), sum(v) FROM m",
        rows(&[&["2", "3"]]),
    )
    .await;

    // b writes too; after its flush a reads both nodes' files.
    on_b.batch_execute("INSERT INTO m VALUES ('2024-01-01T00:00:02Z', 'z', 4); FLUSH TABLE m")
        .await
        .unwrap();
    eventually_rows(
        &on_a,
        "SELECT count(*), sum(v) FROM m",
        rows(&[&["3", "7"]]),
    )
    .await;

    // A column added on b by line protocol.
    let lp = http_post(
        b.http_addr(),
        "/api/v2/write?precision=s",
        &[],
        b"m,host=w v=8i,extra=1.5 1704067203\n",
    )
    .unwrap();
    assert_eq!(lp.status, 204, "{lp:?}");
    eventually_rows(
        &on_a,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'm' ORDER BY ordinal_position",
        rows(&[&["time"], &["host"], &["v"], &["extra"]]),
    )
    .await;

    on_a.batch_execute("DROP TABLE m").await.unwrap();
    eventually_rows(
        &on_b,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'm'",
        rows(&[&["0"]]),
    )
    .await;

    on_b.batch_execute("CREATE USER alice WITH PASSWORD 'secret-pw' SUPERUSER")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.connect_as("alice", "secret-pw").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "alice cannot log in on a"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Compaction and retention run on one node at a time, the holder of the
/// `lifecycle` lease: it compacts the files another node persisted; when it
/// dies (kill -9), another node takes the lease once it has expired (three
/// passes) and compacts from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_lease_moves_to_another_node_when_its_holder_dies() {
    let url = fresh_database("lease").await;
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let lifecycle = ["--lifecycle-interval", "1s", "--compaction-min-files", "3"];
    // a only compacts: when it dies, no query needs its buffer.
    let mut a = node_on(
        &url,
        &store,
        "a",
        &[&["--mode", "query,compact"][..], &lifecycle].concat(),
    );
    let on_a = a.connect().await;
    eventually_rows(
        &on_a,
        "SELECT job, holder FROM system.leases WHERE job = 'lifecycle'",
        rows(&[&["lifecycle", "a"]]),
    )
    .await;
    let b = node_on(&url, &store, "b", &lifecycle);
    let on_b = b.connect().await;
    on_b.batch_execute("CREATE TABLE m (time TIMESTAMP NOT NULL, v BIGINT)")
        .await
        .unwrap();
    for i in 0..3 {
        on_b.batch_execute(&format!(
            "INSERT INTO m VALUES ('2024-01-01T00:00:0{i}Z', {i}); FLUSH TABLE m"
        ))
        .await
        .unwrap();
    }
    // a compacts b's three files.
    let runs =
        "SELECT count(*) FROM system.compactions WHERE table_name = 'm' AND trigger = 'background'";
    eventually_rows(&on_b, runs, rows(&[&["1"]])).await;
    eventually_rows(
        &on_b,
        "SELECT count(*), sum(v) FROM m",
        rows(&[&["3", "3"]]),
    )
    .await;
    assert!(
        a.log().contains("compacted"),
        "a compacted:\n{}",
        a.log_tail(20)
    );
    assert!(
        !b.log().contains("compacted"),
        "b compacted too:\n{}",
        b.log_tail(20)
    );
    assert_eq!(
        text_rows(
            &on_b,
            "SELECT holder FROM system.leases WHERE job = 'lifecycle'"
        )
        .await,
        rows(&[&["a"]]),
        "a renews its lease"
    );

    drop(on_a);
    a.kill9();
    eventually_rows(
        &on_b,
        "SELECT job, holder FROM system.leases WHERE job = 'lifecycle'",
        rows(&[&["lifecycle", "b"]]),
    )
    .await;
    assert!(b.log().contains("lease taken"), "{}", b.log_tail(20));
    for i in 3..6 {
        on_b.batch_execute(&format!(
            "INSERT INTO m VALUES ('2024-01-01T00:00:0{i}Z', {i}); FLUSH TABLE m"
        ))
        .await
        .unwrap();
    }
    eventually_rows(&on_b, runs, rows(&[&["2"]])).await;
    eventually_rows(
        &on_b,
        "SELECT count(*), sum(v) FROM m",
        rows(&[&["6", "15"]]),
    )
    .await;
}

/// An alert rule on two nodes is evaluated on one, the holder of the
/// `alerts` lease, and fires once: created on the other node, it reaches
/// the holder through the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_rule_on_two_nodes_fires_once() {
    let url = fresh_database("alert").await;
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let receiver = crate::alerts::Receiver::start();
    let a = node_on(&url, &store, "a", &[]);
    let on_a = a.connect().await;
    eventually_rows(
        &on_a,
        "SELECT holder FROM system.leases WHERE job = 'alerts'",
        rows(&[&["a"]]),
    )
    .await;
    let b = node_on(&url, &store, "b", &[]);
    let on_b = b.connect().await;
    on_a.batch_execute(
        "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION); \
         INSERT INTO cpu VALUES (now(), 'web-1', 99); FLUSH TABLE cpu",
    )
    .await
    .unwrap();
    eventually_rows(&on_b, "SELECT count(*) FROM cpu", rows(&[&["1"]])).await;
    on_b.batch_execute(&format!(
        "CREATE ALERT hot AS SELECT host, max(usage) AS peak FROM cpu WHERE usage > 90 GROUP BY host \
         EVERY '1 second' NOTIFY WEBHOOK '{}' WITH (retries = 0)",
        receiver.url()
    ))
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while receiver.bodies().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no notification within 15 s\n{}\n{}",
            a.log_tail(20),
            b.log_tail(20)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Several evaluations later (every second), still the one notification.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    assert_eq!(bodies[0]["status"], "firing", "{bodies:#?}");
    assert_eq!(
        text_rows(&on_a, "SELECT count(*) FROM system.alert_events WHERE event = 'transition' AND to_state = 'firing'").await,
        rows(&[&["1"]])
    );
}

/// The connection to the catalog database over TLS (tests/postgres.sh
/// serves TLS with a certificate its own authority signed): with
/// `--catalog-ca` and `sslmode=require` every connection of the node is
/// encrypted, as PostgreSQL's `pg_stat_ssl` shows, and the node works; an
/// authority that did not sign the server's certificate stops the start
/// with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_connection_is_tls_verified_against_catalog_ca() {
    let ca = std::env::var("SEXTANT_TEST_POSTGRES_CA").unwrap_or_else(|_| {
        panic!(
            "SEXTANT_TEST_POSTGRES_CA is not set: tests/run-all.sh sets it to the authority \
             of the server tests/postgres.sh starts (DIR/ca.pem)"
        )
    });
    let url = fresh_database("tls").await;
    let (base, db) = url.rsplit_once('/').unwrap();
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let tls_url = format!("{url}?sslmode=require");
    let a = node_on(&tls_url, &store, "a", &["--catalog-ca", &ca]);
    let on_a = a.connect().await;
    on_a.batch_execute(
        "CREATE TABLE m (time TIMESTAMP NOT NULL, v BIGINT); \
         INSERT INTO m VALUES ('2024-01-01T00:00:00Z', 1); FLUSH TABLE m",
    )
    .await
    .unwrap();
    assert!(a.log().contains("tls=true"), "{}", a.log_tail(20));
    // The node's connections (its catalog connection and the one that
    // listens for other nodes' changes), as the server sees them.
    let connections = format!(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{db}'"
    );
    let got = catalog_rows(&format!("{base}/postgres"), &connections).await;
    assert_eq!(got, rows(&[&["2", "0"]]), "encrypted, plain");
    assert_eq!(
        catalog_rows(&url, "SELECT count(*) FROM sextant.files").await,
        rows(&[&["1"]])
    );

    // An authority that did not sign the server's certificate.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=another-ca", "-keyout"])
        .arg(other.path().join("ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let data = tempfile::tempdir().unwrap();
    let (status, stderr) = start_expecting_failure(
        data.path(),
        &[
            "--cluster-secret",
            SECRET,
            "--catalog",
            &tls_url,
            "--catalog-ca",
            other_ca.to_str().unwrap(),
        ],
    );
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot open the catalog in PostgreSQL (--catalog)")
            && stderr.contains("invalid peer certificate"),
        "{stderr}"
    );
}
