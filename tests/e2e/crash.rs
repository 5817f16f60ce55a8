//! The crash test: acknowledged writes survive `kill -9`.
//!
//! Each cycle, several writer tasks (each on its own pgwire connection) insert
//! rows with a unique `(writer, n)` in single-row and small multi-row
//! `INSERT`s and remember every row whose `INSERT` returned `Ok`
//! (acknowledged). Every fifth cycle another task runs `FLUSH TABLE t` over
//! and over, so that crashes also land around persistence. At a random moment
//! 50–600 ms after the writers started the server is SIGKILLed, then restarted
//! on the same data directory, and the table is checked:
//!
//! - every acknowledged row is present exactly once;
//! - no `(writer, n)` appears twice;
//! - a row whose `INSERT` failed because the server died ("in doubt") appears
//!   at most once, and whatever it is after the first restart it stays:
//!   present rows must be present in every later cycle, absent ones must never
//!   come back;
//! - no row appears that was never sent.
//!
//! Reproduce a failure with the printed seed: `SEXTANT_CRASH_SEED=<seed>`
//! (timing still varies). `SEXTANT_CRASH_CYCLES` sets the number of cycles
//! (default 20), `SEXTANT_CRASH_SECONDS` a time after which no new cycle
//! starts (`tests/soak.sh` runs both for long).

use std::collections::HashSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sextant_tests::{Server, env_or};
use tokio_postgres::Client;

/// Concurrent writer tasks (each on its own connection).
const WRITERS: usize = 4;
/// Every this many cycles a task runs `FLUSH TABLE t` while writing.
const FLUSH_EVERY: u32 = 5;
/// The SIGKILL lands this many milliseconds after the writers started.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 50..=600;
/// How long writers may take to notice the dead server.
const WRITER_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// `(writer, n)`: the identity of one row.
type Key = (i64, i64);

/// The timestamp of row `(writer, n)`: three seconds per `n` from
/// 2026-01-01T00:00:00Z (so the data spans several hourly partitions), plus
/// `writer` nanoseconds.
fn time_literal((writer, n): Key) -> String {
    // 2026-01-01 is day 20454 of the Unix epoch.
    let secs = n * 3;
    let (y, mo, d) = civil_from_days(20_454 + secs / 86_400);
    let (h, mi, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    format!("'{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{writer:09}Z'")
}

/// Year, month, day of a day number counted from 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[test]
fn time_literals() {
    assert_eq!(time_literal((0, 0)), "'2026-01-01T00:00:00.000000000Z'");
    assert_eq!(time_literal((3, 1201)), "'2026-01-01T01:00:03.000000003Z'");
    assert_eq!(
        time_literal((1, 28_800 * 59)),
        "'2026-03-01T00:00:00.000000001Z'"
    );
    assert_eq!(
        time_literal((2, 28_800 * 365)),
        "'2027-01-01T00:00:00.000000002Z'"
    );
}

fn insert_sql(keys: &[Key]) -> String {
    let values: Vec<String> = keys
        .iter()
        .map(|&(w, n)| format!("({}, {w}, {n})", time_literal((w, n))))
        .collect();
    format!("INSERT INTO t VALUES {}", values.join(", "))
}

/// An error the server reported about the statement itself, as opposed to
/// the connection going away (no server message, SQLSTATE class 08
/// "connection exception" or 57 "operator intervention", or a FATAL/PANIC
/// message): with the latter the statement's outcome is in doubt.
fn statement_error(e: &tokio_postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    let class = &db.code().code()[..2];
    let fatal = matches!(db.severity(), "FATAL" | "PANIC");
    if class == "08" || class == "57" || fatal {
        None
    } else {
        Some(format!("{db:?}"))
    }
}

/// What one writer task saw in one cycle.
struct WriterOutcome {
    /// Rows whose INSERT returned Ok.
    acked: Vec<Key>,
    /// Rows of the INSERT that failed (the connection died under it).
    in_doubt: Vec<Key>,
    /// The next unused `n` of this writer.
    next_n: i64,
    /// An error the server *reported* (not a lost connection): always a bug,
    /// since every INSERT is valid.
    server_error: Option<String>,
}

/// Inserts rows `(writer, next_n..)` until an INSERT fails.
async fn write_until_error(
    client: Client,
    writer: i64,
    mut next_n: i64,
    mut rng: StdRng,
) -> WriterOutcome {
    let mut acked = Vec::new();
    loop {
        // Half single-row INSERTs, half with 2 to 5 rows.
        let rows = if rng.random_bool(0.5) {
            1
        } else {
            rng.random_range(2..=5)
        };
        let keys: Vec<Key> = (next_n..next_n + rows).map(|n| (writer, n)).collect();
        next_n += rows;
        match client.execute(insert_sql(&keys).as_str(), &[]).await {
            Ok(_) => acked.extend(keys),
            Err(e) => {
                return WriterOutcome {
                    acked,
                    in_doubt: keys,
                    next_n,
                    server_error: statement_error(&e).map(|db| format!("writer {writer}: {db}")),
                };
            }
        }
    }
}

/// Runs `FLUSH TABLE t` every 10–80 ms until it fails. Returns how many
/// flushes succeeded and an error the server reported, if any.
async fn flush_until_error(client: Client, mut rng: StdRng) -> (u32, Option<String>) {
    let mut flushes = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..=80))).await;
        match client.batch_execute("FLUSH TABLE t").await {
            Ok(()) => flushes += 1,
            Err(e) => {
                return (
                    flushes,
                    statement_error(&e).map(|db| format!("FLUSH TABLE t: {db}")),
                );
            }
        }
    }
}

