//! Basic behaviour of a fresh server: it answers `/health`, stores and returns
//! rows over pgwire, shuts down cleanly on SIGTERM keeping its data, and
//! reports SQL errors with the right SQLSTATE without losing the connection,
//! and refuses to listen beyond loopback unauthenticated unless told to.

use std::time::Duration;

use sextant_tests::{Server, http_get};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

const CREATE_T: &str = "CREATE TABLE t (time TIMESTAMP NOT NULL, writer BIGINT, n BIGINT)";

/// Inserted deliberately out of time order; `ORDER BY time` must sort them.
const INSERT_3: &str = "INSERT INTO t VALUES \
     ('2026-01-01T00:00:03Z', 1, 30), \
     ('2026-01-01T00:00:01.000000001Z', 1, 10), \
     ('2026-01-01T00:00:02Z', 2, 20)";

/// `(writer, n)` of the three rows in time order.
const EXPECTED: [(i64, i64); 3] = [(1, 10), (2, 20), (1, 30)];

async fn rows_in_time_order(client: &Client) -> Vec<(i64, i64)> {
    client
        .query("SELECT writer, n FROM t ORDER BY time", &[])
        .await
        .expect("SELECT writer, n FROM t ORDER BY time")
        .iter()
        .map(|row| {
            let writer: i64 = row.try_get(0).expect("writer is a BIGINT");
            let n: i64 = row.try_get(1).expect("n is a BIGINT");
            (writer, n)
        })
        .collect()
}

async fn count(client: &Client, sql: &str) -> i64 {
    let row = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    row.try_get(0)
        .unwrap_or_else(|e| panic!("{sql}: count is not a BIGINT: {e:?}"))
}

/// The stored timestamps: text through the simple protocol, and nanosecond
/// precision checked by exact comparisons.
async fn check_times(client: &Client) {
    let messages = client
        .simple_query("SELECT time FROM t ORDER BY time")
        .await
        .expect("SELECT time FROM t ORDER BY time");
    let times: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some(row.get(0).expect("time is not NULL").to_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(times.len(), 3, "times: {times:?}");
    for (time, second) in times.iter().zip(["00:00:01", "00:00:02", "00:00:03"]) {
        assert!(
            time.contains("2026-01-01") && time.contains(second),
            "expected a timestamp on 2026-01-01 at {second}, got {time:?} (all: {times:?})"
        );
    }
    assert_eq!(
        count(
            client,
            "SELECT count(*) FROM t WHERE time = '2026-01-01T00:00:01.000000001Z'"
        )
        .await,
        1,
        "the nanosecond of 2026-01-01T00:00:01.000000001Z was not kept"
    );
    assert_eq!(
        count(
            client,
            "SELECT count(*) FROM t WHERE time = '2026-01-01T00:00:01Z'"
        )
        .await,
        0,
        "2026-01-01T00:00:01.000000001Z compares equal to 00:00:01"
    );
}

/// Closes a client and gives its connection task a moment to send Terminate,
/// so the server sees no idle session while it shuts down.
async fn close(client: Client) {
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[test]
fn health_answers_200() {
    let server = Server::start(&[]);
    let response = http_get(server.http_addr(), "/health")
        .unwrap_or_else(|e| panic!("GET /health on {}: {e}", server.http_addr()));
    assert_eq!(response.status, 200, "GET /health answered {response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_survive_sigterm_and_restart() {
    let mut server = Server::start(&[]);
    let client = server.connect().await;
    client.batch_execute(CREATE_T).await.expect(CREATE_T);
    let inserted = client.execute(INSERT_3, &[]).await.expect("INSERT 3 rows");
    assert_eq!(inserted, 3, "INSERT of 3 rows reported {inserted} rows");

    assert_eq!(rows_in_time_order(&client).await, EXPECTED);
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 3);
    check_times(&client).await;
    close(client).await;

    let status = tokio::task::block_in_place(|| server.terminate());
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must shut down cleanly with exit status 0, got {status}\n{}",
        server.log_tail(40)
    );
    let log = server.log().to_lowercase();
    assert!(
        ["shutdown", "shut down", "shutting down"]
            .iter()
            .any(|w| log.contains(w)),
        "the log does not mention the shutdown:\n{}",
        server.log_tail(40)
    );

    tokio::task::block_in_place(|| server.restart());
    let client = server.connect().await;
    assert_eq!(
        rows_in_time_order(&client).await,
        EXPECTED,
        "rows after a clean restart"
    );
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 3);
    check_times(&client).await;
}

