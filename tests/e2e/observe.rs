//! Sextant's own logs: `--log-format json` writes one JSON object per line,
//! and a statement's log lines carry its `query` span (id, SQL, rows,
//! duration, state, SQLSTATE).

use sextant_tests::Server;

#[tokio::test]
async fn json_logs_carry_the_query_span() {
    let mut server = Server::start(&[
        "--log-format",
        "json",
        "--log-filter",
        "info,sextant_sql=debug",
    ]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (time TIMESTAMP NOT NULL, v DOUBLE)")
        .await
        .unwrap();
    let err = client
        .batch_execute("SELECT * FROM nope")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    server.terminate();
    let lines: Vec<serde_json::Value> = server
        .log()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "sextant is ready")
    );
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "statement failed")
        .expect("a `statement failed` line");
    let span = &failed["span"];
    assert_eq!(span["name"], "query");
    assert_eq!(span["sql"], "SELECT * FROM nope");
    assert_eq!(span["sqlstate"], "42P01");
    assert_eq!(span["state"], "failed");
    assert_eq!(span["protocol"], "pgwire");
    assert!(span["duration_ms"].as_f64().unwrap() > 0.0);
    let created = lines
        .iter()
        .find(|l| l["fields"]["message"] == "table created")
        .expect("a `table created` line");
    // Inside the statement's `plan` span; `spans` lists the enclosing ones.
    assert_eq!(created["span"]["name"], "plan");
    let query = created["spans"]
        .as_array()
        .expect("a `spans` list")
        .iter()
        .find(|s| s["name"] == "query")
        .expect("the query span among the enclosing spans");
    assert_eq!(
        query["sql"],
        "CREATE TABLE t (time TIMESTAMP NOT NULL, v DOUBLE)"
    );
}
