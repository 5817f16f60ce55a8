//! Users, SCRAM logins and tokens with tokio-postgres and the Flight SQL
//! Rust client, across restarts.

use sextant_tests::{Server, http_post, text_rows};
use tokio_postgres::error::SqlState;

fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_grants_and_tokens_survive_restarts_and_logins_are_limited() {
    let mut server = Server::start(&[]);
    let setup = server.connect().await;
    // Without an admin nobody could manage users once logins are required.
    let e = setup
        .batch_execute("CREATE USER bob WITH PASSWORD 'b'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55006", "{e}");
    setup
        .batch_execute(
            "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE);
             CREATE USER root WITH SUPERUSER PASSWORD 'root-pw';
             CREATE USER bob WITH PASSWORD 'b';
             GRANT SELECT, INSERT ON TABLE cpu TO bob;",
        )
        .await
        .unwrap();
    let e = setup
        .batch_execute("CREATE USER bob WITH PASSWORD 'again'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42710");
    let e = setup.batch_execute("DROP USER carol").await.unwrap_err();
    assert_eq!(code(&e), "42704");
    let e = setup
        .batch_execute("ALTER USER root NOSUPERUSER")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55006", "the last admin stays: {e}");
    drop(setup);

    // A new connection without a password is refused now.
    assert!(server.try_connect().await.is_err());
    server.terminate();
    server.restart();

    let bob = server.connect_as("bob", "b").await.unwrap();
    bob.batch_execute("INSERT INTO cpu VALUES ('2024-01-01T00:00:00Z', 'a', 1)")
        .await
        .unwrap();
    assert_eq!(
        text_rows(&bob, "SELECT host FROM cpu").await,
        vec![vec!["a".to_string()]]
    );
    let e = bob
        .batch_execute("CREATE TABLE other (time TIMESTAMP NOT NULL)")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    let e = server.connect_as("bob", "wrong").await.unwrap_err();
    assert_eq!(code(&e), "28P01");
    assert_eq!(
        message(&e),
        "password authentication failed for user \"bob\""
    );
    let e = server.connect_as("nobody", "wrong").await.unwrap_err();
    assert_eq!(code(&e), "28P01");
    assert_eq!(
        message(&e),
        "password authentication failed for user \"nobody\""
    );

    // A token made before a restart still works after it; REVOKE is at once.
    let root = server.connect_as("root", "root-pw").await.unwrap();
    let secret = text_rows(&root, "CREATE TOKEN lp FOR USER bob INSERT ON cpu").await[0][2].clone();
    server.terminate();
    server.restart();
    let auth = format!("Bearer {secret}");
    let headers = [("Authorization", auth.as_str())];
    let r = http_post(
        server.http_addr(),
        "/api/v2/write",
        &headers,
        b"cpu,host=b usage=2",
    )
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    let root = server.connect_as("root", "root-pw").await.unwrap();
    let bob = server.connect_as("bob", "b").await.unwrap();
    root.batch_execute("REVOKE INSERT ON cpu FROM bob")
        .await
        .unwrap();
    let r = http_post(
        server.http_addr(),
        "/api/v2/write",
        &headers,
        b"cpu,host=c usage=3",
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    let e = bob
        .batch_execute("INSERT INTO cpu VALUES ('2024-01-01T00:00:01Z', 'd', 4)")
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "an open session sees the REVOKE at once: {e}"
    );
    assert_eq!(
        text_rows(&root, "SELECT count(*) FROM cpu").await,
        vec![vec!["2".to_string()]]
    );

    // Ten failed logins from one address, then even the right password
    // waits; the server keeps answering.
    for _ in 0..10 {
        assert!(server.connect_as("root", "guess").await.is_err());
    }
    let e = server.connect_as("root", "root-pw").await.unwrap_err();
    assert_eq!(code(&e), "28000", "{e}");
    assert!(message(&e).contains("too many failed logins"), "{e}");
    assert_eq!(
        text_rows(&root, "SELECT count(*) FROM system.users").await,
        vec![vec!["2".to_string()]]
    );
    assert!(server.log().contains("login failed"));
}

/// Reads backend messages until an ErrorResponse, returning its fields.
async fn read_error(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    loop {
        let kind = stream
            .read_u8()
            .await
            .expect("a message, not a closed socket");
        let len = stream.read_u32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        stream.read_exact(&mut body).await.unwrap();
        if kind == b'E' {
            return String::from_utf8_lossy(&body).replace('\0', " ");
        }
    }
}

