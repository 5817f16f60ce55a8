//! Keyed tables end to end.
//!
//! - A property test: random upserts and deletes (by key, and by a field:
//!   the keys whose current row matches), against a model
//!   (a map by key), across flushes, compactions, clean restarts and
//!   `kill -9`; after every step the table equals the model. Twice: a SQL
//!   table with `PRIMARY KEY` (the newer row replaces the older), and a
//!   line-protocol table (a point merges its fields into the stored one).
//! - Writers upsert their keys over and over while the server is killed:
//!   every key reads back its last acknowledged value (or the one write in
//!   flight when the server died).
//! - EXPLAIN shows the merge (`DedupExec`) while a partition's rows are in
//!   more than one place, and none after compaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sextant_tests::{Server, env_or, http_post, text_rows};

/// 2024-01-01T00:00:00Z, ns.
const T0: i64 = 1_704_067_200_000_000_000;
const MINUTE: i64 = 60_000_000_000;
const HOSTS: u32 = 6;
/// Times 0..TIMES minutes apart by 25 minutes: three hourly partitions.
const TIMES: i64 = 6;

fn time_of(t: i64) -> i64 {
    T0 + t * 25 * MINUTE
}

type Key = (u32, i64);

/// Per writer: the last acknowledged value, and the value in flight.
type Writers = BTreeMap<u32, (Option<i64>, i64)>;

/// The step's name, for the failure message.
async fn lifecycle_step(
    rng: &mut StdRng,
    server: &mut Server,
    c: &mut tokio_postgres::Client,
    table: &str,
) -> Option<&'static str> {
    let roll = rng.random_range(0..100);
    let step = match roll {
        0..8 => {
            c.batch_execute(&format!("FLUSH TABLE {table}"))
                .await
                .unwrap();
            "flush"
        }
        8..14 => {
            c.batch_execute(&format!("COMPACT TABLE {table}"))
                .await
                .unwrap();
            "compact"
        }
        14..17 => {
            server.terminate();
            server.restart();
            *c = server.connect().await;
            "restart"
        }
        17..20 => {
            server.kill9();
            server.restart();
            *c = server.connect().await;
            "kill -9"
        }
        _ => return None,
    };
    Some(step)
}

async fn delete_step(
    rng: &mut StdRng,
    c: &tokio_postgres::Client,
    table: &str,
    model: &mut BTreeMap<Key, Vec<Option<i64>>>,
    newest: i64,
) -> String {
    let host = rng.random_range(0..HOSTS);
    let kind = rng.random_range(0..3);
    if kind == 2 {
        // By a field: the keys whose current `a` matches go, with their
        // older rows; a key whose older `a` matched stays.
        let below = rng.random_range(0..=newest + 1);
        let n = c
            .execute(&format!("DELETE FROM {table} WHERE a < {below}"), &[])
            .await
            .unwrap();
        let before = model.len();
        model.retain(|_, f| f[0].is_none_or(|a| a >= below));
        assert_eq!(
            n as usize,
            before - model.len(),
            "DELETE a < {below}: count"
        );
        format!("delete a<{below}")
    } else if kind == 0 {
        let n = c
            .execute(&format!("DELETE FROM {table} WHERE host = 'h{host}'"), &[])
            .await
            .unwrap();
        let before = model.len();
        model.retain(|(h, _), _| *h != host);
        assert_eq!(
            n as usize,
            before - model.len(),
            "DELETE host = h{host}: count"
        );
        format!("delete h{host}")
    } else {
        let t = rng.random_range(0..TIMES);
        let n = c
            .execute(
                &format!(
                    "DELETE FROM {table} WHERE host = 'h{host}' AND time = to_timestamp_nanos({})",
                    time_of(t)
                ),
                &[],
            )
            .await
            .unwrap();
        let gone = model.remove(&(host, t)).is_some();
        assert_eq!(n, u64::from(gone), "DELETE h{host} at {t}: count");
        format!("delete h{host}@{t}")
    }
}

