//! Three nodes on one PostgreSQL catalog and one object store, as
//! docs/cluster.md walks through: a (ingest,query), b (ingest,query),
//! c (query,compact). A table created on c is usable on a at once; rows
//! written to a and to b are counted exactly from c before any flush,
//! after FLUSH on both, across a kill -9 and restart of b in the middle of
//! writing (and while b is down, a query that needs its buffer fails
//! naming it), and after COMPACT TABLE on c; GROUP BY answers are equal on
//! every node; a distributed aggregate answers as the single-node plan and
//! EXPLAIN shows its stages; writers on two nodes with kill -9 cycles of
//! either lose no acknowledged row and duplicate none.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sextant_tests::{Server, http_post, text_rows};

use crate::catalog::{eventually_rows, eventually_rows_within, fresh_database, node_on, rows};

fn node(url: &str, store: &str, id: &str, mode: &str) -> Server {
    node_on(url, store, id, &["--mode", mode])
}

/// The three nodes of docs/cluster.md on a fresh catalog database `name`
/// and a fresh object store (kept while the returned directory lives): a
/// (ingest,query), b (ingest,query), c (query,compact).
async fn three_nodes(name: &str) -> (tempfile::TempDir, Server, Server, Server) {
    let url = fresh_database(name).await;
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let a = node(&url, &store, "a", "ingest,query");
    let b = node(&url, &store, "b", "ingest,query");
    let c = node(&url, &store, "c", "query,compact");
    (objects, a, b, c)
}

/// Line protocol rows `m,host=h<i%3>,node=<node> id=<i>i,v=<i>i <t>` for
/// ids `from..to`.
fn lines(node: &str, from: u64, to: u64) -> Vec<u8> {
    let mut body = String::new();
    for i in from..to {
        body.push_str(&format!(
            "m,host=h{},node={node} id={i}i,v={}i {}\n",
            i % 3,
            i % 7,
            1_704_067_200 + i
        ));
    }
    body.into_bytes()
}

fn write(server: &Server, node: &str, from: u64, to: u64) -> std::io::Result<u16> {
    let r = http_post(
        server.http_addr(),
        "/api/v2/write?precision=s",
        &[],
        &lines(node, from, to),
    )?;
    if r.status != 204 {
        eprintln!("write to {node}: {r:?}");
    }
    Ok(r.status)
}

