//! Runs every `.slt` file under `sqllogictest/slt/` against a real `sextant`
//! server over pgwire (tokio-postgres).
//!
//! Each file gets its own server on a fresh data directory (isolation), files
//! run in parallel (`SEXTANT_SLT_JOBS`, default 2). Queries use the simple
//! query protocol, so values are compared as Postgres text, exactly as psql
//! shows them; each query is also prepared first (extended protocol) to learn
//! the column types. Errors read `SQLSTATE: message`, so a file can expect
//! `statement error 42P01`.
//!
//! Harness statements (not SQL, handled here):
//! - `restart server`: clean shutdown (SIGTERM), start again, reconnect;
//! - `kill server`: SIGKILL, start again, reconnect (crash recovery);
//! - `wait for views`: until every materialized view has refreshed what
//!   was written (`system.materialized_views` says `current`); servers
//!   refresh views every 50 ms here.
//! - `advance clock <duration>` (e.g. `advance clock 1m`): moves the
//!   server's clock (retention, token expiry, alert rules), which starts at
//!   2026-01-01T00:00:00Z here (`--manual-clock`), and returns once every
//!   alert evaluation and notification due by then has run (`advance clock
//!   0s` just waits for those due now); as the user of `connect as`, if any.
//! - `write line protocol` and the lines on the lines below it: an
//!   InfluxDB line-protocol write (`POST /api/v2/write`, nanosecond
//!   timestamps); an error is the HTTP status and body.
//! - `connect as <user> <password>`: a new connection, logged in as that
//!   user (SCRAM, or MD5 for a user made with MD5); later restarts
//!   reconnect as it too. Until a file makes
//!   users, its connection needs no password (loopback).
//!
//! The SQLite corpus (`sqlite/*.test`) runs as its own runner would run it
//! against PostgreSQL: label `postgresql`, column types not checked. With
//! `SEXTANT_SLT_POSTGRES` set to a libpq connection string (e.g. `host=/tmp
//! port=55432 user=postgres`), only the corpus runs, against that
//! PostgreSQL instead, each file in a fresh database: the check that the
//! expected answers are PostgreSQL's.
//!
//! Usage: `cargo test -p sextant-sqllogictest --test sqllogictests -- [--complete] [name filter ...]`.
//! `--complete` rewrites the expected output of the selected files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use sextant_tests::Server;
use sqllogictest::{DBOutput, Runner};
use tokio::sync::{Mutex, Semaphore};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Where the clock of every server here starts.
const ALERT_CLOCK_START: &str = "2026-01-01T00:00:00Z";

/// An error as a test file sees it: `SQLSTATE: message`.
#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

impl From<tokio_postgres::Error> for SqlError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => SqlError(format!("{}: {}", db.code().code(), db.message())),
            None => SqlError(format!("connection error: {e}")),
        }
    }
}

struct Sextant {
    server: Arc<Mutex<Server>>,
    client: Client,
    /// The user and password of `connect as`, if any.
    login: Option<(String, String)>,
    /// Whether queries' column types are learned (prepared first); the
    /// SQLite corpus does not check them.
    describe: bool,
}

impl Sextant {
    async fn reconnect(&mut self) -> Result<(), SqlError> {
        let server = self.server.lock().await;
        self.client = match &self.login {
            Some((user, password)) => server.connect_as(user, password).await?,
            None => server.try_connect().await?,
        };
        Ok(())
    }

    async fn column_types(&self, sql: &str) -> Option<Vec<ColType>> {
        let stmt = self.client.prepare(sql).await.ok()?;
        Some(
            stmt.columns()
                .iter()
                .map(|c| ColType::of(c.type_()))
                .collect(),
        )
    }
}

/// A result column's type, as a `query` line spells it, checked against
/// the type the server describes the column with (every letter must match):
/// `I` integers, `R` floating point and numeric, `T` text, `B` boolean,
/// `P` timestamps, `D` dates and times of day, `V` intervals, `?` any
/// other type (arrays, json, uuid, bytea, oid-like types). Any other
/// letter is a syntax error in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColType {
    Integer,
    Float,
    Text,
    Bool,
    Timestamp,
    Date,
    Interval,
    Other,
}

