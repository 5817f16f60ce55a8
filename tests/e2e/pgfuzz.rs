//! Fuzzing of what the server does with the extended-query messages after
//! login (Parse, Bind, Describe, Execute, Close, Flush, Sync), through the
//! real binary: the statement and its parameters go through the SQL
//! pipeline (planning, parameter types, binding, execution, result
//! encoding) as a driver's would.
//!
//! Not coverage-guided: a libFuzzer target would need DataFusion in the
//! instrumented build, more than CI's budget on two cores. Instead each
//! execution is a random sequence of messages, built from the statements
//! of `sqllogictest/slt` (the corpus), mutated (literals turned into
//! parameters, statements spliced, tokens dropped or repeated, characters
//! inserted), with random parameter types, formats and values (valid
//! encodings and garbage), random statement and portal names and row
//! limits, and now and then a message whose body has random bytes in it;
//! then a Sync. The oracle:
//!
//! - every sequence is answered, up to ReadyForQuery, within the timeout;
//! - a connection closes only after a message with damaged bytes, and
//!   then with an ErrorResponse first;
//! - every ErrorResponse carries a five-character SQLSTATE and a message;
//! - the server stays up, logs no panic but those it answered as errors
//!   ("the query planner failed on this statement (...)"), stays under
//!   3 GiB with `--query-memory-limit 512MB --buffer-limit 256MB`
//!   (`PGFUZZ_RSS_LIMIT_MB`), and answers a query at the end with the rows
//!   it was given.
//!
//! `PGFUZZ_SECONDS` (default 20) bounds the run, `PGFUZZ_EXECUTIONS` (if
//! set) stops it after that many sequences, `PGFUZZ_SEED` fixes the random
//! seed (a failure prints the seed and the sequence), `PGFUZZ_CONNECTIONS`
//! (default 2) runs that many clients at once, and `PGFUZZ_ROUND_SECONDS`
//! (default: the whole run) starts a fresh server that often.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sextant_tests::{Server, env_or};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Statements from the sqllogictest files that leave the server usable for
/// the next sequence (no users, grants, drops or alerts).
fn corpus() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sqllogictest/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    let mut out = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if !(line.starts_with("statement ") || line.starts_with("query ")) {
                continue;
            }
            let sql: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.trim().is_empty() && *l != "----")
                .collect();
            let sql = sql.join("\n");
            let upper = sql.to_ascii_uppercase();
            const UNSAFE: [&str; 12] = [
                "USER", "ROLE", "GRANT", "REVOKE", "DROP", "ALERT", "PASSWORD", "TOKEN", "DELETE",
                "TRUNCATE", "ALTER", "SLEEP",
            ];
            if !sql.is_empty() && !UNSAFE.iter().any(|w| upper.contains(w)) {
                out.push(sql);
            }
        }
    }
    out
}

/// Postgres type OIDs a client might name for a parameter.
const OIDS: [u32; 12] = [0, 16, 17, 20, 21, 23, 25, 700, 701, 1043, 1114, 1184];

/// A frontend message: its type byte and body.
#[derive(Clone, Debug)]
struct Msg {
    kind: u8,
    body: Vec<u8>,
}

