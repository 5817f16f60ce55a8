//! `sextant-load`: Sextant's load tool. One run, on one machine:
//!
//! 1. generates seeded OpenTelemetry-like logs and spans and TSBS `cpu-only`
//!    metrics, and encodes them for each protocol before any clock starts;
//! 2. ingests them into a fresh release `sextant` (OTLP/HTTP protobuf, line
//!    protocol, pgwire COPY and INSERT) and the same rows into PostgreSQL 15
//!    by COPY (tables indexed on time), reporting rows/s, MB/s of the
//!    equivalent NDJSON, p50/p99 acknowledgement latency, and the server's
//!    CPU and peak RSS;
//! 3. runs the query suite cold and hot on Sextant, on DuckDB over Sextant's
//!    own Parquet files and with the data loaded natively (through
//!    `benches/duckdb_peer.py`), and on PostgreSQL;
//! 4. prints the summary tables (Markdown) with ratios to the peers, and
//!    writes them to `--report`.
//!
//! `--scenario views` runs the materialized-view benchmark instead
//! ([`views`]): ingest with 0, 1 and 5 views, and a 30-day dashboard panel
//! on views and on the base table; `--scenario cluster` the query suite on
//! one node and on three ([`cluster`]); `--scenario keys` the cost of a
//! key ([`keys`]); `--scenario overload` ten times the sustainable ingest
//! rate, with refusals, memory and queries measured ([`overload`]);
//! `--scenario promql` PromQL queries on Sextant and on Prometheus 2.42
//! over the same remote-written samples ([`promql`]).

mod answer;
mod cluster;
mod encode;
mod generate;
mod ingest;
mod keys;
mod overhead;
mod overload;
mod promql;
mod queries;
mod servers;
mod views;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::generate::Window;
use crate::ingest::{Body, Outcome, Target};
use crate::servers::{Postgres, Sextant, dir_bytes};

