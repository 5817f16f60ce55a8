//! Sends pre-encoded request bodies with N concurrent clients and measures
//! each acknowledgement. Bodies are built before the clock starts, so the
//! client's 2 cores go to sending, not generating.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandStatementIngest, TableDefinitionOptions, TableExistsOption, TableNotExistOption,
};
use bytes::{Buf, BufMut, Bytes};
use futures::SinkExt;
use tokio_postgres::NoTls;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::servers::proc_stats;

/// How one body is delivered.
#[derive(Clone)]
pub(crate) enum Target {
    /// POST to a URL with a content type.
    Http {
        url: String,
        content_type: &'static str,
    },
    /// `COPY ... FROM STDIN` (text) on a pgwire connection.
    Copy { config: String, statement: String },
    /// A SQL statement (the body is its text) on a pgwire connection.
    Sql { config: String },
    /// A unary gRPC call with the body as its (already encoded) message,
    /// e.g. `/opentelemetry.proto.collector.logs.v1.LogsService/Export`.
    Grpc {
        endpoint: String,
        method: &'static str,
    },
    /// Flight SQL bulk ingest (`CommandStatementIngest`) of the body's batch.
    FlightIngest { endpoint: String, table: String },
}

pub(crate) struct Body {
    pub(crate) bytes: Bytes,
    /// The same rows as Arrow, for Flight.
    pub(crate) batch: Option<arrow::array::RecordBatch>,
    pub(crate) rows: u64,
    pub(crate) ndjson_bytes: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) rows: u64,
    pub(crate) ndjson_bytes: u64,
    pub(crate) seconds: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Server CPU over the run, in cores (1.0 = one core busy).
    pub(crate) server_cores: f64,
    pub(crate) peak_rss: u64,
    pub(crate) errors: u64,
}

impl Outcome {
    pub(crate) fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.seconds
    }
    pub(crate) fn mb_per_s(&self) -> f64 {
        self.ndjson_bytes as f64 / self.seconds / 1e6
    }
}

enum Conn {
    Http(reqwest::Client),
    Pg(tokio_postgres::Client),
    Grpc(tonic::client::Grpc<Channel>),
    Flight(FlightSqlServiceClient<Channel>),
}

/// A codec that sends and receives message bytes as they are: the bodies
/// are encoded before the clock starts.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn channel(endpoint: &str) -> Result<Channel, String> {
    Channel::from_shared(format!("http://{endpoint}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect {endpoint}: {e}"))
}

async fn connect(target: &Target) -> Result<Conn, String> {
    match target {
        Target::Http { .. } => Ok(Conn::Http(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .map_err(|e| e.to_string())?,
        )),
        Target::Copy { config, .. } | Target::Sql { config } => {
            let (client, conn) = tokio_postgres::connect(config, NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Conn::Pg(client))
        }
        Target::Grpc { endpoint, .. } => Ok(Conn::Grpc(
            tonic::client::Grpc::new(channel(endpoint).await?).max_encoding_message_size(64 << 20),
        )),
        Target::FlightIngest { endpoint, .. } => Ok(Conn::Flight(FlightSqlServiceClient::new(
            channel(endpoint).await?,
        ))),
    }
}

