//! The materialized-view property test: whatever is written, in whatever
//! order, and however often the server is killed, every view converges to
//! its query run from scratch on the base table.
//!
//! A base table `m (time, k, v)` gets random batches: random keys, integer
//! values (so sums are exact in any order), and distinct random times over
//! ten minutes, so most batches are late or out of order for some bucket.
//! Over it: an aggregating view with every supported aggregate, one with
//! WHERE and HAVING, a view over that view (10 s → 1 min), a transform view
//! and a view created after rows exist (its backfill). Each cycle a writer
//! inserts batches (and sometimes `FLUSH TABLE m`, so invalidations also
//! have to survive in the catalog) until the server is SIGKILLed at a
//! random moment; after the restart and once `system.materialized_views`
//! says every view is current, each view must equal its query on the base.
//!
//! `SEXTANT_VIEWS_SEED` reproduces a run's data; `SEXTANT_VIEWS_CYCLES`
//! sets the number of kill cycles (default 8).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sextant_tests::{Server, env_or, text_rows};
use tokio_postgres::Client;

/// 2024-01-01T00:00:00Z in ns.
const T0: i64 = 1_704_067_200_000_000_000;
/// Rows fall in this many seconds after `T0`.
const SPAN_SECS: i64 = 600;

/// Each view, and the query over the base table it must equal.
const VIEWS: &[(&str, &str, &str)] = &[
    (
        "m_10s",
        "SELECT date_bin(INTERVAL '10 seconds', time) AS time, k, count(*) AS n, sum(v) AS s, \
         min(v) AS lo, max(v) AS hi, avg(v) AS a, count(DISTINCT v) AS d, \
         approx_distinct(v::bigint) AS ad, approx_percentile_cont(v, 0.5) AS p50, \
         first_value(v ORDER BY time) AS f, last_value(v ORDER BY time) AS l \
         FROM m GROUP BY 1, 2",
        "SELECT date_bin(INTERVAL '10 seconds', time) AS time, k, count(*), sum(v), min(v), \
         max(v), avg(v), count(DISTINCT v), approx_distinct(v::bigint), approx_percentile_cont(v, 0.5), \
         first_value(v ORDER BY time), last_value(v ORDER BY time) \
         FROM m GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "m_hot",
        "SELECT date_bin(INTERVAL '30 seconds', time) AS time, k, count(*) AS n, max(v) AS hi \
         FROM m WHERE v >= 50 GROUP BY 1, 2 HAVING count(*) > 1",
        "SELECT date_bin(INTERVAL '30 seconds', time), k, count(*), max(v) \
         FROM m WHERE v >= 50 GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2",
    ),
    (
        "m_1m",
        "SELECT date_bin(INTERVAL '1 minute', time) AS time, k, sum(n) AS n, sum(s) AS s, \
         min(lo) AS lo, max(hi) AS hi FROM m_10s GROUP BY 1, 2",
        "SELECT date_bin(INTERVAL '1 minute', time), k, count(*), sum(v), min(v), max(v) \
         FROM m GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "m_t",
        "SELECT time, k, v * 2 AS v2, upper(k) AS ku FROM m WHERE v >= 20",
        "SELECT time, k, v * 2, upper(k) FROM m WHERE v >= 20 ORDER BY 1, 2, 3",
    ),
];

/// Created once the base has rows: its first rows come from the backfill.
const LATE_VIEW: (&str, &str, &str) = (
    "m_late",
    "SELECT date_bin(INTERVAL '20 seconds', time) AS time, count(*) AS n, sum(v) AS s FROM m GROUP BY 1",
    "SELECT date_bin(INTERVAL '20 seconds', time), count(*), sum(v) FROM m GROUP BY 1 ORDER BY 1",
);

fn view_order(name: &str) -> &'static str {
    if name == "m_t" {
        "ORDER BY 1, 2, 3"
    } else if name == "m_late" {
        "ORDER BY 1"
    } else {
        "ORDER BY 1, 2"
    }
}