/// Ingest and query benchmarks of Sextant, side by side with DuckDB and
/// PostgreSQL on the same generated data.
#[derive(Parser, Debug)]
#[command(name = "sextant-load", version)]
struct Args {
    /// The sextant binary (a release build). Default: next to this program.
    #[arg(long, env = "SEXTANT_BIN")]
    sextant_bin: Option<PathBuf>,
    /// Directory of PostgreSQL's initdb, pg_ctl and postgres.
    #[arg(
        long,
        env = "SEXTANT_LOAD_PG_BIN",
        default_value = "/usr/lib/postgresql/15/bin"
    )]
    postgres_bin: PathBuf,
    /// Leave PostgreSQL out.
    #[arg(long, env = "SEXTANT_LOAD_NO_POSTGRES")]
    no_postgres: bool,
    /// Python with the `duckdb` package, to run benches/duckdb_peer.py.
    #[arg(long, env = "SEXTANT_LOAD_PYTHON", default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Leave DuckDB out.
    #[arg(long, env = "SEXTANT_LOAD_NO_DUCKDB")]
    no_duckdb: bool,
    /// Log records to generate.
    #[arg(long, env = "SEXTANT_LOAD_LOGS", default_value_t = 1_000_000)]
    logs: u64,
    /// Spans to generate (traces of four).
    #[arg(long, env = "SEXTANT_LOAD_SPANS", default_value_t = 500_000)]
    spans: u64,
    /// TSBS hosts; each reports 10 fields every 10 seconds for a day.
    #[arg(long, env = "SEXTANT_LOAD_HOSTS", default_value_t = 100)]
    hosts: u32,
    /// Seed of every generator.
    #[arg(long, env = "SEXTANT_LOAD_SEED", default_value_t = 42)]
    seed: u64,
    /// Records per request (OTLP, line protocol, COPY).
    #[arg(long, env = "SEXTANT_LOAD_BATCH", default_value_t = 5_000)]
    batch: usize,
    /// Concurrent clients per ingest run.
    #[arg(long, env = "SEXTANT_LOAD_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    /// Hot runs of each query (the median is reported).
    #[arg(long, env = "SEXTANT_LOAD_RUNS", default_value_t = 5)]
    runs: usize,
    /// Where servers keep their data. Default: a new temporary directory,
    /// removed at the end.
    #[arg(long, env = "SEXTANT_LOAD_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Record a `perf` profile of the server during each Sextant ingest run
    /// and each query's hot runs, into this directory (`<run>.txt` holds
    /// the hottest symbols).
    #[arg(long, env = "SEXTANT_LOAD_PERF_DIR")]
    perf_dir: Option<PathBuf>,
    /// Write the summary (Markdown) here as well.
    #[arg(long, env = "SEXTANT_LOAD_REPORT")]
    report: Option<PathBuf>,
    /// What to run: the ingest and query suite against the peers, or the
    /// materialized-view benchmark.
    #[arg(
        long,
        env = "SEXTANT_LOAD_SCENARIO",
        value_enum,
        default_value = "suite"
    )]
    scenario: Scenario,
    /// Hosts of the 30-day data set of `--scenario views` (each reports
    /// every 10 seconds).
    #[arg(long, env = "SEXTANT_LOAD_VIEWS_DASHBOARD_HOSTS", default_value_t = 10)]
    views_dashboard_hosts: u32,
    /// The sextant binary `--scenario overhead` compares with (a release
    /// build without the instrumentation, e.g. of the commit before it).
    #[arg(long, env = "SEXTANT_LOAD_BASELINE_BIN")]
    baseline_bin: Option<PathBuf>,
    /// A flag for the Sextant servers of the suite and of `--scenario
    /// overload` (repeat it for more, e.g. `--sextant-arg=--buffer-limit=256MiB`).
    #[arg(long, env = "SEXTANT_LOAD_SEXTANT_ARG", allow_hyphen_values = true)]
    sextant_arg: Vec<String>,
    /// How long `--scenario overload` offers its load.
    #[arg(long, env = "SEXTANT_LOAD_OVERLOAD_SECONDS", default_value_t = 180)]
    overload_seconds: u64,
    /// The offered request rate of `--scenario overload`, in multiples of
    /// the sustainable rate it measures first.
    #[arg(long, env = "SEXTANT_LOAD_OVERLOAD_FACTOR", default_value_t = 10.0)]
    overload_factor: f64,
    /// Requests `--scenario overload` keeps in flight at most (its clients).
    #[arg(long, env = "SEXTANT_LOAD_OVERLOAD_CLIENTS", default_value_t = 256)]
    overload_clients: usize,
    /// Series of each metric of `--scenario promql` (the counter and the
    /// histogram buckets): 10 per host.
    #[arg(long, env = "SEXTANT_LOAD_PROMQL_SERIES", default_value_t = 1000)]
    promql_series: u32,
    /// Hours of samples (every 10 s) of `--scenario promql`, ending now; at
    /// least 2.
    #[arg(long, env = "SEXTANT_LOAD_PROMQL_HOURS", default_value_t = 24)]
    promql_hours: u32,
    /// The Prometheus `--scenario promql` compares with (2.42, Debian's
    /// package).
    #[arg(
        long,
        env = "SEXTANT_LOAD_PROMETHEUS_BIN",
        default_value = "/usr/bin/prometheus"
    )]
    prometheus_bin: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Ingest and queries, side by side with PostgreSQL and DuckDB.
    Suite,
    /// Materialized views: ingest cost and dashboard speed-up.
    Views,
    /// The cost of self-observability on ingest: --baseline-bin vs this
    /// build, with and without --self-telemetry.
    Overhead,
    /// The query suite on one node and on a three-node cluster (catalog in
    /// PostgreSQL, Parquet in moto's S3), and the cluster's overhead.
    Cluster,
    /// The cost of a key: the TSBS rows into a keyed and an append-only
    /// table, before and after compaction, DuckDB beside.
    Keys,
    /// Ten times the sustainable ingest rate from many clients: refusals,
    /// peak RSS, queries meanwhile, and every acknowledged row kept.
    Overload,
    /// PromQL range queries on Sextant and on Prometheus 2.42 over the same
    /// remote-written samples: times, answers compared, load time, peak RSS.
    Promql,
}

/// The data's day: 2026-11-22 (UTC).
const DAY: &str = "2026-11-22";
const DAY_START_NS: i64 = 1_795_305_600_000_000_000;
const DAY_NS: i64 = 86_400_000_000_000;

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("sextant-load: {e}");
        std::process::exit(1);
    }
}

struct Data {
    logs_otlp: Vec<Body>,
    logs_arrow: Vec<Body>,
    logs_copy: Vec<Body>,
    spans_otlp: Vec<Body>,
    spans_copy: Vec<Body>,
    cpu_line: Vec<Body>,
    cpu_copy: Vec<Body>,
    cpu_insert: Vec<Body>,
}

fn bodies<T>(
    n: u64,
    batch: usize,
    make: impl Fn(u64) -> T + Sync,
    encode: impl Fn(&[T]) -> Vec<u8> + Sync,
    ndjson: impl Fn(&T) -> String + Sync,
) -> Vec<Body>
where
    T: Send,
{
    let starts: Vec<u64> = (0..n).step_by(batch).collect();
    let chunks = std::sync::Mutex::new(vec![]);
    std::thread::scope(|s| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for t in 0..threads {
            let (starts, make, encode, ndjson, chunks) =
                (&starts, &make, &encode, &ndjson, &chunks);
            s.spawn(move || {
                for (k, start) in starts.iter().enumerate().skip(t).step_by(threads) {
                    let rows: Vec<T> = (*start..(*start + batch as u64).min(n)).map(make).collect();
                    let body = Body {
                        bytes: Bytes::from(encode(&rows)),
                        batch: None,
                        rows: rows.len() as u64,
                        ndjson_bytes: rows.iter().map(|r| ndjson(r).len() as u64).sum(),
                    };
                    chunks.lock().unwrap().push((k, body));
                }
            });
        }
    });
    let mut chunks = chunks.into_inner().unwrap();
    chunks.sort_by_key(|(k, _)| *k);
    chunks.into_iter().map(|(_, b)| b).collect()
}