async fn table_rows(c: &tokio_postgres::Client, table: &str) -> BTreeMap<Key, Vec<Option<i64>>> {
    let mut out = BTreeMap::new();
    let sql = format!(
        "SELECT host, CAST(extract(epoch FROM time) AS BIGINT), a, b FROM {table} ORDER BY 1, 2"
    );
    let got = c.query(&sql, &[]).await;
    for r in got.unwrap_or_else(|e| panic!("{sql}: {e:?}")) {
        let host: String = r.get(0);
        let secs: i64 = r.get(1);
        let t = (secs * 1_000_000_000 - T0) / (25 * MINUTE);
        let key = (host[1..].parse().unwrap(), t);
        let prev = out.insert(key, vec![r.get(2), r.get(3)]);
        assert!(prev.is_none(), "{table}: two rows of key {key:?}");
    }
    out
}

async fn write_lines(server: &Server, body: String) {
    let addr = server.http_addr();
    let r = tokio::task::spawn_blocking(move || {
        http_post(addr, "/api/v2/write?precision=ns", &[], body.as_bytes())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.status, 204, "line protocol write: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_and_deletes_equal_a_model_through_flushes_compactions_and_crashes() {
    let seed: u64 = env_or("SEXTANT_KEYS_SEED", rand::random());
    let steps: usize = env_or("SEXTANT_KEYS_STEPS", 120);
    eprintln!("seed {seed} (SEXTANT_KEYS_SEED), {steps} steps per table");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start(&[]);
    let mut c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE kv (time TIMESTAMP NOT NULL, host TEXT, a BIGINT, b BIGINT, PRIMARY KEY (host, time))",
    )
    .await
    .unwrap();

    // `kv`: SQL INSERTs, the newer row replaces the older whole.
    // `lp`: line protocol, a point's fields merge into the stored point.
    for (table, lp) in [("kv", false), ("lp", true)] {
        let mut model: BTreeMap<Key, Vec<Option<i64>>> = BTreeMap::new();
        let mut history: Vec<String> = vec![];
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut value = 0i64;
        if lp {
            // The table exists from its first point on.
            write_lines(&server, format!("lp,host=h0 a=0i,b=0i {}", time_of(0))).await;
            model.insert((0, 0), vec![Some(0), Some(0)]);
        }
        for step in 0..steps {
            let what = if let Some(s) = lifecycle_step(&mut rng, &mut server, &mut c, table).await {
                s.to_string()
            } else if rng.random_range(0..10) == 0 && !model.is_empty() {
                delete_step(&mut rng, &c, table, &mut model, value).await
            } else {
                // One write of 1..=4 rows; keys may repeat within it.
                let n = rng.random_range(1..=4);
                let mut rows = vec![];
                for _ in 0..n {
                    let key = (rng.random_range(0..HOSTS), rng.random_range(0..TIMES));
                    value += 1;
                    // Each field present or not (NULL in SQL, absent in LP),
                    // at least one in line protocol.
                    let a = rng.random_bool(0.7).then_some(value);
                    let b = (a.is_none() || rng.random_bool(0.5)).then_some(-value);
                    rows.push((key, vec![a, b]));
                }
                if lp {
                    let body: Vec<String> = rows
                        .iter()
                        .map(|((h, t), f)| {
                            let fields: Vec<String> = ["a", "b"]
                                .iter()
                                .zip(f)
                                .filter_map(|(name, v)| v.map(|v| format!("{name}={v}i")))
                                .collect();
                            format!("{table},host=h{h} {} {}", fields.join(","), time_of(*t))
                        })
                        .collect();
                    write_lines(&server, body.join("\n")).await;
                    for (key, f) in rows {
                        let stored = model.entry(key).or_insert_with(|| vec![None, None]);
                        for (s, v) in stored.iter_mut().zip(f) {
                            if v.is_some() {
                                *s = v;
                            }
                        }
                    }
                } else {
                    let values: Vec<String> = rows
                        .iter()
                        .map(|((h, t), f)| {
                            let v =
                                |x: &Option<i64>| x.map_or("NULL".to_string(), |x| x.to_string());
                            format!(
                                "(to_timestamp_nanos({}), 'h{h}', {}, {})",
                                time_of(*t),
                                v(&f[0]),
                                v(&f[1])
                            )
                        })
                        .collect();
                    let n = c
                        .execute(&format!("INSERT INTO kv VALUES {}", values.join(", ")), &[])
                        .await
                        .unwrap();
                    assert_eq!(n as usize, rows.len(), "INSERT counts every row it wrote");
                    for (key, f) in rows {
                        model.insert(key, f);
                    }
                }
                "write".to_string()
            };
            *counts
                .entry(match what.as_str() {
                    w if w.starts_with("delete") => "delete",
                    "write" => "write",
                    "flush" => "flush",
                    "compact" => "compact",
                    "restart" => "restart",
                    _ => "kill -9",
                })
                .or_default() += 1;
            history.push(what);
            let got = table_rows(&c, table).await;
            assert_eq!(
                got,
                model,
                "{table}, seed {seed}, step {step} ({}): the table differs from the model; steps so far: {history:?}\n{}",
                history.last().unwrap(),
                server.log_tail(20)
            );
        }
        eprintln!("{table}: {counts:?}; {} keys at the end", model.len());
    }
    // The table tells the same after its last compaction.
    for table in ["kv", "lp"] {
        c.batch_execute(&format!("FLUSH TABLE {table}; COMPACT TABLE {table}"))
            .await
            .unwrap();
        let files = text_rows(
            &c,
            &format!("SELECT count(*) FROM system.files WHERE table_name = '{table}' GROUP BY partition_start HAVING count(*) > 1"),
        )
        .await;
        assert!(
            files.is_empty(),
            "{table}: a partition in several files after compaction: {files:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_acknowledged_value_of_each_key_survives_kill_9() {
    const WRITERS: u32 = 3;
    const KEYS: i64 = 20;
    let mut server = Server::start(&[]);
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE up (time TIMESTAMP NOT NULL, w BIGINT, k BIGINT, n BIGINT, PRIMARY KEY (w, k, time))",
    )
    .await
    .unwrap();
    // Per writer: the last acknowledged n, and the n in flight.
    let state: Arc<Mutex<Writers>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = server.pg_config();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (state, stop, addr) = (state.clone(), stop.clone(), addr.clone());
            tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&addr, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut n = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    state.lock().unwrap().entry(w).or_insert((None, 0)).1 = n;
                    // Key n % KEYS, at one time: each write replaces the row
                    // written KEYS writes before.
                    let sql = format!(
                        "INSERT INTO up VALUES (to_timestamp_nanos({T0}), {w}, {}, {n})",
                        n % KEYS
                    );
                    if c.batch_execute(&sql).await.is_err() {
                        break;
                    }
                    state.lock().unwrap().get_mut(&w).unwrap().0 = Some(n);
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.batch_execute("FLUSH TABLE up").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    server.restart();
    let c = server.connect().await;
    let state = state.lock().unwrap().clone();
    let check = |rows: Vec<Vec<String>>, stage: &str| {
        let mut got: BTreeMap<(u32, i64), i64> = BTreeMap::new();
        for r in rows {
            let key = (r[0].parse().unwrap(), r[1].parse().unwrap());
            assert!(
                got.insert(key, r[2].parse().unwrap()).is_none(),
                "{stage}: two rows of {key:?}"
            );
        }
        let mut checked = 0;
        for (w, (acked, in_flight)) in &state {
            let Some(acked) = acked else { continue };
            for k in 0..KEYS {
                // The last acknowledged write of key k, if any.
                let last = (0..=*acked).rev().find(|n| n % KEYS == k);
                let read = got.get(&(*w, k)).copied();
                let flight = (in_flight % KEYS == k && *in_flight > *acked).then_some(*in_flight);
                assert!(
                    read == last || (read.is_some() && read == flight),
                    "{stage}: writer {w} key {k}: read {read:?}, last acknowledged {last:?}, in flight {flight:?}"
                );
                checked += 1;
            }
        }
        eprintln!("{stage}: {checked} keys checked ({state:?})");
    };
    let sql = "SELECT w, k, n FROM up";
    check(text_rows(&c, sql).await, "after kill -9");
    c.batch_execute("FLUSH TABLE up; COMPACT TABLE up")
        .await
        .unwrap();
    check(text_rows(&c, sql).await, "after compaction");
}

async fn plan(c: &tokio_postgres::Client, sql: &str) -> String {
    text_rows(c, &format!("EXPLAIN {sql}"))
        .await
        .into_iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plan docs/storage.md shows for a keyed table (`DedupExec: key=[host,
/// time], merge=last_row` over a sort by key and version) is the one EXPLAIN
/// prints, until compaction leaves one file per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_merge_until_compaction() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/storage.md"))
        .unwrap();
    let shown: Vec<String> = doc
        .lines()
        .skip_while(|l| !l.starts_with("DedupExec: "))
        .take(2)
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(shown.len(), 2, "docs/storage.md shows the merge");
    let server = Server::start(&[]);
    let c = server.connect().await;
    c.batch_execute(
        "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, v BIGINT, PRIMARY KEY (host, time));
         CREATE TABLE plain (time TIMESTAMP NOT NULL, host TEXT, v BIGINT);
         INSERT INTO m VALUES ('2024-01-01T00:00:00Z', 'a', 1), ('2024-01-01T02:00:00Z', 'a', 1);
         INSERT INTO plain VALUES ('2024-01-01T00:00:00Z', 'a', 1);
         FLUSH TABLE m; FLUSH TABLE plain;
         INSERT INTO m VALUES ('2024-01-01T00:00:00Z', 'a', 2)",
    )
    .await
    .unwrap();
    let sql = "SELECT host, v FROM m WHERE v > 0";
    let p = plan(&c, sql).await;
    assert!(
        p.contains("DedupExec: key=[host, time], merge=last_row"),
        "{p}"
    );
    // The partition alone in its file (02:00) is read without the merge.
    assert!(p.contains("files=1 scanned"), "{p}");
    // As docs/storage.md shows it: the merge, then the sort by key and version.
    let dedup = p
        .find(&shown[0])
        .unwrap_or_else(|| panic!("{} in {p}", shown[0]));
    let sort = shown[1].split(", preserve").next().unwrap();
    assert!(p[dedup..].contains(sort), "{sort} below the merge: {p}");
    assert!(!plan(&c, "SELECT * FROM plain").await.contains("DedupExec"));
    c.batch_execute("FLUSH TABLE m; COMPACT TABLE m")
        .await
        .unwrap();
    let p = plan(&c, sql).await;
    assert!(!p.contains("DedupExec"), "after compaction: {p}");
    let rows = text_rows(&c, "SELECT host, v FROM m ORDER BY time").await;
    assert_eq!(rows, vec![vec!["a", "2"], vec!["a", "1"]]);

    // Buffered writes whose time ranges meet no other's are read as they
    // are; a write over another's range sends both to the merge.
    c.batch_execute(
        "CREATE TABLE n (time TIMESTAMP NOT NULL, host TEXT, v BIGINT, PRIMARY KEY (host, time));
         INSERT INTO n VALUES ('2024-01-01T00:00:00Z', 'a', 1), ('2024-01-01T00:01:00Z', 'b', 1);
         INSERT INTO n VALUES ('2024-01-01T00:02:00Z', 'a', 1)",
    )
    .await
    .unwrap();
    let p = plan(&c, "SELECT host, v FROM n").await;
    assert!(!p.contains("DedupExec"), "writes apart in time: {p}");
    c.batch_execute("INSERT INTO n VALUES ('2024-01-01T00:01:00Z', 'b', 2)")
        .await
        .unwrap();
    let p = plan(&c, "SELECT host, v FROM n").await;
    assert!(p.contains("DedupExec"), "a write over another's range: {p}");
    let rows = text_rows(&c, "SELECT host, v FROM n ORDER BY time").await;
    assert_eq!(rows, vec![vec!["a", "1"], vec!["b", "2"], vec!["a", "1"]]);
}