const COUNT: &str = "SELECT node, count(*), count(DISTINCT id) FROM m GROUP BY node ORDER BY node";
const GROUPS: &str =
    "SELECT host, count(*), sum(v), min(id), max(id) FROM m GROUP BY host ORDER BY host";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_count_every_acknowledged_row_exactly_once() {
    let url = fresh_database("cluster").await;
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let a = node(&url, &store, "a", "ingest,query");
    let mut b = node(&url, &store, "b", "ingest,query");
    let c = node(&url, &store, "c", "query,compact");
    let on_c = c.connect().await;

    // Created on c, written on a at once (a takes the table in on its
    // first write) and on b.
    on_c.batch_execute(
        "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, node TEXT, id BIGINT, v BIGINT)",
    )
    .await
    .unwrap();
    assert_eq!(write(&a, "a", 0, 1000).unwrap(), 204);
    assert_eq!(write(&b, "b", 0, 500).unwrap(), 204);

    // c does not ingest: a write there is refused, naming the node.
    let refused = http_post(
        c.http_addr(),
        "/api/v2/write?precision=s",
        &[],
        &lines("c", 0, 1),
    )
    .unwrap();
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(
        refused.body.contains("node c does not accept writes"),
        "{refused:?}"
    );

    // Before any flush: every row from c, read from a's and b's buffers.
    let want = rows(&[&["a", "1000", "1000"], &["b", "500", "500"]]);
    assert_eq!(text_rows(&on_c, COUNT).await, want);
    // c is the only node with `compact`: it holds every job's lease.
    eventually_rows(
        &on_c,
        "SELECT DISTINCT holder FROM system.leases",
        rows(&[&["c"]]),
    )
    .await;

    // After a flush on both: the same rows, now from Parquet.
    let on_a = a.connect().await;
    on_a.batch_execute("FLUSH TABLE m").await.unwrap();
    b.connect()
        .await
        .batch_execute("FLUSH TABLE m")
        .await
        .unwrap();
    assert_eq!(text_rows(&on_c, COUNT).await, want);
    // Some more in the buffers, over the files.
    assert_eq!(write(&a, "a", 1000, 1200).unwrap(), 204);
    assert_eq!(write(&b, "b", 500, 600).unwrap(), 204);
    let want = rows(&[&["a", "1200", "1200"], &["b", "600", "600"]]);
    assert_eq!(text_rows(&on_c, COUNT).await, want);

    // kill -9 of b in the middle of writing: what b acknowledged is there
    // once it is back; while it is down, a query that needs its buffer
    // fails naming it.
    let stop = Arc::new(AtomicBool::new(false));
    let b_http = b.http_addr();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut acked, mut next) = (600u64, 600u64);
            while !stop.load(Ordering::SeqCst) {
                let body = lines("b", next, next + 50);
                next += 50;
                match http_post(b_http, "/api/v2/write?precision=s", &[], &body) {
                    Ok(r) if r.status == 204 => acked = next,
                    _ => break,
                }
            }
            (acked, next)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    b.kill9();
    stop.store(true, Ordering::SeqCst);
    let (acked, sent) = writer.join().unwrap();
    assert!(acked > 600, "b acknowledged writes before the kill");
    let err = on_c.simple_query(COUNT).await.unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    // Whether b's buffer scan ran elsewhere and read b over Flight, or its
    // stage was sent to b itself as a worker, the error names b.
    assert!(message.contains("node b ("), "the error names b: {message}");
    eprintln!("while b is down: {message}");
    b.restart();
    // Every acknowledged row once; an unacknowledged last batch may or may
    // not have made it, but never twice.
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        match on_c.simple_query(COUNT).await {
            Ok(_) => break text_rows(&on_c, COUNT).await,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("c cannot read b after its restart: {e}"),
        }
    };
    assert_eq!(got[0], vec!["a", "1200", "1200"]);
    let (b_rows, b_ids): (u64, u64) = (got[1][1].parse().unwrap(), got[1][2].parse().unwrap());
    assert_eq!(b_rows, b_ids, "no row of b twice: {got:?}");
    assert!(
        (acked..=sent).contains(&b_rows),
        "b has every acknowledged row ({acked}) and none it was never sent ({sent}): {b_rows}"
    );

    // After compaction on c: the same answer, and GROUP BY equal on every node.
    let before = text_rows(&on_c, GROUPS).await;
    on_c.batch_execute("COMPACT TABLE m").await.unwrap();
    assert_eq!(text_rows(&on_c, COUNT).await, got);
    assert_eq!(text_rows(&on_c, GROUPS).await, before);
    let on_b = b.connect().await;
    eventually_rows(&on_a, GROUPS, before.clone()).await;
    eventually_rows(&on_b, GROUPS, before.clone()).await;
    let hosts: BTreeSet<String> = before.iter().map(|r| r[0].clone()).collect();
    assert_eq!(hosts.len(), 3);
}

