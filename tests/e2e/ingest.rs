//! HTTP ingest: line protocol (v1 and v2 paths) and JSON, with the bad-input
//! cases answering 4xx with a JSON error while good rows are kept.

use std::io::Write;

use sextant_tests::{HttpResponse, Server, http_post, text_rows};

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    text_rows(client, sql)
        .await
        .into_iter()
        .map(|r| r.join("|"))
        .collect()
}

fn post(server: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    http_post(server.http_addr(), path, headers, body).expect("HTTP request")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn line_protocol_creates_tables_and_columns() {
    let server = Server::start(&[]);
    let r = post(
        &server,
        "/api/v2/write?bucket=b&precision=s",
        &[],
        b"cpu,host=a usage=1.5,cores=4i 1704067200\r\ncpu,host=b usage=2,up=t 1704067201\nmem,host=a used=10u 1704067200\n",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // v1 path, gzip body, a new column on an existing table.
    let r = post(
        &server,
        "/write?db=x&precision=ms",
        &[("Content-Encoding", "gzip")],
        &gzip(b"cpu,host=c usage=3,note=\"late\" 1704067202000\n"),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let client = server.connect().await;
    assert_eq!(
        rows(
            &client,
            "SELECT host, usage, cores, up, note FROM cpu ORDER BY time"
        )
        .await,
        ["a|1.5|4|NULL|NULL", "b|2|NULL|t|NULL", "c|3|NULL|NULL|late"]
    );
    assert_eq!(
        rows(&client, "SELECT CAST(used AS BIGINT) FROM mem").await,
        ["10"]
    );
    assert_eq!(
        rows(&client, "SELECT data_type FROM information_schema.columns WHERE table_name = 'cpu' AND column_name = 'up'").await,
        ["boolean"]
    );
}

#[tokio::test]
async fn line_protocol_rejects_bad_lines_and_keeps_good_ones() {
    let server = Server::start(&["--max-body-size", "4KiB"]);
    let ok = post(&server, "/api/v2/write", &[], b"cpu,host=a usage=1.5 1\n");
    assert_eq!(ok.status, 204, "{}", ok.body);
    let r = post(
        &server,
        "/api/v2/write",
        &[],
        b"cpu,host=b usage=2.5 2\nnot line protocol\ncpu,host=c usage=\"high\" 3\ncpu,host=d usage=4 4\n",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.header("content-type").unwrap_or("").contains("json"),
        "{r:?}"
    );
    assert!(r.body.contains("line 2:"), "{}", r.body);
    assert!(
        r.body.contains(
            "line 3: column \\\"usage\\\" of table \\\"cpu\\\" is double, but this value is text"
        ),
        "{}",
        r.body
    );
    assert!(r.body.contains("2 written"), "{}", r.body);
    let client = server.connect().await;
    assert_eq!(
        rows(&client, "SELECT host FROM cpu ORDER BY time").await,
        ["a", "b", "d"]
    );

    // Unknown precision, unsupported encoding, bad gzip, too large, gzip bomb.
    assert_eq!(
        post(&server, "/write?precision=h2", &[], b"m v=1").status,
        400
    );
    assert_eq!(
        post(&server, "/write", &[("Content-Encoding", "br")], b"m v=1").status,
        415
    );
    assert_eq!(
        post(&server, "/write", &[("Content-Encoding", "gzip")], b"nope").status,
        400
    );
    let big = vec![b'x'; 8192];
    assert_eq!(post(&server, "/write", &[], &big).status, 413);
    let bomb = gzip(&vec![b'#'; 1 << 20]);
    assert!(bomb.len() < 4096, "the bomb is small: {} bytes", bomb.len());
    let r = post(&server, "/write", &[("Content-Encoding", "gzip")], &bomb);
    assert_eq!(r.status, 413, "{}", r.body);
    // Still serving, nothing lost.
    assert_eq!(rows(&client, "SELECT count(*) FROM cpu").await, ["3"]);
}

#[tokio::test]
async fn json_rows_flatten_and_bad_rows_are_named() {
    let server = Server::start(&[]);
    let r = post(
        &server,
        "/v1/ingest/events",
        &[("Content-Type", "application/x-ndjson")],
        b"{\"time\": \"2024-01-01T00:00:00Z\", \"svc\": \"api\", \"http\": {\"status\": 500}, \"tags\": [1, 2]}\n\
          {\"time\": 1704067201000, \"svc\": \"web\", \"http\": {\"status\": 200}}\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &server,
        "/v1/ingest/events?precision=ms",
        &[],
        b"[{\"time\": 1704067202000, \"svc\": \"db\", \"ms\": 1.5}, {\"svc\": 7}, 3]",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("line 2: element 1: column \\\"svc\\\""),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("element 2: expected a JSON object"),
        "{}",
        r.body
    );
    assert_eq!(post(&server, "/v1/ingest/events", &[], b"[{").status, 400);
    let client = server.connect().await;
    assert_eq!(
        rows(
            &client,
            "SELECT svc, \"http.status\", tags, ms FROM events ORDER BY svc"
        )
        .await,
        [
            "api|500|[1,2]|NULL",
            "db|NULL|NULL|1.5",
            "web|200|NULL|NULL"
        ]
    );
}
