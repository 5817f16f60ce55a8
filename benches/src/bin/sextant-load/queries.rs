//! The query suite: the questions an on-call engineer asks of logs and
//! traces, and the whole TSBS devops `cpu-only` set, each in the SQL of
//! Sextant, DuckDB and PostgreSQL (the same text where the dialects agree).

use crate::generate::{hex, trace_id};

pub(crate) struct Query {
    pub(crate) name: &'static str,
    pub(crate) sextant: String,
    pub(crate) duckdb: String,
    pub(crate) postgres: String,
    /// The engines' answers must agree (false for approximate aggregates).
    pub(crate) exact: bool,
}

fn same(name: &'static str, sql: String) -> Query {
    Query {
        name,
        sextant: sql.clone(),
        duckdb: sql.clone(),
        postgres: sql,
        exact: true,
    }
}

/// `day` is the data's first day, `YYYY-MM-DD` (UTC); `trace` a trace
/// number that has both logs and spans.
pub(crate) fn suite(seed: u64, day: &str, trace: u64) -> Vec<Query> {
    let trace = hex(&trace_id(seed, trace));
    let hosts = (0..8)
        .map(|h| format!("'host_{h}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let max_all = crate::generate::CPU_FIELDS
        .iter()
        .map(|f| format!("max({f}) AS max_{f}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fields = crate::generate::CPU_FIELDS;
    let agg = |f: &str, n: usize| {
        fields[..n]
            .iter()
            .map(|c| format!("{f}({c}) AS {f}_{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let host_list = |n: usize| {
        (0..n)
            .map(|h| format!("'host_{}'", h * 7 % 100))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // TSBS single-groupby-M-H-T: the max of M fields per minute over H
    // hosts for T hours.
    let single_groupby = |name, m: usize, h: usize, hours: u32| {
        same(
            name,
            format!(
                "SELECT date_trunc('minute', time) AS minute, {} FROM cpu \
                 WHERE hostname IN ({}) AND time >= '{day}T{:02}:00:00Z' AND time < '{day}T{:02}:00:00Z' \
                 GROUP BY 1 ORDER BY 1",
                agg("max", m),
                host_list(h),
                10,
                10 + hours
            ),
        )
    };
    // TSBS double-groupby-N: the mean of N fields per host per hour over
    // 12 hours.
    let double_groupby = |name, n: usize| {
        same(
            name,
            format!(
                "SELECT date_trunc('hour', time) AS hour, hostname, {} FROM cpu \
                 WHERE time >= '{day}T00:00:00Z' AND time < '{day}T12:00:00Z' GROUP BY 1, 2 ORDER BY 1, 2",
                agg("avg", n)
            ),
        )
    };
    vec![
        same(
            "errors per service, last hour",
            format!(
                "SELECT service_name, count(*) AS errors FROM otel_logs \
                 WHERE severity_number >= 17 AND time >= '{day}T23:00:00Z' \
                 GROUP BY service_name ORDER BY service_name"
            ),
        ),
        same(
            "top services by errors, whole day",
            "SELECT service_name, count(*) AS errors FROM otel_logs WHERE severity_number >= 17 \
             GROUP BY service_name ORDER BY errors DESC, service_name LIMIT 5"
                .into(),
        ),
        Query {
            name: "p99 span duration per service",
            sextant: "SELECT service_name, approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99 \
                      FROM otel_traces GROUP BY service_name ORDER BY service_name"
                .into(),
            duckdb: "SELECT service_name, approx_quantile(duration_ns, 0.99) AS p99 \
                     FROM otel_traces GROUP BY service_name ORDER BY service_name"
                .into(),
            postgres: "SELECT service_name, percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99 \
                       FROM otel_traces GROUP BY service_name ORDER BY service_name"
                .into(),
            exact: false,
        },
        same(
            "logs whose body has a word",
            "SELECT count(*) FROM otel_logs WHERE body LIKE '%exhausted%'".into(),
        ),
        // A rare word: Sextant's token search (its index skips the row
        // groups without the word); the peers' fastest way to the same
        // answer (no other body has the word, even inside another).
        Query {
            name: "logs with a rare word",
            sextant: "SELECT count(*) FROM otel_logs WHERE matches_term(body, 'deadlock')".into(),
            duckdb: "SELECT count(*) FROM otel_logs WHERE body LIKE '%deadlock%'".into(),
            postgres: "SELECT count(*) FROM otel_logs WHERE body LIKE '%deadlock%'".into(),
            exact: true,
        },
        same(
            "logs and spans of one trace",
            format!(
                "SELECT time, 'log' AS kind, service_name, body AS what FROM otel_logs WHERE trace_id = '{trace}' \
                 UNION ALL SELECT time, 'span' AS kind, service_name, name AS what FROM otel_traces WHERE trace_id = '{trace}' \
                 ORDER BY time, kind"
            ),
        ),
        same(
            "slowest traces",
            "SELECT trace_id, max(duration_ns) AS longest FROM otel_traces \
             GROUP BY trace_id ORDER BY longest DESC, trace_id LIMIT 10"
                .into(),
        ),
        same(
            "hourly log histogram over the day",
            "SELECT date_trunc('hour', time) AS hour, count(*) AS n FROM otel_logs GROUP BY 1 ORDER BY 1"
                .into(),
        ),
        same(
            "TSBS cpu-max-all-8",
            format!(
                "SELECT date_trunc('hour', time) AS hour, hostname, {max_all} FROM cpu \
                 WHERE hostname IN ({hosts}) AND time >= '{day}T08:00:00Z' AND time < '{day}T16:00:00Z' \
                 GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
        same(
            "TSBS lastpoint",
            "SELECT DISTINCT ON (hostname) hostname, time, usage_user FROM cpu ORDER BY hostname, time DESC"
                .into(),
        ),
        same(
            "TSBS double-groupby-1",
            format!(
                "SELECT date_trunc('hour', time) AS hour, hostname, avg(usage_user) AS mean_usage_user FROM cpu \
                 WHERE time >= '{day}T00:00:00Z' AND time < '{day}T12:00:00Z' GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
        same(
            "TSBS high-cpu-all",
            "SELECT count(*) FROM cpu WHERE usage_user > 90.0".into(),
        ),
        single_groupby("TSBS single-groupby-1-1-1", 1, 1, 1),
        single_groupby("TSBS single-groupby-1-1-12", 1, 1, 12),
        single_groupby("TSBS single-groupby-1-8-1", 1, 8, 1),
        single_groupby("TSBS single-groupby-5-1-1", 5, 1, 1),
        single_groupby("TSBS single-groupby-5-1-12", 5, 1, 12),
        single_groupby("TSBS single-groupby-5-8-1", 5, 8, 1),
        double_groupby("TSBS double-groupby-5", 5),
        double_groupby("TSBS double-groupby-all", fields.len()),
        same(
            "TSBS cpu-max-all-1",
            format!(
                "SELECT date_trunc('hour', time) AS hour, {} FROM cpu \
                 WHERE hostname IN ({}) AND time >= '{day}T08:00:00Z' AND time < '{day}T16:00:00Z' \
                 GROUP BY 1 ORDER BY 1",
                agg("max", fields.len()),
                host_list(1)
            ),
        ),
        same(
            "TSBS high-cpu-1",
            format!(
                "SELECT time, hostname, {} FROM cpu \
                 WHERE usage_user > 90.0 AND hostname IN ({}) \
                 AND time >= '{day}T06:00:00Z' AND time < '{day}T18:00:00Z' ORDER BY time",
                fields.join(", "),
                host_list(1)
            ),
        ),
        same(
            "TSBS groupby-orderby-limit",
            format!(
                "SELECT date_trunc('minute', time) AS minute, max(usage_user) AS max_usage_user FROM cpu \
                 WHERE time < '{day}T18:00:00Z' GROUP BY 1 ORDER BY 1 DESC LIMIT 5"
            ),
        ),
    ]
}