impl Msg {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind);
        out.extend_from_slice(&(self.body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(&self.body);
    }
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

struct Gen {
    rng: StdRng,
    corpus: Arc<Vec<String>>,
}

impl Gen {
    fn name(&mut self, prefix: &str) -> String {
        match self.rng.random_range(0..4) {
            0 | 1 => String::new(),
            2 => format!("{prefix}1"),
            _ => format!("{prefix}{}", self.rng.random_range(0..4)),
        }
    }

    fn pick(&mut self) -> String {
        let i = self.rng.random_range(0..self.corpus.len());
        self.corpus[i].clone()
    }

    /// A statement from the corpus, mutated, and how many parameters it
    /// refers to.
    fn sql(&mut self) -> (String, usize) {
        let mut sql = self.pick();
        let mut params = 0;
        for _ in 0..self.rng.random_range(0..4) {
            match self.rng.random_range(0..10) {
                // A literal becomes a parameter, as a driver sends it.
                0..=4 => {
                    let at = literal_spans(&sql);
                    if !at.is_empty() {
                        let (a, b) = at[self.rng.random_range(0..at.len())];
                        params += 1;
                        sql.replace_range(a..b, &format!("${params}"));
                    }
                }
                5 => {
                    let other = self.pick();
                    let cut = char_floor(&sql, self.rng.random_range(0..=sql.len()));
                    let from = char_floor(&other, self.rng.random_range(0..=other.len()));
                    sql = format!("{}{}", &sql[..cut], &other[from..]);
                }
                6 => {
                    let words: Vec<&str> = sql.split(' ').collect();
                    let drop = self.rng.random_range(0..words.len());
                    sql = words
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != drop)
                        .map(|(_, w)| *w)
                        .collect::<Vec<_>>()
                        .join(" ");
                }
                7 => {
                    let words: Vec<&str> = sql.split(' ').collect();
                    let dup = self.rng.random_range(0..words.len());
                    let mut out = words.clone();
                    out.insert(dup, words[dup]);
                    sql = out.join(" ");
                }
                8 => {
                    const CHARS: &[&str] = &[
                        "(", ")", ",", "'", "\"", ";", "$1", "$0", "$99999", "::", "NULL", "*",
                        "é", "\\", "--", "/*", "1e400", "-", "[", "]",
                    ];
                    let at = char_floor(&sql, self.rng.random_range(0..=sql.len()));
                    sql.insert_str(at, CHARS[self.rng.random_range(0..CHARS.len())]);
                }
                _ => params = self.rng.random_range(0..4),
            }
        }
        (sql, params)
    }

    fn param_value(&mut self, binary: bool) -> Option<Vec<u8>> {
        if self.rng.random_range(0..8) == 0 {
            return None;
        }
        if binary {
            let len = [0usize, 1, 2, 4, 8, 12, 16, 3][self.rng.random_range(0..8)];
            let mut v = vec![0u8; len];
            self.rng.fill_bytes(&mut v);
            return Some(v);
        }
        const TEXT: &[&str] = &[
            "1",
            "0",
            "-1",
            "42",
            "9223372036854775807",
            "-9223372036854775809",
            "1.5",
            "1e308",
            "NaN",
            "-Infinity",
            "true",
            "f",
            "",
            "abc",
            "2026-12-06T00:00:00Z",
            "2026-12-06 00:00:00",
            "1 day",
            "{}",
            "[1,2]",
            "\u{0}",
            "'; SELECT 1; --",
            "host_1",
            "0x00",
            "%",
            "99999999999999999999999999",
        ];
        Some(
            TEXT[self.rng.random_range(0..TEXT.len())]
                .as_bytes()
                .to_vec(),
        )
    }

    fn message(&mut self) -> Msg {
        let mut body = vec![];
        let kind = match self.rng.random_range(0..20) {
            0..=5 => {
                let (sql, params) = self.sql();
                cstr(&mut body, &self.name("s"));
                cstr(&mut body, &sql.replace('\0', ""));
                let declared = if self.rng.random_bool(0.5) {
                    0
                } else {
                    params + self.rng.random_range(0..2)
                };
                body.extend_from_slice(&(declared as i16).to_be_bytes());
                for _ in 0..declared {
                    let oid = if self.rng.random_range(0..10) == 0 {
                        self.rng.random()
                    } else {
                        OIDS[self.rng.random_range(0..OIDS.len())]
                    };
                    body.extend_from_slice(&oid.to_be_bytes());
                }
                b'P'
            }
            6..=10 => {
                cstr(&mut body, &self.name("p"));
                cstr(&mut body, &self.name("s"));
                let params = self.rng.random_range(0..4usize);
                let formats: Vec<i16> = match self.rng.random_range(0..4) {
                    0 => vec![],
                    1 => vec![self.rng.random_range(0..2)],
                    2 => (0..params).map(|_| self.rng.random_range(0..2)).collect(),
                    _ => (0..self.rng.random_range(0..4))
                        .map(|_| self.rng.random_range(-1..3))
                        .collect(),
                };
                body.extend_from_slice(&(formats.len() as i16).to_be_bytes());
                for f in &formats {
                    body.extend_from_slice(&f.to_be_bytes());
                }
                body.extend_from_slice(&(params as i16).to_be_bytes());
                for i in 0..params {
                    let binary = match formats.len() {
                        0 => false,
                        1 => formats[0] == 1,
                        _ => formats.get(i) == Some(&1),
                    };
                    match self.param_value(binary) {
                        None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(v) => {
                            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                            body.extend_from_slice(&v);
                        }
                    }
                }
                let results: Vec<i16> = (0..self.rng.random_range(0..3))
                    .map(|_| self.rng.random_range(0..2))
                    .collect();
                body.extend_from_slice(&(results.len() as i16).to_be_bytes());
                for f in &results {
                    body.extend_from_slice(&f.to_be_bytes());
                }
                b'B'
            }
            11..=12 => {
                let portal = self.rng.random_bool(0.5);
                body.push(if portal { b'P' } else { b'S' });
                cstr(&mut body, &self.name(if portal { "p" } else { "s" }));
                b'D'
            }
            13..=15 => {
                cstr(&mut body, &self.name("p"));
                let max: i32 = [0, 0, 1, 2, 100, -1][self.rng.random_range(0..6)];
                body.extend_from_slice(&max.to_be_bytes());
                b'E'
            }
            16 => {
                let portal = self.rng.random_bool(0.5);
                body.push(if portal { b'P' } else { b'S' });
                cstr(&mut body, &self.name(if portal { "p" } else { "s" }));
                b'C'
            }
            17 => b'H',
            _ => b'S',
        };
        Msg { kind, body }
    }

    /// A sequence of messages ending in Sync (or a simple Query alone), and
    /// whether one of them has random bytes in its body.
    fn sequence(&mut self) -> (Vec<Msg>, bool) {
        if self.rng.random_range(0..10) == 0 {
            let (sql, _) = self.sql();
            let mut body = vec![];
            cstr(&mut body, &sql.replace('\0', ""));
            return (vec![Msg { kind: b'Q', body }], false);
        }
        let mut msgs: Vec<Msg> = (0..self.rng.random_range(1..8))
            .map(|_| self.message())
            .collect();
        let damaged = self.rng.random_range(0..20) == 0;
        if damaged {
            let i = self.rng.random_range(0..msgs.len());
            let body = &mut msgs[i].body;
            if body.is_empty() {
                body.push(self.rng.random());
            } else {
                for _ in 0..self.rng.random_range(1..4) {
                    let at = self.rng.random_range(0..body.len());
                    body[at] = self.rng.random();
                }
            }
        }
        msgs.push(Msg {
            kind: b'S',
            body: vec![],
        });
        (msgs, damaged)
    }
}