impl ColType {
    fn of(t: &Type) -> Self {
        match *t {
            Type::INT2 | Type::INT4 | Type::INT8 => ColType::Integer,
            Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => ColType::Float,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR => ColType::Text,
            Type::BOOL => ColType::Bool,
            Type::TIMESTAMP | Type::TIMESTAMPTZ => ColType::Timestamp,
            Type::DATE | Type::TIME | Type::TIMETZ => ColType::Date,
            Type::INTERVAL => ColType::Interval,
            _ => ColType::Other,
        }
    }
}

impl sqllogictest::ColumnType for ColType {
    fn from_char(value: char) -> Option<Self> {
        Some(match value {
            'I' => ColType::Integer,
            'R' => ColType::Float,
            'T' => ColType::Text,
            'B' => ColType::Bool,
            'P' => ColType::Timestamp,
            'D' => ColType::Date,
            'V' => ColType::Interval,
            '?' => ColType::Other,
            _ => return None,
        })
    }

    fn to_char(&self) -> char {
        match self {
            ColType::Integer => 'I',
            ColType::Float => 'R',
            ColType::Text => 'T',
            ColType::Bool => 'B',
            ColType::Timestamp => 'P',
            ColType::Date => 'D',
            ColType::Interval => 'V',
            ColType::Other => '?',
        }
    }
}

fn returns_rows(sql: &str) -> bool {
    let head = sql
        .trim_start()
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        head.as_str(),
        "select" | "with" | "values" | "explain" | "show" | "table"
    )
}

