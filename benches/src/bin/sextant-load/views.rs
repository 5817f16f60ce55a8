//! `--scenario views`: what materialized views cost and what they buy.
//!
//! 1. Ingest cost: the day of TSBS `cpu-only` rows over line protocol into
//!    a fresh server whose `cpu` table has 0, 1 and 5 aggregating views
//!    (created before the rows arrive), each run on its own data directory;
//!    reported as rows/s and the ratio to no views, plus how long the views
//!    took to catch up once the last row was acknowledged.
//! 2. What they buy: 30 days of readings from `--views-dashboard-hosts`
//!    hosts every 10 seconds, and the dashboard panel "hourly average and
//!    peak of usage_user per host over 30 days" run cold and hot on the base
//!    table, on a 1-minute view (re-binned to hours) and on a 1-hour view.
//!    The answers are compared before any time is reported.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::generate;
use crate::ingest::{self, Target};
use crate::servers::Sextant;
use crate::{Args, DAY_START_NS, bodies, clone_body, cpu_ddl, encode, median, pg, timed};

/// The views of the ingest runs, in the order they are added.
const VIEWS: [(&str, &str); 5] = [
    (
        "cpu_1m",
        "SELECT date_bin(INTERVAL '1 minute', time) AS time, hostname, avg(usage_user) AS avg, \
         max(usage_user) AS max, count(*) AS n FROM cpu GROUP BY 1, 2",
    ),
    (
        "cpu_5m",
        "SELECT date_bin(INTERVAL '5 minutes', time) AS time, hostname, avg(usage_system) AS avg, \
         min(usage_idle) AS idle FROM cpu GROUP BY 1, 2",
    ),
    (
        "cpu_1h_p95",
        "SELECT date_bin(INTERVAL '1 hour', time) AS time, hostname, \
         approx_percentile_cont(usage_user, 0.95) AS p95, max(usage_user) AS max FROM cpu GROUP BY 1, 2",
    ),
    (
        "cpu_region_10s",
        "SELECT date_bin(INTERVAL '10 seconds', time) AS time, region, avg(usage_user) AS avg, \
         count(*) AS n FROM cpu GROUP BY 1, 2",
    ),
    (
        "cpu_fleet_1m",
        "SELECT date_bin(INTERVAL '1 minute', time) AS time, count(*) AS n, \
         count(DISTINCT hostname) AS hosts, avg(usage_user) AS avg FROM cpu GROUP BY 1",
    ),
];

/// Line protocol writes to `sx`.
pub(crate) fn line_protocol(sx: &Sextant) -> Target {
    Target::Http {
        url: format!(
            "http://{}/api/v2/write?bucket=b&org=o&precision=ns",
            sx.http
        ),
        content_type: "text/plain",
    }
}

async fn create(config: &str, views: &[(&str, &str)]) -> Result<(), String> {
    let c = pg(config).await?;
    c.batch_execute(&format!(
        "CREATE TABLE cpu ({})",
        cpu_ddl("TIMESTAMP NOT NULL", "TEXT", "DOUBLE")
    ))
    .await
    .map_err(|e| e.to_string())?;
    for (name, query) in views {
        c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .map_err(|e| format!("CREATE MATERIALIZED VIEW {name}: {e}"))?;
    }
    Ok(())
}

