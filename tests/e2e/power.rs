//! Power loss, a full disk and a failing fsync, on a file system that
//! forgets what was not fsynced (`sextant_tests::faultfs`, FUSE).
//!
//! - The crash test of `crash`, on every ingest path at once (`paths`),
//!   with a power cut instead of a bare `kill -9`: every acknowledged row
//!   survives with `--wal-sync always`
//!   (the WAL, the SQLite catalog, Parquet files and the directory entries
//!   of all three live on the forgetful file system, and `FLUSH TABLE` runs
//!   every other cycle), and with `--wal-sync never` the same test loses
//!   acknowledged rows: proof that it can tell.
//! - A full disk (ENOSPC): writes are refused with 53100 / HTTP 507 /
//!   gRPC `RESOURCE_EXHAUSTED` while
//!   queries go on; once space is freed ingest resumes without a restart,
//!   and nothing acknowledged is lost through a power cut.
//! - An fsync that fails (EIO, with the dirty data dropped as Linux does):
//!   the write is not acknowledged, the next one succeeds in a new segment,
//!   and after a power cut every acknowledged row is there and the failed
//!   one is not.

use std::fs::File;
use std::path::PathBuf;

use sextant_tests::faultfs::FaultFs;
use sextant_tests::{Server, env_or, http_post, text_rows};
use tempfile::TempDir;

use crate::crash::CrashTest;

/// A mounted test file system with a data directory whose entry is durable.
struct Disk {
    fs: FaultFs,
    data: PathBuf,
    _mountpoint: TempDir,
}

fn disk() -> Disk {
    let mountpoint = tempfile::tempdir().expect("mount point");
    let fs = FaultFs::mount(mountpoint.path());
    let data = fs.path().join("data");
    std::fs::create_dir(&data).expect("create the data directory");
    // Whoever creates the data directory makes its entry durable; from
    // there on it is the server's job.
    File::open(fs.path())
        .and_then(|d| d.sync_all())
        .expect("fsync the mount point");
    Disk {
        fs,
        data,
        _mountpoint: mountpoint,
    }
}