/// A query the planner distributes (forced here by a tiny
/// `distributed.file_scan_config_bytes_per_partition`, so the Parquet scan
/// spreads over both workers) answers what the same query answers on the
/// node alone, buffers of both ingest nodes included; EXPLAIN shows its
/// stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_aggregate_answers_as_the_single_node_plan() {
    let url = fresh_database("distributed").await;
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let a = node(&url, &store, "a", "ingest,query");
    let b = node(&url, &store, "b", "ingest,query");
    let on_a = a.connect().await;
    on_a.batch_execute(
        "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, node TEXT, id BIGINT, v BIGINT)",
    )
    .await
    .unwrap();
    for i in 0..4 {
        assert_eq!(write(&a, "a", i * 100, i * 100 + 100).unwrap(), 204);
        on_a.batch_execute("FLUSH TABLE m").await.unwrap();
    }
    assert_eq!(write(&a, "a", 400, 450).unwrap(), 204);
    assert_eq!(write(&b, "b", 0, 10).unwrap(), 204);
    eventually_rows(
        &on_a,
        COUNT,
        rows(&[&["a", "450", "450"], &["b", "10", "10"]]),
    )
    .await;
    let single = text_rows(&on_a, GROUPS).await;
    on_a.batch_execute("SET distributed.file_scan_config_bytes_per_partition = 1")
        .await
        .unwrap();
    assert_eq!(text_rows(&on_a, GROUPS).await, single);
    // EXPLAIN shows the stages: the Parquet scan spread over the tasks of a
    // stage, each ingest node's buffer a scan of its own.
    let plan = text_rows(&on_a, &format!("EXPLAIN {GROUPS}")).await;
    let text: String = plan.iter().map(|r| r.join(" | ") + "\n").collect();
    for part in [
        "logical_plan",
        "DistributedExec",
        "Stage 1",
        "NetworkShuffleExec",
        "BufferScanExec: node=a, table=m",
        "BufferScanExec: node=b, table=m",
        "DistributedLeafExec",
    ] {
        assert!(text.contains(part), "EXPLAIN shows {part}:\n{text}");
    }
    assert_eq!(
        text_rows(&on_a, COUNT).await,
        rows(&[&["a", "450", "450"], &["b", "10", "10"]])
    );
}

/// One node's writer: batches of 20 rows with ids counting up from
/// `first`, until `stop` or a write fails; which ids were acknowledged and
/// the id after the last one sent.
fn writer(
    server: std::net::SocketAddr,
    node: &'static str,
    first: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<u64>, u64)> {
    std::thread::spawn(move || {
        let (mut acked, mut next) = (vec![], first);
        while !stop.load(Ordering::SeqCst) {
            let body = lines(node, next, next + 20);
            let sent = next;
            next += 20;
            match http_post(server, "/api/v2/write?precision=s", &[], &body) {
                Ok(r) if r.status == 204 => acked.extend(sent..next),
                _ => break,
            }
        }
        (acked, next)
    })
}

/// The cross-node crash test: writers on two ingest nodes into one table,
/// kill -9 of one node or the other in each cycle (and a flush on the
/// survivor meanwhile); every acknowledged row is there exactly once,
/// seen from either node, and nothing is there that was never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_two_nodes_lose_nothing_across_kill_9_cycles() {
    let url = fresh_database("crosscrash").await;
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let mut nodes = [
        node(&url, &store, "a", "ingest,query"),
        node(&url, &store, "b", "ingest,query"),
    ];
    nodes[0]
        .connect()
        .await
        .batch_execute(
            "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, node TEXT, id BIGINT, v BIGINT)",
        )
        .await
        .unwrap();
    let names = ["a", "b"];
    let mut acked: [BTreeSet<u64>; 2] = Default::default();
    let mut next = [0u64, 0u64];
    let cycles = 4;
    for cycle in 0..cycles {
        let victim = cycle % 2;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|i| writer(nodes[i].http_addr(), names[i], next[i], stop.clone()))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let survivor = nodes[1 - victim].connect().await;
        survivor.batch_execute("FLUSH TABLE m").await.unwrap();
        std::thread::sleep(Duration::from_millis(200));
        nodes[victim].kill9();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        for (i, w) in writers.into_iter().enumerate() {
            let (ids, sent) = w.join().unwrap();
            assert!(
                !ids.is_empty(),
                "cycle {cycle}: {} acknowledged writes",
                names[i]
            );
            acked[i].extend(ids);
            next[i] = sent;
        }
        nodes[victim].restart();
    }
    for reader in &nodes {
        let client = reader.connect().await;
        for (i, name) in names.iter().enumerate() {
            let sql = format!("SELECT id FROM m WHERE node = '{name}' ORDER BY id");
            let deadline = Instant::now() + Duration::from_secs(20);
            let ids: Vec<u64> = loop {
                match client.simple_query(&sql).await {
                    Ok(_) => break text_rows(&client, &sql).await,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("{sql}: {e}"),
                }
            }
            .iter()
            .map(|r| r[0].parse().unwrap())
            .collect();
            let unique: BTreeSet<u64> = ids.iter().copied().collect();
            assert_eq!(unique.len(), ids.len(), "a row of {name} twice");
            let missing: Vec<&u64> = acked[i].difference(&unique).take(5).collect();
            assert!(
                missing.is_empty(),
                "acknowledged rows of {name} missing: {missing:?}"
            );
            assert!(
                unique.iter().all(|id| *id < next[i]),
                "a row of {name} that was never sent"
            );
        }
    }
    eprintln!(
        "{cycles} kill -9 cycles: a acknowledged {} rows, b {}",
        acked[0].len(),
        acked[1].len()
    );
}

