//! Storage-engine behaviour seen from a client: pruning shown by EXPLAIN,
//! the query memory limit, write-buffer limits and WAL damage at start-up.
//! (psql running the README quickstart is tests/python/test_docs_blocks.py's,
//! which reads it from the README.)

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sextant_tests::{Server, http_get, start_expecting_failure, text_rows};
use tokio_postgres::Client;

async fn one_i64(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// The `SextantScanExec` line of the physical plan of `sql`.
async fn scan_line(client: &Client, sql: &str) -> String {
    let rows = text_rows(client, &format!("EXPLAIN {sql}")).await;
    let plan = rows
        .iter()
        .find(|r| r[0] == "physical_plan")
        .map(|r| r[1].clone())
        .unwrap_or_else(|| panic!("no physical plan for {sql}: {rows:?}"));
    plan.lines()
        .find(|l| l.contains("SextantScanExec"))
        .unwrap_or_else(|| panic!("no SextantScanExec in:\n{plan}"))
        .trim()
        .to_string()
}

/// The reads the server has made of its object store (GETs, whole or
/// ranged), from `/metrics`.
fn store_reads(server: &Server) -> u64 {
    let metrics = http_get(server.http_addr(), "/metrics").expect("GET /metrics");
    metrics
        .body
        .lines()
        .filter(|l| {
            l.starts_with("sextant_object_store_request_seconds_count{")
                && (l.contains("op=\"get\"") || l.contains("op=\"get_ranges\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

const DAY: &str = "INSERT INTO day SELECT to_timestamp(1704067200 + value * 60), \
                   'h' || CAST(value % 4 AS VARCHAR), value FROM generate_series(0, 1439)";
const ONE_HOUR: &str = "SELECT count(*) FROM day WHERE time >= '2024-01-01T05:00:00Z' \
                        AND time < '2024-01-01T06:00:00Z'";

#[tokio::test]
async fn flushed_rows_are_served_from_parquet_and_pruned_by_time() {
    let mut server = Server::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE day (time TIMESTAMP NOT NULL, host TEXT, v BIGINT)")
        .await
        .unwrap();
    client.batch_execute(DAY).await.unwrap();
    client.batch_execute("FLUSH TABLE day").await.unwrap();
    drop(client);
    server.terminate();
    server.restart();
    let client = server.connect().await;

    // A file's footer is read once: the same query again reads only the
    // pages (footers and page indexes are kept, decoded, once read).
    const SUM: &str = "SELECT CAST(sum(v) AS BIGINT) FROM day WHERE v > 10";
    let before = store_reads(&server);
    assert_eq!(one_i64(&client, SUM).await, 1_036_025);
    let first = store_reads(&server) - before;
    assert_eq!(one_i64(&client, SUM).await, 1_036_025);
    let again = store_reads(&server) - before - first;
    println!("object store reads: {first} by the first query, {again} by the same again");
    assert!(
        again + 24 <= first,
        "the second query read the 24 footers again: {first} reads, then {again}"
    );

    // Served from Parquet: nothing is buffered, 24 hourly files are listed.
    assert_eq!(
        one_i64(
            &client,
            "SELECT CAST(buffered_rows AS BIGINT) FROM system.tables WHERE table_name = 'day'"
        )
        .await,
        0
    );
    assert_eq!(
        one_i64(
            &client,
            "SELECT count(*) FROM system.files WHERE table_name = 'day'"
        )
        .await,
        24
    );
    assert_eq!(one_i64(&client, ONE_HOUR).await, 60);
    assert_eq!(one_i64(&client, "SELECT count(*) FROM day").await, 1440);

    let line = scan_line(&client, ONE_HOUR).await;
    assert!(
        line.contains("files=1 scanned, 23 skipped"),
        "a one-hour query must read one file of 24: {line}"
    );
    let line = scan_line(&client, "SELECT count(*) FROM day").await;
    assert!(line.contains("files=24 scanned, 0 skipped"), "{line}");
    // Column statistics prune as well: v grows with time.
    let line = scan_line(&client, "SELECT * FROM day WHERE v >= 1380").await;
    assert!(line.contains("files=1 scanned, 23 skipped"), "{line}");

    // EXPLAIN ANALYZE runs the pruned plan and reports the same.
    let rows = text_rows(&client, &format!("EXPLAIN ANALYZE {ONE_HOUR}")).await;
    let text = rows
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("files=1 scanned, 23 skipped"), "{text}");
    // The Parquet reader's own count: one file opened of the day's 24.
    assert!(text.contains("files_opened=1,"), "{text}");
}

/// `matches_term` over three hours of logs: the answer is the same from the
/// buffer, from Parquet, after compaction and after a restart, and the
/// token index reads only the row groups that may hold the term.
#[tokio::test]
async fn a_token_search_reads_only_the_row_groups_that_hold_the_term() {
    let mut server = Server::start(&["--row-group-rows", "1000"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE logs (time TIMESTAMP NOT NULL, body TEXT); \
             INSERT INTO logs SELECT to_timestamp(1704067200 + value * 6 / 5), \
             CASE WHEN value IN (3005, 3006) THEN 'deadlock on shard ' || CAST(value AS VARCHAR) \
             WHEN value = 6000 THEN 'deadlocks are not this' \
             ELSE 'request ' || CAST(value AS VARCHAR) || ' served' END \
             FROM generate_series(0, 8999)",
        )
        .await
        .unwrap();
    const DEADLOCK: &str = "SELECT count(*) FROM logs WHERE matches_term(body, 'deadlock')";
    const LIKE: &str = "SELECT count(*) FROM logs WHERE body LIKE '%deadlock%'";
    // From the buffer (no index there): the function alone.
    assert_eq!(one_i64(&client, DEADLOCK).await, 2);
    assert_eq!(one_i64(&client, LIKE).await, 3);
    client.batch_execute("FLUSH TABLE logs").await.unwrap();
    // 3 hourly files of 3 row groups: rows 3005 and 3006 are in the
    // first row group of hour 1.
    let line = scan_line(&client, DEADLOCK).await;
    assert!(
        line.contains("files=1 scanned, 2 skipped")
            && line.contains("row_groups=2 skipped by the token index"),
        "{line}"
    );
    assert_eq!(one_i64(&client, DEADLOCK).await, 2);
    // A phrase needs all its tokens; a common token reads everything.
    assert_eq!(
        one_i64(
            &client,
            "SELECT count(*) FROM logs WHERE matches_term(body, 'shard 3006')"
        )
        .await,
        1
    );
    let line = scan_line(
        &client,
        "SELECT count(*) FROM logs WHERE matches_term(body, 'served')",
    )
    .await;
    assert!(
        line.contains("files=3 scanned, 0 skipped") && !line.contains("row_groups"),
        "{line}"
    );
    assert_eq!(
        one_i64(
            &client,
            "SELECT count(*) FROM logs WHERE matches_term(body, 'served')"
        )
        .await,
        8997
    );
    // No file holds the term: none is read, the answer is 0.
    let line = scan_line(
        &client,
        "SELECT count(*) FROM logs WHERE matches_term(body, 'panic')",
    )
    .await;
    assert!(line.contains("files=0 scanned, 3 skipped"), "{line}");
    assert_eq!(
        one_i64(
            &client,
            "SELECT count(*) FROM logs WHERE matches_term(body, 'panic')"
        )
        .await,
        0
    );
    // OR: the row groups of either; with a filter the index cannot
    // answer, every row group.
    const EITHER: &str = "SELECT count(*) FROM logs \
                          WHERE matches_term(body, 'deadlock') OR matches_term(body, 'panic')";
    let line = scan_line(&client, EITHER).await;
    assert!(
        line.contains("files=1 scanned, 2 skipped")
            && line.contains("row_groups=2 skipped by the token index"),
        "{line}"
    );
    assert_eq!(one_i64(&client, EITHER).await, 2);
    const UNKNOWN: &str = "SELECT count(*) FROM logs \
                           WHERE matches_term(body, 'deadlock') OR body = 'request 7 served'";
    let line = scan_line(&client, UNKNOWN).await;
    assert!(!line.contains("token index"), "{line}");
    assert_eq!(one_i64(&client, UNKNOWN).await, 3);
    // A buffered row is found beside the files.
    client
        .batch_execute("INSERT INTO logs VALUES ('2024-01-01T01:30:00Z', 'deadlock again')")
        .await
        .unwrap();
    assert_eq!(one_i64(&client, DEADLOCK).await, 3);
    client
        .batch_execute("FLUSH TABLE logs; COMPACT TABLE logs")
        .await
        .unwrap();
    // Hour 1's two files became one, with an index of its own.
    assert_eq!(
        one_i64(
            &client,
            "SELECT count(*) FROM system.files WHERE table_name = 'logs'"
        )
        .await,
        3
    );
    drop(client);
    server.terminate();
    server.restart();
    let client = server.connect().await;
    assert_eq!(one_i64(&client, DEADLOCK).await, 3);
    assert_eq!(one_i64(&client, LIKE).await, 4);
    let line = scan_line(&client, DEADLOCK).await;
    assert!(
        line.contains("files=1 scanned") && line.contains("skipped by the token index"),
        "{line}"
    );
    // The table's choice: no index. Hour 1's file, rewritten by the next
    // compaction, has none and is read whole; the others keep theirs; the
    // answer is the same.
    let hour_1 = |body: &str| {
        format!(
            "INSERT INTO logs VALUES ('2024-01-01T01:40:00Z', '{body}'); FLUSH TABLE logs; COMPACT TABLE logs"
        )
    };
    client
        .batch_execute("ALTER TABLE logs SET (token_index = 'off')")
        .await
        .unwrap();
    client
        .batch_execute(&hour_1("deadlock once more"))
        .await
        .unwrap();
    let line = scan_line(&client, DEADLOCK).await;
    assert!(
        line.contains("files=1 scanned, 2 skipped") && !line.contains("row_groups="),
        "{line}"
    );
    assert_eq!(one_i64(&client, DEADLOCK).await, 4);
    // Back to the default: the next rewrite indexes it again.
    client
        .batch_execute("ALTER TABLE logs RESET (token_index)")
        .await
        .unwrap();
    client
        .batch_execute(&hour_1("no deadlock here"))
        .await
        .unwrap();
    let line = scan_line(&client, DEADLOCK).await;
    assert!(
        line.contains("files=1 scanned, 2 skipped")
            && line.contains("row_groups=1 skipped by the token index"),
        "{line}"
    );
    assert_eq!(one_i64(&client, DEADLOCK).await, 5);
}

#[tokio::test]
async fn an_oversized_query_fails_with_53200_and_the_server_stays_up() {
    let server = Server::start(&["--query-memory-limit", "16MiB"]);
    let client = server.connect().await;
    // A hash join must hold its build side in memory: 4M rows do not fit in 16 MiB.
    let err = client
        .simple_query(
            "SELECT count(*) FROM generate_series(1, 4000000) a \
             JOIN generate_series(1, 4000000) b ON a.value = b.value",
        )
        .await
        .expect_err("the join cannot fit in 16 MiB");
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code().code(), "53200", "{}", db.message());
    // Same connection, next query.
    assert_eq!(
        one_i64(
            &client,
            "SELECT CAST(count(*) AS BIGINT) FROM generate_series(1, 1000)"
        )
        .await,
        1000
    );
}

#[tokio::test]
async fn a_small_write_buffer_persists_early_instead_of_growing() {
    // 2 MiB of buffer, persistence by age effectively off: only size can persist.
    let server = Server::start(&["--buffer-limit", "2MiB", "--persist-interval", "1h"]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE big (time TIMESTAMP NOT NULL, body TEXT)")
        .await
        .unwrap();
    for i in 0..20 {
        // ~0.5 MiB of text per insert.
        client
            .batch_execute(&format!(
                "INSERT INTO big SELECT to_timestamp({} + value), repeat('x', 100) \
                 FROM generate_series(1, 5000)",
                1_704_067_200 + i * 10_000
            ))
            .await
            .unwrap_or_else(|e| panic!("insert {i}: {e:?}"));
    }
    assert_eq!(one_i64(&client, "SELECT count(*) FROM big").await, 100_000);
    let files = one_i64(&client, "SELECT count(*) FROM system.files").await;
    assert!(
        files > 0,
        "the buffer limit must have triggered persistence"
    );
    let buffered = one_i64(
        &client,
        "SELECT CAST(buffered_bytes AS BIGINT) FROM system.tables WHERE table_name = 'big'",
    )
    .await;
    assert!(
        buffered <= 3 * 1024 * 1024,
        "buffer stays near its 2 MiB limit, holds {buffered} bytes"
    );
}

#[tokio::test]
async fn persistence_holds_an_eighth_of_the_buffer_limit_at_a_time_and_compaction_streams() {
    // 64 MiB of buffer: pieces of 8 MiB; about 24 MiB buffered, under the
    // half (32 MiB) at which persistence by size would start.
    let server = Server::start(&["--buffer-limit", "64MiB", "--persist-interval", "1h"]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE pieces (time TIMESTAMP NOT NULL, body TEXT)")
        .await
        .unwrap();
    for i in 0..25 {
        // ~0.9 MiB per insert, all in one hour (one partition).
        client
            .batch_execute(&format!(
                "INSERT INTO pieces SELECT to_timestamp_millis({} + value), \
                 concat(repeat('y', 100), CAST(value AS TEXT)) FROM generate_series(1, 5000)",
                1_704_067_200_000i64 + i * 60_000
            ))
            .await
            .unwrap_or_else(|e| panic!("insert {i}: {e:?}"));
    }
    let buffered = one_i64(
        &client,
        "SELECT CAST(buffered_bytes AS BIGINT) FROM system.tables WHERE table_name = 'pieces'",
    )
    .await;
    assert!(
        (16 << 20..32 << 20).contains(&buffered),
        "{buffered} bytes buffered"
    );
    client.batch_execute("FLUSH TABLE pieces").await.unwrap();
    let files = one_i64(
        &client,
        "SELECT count(*) FROM system.files WHERE table_name = 'pieces'",
    )
    .await;
    // One file per piece of at most 8 MiB (the piece that crosses 8 MiB
    // ends there).
    let least = buffered / (9 << 20);
    assert!(
        files > least && files <= buffered / (7 << 20) + 1,
        "{files} files for {buffered} bytes in pieces of 8 MiB"
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM pieces").await,
        125_000
    );
    // Compaction streams its merge: it is bounded by the files' compressed
    // bytes (these compress to almost nothing), not by their rows in
    // memory, so the partition's files of a piece each become one.
    assert!(files >= 2, "{files} files");
    client.batch_execute("COMPACT TABLE pieces").await.unwrap();
    assert_eq!(
        one_i64(
            &client,
            "SELECT count(*) FROM system.files WHERE table_name = 'pieces'",
        )
        .await,
        1,
        "compaction left the partition's files of a piece each"
    );
    assert_eq!(
        one_i64(
            &client,
            "SELECT count(*) FROM (SELECT DISTINCT body FROM pieces) AS d",
        )
        .await,
        5_000
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM pieces").await,
        125_000
    );
    assert_eq!(
        one_i64(
            &client,
            "SELECT CAST(buffered_rows AS BIGINT) FROM system.tables WHERE table_name = 'pieces'"
        )
        .await,
        0
    );
}

fn wal_segments(data: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs
}

#[tokio::test]
async fn wal_damage_at_start_up_is_cut_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE w (time TIMESTAMP NOT NULL, v BIGINT)")
        .await
        .unwrap();
    for i in 0..5 {
        client
            .batch_execute(&format!("INSERT INTO w VALUES (to_timestamp({i}), {i})"))
            .await
            .unwrap();
    }
    drop(client);
    server.kill9();

    // A torn tail (half a record) is cut back with a warning; the five rows stay.
    let last = wal_segments(&data).pop().expect("a WAL segment");
    fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&[0x52, 0x53, 1, 0, 200, 0, 0, 0, 9])
        .unwrap();
    server.restart();
    let client = server.connect().await;
    assert_eq!(one_i64(&client, "SELECT count(*) FROM w").await, 5);
    assert!(
        server.log().contains("torn"),
        "the log must warn about the torn tail"
    );
    drop(client);
    server.kill9();

    // A corrupt record in the middle stops start-up with file and offset.
    let first = wal_segments(&data).remove(0);
    let mut bytes = fs::read(&first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&first, &bytes).unwrap();
    let (status, stderr) = start_expecting_failure(&data, &[]);
    assert!(!status.success(), "must refuse to start: {stderr}");
    assert!(
        stderr.contains(&first.display().to_string()) && stderr.contains("offset"),
        "the message names file and offset: {stderr}"
    );

    // A segment with a bad magic number is refused too.
    bytes[mid] ^= 0xff;
    bytes[0] = b'X';
    fs::write(&first, &bytes).unwrap();
    let (status, stderr) = start_expecting_failure(&data, &[]);
    assert!(!status.success(), "must refuse to start: {stderr}");
    assert!(stderr.contains("magic"), "{stderr}");
}

#[tokio::test]
async fn buffered_rows_are_persisted_by_age() {
    let server = Server::start(&["--persist-interval", "1s"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE aged (time TIMESTAMP NOT NULL, v BIGINT); \
             INSERT INTO aged VALUES ('2024-01-01T00:00:00Z', 1)",
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let files = one_i64(&client, "SELECT count(*) FROM system.files").await;
        if files == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rows older than --persist-interval were not persisted within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(one_i64(&client, "SELECT sum(v)::bigint FROM aged").await, 1);
}
