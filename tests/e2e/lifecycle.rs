//! The storage lifecycle seen from clients: compaction of many small files
//! (explicit and in the background) while queries run, a query that keeps
//! reading the files compaction replaced, retention with short durations,
//! and the clean-up of objects no table refers to.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sextant_tests::{Server, text_rows};
use tokio_postgres::Client;

async fn one_i64(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// Every `.parquet` object under the data directory's object store.
fn parquet_objects(data: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    let mut out = vec![];
    walk(&data.join("objects"), &mut out);
    out.sort();
    out
}

/// Polls `check` every 100 ms until it is true or `secs` have passed.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The answers that must not change when files are compacted.
const SUMMARY: &str = "SELECT count(*), count(DISTINCT v), sum(v), min(time)::TEXT, max(time)::TEXT, \
                       count(DISTINCT host) FROM small";
const PER_HOST: &str = "SELECT host, count(*), sum(v) FROM small GROUP BY host ORDER BY host";

/// 200 flushes of 50 rows each, all in the partition of 2024-01-01 00:00.
async fn two_hundred_flushes(client: &Client) {
    client
        .batch_execute("CREATE TABLE small (time TIMESTAMP NOT NULL, host TEXT, v BIGINT)")
        .await
        .unwrap();
    for i in 0..200 {
        client
            .batch_execute(&format!(
                "INSERT INTO small SELECT to_timestamp(1704067200 + (value * 200 + {i}) * 0.05), \
                 'h' || CAST(value % 7 AS VARCHAR), value * 200 + {i} FROM generate_series(0, 49); \
                 FLUSH TABLE small"
            ))
            .await
            .unwrap_or_else(|e| panic!("flush {i}: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_small_flushes_compact_into_one_file_while_queries_run() {
    // Background compaction off (it would start at 1000 files); the sweep
    // of replaced files runs every second.
    let server = Server::start(&[
        "--compaction-min-files",
        "1000",
        "--lifecycle-interval",
        "1s",
    ]);
    let client = server.connect().await;
    two_hundred_flushes(&client).await;
    assert_eq!(
        one_i64(
            &client,
            "SELECT count(*) FROM system.files WHERE table_name = 'small'"
        )
        .await,
        200
    );
    assert_eq!(parquet_objects(server.data_dir()).len(), 200);
    let before = (
        text_rows(&client, SUMMARY).await,
        text_rows(&client, PER_HOST).await,
    );
    assert_eq!(before.0[0][0], "10000");
    assert_eq!(before.0[0][1], "10000");

    // Readers run the whole time compaction runs; every answer must be
    // complete and without duplicates.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = vec![];
    for _ in 0..3 {
        let c = server.connect().await;
        let stop = stop.clone();
        let expected = before.clone();
        readers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || n < 3 {
                let got = (text_rows(&c, SUMMARY).await, text_rows(&c, PER_HOST).await);
                assert_eq!(got, expected, "a query during compaction saw other rows");
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let merged = client
        .execute("COMPACT TABLE small", &[])
        .await
        .expect("COMPACT TABLE");
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut queries = 0;
    for r in readers {
        queries += r.await.expect("a reader failed");
    }
    eprintln!("COMPACT TABLE merged {merged} files in {took:?}; {queries} queries ran meanwhile");
    assert_eq!(merged, 200, "COMPACT TABLE reports the files merged away");

    let files = one_i64(
        &client,
        "SELECT count(*) FROM system.files WHERE table_name = 'small'",
    )
    .await;
    assert!(files <= 3, "{files} files remain after compaction");
    let after = (
        text_rows(&client, SUMMARY).await,
        text_rows(&client, PER_HOST).await,
    );
    assert_eq!(after, before, "compaction changed query results");
    let runs = text_rows(
        &client,
        "SELECT files_in, files_out, rows, trigger FROM system.compactions WHERE table_name = 'small'",
    )
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0][0], "200");
    assert_eq!(runs[0][2], "10000");
    assert_eq!(runs[0][3], "COMPACT TABLE");
    // The replaced objects are deleted once no query holds them.
    let data = server.data_dir().to_path_buf();
    eventually(10, "replaced files deleted", || {
        let n = parquet_objects(&data).len() as i64;
        async move { n == files }
    })
    .await;
    // And the compacted file is what a restart serves.
    let mut server = server;
    drop(client);
    server.terminate();
    server.restart();
    let client = server.connect().await;
    assert_eq!(text_rows(&client, SUMMARY).await, before.0);
}

#[tokio::test]
async fn a_query_keeps_reading_the_files_compaction_replaced() {
    let server = Server::start(&[
        "--compaction-min-files",
        "1000",
        "--lifecycle-interval",
        "1s",
    ]);
    let mut client = server.connect().await;
    two_hundred_flushes(&client).await;
    let originals = parquet_objects(server.data_dir());
    assert_eq!(originals.len(), 200);

    // A portal reads the first rows, then waits while compaction replaces
    // every file it is reading.
    let tx = client.transaction().await.unwrap();
    let stmt = tx.prepare("SELECT v FROM small").await.unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let first = tx.query_portal(&portal, 100).await.unwrap();
    assert_eq!(first.len(), 100);

    let other = server.connect().await;
    assert_eq!(
        other.execute("COMPACT TABLE small", &[]).await.unwrap(),
        200
    );
    assert!(one_i64(&other, "SELECT count(*) FROM system.files").await <= 3);
    // Sweeps run every second: give them the chance to (wrongly) delete.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let left: Vec<_> = originals.iter().filter(|p| p.exists()).collect();
    assert_eq!(left.len(), 200, "files of a running query were deleted");

    let mut seen: Vec<i64> = first.iter().map(|r| r.get(0)).collect();
    loop {
        let rows = tx
            .query_portal(&portal, 1000)
            .await
            .expect("the rest of the rows");
        if rows.is_empty() {
            break;
        }
        seen.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    seen.sort();
    assert_eq!(seen, (0..10000).collect::<Vec<i64>>());
    tx.commit().await.unwrap();

    let data = server.data_dir().to_path_buf();
    eventually(10, "replaced files deleted after the query", || {
        let gone = originals.iter().all(|p| !p.exists());
        let n = parquet_objects(&data).len();
        async move { gone && n <= 3 }
    })
    .await;
}

#[tokio::test]
async fn partitions_with_many_small_files_are_compacted_in_the_background() {
    let server = Server::start(&["--compaction-min-files", "8", "--lifecycle-interval", "1s"]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE bg (time TIMESTAMP NOT NULL, v BIGINT)")
        .await
        .unwrap();
    // Twenty flushes into each of two hours.
    for i in 0..20 {
        client
            .batch_execute(&format!(
                "INSERT INTO bg VALUES ('2024-01-01T00:00:{i:02}Z', {i}), ('2024-01-01T01:00:{i:02}Z', {}); \
                 FLUSH TABLE bg",
                100 + i
            ))
            .await
            .unwrap();
    }
    eventually(30, "background compaction", || {
        let c = &client;
        async move {
            one_i64(
                c,
                "SELECT count(*) FROM system.files WHERE table_name = 'bg'",
            )
            .await
                <= 4
        }
    })
    .await;
    assert_eq!(
        text_rows(&client, "SELECT count(*), sum(v) FROM bg").await,
        vec![vec![
            "40".to_string(),
            (0..20).chain(100..120).sum::<i64>().to_string()
        ]]
    );
    let runs = text_rows(
        &client,
        "SELECT DISTINCT trigger FROM system.compactions WHERE table_name = 'bg'",
    )
    .await;
    assert_eq!(runs, vec![vec!["background".to_string()]]);
    // Every file stays within its partition.
    let spread = one_i64(
        &client,
        "SELECT count(*) FROM system.files WHERE table_name = 'bg' \
         AND date_bin(INTERVAL '1 hour', min_time) <> date_bin(INTERVAL '1 hour', max_time)",
    )
    .await;
    assert_eq!(spread, 0);
    assert!(server.log().contains("compacted"), "compaction is logged");
}

#[tokio::test]
async fn rows_past_retention_vanish_at_once_and_their_files_soon_after() {
    let server = Server::start(&["--lifecycle-interval", "1s"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE short (time TIMESTAMP NOT NULL, v BIGINT) WITH (retention = '4 seconds'); \
             CREATE TABLE kept (time TIMESTAMP NOT NULL, v BIGINT)",
        )
        .await
        .unwrap();
    // Already past the retention when written: invisible from the start.
    client
        .batch_execute(
            "INSERT INTO short VALUES (now() - INTERVAL '1 minute', 1), (now(), 2); \
             INSERT INTO kept VALUES (now() - INTERVAL '1 minute', 1), (now(), 2); \
             FLUSH TABLE short, kept",
        )
        .await
        .unwrap();
    assert_eq!(
        one_i64(&client, "SELECT sum(v)::bigint FROM short").await,
        2
    );
    assert_eq!(one_i64(&client, "SELECT sum(v)::bigint FROM kept").await, 3);

    // Buffered rows age out as well, without a flush.
    client
        .batch_execute("INSERT INTO short VALUES (now(), 4)")
        .await
        .unwrap();
    assert_eq!(
        one_i64(&client, "SELECT sum(v)::bigint FROM short").await,
        6
    );
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(one_i64(&client, "SELECT count(*) FROM short").await, 0);
    assert_eq!(one_i64(&client, "SELECT count(*) FROM kept").await, 2);

    // The background job drops the expired files from the catalog and the store.
    eventually(15, "expired files deleted", || {
        let c = &client;
        async move {
            one_i64(
                c,
                "SELECT count(*) FROM system.files WHERE table_name = 'short'",
            )
            .await
                == 0
        }
    })
    .await;
    let data = server.data_dir().to_path_buf();
    eventually(10, "expired objects deleted", || {
        let short = parquet_objects(&data)
            .iter()
            .filter(|p| p.to_string_lossy().contains("/short/"))
            .count();
        async move { short == 0 }
    })
    .await;
    assert!(server.log().contains("expired by retention"));
    assert_eq!(one_i64(&client, "SELECT count(*) FROM kept").await, 2);

    // A longer retention shows again what was hidden but not deleted yet:
    // the buffered row (4) is back, the rows of the deleted file (1, 2) are not.
    client
        .batch_execute(
            "ALTER TABLE short SET (retention = '1 hour'); INSERT INTO short VALUES (now(), 8)",
        )
        .await
        .unwrap();
    assert_eq!(
        text_rows(&client, "SELECT v FROM short ORDER BY v").await,
        vec![vec!["4".to_string()], vec!["8".to_string()]]
    );
}

#[tokio::test]
async fn objects_no_table_refers_to_are_removed_after_the_grace_period() {
    let server = Server::start(&["--lifecycle-interval", "1s", "--orphan-grace", "2s"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE o (time TIMESTAMP NOT NULL, v BIGINT); \
             INSERT INTO o VALUES ('2024-01-01T00:00:00Z', 1); FLUSH TABLE o",
        )
        .await
        .unwrap();
    let committed = parquet_objects(server.data_dir());
    assert_eq!(committed.len(), 1);
    // What a crash between writing an object and committing it leaves.
    let orphan = committed[0].with_file_name("00000000000000009999-0000.parquet");
    std::fs::copy(&committed[0], &orphan).unwrap();
    let other = server
        .data_dir()
        .join("objects/gone/20240101T0000/x.parquet");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, b"not even parquet").unwrap();

    let (o1, o2) = (orphan.clone(), other.clone());
    eventually(20, "orphans removed", || {
        let gone = !o1.exists() && !o2.exists();
        async move { gone }
    })
    .await;
    assert!(committed[0].exists(), "a committed file was removed");
    assert_eq!(one_i64(&client, "SELECT sum(v)::bigint FROM o").await, 1);
    assert!(
        server
            .log()
            .contains("deleted an object no table refers to")
    );
}

/// The `DataSourceExec` metrics of `EXPLAIN ANALYZE sql`.
async fn scan_metrics(client: &Client, sql: &str) -> String {
    let rows = text_rows(client, &format!("EXPLAIN ANALYZE {sql}")).await;
    let text = rows
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    text.lines()
        .filter(|l| l.contains("DataSourceExec") || l.contains("SextantScanExec"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `total → matched` pair of a pruning metric such as
/// `row_groups_pruned_bloom_filter=20 total → 1 matched`.
fn pruned(metrics: &str, name: &str) -> (u64, u64) {
    let at = metrics
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"));
    let rest = &metrics[at + name.len() + 1..];
    let nums: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

/// The EXPLAIN ANALYZE metrics docs/storage.md shows (`row_groups_pruned_statistics=20
/// total → 5 matched`, `row_groups_pruned_bloom_filter=...`) say what they mean.
#[tokio::test]
async fn a_trace_id_lookup_skips_row_groups_by_bloom_filter() {
    let server = Server::start(&["--row-group-rows", "1000"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE spans (time TIMESTAMP NOT NULL, trace_id TEXT, service_name TEXT, v BIGINT); \
             INSERT INTO spans SELECT to_timestamp(1704067200 + value * 0.1), md5(CAST(value AS TEXT)), \
             'svc' || CAST(value / 5000 AS TEXT), value FROM generate_series(0, 19999); \
             FLUSH TABLE spans",
        )
        .await
        .unwrap();
    assert_eq!(
        one_i64(
            &client,
            "SELECT count(*) FROM system.files WHERE table_name = 'spans'"
        )
        .await,
        1
    );
    let lookup = "SELECT v FROM spans WHERE trace_id = md5('12345')";
    assert_eq!(one_i64(&client, lookup).await, 12345);
    let metrics = scan_metrics(&client, lookup).await;
    eprintln!("{metrics}");
    // Random ids: min/max of every row group spans nearly all ids, so
    // statistics keep them; the bloom filters skip all but the one.
    let (total, matched) = pruned(&metrics, "row_groups_pruned_bloom_filter");
    assert_eq!(total, 20, "{metrics}");
    assert!(
        matched <= 2,
        "bloom filters kept {matched} of 20 row groups:\n{metrics}"
    );

    // A service name is sorted with time here: row-group statistics skip.
    let by_service = "SELECT count(*) FROM spans WHERE service_name = 'svc2'";
    assert_eq!(one_i64(&client, by_service).await, 5000);
    let metrics = scan_metrics(&client, by_service).await;
    let (total, matched) = pruned(&metrics, "row_groups_pruned_statistics");
    assert_eq!((total, matched), (20, 5), "{metrics}");
}
