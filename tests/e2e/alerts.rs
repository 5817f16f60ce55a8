//! Alert rules against a real webhook receiver on loopback, on the manual
//! alert clock (`--manual-clock`, moved by `POST /debug/clock`, which
//! answers once everything due by the new time has run): no test here
//! waits for alert time to pass.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sextant_tests::{Server, http_post, text_rows};
use tokio_postgres::Client;

const START: &str = "2026-01-01T00:00:00Z";

/// A webhook receiver: answers every POST with 200 and keeps the bodies.
pub(crate) struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(vec![]));
        let keep = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let mut length = 0;
                let _ = reader.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    keep.lock().unwrap().push(v);
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Receiver { addr, bodies }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub(crate) fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Moves the alert clock to `00:mm:ss` of the start day and waits for what
/// fell due.
/// The webhook body docs/alerts.md shows (the JSON block with `groupKey`).
fn documented_notification() -> serde_json::Value {
    let root =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let doc = std::fs::read_to_string(std::path::Path::new(&root).join("../docs/alerts.md"))
        .expect("read docs/alerts.md");
    let start = doc
        .find("```json\n{\n  \"version\"")
        .expect("the body's JSON block")
        + "```json\n".len();
    let len = doc[start..]
        .find("\n```")
        .expect("the end of the JSON block");
    serde_json::from_str(&doc[start..start + len]).expect("the documented body is JSON")
}

fn clock(server: &Server, hms: &str) {
    move_clock(server, &format!("{{\"set\": \"2026-01-01T{hms}Z\"}}"));
}

/// Moves the alert clock on by `by` and waits for what fell due.
fn advance(server: &Server, by: &str) {
    move_clock(server, &format!("{{\"advance\": \"{by}\"}}"));
}

