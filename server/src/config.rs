//! Command-line flags and environment variables (`sextant serve --help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Sextant: a telemetry database you query in SQL.
#[derive(Debug, Parser)]
#[command(
    name = "sextant",
    version,
    about = "Sextant: a telemetry database you query in SQL over the PostgreSQL wire protocol"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: pgwire for SQL, OTLP/gRPC, and HTTP for OTLP, line protocol, Prometheus remote write and JSON.
    Serve(ServeConfig),
}

/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WalSync {
    /// fsync before every acknowledgement (concurrent writers share one
    /// fsync). An acknowledged write survives kill -9 and power loss.
    Always,
    /// Acknowledge once the write reached the OS; fsync about once a second.
    /// Survives a crash of sextant, but a power loss can lose the last second.
    Never,
}

/// Flags of `sextant serve`. Every flag also reads the environment variable shown.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Directory for the WAL, the catalog and (unless --object-store says
    /// otherwise) the Parquet files.
    #[arg(long, env = "SEXTANT_DATA_DIR", default_value = "./sextant-data")]
    pub data_dir: PathBuf,

    /// Where Parquet files are stored: file:///path, s3://bucket/prefix or
    /// memory://. s3:// reads the standard AWS variables (AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP).
    /// The WAL stays in --data-dir (and the catalog, unless --catalog says
    /// otherwise). Default: file://<data-dir>/objects.
    #[arg(long, env = "SEXTANT_OBJECT_STORE")]
    pub object_store: Option<String>,

    /// Where the catalog (tables, files, views, alerts, users) is kept:
    /// sqlite://PATH, or postgres://USER:PASSWORD@HOST:PORT/DB for a catalog
    /// in PostgreSQL (its schema `sextant`, created on first use). Default:
    /// sqlite://<data-dir>/catalog.sqlite.
    #[arg(long, env = "SEXTANT_CATALOG")]
    pub catalog: Option<String>,

    /// PEM file of the certificate authority that signed the catalog
    /// database's certificate: the connection to PostgreSQL is then
    /// verified (the certificate must also name the URL's host). TLS itself
    /// is the URL's sslmode: prefer (the default), require or disable.
    #[arg(long, env = "SEXTANT_CATALOG_CA")]
    pub catalog_ca: Option<PathBuf>,

    /// This node's id in the catalog (1 to 64 letters, digits, '-', '_',
    /// '.'). Kept in <data-dir>/node-id on first start, which later starts
    /// read; a different --node-id for that data directory is refused.
    /// Default: the kept one, or a new node-<12 hex digits>.
    #[arg(long, env = "SEXTANT_NODE_ID")]
    pub node_id: Option<String>,

    /// What this node does: all, or a comma list of ingest (accepts
    /// writes, owns a WAL and a write buffer), query (runs stages of
    /// distributed queries for the other nodes) and compact (compaction,
    /// retention and alert evaluation, each while it holds the job's lease).
    /// Matters on a shared catalog (--catalog postgres://...).
    #[arg(long, env = "SEXTANT_MODE", default_value = "all", value_parser = sextant_cluster::Modes::parse)]
    pub mode: sextant_cluster::Modes,

    /// The secret the nodes sharing a catalog present to each other (query
    /// stages, reading each other's write buffers). Required with a
    /// postgres:// catalog; the same on every node.
    #[arg(long, env = "SEXTANT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// PEM file of the certificate authority that signed the other nodes'
    /// certificates (--tls-cert): this node connects to a node that has one
    /// over TLS and trusts it only if this authority signed it.
    #[arg(long, env = "SEXTANT_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,

    /// Listen on addresses other than loopback although no client has to
    /// authenticate: anyone who reaches them can read and write everything.
    /// Only for a network that something else guards.
    #[arg(long, env = "SEXTANT_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// PEM certificate chain for TLS on every listener (pgwire SSLRequest,
    /// HTTPS, gRPC and Flight SQL over TLS); with --tls-key. Read again on
    /// SIGHUP. With it, every client must use TLS.
    #[arg(long, env = "SEXTANT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SEXTANT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Address of the PostgreSQL wire protocol (psql, Grafana, drivers). Port 0 picks a free port.
    #[arg(long, env = "SEXTANT_PG_ADDR", default_value = "127.0.0.1:5433")]
    pub pg_addr: SocketAddr,

    /// Address of the HTTP endpoints: GET /health, OTLP/HTTP (/v1/logs, /v1/traces,
    /// /v1/metrics), line protocol (/api/v2/write, /write), Prometheus remote write
    /// (/api/v1/write), JSON (/v1/ingest/{table}).
    #[arg(long, env = "SEXTANT_HTTP_ADDR", default_value = "127.0.0.1:4318")]
    pub http_addr: SocketAddr,

    /// Address for OTLP/gRPC: the logs, trace and metrics Export services.
    #[arg(long, env = "SEXTANT_GRPC_ADDR", default_value = "127.0.0.1:4317")]
    pub grpc_addr: SocketAddr,

    /// Address for Arrow Flight SQL (queries, prepared statements, metadata, bulk ingest).
    #[arg(long, env = "SEXTANT_FLIGHT_ADDR", default_value = "127.0.0.1:8815")]
    pub flight_addr: SocketAddr,

    /// Once every listener accepts connections, write the bound addresses here
    /// as JSON: {"pg": "127.0.0.1:40123", "http": "..."}.
    #[arg(long, env = "SEXTANT_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// When the WAL is fsynced: `always` (before each acknowledgement) or
    /// `never` (about once a second; faster, loses the last second on power loss).
    #[arg(long, env = "SEXTANT_WAL_SYNC", value_enum, default_value = "always")]
    pub wal_sync: WalSync,

    /// Memory all running queries may use together (e.g. 2GiB, 512MiB). A
    /// query that needs more fails with SQLSTATE 53200; the server stays up.
    #[arg(long, env = "SEXTANT_QUERY_MEMORY_LIMIT", default_value = "4GiB", value_parser = parse_bytes)]
    pub query_memory_limit: u64,

    /// Size of the in-memory write buffer, with what persistence holds
    /// while it encodes. Persistence to Parquet starts at half of it; past
    /// it, writers wait (and then get a retryable error). A larger buffer
    /// takes bursts faster, persisting after them, at the cost of memory.
    #[arg(long, env = "SEXTANT_BUFFER_LIMIT", default_value = "256MiB", value_parser = parse_bytes)]
    pub buffer_limit: u64,

    /// Memory the ingest requests being read, decoded and written may hold
    /// together (about three times their bodies' bytes). Past it, a request
    /// waits before its body is read, and after --backpressure-timeout is
    /// refused with HTTP 503 / gRPC RESOURCE_EXHAUSTED / SQLSTATE 53000.
    #[arg(long, env = "SEXTANT_INGEST_INFLIGHT_LIMIT", default_value = "256MiB", value_parser = parse_bytes)]
    pub ingest_inflight_limit: u64,

    /// Buffered rows older than this are persisted to Parquet (e.g. 5m, 30s).
    #[arg(long, env = "SEXTANT_PERSIST_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub persist_interval: Duration,

    /// How long a write waits for write-buffer space (while persistence catches
    /// up) or for room among the requests in flight (--ingest-inflight-limit)
    /// before it is refused with HTTP 503 / gRPC RESOURCE_EXHAUSTED / SQLSTATE 53000.
    #[arg(long, env = "SEXTANT_BACKPRESSURE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub backpressure_timeout: Duration,

    /// Queries leave out the Parquet files found damaged (missing,
    /// truncated, or not decoding: by an earlier read or `CHECK TABLE`)
    /// instead of failing on them. A file not yet known to be damaged
    /// still fails the first query that reads it. Damaged files show in
    /// system.files either way.
    #[arg(long, env = "SEXTANT_SKIP_DAMAGED_FILES")]
    pub skip_damaged_files: bool,

    /// Size at which a WAL segment file is closed and a new one started.
    #[arg(long, env = "SEXTANT_WAL_SEGMENT_SIZE", default_value = "64MiB", value_parser = parse_bytes)]
    pub wal_segment_size: u64,

    /// Largest HTTP request body accepted, before and after gzip
    /// decompression; larger requests get 413.
    #[arg(long, env = "SEXTANT_MAX_BODY_SIZE", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_body_size: u64,

    /// Rows per Parquet row group, the unit that statistics and bloom
    /// filters let a query skip.
    #[arg(long, env = "SEXTANT_ROW_GROUP_ROWS", default_value = "262144", value_parser = clap::value_parser!(u64).range(1000..))]
    pub row_group_rows: u64,

    /// Compaction merges the small files of a time partition into files of
    /// about this size.
    #[arg(long, env = "SEXTANT_COMPACTION_TARGET_SIZE", default_value = "128MiB", value_parser = parse_bytes)]
    pub compaction_target_size: u64,

    /// A time partition is compacted in the background once it has this many
    /// files smaller than half the target size (COMPACT TABLE: two).
    #[arg(long, env = "SEXTANT_COMPACTION_MIN_FILES", default_value = "8", value_parser = clap::value_parser!(u64).range(2..))]
    pub compaction_min_files: u64,

    /// How often retention, background compaction and the clean-up of
    /// replaced and unreferenced objects run (e.g. 1m, 10s).
    #[arg(long, env = "SEXTANT_LIFECYCLE_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub lifecycle_interval: Duration,

    /// How often materialized views re-aggregate the buckets writes
    /// invalidated (a view with more waiting catches up without pause).
    #[arg(long, env = "SEXTANT_VIEW_REFRESH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub view_refresh_interval: Duration,

    /// Longest an alert rule's query may run (a rule's `WITH (query_timeout
    /// = ...)` overrides it); a rule that overruns is reported in
    /// system.alerts and its instances keep their state.
    #[arg(long, env = "SEXTANT_ALERT_QUERY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub alert_query_timeout: Duration,

    /// Memory the queries of alert rules may use together, apart from
    /// --query-memory-limit; a rule that needs more fails with the error in
    /// system.alerts.
    #[arg(long, env = "SEXTANT_ALERT_MEMORY_LIMIT", default_value = "256MiB", value_parser = parse_bytes)]
    pub alert_memory_limit: u64,

    /// PromQL (the Prometheus HTTP API): how far back an instant vector
    /// selector looks for a series' latest sample (Prometheus's
    /// --query.lookback-delta).
    #[arg(long, env = "SEXTANT_PROMQL_LOOKBACK_DELTA", default_value = "5m", value_parser = humantime::parse_duration)]
    pub promql_lookback_delta: Duration,

    /// PromQL: longest a query may run (Prometheus's --query.timeout); a
    /// request's `timeout` parameter can only shorten it.
    #[arg(long, env = "SEXTANT_PROMQL_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub promql_timeout: Duration,

    /// PromQL: most samples a query may hold at once (Prometheus's
    /// --query.max-samples); the series it reads also count against
    /// --query-memory-limit.
    #[arg(long, env = "SEXTANT_PROMQL_MAX_SAMPLES", default_value = "50000000")]
    pub promql_max_samples: usize,

    /// PromQL: the step of a subquery written without one (`x[5m:]`);
    /// Prometheus takes its global.evaluation_interval.
    #[arg(long, env = "SEXTANT_PROMQL_SUBQUERY_STEP", default_value = "1m", value_parser = parse_positive_duration)]
    pub promql_subquery_step: Duration,

    /// For tests: the server's clock (retention, token expiry, catalog
    /// times, ingest times of points without one, SQL's `now()`, alert
    /// rules) starts at this time (RFC 3339) and moves only by
    /// `POST /debug/clock`.
    #[arg(long, env = "SEXTANT_MANUAL_CLOCK", hide = true, value_parser = parse_time)]
    pub manual_clock: Option<i64>,

    /// How often, at most, the SQLite catalog is copied to the object store
    /// (`_catalog/catalog.sqlite`) after a change; files committed or
    /// replaced are copied within a fraction of a second. A node started
    /// on an empty data directory restores the catalog from that copy, so
    /// that with --object-store s3://... the data outlives the machine.
    /// 0s turns the copies off. No copies with a catalog in PostgreSQL.
    #[arg(long, env = "SEXTANT_CATALOG_SNAPSHOT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub catalog_snapshot_interval: Duration,

    /// An object in the store that no table refers to (written, then the
    /// server crashed before committing it) is deleted once it is this old.
    #[arg(long, env = "SEXTANT_ORPHAN_GRACE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub orphan_grace: Duration,

    /// Which log lines to write, in tracing's EnvFilter syntax: a level
    /// (error, warn, info, debug, trace, off) and per-crate levels, e.g.
    /// `info,sextant_storage=debug`.
    #[arg(
        long = "log-filter",
        visible_alias = "log",
        env = "SEXTANT_LOG_FILTER",
        default_value = "info"
    )]
    pub log_filter: String,

    /// How log lines look: `text` for people, `json` (one object per line,
    /// with the fields of its span and the spans around it) for log shippers.
    #[arg(long, env = "SEXTANT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Write Sextant's own spans (statements, HTTP requests, ingest batches,
    /// persistence, compaction, alert evaluations) into otel_traces, its log
    /// lines into otel_logs (service_name 'sextant') and samples of its
    /// metrics into sextant_metrics.
    #[arg(long, env = "SEXTANT_SELF_TELEMETRY")]
    pub self_telemetry: bool,

    /// Which spans and log lines --self-telemetry writes, in the syntax of
    /// --log-filter (independent of it).
    #[arg(long, env = "SEXTANT_SELF_TELEMETRY_FILTER", default_value = "info")]
    pub self_telemetry_filter: String,

    /// How often --self-telemetry writes what it collected.
    #[arg(long, env = "SEXTANT_SELF_TELEMETRY_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub self_telemetry_interval: Duration,

    /// How often --self-telemetry writes a sample of every series of
    /// GET /metrics into the table sextant_metrics (time, name, labels as
    /// JSON, value; kept 7 days): the history the Grafana dashboard in
    /// docs/grafana/ draws.
    #[arg(long, env = "SEXTANT_SELF_TELEMETRY_METRICS_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub self_telemetry_metrics_interval: Duration,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses an RFC 3339 time to nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| format!("'{s}' is not an RFC 3339 time such as 2026-01-01T00:00:00Z"))
}

/// A duration of at least a millisecond (`30s`, `1m`).
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err(format!("{s:?} is shorter than a millisecond"));
    }
    Ok(d)
}

/// Parses `1048576`, `512KiB`, `64MiB`, `4GiB`, `1GB`, `100MB`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!(
            "'{s}' is not a size: expected a number with an optional unit such as 512MiB or 4GiB"
        )
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}' (use KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("2 GB"), Ok(2_000_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(
            parse_bytes("5 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
    }

    #[test]
    fn defaults_match_the_design() {
        let cli = Cli::try_parse_from(["sextant", "serve"]).unwrap();
        let Command::Serve(c) = cli.command;
        assert_eq!(c.pg_addr.to_string(), "127.0.0.1:5433");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:4318");
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:4317");
        assert_eq!(c.flight_addr.to_string(), "127.0.0.1:8815");
        assert_eq!(c.data_dir, PathBuf::from("./sextant-data"));
        assert_eq!(c.wal_sync, WalSync::Always);
    }
}
