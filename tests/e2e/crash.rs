//! The crash tests: acknowledged writes survive `kill -9`.
//!
//! Each cycle, several writer tasks per ingest path (each on its own
//! connection, [`crate::paths`]) write rows with a unique `(writer, n)` and
//! remember every row whose write was acknowledged. Every few cycles another
//! task runs `FLUSH TABLE` over and over, so that crashes also land around
//! persistence. At a random moment 50–600 ms after the writers started the
//! server is SIGKILLed, then restarted on the same data directory, and each
//! path's table is checked:
//!
//! - every acknowledged row is present exactly once;
//! - no `(writer, n)` appears twice;
//! - a row whose write failed because the server died ("in doubt") appears
//!   at most once, and whatever it is after the first restart it stays:
//!   present rows must be present in every later cycle, absent ones must never
//!   come back;
//! - no row appears that was never sent.
//!
//! The first test writes through pgwire `INSERT` only; the second through
//! all eight paths at once while every background job runs at short
//! intervals, and checks two materialized views against their tables after
//! each restart.
//!
//! Reproduce a failure with the printed seed: `SEXTANT_CRASH_SEED=<seed>`
//! (timing still varies). `SEXTANT_CRASH_CYCLES` and `SEXTANT_PATHS_CYCLES`
//! set the number of cycles (default 20 each), `SEXTANT_CRASH_SECONDS` a
//! time after which no new cycle starts (`tests/soak.sh` runs them for long).

use std::collections::HashSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sextant_tests::{Server, env_or};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::paths::{Conn, Failure, Key, Path, statement_error};

/// Concurrent writer tasks per path (each on its own connection).
const WRITERS: usize = 4;
/// Every this many cycles a task runs `FLUSH TABLE t` while writing.
const FLUSH_EVERY: u32 = 5;
/// The SIGKILL lands this many milliseconds after the writers started.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 50..=600;
/// How long writers may take to notice the dead server.
const WRITER_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What one writer task saw in one cycle.
struct WriterOutcome {
    /// Rows whose write was acknowledged.
    acked: Vec<Key>,
    /// Rows of the write that failed (the connection died under it).
    in_doubt: Vec<Key>,
    /// The next unused `n` of this writer.
    next_n: i64,
    /// An error the server *reported* (not a lost connection): always a bug,
    /// since every write is valid.
    server_error: Option<String>,
}

/// Writes rows `(writer, next_n..)` through `path` until a write fails.
async fn write_until_error(
    path: Path,
    mut conn: Conn,
    writer: i64,
    mut next_n: i64,
    mut rng: StdRng,
) -> WriterOutcome {
    let mut acked = Vec::new();
    loop {
        let rows = path.batch_rows(&mut rng);
        let keys: Vec<Key> = (next_n..next_n + rows).map(|n| (writer, n)).collect();
        next_n += rows;
        match conn.write(path, &keys).await {
            Ok(()) => acked.extend(keys),
            Err(failure) => {
                return WriterOutcome {
                    acked,
                    in_doubt: keys,
                    next_n,
                    server_error: match failure {
                        Failure::InDoubt => None,
                        Failure::Rejected(e) => {
                            Some(format!("{} writer {writer}: {e}", path.name()))
                        }
                    },
                };
            }
        }
    }
}

/// Runs `statements`, one picked at random every 10–80 ms, until one fails. A table
/// that does not exist yet (a schemaless path that has not written) is no
/// failure. Returns how many statements succeeded and an error the server
/// reported, if any.
async fn flush_until_error(
    client: Client,
    statements: Vec<String>,
    mut rng: StdRng,
) -> (u32, Option<String>) {
    let mut done = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..=80))).await;
        let sql = &statements[rng.random_range(0..statements.len())];
        match client.batch_execute(sql).await {
            Ok(()) => done += 1,
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {}
            Err(e) => {
                return (done, statement_error(&e).map(|db| format!("{sql}: {db}")));
            }
        }
    }
}

/// The rows of a path's table and the `(writer, n)` pairs that occur more
/// than once.
struct Contents {
    present: HashSet<Key>,
    duplicates: Vec<(i64, i64, i64)>,
    rows: u64,
}