/// A query node that loses a worker in the middle of a distributed query:
/// the query fails with an error naming the worker, or (if the worker's
/// tasks were done) answers; never a wrong answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_mid_query_fails_the_query_naming_it() {
    let url = fresh_database("lostworker").await;
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let a = node(&url, &store, "a", "ingest,query");
    let mut b = node(&url, &store, "b", "query");
    let on_a = a.connect().await;
    on_a.batch_execute(
        "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, node TEXT, id BIGINT, v BIGINT)",
    )
    .await
    .unwrap();
    for i in 0..20 {
        assert_eq!(write(&a, "a", i * 10_000, (i + 1) * 10_000).unwrap(), 204);
        on_a.batch_execute("FLUSH TABLE m").await.unwrap();
    }
    let query = "SELECT host, count(DISTINCT id), sum(v) FROM m GROUP BY host ORDER BY host";
    let want = text_rows(&on_a, query).await;
    on_a.batch_execute("SET distributed.file_scan_config_bytes_per_partition = 1")
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        text_rows(&on_a, query).await,
        want,
        "distributed, both workers up"
    );
    let took = started.elapsed();
    let running = tokio::spawn(async move {
        let answer = on_a.simple_query(query).await;
        (answer, on_a)
    });
    tokio::time::sleep(took / 3).await;
    b.kill9();
    let (answer, on_a) = running.await.unwrap();
    match answer {
        Ok(_) => {
            eprintln!("the query finished before b's tasks were needed ({took:?})");
            assert_eq!(text_rows(&on_a, query).await, want);
        }
        Err(e) => {
            let message = e
                .as_db_error()
                .map(|e| e.message().to_string())
                .unwrap_or_default();
            eprintln!("b lost mid-query ({took:?} for the whole query): {message}");
            assert!(message.contains("node b ("), "the error names b: {e:?}");
        }
    }
}