impl Sextant {
    async fn write_line_protocol(&mut self, body: &str) -> Result<DBOutput<ColType>, SqlError> {
        let addr = self.server.lock().await.http_addr();
        let body = body.to_string();
        let r = tokio::task::spawn_blocking(move || {
            sextant_tests::http_post(
                addr,
                "/api/v2/write?precision=ns",
                &[("Content-Type", "text/plain")],
                body.as_bytes(),
            )
        })
        .await
        .map_err(|e| SqlError(e.to_string()))?
        .map_err(|e| SqlError(format!("write line protocol: {e}")))?;
        if r.status != 204 {
            return Err(SqlError(format!("{} {}", r.status, r.body)));
        }
        Ok(DBOutput::StatementComplete(0))
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for Sextant {
    type Error = SqlError;
    type ColumnType = ColType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let words: Vec<&str> = sql.split_whitespace().collect();
        if let ["connect", "as", user, password] = words.as_slice() {
            self.login = Some((user.to_string(), password.to_string()));
            self.reconnect().await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(("write line protocol", body)) = sql.trim().split_once('\n') {
            return self.write_line_protocol(body).await;
        }
        match sql
            .trim()
            .trim_end_matches(';')
            .to_ascii_lowercase()
            .as_str()
        {
            "restart server" => {
                {
                    let mut server = self.server.lock().await;
                    let status = server.terminate();
                    if !status.success() {
                        return Err(SqlError(format!("clean shutdown failed: {status}")));
                    }
                    server.restart();
                }
                self.reconnect().await?;
                return Ok(DBOutput::StatementComplete(0));
            }
            "wait for views" => {
                let deadline = Instant::now() + std::time::Duration::from_secs(60);
                loop {
                    let rows = self
                        .client
                        .simple_query(
                            "SELECT view_name, state, last_error FROM system.materialized_views \
                             WHERE state <> 'current'",
                        )
                        .await
                        .map_err(|e| SqlError(e.to_string()))?;
                    let waiting: Vec<String> = rows
                        .iter()
                        .filter_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(r) => Some(format!(
                                "{} ({}{})",
                                r.get(0).unwrap_or(""),
                                r.get(1).unwrap_or(""),
                                r.get(2).map(|e| format!(": {e}")).unwrap_or_default()
                            )),
                            _ => None,
                        })
                        .collect();
                    if waiting.is_empty() {
                        return Ok(DBOutput::StatementComplete(0));
                    }
                    if Instant::now() > deadline {
                        return Err(SqlError(format!(
                            "views not current after 60 s: {}",
                            waiting.join(", ")
                        )));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
            }
            cmd if cmd.starts_with("advance clock ") => {
                let by = cmd["advance clock ".len()..].trim().to_string();
                let addr = self.server.lock().await.http_addr();
                let body = serde_json::json!({ "advance": by }).to_string();
                // As the user of `connect as`, once a file has users.
                let auth = self.login.as_ref().map(|(user, password)| {
                    use base64::Engine as _;
                    let pair = format!("{user}:{password}");
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    )
                });
                let r = tokio::task::spawn_blocking(move || {
                    let mut headers = vec![("Content-Type", "application/json")];
                    if let Some(auth) = &auth {
                        headers.push(("Authorization", auth.as_str()));
                    }
                    sextant_tests::http_post(addr, "/debug/clock", &headers, body.as_bytes())
                })
                .await
                .map_err(|e| SqlError(e.to_string()))?
                .map_err(|e| SqlError(format!("advance clock: {e}")))?;
                if r.status != 200 {
                    return Err(SqlError(format!("advance clock: {} {}", r.status, r.body)));
                }
                return Ok(DBOutput::StatementComplete(0));
            }
            "kill server" => {
                {
                    let mut server = self.server.lock().await;
                    server.kill9();
                    server.restart();
                }
                self.reconnect().await?;
                return Ok(DBOutput::StatementComplete(0));
            }
            _ => {}
        }
        let types = if self.describe && returns_rows(sql) {
            self.column_types(sql).await
        } else {
            None
        };
        query(&self.client, sql, types).await
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "sextant"
    }
}

/// Runs `sql` in the simple query protocol: values as Postgres text, NULL
/// as `NULL` and the empty string as `(empty)`, as the SQLite corpus
/// writes them; `types` as the extended protocol described the columns.
async fn query(
    client: &Client,
    sql: &str,
    types: Option<Vec<ColType>>,
) -> Result<DBOutput<ColType>, SqlError> {
    let messages = client.simple_query(sql).await?;
    let mut rows = vec![];
    let mut complete = None;
    let mut described = false;
    for m in messages {
        match m {
            SimpleQueryMessage::Row(row) => {
                rows.push(
                    (0..row.len())
                        .map(|i| match row.get(i) {
                            None => "NULL".to_string(),
                            Some("") => "(empty)".to_string(),
                            Some(v) => v.to_string(),
                        })
                        .collect::<Vec<_>>(),
                );
            }
            SimpleQueryMessage::RowDescription(_) => described = true,
            SimpleQueryMessage::CommandComplete(n) => complete = Some(n),
            _ => {}
        }
    }
    if described || !rows.is_empty() || types.is_some() {
        let width = rows.first().map(|r| r.len()).unwrap_or(0);
        let types = types
            .filter(|t| t.len() == width || rows.is_empty())
            .unwrap_or_else(|| vec![ColType::Other; width]);
        Ok(DBOutput::Rows { types, rows })
    } else {
        Ok(DBOutput::StatementComplete(complete.unwrap_or(0)))
    }
}

/// A PostgreSQL server, to check that the SQLite corpus passes there too
/// (`SEXTANT_SLT_POSTGRES`): each file gets a database of its own.
struct Postgres {
    client: Client,
}

#[async_trait]
impl sqllogictest::AsyncDB for Postgres {
    type Error = SqlError;
    type ColumnType = ColType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        query(&self.client, sql, None).await
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "postgresql"
    }
}

/// What the corpus's own files ask of a PostgreSQL runner: the label
/// `postgresql`, column types not checked.
fn as_corpus_runner<
    D: sqllogictest::AsyncDB<ColumnType = ColType>,
    M: sqllogictest::MakeConnection<Conn = D>,
>(
    runner: &mut Runner<D, M>,
) {
    runner.add_label("postgresql");
    runner.with_column_validator(sqllogictest::default_column_validator);
}

