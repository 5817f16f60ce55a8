//! Damaged files and a damaged catalog: a Parquet file truncated, corrupted
//! in its pages or missing on the object store fails the queries that read
//! it with an error that names the problem (XX001 or 58P01, naming the
//! file where the reader knows it), while other time ranges of the table
//! answer; `system.files` shows the damage a read or `CHECK TABLE` found;
//! `--skip-damaged-files` leaves those files out. Start-up refuses a
//! damaged or missing catalog instead of starting empty.

use std::path::{Path, PathBuf};

use sextant_tests::{Server, start_expecting_failure, text_rows};
use tokio_postgres::Client;

/// The SQLSTATE and message of a failed query.
async fn failure(c: &Client, sql: &str) -> (String, String) {
    let e = c
        .simple_query(sql)
        .await
        .expect_err("a query over a damaged file");
    let db = e.as_db_error().expect("a server error");
    (db.code().code().to_string(), db.message().to_string())
}

async fn count(c: &Client, sql: &str) -> String {
    text_rows(c, sql).await[0][0].clone()
}

fn xor(path: &Path, range: std::ops::Range<usize>) {
    let mut bytes = std::fs::read(path).expect("read a Parquet file");
    let end = range.end.min(bytes.len());
    for b in &mut bytes[range.start..end] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).expect("write the damaged file");
}

/// Four hours of `t`, each flushed to its own file; the files' paths in
/// time order.
async fn four_files(server: &Server, c: &Client) -> Vec<String> {
    c.batch_execute("CREATE TABLE t (time TIMESTAMP NOT NULL, v BIGINT, s TEXT)")
        .await
        .unwrap();
    for hour in 0..4 {
        c.batch_execute(&format!(
            "INSERT INTO t SELECT TIMESTAMP '2026-01-01 0{hour}:00:00' + g * INTERVAL '1 second', g, md5(CAST(g AS TEXT)) \
             FROM generate_series(0, 2999) AS s(g); FLUSH TABLE t"
        ))
        .await
        .unwrap();
    }
    let paths: Vec<String> = text_rows(c, "SELECT path FROM system.files ORDER BY min_time")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(paths.len(), 4, "{paths:?}");
    for p in &paths {
        assert!(object(server, p).exists(), "{p} is a local file");
    }
    paths
}

fn object(server: &Server, path: &str) -> PathBuf {
    server.data_dir().join("objects").join(path)
}

fn hour(h: u32) -> String {
    format!(
        "SELECT count(*), sum(v) FROM t WHERE time >= '2026-01-01T0{h}:00:00Z' AND time < '2026-01-01T0{}:00:00Z'",
        h + 1
    )
}