fn generate_all(a: &Args) -> Data {
    let w = Window {
        start_ns: DAY_START_NS,
        span_ns: DAY_NS,
    };
    let (seed, logs, spans, hosts, batch) = (a.seed, a.logs, a.spans, a.hosts, a.batch);
    let cpu_rows = hosts as u64 * 8_640;
    let log = |i| generate::log(seed, &w, i, logs);
    let span = |i| generate::span(seed, &w, i, spans);
    let cpu = |i| generate::cpu(seed, DAY_START_NS, hosts, i);
    Data {
        logs_arrow: bodies(logs, batch, log, |_| vec![], encode::ndjson_log)
            .into_iter()
            .zip((0..logs).step_by(batch))
            .map(|(mut b, start)| {
                let rows: Vec<_> = (start..(start + batch as u64).min(logs)).map(log).collect();
                b.batch = Some(encode::arrow_logs(&rows));
                b
            })
            .collect(),
        logs_otlp: bodies(
            logs,
            batch,
            log,
            encode::otlp_logs_bytes,
            encode::ndjson_log,
        ),
        logs_copy: bodies(logs, batch, log, encode::copy_logs, encode::ndjson_log),
        spans_otlp: bodies(
            spans,
            batch,
            span,
            encode::otlp_spans_bytes,
            encode::ndjson_span,
        ),
        spans_copy: bodies(spans, batch, span, encode::copy_spans, encode::ndjson_span),
        cpu_line: bodies(
            cpu_rows,
            batch,
            cpu,
            encode::line_protocol,
            encode::ndjson_cpu,
        ),
        cpu_copy: bodies(cpu_rows, batch, cpu, encode::copy_cpu, encode::ndjson_cpu),
        cpu_insert: bodies(
            cpu_rows,
            1_000,
            cpu,
            |rows| encode::insert_cpu(rows).into_bytes(),
            encode::ndjson_cpu,
        ),
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
}

async fn pg(config: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(config, NoTls)
        .await
        .map_err(|e| format!("connect {config}: {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// Runs `sql`; returns (milliseconds to the last row, the answer).
async fn timed(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<(f64, answer::Answer), String> {
    let t = Instant::now();
    let msgs = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{e}: {sql}"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let rows = msgs.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i)).collect::<Vec<_>>()),
        _ => None,
    });
    Ok((ms, answer::Answer::new(rows)))
}

#[derive(Clone, Default)]
struct Timing {
    cold_ms: f64,
    hot_ms: f64,
    /// The rows of the cold run, compared across engines by value.
    answer: answer::Answer,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The suite on one pgwire server; with `profile` (a directory, the
/// server's pid and what to call the runs), each query's hot runs are
/// recorded by perf.
async fn suite_on(
    config: &str,
    queries: &[(&'static str, String)],
    runs: usize,
    profile: Option<(&Path, u32, &str)>,
) -> Result<Vec<Timing>, String> {
    let client = pg(config).await?;
    let mut out = vec![];
    for (name, sql) in queries {
        let (cold_ms, answer) = timed(&client, sql)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let perf = servers::Profile::start(
            profile.map(|p| p.0),
            &format!("{} {name}", profile.map_or("query", |p| p.2)),
            profile.map_or(0, |p| p.1),
        );
        let mut hot = vec![];
        for _ in 0..runs {
            hot.push(timed(&client, sql).await?.0);
        }
        perf.stop();
        out.push(Timing {
            cold_ms,
            hot_ms: median(hot),
            answer,
        });
    }
    Ok(out)
}

async fn run(a: Args) -> Result<(), String> {
    let sextant_bin = match &a.sextant_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("sextant"),
    };
    if !sextant_bin.exists() {
        return Err(format!(
            "{} not found: build it with cargo build --release -p sextant-server, or pass --sextant-bin",
            sextant_bin.display()
        ));
    }
    let _temp;
    let work = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            _temp = tempfile::Builder::new()
                .prefix("sextant-load-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            _temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let mut report = String::new();
    let machine = machine();
    eprintln!("sextant-load: {machine}");
    if a.scenario != Scenario::Suite {
        let _ = writeln!(report, "Machine: {machine}. Seed {}.\n", a.seed);
        if a.scenario == Scenario::Views {
            report.push_str(&views::run(&a, &sextant_bin, &work).await?);
        } else if a.scenario == Scenario::Cluster {
            report.push_str(&cluster::run(&a, &sextant_bin, &work).await?);
        } else if a.scenario == Scenario::Keys {
            report.push_str(&keys::run(&a, &sextant_bin, &work).await?);
        } else if a.scenario == Scenario::Overload {
            report.push_str(&overload::run(&a, &sextant_bin, &work).await?);
        } else if a.scenario == Scenario::Promql {
            report.push_str(&promql::run(&a, &sextant_bin, &work).await?);
        } else {
            let baseline = a
                .baseline_bin
                .clone()
                .ok_or("--scenario overhead needs --baseline-bin")?;
            report.push_str(&overhead::run(&a, &sextant_bin, &baseline, &work).await?);
        }
        println!("{report}");
        if let Some(path) = &a.report {
            std::fs::write(path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("report written to {}", path.display());
        }
        return Ok(());
    }
    let _ = writeln!(
        report,
        "Machine: {machine}. Seed {}, {} logs, {} spans, {} hosts × 8640 cpu rows, batches of {}, {} concurrent clients.\n",
        a.seed, a.logs, a.spans, a.hosts, a.batch, a.concurrency
    );

    let t = Instant::now();
    eprintln!("generating and encoding the data ...");
    let data = generate_all(&a);
    eprintln!("  done in {:.1} s", t.elapsed().as_secs_f64());
    let Data {
        logs_otlp,
        logs_arrow,
        logs_copy,
        spans_otlp,
        spans_copy,
        cpu_line,
        cpu_copy,
        cpu_insert,
    } = data;
    let raw = |b: &[Body]| b.iter().map(|x| x.ndjson_bytes).sum::<u64>();
    let (raw_logs, raw_spans, raw_cpu) = (raw(&logs_otlp), raw(&spans_otlp), raw(&cpu_line));

    // --- Ingest into Sextant -------------------------------------------------
    let mut ingest_rows: Vec<(String, Outcome)> = vec![];
    let main_dir = work.join("sextant");
    let mut sx = Sextant::start(&sextant_bin, &main_dir, &a.sextant_arg)?;
    let http = |path: &str, ct| Target::Http {
        url: format!("http://{}{path}", sx.http),
        content_type: ct,
    };
    eprintln!(
        "ingest into sextant (pid {}, {})",
        sx.pid(),
        main_dir.display()
    );
    let o = ingest::run(
        "logs, OTLP/HTTP protobuf",
        http("/v1/logs", "application/x-protobuf"),
        logs_otlp.iter().map(clone_body).collect(),
        a.concurrency,
        sx.pid(),
        a.perf_dir.as_deref(),
    )
    .await?;
    ingest_rows.push(("Sextant: logs, OTLP/HTTP protobuf".into(), o));
    let o = ingest::run(
        "spans, OTLP/HTTP protobuf",
        http("/v1/traces", "application/x-protobuf"),
        spans_otlp,
        a.concurrency,
        sx.pid(),
        a.perf_dir.as_deref(),
    )
    .await?;
    ingest_rows.push(("Sextant: spans, OTLP/HTTP protobuf".into(), o));
    let o = ingest::run(
        "cpu, line protocol",
        http("/api/v2/write?bucket=b&org=o&precision=ns", "text/plain"),
        cpu_line,
        a.concurrency,
        sx.pid(),
        a.perf_dir.as_deref(),
    )
    .await?;
    ingest_rows.push(("Sextant: cpu-only, line protocol".into(), o));

    // The other paths on a second server, so that the query data holds each
    // row once: logs over OTLP/gRPC (otel_logs there), Flight SQL bulk
    // ingest and pgwire COPY (tables of their own), cpu rows by INSERT.
    {
        let side = Sextant::start(&sextant_bin, &work.join("sextant-side"), &a.sextant_arg)?;
        let c = pg(&side.pg_config()).await?;
        c.batch_execute(
            "CREATE TABLE logs_copy (time TIMESTAMP NOT NULL, observed_time TIMESTAMP, service_name TEXT, \
             severity_number INT, severity_text TEXT, body TEXT, trace_id TEXT, span_id TEXT, flags BIGINT, \
             attributes TEXT, resource_attributes TEXT, scope_name TEXT, scope_version TEXT)",
        )
        .await
        .map_err(|e| e.to_string())?;
        c.batch_execute(&format!(
            "CREATE TABLE cpu_insert ({})",
            cpu_ddl("TIMESTAMP NOT NULL", "TEXT", "DOUBLE")
        ))
        .await
        .map_err(|e| e.to_string())?;
        eprintln!("ingest into a second sextant (pid {})", side.pid());
        let grpc = Target::Grpc {
            endpoint: side.grpc.clone(),
            method: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        };
        let o = ingest::run(
            "logs, OTLP/gRPC",
            grpc,
            logs_otlp.iter().map(clone_body).collect(),
            a.concurrency,
            side.pid(),
            a.perf_dir.as_deref(),
        )
        .await?;
        ingest_rows.push(("Sextant: logs, OTLP/gRPC".into(), o));
        let flight = Target::FlightIngest {
            endpoint: side.flight.clone(),
            table: "logs_flight".into(),
        };
        let o = ingest::run(
            "logs, Flight SQL DoPut",
            flight,
            logs_arrow,
            a.concurrency,
            side.pid(),
            a.perf_dir.as_deref(),
        )
        .await?;
        ingest_rows.push(("Sextant: logs, Flight SQL bulk ingest".into(), o));
        let copy = Target::Copy {
            config: side.pg_config(),
            statement: format!("COPY logs_copy ({}) FROM STDIN", encode::LOG_COPY_COLUMNS),
        };
        let o = ingest::run(
            "logs, pgwire COPY",
            copy,
            logs_copy.iter().map(clone_body).collect(),
            a.concurrency,
            side.pid(),
            a.perf_dir.as_deref(),
        )
        .await?;
        ingest_rows.push(("Sextant: logs, pgwire COPY".into(), o));
        let insert_sample: Vec<Body> = cpu_insert.into_iter().take(100).collect();
        let o = ingest::run(
            "cpu, pgwire INSERT (1000 rows each)",
            Target::Sql {
                config: side.pg_config(),
            },
            insert_sample,
            a.concurrency,
            side.pid(),
            a.perf_dir.as_deref(),
        )
        .await?;
        ingest_rows.push(("Sextant: cpu-only, pgwire INSERT".into(), o));
    }

    // The suite on the rows as ingested, before they are persisted on
    // purpose: what the write buffer holds (and what persistence wrote
    // when the buffer filled).
    let suite = queries::suite(a.seed, DAY, a.logs.min(a.spans) / 8);
    let sx_q: Vec<_> = suite.iter().map(|q| (q.name, q.sextant.clone())).collect();
    eprintln!("queries: Sextant before FLUSH (the write buffer)");
    let buffer_t = suite_on(
        &sx.pg_config(),
        &sx_q,
        a.runs,
        a.perf_dir.as_deref().map(|d| (d, sx.pid(), "buffer query")),
    )
    .await?;

    // Persist and compact, then what it takes on disk.
    {
        let c = pg(&sx.pg_config()).await?;
        let t = Instant::now();
        c.batch_execute("FLUSH TABLE otel_logs, otel_traces, cpu")
            .await
            .map_err(|e| e.to_string())?;
        c.batch_execute("COMPACT TABLE otel_logs, otel_traces, cpu")
            .await
            .map_err(|e| e.to_string())?;
        eprintln!(
            "flushed and compacted in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let objects = main_dir.join("objects");
    let stored = |t: &str| dir_bytes(&objects.join(t), ".parquet");
    let (sx_logs, sx_spans, sx_cpu) = (stored("otel_logs"), stored("otel_traces"), stored("cpu"));

    // --- PostgreSQL -----------------------------------------------------------
    let mut postgres = None;
    let mut pg_sizes = (0, 0, 0);
    if !a.no_postgres {
        let p = Postgres::start(&a.postgres_bin, &work.join("postgres"))?;
        let c = pg(&p.config()).await?;
        c.batch_execute(&format!(
            "CREATE TABLE otel_logs (time timestamptz NOT NULL, observed_time timestamptz, service_name text, \
             severity_number int, severity_text text, body text, trace_id text, span_id text, flags bigint, \
             attributes text, resource_attributes text, scope_name text, scope_version text);
             CREATE INDEX ON otel_logs (time);
             CREATE TABLE otel_traces (time timestamptz NOT NULL, end_time timestamptz, duration_ns bigint, \
             trace_id text, span_id text, parent_span_id text, service_name text, name text, kind text, \
             status_code text, status_message text, attributes text, resource_attributes text);
             CREATE INDEX ON otel_traces (time);
             CREATE TABLE cpu ({});
             CREATE INDEX ON cpu (time);",
            cpu_ddl("timestamptz NOT NULL", "text", "double precision")
        ))
        .await
        .map_err(|e| e.to_string())?;
        let pid = p.pid().unwrap_or(0);
        eprintln!("ingest into PostgreSQL (pid {pid}, port {})", p.port);
        let copy = |t: &str, cols: &str| Target::Copy {
            config: p.config(),
            statement: format!("COPY {t} ({cols}) FROM STDIN"),
        };
        let o = ingest::run(
            "logs, COPY",
            copy("otel_logs", encode::LOG_COPY_COLUMNS),
            logs_copy,
            a.concurrency,
            pid,
            None,
        )
        .await?;
        ingest_rows.push(("PostgreSQL: logs, COPY".into(), o));
        let o = ingest::run(
            "spans, COPY",
            copy("otel_traces", encode::SPAN_COPY_COLUMNS),
            spans_copy,
            a.concurrency,
            pid,
            None,
        )
        .await?;
        ingest_rows.push(("PostgreSQL: spans, COPY".into(), o));
        let o = ingest::run(
            "cpu, COPY",
            copy("cpu", &encode::cpu_copy_columns()),
            cpu_copy,
            a.concurrency,
            pid,
            None,
        )
        .await?;
        ingest_rows.push(("PostgreSQL: cpu-only, COPY".into(), o));
        c.batch_execute("VACUUM ANALYZE")
            .await
            .map_err(|e| e.to_string())?;
        let size = |t: &'static str| {
            let c = &c;
            async move {
                c.query_one(&format!("SELECT pg_total_relation_size('{t}')"), &[])
                    .await
                    .map(|r| r.get::<_, i64>(0) as u64)
                    .unwrap_or(0)
            }
        };
        pg_sizes = (
            size("otel_logs").await,
            size("otel_traces").await,
            size("cpu").await,
        );
        postgres = Some(p);
    }

    // --- Queries ----------------------------------------------------------------
    eprintln!("queries: Sextant (restarted, so the first run is cold)");
    sx = sx.restart()?;
    let sextant_t = suite_on(
        &sx.pg_config(),
        &sx_q,
        a.runs,
        a.perf_dir.as_deref().map(|d| (d, sx.pid(), "query")),
    )
    .await?;
    let mut pg_t = None;
    if let Some(p) = &postgres {
        eprintln!("queries: PostgreSQL (restarted)");
        p.restart()?;
        let q: Vec<_> = suite.iter().map(|q| (q.name, q.postgres.clone())).collect();
        pg_t = Some(suite_on(&p.config(), &q, a.runs, None).await?);
    }
    let mut duck = None;
    if !a.no_duckdb {
        eprintln!("queries: DuckDB on Sextant's Parquet files, then loaded natively");
        duck = Some(duckdb(&a, &objects, &work, &suite)?);
    }

    // --- Report -------------------------------------------------------------
    let _ = writeln!(report, "### Ingest\n");
    let _ = writeln!(
        report,
        "| run | rows | rows/s | rows/s per server core | MB/s (NDJSON) | p50 ack | p99 ack | server CPU | server peak RSS | failed requests |"
    );
    let _ = writeln!(
        report,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (name, o) in &ingest_rows {
        let _ = writeln!(
            report,
            "| {name} | {} | {:.0} | {:.0} | {:.1} | {:.1} ms | {:.1} ms | {:.2} cores | {} | {} |",
            o.rows,
            o.rows_per_s(),
            o.rows_per_s() / o.server_cores.max(0.01),
            o.mb_per_s(),
            o.p50_ms,
            o.p99_ms,
            o.server_cores,
            if name.starts_with("PostgreSQL") {
                "(shared memory)".into()
            } else {
                mib(o.peak_rss)
            },
            o.errors
        );
    }
    let ratio = |a: &str, b: &str| -> String {
        let get = |n: &str| {
            ingest_rows
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, o)| o.rows_per_s())
        };
        match (get(a), get(b)) {
            (Some(x), Some(y)) => format!("{:.2}x", x / y),
            _ => "n/a".into(),
        }
    };
    let _ = writeln!(
        report,
        "\nIngest ratio Sextant / PostgreSQL COPY (rows/s): logs {} (OTLP/HTTP), {} (pgwire COPY); spans {}; cpu-only {} (line protocol).\n",
        ratio(
            "Sextant: logs, OTLP/HTTP protobuf",
            "PostgreSQL: logs, COPY"
        ),
        ratio("Sextant: logs, pgwire COPY", "PostgreSQL: logs, COPY"),
        ratio(
            "Sextant: spans, OTLP/HTTP protobuf",
            "PostgreSQL: spans, COPY"
        ),
        ratio(
            "Sextant: cpu-only, line protocol",
            "PostgreSQL: cpu-only, COPY"
        )
    );

    let _ = writeln!(report, "### Storage\n");
    let _ = writeln!(
        report,
        "| table | NDJSON | Sextant Parquet | Sextant / NDJSON | bytes per row | PostgreSQL (with index) | Sextant / PostgreSQL |"
    );
    let _ = writeln!(report, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (t, rawb, sxb, pgb, rows) in [
        ("otel_logs", raw_logs, sx_logs, pg_sizes.0, a.logs),
        ("otel_traces", raw_spans, sx_spans, pg_sizes.1, a.spans),
        ("cpu", raw_cpu, sx_cpu, pg_sizes.2, a.hosts as u64 * 8_640),
    ] {
        let _ = writeln!(
            report,
            "| {t} | {} | {} | {:.1}% | {:.1} | {} | {} |",
            mib(rawb),
            mib(sxb),
            sxb as f64 * 100.0 / rawb as f64,
            sxb as f64 / rows as f64,
            if pgb > 0 { mib(pgb) } else { "n/a".into() },
            if pgb > 0 {
                format!("{:.2}x", sxb as f64 / pgb as f64)
            } else {
                "n/a".into()
            }
        );
    }

    let _ = writeln!(
        report,
        "\n### Queries (milliseconds; cold = first run in a freshly started server, hot = median of {} runs)\n",
        a.runs
    );
    let _ = writeln!(
        report,
        "| query | Sextant buffer hot | Sextant cold | Sextant hot | DuckDB Parquet cold | DuckDB Parquet hot | DuckDB native hot | PostgreSQL cold | PostgreSQL hot | hot: Sextant / DuckDB Parquet | hot: Sextant / DuckDB native | hot: PostgreSQL / Sextant | rows |"
    );
    let _ = writeln!(
        report,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for (i, q) in suite.iter().enumerate() {
        let s = &sextant_t[i];
        let d = duck.as_ref().map(|d| (&d.parquet[i], &d.native[i]));
        let p = pg_t.as_ref().map(|p| &p[i]);
        let f = |x: Option<f64>| x.map_or("n/a".into(), |v| format!("{v:.1}"));
        let rows = format!("{}", s.answer.rows());
        // Every peer's answer against Sextant's, value by value.
        let mut differences = vec![(
            "Sextant before FLUSH",
            s.answer.difference(&buffer_t[i].answer),
        )];
        if let Some((dp, dn)) = d {
            differences.push(("DuckDB Parquet", s.answer.difference(&dp.answer)));
            differences.push(("DuckDB native", s.answer.difference(&dn.answer)));
        }
        if let Some(p) = p {
            differences.push(("PostgreSQL", s.answer.difference(&p.answer)));
        }
        let mut agree = true;
        for (peer, difference) in differences {
            if let Some(d) = difference {
                agree = false;
                eprintln!("{}: {peer} answers differently: {d}", q.name);
            }
        }
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {rows}{} |",
            q.name,
            f(Some(buffer_t[i].hot_ms)),
            f(Some(s.cold_ms)),
            f(Some(s.hot_ms)),
            f(d.map(|x| x.0.cold_ms)),
            f(d.map(|x| x.0.hot_ms)),
            f(d.map(|x| x.1.hot_ms)),
            f(p.map(|x| x.cold_ms)),
            f(p.map(|x| x.hot_ms)),
            d.map_or("n/a".into(), |x| format!("{:.2}x", s.hot_ms / x.0.hot_ms)),
            d.map_or("n/a".into(), |x| format!("{:.2}x", s.hot_ms / x.1.hot_ms)),
            p.map_or("n/a".into(), |x| format!("{:.1}x", x.hot_ms / s.hot_ms)),
            if agree || !q.exact {
                ""
            } else {
                " (answers differ!)"
            }
        );
    }
    if let Some(d) = &duck {
        let _ = writeln!(
            report,
            "\nDuckDB native load (CREATE TABLE AS from the Parquet files): {:.1} s.",
            d.load_s
        );
    }
    // The goals of issue #30, measured (not asserted).
    let _ = writeln!(report, "\n### Goals\n");
    let _ = writeln!(report, "| goal | measured | |");
    let _ = writeln!(report, "| --- | --- | --- |");
    let get = |n: &str| {
        ingest_rows
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, o)| o.clone())
    };
    let mark = |ok: bool| if ok { "met" } else { "missed" };
    if let Some(o) = get("Sextant: logs, OTLP/HTTP protobuf") {
        let _ = writeln!(
            report,
            "| OTLP/HTTP logs p99 ack < 50 ms ({} clients, {}-record requests) | {:.1} ms | {} |",
            a.concurrency,
            a.batch,
            o.p99_ms,
            mark(o.p99_ms < 50.0)
        );
    }
    if let Some((name, o)) = ingest_rows
        .iter()
        .filter(|(k, _)| k.starts_with("Sextant"))
        .max_by_key(|(_, o)| o.peak_rss)
    {
        let _ = writeln!(
            report,
            "| Sextant peak RSS < 512 MiB through every ingest run (default flags) | {} ({name}) | {} |",
            mib(o.peak_rss),
            mark(o.peak_rss < 512 << 20)
        );
    }
    if let Some(o) = get("Sextant: cpu-only, line protocol") {
        let _ = writeln!(
            report,
            "| line protocol cpu-only ≥ 400,000 rows/s | {:.0} rows/s | {} |",
            o.rows_per_s(),
            mark(o.rows_per_s() >= 400_000.0)
        );
    }
    for (what, stored, raw, goal) in [
        ("logs", sx_logs, raw_logs, 0.10),
        ("traces", sx_spans, raw_spans, 0.10),
        ("metrics (cpu)", sx_cpu, raw_cpu, 0.05),
    ] {
        let share = stored as f64 / raw.max(1) as f64;
        let _ = writeln!(
            report,
            "| {what} stored in ≤ {:.0}% of their NDJSON bytes | {:.1}% | {} |",
            goal * 100.0,
            share * 100.0,
            mark(share <= goal)
        );
    }
    if let Some(d) = &duck {
        // (what, Sextant's times, which time, the peer's times, the factor allowed)
        type Pick = fn(&Timing) -> f64;
        type Check<'t> = (&'t str, &'t [Timing], Pick, &'t [Timing], f64);
        let hot: Pick = |t| t.hot_ms;
        let cold: Pick = |t| t.cold_ms;
        let checks: [Check; 4] = [
            (
                "each query at or below DuckDB on the same Parquet (hot)",
                &sextant_t,
                hot,
                &d.parquet,
                1.0,
            ),
            (
                "each query from the write buffer at or below DuckDB on the same Parquet (hot)",
                &buffer_t,
                hot,
                &d.parquet,
                1.0,
            ),
            (
                "each query within 1.5x of DuckDB's native tables (hot)",
                &sextant_t,
                hot,
                &d.native,
                1.5,
            ),
            (
                "each query cold within 2x of DuckDB on the same Parquet cold",
                &sextant_t,
                cold,
                &d.parquet,
                2.0,
            ),
        ];
        for (what, ours, pick, theirs, factor) in checks {
            let ratio = |i: usize| pick(&ours[i]) / pick(&theirs[i]);
            let within = (0..suite.len()).filter(|&i| ratio(i) <= factor).count();
            if let Some(worst) = (0..suite.len()).max_by(|&x, &y| ratio(x).total_cmp(&ratio(y))) {
                let _ = writeln!(
                    report,
                    "| {what} | {within} of {} within; worst {:.2}x ({}) | {} |",
                    suite.len(),
                    ratio(worst),
                    suite[worst].name,
                    mark(within == suite.len())
                );
            }
        }
    }
    if let Some(p) = &pg_t {
        for scan in [
            "logs whose body has a word",
            "logs with a rare word",
            "logs and spans of one trace",
        ] {
            if let Some(i) = suite.iter().position(|q| q.name == scan) {
                let r = p[i].hot_ms / sextant_t[i].hot_ms;
                let _ = writeln!(
                    report,
                    "| {scan}: ≥ 10x faster than PostgreSQL (hot) | {r:.1}x faster | {} |",
                    mark(r >= 10.0)
                );
            }
        }
    }
    println!("{report}");
    if let Some(path) = &a.report {
        std::fs::write(path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    drop(sx);
    Ok(())
}

fn clone_body(b: &Body) -> Body {
    Body {
        bytes: b.bytes.clone(),
        batch: b.batch.clone(),
        rows: b.rows,
        ndjson_bytes: b.ndjson_bytes,
    }
}

fn cpu_ddl(time: &str, text: &str, double: &str) -> String {
    let mut cols = vec![format!("time {time}")];
    cols.extend(
        generate::cpu_tags(0)
            .iter()
            .map(|(k, _)| format!("{k} {text}")),
    );
    cols.extend(generate::CPU_FIELDS.iter().map(|f| format!("{f} {double}")));
    cols.join(", ")
}

struct Duck {
    parquet: Vec<Timing>,
    native: Vec<Timing>,
    load_s: f64,
}

/// Runs benches/duckdb_peer.py: the suite on Sextant's Parquet files, then
/// on the same data loaded into a DuckDB database.
fn duckdb(a: &Args, objects: &Path, work: &Path, suite: &[queries::Query]) -> Result<Duck, String> {
    duckdb_on(
        a,
        objects,
        &["otel_logs", "otel_traces", "cpu"],
        work,
        "duckdb",
        suite,
    )
}

/// Runs benches/duckdb_peer.py on `tables` of Sextant's object store
/// `objects`; its database and spec are `work/<name>.db` and `.json`.
fn duckdb_on(
    a: &Args,
    objects: &Path,
    tables: &[&str],
    work: &Path,
    name: &str,
    suite: &[queries::Query],
) -> Result<Duck, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("duckdb_peer.py");
    let tables: serde_json::Map<String, serde_json::Value> = tables
        .iter()
        .map(|t| {
            (
                t.to_string(),
                serde_json::json!(objects.join(format!("{t}/*/*.parquet"))),
            )
        })
        .collect();
    let spec = serde_json::json!({
        "tables": tables,
        "database": work.join(format!("{name}.db")),
        "runs": a.runs,
        "queries": suite.iter().map(|q| serde_json::json!({"name": q.name, "sql": q.duckdb})).collect::<Vec<_>>(),
    });
    let spec_path = work.join(format!("{name}.json"));
    std::fs::write(&spec_path, spec.to_string()).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(&a.python)
        .arg(&script)
        .arg(&spec_path)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} {}: {e}",
                a.python.display(),
                script.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!("duckdb_peer.py failed ({})", out.status));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("duckdb_peer.py output: {e}"))?;
    let timings =
        |k: &str| -> Vec<Timing> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .map(|t| Timing {
                            cold_ms: t["cold_ms"].as_f64().unwrap_or(f64::NAN),
                            hot_ms: t["hot_ms"].as_f64().unwrap_or(f64::NAN),
                            answer: answer::Answer::new(
                                t["rows"].as_array().into_iter().flatten().map(|r| {
                                    r.as_array().into_iter().flatten().map(|v| v.as_str())
                                }),
                            ),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
    Ok(Duck {
        parquet: timings("parquet"),
        native: timings("native"),
        load_s: v["load_s"].as_f64().unwrap_or(f64::NAN),
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb as f64 / 1048576.0));
    format!("{cores} cores ({cpu}), {mem} RAM")
}