/// `COMPACT TABLE table` on `client` again (a compaction that finds a file
/// gone meanwhile, 58030, is retried) until `check` reads `want`, for
/// about 10 s; what `check` read last.
async fn compact_until(
    client: &tokio_postgres::Client,
    table: &str,
    check: &str,
    want: Vec<Vec<String>>,
) -> Vec<Vec<String>> {
    let mut got = vec![];
    for _ in 0..40 {
        if let Err(e) = client
            .batch_execute(&format!("COMPACT TABLE {table}"))
            .await
        {
            eprintln!("COMPACT TABLE {table}: {e:?}");
        }
        got = text_rows(client, check).await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    got
}

/// What `view` holds and what its query gives on the same node, until they
/// are equal (within `secs`); the rows.
async fn view_follows(
    client: &tokio_postgres::Client,
    view: &str,
    query: &str,
    secs: u64,
) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = match client.simple_query(view).await {
            Ok(_) => text_rows(client, view).await,
            Err(e) => vec![vec![format!("error: {e:?}")]],
        };
        let want = match client.simple_query(query).await {
            Ok(_) => text_rows(client, query).await,
            Err(e) => vec![vec![format!("error: {e:?}")]],
        };
        if got == want && !want.is_empty() && !want[0][0].starts_with("error") {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{view}: {got:?} after {secs} s, want {want:?} ({query})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const AGG_VIEW: &str = "SELECT time, host, n, v FROM m_1m ORDER BY time, host";
const AGG_QUERY: &str = "SELECT date_bin(INTERVAL '1 minute', time) AS time, host, count(*) AS n, \
     sum(v) AS v FROM m GROUP BY 1, 2 ORDER BY 1, 2";
const TRANSFORM_VIEW: &str = "SELECT time, node, id FROM m_big ORDER BY node, id";
const TRANSFORM_QUERY: &str = "SELECT time, node, id FROM m WHERE v > 3 ORDER BY node, id";

/// Materialized views on a cluster: created on an ingest node, refreshed by
/// the node holding the `views` lease (a compact node), from writes on
/// both ingest nodes, buffered and flushed; every node reads them equal to
/// their query. REFRESH elsewhere names the holder. When the holder is
/// killed, the other compact node takes the lease and the views keep
/// following. (The compact nodes do not serve as query workers here, so
/// that killing one fails no query; three_nodes... covers that layout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_follow_writes_on_every_node_and_move_with_their_lease() {
    let url = fresh_database("views").await;
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let a = node(&url, &store, "a", "ingest,query");
    let b = node(&url, &store, "b", "ingest,query");
    let mut c = node(&url, &store, "c", "compact");
    let on_a = a.connect().await;
    let on_b = b.connect().await;
    let on_c = c.connect().await;
    on_a.batch_execute(
        "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, node TEXT, id BIGINT, v BIGINT)",
    )
    .await
    .unwrap();
    eventually_rows(
        &on_c,
        "SELECT holder FROM system.leases WHERE job = 'views'",
        rows(&[&["c"]]),
    )
    .await;
    // Rows on b before the views exist: b takes them in and marks them.
    assert_eq!(write(&a, "a", 0, 300).unwrap(), 204);
    assert_eq!(write(&b, "b", 0, 200).unwrap(), 204);
    on_a.batch_execute(
        "CREATE MATERIALIZED VIEW m_1m AS SELECT date_bin(INTERVAL '1 minute', time) AS time, \
         host, count(*) AS n, sum(v) AS v FROM m GROUP BY 1, 2; \
         CREATE MATERIALIZED VIEW m_big AS SELECT time, node, id FROM m WHERE v > 3",
    )
    .await
    .unwrap();
    for client in [&on_a, &on_b, &on_c] {
        let got = view_follows(client, AGG_VIEW, AGG_QUERY, 20).await;
        assert_eq!(got.len(), 5 * 3, "five minutes of three hosts: {got:?}");
        view_follows(client, TRANSFORM_VIEW, TRANSFORM_QUERY, 20).await;
    }
    // Buffered writes on both ingest nodes (some into buckets the view has
    // already, some rows a second time: the base is append-only, so the
    // view has them twice too), then a flush on one of them.
    assert_eq!(write(&a, "a", 250, 700).unwrap(), 204);
    assert_eq!(write(&b, "b", 100, 400).unwrap(), 204);
    on_b.batch_execute("FLUSH TABLE m").await.unwrap();
    for client in [&on_a, &on_b, &on_c] {
        view_follows(client, AGG_VIEW, AGG_QUERY, 20).await;
        view_follows(client, TRANSFORM_VIEW, TRANSFORM_QUERY, 20).await;
    }
    assert!(
        !a.log().contains("materialized view refresh failed")
            && !b.log().contains("refreshed in full"),
        "a and b do not refresh"
    );
    // REFRESH on a node that does not hold the lease names the holder.
    let e = on_a
        .batch_execute("REFRESH MATERIALIZED VIEW m_1m")
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "55006", "{db:?}");
    assert!(db.message().contains("node c holds it"), "{db:?}");
    on_c.batch_execute("REFRESH MATERIALIZED VIEW m_1m")
        .await
        .unwrap();
    view_follows(&on_a, AGG_VIEW, AGG_QUERY, 5).await;

    // c dies; d, the other compact node, takes the lease when it expires
    // (10 s) and the views keep following writes on a and b.
    let d = node(&url, &store, "d", "compact");
    let on_d = d.connect().await;
    drop(on_c);
    c.kill9();
    assert_eq!(write(&a, "a", 700, 800).unwrap(), 204);
    assert_eq!(write(&b, "b", 400, 500).unwrap(), 204);
    eventually_rows_within(
        &on_d,
        "SELECT holder FROM system.leases WHERE job = 'views'",
        rows(&[&["d"]]),
        30,
    )
    .await;
    for client in [&on_a, &on_d] {
        view_follows(client, AGG_VIEW, AGG_QUERY, 30).await;
        view_follows(client, TRANSFORM_VIEW, TRANSFORM_QUERY, 30).await;
    }
}