/// Byte ranges of the numeric and quoted literals of `sql`.
fn literal_spans(sql: &str) -> Vec<(usize, usize)> {
    let b = sql.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\'' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            if i < b.len() {
                out.push((start, i + 1));
            }
            i += 1;
        } else if b[i].is_ascii_digit()
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$'))
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

fn char_floor(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// How the server answers a statement it panicked on, the panic contained
/// (`sextant_sql::contain_panic`): "the query planner failed on this
/// statement (...)".
const CONTAINED: &str = " failed on this statement (";

/// A raw protocol connection, logged in.
struct Conn {
    stream: BufReader<TcpStream>,
    /// Errors that were a planner's panic, contained.
    planner_failures: u64,
}

/// What a sequence got back.
enum Answer {
    /// ReadyForQuery, with the SQLSTATEs of the errors before it.
    Ready(Vec<String>),
    /// The server closed the connection, after these errors.
    Closed(Vec<String>),
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut conn = Conn {
            stream: BufReader::new(stream),
            planner_failures: 0,
        };
        let mut body = vec![];
        body.extend_from_slice(&196608i32.to_be_bytes());
        for s in ["user", "sextant", "database", "sextant"] {
            cstr(&mut body, s);
        }
        body.push(0);
        let mut startup = (body.len() as i32 + 4).to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        conn.stream.get_mut().write_all(&startup).await.unwrap();
        match conn.until_ready().await.unwrap() {
            Answer::Ready(errors) if errors.is_empty() => {}
            _ => panic!("login failed"),
        }
        let mut q = vec![];
        Msg {
            kind: b'Q',
            body: b"SET statement_timeout = '5s'\0".to_vec(),
        }
        .encode(&mut q);
        conn.stream.get_mut().write_all(&q).await.unwrap();
        match conn.until_ready().await.unwrap() {
            Answer::Ready(errors) if errors.is_empty() => {}
            _ => panic!("SET statement_timeout failed"),
        }
        conn
    }

    /// Reads backend messages up to ReadyForQuery or the end of the
    /// connection, checking each ErrorResponse's fields.
    async fn until_ready(&mut self) -> Result<Answer, String> {
        let mut errors = vec![];
        loop {
            let kind = match self.stream.read_u8().await {
                Ok(k) => k,
                Err(_) => return Ok(Answer::Closed(errors)),
            };
            let len = self
                .stream
                .read_i32()
                .await
                .map_err(|e| format!("length: {e}"))?;
            if !(4..=1 << 30).contains(&len) {
                return Err(format!("message {:?} with length {len}", kind as char));
            }
            let mut body = vec![0u8; len as usize - 4];
            self.stream
                .read_exact(&mut body)
                .await
                .map_err(|e| format!("body of {:?}: {e}", kind as char))?;
            match kind {
                b'Z' => return Ok(Answer::Ready(errors)),
                b'E' => {
                    let fields = error_fields(&body)?;
                    let code = fields.get(&b'C').cloned().unwrap_or_default();
                    let message = fields.get(&b'M').cloned().unwrap_or_default();
                    if code.len() != 5 || !code.bytes().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(format!("ErrorResponse with SQLSTATE {code:?}: {message}"));
                    }
                    if message.trim().is_empty() {
                        return Err(format!("ErrorResponse {code} without a message"));
                    }
                    if message.contains(CONTAINED) {
                        self.planner_failures += 1;
                    }
                    errors.push(code);
                }
                b'1' | b'2' | b'3' | b'C' | b'D' | b'I' | b'n' | b'N' | b'S' | b's' | b't'
                | b'T' | b'K' | b'A' | b'G' | b'H' | b'W' | b'd' | b'c' | b'V' | b'R' => {}
                other => return Err(format!("unknown backend message {:?}", other as char)),
            }
        }
    }
}

