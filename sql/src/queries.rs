//! The statements running now and the latest ones that finished
//! (`system.queries`), and how a running one is cancelled.
//!
//! A front end calls [`Queries::start`] for each statement and keeps the
//! [`QueryGuard`] until the statement's last row has been sent; the guard's
//! [`CancellationToken`] is what the front end selects on while it plans,
//! runs and streams. `KILL QUERY id`, `pg_cancel_backend(pid)` and the
//! pgwire cancel request all fire tokens ([`Queries::cancel`],
//! [`Queries::cancel_pid`]); the front end then drops the DataFusion stream,
//! which frees the query's memory. A statement timeout (pgwire's `SET
//! statement_timeout`) fires the same token when the time is up
//! ([`QueryGuard::time_out_after`]), so it covers planning, execution and
//! every row sent. Dropping the guard records the outcome,
//! the statement's metrics (`sextant_queries_total`,
//! `sextant_query_seconds`), and moves it to the recent list.

use sextant_sqlstate::SqlState;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How many finished statements `system.queries` keeps.
const RECENT: usize = 1000;

/// A statement as `system.queries` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryInfo {
    pub id: u64,
    /// The pgwire backend pid of the connection, if it came over pgwire.
    pub pid: Option<i32>,
    pub user: String,
    pub protocol: &'static str,
    pub text: String,
    pub started_ns: i64,
    pub duration: Duration,
    pub rows: u64,
    /// Bytes of the Parquet files its scans read.
    pub bytes_scanned: u64,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: &'static str,
    pub error: Option<String>,
}

struct Running {
    info: Mutex<QueryInfo>,
    span: tracing::Span,
    started: Instant,
    rows: AtomicU64,
    bytes: Arc<AtomicU64>,
    cancel: CancellationToken,
    /// Set when the statement timeout, not a user, cancelled it.
    timed_out: Arc<AtomicBool>,
    /// Fired when the guard is dropped: the statement's timer stops.
    finished: CancellationToken,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    running: BTreeMap<u64, Arc<Running>>,
    recent: VecDeque<QueryInfo>,
}

/// The registry of statements; one per server, shared by every front end.
#[derive(Clone, Default)]
pub struct Queries {
    inner: Arc<Mutex<Inner>>,
    /// The time statements start at, as `system.queries` shows it.
    clock: sextant_clock::Clock,
}