/// The rows `path` wrote, by its query; none while its table does not
/// exist (a schemaless path that has not written yet).
async fn read_contents(client: &Client, path: Path) -> Contents {
    let select = path.select_sql();
    let mut contents = Contents {
        present: HashSet::new(),
        duplicates: Vec::new(),
        rows: 0,
    };
    let duplicates = client
        .query(
            &format!("SELECT w, n, count(*) FROM ({select}) GROUP BY w, n HAVING count(*) > 1"),
            &[],
        )
        .await;
    let duplicates = match duplicates {
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return contents,
        other => other.unwrap_or_else(|e| panic!("duplicate query of {}: {e:?}", path.name())),
    };
    contents.duplicates = duplicates
        .iter()
        .map(|row| {
            (
                row.try_get::<_, i64>(0).expect("w is a BIGINT"),
                row.try_get::<_, i64>(1).expect("n is a BIGINT"),
                row.try_get::<_, i64>(2).expect("count(*) is a BIGINT"),
            )
        })
        .collect();

    let mut streamed_duplicates = Vec::new();
    let stream = client
        .query_raw(select.as_str(), std::iter::empty::<i64>())
        .await
        .unwrap_or_else(|e| panic!("{select}: {e:?}"));
    let mut stream = std::pin::pin!(stream);
    while let Some(row) = stream.try_next().await.expect("read rows") {
        contents.rows += 1;
        let key: Key = (
            row.try_get(0).expect("w is a BIGINT"),
            row.try_get(1).expect("n is a BIGINT"),
        );
        if !contents.present.insert(key) {
            streamed_duplicates.push(key);
        }
    }
    // The GROUP BY query and the scan must agree; if only the scan sees a
    // duplicate, report it too.
    for (w, n) in streamed_duplicates {
        if !contents.duplicates.iter().any(|d| (d.0, d.1) == (w, n)) {
            contents.duplicates.push((w, n, -1));
        }
    }
    contents
}

fn examples<T: Debug + Ord + Clone>(items: impl IntoIterator<Item = T>) -> String {
    let mut all: Vec<T> = items.into_iter().collect();
    all.sort();
    let n = all.len();
    all.truncate(10);
    format!("{n} (first: {all:?})")
}

/// One path's state across cycles.
pub(crate) struct PathState {
    pub(crate) path: Path,
    /// Rows that must be present from now on: acknowledged rows, and
    /// in-doubt rows that were present after the restart that followed
    /// their crash.
    must_exist: HashSet<Key>,
    next_n: [i64; WRITERS],
    pub(crate) acked_total: usize,
    pub(crate) in_doubt_total: usize,
    pub(crate) in_doubt_kept: usize,
    /// Acknowledged rows that were gone after a restart (only counted when
    /// the caller allows losses; otherwise a loss fails the test).
    pub(crate) lost_total: usize,
}

/// The state of a crash test across cycles: each path's rows and where its
/// writers go on, and the totals for the report.
pub(crate) struct CrashTest {
    seed: u64,
    rng: StdRng,
    /// Every this many cycles a task runs `FLUSH TABLE` on every path's
    /// table (and `also_flush`) while writing.
    flush_every: u32,
    /// More statements for the flushing task.
    also_flush: Vec<String>,
    pub(crate) paths: Vec<PathState>,
    pub(crate) flushes_total: u32,
    /// The slowest restart (from start to ready).
    pub(crate) slowest_restart: Duration,
}

/// What one cycle found.
pub(crate) struct CycleReport {
    /// Acknowledged rows missing after the restart, over all paths.
    pub(crate) lost: usize,
}