async fn send(conn: &mut Conn, target: &Target, body: &Body) -> Result<(), String> {
    match (conn, target) {
        (Conn::Http(c), Target::Http { url, content_type }) => {
            let r = c
                .post(url)
                .header("content-type", *content_type)
                .body(body.bytes.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().is_success() {
                Ok(())
            } else {
                let status = r.status();
                Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
            }
        }
        (Conn::Pg(c), Target::Copy { statement, .. }) => {
            let sink = c
                .copy_in::<_, Bytes>(statement.as_str())
                .await
                .map_err(|e| e.to_string())?;
            futures::pin_mut!(sink);
            sink.send(body.bytes.clone())
                .await
                .map_err(|e| e.to_string())?;
            sink.finish().await.map(|_| ()).map_err(|e| e.to_string())
        }
        (Conn::Pg(c), Target::Sql { .. }) => {
            let sql = std::str::from_utf8(&body.bytes).map_err(|e| e.to_string())?;
            c.batch_execute(sql).await.map_err(|e| e.to_string())
        }
        (Conn::Grpc(g), Target::Grpc { method, .. }) => {
            g.ready().await.map_err(|e| e.to_string())?;
            g.unary(
                tonic::Request::new(body.bytes.clone()),
                PathAndQuery::from_static(method),
                RawCodec,
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("{}: {}", e.code(), e.message()))
        }
        (Conn::Flight(f), Target::FlightIngest { table, .. }) => {
            let batch = body.batch.clone().ok_or("no Arrow batch for Flight")?;
            let cmd = CommandStatementIngest {
                table_definition_options: Some(TableDefinitionOptions {
                    if_not_exist: TableNotExistOption::Create as i32,
                    if_exists: TableExistsOption::Append as i32,
                }),
                table: table.clone(),
                ..Default::default()
            };
            f.execute_ingest(cmd, futures::stream::iter([Ok(batch)]))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        _ => unreachable!("connection matches its target"),
    }
}

/// Sends every body once with `concurrency` clients; prints a progress line
/// each second; `pid` is the server whose CPU and memory are sampled.
pub(crate) async fn run(
    label: &str,
    target: Target,
    bodies: Vec<Body>,
    concurrency: usize,
    pid: u32,
    profile: Option<&std::path::Path>,
) -> Result<Outcome, String> {
    let perf = crate::servers::Profile::start(profile, &format!("ingest {label}"), pid);
    let bodies = Arc::new(bodies);
    let total_rows: u64 = bodies.iter().map(|b| b.rows).sum();
    let next = Arc::new(AtomicUsize::new(0));
    let done_rows = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let before = proc_stats(pid);
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let (bodies, next, done_rows, errors, first_error, target) = (
            bodies.clone(),
            next.clone(),
            done_rows.clone(),
            errors.clone(),
            first_error.clone(),
            target.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&target).await?;
            let mut latencies = vec![];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t = Instant::now();
                match send(&mut conn, &target, body).await {
                    Ok(()) => {
                        latencies.push(t.elapsed());
                        done_rows.fetch_add(body.rows as usize, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            }
            Ok::<_, String>(latencies)
        }));
    }
    // Progress and sampling while the clients run.
    let mut peak_rss = before.rss;
    let mut last_print = Instant::now();
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let st = proc_stats(pid);
        peak_rss = peak_rss.max(st.rss);
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let rows = done_rows.load(Ordering::Relaxed) as u64;
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\r  {label}: {:>5.1}%  {rows} rows  {:.0} rows/s  server {:.2} cores, {} MiB   ",
                rows as f64 * 100.0 / total_rows.max(1) as f64,
                rows as f64 / secs,
                (st.cpu_s - before.cpu_s) / secs,
                st.rss >> 20
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = proc_stats(pid);
    perf.stop();
    eprintln!();
    let mut latencies = vec![];
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    if let Some(e) = first_error.lock().unwrap().take() {
        eprintln!(
            "  {label}: {} requests failed; the first: {e}",
            errors.load(Ordering::Relaxed)
        );
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let ok_rows = done_rows.load(Ordering::Relaxed) as u64;
    let ok_share = ok_rows as f64 / total_rows.max(1) as f64;
    Ok(Outcome {
        rows: ok_rows,
        ndjson_bytes: (bodies.iter().map(|b| b.ndjson_bytes).sum::<u64>() as f64 * ok_share) as u64,
        seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        server_cores: (after.cpu_s - before.cpu_s) / seconds,
        peak_rss: peak_rss.max(after.rss),
        errors: errors.load(Ordering::Relaxed) as u64,
    })
}