fn startup(user: &str) -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    body.extend_from_slice(format!("user\0{user}\0database\0sextant\0\0").as_bytes());
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test]
async fn truncated_frontend_messages_before_login_get_08p01_and_the_server_goes_on() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&[]);
    let setup = server.connect().await;
    setup
        .batch_execute("CREATE USER root WITH SUPERUSER PASSWORD 'root-pw'")
        .await
        .unwrap();
    // Messages a client may send before it has logged in, with bodies
    // shorter than their fields say (pgwire's decoders used to panic on
    // them, killing the connection's task without an answer).
    let cases: [(&[u8], &str); 4] = [
        // Parse with a 4-byte body and no terminating NULs.
        (
            b"P\0\0\0\x08\x04\xd2\x16/",
            "Invalid message: 4 bytes required, 2 remaining",
        ),
        // Parse whose parameter-type count says 5, with no types.
        (
            b"P\0\0\0\x08\0\0\0\x05",
            "Invalid message: 4 bytes required, 0 remaining",
        ),
        // Bind with one parameter of 100 bytes, and 2 of them.
        (
            b"B\0\0\0\x12\0\0\0\0\0\x01\0\0\0\x64ab\0\0",
            "Invalid message: 100 bytes required, 4 remaining",
        ),
        // A length below the length field's own 4 bytes.
        (b"Q\0\0\0\x02", "Invalid message length"),
    ];
    for (case, expected) in cases {
        let mut stream = tokio::net::TcpStream::connect(server.pg_addr())
            .await
            .unwrap();
        stream.write_all(&startup("root")).await.unwrap();
        // AuthenticationSASL, then the malformed message instead of an answer.
        stream.write_all(case).await.unwrap();
        let error = read_error(&mut stream).await;
        assert!(error.contains("SFATAL C08P01"), "{error}");
        assert!(error.contains(expected), "{error}");
    }
    let root = server.connect_as("root", "root-pw").await.unwrap();
    assert_eq!(
        text_rows(&root, "SELECT 1").await,
        vec![vec!["1".to_string()]]
    );
    assert!(
        !server.log().contains("panicked"),
        "{}",
        server.log_tail(40)
    );
}

/// Describing a statement (pgwire Parse/Describe, as `prepare` sends them;
/// Flight SQL GetFlightInfo and CreatePreparedStatement) needs the same
/// privileges as running it: a user without SELECT on a table learns
/// neither its columns nor their types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describing_a_statement_needs_the_privileges_running_it_does() {
    use arrow_flight::error::FlightError;
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use tonic::transport::Channel;

    let server = Server::start(&[]);
    let setup = server.connect().await;
    setup
        .batch_execute(
            "CREATE TABLE secret (time TIMESTAMP NOT NULL, api_key TEXT, owner TEXT);
             CREATE TABLE open (time TIMESTAMP NOT NULL, host TEXT);
             CREATE USER root WITH SUPERUSER PASSWORD 'root-pw';
             CREATE USER eve WITH PASSWORD 'e';
             GRANT SELECT ON TABLE open TO eve;",
        )
        .await
        .unwrap();
    drop(setup);
    let probes = [
        "SELECT * FROM secret",
        "SELECT api_key FROM secret WHERE owner = $1",
        "SELECT o.host FROM open o WHERE o.host IN (SELECT owner FROM secret)",
        "INSERT INTO secret (time, api_key) VALUES ($1, $2)",
    ];

    // pgwire: Parse + Describe, never executed.
    let eve = server.connect_as("eve", "e").await.unwrap();
    for sql in probes {
        let e = eve.prepare(sql).await.err().unwrap_or_else(|| {
            panic!("{sql}: eve learned the statement's columns without SELECT on secret")
        });
        assert_eq!(code(&e), "42501", "{sql}: {e}");
        assert!(message(&e).contains("secret"), "{sql}: {e}");
    }
    let ok = eve.prepare("SELECT host FROM open").await.unwrap();
    assert_eq!(ok.columns()[0].name(), "host");
    let root = server.connect_as("root", "root-pw").await.unwrap();
    let described = root.prepare(probes[1]).await.unwrap();
    assert_eq!(described.columns()[0].name(), "api_key");

    // Flight SQL: GetFlightInfo and CreatePreparedStatement.
    let addr = server.flight_addr().expect("a Flight SQL address");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = FlightSqlServiceClient::new(channel);
    let basic = |user: &str, pw: &str| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        format!("Basic {b}")
    };
    flight.set_header("authorization", basic("eve", "e"));
    let denied = |e: FlightError, sql: &str, call: &str| match e {
        FlightError::Tonic(s) => {
            assert_eq!(s.code(), tonic::Code::PermissionDenied, "{call} {sql}: {s}");
            assert!(s.message().contains("secret"), "{call} {sql}: {s}");
        }
        other => panic!("{call} {sql}: not a gRPC status: {other}"),
    };
    for sql in probes {
        match flight.execute(sql.to_string(), None).await {
            Ok(info) => panic!(
                "GetFlightInfo {sql}: eve got the schema {:?}",
                info.try_decode_schema()
            ),
            Err(e) => denied(e, sql, "GetFlightInfo"),
        }
        match flight.prepare(sql.to_string(), None).await {
            Ok(p) => panic!(
                "CreatePreparedStatement {sql}: eve got the schema {:?}",
                p.dataset_schema()
            ),
            Err(e) => denied(e, sql, "CreatePreparedStatement"),
        }
    }
    let p = flight
        .prepare("SELECT host FROM open".to_string(), None)
        .await
        .unwrap();
    assert_eq!(p.dataset_schema().unwrap().field(0).name(), "host");
    flight.set_header("authorization", basic("root", "root-pw"));
    let p = flight.prepare(probes[1].to_string(), None).await.unwrap();
    assert_eq!(p.dataset_schema().unwrap().field(0).name(), "api_key");
}