/// The rows of `t` and the `(writer, n)` pairs that occur more than once.
struct Contents {
    present: HashSet<Key>,
    duplicates: Vec<(i64, i64, i64)>,
    rows: u64,
}

async fn read_contents(client: &Client) -> Contents {
    let duplicates = client
        .query(
            "SELECT writer, n, count(*) FROM t GROUP BY writer, n HAVING count(*) > 1",
            &[],
        )
        .await
        .expect("duplicate query")
        .iter()
        .map(|row| {
            (
                row.try_get::<_, i64>(0).expect("writer is a BIGINT"),
                row.try_get::<_, i64>(1).expect("n is a BIGINT"),
                row.try_get::<_, i64>(2).expect("count(*) is a BIGINT"),
            )
        })
        .collect();

    let mut present = HashSet::new();
    let mut streamed_duplicates = Vec::new();
    let mut rows = 0;
    let stream = client
        .query_raw("SELECT writer, n FROM t", std::iter::empty::<i64>())
        .await
        .expect("SELECT writer, n FROM t");
    let mut stream = std::pin::pin!(stream);
    while let Some(row) = stream.try_next().await.expect("read rows of t") {
        rows += 1;
        let key: Key = (
            row.try_get(0).expect("writer is a BIGINT"),
            row.try_get(1).expect("n is a BIGINT"),
        );
        if !present.insert(key) {
            streamed_duplicates.push(key);
        }
    }
    let mut contents = Contents {
        present,
        duplicates,
        rows,
    };
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

/// The state of a crash test across cycles: what must exist, where each
/// writer goes on, and the totals for the report.
pub(crate) struct CrashTest {
    seed: u64,
    rng: StdRng,
    /// Every this many cycles a task runs `FLUSH TABLE t` while writing.
    flush_every: u32,
    /// Rows that must be present from now on: acknowledged rows, and
    /// in-doubt rows that were present after the restart that followed
    /// their crash.
    must_exist: HashSet<Key>,
    next_n: [i64; WRITERS],
    pub(crate) acked_total: usize,
    pub(crate) in_doubt_total: usize,
    pub(crate) in_doubt_kept: usize,
    pub(crate) flushes_total: u32,
    /// Acknowledged rows that were gone after a restart (only counted when
    /// the caller allows losses; otherwise a loss fails the test).
    pub(crate) lost_total: usize,
    /// The slowest restart (from start to ready).
    pub(crate) slowest_restart: Duration,
}

/// What one cycle found.
pub(crate) struct CycleReport {
    /// Acknowledged rows missing after the restart.
    pub(crate) lost: Vec<Key>,
}

impl CrashTest {
    /// Creates table `t` on `server`. `flush_every`: every this many cycles
    /// `FLUSH TABLE t` runs during the writes.
    pub(crate) async fn new(server: &Server, seed: u64, flush_every: u32) -> CrashTest {
        server
            .connect()
            .await
            .batch_execute("CREATE TABLE t (time TIMESTAMP NOT NULL, writer BIGINT, n BIGINT)")
            .await
            .expect("CREATE TABLE t");
        CrashTest {
            seed,
            rng: StdRng::seed_from_u64(seed),
            flush_every,
            must_exist: HashSet::new(),
            next_n: [0; WRITERS],
            acked_total: 0,
            in_doubt_total: 0,
            in_doubt_kept: 0,
            flushes_total: 0,
            lost_total: 0,
            slowest_restart: Duration::ZERO,
        }
    }

    /// One cycle: writers (and maybe a FLUSH task) run, `crash` stops the
    /// server 50–600 ms in (it must leave it stopped), the server restarts,
    /// and `t` is checked. Acknowledged rows that are missing fail the test
    /// unless `allow_loss`; then they are reported and forgotten.
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
        for (w, &n) in self.next_n.iter().enumerate() {
            let client = server.connect().await;
            let writer_rng = StdRng::seed_from_u64(self.rng.random());
            let writer = i64::try_from(w).expect("writer id");
            writers.push(tokio::spawn(write_until_error(
                client, writer, n, writer_rng,
            )));
        }
        let flusher = if cycle.is_multiple_of(self.flush_every) {
            let client = server.connect().await;
            let flush_rng = StdRng::seed_from_u64(self.rng.random());
            Some(tokio::spawn(flush_until_error(client, flush_rng)))
        } else {
            None
        };

        let kill_after = Duration::from_millis(self.rng.random_range(KILL_AFTER_MS));
        tokio::time::sleep(kill_after).await;
        tokio::task::block_in_place(|| crash(server));

        let mut acked = Vec::new();
        let mut in_doubt = Vec::new();
        let mut server_errors = Vec::new();
        for (w, handle) in writers.into_iter().enumerate() {
            let outcome = tokio::time::timeout(WRITER_EXIT_TIMEOUT, handle)
                .await
                .unwrap_or_else(|_| {
                    panic!("{context}: writer {w} did not notice the dead server within {WRITER_EXIT_TIMEOUT:?}")
                })
                .expect("writer task panicked");
            self.next_n[w] = outcome.next_n;
            acked.extend(outcome.acked);
            in_doubt.extend(outcome.in_doubt);
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
            "{context}: the server rejected valid statements before it was killed: {server_errors:#?}"
        );

        let restart_started = Instant::now();
        tokio::task::block_in_place(|| server.restart());
        let restart_time = restart_started.elapsed();
        self.slowest_restart = self.slowest_restart.max(restart_time);

        self.acked_total += acked.len();
        self.in_doubt_total += in_doubt.len();
        self.must_exist.extend(acked.iter().copied());
        let in_doubt: HashSet<Key> = in_doubt.into_iter().collect();

        let client = server.connect().await;
        let contents = read_contents(&client).await;
        drop(client);

        assert!(
            contents.duplicates.is_empty(),
            "{context}: rows stored more than once (writer, n, count; -1 = seen by the scan only): {}",
            examples(contents.duplicates.iter().copied())
        );
        let lost: Vec<Key> = self
            .must_exist
            .iter()
            .filter(|k| !contents.present.contains(k))
            .copied()
            .collect();
        assert!(
            allow_loss || lost.is_empty(),
            "{context}: acknowledged rows lost (of {} that must exist): {}",
            self.must_exist.len(),
            examples(lost.iter().copied())
        );
        for k in &lost {
            self.must_exist.remove(k);
        }
        self.lost_total += lost.len();
        let unexpected: Vec<Key> = contents
            .present
            .iter()
            .filter(|k| !self.must_exist.contains(k) && !in_doubt.contains(k))
            .copied()
            .collect();
        assert!(
            unexpected.is_empty(),
            "{context}: rows present that were never sent, or in-doubt rows of an earlier cycle that came back: {}",
            examples(unexpected)
        );

        let kept: Vec<Key> = in_doubt
            .iter()
            .filter(|k| contents.present.contains(k))
            .copied()
            .collect();
        self.in_doubt_kept += kept.len();
        self.must_exist.extend(kept.iter().copied());
        assert_eq!(
            contents.rows,
            self.must_exist.len() as u64,
            "{context}: row count of t"
        );

        println!(
            "cycle {cycle}/{cycles}: crash after {} ms{}; {} acked, {} in doubt ({} kept), {} acknowledged rows lost; {} rows in t; restart took {} ms",
            kill_after.as_millis(),
            flushes.map_or(String::new(), |n| format!(" ({n} FLUSH TABLE done)")),
            acked.len(),
            in_doubt.len(),
            kept.len(),
            lost.len(),
            contents.rows,
            restart_time.as_millis(),
        );
        CycleReport { lost }
    }

    /// The closing lines of a run.
    pub(crate) fn report(&self, name: &str, cycles: u32) {
        println!(
            "{name}: {} FLUSH TABLE statements succeeded during writing",
            self.flushes_total
        );
        println!(
            "{name}: {} of the {} in-doubt rows were kept, the others never appeared",
            self.in_doubt_kept, self.in_doubt_total
        );
        println!(
            "{name}: {cycles} cycles, {} acknowledged rows, {} in doubt, {} acknowledged rows lost, slowest restart {} ms",
            self.acked_total,
            self.in_doubt_total,
            self.lost_total,
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
    let mut test = CrashTest::new(&server, seed, FLUSH_EVERY).await;
    for cycle in 1..=cycles {
        test.cycle(&mut server, cycle, cycles, false, Server::kill9)
            .await;
        if out_of_time(started) {
            cycles = cycle;
            break;
        }
    }
    assert!(
        test.acked_total > 0,
        "no INSERT was acknowledged in {cycles} cycles; the test proved nothing"
    );
    test.report("crash test", cycles);
}
