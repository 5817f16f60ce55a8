//! Sextant's metrics: one process-wide Prometheus registry ([`metrics`]).
//!
//! The boundaries record into it: front ends (rows and bytes ingested,
//! rejected points, queries), the WAL (fsync latency, group size),
//! persistence, the object store, table scans (files scanned and pruned),
//! compaction, and alert evaluations. Figures that are states rather than
//! events (buffer bytes, persistence backlog, view lag, query memory) are
//! gauges the server sets just before each read. [`text`] renders the
//! registry in the Prometheus text format (`GET /metrics`) and [`samples`]
//! gives the same figures as rows (`system.metrics`).

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric Sextant exports.
pub struct Metrics {
    registry: Registry,
    /// Rows written, by protocol and table.
    pub ingest_rows: IntCounterVec,
    /// Request bytes received by the ingest endpoints, by protocol.
    pub ingest_bytes: IntCounterVec,
    /// Points (lines, rows, series, data points) refused, by protocol and reason.
    pub rejected_points: IntCounterVec,
    /// Ingest requests answered, by protocol and status (HTTP status, or
    /// `ok` and the gRPC code).
    pub ingest_requests: IntCounterVec,
    /// Seconds one WAL fsync took.
    pub wal_fsync_seconds: Histogram,
    /// Records written by one WAL group commit.
    pub wal_group_records: Histogram,
    /// Bytes in the write buffer, not yet persisted.
    pub buffer_bytes: IntGauge,
    /// Rows in the write buffer, not yet persisted.
    pub buffer_rows: IntGauge,
    /// Bytes of the ingest requests admitted and not yet answered.
    pub ingest_inflight_bytes: IntGauge,
    /// Bytes persistence and compaction hold while they work.
    pub buffer_work_bytes: IntGauge,
    /// Bytes the server's allocator has handed out (in use).
    pub memory_allocated_bytes: IntGauge,
    /// Bytes of memory the server's allocator holds resident.
    pub memory_resident_bytes: IntGauge,
    /// Seconds one table's persistence to Parquet took.
    pub persist_seconds: Histogram,
    /// Parquet files written by persistence.
    pub persisted_files: IntCounter,
    /// Seconds object store requests took, by operation.
    pub object_store_seconds: HistogramVec,
    /// Object store requests that failed, by operation.
    pub object_store_errors: IntCounterVec,
    /// Statements run, by protocol and outcome (ok, error, cancelled).
    pub queries: IntCounterVec,
    /// Seconds statements took, by protocol.
    pub query_seconds: HistogramVec,
    /// Memory running queries hold in the query memory pool.
    pub query_memory_bytes: IntGauge,
    /// Parquet files and buffer chunks considered by scans, by kind and
    /// whether they were scanned or pruned.
    pub scan_parts: IntCounterVec,
    /// Bytes of the Parquet files scans read.
    pub scan_file_bytes: IntCounter,
    /// Compaction runs, by trigger.
    pub compactions: IntCounterVec,
    /// How far each materialized view is behind its base, in seconds.
    pub view_lag_seconds: prometheus::GaugeVec,
    /// Alert rule evaluations, by outcome (ok, error).
    pub alert_evaluations: IntCounterVec,
    /// Alert notification attempts, by outcome (delivered, failed, gave_up).
    pub alert_notifications: IntCounterVec,
    /// Alert instances firing, by rule.
    pub alerts_firing: IntGaugeVec,
    /// Sextant's own spans and log records (`--self-telemetry`), by signal
    /// (traces, logs) and outcome (written, dropped).
    pub self_telemetry_records: IntCounterVec,
    /// Logins, by protocol and outcome (ok, failed, limited).
    pub logins: IntCounterVec,
}