/// One random batch as an INSERT; times are unique across the run.
fn batch(rng: &mut StdRng, used: &mut HashSet<i64>) -> String {
    let n = rng.random_range(1..=40);
    let mut values = Vec::with_capacity(n);
    // Mostly around a moving "now", sometimes anywhere (late data).
    let center = rng.random_range(0..SPAN_SECS) * 1_000_000_000;
    for _ in 0..n {
        let t = loop {
            let offset = if rng.random_bool(0.3) {
                rng.random_range(0..SPAN_SECS * 1_000_000_000)
            } else {
                (center + rng.random_range(-5_000_000_000..5_000_000_000))
                    .clamp(0, SPAN_SECS * 1_000_000_000 - 1)
            };
            if used.insert(offset) {
                break T0 + offset;
            }
        };
        let k = ["a", "b", "c"][rng.random_range(0..3)];
        let v = rng.random_range(0..100);
        values.push(format!("(to_timestamp_nanos({t}), '{k}', {v}.0)"));
    }
    format!("INSERT INTO m VALUES {}", values.join(", "))
}

/// Waits until every view says it is current.
async fn caught_up(client: &Client, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = text_rows(
            client,
            "SELECT view_name, state, pending_buckets, last_error FROM system.materialized_views \
             WHERE state <> 'current' ORDER BY 1",
        )
        .await;
        if rows.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: views did not catch up in 120 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn check_views(client: &Client, views: &[(&str, &str, &str)], context: &str) {
    caught_up(client, context).await;
    for (name, _, truth) in views {
        let got = text_rows(
            client,
            &format!("SELECT * FROM {name} {}", view_order(name)),
        )
        .await;
        let want = text_rows(client, truth).await;
        if got != want {
            let first = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            panic!(
                "{context}: view {name} has {} rows, its query on the base {}; first difference at row {first}:\n view: {:?}\n base: {:?}",
                got.len(),
                want.len(),
                got.get(first),
                want.get(first)
            );
        }
        assert!(
            !want.is_empty(),
            "{context}: {name} is empty, the test proves nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_their_query_through_late_data_and_kill9() {
    let seed: u64 = env_or("SEXTANT_VIEWS_SEED", rand::random());
    let cycles: u32 = env_or("SEXTANT_VIEWS_CYCLES", 8);
    eprintln!("views property test: seed {seed}, {cycles} kill cycles");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut used = HashSet::new();
    let mut server = Server::start(&["--view-refresh-interval", "50ms"]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE m (time TIMESTAMP NOT NULL, k TEXT, v DOUBLE)")
        .await
        .unwrap();
    for (name, query, _) in VIEWS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE MATERIALIZED VIEW {name}: {e:?}"));
    }
    for _ in 0..20 {
        client
            .batch_execute(&batch(&mut rng, &mut used))
            .await
            .unwrap();
    }
    client
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW {} AS {}",
            LATE_VIEW.0, LATE_VIEW.1
        ))
        .await
        .unwrap();
    let mut all: Vec<(&str, &str, &str)> = VIEWS.to_vec();
    all.push(LATE_VIEW);
    check_views(&client, &all, "before any kill").await;
    drop(client);

    for cycle in 1..=cycles {
        let addr = server.pg_config();
        let batches: Vec<String> = (0..400).map(|_| batch(&mut rng, &mut used)).collect();
        let flush_every = rng.random_range(3..12);
        let writer = tokio::spawn(async move {
            let Ok((client, conn)) = tokio_postgres::connect(&addr, tokio_postgres::NoTls).await
            else {
                return 0;
            };
            tokio::spawn(conn);
            let mut acked = 0;
            for (i, b) in batches.iter().enumerate() {
                if client.batch_execute(b).await.is_err() {
                    break;
                }
                acked += 1;
                if i % flush_every == 0 && client.batch_execute("FLUSH TABLE m").await.is_err() {
                    break;
                }
            }
            acked
        });
        let kill_after = Duration::from_millis(rng.random_range(200..1500));
        tokio::time::sleep(kill_after).await;
        tokio::task::block_in_place(|| server.kill9());
        let acked = writer.await.unwrap();
        tokio::task::block_in_place(|| server.restart());
        let client = server.connect().await;
        let context = format!(
            "cycle {cycle}/{cycles} (seed {seed}): kill -9 after {} ms, {acked} batches acked",
            kill_after.as_millis()
        );
        let started = Instant::now();
        check_views(&client, &all, &context).await;
        let rows = text_rows(&client, "SELECT count(*) FROM m").await;
        eprintln!(
            "{context}: {} base rows, every view equals its query ({} ms after the restart)",
            rows[0][0],
            started.elapsed().as_millis()
        );
    }
}

#[tokio::test]
async fn views_survive_a_clean_restart_and_refuse_writes() {
    let mut server = Server::start(&["--view-refresh-interval", "50ms"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE);
             INSERT INTO cpu VALUES ('2024-01-01T00:00:10Z', 'a', 10), ('2024-01-01T00:01:10Z', 'a', 30);
             CREATE MATERIALIZED VIEW cpu_1m AS SELECT date_bin(INTERVAL '1 minute', time) AS time, host, avg(usage) AS avg FROM cpu GROUP BY 1, 2;",
        )
        .await
        .unwrap();
    caught_up(&client, "after CREATE").await;
    // Written only by its maintenance, whatever the path.
    let err = client
        .batch_execute("INSERT INTO cpu_1m VALUES (now(), 'x', 1)")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "42809", "{db:?}");
    assert!(
        db.message().contains("materialized view"),
        "{}",
        db.message()
    );
    let resp = sextant_tests::http_post(
        server.http_addr(),
        "/api/v2/write?bucket=sextant",
        &[("Content-Type", "text/plain")],
        b"cpu_1m,host=x avg=1 1704067200000000000\n",
    )
    .unwrap();
    assert_eq!(resp.status, 409, "{}", resp.body);
    assert!(resp.body.contains("materialized view"), "{}", resp.body);
    // A view is a materialized view to psql's catalog queries.
    let kinds = text_rows(
        &client,
        "SELECT relname, relkind FROM pg_catalog.pg_class WHERE relname IN ('cpu', 'cpu_1m') ORDER BY 1",
    )
    .await;
    assert_eq!(kinds, vec![vec!["cpu", "r"], vec!["cpu_1m", "m"]]);
    client
        .batch_execute("INSERT INTO cpu VALUES ('2024-01-01T00:00:50Z', 'a', 20)")
        .await
        .unwrap();
    drop(client);
    server.terminate();
    server.restart();
    let client = server.connect().await;
    caught_up(&client, "after restart").await;
    let rows = text_rows(&client, "SELECT time, host, avg FROM cpu_1m ORDER BY 1").await;
    assert_eq!(
        rows,
        vec![
            vec!["2024-01-01 00:00:00+00", "a", "15"],
            vec!["2024-01-01 00:01:00+00", "a", "30"]
        ]
    );
}