impl CrashTest {
    /// Creates the tables of `paths` that need creating on `server`.
    /// `flush_every`: every this many cycles `FLUSH TABLE` runs during the
    /// writes.
    pub(crate) async fn new(
        server: &Server,
        seed: u64,
        flush_every: u32,
        paths: &[Path],
    ) -> CrashTest {
        let client = server.connect().await;
        for path in paths {
            if let Some(sql) = path.create_sql() {
                client
                    .batch_execute(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            }
        }
        CrashTest {
            seed,
            rng: StdRng::seed_from_u64(seed),
            flush_every,
            also_flush: Vec::new(),
            paths: paths
                .iter()
                .map(|&path| PathState {
                    path,
                    must_exist: HashSet::new(),
                    next_n: [0; WRITERS],
                    acked_total: 0,
                    in_doubt_total: 0,
                    in_doubt_kept: 0,
                    lost_total: 0,
                })
                .collect(),
            flushes_total: 0,
            slowest_restart: Duration::ZERO,
        }
    }

    /// Adds statements the flushing task runs beside `FLUSH TABLE`.
    pub(crate) fn also_flush(&mut self, statements: &[String]) {
        self.also_flush.extend_from_slice(statements);
    }

    pub(crate) fn acked_total(&self) -> usize {
        self.paths.iter().map(|p| p.acked_total).sum()
    }

    pub(crate) fn lost_total(&self) -> usize {
        self.paths.iter().map(|p| p.lost_total).sum()
    }

    /// One cycle: writers of every path (and maybe a FLUSH task) run,
    /// `crash` stops the server 50–600 ms in (it must leave it stopped), the
    /// server restarts, and every path's rows are checked. Acknowledged rows
    /// that are missing fail the test unless `allow_loss`; then they are
    /// reported and forgotten.
    pub(crate) async fn cycle(
        &mut self,
        server: &mut Server,
        cycle: u32,
        cycles: u32,
        allow_loss: bool,
        crash: impl FnOnce(&mut Server),
    ) -> CycleReport {
        let seed = self.seed;
        let context = format!("cycle {cycle}/{cycles}, seed {seed}");
        let mut writers = Vec::new();
        for (p, state) in self.paths.iter().enumerate() {
            for (w, &n) in state.next_n.iter().enumerate() {
                let conn = state.path.connect(server).await;
                let writer_rng = StdRng::seed_from_u64(self.rng.random());
                let writer = i64::try_from(w).expect("writer id");
                let task = write_until_error(state.path, conn, writer, n, writer_rng);
                writers.push((p, w, tokio::spawn(task)));
            }
        }
        let flusher = if cycle.is_multiple_of(self.flush_every) {
            let client = server.connect().await;
            let flush_rng = StdRng::seed_from_u64(self.rng.random());
            let mut statements: Vec<String> = Vec::new();
            for state in &self.paths {
                let sql = format!("FLUSH TABLE {}", state.path.table());
                if !statements.contains(&sql) {
                    statements.push(sql);
                }
            }
            statements.extend(self.also_flush.iter().cloned());
            Some(tokio::spawn(flush_until_error(
                client, statements, flush_rng,
            )))
        } else {
            None
        };

        let kill_after = Duration::from_millis(self.rng.random_range(KILL_AFTER_MS));
        tokio::time::sleep(kill_after).await;
        tokio::task::block_in_place(|| crash(server));

        let mut acked: Vec<Vec<Key>> = vec![Vec::new(); self.paths.len()];
        let mut in_doubt: Vec<Vec<Key>> = vec![Vec::new(); self.paths.len()];
        let mut server_errors = Vec::new();
        for (p, w, handle) in writers {
            let name = self.paths[p].path.name();
            let outcome = tokio::time::timeout(WRITER_EXIT_TIMEOUT, handle)
                .await
                .unwrap_or_else(|_| {
                    panic!("{context}: {name} writer {w} did not notice the dead server within {WRITER_EXIT_TIMEOUT:?}")
                })
                .expect("writer task panicked");
            self.paths[p].next_n[w] = outcome.next_n;
            acked[p].extend(outcome.acked);
            in_doubt[p].extend(outcome.in_doubt);
            server_errors.extend(outcome.server_error);
        }
        let mut flushes = None;
        if let Some(handle) = flusher {
            let (n, error) = tokio::time::timeout(WRITER_EXIT_TIMEOUT, handle)
                .await
                .unwrap_or_else(|_| {
                    panic!("{context}: the FLUSH task did not notice the dead server within {WRITER_EXIT_TIMEOUT:?}")
                })
                .expect("FLUSH task panicked");
            flushes = Some(n);
            self.flushes_total += n;
            server_errors.extend(error);
        }
        assert!(
            server_errors.is_empty(),
            "{context}: the server rejected valid writes before it was killed: {server_errors:#?}"
        );

        let restart_started = Instant::now();
        tokio::task::block_in_place(|| server.restart());
        let restart_time = restart_started.elapsed();
        self.slowest_restart = self.slowest_restart.max(restart_time);

        let client = server.connect().await;
        let mut lost_in_cycle = 0;
        let mut lines = Vec::new();
        for (p, state) in self.paths.iter_mut().enumerate() {
            let acked = std::mem::take(&mut acked[p]);
            let in_doubt: HashSet<Key> = std::mem::take(&mut in_doubt[p]).into_iter().collect();
            let name = state.path.name();
            state.acked_total += acked.len();
            state.in_doubt_total += in_doubt.len();
            state.must_exist.extend(acked.iter().copied());

            let contents = read_contents(&client, state.path).await;
            assert!(
                contents.duplicates.is_empty(),
                "{context}, {name}: rows stored more than once (writer, n, count; -1 = seen by the scan only): {}",
                examples(contents.duplicates.iter().copied())
            );
            let lost: Vec<Key> = state
                .must_exist
                .iter()
                .filter(|k| !contents.present.contains(k))
                .copied()
                .collect();
            assert!(
                allow_loss || lost.is_empty(),
                "{context}, {name}: acknowledged rows lost (of {} that must exist): {}",
                state.must_exist.len(),
                examples(lost.iter().copied())
            );
            for k in &lost {
                state.must_exist.remove(k);
            }
            state.lost_total += lost.len();
            lost_in_cycle += lost.len();
            let unexpected: Vec<Key> = contents
                .present
                .iter()
                .filter(|k| !state.must_exist.contains(k) && !in_doubt.contains(k))
                .copied()
                .collect();
            assert!(
                unexpected.is_empty(),
                "{context}, {name}: rows present that were never sent, or in-doubt rows of an earlier cycle that came back: {}",
                examples(unexpected)
            );
            let kept: Vec<Key> = in_doubt
                .iter()
                .filter(|k| contents.present.contains(k))
                .copied()
                .collect();
            state.in_doubt_kept += kept.len();
            state.must_exist.extend(kept.iter().copied());
            assert_eq!(
                contents.rows,
                state.must_exist.len() as u64,
                "{context}, {name}: row count"
            );
            lines.push(format!(
                "{name}: {} acked, {} in doubt ({} kept), {} lost, {} rows",
                acked.len(),
                in_doubt.len(),
                kept.len(),
                lost.len(),
                contents.rows
            ));
        }
        drop(client);

        println!(
            "cycle {cycle}/{cycles}: crash after {} ms{}; restart took {} ms; {}",
            kill_after.as_millis(),
            flushes.map_or(String::new(), |n| format!(" ({n} flush statements done)")),
            restart_time.as_millis(),
            lines.join("; ")
        );
        CycleReport {
            lost: lost_in_cycle,
        }
    }

    /// The closing lines of a run.
    pub(crate) fn report(&self, name: &str, cycles: u32) {
        println!(
            "{name}: {} flush statements succeeded during writing",
            self.flushes_total
        );
        for state in &self.paths {
            println!(
                "{name}: {}: {} acknowledged rows, {} in doubt ({} kept, the others never appeared), {} acknowledged rows lost",
                state.path.name(),
                state.acked_total,
                state.in_doubt_total,
                state.in_doubt_kept,
                state.lost_total
            );
        }
        println!(
            "{name}: {cycles} cycles, {} acknowledged rows, {} acknowledged rows lost, slowest restart {} ms",
            self.acked_total(),
            self.lost_total(),
            self.slowest_restart.as_millis()
        );
    }
}

/// `SEXTANT_CRASH_SECONDS`: stop starting cycles after this long (the
/// soak, `tests/soak.sh`), whatever the count.
pub(crate) fn out_of_time(started: Instant) -> bool {
    let seconds: u64 = env_or("SEXTANT_CRASH_SECONDS", u64::MAX);
    started.elapsed() >= Duration::from_secs(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill9() {
    let seed: u64 = env_or("SEXTANT_CRASH_SEED", rand::random());
    let mut cycles: u32 = env_or("SEXTANT_CRASH_CYCLES", 20);
    println!("crash test: seed {seed} (reproduce with SEXTANT_CRASH_SEED={seed}), {cycles} cycles");

    let started = Instant::now();
    let mut server = Server::start(&[]);
    let mut test = CrashTest::new(&server, seed, FLUSH_EVERY, &[Path::Insert]).await;
    for cycle in 1..=cycles {
        test.cycle(&mut server, cycle, cycles, false, Server::kill9)
            .await;
        if out_of_time(started) {
            cycles = cycle;
            break;
        }
    }
    assert!(
        test.acked_total() > 0,
        "no INSERT was acknowledged in {cycles} cycles; the test proved nothing"
    );
    test.report("crash test", cycles);
}

/// Flags that make every background job run often: persistence, compaction
/// and retention (with orphan removal), and view refresh.
const BUSY_SERVER: [&str; 12] = [
    "--persist-interval",
    "300ms",
    "--lifecycle-interval",
    "250ms",
    "--compaction-min-files",
    "2",
    "--view-refresh-interval",
    "100ms",
    "--orphan-grace",
    "5s",
    "--log-filter",
    "info",
];

/// A webhook receiver that answers 200 to everything; counts requests.
async fn webhook() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the webhook receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, count)
}

/// Rows of `sql` as text, sorted.
async fn sorted_rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let mut rows = sextant_tests::text_rows(client, sql).await;
    rows.sort();
    rows
}