fn move_clock(server: &Server, body: &str) {
    let r = http_post(
        server.http_addr(),
        "/debug/clock",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn one(client: &Client, sql: &str) -> Vec<String> {
    let mut rows = text_rows(client, sql).await;
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows.remove(0)
}

/// `(state, evaluations)` of a rule.
async fn status(client: &Client, name: &str) -> (String, String) {
    let r = one(
        client,
        &format!("SELECT state, evaluations FROM system.alerts WHERE alert_name = '{name}'"),
    )
    .await;
    (r[0].clone(), r[1].clone())
}

async fn insert(client: &Client, hms: &str, host: &str, usage: f64) {
    client
        .batch_execute(&format!(
            "INSERT INTO cpu VALUES ('2026-01-01T{hms}Z', '{host}', {usage})"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_alert_goes_pending_fires_and_resolves_once_across_restarts() {
    let mut server = Server::start(&["--manual-clock", START]);
    let mut client = server.connect().await;
    client
        .batch_execute("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE)")
        .await
        .unwrap();
    let receiver = Receiver::start();
    client
        .batch_execute(&format!(
            "CREATE ALERT high_cpu AS
               SELECT host, avg(usage) AS avg_usage FROM cpu
               WHERE time > now() - INTERVAL '5 minutes' GROUP BY host HAVING avg(usage) > 90
             EVERY INTERVAL '1 minute' FOR INTERVAL '3 minutes'
             LABELS (severity = 'page')
             ANNOTATIONS (summary = '{{{{ $labels.host }}}} is at {{{{ $values.avg_usage }}}}%')
             NOTIFY WEBHOOK '{}'",
            receiver.url()
        ))
        .await
        .unwrap();
    // The first evaluation runs at once: nothing is returned yet.
    advance(&server, "0s");
    assert_eq!(
        status(&client, "high_cpu").await,
        ("inactive".into(), "1".into())
    );

    // 00:01: host a crosses the threshold (b stays low) → pending.
    insert(&client, "00:00:30", "a", 95.0).await;
    insert(&client, "00:00:30", "b", 10.0).await;
    clock(&server, "00:01:00");
    assert_eq!(
        status(&client, "high_cpu").await,
        ("pending".into(), "2".into())
    );
    insert(&client, "00:01:30", "a", 96.0).await;
    clock(&server, "00:02:00");
    assert_eq!(status(&client, "high_cpu").await.0, "pending");

    // A clean restart while pending: the pending time carries over.
    server.terminate();
    server.restart();
    client = server.connect().await;
    clock(&server, "00:02:00");
    insert(&client, "00:02:30", "a", 97.0).await;
    clock(&server, "00:03:00");
    assert_eq!(
        status(&client, "high_cpu").await,
        ("pending".into(), "4".into())
    );
    assert!(receiver.bodies().is_empty());

    // 00:04: returned for 3 minutes (since 00:01) → firing, one notification.
    insert(&client, "00:03:30", "a", 98.0).await;
    clock(&server, "00:04:00");
    assert_eq!(
        status(&client, "high_cpu").await,
        ("firing".into(), "5".into())
    );
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let b = &bodies[0];
    assert_eq!(b["status"], "firing");
    assert_eq!(b["version"], "4");
    assert_eq!(b["alerts"].as_array().unwrap().len(), 1, "{b}");
    let a = &b["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "high_cpu");
    assert_eq!(a["labels"]["host"], "a");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["values"]["avg_usage"], 96.5);
    assert_eq!(a["annotations"]["summary"], "a is at 96.5%");
    assert_eq!(a["startsAt"], "2026-01-01T00:04:00.000Z");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    // docs/alerts.md shows this notification: the same body, field for field.
    assert_eq!(
        *b,
        documented_notification(),
        "docs/alerts.md shows another body"
    );

    // Still above: still firing, nothing new sent.
    insert(&client, "00:04:30", "a", 99.0).await;
    clock(&server, "00:05:00");
    assert_eq!(
        status(&client, "high_cpu").await,
        ("firing".into(), "6".into())
    );

    // kill -9 while firing, down over three scheduled runs: on start the
    // missed evaluations run once, and the alert neither fires again nor
    // resolves.
    server.kill9();
    server.restart();
    client = server.connect().await;
    insert(&client, "00:08:00", "a", 99.0).await;
    clock(&server, "00:08:30");
    assert_eq!(
        status(&client, "high_cpu").await,
        ("firing".into(), "7".into())
    );
    assert_eq!(receiver.bodies().len(), 1);
    let next = one(
        &client,
        "SELECT next_run FROM system.alerts WHERE alert_name = 'high_cpu'",
    )
    .await;
    assert_eq!(next[0], "2026-01-01 00:09:00+00");

    // PAUSE: no evaluations while paused; RESUME evaluates at once.
    client
        .batch_execute("ALTER ALERT high_cpu PAUSE")
        .await
        .unwrap();
    clock(&server, "00:10:00");
    assert_eq!(
        status(&client, "high_cpu").await,
        ("paused".into(), "7".into())
    );
    client
        .batch_execute("ALTER ALERT high_cpu RESUME")
        .await
        .unwrap();
    advance(&server, "0s");
    assert_eq!(
        status(&client, "high_cpu").await,
        ("firing".into(), "8".into())
    );

    // The data recovers → resolved, one notification.
    insert(&client, "00:12:00", "a", 10.0).await;
    clock(&server, "00:15:00");
    assert_eq!(status(&client, "high_cpu").await.0, "inactive");
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[1]["status"], "resolved");
    assert_eq!(bodies[1]["alerts"][0]["labels"]["host"], "a");
    assert_eq!(bodies[1]["alerts"][0]["endsAt"], "2026-01-01T00:15:00.000Z");
    assert_eq!(
        bodies[1]["alerts"][0]["fingerprint"],
        bodies[0]["alerts"][0]["fingerprint"]
    );

    // The history, as any table.
    let events = text_rows(
        &client,
        "SELECT time, event, from_state, to_state, status, outcome, http_status \
         FROM system.alert_events WHERE alert_name = 'high_cpu' ORDER BY time, event DESC",
    )
    .await;
    let events: Vec<Vec<&str>> = events
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        events,
        vec![
            vec![
                "2026-01-01 00:01:00+00",
                "transition",
                "inactive",
                "pending",
                "NULL",
                "NULL",
                "NULL"
            ],
            vec![
                "2026-01-01 00:04:00+00",
                "transition",
                "pending",
                "firing",
                "NULL",
                "NULL",
                "NULL"
            ],
            vec![
                "2026-01-01 00:04:00+00",
                "notification",
                "NULL",
                "NULL",
                "firing",
                "delivered",
                "200"
            ],
            vec![
                "2026-01-01 00:08:30+00",
                "paused",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL"
            ],
            vec![
                "2026-01-01 00:10:00+00",
                "resumed",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL"
            ],
            vec![
                "2026-01-01 00:15:00+00",
                "transition",
                "firing",
                "resolved",
                "NULL",
                "NULL",
                "NULL"
            ],
            vec![
                "2026-01-01 00:15:00+00",
                "notification",
                "NULL",
                "NULL",
                "resolved",
                "delivered",
                "200"
            ],
        ]
    );
    server.terminate();
}

#[tokio::test]
async fn a_down_receiver_gets_retries_and_failing_rules_do_not_hold_up_others() {
    let mut server = Server::start(&["--manual-clock", START, "--alert-memory-limit", "16MiB"]);
    let mut client = server.connect().await;
    // A port nobody listens on (yet).
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    client
        .batch_execute(&format!(
            "CREATE ALERT always AS SELECT 'x' AS k, 1 AS v EVERY '1 minute' \
             NOTIFY WEBHOOK 'http://{dead_addr}/hook' WITH (retries = 3, timeout = '2s')"
        ))
        .await
        .unwrap();
    advance(&server, "0s");
    assert_eq!(status(&client, "always").await.0, "firing");
    // Attempt 1 failed; retries follow after 1 s and 2 s of alert time.
    advance(&server, "1s");
    advance(&server, "2s");
    let attempts = text_rows(
        &client,
        "SELECT attempt, outcome, error FROM system.alert_events \
         WHERE alert_name = 'always' AND event = 'notification' ORDER BY attempt",
    )
    .await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a[0], (i + 1).to_string());
        assert_eq!(a[1], "failed");
        assert!(a[2].contains("onnect"), "{a:?}");
    }
    let undelivered = one(
        &client,
        "SELECT undelivered FROM system.alerts WHERE alert_name = 'always'",
    )
    .await;
    assert_eq!(undelivered[0], "1");
    // The undelivered notification survives kill -9 (the alert clock
    // resumes at the last attempt, 00:00:03).
    server.kill9();
    server.restart();
    client = server.connect().await;
    let undelivered = one(
        &client,
        "SELECT undelivered, state FROM system.alerts WHERE alert_name = 'always'",
    )
    .await;
    assert_eq!(undelivered, vec!["1", "firing"]);
    // The receiver comes up: the fourth attempt (after 4 s) is delivered.
    let receiver = Receiver::on(TcpListener::bind(dead_addr).unwrap());
    advance(&server, "4s");
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["alerts"][0]["labels"]["k"], "x");
    assert_eq!(bodies[0]["alerts"][0]["values"]["v"], 1.0);
    let last = one(
        &client,
        "SELECT attempt, outcome, http_status FROM system.alert_events \
         WHERE alert_name = 'always' AND event = 'notification' ORDER BY attempt DESC LIMIT 1",
    )
    .await;
    assert_eq!(last, vec!["4", "delivered", "200"]);

    // With no retries left, a delivery gives up, and says so.
    client
        .batch_execute(&format!(
            "CREATE ALERT never_heard AS SELECT 'y' AS k EVERY '1 minute' \
             NOTIFY WEBHOOK 'http://{}/hook' WITH (retries = 0)",
            free_port()
        ))
        .await
        .unwrap();
    advance(&server, "0s");
    let gave_up = text_rows(
        &client,
        "SELECT attempt, outcome FROM system.alert_events \
         WHERE alert_name = 'never_heard' AND event = 'notification'",
    )
    .await;
    assert_eq!(gave_up, vec![vec!["1".to_string(), "gave_up".to_string()]]);

    // A failing rule (its table is gone), a slow one (over its
    // query_timeout) and a greedy one (over the alert memory limit) are
    // reported, and the others are evaluated on time.
    client
        .batch_execute(
            "CREATE TABLE doomed (time TIMESTAMP NOT NULL, v DOUBLE);
             CREATE ALERT broken AS SELECT v FROM doomed WHERE v > 100 EVERY '1 minute'
               NOTIFY WEBHOOK 'http://127.0.0.1:9/hook';
             DROP TABLE doomed",
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE ALERT slow AS SELECT count(*) AS n FROM generate_series(1, 100000000000) \
             EVERY '1 minute' NOTIFY WEBHOOK 'http://127.0.0.1:9/hook' \
             WITH (query_timeout = '300ms')",
        )
        .await
        .unwrap();
    // One that needs more than --alert-memory-limit (a 4M-row hash join).
    client
        .batch_execute(
            "CREATE ALERT greedy AS SELECT count(*) AS n FROM generate_series(1, 4000000) a \
             JOIN generate_series(1, 4000000) b ON a.value = b.value HAVING count(*) < 0 \
             EVERY '1 minute' NOTIFY WEBHOOK 'http://127.0.0.1:9/hook'",
        )
        .await
        .unwrap();
    // Their first evaluations, at creation, then the next scheduled ones.
    advance(&server, "0s");
    advance(&server, "1m");
    let rows = text_rows(
        &client,
        "SELECT alert_name, health, evaluations, last_evaluation, last_error \
         FROM system.alerts ORDER BY alert_name",
    )
    .await;
    let by_name = |n: &str| rows.iter().find(|r| r[0] == n).unwrap().clone();
    let broken = by_name("broken");
    assert_eq!(broken[1], "error");
    assert!(broken[4].contains("doomed"), "{broken:?}");
    let slow = by_name("slow");
    assert_eq!(slow[1], "error");
    assert!(slow[4].contains("did not finish within 300ms"), "{slow:?}");
    let greedy = by_name("greedy");
    assert_eq!(greedy[1], "error");
    assert!(greedy[4].contains("Resources exhausted"), "{greedy:?}");
    let always = by_name("always");
    assert_eq!(always[1], "ok");
    assert_eq!(always[2], "2");
    assert_eq!(
        always[3], slow[3],
        "evaluated at the same time as the slow rule"
    );
    let errors = text_rows(
        &client,
        "SELECT count(*) FROM system.alert_events WHERE alert_name = 'slow' AND event = 'error'",
    )
    .await;
    assert_eq!(
        errors,
        vec![vec!["1".to_string()]],
        "one event per new error"
    );
    // Still answering.
    assert_eq!(one(&client, "SELECT 1").await, vec!["1"]);
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