/// The last write of each key of `k`: its value and node.
type Last = std::collections::BTreeMap<i64, (i64, &'static str)>;

/// One round of writes to every key of `k`, alternating between `a` and
/// `b` (and which of them starts, per key).
async fn write_keys(
    round: i64,
    a: &tokio_postgres::Client,
    b: &tokio_postgres::Client,
    last: &mut Last,
) {
    for key in 0..10 {
        let (client, name) = if (round + key) % 2 == 0 {
            (a, "a")
        } else {
            (b, "b")
        };
        let v = round * 100 + key;
        client
            .batch_execute(&format!(
                "INSERT INTO k VALUES ('2024-01-01T00:00:00Z', {key}, {v}, '{name}')"
            ))
            .await
            .unwrap();
        last.insert(key, (v, name));
    }
}

fn last_rows(last: &Last) -> Vec<Vec<String>> {
    last.iter()
        .map(|(k, (v, n))| vec![k.to_string(), v.to_string(), n.to_string()])
        .collect()
}

/// Two ingest nodes write the same keys of a keyed table, one write after
/// the other, alternating; every node reads the last write of each key,
/// from the buffers, from the files after FLUSH on both, and after
/// compaction on the third node; a DELETE by a column outside the key
/// goes by each key's current row, wherever it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_write_of_a_key_wins_across_two_ingest_nodes() {
    let (_objects, a, b, c) = three_nodes("cluster_keys").await;
    let on_c = c.connect().await;
    on_c.batch_execute(
        "CREATE TABLE k (time TIMESTAMP NOT NULL, key BIGINT, v BIGINT, node TEXT, PRIMARY KEY (key, time))",
    )
    .await
    .unwrap();
    let (on_a, on_b) = (a.connect().await, b.connect().await);
    // a and b take the table in from the catalog.
    for client in [&on_a, &on_b] {
        eventually_rows(client, "SELECT count(*) FROM k", rows(&[&["0"]])).await;
    }
    let mut last = Last::new();
    const READ: &str = "SELECT key, v, node FROM k ORDER BY key";
    write_keys(1, &on_a, &on_b, &mut last).await;
    // Each node reads the other ingest node's buffer once it has read the
    // node registry (at start and then every few seconds).
    for client in [&on_a, &on_b, &on_c] {
        eventually_rows(client, "SELECT count(*) FROM k", rows(&[&["10"]])).await;
    }
    for round in 2..=3 {
        write_keys(round, &on_a, &on_b, &mut last).await;
    }
    for (name, client) in [("a", &on_a), ("b", &on_b), ("c", &on_c)] {
        assert_eq!(
            text_rows(client, READ).await,
            last_rows(&last),
            "buffers, read on {name}"
        );
    }
    on_a.batch_execute("FLUSH TABLE k").await.unwrap();
    write_keys(4, &on_a, &on_b, &mut last).await;
    on_b.batch_execute("FLUSH TABLE k").await.unwrap();
    for (name, client) in [("a", &on_a), ("b", &on_b), ("c", &on_c)] {
        assert_eq!(
            text_rows(client, READ).await,
            last_rows(&last),
            "files and buffers, read on {name}"
        );
    }
    // A distributed plan (one file per task) merges by key the same way.
    let dist = c.connect().await;
    dist.batch_execute("SET distributed.file_scan_config_bytes_per_partition = 1")
        .await
        .unwrap();
    assert_eq!(
        text_rows(&dist, READ).await,
        last_rows(&last),
        "a distributed plan"
    );
    let plan = format!("{:?}", text_rows(&dist, &format!("EXPLAIN {READ}")).await);
    assert!(
        plan.contains("Stage 1") && plan.contains("DedupExec: key=[key, time]"),
        "the merge above the stages: {plan}"
    );
    on_a.batch_execute("FLUSH TABLE k").await.unwrap();
    // c compacts the files it has taken in; again until a's last flush is
    // among them.
    let files = compact_until(
        &on_c,
        "k",
        "SELECT count(*) FROM system.files WHERE table_name = 'k'",
        rows(&[&["1"]]),
    )
    .await;
    assert_eq!(files, rows(&[&["1"]]), "one file after compaction");
    for client in [&on_a, &on_b, &on_c] {
        eventually_rows(client, READ, last_rows(&last)).await;
    }
    // Both nodes wrote the last writes of some keys.
    let nodes: BTreeSet<&str> = last.values().map(|(_, n)| *n).collect();
    assert_eq!(nodes.len(), 2, "{last:?}");
    // A DELETE by a column outside the key, on c, which buffers nothing:
    // it goes by each key's current row, in a's and b's buffers (500 and
    // up), not by the older rows in the file (all below 500).
    write_keys(5, &on_a, &on_b, &mut last).await;
    for client in [&on_a, &on_b, &on_c] {
        eventually_rows(client, READ, last_rows(&last)).await;
    }
    let n = on_c
        .execute("DELETE FROM k WHERE v < 505", &[])
        .await
        .unwrap();
    assert_eq!(n, 5, "keys 0 to 4");
    last.retain(|_, (v, _)| *v >= 505);
    for (name, client) in [("a", &on_a), ("b", &on_b), ("c", &on_c)] {
        assert_eq!(
            text_rows(client, READ).await,
            last_rows(&last),
            "after DELETE by v, on {name}"
        );
    }
    on_a.batch_execute("FLUSH TABLE k").await.unwrap();
    on_b.batch_execute("FLUSH TABLE k").await.unwrap();
    for client in [&on_a, &on_b, &on_c] {
        eventually_rows(client, READ, last_rows(&last)).await;
    }
}