/// Runs the crash cycles with a power cut after each `kill -9`; returns the
/// test's state for its totals.
async fn power_cycles(
    wal_sync: &str,
    cycles: u32,
    allow_loss: bool,
    started: std::time::Instant,
) -> (CrashTest, Disk, u32) {
    let seed: u64 = env_or("SEXTANT_CRASH_SEED", rand::random());
    println!(
        "power-loss test (--wal-sync {wal_sync}): seed {seed} (reproduce with SEXTANT_CRASH_SEED={seed}), up to {cycles} cycles"
    );
    let mut disk = disk();
    let mut server = Server::start_in(&disk.data, &["--wal-sync", wal_sync]);
    // Every ingest path writes meanwhile, each with its own writers.
    let mut test = CrashTest::new(&server, seed, 2, &crate::paths::Path::ALL).await;
    let mut ran = 0;
    for cycle in 1..=cycles {
        ran = cycle;
        let fs = &mut disk.fs;
        let report = test
            .cycle(&mut server, cycle, cycles, allow_loss, |server| {
                server.kill9();
                fs.power_cut();
            })
            .await;
        if (allow_loss && report.lost > 0) || crate::crash::out_of_time(started) {
            break;
        }
    }
    drop(server);
    (test, disk, ran)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_power_loss() {
    let cycles: u32 = env_or("SEXTANT_POWER_CYCLES", 10);
    // For the soak (tests/soak.sh): a new disk and server every this many
    // cycles, so that each cycle's read-back of every acknowledged row
    // stays as short as in the first cycles. One round in CI.
    let round: u32 = env_or("SEXTANT_POWER_ROUND", cycles).max(1);
    let name = "power-loss test (--wal-sync always)";
    let started = std::time::Instant::now();
    let (mut done, mut rounds, mut acked, mut lost) = (0u32, 0u32, 0usize, 0usize);
    let mut slowest = std::time::Duration::ZERO;
    while done < cycles && !(done > 0 && crate::crash::out_of_time(started)) {
        let (test, disk, ran) =
            power_cycles("always", round.min(cycles - done), false, started).await;
        check_and_report(&test, &disk, ran, name);
        done += ran;
        rounds += 1;
        acked += test.acked_total();
        lost += test.lost_total();
        slowest = slowest.max(test.slowest_restart);
    }
    if rounds > 1 {
        println!(
            "{name}: {rounds} rounds: {done} cycles, {acked} acknowledged rows, {lost} acknowledged rows lost, slowest restart {} ms",
            slowest.as_millis()
        );
    }
}

/// A run without loss proves something only if writes were acknowledged,
/// `FLUSH TABLE` put the Parquet files and the catalog to the test, and
/// every cycle cut the power; then its totals are printed as `name`.
fn check_and_report(test: &CrashTest, disk: &Disk, cycles: u32, name: &str) {
    assert!(
        test.acked_total() > 0,
        "no write was acknowledged in {cycles} cycles; the test proved nothing"
    );
    assert!(
        test.flushes_total > 0,
        "no FLUSH TABLE succeeded: the Parquet files and the catalog were not put to the test"
    );
    let stats = disk.fs.stats();
    println!("{name}: file system: {stats:?}");
    assert_eq!(stats.power_cuts, u64::from(cycles));
    test.report(name, cycles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_loses_acknowledged_writes_with_wal_sync_never() {
    let (test, disk, cycles) = power_cycles("never", 5, true, std::time::Instant::now()).await;
    test.report("power-loss test (--wal-sync never)", cycles);
    println!("file system: {:?}", disk.fs.stats());
    assert!(
        test.lost_total() > 0,
        "with --wal-sync never, {cycles} power cuts lost no acknowledged row: the power-loss test cannot tell a WAL that skips fsync"
    );
}

/// A PostgreSQL 15 server (Debian's binaries, run as the `postgres` user)
/// whose data directory is on the forgetful file system: the shared
/// catalog (`--catalog postgres://...`) under power cuts, its durability
/// PostgreSQL's own fsyncs. Its socket and log are outside.
struct PostgresOnDisk {
    data: PathBuf,
    port: u16,
    outside: TempDir,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Runs `program` as the `postgres` user; panics with its output on failure.
fn as_postgres(program: &str, args: &[&str]) {
    let out = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} as postgres: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PostgresOnDisk {
    /// initdb (which fsyncs what it wrote) on `disk`, then starts it.
    fn init(disk: &Disk) -> PostgresOnDisk {
        assert!(
            std::path::Path::new(PG_BIN).join("initdb").exists(),
            "PostgreSQL 15 is not installed (tests/run-all.sh installs postgresql-15)"
        );
        let id = |flag: &str| -> u32 {
            let out = std::process::Command::new("id")
                .args([flag, "postgres"])
                .output()
                .expect("id postgres");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("the postgres user's id")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let root = disk.fs.path().join("pg");
        std::fs::create_dir(&root).expect("create the PostgreSQL directory");
        std::os::unix::fs::chown(&root, Some(uid), Some(gid)).expect("chown to postgres");
        for dir in [disk.fs.path(), root.as_path()] {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .expect("fsync the PostgreSQL directory's entry");
        }
        let outside = tempfile::tempdir().expect("a directory for the socket and log");
        std::os::unix::fs::chown(outside.path(), Some(uid), Some(gid)).expect("chown to postgres");
        let data = root.join("data");
        as_postgres(
            &format!("{PG_BIN}/initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale",
                "C",
            ],
        );
        // initdb fsyncs what is inside the data directory, not the
        // directory's own entry (a power cut forgot it on the first run).
        File::open(&root)
            .and_then(|d| d.sync_all())
            .expect("fsync the data directory's entry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = PostgresOnDisk {
            data,
            port,
            outside,
        };
        pg.start();
        pg
    }

    /// Starts it (recovering from its WAL after a power cut) and waits
    /// until it accepts connections.
    fn start(&self) {
        let log = self.outside.path().join("log");
        as_postgres(
            &format!("{PG_BIN}/pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-w",
                "-l",
                log.to_str().unwrap(),
                "-o",
                &format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1",
                    self.port,
                    self.outside.path().display()
                ),
                "start",
            ],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `kill -9` of the postmaster and every process it started, as a
    /// power cut stops them; returns once all are gone.
    fn kill9(&self) {
        let Ok(pid) = std::fs::read_to_string(self.data.join("postmaster.pid")) else {
            return;
        };
        let Some(postmaster) = pid
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return;
        };
        // Its children, found before it dies (they are reparented after).
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so from the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(postmaster)
                && let Ok(pid) = entry.file_name().to_string_lossy().parse()
            {
                pids.push(pid);
            }
        }
        // kill(1): those already gone are no error here.
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .args(pids.iter().map(i32::to_string))
            .stderr(std::process::Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pids
            .iter()
            .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL's processes {pids:?} outlived kill -9"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for PostgresOnDisk {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The all-paths crash test on a PostgreSQL catalog whose data directory,
/// like Sextant's WAL and Parquet files, is on the forgetful file system:
/// each cut kills both servers and forgets what neither fsynced; every
/// acknowledged row survives, and so does every file the catalog lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_power_loss_on_a_postgres_catalog() {
    let cycles: u32 = env_or("SEXTANT_POWER_PG_CYCLES", 4);
    let seed: u64 = env_or("SEXTANT_CRASH_SEED", rand::random());
    println!(
        "power-loss test on a PostgreSQL catalog: seed {seed} (reproduce with SEXTANT_CRASH_SEED={seed}), {cycles} cycles"
    );
    let mut disk = disk();
    let pg = PostgresOnDisk::init(&disk);
    let url = pg.url();
    let mut server = Server::start_in(
        &disk.data,
        &[
            "--wal-sync",
            "always",
            "--catalog",
            &url,
            "--cluster-secret",
            crate::catalog::SECRET,
        ],
    );
    let mut test = CrashTest::new(&server, seed, 2, &crate::paths::Path::ALL).await;
    for cycle in 1..=cycles {
        let fs = &mut disk.fs;
        let pg = &pg;
        test.cycle(&mut server, cycle, cycles, false, |server| {
            server.kill9();
            pg.kill9();
            fs.power_cut();
            pg.start();
        })
        .await;
    }
    drop(server);
    // PostgreSQL came back from each cut by replaying its own WAL.
    let log = std::fs::read_to_string(pg.outside.path().join("log")).expect("PostgreSQL's log");
    assert_eq!(
        log.matches("automatic recovery in progress").count(),
        cycles as usize,
        "PostgreSQL did not recover once per power cut:\n{log}"
    );
    check_and_report(
        &test,
        &disk,
        cycles,
        "power-loss test on a PostgreSQL catalog (--wal-sync always)",
    );
}

/// docs/durability.md quotes one run's summary lines of the power-loss
/// tests: they have the shape `CrashTest::report` prints.
#[test]
fn durability_md_quotes_the_power_loss_summaries() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/durability.md"),
    )
    .expect("read docs/durability.md");
    for prefix in [
        "power-loss test (--wal-sync always): ",
        "power-loss test (--wal-sync never): ",
        "power-loss test on a PostgreSQL catalog (--wal-sync always): ",
    ] {
        let line = doc
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("docs/durability.md quotes no {prefix:?} line"));
        let shape: Vec<&str> = line[prefix.len()..]
            .split(' ')
            .map(|w| if w.parse::<u64>().is_ok() { "N" } else { w })
            .collect();
        assert_eq!(
            shape.join(" "),
            "N cycles, N acknowledged rows, N acknowledged rows lost, slowest restart N ms",
            "{line}"
        );
    }
}

/// `count(*)` of `t` over pgwire.
async fn count(server: &Server) -> i64 {
    let rows = text_rows(&server.connect().await, "SELECT count(*) FROM t").await;
    rows[0][0].parse().expect("a count")
}

/// `n` line-protocol rows of `t` starting at `first` (one per second).
fn lines(first: u64, n: u64) -> Vec<u8> {
    (first..first + n)
        .map(|i| {
            format!(
                "t,host=h{} v={i}i,pad=\"{}\" {}\n",
                i % 7,
                "x".repeat(200),
                1_767_225_600 + i
            )
        })
        .collect::<String>()
        .into_bytes()
}

fn write_lines(server: &Server, first: u64, n: u64) -> sextant_tests::HttpResponse {
    http_post(
        server.http_addr(),
        "/api/v2/write?bucket=b&precision=s",
        &[],
        &lines(first, n),
    )
    .expect("HTTP request")
}

/// `FLUSH TABLE t`, which must fail (`when`, for the output): its
/// SQLSTATE and message.
async fn refused_flush(client: &tokio_postgres::Client, when: &str) -> (String, String) {
    let err = client
        .batch_execute("FLUSH TABLE t")
        .await
        .expect_err("FLUSH TABLE succeeded");
    let db = err.as_db_error().expect("a server error");
    println!("FLUSH TABLE {when}: {} {}", db.code().code(), db.message());
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_ingest_resumes_once_space_is_freed() {
    let mut disk = disk();
    let mut server = Server::start_in(&disk.data, &[]);
    let r = write_lines(&server, 0, 100);
    assert_eq!(r.status, 204, "{}", r.body);
    let mut acked = 100;

    // 2 MiB more room, then write until the disk is full.
    disk.fs
        .set_capacity(Some(disk.fs.used_bytes() + 2 * 1024 * 1024));
    let refused = loop {
        let r = write_lines(&server, acked, 500);
        match r.status {
            204 => acked += 500,
            _ => break r,
        }
        assert!(acked < 1_000_000, "the disk never filled up");
    };
    println!(
        "disk full after {acked} rows: HTTP {}: {}",
        refused.status, refused.body
    );
    assert_eq!(refused.status, 507, "{}", refused.body);
    let body: serde_json::Value = serde_json::from_str(&refused.body).expect("a JSON body");
    let message = body.to_string();
    assert!(
        message.contains("full") && message.contains("No space left on device"),
        "the error names the problem: {message}"
    );
    assert!(disk.fs.stats().enospc > 0);
    // The refused write was cut back out of the WAL, which freed its bytes
    // again: take away what is left so that every write is refused.
    disk.fs.set_capacity(Some(disk.fs.used_bytes()));

    // pgwire: 53100; queries still answer.
    let client = server.connect().await;
    let err = client
        .batch_execute("INSERT INTO t (time, host, v) VALUES (now(), 'x', -1)")
        .await
        .expect_err("an INSERT on a full disk");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53100", "{db:?}");
    // Flight SQL: RESOURCE_EXHAUSTED.
    let (code, message) = crate::flight::code(
        crate::flight::client(&server)
            .await
            .execute_update(
                "INSERT INTO t (time, host, v) VALUES (now(), 'x', -1)".into(),
                None,
            )
            .await
            .expect_err("a Flight SQL INSERT on a full disk"),
    );
    assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
    assert_eq!(count(&server).await, i64::try_from(acked).unwrap());
    let still = write_lines(&server, acked, 500);
    assert_eq!(still.status, 507, "still full: {}", still.body);
    // Persistence on the full disk: the Parquet file cannot be written;
    // FLUSH TABLE says so with 53100 and the rows stay in the buffer.
    let (code, message) = refused_flush(&client, "on a full disk").await;
    assert_eq!(code, "53100", "{message}");
    assert!(message.contains("No space left on device"), "{message}");
    assert_eq!(count(&server).await, i64::try_from(acked).unwrap());

    // Space is freed: ingest resumes without a restart.
    disk.fs.set_capacity(None);
    let r = write_lines(&server, acked, 500);
    assert_eq!(r.status, 204, "after space was freed: {}", r.body);
    acked += 500;
    client
        .batch_execute("INSERT INTO t (time, host, v) VALUES ('2026-01-02T00:00:00Z', 'x', -1)")
        .await
        .expect("INSERT after space was freed");
    acked += 1;
    assert_eq!(count(&server).await, i64::try_from(acked).unwrap());

    // The catalog on a full disk: the Parquet file is written, its commit
    // in the catalog is refused (SQLITE_FULL): 53100 again, and the rows
    // stay where they were.
    disk.fs.set_full_for(Some("catalog.sqlite"));
    let (code, message) = refused_flush(&client, "with the catalog on a full disk").await;
    assert_eq!(code, "53100", "{message}");
    assert!(message.contains("full"), "{message}");
    assert_eq!(count(&server).await, i64::try_from(acked).unwrap());
    disk.fs.set_full_for(None);
    client
        .batch_execute("FLUSH TABLE t")
        .await
        .expect("FLUSH TABLE once the catalog has room");
    let files = text_rows(
        &client,
        "SELECT count(*) FROM system.files WHERE table_name = 't'",
    )
    .await;
    assert_ne!(files[0][0], "0", "FLUSH TABLE wrote no file");
    assert_eq!(count(&server).await, i64::try_from(acked).unwrap());

    // Nothing acknowledged is lost, through a power cut.
    server.kill9();
    disk.fs.power_cut();
    server.restart();
    assert_eq!(count(&server).await, i64::try_from(acked).unwrap());
    let r = write_lines(&server, 10_000_000, 10);
    assert_eq!(r.status, 204, "after the restart: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_fsync_is_not_acknowledged_and_the_wal_goes_on() {
    let mut disk = disk();
    let mut server = Server::start_in(&disk.data, &[]);
    let r = write_lines(&server, 0, 100);
    assert_eq!(r.status, 204, "{}", r.body);

    disk.fs.fail_fsyncs(".wal", 1);
    let failed = write_lines(&server, 1_000, 50);
    println!("failed fsync: HTTP {}: {}", failed.status, failed.body);
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert!(
        failed.body.contains("Input/output error"),
        "the error names the problem: {}",
        failed.body
    );
    assert_eq!(disk.fs.stats().eio, 1);

    // The WAL does not retry the fsync (the data is gone from the page
    // cache's dirty set): it cuts the segment back and goes on in a new one.
    let r = write_lines(&server, 2_000, 100);
    assert_eq!(
        r.status, 204,
        "the write after the failed fsync: {}",
        r.body
    );
    let v = text_rows(
        &server.connect().await,
        "SELECT count(*), count(*) FILTER (WHERE v >= 1000 AND v < 2000) FROM t",
    )
    .await;
    assert_eq!(v, vec![vec!["200".to_string(), "0".to_string()]]);

    server.kill9();
    disk.fs.power_cut();
    server.restart();
    let v = text_rows(
        &server.connect().await,
        "SELECT count(*), count(*) FILTER (WHERE v >= 1000 AND v < 2000) FROM t",
    )
    .await;
    assert_eq!(
        v,
        vec![vec!["200".to_string(), "0".to_string()]],
        "after a power cut: every acknowledged row, not the failed write"
    );
    assert!(
        server.log().contains("WAL recovered from a failed write"),
        "{}",
        server.log_tail(30)
    );
}