/// Connects to `config` (a libpq connection string), driving the
/// connection in the background.
async fn pg_connect(config: &str) -> Result<Client, SqlError> {
    let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs one corpus file against the PostgreSQL server at `config`, in a
/// fresh database named after the file.
async fn run_on_postgres(file: &TestFile, config: &str) -> Result<(), String> {
    let stem = file
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let database = format!("sextant_slt_{stem}");
    let admin = pg_connect(config).await.map_err(|e| e.to_string())?;
    // One statement each: CREATE DATABASE cannot run in the implicit
    // transaction of a multi-statement query.
    for sql in [
        format!("DROP DATABASE IF EXISTS {database}"),
        format!("CREATE DATABASE {database}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| SqlError::from(e).to_string())?;
    }
    let config = format!("{config} dbname={database}");
    let mut runner = Runner::new(move || {
        let config = config.clone();
        async move {
            Ok::<_, SqlError>(Postgres {
                client: pg_connect(&config).await?,
            })
        }
    });
    as_corpus_runner(&mut runner);
    let result = runner
        .run_file_async(&file.path)
        .await
        .map_err(|e| e.display(true).to_string());
    drop(runner);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database}"))
        .await;
    result
}

struct Args {
    complete: bool,
    filters: Vec<String>,
}

fn args() -> Args {
    let mut complete = false;
    let mut filters = vec![];
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--complete" => complete = true,
            // Flags cargo test passes to every test binary.
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    Args { complete, filters }
}

/// A test file, and whether it is the SQLite corpus (`sqlite/*.test`), run
/// as its own runner would: label `postgresql`, column types not checked.
struct TestFile {
    path: PathBuf,
    corpus: bool,
}

/// The SQLite corpus, longest first, then the `.slt` files of the checkout
/// being tested (so the long files overlap the many short ones).
/// `cargo test` says where its manifest is at run time; the path compiled
/// in can name another checkout when a target directory is shared (a CI
/// cache).
fn test_files() -> Vec<TestFile> {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let list = |dir: &str, ext: &str| {
        let dir = manifest_dir.join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no .{ext} files in {}", dir.display());
        files
    };
    let slt = list("slt", "slt").into_iter().map(|path| TestFile {
        path,
        corpus: false,
    });
    let corpus = list("sqlite", "test")
        .into_iter()
        .rev()
        .map(|path| TestFile { path, corpus: true });
    corpus.chain(slt).collect()
}

async fn run_file(file: &TestFile, complete: bool) -> Result<(), String> {
    let path = &file.path;
    if let Ok(config) = std::env::var("SEXTANT_SLT_POSTGRES") {
        return run_on_postgres(file, &config).await;
    }
    let server = tokio::task::spawn_blocking(|| {
        Server::start(&[
            "--view-refresh-interval",
            "50ms",
            "--manual-clock",
            ALERT_CLOCK_START,
        ])
    })
    .await
    .map_err(|e| format!("starting sextant: {e}"))?;
    let server = Arc::new(Mutex::new(server));
    let corpus = file.corpus;
    let make = {
        let server = server.clone();
        move || {
            let server = server.clone();
            async move {
                let client = server.lock().await.try_connect().await?;
                Ok::<_, SqlError>(Sextant {
                    server,
                    client,
                    login: None,
                    describe: !corpus,
                })
            }
        }
    };
    let mut runner = Runner::new(make);
    if file.corpus {
        as_corpus_runner(&mut runner);
    } else {
        runner.with_column_validator(sqllogictest::strict_column_validator);
    }
    let result = if complete {
        runner
            .update_test_file(
                path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::strict_column_validator,
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        runner
            .run_file_async(path)
            .await
            .map_err(|e| e.display(true).to_string())
    };
    if result.is_err() {
        let log = server.lock().await.log_tail(30);
        return result.map_err(|e| format!("{e}\n--- server log (tail) ---\n{log}"));
    }
    result
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let on_postgres = std::env::var_os("SEXTANT_SLT_POSTGRES").is_some();
    let files: Vec<TestFile> = test_files()
        .into_iter()
        .filter(|f| f.corpus || !on_postgres)
        .filter(|f| {
            let name = f.path.file_name().unwrap().to_string_lossy();
            args.filters.is_empty() || args.filters.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();
    let jobs: usize = std::env::var("SEXTANT_SLT_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(jobs.max(1)));
    let mut tasks = vec![];
    for file in files {
        let permits = permits.clone();
        let complete = args.complete;
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            let t = Instant::now();
            let result = run_file(&file, complete).await;
            (file.path, result, t.elapsed())
        }));
    }
    let (mut passed, mut failed) = (0, 0);
    for task in tasks {
        let (path, result, elapsed) = task.await.expect("slt task panicked");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1}s)", elapsed.as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n{e}\n");
            }
        }
    }
    println!(
        "\nsqllogictest: {passed} passed, {failed} failed ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
