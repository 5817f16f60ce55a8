//! `DELETE` among concurrent writers, then `kill -9`, restart and
//! compaction. Writers insert rows `(w, n)` over their own connections and
//! note when each INSERT was acknowledged; some rows are in Parquet already
//! (a flush first), the rest in the write buffer; `DELETE ... WHERE n % 2 =
//! 0` runs while they write. After `kill -9` and a restart, and again after
//! `COMPACT TABLE`:
//!
//! - an even row acknowledged before the DELETE was sent is gone;
//! - an odd row acknowledged at any time, and any row acknowledged after the
//!   DELETE answered, is there exactly once;
//! - an even row acknowledged while the DELETE ran is there at most once;
//! - the DELETE's count is at least the even rows acknowledged before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sextant_tests::Server;

const WRITERS: i64 = 3;

type Acked = Arc<Mutex<Vec<(i64, i64, Instant)>>>;

async fn insert(c: &tokio_postgres::Client, w: i64, n: i64) -> bool {
    // Rows of one writer 10 ms apart from 2026-01-01: several per partition.
    let sql = format!(
        "INSERT INTO d VALUES (to_timestamp_nanos({}), {w}, {n})",
        1_767_225_600_000_000_000i64 + n * 10_000_000 + w
    );
    c.batch_execute(&sql).await.is_ok()
}

fn writer(
    addr: String,
    w: i64,
    from: i64,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&addr, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let mut n = from;
        while !stop.load(Ordering::SeqCst) {
            if !insert(&c, w, n).await {
                break;
            }
            acked.lock().unwrap().push((w, n, Instant::now()));
            n += 1;
        }
        n
    })
}

async fn rows(c: &tokio_postgres::Client) -> HashMap<(i64, i64), usize> {
    let mut out = HashMap::new();
    for r in c.query("SELECT w, n FROM d", &[]).await.unwrap() {
        *out.entry((r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .or_default() += 1;
    }
    out
}

fn check(
    stage: &str,
    got: &HashMap<(i64, i64), usize>,
    acked: &[(i64, i64, Instant)],
    sent: Instant,
    done: Instant,
) {
    let mut checked = 0;
    for (w, n, at) in acked {
        let count = got.get(&(*w, *n)).copied().unwrap_or(0);
        let even = n % 2 == 0;
        if even && *at < sent {
            assert_eq!(count, 0, "{stage}: ({w}, {n}) was deleted, yet it is there");
        } else if !even || *at > done {
            assert_eq!(count, 1, "{stage}: ({w}, {n}) was acknowledged and kept");
        } else {
            assert!(count <= 1, "{stage}: ({w}, {n}) twice");
        }
        checked += 1;
    }
    assert!(
        got.values().all(|c| *c == 1),
        "{stage}: a row appears twice"
    );
    eprintln!(
        "{stage}: {checked} acknowledged rows checked, {} rows in the table",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_among_writers_holds_across_kill_9_and_compaction() {
    let mut server = Server::start(&[]);
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE d (time TIMESTAMP NOT NULL, w BIGINT, n BIGINT)")
        .await
        .unwrap();
    let addr = server.pg_config();
    let acked: Acked = Arc::default();
    // Some rows in Parquet first, then writers all along.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| writer(addr.clone(), w, 0, acked.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.batch_execute("FLUSH TABLE d").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let deleted = c
        .execute("DELETE FROM d WHERE n % 2 = 0", &[])
        .await
        .unwrap();
    let done = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before = acked
        .iter()
        .filter(|(_, n, at)| n % 2 == 0 && *at < sent)
        .count() as u64;
    assert!(
        deleted >= before && before > 0,
        "DELETE {deleted}, {before} even rows acknowledged before it"
    );
    eprintln!(
        "{} rows acknowledged, DELETE {deleted} ({before} even ones acknowledged before it)",
        acked.len()
    );
    check("before the crash", &rows(&c).await, &acked, sent, done);

    drop(c);
    server.kill9();
    server.restart();
    let c = server.connect().await;
    check("after kill -9", &rows(&c).await, &acked, sent, done);

    c.batch_execute("COMPACT TABLE d").await.unwrap();
    let got = rows(&c).await;
    check("after COMPACT TABLE", &got, &acked, sent, done);
    // The files hold only what queries see, and the buffer the rest.
    let in_files: i64 = c
        .query_one(
            "SELECT CAST(coalesce(sum(rows), 0) AS BIGINT) FROM system.files WHERE table_name = 'd'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        in_files as usize <= got.len(),
        "{in_files} rows in files, {} seen",
        got.len()
    );
}