#[tokio::test]
async fn damaged_files_are_named_and_the_rest_of_the_table_answers() {
    let server = Server::start(&["--skip-damaged-files"]);
    let c = server.connect().await;
    let paths = four_files(&server, &c).await;

    // Hour 0: cut short. Hour 1: pages damaged, footer intact. Hour 2:
    // gone from the object store. Hour 3: sound.
    let truncated = object(&server, &paths[0]);
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let pages = object(&server, &paths[1]);
    let len = std::fs::metadata(&pages).unwrap().len() as usize;
    xor(&pages, 4..len / 3);
    std::fs::remove_file(object(&server, &paths[2])).unwrap();

    let (code, message) = failure(&c, &hour(0)).await;
    println!("truncated: {code} {message}");
    assert_eq!(code, "XX001", "{message}");
    assert!(message.contains(&paths[0]), "names the file: {message}");
    let (code, message) = failure(&c, &hour(1)).await;
    println!("damaged pages: {code} {message}");
    assert_eq!(code, "XX001", "{message}");
    assert!(
        message.contains("CHECK TABLE"),
        "says how to find it: {message}"
    );
    let (code, message) = failure(&c, &hour(2)).await;
    println!("missing: {code} {message}");
    assert_eq!(code, "58P01", "{message}");
    assert!(message.contains(&paths[2]), "names the file: {message}");
    // The sound hour answers, and so does every query that needs no file.
    assert_eq!(count(&c, &hour(3)).await, "3000");
    assert_eq!(
        count(&c, "SELECT count(*) FROM t WHERE time >= '2026-01-02'").await,
        "0"
    );

    // The reads noted the truncated and the missing file; the damaged
    // pages need CHECK TABLE (the decoder does not say which file).
    let damage =
        |rows: Vec<Vec<String>>| -> Vec<bool> { rows.iter().map(|r| r[0] == "t").collect() };
    let noted = damage(
        text_rows(
            &c,
            "SELECT damage IS NOT NULL FROM system.files ORDER BY min_time",
        )
        .await,
    );
    assert_eq!(noted, vec![true, false, true, false]);

    let checked = text_rows(&c, "CHECK TABLE t").await;
    println!("CHECK TABLE t: {checked:#?}");
    let status: Vec<(&str, &str)> = checked
        .iter()
        .map(|r| (r[1].as_str(), r[3].as_str()))
        .collect();
    assert_eq!(
        status,
        vec![
            (paths[0].as_str(), "damaged"),
            (paths[1].as_str(), "damaged"),
            (paths[2].as_str(), "damaged"),
            (paths[3].as_str(), "ok"),
        ]
    );
    assert!(checked[2][4].contains("missing"), "{:?}", checked[2]);
    let noted = damage(
        text_rows(
            &c,
            "SELECT damage IS NOT NULL FROM system.files ORDER BY min_time",
        )
        .await,
    );
    assert_eq!(noted, vec![true, true, true, false]);

    // --skip-damaged-files: the noted files are left out.
    assert_eq!(count(&c, "SELECT count(*) FROM t").await, "3000");
    assert_eq!(count(&c, &hour(1)).await, "0");
}

#[tokio::test]
async fn start_up_refuses_a_damaged_or_missing_catalog() {
    let mut server = Server::start(&[]);
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE t (time TIMESTAMP NOT NULL, v BIGINT); \
         INSERT INTO t VALUES ('2026-01-01T00:00:00Z', 1); FLUSH TABLE t; \
         INSERT INTO t VALUES ('2026-01-01T00:00:01Z', 2)",
    )
    .await
    .unwrap();
    drop(c);
    assert!(server.terminate().success());
    let data = server.data_dir().to_path_buf();
    let catalog = data.join("catalog.sqlite");
    // Everything into the one file (SQLite's WAL folded in), so that the
    // damage below is to pages SQLite reads.
    rusqlite::Connection::open(&catalog)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let saved = std::fs::read(&catalog).unwrap();
    assert!(saved.len() > 8192, "{} bytes", saved.len());

    // Damaged pages.
    xor(&catalog, 4096..saved.len());
    let (status, log) = start_expecting_failure(&data, &[]);
    println!("damaged catalog: {status}: {log}");
    assert!(!status.success());
    assert!(
        log.contains("catalog.sqlite is damaged") && log.contains("refusing to start"),
        "{log}"
    );

    // Missing, beside a WAL and Parquet files.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("catalog.sqlite{suffix}")));
    }
    let (status, log) = start_expecting_failure(&data, &[]);
    println!("missing catalog: {status}: {log}");
    assert!(!status.success());
    assert!(
        log.contains("is missing or holds no catalog, but")
            && log.contains("refusing to start with an empty catalog"),
        "{log}"
    );
    assert!(!catalog.exists(), "the refused start made no empty catalog");

    // The catalog restored, everything is there.
    std::fs::write(&catalog, &saved).unwrap();
    server.restart();
    let c = server.connect().await;
    assert_eq!(
        text_rows(&c, "SELECT count(*), sum(v) FROM t").await,
        vec![vec!["2".to_string(), "3".to_string()]]
    );
}