/// Latency buckets in seconds: 100 µs to 30 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let group_sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];
        let view_lag = prometheus::GaugeVec::new(
            Opts::new(
                "sextant_view_lag_seconds",
                "How far each materialized view is behind the newest row of its base table",
            ),
            &["view"],
        )
        .expect("valid metric");
        r.register(Box::new(view_lag.clone()))
            .expect("unique metric");
        let firing = IntGaugeVec::new(
            Opts::new("sextant_alerts_firing", "Alert instances firing, by rule"),
            &["alert"],
        )
        .expect("valid metric");
        r.register(Box::new(firing.clone())).expect("unique metric");
        Self {
            ingest_rows: counter(
                &r,
                "sextant_ingest_rows_total",
                "Rows written, by protocol and table",
                &["protocol", "table"],
            ),
            ingest_bytes: counter(
                &r,
                "sextant_ingest_bytes_total",
                "Request bytes received by ingest endpoints (as sent, before decompression)",
                &["protocol"],
            ),
            rejected_points: counter(
                &r,
                "sextant_ingest_rejected_points_total",
                "Points (lines, rows, series, data points) refused, by protocol and reason",
                &["protocol", "reason"],
            ),
            ingest_requests: counter(
                &r,
                "sextant_ingest_requests_total",
                "Ingest requests answered, by protocol and status",
                &["protocol", "status"],
            ),
            wal_fsync_seconds: histogram(
                &r,
                "sextant_wal_fsync_seconds",
                "Seconds one WAL fsync took",
                &[],
                SECONDS,
            )
            .with_label_values(&[] as &[&str]),
            wal_group_records: histogram(
                &r,
                "sextant_wal_group_records",
                "Records written by one WAL group commit (one write, one fsync)",
                &[],
                &group_sizes,
            )
            .with_label_values(&[] as &[&str]),
            buffer_bytes: gauge(
                &r,
                "sextant_buffer_bytes",
                "Bytes of rows in the write buffer, not yet persisted to Parquet",
            ),
            buffer_rows: gauge(
                &r,
                "sextant_buffer_rows",
                "Rows in the write buffer, not yet persisted to Parquet (the persistence backlog)",
            ),
            ingest_inflight_bytes: gauge(
                &r,
                "sextant_ingest_inflight_bytes",
                "Bytes of the ingest requests being read, decoded and written (their admissions; at most --ingest-inflight-limit)",
            ),
            buffer_work_bytes: gauge(
                &r,
                "sextant_buffer_work_bytes",
                "Bytes persistence and compaction hold while they sort, merge and encode (at most a quarter of --buffer-limit, kept for them)",
            ),
            memory_allocated_bytes: gauge(
                &r,
                "sextant_memory_allocated_bytes",
                "Bytes the allocator (jemalloc) has handed out: the memory in use",
            ),
            memory_resident_bytes: gauge(
                &r,
                "sextant_memory_resident_bytes",
                "Bytes of memory the allocator (jemalloc) holds resident, in use or not yet returned",
            ),
            persist_seconds: histogram(
                &r,
                "sextant_persist_seconds",
                "Seconds one table's persistence to Parquet took",
                &[],
                SECONDS,
            )
            .with_label_values(&[] as &[&str]),
            persisted_files: counter(
                &r,
                "sextant_persisted_files_total",
                "Parquet files written by persistence",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            object_store_seconds: histogram(
                &r,
                "sextant_object_store_request_seconds",
                "Seconds object store requests took, by operation",
                &["op"],
                SECONDS,
            ),
            object_store_errors: counter(
                &r,
                "sextant_object_store_errors_total",
                "Object store requests that failed, by operation",
                &["op"],
            ),
            queries: counter(
                &r,
                "sextant_queries_total",
                "Statements run, by protocol and outcome",
                &["protocol", "outcome"],
            ),
            query_seconds: histogram(
                &r,
                "sextant_query_seconds",
                "Seconds statements took, by protocol",
                &["protocol"],
                SECONDS,
            ),
            query_memory_bytes: gauge(
                &r,
                "sextant_query_memory_bytes",
                "Bytes running queries hold in the query memory pool",
            ),
            scan_parts: counter(
                &r,
                "sextant_scan_parts_total",
                "Parquet files and write-buffer chunks considered by table scans, by kind (file, chunk) and result (scanned, pruned)",
                &["kind", "result"],
            ),
            scan_file_bytes: counter(
                &r,
                "sextant_scan_file_bytes_total",
                "Bytes of the Parquet files table scans read",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            compactions: counter(
                &r,
                "sextant_compactions_total",
                "Compaction runs, by trigger",
                &["trigger"],
            ),
            view_lag_seconds: view_lag,
            alert_evaluations: counter(
                &r,
                "sextant_alert_evaluations_total",
                "Alert rule evaluations, by outcome",
                &["outcome"],
            ),
            alert_notifications: counter(
                &r,
                "sextant_alert_notifications_total",
                "Alert notification attempts, by outcome (delivered, failed, gave_up)",
                &["outcome"],
            ),
            alerts_firing: firing,
            self_telemetry_records: counter(
                &r,
                "sextant_self_telemetry_records_total",
                "Sextant's own spans and log records (--self-telemetry), by signal and outcome (written, dropped)",
                &["signal", "outcome"],
            ),
            logins: counter(
                &r,
                "sextant_logins_total",
                "Logins (passwords and tokens), by protocol and outcome (ok, failed, limited)",
                &["protocol", "outcome"],
            ),
            registry: r,
        }
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The metrics in the Prometheus text exposition format (version 0.0.4).
pub fn text() -> String {
    let mut out = vec![];
    let families = metrics().registry.gather();
    if TextEncoder::new().encode(&families, &mut out).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The content type of [`text`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One sample of the text format: a histogram is its `_bucket`, `_sum` and
/// `_count` series, as Prometheus stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// `{k="v",...}` as in the text format, or empty.
    pub labels: String,
    pub value: f64,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    pub help: String,
}

impl Sample {
    /// The labels as (name, value) pairs, unescaped.
    pub fn label_pairs(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        let mut rest = self.labels.trim_start_matches('{').trim_end_matches('}');
        while let Some((name, after)) = rest.split_once("=\"") {
            let mut value = String::new();
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => {}
                    },
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            out.push((name.trim_start_matches(',').to_string(), value));
            rest = &after[end..];
        }
        out
    }
}

/// The samples of [`text`], parsed back so the two always agree.
pub fn samples() -> Vec<Sample> {
    let text = text();
    let mut out = vec![];
    let (mut kind, mut help) = (String::new(), String::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest
                .split_once(' ')
                .map(|(_, h)| h)
                .unwrap_or("")
                .to_string();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            kind = rest
                .split_once(' ')
                .map(|(_, k)| k)
                .unwrap_or("")
                .to_string();
        } else if !line.starts_with('#') && !line.is_empty() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (name, labels) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            out.push(Sample {
                name: name.to_string(),
                labels: labels.to_string(),
                value,
                kind: kind.clone(),
                help: help.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_samples_agree() {
        let m = metrics();
        m.ingest_rows.with_label_values(&["http", "cpu"]).inc_by(3);
        m.wal_fsync_seconds.observe(0.002);
        let text = text();
        assert!(
            text.contains("sextant_ingest_rows_total{protocol=\"http\",table=\"cpu\"} 3"),
            "{text}"
        );
        assert!(text.contains("# TYPE sextant_wal_fsync_seconds histogram"));
        let s = samples();
        let rows = s
            .iter()
            .find(|s| s.name == "sextant_ingest_rows_total")
            .unwrap();
        assert_eq!(rows.labels, "{protocol=\"http\",table=\"cpu\"}");
        assert_eq!(
            rows.label_pairs(),
            [
                ("protocol".to_string(), "http".to_string()),
                ("table".to_string(), "cpu".to_string())
            ]
        );
        let escaped = Sample {
            labels: r#"{a="x\"y,z=\\",b="",c="l1\nl2"}"#.to_string(),
            ..rows.clone()
        };
        assert_eq!(
            escaped.label_pairs(),
            [
                ("a".to_string(), "x\"y,z=\\".to_string()),
                ("b".to_string(), String::new()),
                ("c".to_string(), "l1\nl2".to_string())
            ]
        );
        assert_eq!(rows.value, 3.0);
        assert_eq!(rows.kind, "counter");
        let count = s
            .iter()
            .find(|s| s.name == "sextant_wal_fsync_seconds_count")
            .unwrap();
        assert_eq!(count.value, 1.0);
        assert_eq!(count.kind, "histogram");
        assert!(
            s.iter().any(
                |s| s.name == "sextant_wal_fsync_seconds_bucket" && s.labels == "{le=\"+Inf\"}"
            )
        );
    }
}