/// A refresh after a restart names its files past every refresh output
/// already committed. Before, the generation that names them restarted at
/// 1: a refresh wrote over a committed `r…` file of the view, the catalog
/// refused the duplicate name, the refresh deleted the object, and the view
/// failed every query and refresh after ("Object ... not found").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_after_a_restart_never_reuse_a_file_name() {
    let mut server = Server::start(&["--view-refresh-interval", "50ms"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE);
             CREATE MATERIALIZED VIEW cpu_1m AS SELECT date_bin(INTERVAL '1 minute', time) AS time, host, avg(usage) AS avg FROM cpu GROUP BY 1, 2;",
        )
        .await
        .unwrap();
    let query = "SELECT date_bin(INTERVAL '1 minute', time) AS time, host, avg(usage) AS avg FROM cpu GROUP BY 1, 2 ORDER BY 1, 2";
    let view = "SELECT time, host, avg FROM cpu_1m ORDER BY 1, 2";
    // One write per minute of one hour partition, each refreshed on its
    // own: a file each beside the earlier ones.
    let mut client = client;
    for minutes in [0..3, 3..6] {
        for m in minutes {
            client
                .batch_execute(&format!(
                    "INSERT INTO cpu VALUES ('2024-01-01T00:{m:02}:10Z', 'a', {m})"
                ))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        caught_up(&client, "after the writes").await;
        assert_eq!(
            text_rows(&client, view).await,
            text_rows(&client, query).await
        );
        drop(client);
        server.terminate();
        server.restart();
        client = server.connect().await;
    }
    caught_up(&client, "after the last restart").await;
    assert_eq!(
        text_rows(&client, view).await,
        text_rows(&client, query).await
    );
    assert_eq!(text_rows(&client, view).await.len(), 6);
    let errors = text_rows(
        &client,
        "SELECT count(*) FROM system.materialized_views WHERE last_error IS NOT NULL",
    )
    .await;
    assert_eq!(errors, vec![vec!["0"]]);
}