/// `DELETE` on a cluster: the rows of the table are in a's files, a's
/// buffer and b's buffer; a DELETE run on c (which buffers nothing)
/// counts them all and no node shows them once it returns; b killed -9
/// and restarted replays its WAL without them. A DELETE run while b is
/// down says so (it is committed), and b applies it when it starts. After
/// flushes and compaction the files no longer hold the rows and the
/// deletes are forgotten; a row written again afterwards is there. An
/// aggregating view over the table stays equal to its query throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_one_node_removes_the_rows_of_every_node() {
    let (_objects, a, mut b, c) = three_nodes("cluster_delete").await;
    let on_c = c.connect().await;
    on_c.batch_execute(
        "CREATE TABLE d (time TIMESTAMP NOT NULL, host TEXT, v BIGINT); \
         CREATE MATERIALIZED VIEW d_1m AS SELECT date_bin(INTERVAL '1 minute', time) AS time, \
         host, count(*) AS n, sum(v) AS v FROM d GROUP BY 1, 2",
    )
    .await
    .unwrap();
    const VIEW: &str = "SELECT time, host, n, v FROM d_1m ORDER BY time, host";
    const QUERY: &str = "SELECT date_bin(INTERVAL '1 minute', time) AS time, host, count(*) AS n, \
         sum(v) AS v FROM d GROUP BY 1, 2 ORDER BY 1, 2";
    let (on_a, on_b) = (a.connect().await, b.connect().await);
    for client in [&on_a, &on_b] {
        eventually_rows(client, "SELECT count(*) FROM d", rows(&[&["0"]])).await;
    }
    let insert = |from: i64, to: i64, hosts: &'static [&'static str]| {
        let values: Vec<String> = (from..to)
            .map(|i| {
                format!(
                    "(to_timestamp({}), '{}', {i})",
                    1_704_067_200 + i,
                    hosts[i as usize % hosts.len()]
                )
            })
            .collect();
        format!("INSERT INTO d VALUES {}", values.join(", "))
    };
    // a: 20 rows in a file, 6 in its buffer; b: 10 in its buffer.
    on_a.batch_execute(&insert(0, 20, &["x", "y"]))
        .await
        .unwrap();
    on_a.batch_execute("FLUSH TABLE d").await.unwrap();
    on_a.batch_execute(&insert(20, 26, &["x", "y"]))
        .await
        .unwrap();
    on_b.batch_execute(&insert(100, 110, &["x", "y"]))
        .await
        .unwrap();
    const HOSTS: &str = "SELECT host, count(*) FROM d GROUP BY host ORDER BY host";
    for client in [&on_a, &on_b, &on_c] {
        eventually_rows(client, HOSTS, rows(&[&["x", "18"], &["y", "18"]])).await;
    }
    let deleted = on_c
        .execute("DELETE FROM d WHERE host = 'x'", &[])
        .await
        .unwrap();
    assert_eq!(deleted, 18, "the file's, a's and b's rows");
    // Gone everywhere once the statement returned: no waiting.
    for (name, client) in [("a", &on_a), ("b", &on_b), ("c", &on_c)] {
        assert_eq!(
            text_rows(client, HOSTS).await,
            rows(&[&["y", "18"]]),
            "after DELETE, on {name}"
        );
    }
    // The view re-aggregates the buckets of the rows deleted everywhere.
    let view = view_follows(&on_c, VIEW, QUERY, 30).await;
    assert!(
        view.iter().all(|r| r[1] == "y"),
        "the view has no x rows: {view:?}"
    );
    // b's WAL still has its x rows: the restart leaves them out again.
    b.kill9();
    b.restart();
    let on_b = b.connect().await;
    for client in [&on_a, &on_b, &on_c] {
        eventually_rows(client, HOSTS, rows(&[&["y", "18"]])).await;
    }

    // b down while a DELETE runs: committed, and said to be incomplete.
    on_b.batch_execute(&insert(200, 206, &["y", "z"]))
        .await
        .unwrap();
    b.kill9();
    let err = on_a
        .execute("DELETE FROM d WHERE host = 'z'", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "58030", "{db:?}");
    assert!(
        db.message().contains("committed") && db.message().contains("node b ("),
        "the error says the delete is committed and names b: {}",
        db.message()
    );
    eprintln!("DELETE with b down: {}", db.message());
    b.restart();
    let on_b = b.connect().await;
    for client in [&on_a, &on_b, &on_c] {
        eventually_rows(client, HOSTS, rows(&[&["y", "21"]])).await;
    }

    // Flushed and compacted: the files hold only what is visible, and
    // the deletes hide nothing more.
    on_a.batch_execute("FLUSH TABLE d").await.unwrap();
    on_b.batch_execute("FLUSH TABLE d").await.unwrap();
    let got = compact_until(
        &on_c,
        "d",
        "SELECT f.n, f.r, d.n FROM \
         (SELECT count(*) AS n, sum(rows) AS r FROM system.files WHERE table_name = 'd') f, \
         (SELECT count(*) AS n FROM system.deletes WHERE table_name = 'd') d",
        rows(&[&["1", "21", "0"]]),
    )
    .await;
    let (files, deletes) = (vec![got[0][..2].to_vec()], vec![got[0][2..].to_vec()]);
    assert_eq!(files, rows(&[&["1", "21"]]), "one file of the 21 y rows");
    assert_eq!(deletes, rows(&[&["0"]]), "both deletes forgotten");
    on_b.batch_execute(&insert(300, 301, &["x"])).await.unwrap();
    for client in [&on_a, &on_b, &on_c] {
        eventually_rows(client, HOSTS, rows(&[&["x", "1"], &["y", "21"]])).await;
    }
    view_follows(&on_a, VIEW, QUERY, 30).await;
}