/// Waits (up to 30 s) until the materialized views agree with their base
/// tables again: `crash_per_hour` (aggregating, over `t`) and `crash_even`
/// (a filter, over `crash_copy`).
async fn views_agree(server: &Server, context: &str) {
    let client = server.connect().await;
    let pairs = [
        (
            "SELECT writer, CAST(sum(rows) AS BIGINT) FROM crash_per_hour GROUP BY writer",
            "SELECT writer, count(*) FROM t GROUP BY writer",
        ),
        (
            "SELECT writer, n FROM crash_even",
            "SELECT writer, n FROM crash_copy WHERE n % 2 = 0",
        ),
    ];
    let started = Instant::now();
    for (view, base) in pairs {
        loop {
            let (v, b) = (
                sorted_rows(&client, view).await,
                sorted_rows(&client, base).await,
            );
            if v == b {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{context}: the view does not agree with its table after 30 s:\n{view}: {} rows, first {:?}\n{base}: {} rows, first {:?}",
                v.len(),
                v.iter().take(5).collect::<Vec<_>>(),
                b.len(),
                b.iter().take(5).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every ingest path at once under `kill -9`, each with concurrent writers,
/// while persistence, compaction, retention, orphan removal, view refresh
/// and alert evaluation run at short intervals (server flags, and an alert
/// evaluated every second). After every restart, every path's rows are
/// checked as in the first test, and the materialized views must agree with
/// their tables again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ingest_path_survives_kill9_amid_background_work() {
    let seed: u64 = env_or("SEXTANT_CRASH_SEED", rand::random());
    let mut cycles: u32 = env_or("SEXTANT_PATHS_CYCLES", 20);
    println!(
        "all-paths crash test: seed {seed} (reproduce with SEXTANT_CRASH_SEED={seed}), {cycles} cycles"
    );
    let started = Instant::now();
    let (hook, notifications) = webhook().await;
    let mut server = Server::start(&BUSY_SERVER);
    let mut test = CrashTest::new(&server, seed, 1, &Path::ALL).await;
    server
        .connect()
        .await
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW crash_per_hour AS \
               SELECT date_bin(INTERVAL '1 hour', time) AS time, writer, count(*) AS rows \
               FROM t GROUP BY 1, 2;
             CREATE MATERIALIZED VIEW crash_even AS \
               SELECT time, writer, n FROM crash_copy WHERE n % 2 = 0;
             CREATE TABLE expiring (time TIMESTAMP NOT NULL, v BIGINT) WITH (retention = '2 seconds');
             CREATE ALERT crash_rows AS SELECT CAST(writer AS TEXT) AS writer, count(*) AS c FROM t GROUP BY writer \
               EVERY '1 second' NOTIFY WEBHOOK '{hook}' WITH (retries = 0)"
        ))
        .await
        .expect("create the views, the expiring table and the alert");
    test.also_flush(&["INSERT INTO expiring VALUES (now(), 1); FLUSH TABLE expiring".to_owned()]);
    for cycle in 1..=cycles {
        test.cycle(&mut server, cycle, cycles, false, Server::kill9)
            .await;
        views_agree(&server, &format!("cycle {cycle}/{cycles}, seed {seed}")).await;
        if out_of_time(started) {
            cycles = cycle;
            break;
        }
    }
    test.report("all-paths crash test", cycles);
    for state in &test.paths {
        assert!(
            state.acked_total > 0,
            "{}: no write was acknowledged in {cycles} cycles; the test proved nothing for it",
            state.path.name()
        );
    }
    // The background work ran while the server was being killed.
    let log = server.log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let (compactions, expirations) = (count("compacted"), count("expired by retention"));
    let notified = notifications.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "all-paths crash test: {compactions} compactions, {expirations} retention expirations, {} orphaned objects deleted, {notified} alert notifications",
        count("deleted an object no table refers to")
    );
    assert!(compactions > 0, "no compaction ran during the test");
    assert!(expirations > 0, "retention expired nothing during the test");
    assert!(
        notified > 0,
        "the alert was never evaluated to a notification"
    );
}