impl std::fmt::Debug for Queries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queries")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queries {
    /// An empty registry whose statements start at `clock`'s time.
    pub fn new(clock: sextant_clock::Clock) -> Self {
        Self {
            inner: Arc::default(),
            clock,
        }
    }

    /// Registers a statement that starts now.
    pub fn start(
        &self,
        protocol: &'static str,
        pid: Option<i32>,
        user: &str,
        text: &str,
    ) -> QueryGuard {
        let text = &*crate::access::redact(text);
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        let id = inner.next_id;
        let shown: String = text.chars().take(1000).collect();
        let span = tracing::info_span!(
            "query",
            query_id = id,
            protocol,
            user,
            pid = pid.map(i64::from),
            sql = %shown,
            rows = tracing::field::Empty,
            bytes_scanned = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
            state = tracing::field::Empty,
            sqlstate = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let running = Arc::new(Running {
            span,
            info: Mutex::new(QueryInfo {
                id,
                pid,
                user: user.to_string(),
                protocol,
                text: text.to_string(),
                started_ns: self.clock.now_ns(),
                duration: Duration::ZERO,
                rows: 0,
                bytes_scanned: 0,
                state: "running",
                error: None,
            }),
            started: Instant::now(),
            timed_out: Arc::new(AtomicBool::new(false)),
            finished: CancellationToken::new(),
            rows: AtomicU64::new(0),
            bytes: Arc::new(AtomicU64::new(0)),
            cancel: CancellationToken::new(),
        });
        inner.running.insert(id, running.clone());
        QueryGuard {
            running,
            queries: self.clone(),
        }
    }

    /// Cancels statement `id`; false if it is not running.
    pub fn cancel(&self, id: u64) -> bool {
        match lock(&self.inner).running.get(&id) {
            Some(r) => {
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancels every statement of pgwire backend `pid`; returns how many.
    pub fn cancel_pid(&self, pid: i32) -> usize {
        let inner = lock(&self.inner);
        let mut n = 0;
        for r in inner.running.values() {
            if lock(&r.info).pid == Some(pid) {
                r.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Running statements (oldest first), then finished ones (newest first).
    pub fn list(&self) -> Vec<QueryInfo> {
        let inner = lock(&self.inner);
        let mut out: Vec<QueryInfo> = inner
            .running
            .values()
            .map(|r| {
                let mut info = lock(&r.info).clone();
                info.duration = r.started.elapsed();
                info.rows = r.rows.load(Ordering::Relaxed);
                info.bytes_scanned = r.bytes.load(Ordering::Relaxed);
                info
            })
            .collect();
        out.extend(inner.recent.iter().rev().cloned());
        out
    }
}

/// A running statement; dropping it records how it ended.
pub struct QueryGuard {
    running: Arc<Running>,
    queries: Queries,
}

impl QueryGuard {
    pub fn id(&self) -> u64 {
        lock(&self.running.info).id
    }

    /// Fired when the statement is cancelled.
    pub fn token(&self) -> CancellationToken {
        self.running.cancel.clone()
    }

    /// The counter the statement's scans add their bytes to.
    pub fn bytes_counter(&self) -> Arc<AtomicU64> {
        self.running.bytes.clone()
    }

    /// The statement's span (`query`), for the front end to run it in.
    pub fn span(&self) -> tracing::Span {
        self.running.span.clone()
    }

    /// Runs `run` as the statement's first part (parsing, planning, and all
    /// of a statement without rows): under a `plan` span inside the
    /// statement's, with its scans' bytes counted. `None` if the statement
    /// was cancelled first (`run` is dropped then).
    pub async fn plan<F: std::future::Future>(&self, run: F) -> Option<F::Output> {
        let plan = tracing::info_span!(parent: &self.running.span, "plan");
        // On the heap: planning recurses deeply, and this future would
        // otherwise sit on the worker's stack.
        let counted = Box::pin(tracing::Instrument::instrument(
            sextant_storage::counting_scans(
                self.bytes_counter(),
                tracing::Instrument::instrument(run, plan),
            ),
            self.span(),
        ));
        let token = self.token();
        tokio::select! {
            r = counted => Some(r),
            _ = token.cancelled() => None,
        }
    }

    /// Cancels the statement when `limit` has passed, unless it is over by
    /// then: PostgreSQL's `statement_timeout`, over the whole statement
    /// (planning, execution, and sending every row).
    pub fn time_out_after(&self, limit: Duration) {
        let token = self.token();
        let finished = self.running.finished.clone();
        let timed_out = self.running.timed_out.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(limit) => {
                    timed_out.store(true, Ordering::Relaxed);
                    token.cancel();
                }
                _ = finished.cancelled() => {}
                _ = token.cancelled() => {}
            }
        });
    }

    /// What a cancelled statement's 57014 says: the user cancelled it, or
    /// its statement timeout did, in PostgreSQL's words.
    pub fn cancel_message(&self) -> &'static str {
        if self.running.timed_out.load(Ordering::Relaxed) {
            TIMED_OUT
        } else {
            CANCELED
        }
    }

    pub fn add_rows(&self, n: u64) {
        self.running.rows.fetch_add(n, Ordering::Relaxed);
    }

    /// The statement failed with SQLSTATE `code` and `error`.
    pub fn fail_with(&self, code: &str, error: &str) {
        self.running.span.record("sqlstate", code);
        self.fail(error);
    }

    /// The statement failed with `error` (or was cancelled, if its token
    /// fired).
    pub fn fail(&self, error: &str) {
        self.running.span.record("error", error);
        let mut info = lock(&self.running.info);
        info.state = if self.running.cancel.is_cancelled() {
            "cancelled"
        } else {
            "failed"
        };
        info.error = Some(error.to_string());
    }
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        self.running.finished.cancel();
        let mut info = lock(&self.running.info).clone();
        info.duration = self.running.started.elapsed();
        info.rows = self.running.rows.load(Ordering::Relaxed);
        info.bytes_scanned = self.running.bytes.load(Ordering::Relaxed);
        if info.state == "running" {
            // Dropped unfinished (the client went away) counts as cancelled.
            info.state = if self.running.cancel.is_cancelled() {
                "cancelled"
            } else {
                "done"
            };
        }
        let span = &self.running.span;
        span.record("rows", info.rows);
        span.record("bytes_scanned", info.bytes_scanned);
        span.record("duration_ms", info.duration.as_secs_f64() * 1000.0);
        span.record("state", info.state);
        match &info.error {
            Some(e) if info.state == "failed" => {
                tracing::info!(parent: span, error = %e, "statement failed")
            }
            _ => tracing::debug!(parent: span, "statement finished"),
        }
        let m = sextant_metrics::metrics();
        let outcome = match info.state {
            "done" => "ok",
            "failed" => "error",
            _ => "cancelled",
        };
        m.queries.with_label_values(&[info.protocol, outcome]).inc();
        m.query_seconds
            .with_label_values(&[info.protocol])
            .observe(info.duration.as_secs_f64());
        let mut inner = lock(&self.queries.inner);
        inner.running.remove(&info.id);
        inner.recent.push_back(info);
        while inner.recent.len() > RECENT {
            inner.recent.pop_front();
        }
    }
}

/// What a front end tells [`guarded`] about its stream's items.
pub trait RowStream {
    type Item;
    type Error;
    /// Rows in one item (1 for a pgwire row, a batch's row count).
    fn rows(item: &Self::Item) -> u64;
    /// Records a failed item on the guard (and may complete the error, e.g.
    /// with its SQLSTATE, before it goes to the client).
    fn fail(guard: &QueryGuard, error: &mut Self::Error);
    /// The error a cancelled statement ends with (SQLSTATE 57014), saying
    /// `message` ([`QueryGuard::cancel_message`]).
    fn cancelled(message: &str) -> Self::Error;
}

/// The result stream of a statement under its guard: rows counted, fetched
/// under an `execute` span (a child of the statement's), ended with
/// [`RowStream::cancelled`] as soon as the statement is cancelled (the
/// inner stream, and the memory it holds, is dropped then); the guard goes
/// when the stream does.
pub fn guarded<F, S>(
    stream: S,
    guard: QueryGuard,
) -> impl futures::Stream<Item = Result<F::Item, F::Error>> + Send
where
    F: RowStream,
    S: futures::Stream<Item = Result<F::Item, F::Error>> + Send + Unpin,
    F::Item: Send,
    F::Error: Send,
{
    use futures::StreamExt;
    let token = guard.token();
    let execute = tracing::info_span!(parent: &guard.span(), "execute");
    futures::stream::unfold(
        (Some(stream), guard, token, execute),
        |(stream, guard, token, execute)| async move {
            let mut stream = stream?;
            let next = tracing::Instrument::instrument(stream.next(), execute.clone());
            tokio::select! {
                biased;
                _ = token.cancelled() => {
                    drop(stream);
                    let message = guard.cancel_message();
                    guard.fail_with(SqlState::QUERY_CANCELED.code(), message);
                    Some((Err(F::cancelled(message)), (None, guard, token, execute)))
                }
                next = next => match next {
                    Some(Ok(item)) => {
                        guard.add_rows(F::rows(&item));
                        Some((Ok(item), (Some(stream), guard, token, execute)))
                    }
                    Some(Err(mut e)) => {
                        F::fail(&guard, &mut e);
                        Some((Err(e), (None, guard, token, execute)))
                    }
                    None => None,
                },
            }
        },
    )
}

/// The message of SQLSTATE 57014, as PostgreSQL words it.
pub const CANCELED: &str = "canceling statement due to user request";

/// The message of SQLSTATE 57014 when the statement timeout fired.
pub const TIMED_OUT: &str = "canceling statement due to statement timeout";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_runs_is_cancelled_and_is_remembered() {
        let q = Queries::default();
        let a = q.start("pgwire", Some(7), "u", "SELECT 1");
        let b = q.start("flight", None, "u", "SELECT 2");
        a.add_rows(3);
        assert_eq!(
            q.list().iter().map(|i| i.state).collect::<Vec<_>>(),
            ["running", "running"]
        );
        assert_eq!(q.cancel_pid(7), 1);
        assert!(a.token().is_cancelled());
        assert!(!b.token().is_cancelled());
        a.fail("canceling statement due to user request");
        drop(a);
        assert!(q.cancel(b.id()));
        drop(b);
        let list = q.list();
        assert_eq!(list[0].text, "SELECT 2");
        assert_eq!(list[0].state, "cancelled");
        assert_eq!(list[1].rows, 3);
        assert_eq!(list[1].state, "cancelled");
        assert!(!q.cancel(1), "no longer running");
        let c = q.start("pgwire", None, "u", "SELECT 3");
        c.fail("boom");
        drop(c);
        assert_eq!(q.list()[0].state, "failed");
    }
}