/// Waits until every view is current; returns how long that took.
async fn catch_up(config: &str) -> Result<f64, String> {
    let c = pg(config).await?;
    let t = Instant::now();
    loop {
        let rows = c
            .simple_query("SELECT count(*) FROM system.materialized_views WHERE state <> 'current'")
            .await
            .map_err(|e| e.to_string())?;
        let waiting = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        if waiting.as_deref() == Some("0") {
            return Ok(t.elapsed().as_secs_f64());
        }
        if t.elapsed() > Duration::from_secs(1800) {
            return Err("views did not catch up in 30 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(config: &str, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let c = pg(config).await?;
    Ok(c.simple_query(sql)
        .await
        .map_err(|e| format!("{e}: {sql}"))?
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

pub(crate) async fn run(a: &Args, bin: &Path, work: &Path) -> Result<String, String> {
    let mut report = String::new();
    let rows = a.hosts as u64 * 8_640;
    eprintln!("views: encoding {rows} cpu rows ...");
    let cpu_line = bodies(
        rows,
        a.batch,
        |i| generate::cpu(a.seed, DAY_START_NS, a.hosts, i),
        encode::line_protocol,
        encode::ndjson_cpu,
    );
    let _ = writeln!(
        report,
        "### Ingest with materialized views\n\n{rows} TSBS cpu-only rows ({} hosts, one day) over line protocol, batches of {}, {} clients; each run on a fresh server whose `cpu` table has the views before the first row; medians of three rounds, the configurations alternating.\n",
        a.hosts, a.batch, a.concurrency
    );
    let _ = writeln!(
        report,
        "| views | rows/s | vs no views | p99 ms | server cores | peak RSS MiB | views current after |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    // Three rounds, the configurations alternating, so that warm-up and
    // page cache favour none of them; the median of each is reported.
    let mut results: Vec<(usize, Vec<crate::ingest::Outcome>, Vec<f64>)> = [0usize, 1, 5]
        .into_iter()
        .map(|n| (n, vec![], vec![]))
        .collect();
    for round in 1..=3 {
        for (n, outcomes, lags) in results.iter_mut() {
            let n = *n;
            let dir = work.join(format!("views-{n}-{round}"));
            let sx = Sextant::start(bin, &dir, &[])?;
            create(&sx.pg_config(), &VIEWS[..n]).await?;
            let target = line_protocol(&sx);
            let label = format!("cpu, line protocol, {n} views, round {round}");
            eprintln!("views: ingest {label}");
            let o = ingest::run(
                &label,
                target,
                cpu_line.iter().map(clone_body).collect(),
                a.concurrency,
                sx.pid(),
                a.perf_dir.as_deref(),
            )
            .await?;
            if o.errors > 0 {
                return Err(format!("{label}: {} requests failed", o.errors));
            }
            let lag = catch_up(&sx.pg_config()).await?;
            if n > 0 {
                // The 1-minute view counts every row once.
                let got = text(&sx.pg_config(), "SELECT sum(n) FROM cpu_1m").await?;
                if got[0][0] != rows.to_string() {
                    return Err(format!(
                        "cpu_1m counts {} rows, {rows} were written",
                        got[0][0]
                    ));
                }
            }
            eprintln!(
                "  {:.0} rows/s; views current {lag:.1} s after the last ack",
                o.rows_per_s()
            );
            outcomes.push(o);
            lags.push(lag);
            drop(sx);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let mut base_rate = None;
    for (n, outcomes, lags) in results {
        let pick =
            |f: &dyn Fn(&crate::ingest::Outcome) -> f64| median(outcomes.iter().map(f).collect());
        let rate = pick(&|o| o.rows_per_s());
        let base = *base_rate.get_or_insert(rate);
        let _ = writeln!(
            report,
            "| {n} | {:.0} | {:.2}x | {:.1} | {:.2} | {:.0} | {} |",
            rate,
            rate / base,
            pick(&|o| o.p99_ms),
            pick(&|o| o.server_cores),
            pick(&|o| (o.peak_rss >> 20) as f64),
            if n == 0 {
                "-".to_string()
            } else {
                format!("{:.1} s", median(lags))
            }
        );
    }

    // --- A 30-day dashboard panel --------------------------------------------
    let hosts = a.views_dashboard_hosts;
    let days = 30u64;
    let n = hosts as u64 * 8_640 * days;
    let start_ns = DAY_START_NS - (days as i64 - 1) * crate::DAY_NS;
    eprintln!("views: encoding {n} cpu rows over {days} days ...");
    let month = bodies(
        n,
        a.batch,
        |i| generate::cpu(a.seed, start_ns, hosts, i),
        encode::line_protocol,
        encode::ndjson_cpu,
    );
    let dir = work.join("views-30d");
    let sx = Sextant::start(bin, &dir, &[])?;
    let config = sx.pg_config();
    create(
        &config,
        &[
            VIEWS[0],
            (
                "cpu_1h",
                "SELECT date_bin(INTERVAL '1 hour', time) AS time, hostname, avg(usage_user) AS avg, \
                 max(usage_user) AS max FROM cpu GROUP BY 1, 2",
            ),
        ],
    )
    .await?;
    let target = line_protocol(&sx);
    let o = ingest::run("cpu, 30 days", target, month, a.concurrency, sx.pid(), None).await?;
    let lag = catch_up(&config).await?;
    let c = pg(&config).await?;
    c.batch_execute("FLUSH TABLE cpu, cpu_1m, cpu_1h")
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "  {n} rows in {:.1} s; views current {lag:.1} s later",
        o.seconds
    );
    let ts = |ns: i64| {
        chrono::DateTime::from_timestamp_nanos(ns)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let range = format!(
        "time >= '{}' AND time < '{}'",
        ts(start_ns),
        ts(start_ns + days as i64 * crate::DAY_NS)
    );
    let panels = [
        (
            "base table `cpu`",
            format!(
                "SELECT date_bin(INTERVAL '1 hour', time) AS time, hostname, avg(usage_user) AS avg, \
                 max(usage_user) AS max FROM cpu WHERE {range} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
        (
            "1-minute view `cpu_1m`, re-binned",
            format!(
                "SELECT date_bin(INTERVAL '1 hour', time) AS time, hostname, sum(avg * n) / sum(n) AS avg, \
                 max(max) AS max FROM cpu_1m WHERE {range} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
        (
            "1-hour view `cpu_1h`",
            format!("SELECT time, hostname, avg, max FROM cpu_1h WHERE {range} ORDER BY 1, 2"),
        ),
    ];
    // Same answer everywhere (averages to 9 significant digits).
    let round = |rows: Vec<Vec<String>>| -> Vec<Vec<String>> {
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| match v.parse::<f64>() {
                        Ok(f) => format!("{f:.6e}"),
                        Err(_) => v,
                    })
                    .collect()
            })
            .collect()
    };
    let truth = round(text(&config, &panels[0].1).await?);
    for (name, sql) in &panels[1..] {
        if round(text(&config, sql).await?) != truth {
            return Err(format!(
                "the panel on {name} differs from the panel on the base table"
            ));
        }
    }
    let _ = writeln!(
        report,
        "\n### A 30-day dashboard panel\n\n{n} rows ({hosts} hosts every 10 s for {days} days, ingested at {:.0} rows/s with both views; the views were current {lag:.1} s after the last ack). Panel: hourly average and peak of `usage_user` per host over the 30 days ({} rows). Cold is the first run after the server started this data set's queries; hot the median of {}.\n",
        o.rows_per_s(),
        truth.len(),
        a.runs
    );
    let _ = writeln!(
        report,
        "| panel on | cold ms | hot ms | vs base (hot) |\n| --- | ---: | ---: | ---: |"
    );
    let mut base_hot = None;
    for (name, sql) in &panels {
        let (cold, _) = timed(&c, sql).await?;
        let mut hot = vec![];
        for _ in 0..a.runs {
            hot.push(timed(&c, sql).await?.0);
        }
        let hot = median(hot);
        let base = *base_hot.get_or_insert(hot);
        let _ = writeln!(
            report,
            "| {name} | {cold:.1} | {hot:.1} | {:.1}x faster |",
            base / hot
        );
        eprintln!("  {name}: cold {cold:.1} ms, hot {hot:.1} ms");
    }
    Ok(report)
}