fn error_fields(body: &[u8]) -> Result<BTreeMap<u8, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            return Ok(out);
        }
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or("an ErrorResponse field without its terminator")?;
        out.insert(kind, String::from_utf8_lossy(&tail[..end]).into_owned());
        rest = &tail[end + 1..];
    }
    Err("an ErrorResponse without its terminator".into())
}

fn describe(msgs: &[Msg]) -> String {
    msgs.iter()
        .map(|m| format!("{}: {:?}", m.kind as char, String::from_utf8_lossy(&m.body)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Default)]
struct Tally {
    executions: AtomicU64,
    messages: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
    planner_failures: AtomicU64,
}

impl Tally {
    /// Adds the panics a connection saw answered as errors, when it ends.
    fn count_contained(&self, conn: &Conn) {
        self.planner_failures
            .fetch_add(conn.planner_failures, Ordering::Relaxed);
    }
}

async fn client(
    addr: SocketAddr,
    seed: u64,
    corpus: Arc<Vec<String>>,
    deadline: Instant,
    limit: u64,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        corpus,
    };
    let mut conn = Conn::open(addr).await;
    // The text each statement name was last parsed from, for reports.
    let mut parsed: BTreeMap<String, String> = BTreeMap::new();
    while Instant::now() < deadline && tally.executions.load(Ordering::Relaxed) < limit {
        let (msgs, damaged) = g.sequence();
        let mut bytes = vec![];
        for m in &msgs {
            m.encode(&mut bytes);
        }
        for m in &msgs {
            if m.kind == b'P' {
                let mut fields = m.body.split(|&b| b == 0);
                let name = String::from_utf8_lossy(fields.next().unwrap_or_default());
                let sql = String::from_utf8_lossy(fields.next().unwrap_or_default());
                parsed.insert(name.into_owned(), sql.into_owned());
            }
        }
        let fail = |why: String| {
            format!(
                "seed {seed}: {why}\nafter this sequence (damaged: {damaged}):\n{}\n\
                 statements parsed on this connection: {parsed:#?}",
                describe(&msgs)
            )
        };
        if let Err(e) = conn.stream.get_mut().write_all(&bytes).await {
            if damaged {
                tally.count_contained(&conn);
                conn = Conn::open(addr).await;
                parsed.clear();
                continue;
            }
            return Err(fail(format!("write: {e}")));
        }
        // Each Sync (and a simple Query) is answered by a ReadyForQuery.
        let mut answer = Answer::Ready(vec![]);
        for _ in msgs.iter().filter(|m| m.kind == b'S' || m.kind == b'Q') {
            let next = tokio::time::timeout(Duration::from_secs(60), conn.until_ready())
                .await
                .map_err(|_| fail("no ReadyForQuery within 60 s".into()))?
                .map_err(fail)?;
            answer = match (answer, next) {
                (Answer::Ready(mut a), Answer::Ready(b)) => {
                    a.extend(b);
                    Answer::Ready(a)
                }
                (Answer::Ready(mut a), Answer::Closed(b)) => {
                    a.extend(b);
                    Answer::Closed(a)
                }
                (closed, _) => closed,
            };
            if matches!(answer, Answer::Closed(_)) {
                break;
            }
        }
        tally.executions.fetch_add(1, Ordering::Relaxed);
        tally
            .messages
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        match answer {
            Answer::Ready(errors) => {
                tally
                    .errors
                    .fetch_add(errors.len() as u64, Ordering::Relaxed);
            }
            Answer::Closed(errors) => {
                if !damaged {
                    return Err(fail(format!("connection closed (errors {errors:?})")));
                }
                if errors.is_empty() {
                    return Err(fail("connection closed without an ErrorResponse".into()));
                }
                tally.closed.fetch_add(1, Ordering::Relaxed);
                tally.count_contained(&conn);
                conn = Conn::open(addr).await;
                parsed.clear();
            }
        }
    }
    tally.count_contained(&conn);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_query_messages_after_login() {
    let seconds: u64 = env_or("PGFUZZ_SECONDS", 20);
    let round_seconds: u64 = env_or("PGFUZZ_ROUND_SECONDS", seconds).max(1);
    let limit: u64 = env_or("PGFUZZ_EXECUTIONS", u64::MAX);
    let connections: u64 = env_or("PGFUZZ_CONNECTIONS", 2);
    let seed: u64 = env_or("PGFUZZ_SEED", rand::rng().random());
    // With the limits the server runs under, a server that grows past this
    // is stopped before it takes the machine, and fails the run.
    let rss_limit_mb: u64 = env_or("PGFUZZ_RSS_LIMIT_MB", 3072);
    let corpus = Arc::new(corpus());
    assert!(
        corpus.len() > 500,
        "{} statements in the corpus",
        corpus.len()
    );
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut rounds = 0u64;
    while Instant::now() < end && tally.executions.load(Ordering::Relaxed) < limit {
        let round_seed = seed.wrapping_add(rounds.wrapping_mul(1 << 32));
        let deadline = end.min(Instant::now() + Duration::from_secs(round_seconds));
        let fuzz = Round {
            seed: round_seed,
            corpus: corpus.clone(),
            connections,
            deadline,
            limit,
            rss_limit_mb,
        };
        fuzz.run(&tally).await;
        rounds += 1;
        if round_seconds < seconds {
            // A long run shows its progress.
            println!(
                "pgfuzz: {rounds} servers, {} sequences, {:.0} s",
                tally.executions.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let executions = tally.executions.load(Ordering::Relaxed);
    println!(
        "pgwire extended-query fuzzing (seed {seed}): {executions} sequences, {} messages, \
         {} errors answered ({} of them a panic contained), {} connections closed after damaged bytes, \
         in {:.0} s, {rounds} servers ({} statements in the corpus)",
        tally.messages.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        tally.planner_failures.load(Ordering::Relaxed),
        tally.closed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        corpus.len(),
    );
    assert!(executions > 0);
}

/// One server, fresh, fuzzed until `deadline` by `connections` clients
/// (`PGFUZZ_ROUND_SECONDS` makes long runs a series of these, so that
/// tables the fuzzed statements grow, `INSERT INTO cpu SELECT * FROM cpu`
/// among them, do not slow the run down round after round).
struct Round {
    seed: u64,
    corpus: Arc<Vec<String>>,
    connections: u64,
    deadline: Instant,
    limit: u64,
    rss_limit_mb: u64,
}

impl Round {
    async fn run(self, tally: &Arc<Tally>) {
        let Round {
            seed,
            corpus,
            connections,
            deadline,
            limit,
            rss_limit_mb,
        } = self;
        let server = Server::start(&["--query-memory-limit", "512MB", "--buffer-limit", "256MB"]);
        let control = server.connect().await;
        // The corpus's tables, with its rows where its statements give them.
        for sql in corpus.iter() {
            let upper = sql.trim_start().to_ascii_uppercase();
            if upper.starts_with("CREATE") || upper.starts_with("INSERT") {
                let _ = control.batch_execute(sql).await;
            }
        }
        control
            .batch_execute(
                "CREATE TABLE fuzz_control (time TIMESTAMP NOT NULL, n BIGINT); \
                 INSERT INTO fuzz_control VALUES (now(), 1), (now(), 2), (now(), 3)",
            )
            .await
            .unwrap();
        let contained_before = tally.planner_failures.load(Ordering::Relaxed);
        // Queries are bounded by --query-memory-limit: a server that grows
        // past the limit by far is stopped (before it takes the machine)
        // and fails the run.
        let pid = server.pid().unwrap();
        let over = Arc::new(AtomicU64::new(0));
        let control = Arc::new(control);
        let running = Arc::new(std::sync::Mutex::new(String::new()));
        let watchdog = {
            let over = over.clone();
            let control = control.clone();
            let running = running.clone();
            tokio::spawn(async move {
                loop {
                    let status =
                        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    let rss_kb: u64 = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(0);
                    if rss_kb > rss_limit_mb * 1024 {
                        over.store(rss_kb / 1024, Ordering::SeqCst);
                        // What was running, to name the statement that grew.
                        let list = control.simple_query(
                            "SELECT protocol, duration_ms, query FROM system.queries \
                             WHERE state = 'running' ORDER BY duration_ms DESC",
                        );
                        if let Ok(Ok(rows)) =
                            tokio::time::timeout(Duration::from_secs(5), list).await
                        {
                            *running.lock().unwrap() =
                                format!("{:#?}", sextant_tests::message_rows(rows));
                        }
                        let _ = std::process::Command::new("kill")
                            .args(["-9", &pid.to_string()])
                            .status();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let clients: Vec<_> = (0..connections)
            .map(|i| {
                tokio::spawn(client(
                    server.pg_addr(),
                    seed.wrapping_add(i),
                    corpus.clone(),
                    deadline,
                    limit,
                    tally.clone(),
                ))
            })
            .collect();
        let mut failures = vec![];
        for c in clients {
            if let Err(e) = c.await.unwrap() {
                failures.push(e);
            }
        }
        watchdog.abort();
        let over = over.load(Ordering::SeqCst);
        assert!(
            over == 0,
            "the server's memory reached {over} MiB (--query-memory-limit 512MB, --buffer-limit 256MB; stopped at {rss_limit_mb} MiB) \
             while these statements ran: {}\nthe clients' last sequences:\n{}",
            running.lock().unwrap(),
            failures.join("\n\n")
        );
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
        // Every panic the server logged is one the planner had on a
        // statement, answered as an error.
        let panics = server.log().matches("panicked at").count() as u64;
        let contained = tally.planner_failures.load(Ordering::Relaxed) - contained_before;
        assert!(
            panics <= contained,
            "seed {seed}: the server logged {panics} panics, {contained} of them answered as errors:\n{}",
            server.log_tail(80)
        );
        let rows = sextant_tests::text_rows(&control, "SELECT sum(n) FROM fuzz_control").await;
        assert_eq!(rows, vec![vec!["6".to_string()]]);
    }
}