/// What the catalog functions say about the server is true of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_functions_describe_this_server() {
    let server = Server::start(&[]);
    let client = server.connect().await;
    let row = client
        .query_one("SELECT inet_server_port(), pg_backend_pid()", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        i32::from(server.pg_addr().port()),
        "inet_server_port() is the port the client connected to"
    );
    let started: String = client
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again: String = client
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(started, again, "the server started once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_error_has_sqlstate_and_connection_survives() {
    let server = Server::start(&[]);
    let client = server.connect().await;

    // Extended protocol (what `query` uses).
    let err = client
        .query("SELECT * FROM no_such_table", &[])
        .await
        .expect_err("SELECT from a missing table must fail");
    assert_eq!(
        err.code(),
        Some(&SqlState::UNDEFINED_TABLE),
        "SELECT from a missing table (extended protocol): {err:?}"
    );
    // Simple protocol (what psql uses).
    let err = client
        .simple_query("SELECT * FROM no_such_table")
        .await
        .expect_err("SELECT from a missing table must fail");
    assert_eq!(
        err.code(),
        Some(&SqlState::UNDEFINED_TABLE),
        "SELECT from a missing table (simple protocol): {err:?}"
    );

    assert!(!client.is_closed(), "the error closed the connection");
    let two: i64 = client
        .query_one("SELECT 1 + 1", &[])
        .await
        .expect("SELECT 1 + 1 after an error")
        .try_get(0)
        .expect("1 + 1 is a BIGINT");
    assert_eq!(two, 2);

    // And the session still does real work.
    client.batch_execute(CREATE_T).await.expect(CREATE_T);
    client.execute(INSERT_3, &[]).await.expect("INSERT 3 rows");
    assert_eq!(rows_in_time_order(&client).await, EXPECTED);
}

/// Safe by default: with nobody authenticating, a listener beyond loopback
/// is refused at start (before the data directory is touched) unless
/// `--allow-unauthenticated` is given, which starts with a warning.
#[test]
fn listening_beyond_loopback_needs_allow_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ready = dir.path().join("ready.json");
    let command = |extra: &[&str]| {
        let mut c = std::process::Command::new(sextant_tests::sextant_bin());
        c.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--pg-addr", "127.0.0.1:0", "--http-addr", "0.0.0.0:0"])
            .args(["--grpc-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .env_remove("SEXTANT_ALLOW_UNAUTHENTICATED");
        c
    };
    let out = command(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 (--http-addr)")
            && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );

    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = command(&["--allow-unauthenticated"])
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "not ready in 60 s");
        assert!(child.try_wait().unwrap().is_none(), "sextant exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let addrs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert!(
        addrs["http"].as_str().unwrap().starts_with("0.0.0.0:"),
        "{addrs}"
    );
    // Once an admin exists every client authenticates, so the flag is no
    // longer needed.
    let pg = addrs["pg"].as_str().unwrap().to_string();
    let (host, port) = pg.rsplit_once(':').unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (client, conn) = tokio_postgres::connect(
            &format!("host={host} port={port} user=sextant dbname=sextant"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("CREATE USER root WITH SUPERUSER PASSWORD 'pw'")
            .await
            .unwrap();
    });
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(&ready).unwrap();
    let mut secured = command(&[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "not ready in 60 s");
        assert!(
            secured.try_wait().unwrap().is_none(),
            "sextant refused to start with a user"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    secured.kill().unwrap();
    secured.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("listening beyond loopback without authentication"),
        "{log}"
    );
}
