//! Overload: the ingest requests in flight hold at most
//! `--ingest-inflight-limit`; past it a write waits (its body unread) and,
//! after `--backpressure-timeout`, is refused with the retryable error of
//! its protocol (HTTP 503 with `Retry-After`, gRPC `RESOURCE_EXHAUSTED`,
//! SQLSTATE 53000), applies nothing, and queries keep answering. The
//! figures under real overload (many clients at ten times the sustainable
//! rate) come from the load tool (`--scenario overload`, docs/durability.md).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sextant_tests::{Server, http_get, http_post};

use crate::paths::{Failure, Path};

/// The value of the gauge `name` on `/metrics`.
fn gauge(server: &Server, name: &str) -> f64 {
    let metrics = http_get(server.http_addr(), "/metrics").expect("GET /metrics");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// A connection that has sent the head of a line-protocol write declaring
/// `len` bytes of body, and none of the body yet.
fn declare_write(server: &Server, len: usize) -> TcpStream {
    let mut stream = TcpStream::connect(server.http_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /api/v2/write?bucket=b&precision=ns HTTP/1.1\r\nHost: sextant\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM ({sql}) AS q"), &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

#[tokio::test]
async fn every_ingest_path_waits_then_is_refused_while_the_writes_in_flight_hold_the_limit() {
    let server = Server::start(&[
        "--ingest-inflight-limit",
        "1MiB",
        "--backpressure-timeout",
        "1s",
    ]);
    let client = server.connect().await;
    for path in Path::ALL {
        if let Some(sql) = path.create_sql() {
            client.batch_execute(&sql).await.unwrap();
        }
    }
    // Each path's table exists, with one row: the refused writes must add none.
    for path in Path::ALL {
        let mut conn = path.connect(&server).await;
        if conn.write(path, &[(0, 0)]).await.is_err() {
            panic!("{}: the first write failed", path.name());
        }
    }

    // A line-protocol request that declares 640 kB (admitted for four
    // times that: the whole limit) and sends only its first bytes holds
    // the gate while its body is read.
    let body: String = (0..16_000)
        .map(|i| format!("held,tag=x v={i}i {}\n", 1_700_000_000_000_000_000i64 + i))
        .collect();
    let mut holder = declare_write(&server, body.len());
    holder.write_all(&body.as_bytes()[..100]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(&server, "sextant_ingest_inflight_bytes") < (1 << 20) as f64 {
        assert!(
            Instant::now() < deadline,
            "the held request is not admitted: {}",
            server.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Every path but INSERT (whose statement is read whole before it runs,
    // and which waits only for write-buffer space) waits, then is refused.
    for path in Path::ALL.into_iter().filter(|p| *p != Path::Insert) {
        let mut conn = path.connect(&server).await;
        let started = Instant::now();
        match conn.write(path, &[(1, 1), (1, 2)]).await {
            Err(Failure::Rejected(message)) => {
                let retryable = ["HTTP 503", "E53000", "ResourceExhausted"]
                    .iter()
                    .any(|m| message.contains(m));
                assert!(
                    retryable && message.contains("--ingest-inflight-limit"),
                    "{}: not the retryable refusal: {message}",
                    path.name()
                );
            }
            Ok(()) => panic!("{}: acknowledged past the limit", path.name()),
            Err(Failure::InDoubt) => panic!("{}: the connection broke", path.name()),
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "{}: refused after {waited:?}, before the 1 s backpressure timeout",
            path.name()
        );
    }
    // HTTP says when to come back, in a JSON body.
    let refused = http_post(
        server.http_addr(),
        "/api/v2/write?bucket=b&precision=ns",
        &[("Content-Type", "text/plain")],
        b"crash_lp,writer=2 n=1i 1700000000000000000\n",
    )
    .unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("5"));
    let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    let quoted = "too many writes in flight: 1048576 bytes of requests are being written \
                  (limit 1048576, --ingest-inflight-limit) and none finished within 1s; \
                  the write was not applied, retry it";
    assert_eq!(error["error"], quoted);
    // As docs/ingest.md quotes it.
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ingest.md"),
    )
    .unwrap();
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words(&doc).contains(&format!("{{\"error\":\"{quoted}\"}}")),
        "docs/ingest.md does not quote the refusal"
    );

    // While one request waits for the whole limit, the next is refused at
    // once: the queue holds at most the limit.
    let mut waiter = declare_write(&server, body.len());
    std::thread::sleep(Duration::from_millis(300));
    // A body of 640 kB, sent whole before the answer is read: the refusal
    // reads (and drops) it, so the client gets the answer, not a reset.
    let started = Instant::now();
    let at_once = http_post(
        server.http_addr(),
        "/api/v2/write?bucket=b&precision=ns",
        &[("Content-Type", "text/plain")],
        body.replace("held,", "crash_lp,").as_bytes(),
    )
    .expect("the refusal is read, not a reset connection");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "refused after {:?}, not at once",
        started.elapsed()
    );
    assert_eq!(at_once.status, 503, "{}", at_once.body);
    assert_eq!(at_once.header("retry-after"), Some("5"));
    let error: serde_json::Value = serde_json::from_str(&at_once.body).unwrap();
    assert_eq!(
        error["error"],
        "too many writes in flight: 1048576 bytes of requests are being written and 1048576 more \
         are waiting (limit 1048576 each, --ingest-inflight-limit); the write was not applied, \
         retry it"
    );
    // The waiter is refused after its second, once it has sent its body.
    waiter.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    waiter.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");

    // Queries, and SQL writes, are not held up.
    client
        .batch_execute("INSERT INTO t VALUES (now(), 1, 1)")
        .await
        .unwrap();
    for path in Path::ALL {
        let expected = if path == Path::Insert { 2 } else { 1 };
        assert_eq!(
            count(&client, &path.select_sql()).await,
            expected,
            "{}: a refused write left rows",
            path.name()
        );
    }

    // The held request completes, and every path is admitted again.
    holder.write_all(&body.as_bytes()[100..]).unwrap();
    let mut answer = String::new();
    holder.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert_eq!(count(&client, "SELECT * FROM held").await, 16_000);
    assert_eq!(gauge(&server, "sextant_ingest_inflight_bytes"), 0.0);
    for path in Path::ALL {
        let mut conn = path.connect(&server).await;
        if let Err(Failure::Rejected(m)) = conn.write(path, &[(3, 1)]).await {
            panic!("{}: refused once the limit is free: {m}", path.name());
        }
    }
}