/// `pg_cancel_backend(pid)`: cancels the statements running on pgwire
/// backend `pid` (as `pg_backend_pid()` and `system.queries.pid` show it);
/// true if there were any.
pub fn register_cancel_backend(ctx: &datafusion::prelude::SessionContext, queries: &Queries) {
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(
        CancelBackend {
            signature: datafusion::logical_expr::Signature::uniform(
                1,
                vec![arrow::datatypes::DataType::Int64],
                datafusion::logical_expr::Volatility::Volatile,
            ),
            queries: queries.clone(),
        },
    ));
}

#[derive(Debug)]
struct CancelBackend {
    signature: datafusion::logical_expr::Signature,
    queries: Queries,
}

impl PartialEq for CancelBackend {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CancelBackend {}

impl std::hash::Hash for CancelBackend {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "pg_cancel_backend".hash(state);
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for CancelBackend {
    fn name(&self) -> &str {
        "pg_cancel_backend"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(
        &self,
        _args: &[arrow::datatypes::DataType],
    ) -> datafusion::error::Result<arrow::datatypes::DataType> {
        Ok(arrow::datatypes::DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use arrow::array::{Array, AsArray, BooleanArray};
        let pids = args.args[0].to_array(args.number_rows)?;
        let pids = arrow::compute::cast(&pids, &arrow::datatypes::DataType::Int64)?;
        let pids = pids.as_primitive::<arrow::datatypes::Int64Type>();
        let out: BooleanArray = (0..pids.len())
            .map(|i| {
                pids.is_valid(i)
                    .then(|| self.queries.cancel_pid(pids.value(i) as i32) > 0)
            })
            .collect();
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
            out,
        )))
    }
}

/// Parses `KILL [QUERY] id`: the `query_id` of `system.queries`.
pub(crate) fn parse_kill(sql: &str) -> Result<u64, crate::SqlError> {
    let usage = "usage: KILL QUERY <query_id> (the query_id of system.queries)";
    let mut words = sql.split_whitespace().skip(1);
    let mut next = words.next();
    if next.is_some_and(|w| w.eq_ignore_ascii_case("query")) {
        next = words.next();
    }
    let id: u64 = match (next.map(|w| w.trim_end_matches(';').parse()), words.next()) {
        (Some(Ok(id)), None) => id,
        _ => return Err(crate::SqlError::syntax(format!("syntax error: {usage}"))),
    };
    Ok(id)
}

/// `KILL [QUERY] id`: cancels statement `id` of `system.queries`.
/// `own`: the user whose statements the caller may cancel (`None`: any).
pub(crate) fn kill(
    id: u64,
    queries: &Queries,
    own: Option<&str>,
) -> Result<crate::ast::Done, crate::SqlError> {
    if let Some(user) = own
        && queries.list().iter().any(|q| q.id == id && q.user != user)
    {
        return Err(crate::SqlError::new(
            SqlState::INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied to cancel query {id}: it is another user's, and only an admin may cancel those"
            ),
        ));
    }
    if !queries.cancel(id) {
        return Err(crate::SqlError::new(
            SqlState::UNDEFINED_OBJECT,
            format!("query {id} is not running (see system.queries)"),
        ));
    }
    Ok(crate::ast::Done {
        tag: "KILL",
        rows: None,
        batch: None,
    })
}
