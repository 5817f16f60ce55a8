//! `--scenario promql`: PromQL on Sextant and on the real Prometheus 2.42
//! (issue #29), over the same samples, in the same run.
//!
//! 1. Data, seeded: TSBS-like series every 10 s for `--promql-hours` ending
//!    at the last whole 10 s: a counter `cpu_usage_seconds_total`
//!    (hostname, region, datacenter, mode; 10 modes per host) and a classic
//!    histogram `http_request_duration_seconds_bucket` (hostname, le; 10
//!    bounds, `+Inf` among them), `--promql-series` series each. Encoded
//!    before any clock starts.
//! 2. Loading: the same remote-write 1.0 bodies POSTed to both servers'
//!    `/api/v1/write`, one at a time and in time order (Prometheus's head
//!    takes a series' samples in time order only): each holds every
//!    series' samples for a block of consecutive steps. Sextant's tables are
//!    then flushed and compacted, and both servers left to finish their
//!    background work before anything is timed.
//! 3. Queries: three range queries over all but the first hour at a 60 s
//!    step, and one instant query at the end; on each server a first run
//!    (discarded), then `--runs` runs whose median is reported. Both answers
//!    must agree (same series, same timestamps, every value within 1e-9
//!    relative) or the run fails.
//! 4. Peak RSS (VmHWM) of both servers after loading and after the queries.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sextant_ingest::prometheus::{Label, Sample, TimeSeries, WriteRequest, encode_write_request};

use crate::servers::{Prometheus, Sextant, proc_stats};
use crate::{Args, median, mib, pg};

const COUNTER: &str = "cpu_usage_seconds_total";
const HISTOGRAM: &str = "http_request_duration_seconds_bucket";
const MODES: [&str; 10] = [
    "user",
    "system",
    "idle",
    "nice",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];
const BOUNDS: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
];
const STEP_MS: i64 = 10_000;

/// The queries: (expression, range query or instant query at the end).
const QUERIES: [(&str, bool); 4] = [
    ("rate(cpu_usage_seconds_total[5m])", true),
    ("sum by (mode) (rate(cpu_usage_seconds_total[5m]))", true),
    (
        "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
        true,
    ),
    (
        "sum by (hostname) (rate(cpu_usage_seconds_total[5m]))",
        false,
    ),
];

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

/// The label sets, sorted by name as Prometheus sends them: each host's
/// counter series, then each host's buckets.
fn label_sets(hosts: u32) -> Vec<Vec<Label>> {
    let mut out = vec![];
    for h in 0..hosts {
        for mode in MODES {
            // Region and datacenter as in `generate::cpu_tags`.
            out.push(vec![
                label("__name__", COUNTER),
                label("datacenter", &format!("eu-west-{}a", h % 3)),
                label("hostname", &format!("host_{h}")),
                label("mode", mode),
                label("region", &format!("eu-west-{}", h % 3)),
            ]);
        }
    }
    for h in 0..hosts {
        for le in BOUNDS {
            out.push(vec![
                label("__name__", HISTOGRAM),
                label("hostname", &format!("host_{h}")),
                label("le", le),
            ]);
        }
    }
    out
}

/// The remote-write bodies, in time order: each holds every series'
/// samples at `per_request` consecutive steps (the last body fewer). One
/// generator walks the steps in order, so the samples depend on the seed
/// alone, not on how they are cut into requests.
fn write_bodies(seed: u64, hosts: u32, start_ms: i64, steps: u64, per_request: u64) -> Vec<Bytes> {
    let labels = label_sets(hosts);
    let n = hosts as usize * 10;
    let mut rng = StdRng::seed_from_u64(seed);
    // Running totals: each counter series; each host's bucket counts, not
    // yet cumulative over `le`.
    let mut cpu = vec![0.0f64; n];
    let mut buckets = vec![0.0f64; n];
    let mut out = vec![];
    for first in (0..steps).step_by(per_request as usize) {
        let last = (first + per_request).min(steps);
        // Its other fields (metadata) stay empty.
        let mut request = WriteRequest::default();
        request.timeseries.extend(labels.iter().map(|l| TimeSeries {
            labels: l.clone(),
            samples: Vec::with_capacity((last - first) as usize),
            ..Default::default()
        }));
        let series = &mut request.timeseries;
        for step in first..last {
            let timestamp = start_ms + step as i64 * STEP_MS;
            for (k, total) in cpu.iter_mut().enumerate() {
                *total += rng.random_range(0.0..10.0);
                series[k].samples.push(Sample {
                    value: *total,
                    timestamp,
                });
            }
            for (h, counts) in buckets.chunks_mut(10).enumerate() {
                let mut cumulative = 0.0;
                for (b, count) in counts.iter_mut().enumerate() {
                    *count += rng.random_range(0..50u32) as f64;
                    cumulative += *count;
                    series[n + h * 10 + b].samples.push(Sample {
                        value: cumulative,
                        timestamp,
                    });
                }
            }
        }
        out.push(Bytes::from(encode_write_request(&request)));
    }
    out
}

/// POSTs the bodies to `url` one after the other; returns the seconds it
/// took. A progress line every tenth of the requests.
async fn load(
    client: &reqwest::Client,
    name: &str,
    url: &str,
    bodies: &[Bytes],
) -> Result<f64, String> {
    let t = Instant::now();
    let tenth = bodies.len().div_ceil(10).max(1);
    for (i, body) in bodies.iter().enumerate() {
        let r = client
            .post(url)
            .header("content-encoding", "snappy")
            .header("content-type", "application/x-protobuf")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| format!("{name}: {url}: {e}"))?;
        if !r.status().is_success() {
            let status = r.status();
            return Err(format!(
                "{name}: write {} of {}: {status}: {}",
                i + 1,
                bodies.len(),
                r.text().await.unwrap_or_default()
            ));
        }
        if (i + 1) % tenth == 0 || i + 1 == bodies.len() {
            eprintln!(
                "  {name}: {} of {} requests in {:.1} s",
                i + 1,
                bodies.len(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Waits (a minute at most) until `pid` uses less than 5% of a core over
/// a second: compaction and flushes a load started are over.
async fn settle(pid: u32) {
    for _ in 0..60 {
        let before = proc_stats(pid).cpu_s;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if proc_stats(pid).cpu_s - before < 0.05 {
            return;
        }
    }
}

/// An answer: each series (its labels, sorted, as text) and its points
/// (time, value).
type Answer = BTreeMap<String, Vec<(f64, f64)>>;

/// GET `url` with `params`; the milliseconds to the whole body, and the body.
async fn get(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
) -> Result<(f64, Bytes), String> {
    let t = Instant::now();
    let r = client
        .get(url)
        .query(params)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url} {params:?}: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok((t.elapsed().as_secs_f64() * 1e3, body))
}

fn parse(body: &[u8]) -> Result<Answer, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("not a success: {}", v["error"]));
    }
    let mut answer = Answer::new();
    for s in v["data"]["result"].as_array().ok_or("no data.result")? {
        let mut labels: Vec<String> = s["metric"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        // A range query's series have `values`, an instant query's `value`.
        let points = match s["values"].as_array() {
            Some(values) => values.iter().collect(),
            None => vec![&s["value"]],
        };
        let points = points
            .into_iter()
            .map(|p| {
                let t = p[0].as_f64();
                let v = p[1].as_str().and_then(|v| v.parse::<f64>().ok());
                t.zip(v)
                    .ok_or_else(|| format!("a point that is not [time, \"value\"]: {p}"))
            })
            .collect::<Result<_, _>>()?;
        answer.insert(labels.join(","), points);
    }
    Ok(answer)
}

/// How Sextant's answer differs from Prometheus's, if it does.
fn difference(sextant: &Answer, prometheus: &Answer) -> Option<String> {
    if sextant.len() != prometheus.len() {
        return Some(format!(
            "{} series, Prometheus {}",
            sextant.len(),
            prometheus.len()
        ));
    }
    let close = |a: f64, b: f64| {
        a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
    };
    for (labels, want) in prometheus {
        let Some(got) = sextant.get(labels) else {
            return Some(format!("no series {{{labels}}}"));
        };
        if got.len() != want.len() {
            return Some(format!(
                "{{{labels}}}: {} points, Prometheus {}",
                got.len(),
                want.len()
            ));
        }
        for (&(t, v), &(pt, pv)) in got.iter().zip(want) {
            if t != pt || !close(v, pv) {
                return Some(format!("{{{labels}}}: ({t}, {v}), Prometheus ({pt}, {pv})"));
            }
        }
    }
    None
}

/// One discarded run, then `runs`: the median milliseconds and the first
/// run's answer.
async fn time_query(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
    runs: usize,
) -> Result<(f64, Answer), String> {
    let answer = parse(&get(client, url, params).await?.1).map_err(|e| format!("{url}: {e}"))?;
    let mut ms = vec![];
    for _ in 0..runs.max(1) {
        ms.push(get(client, url, params).await?.0);
    }
    Ok((median(ms), answer))
}

pub(crate) async fn run(a: &Args, bin: &Path, work: &Path) -> Result<String, String> {
    if a.promql_hours < 2 {
        return Err("--promql-hours must be at least 2 (the queries skip the first hour)".into());
    }
    let hosts = (a.promql_series / 10).max(1);
    let series = hosts as u64 * 10;
    let steps = a.promql_hours as u64 * 3600 * 1000 / STEP_MS as u64;
    // Steps a request: 30 minutes, fewer when that would pass about
    // 400,000 samples (a body well under Sextant's --max-body-size).
    let per_request = (400_000 / (2 * series)).clamp(1, 180);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as i64;
    let end_ms = now_ms / STEP_MS * STEP_MS;
    let start_ms = end_ms - (steps as i64 - 1) * STEP_MS;
    let samples = 2 * series * steps;
    eprintln!(
        "promql: encoding {samples} samples of {} series ...",
        2 * series
    );
    let bodies = write_bodies(a.seed, hosts, start_ms, steps, per_request);
    let requests = bodies.len();
    let mb = bodies.iter().map(|b| b.len()).sum::<usize>() as f64 / 1e6;

    let version = std::process::Command::new(&a.prometheus_bin)
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .map_err(|e| {
            format!(
                "{}: {e} (apt-get install prometheus, or pass --prometheus-bin)",
                a.prometheus_bin.display()
            )
        })?;
    let sx = Sextant::start(bin, &work.join("promql-sextant"), &[])?;
    let prom = Prometheus::start(&a.prometheus_bin, &work.join("promql-prometheus"))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let sx_url = format!("http://{}", sx.http);
    eprintln!(
        "promql: loading {requests} requests ({mb:.0} MB) into Sextant, then into Prometheus ({version})"
    );
    let sx_load = load(
        &client,
        "Sextant",
        &format!("{sx_url}/api/v1/write"),
        &bodies,
    )
    .await?;
    let prom_load = load(
        &client,
        "Prometheus",
        &format!("{}/api/v1/write", prom.url),
        &bodies,
    )
    .await?;
    drop(bodies);
    let loaded = (
        proc_stats(sx.pid()).peak_rss,
        proc_stats(prom.pid()).peak_rss,
    );
    pg(&sx.pg_config())
        .await?
        .batch_execute(&format!(
            "FLUSH TABLE {COUNTER}, {HISTOGRAM}; COMPACT TABLE {COUNTER}; COMPACT TABLE {HISTOGRAM}"
        ))
        .await
        .map_err(|e| format!("flush and compact: {e}"))?;
    settle(sx.pid()).await;
    settle(prom.pid()).await;

    let (start_s, end_s) = (start_ms / 1000 + 3600, end_ms / 1000);
    let mut rows = vec![];
    for (expr, range) in QUERIES {
        let (path, params) = if range {
            let params = vec![
                ("query", expr.to_string()),
                ("start", start_s.to_string()),
                ("end", end_s.to_string()),
                ("step", "60".to_string()),
            ];
            ("/api/v1/query_range", params)
        } else {
            let params = vec![("query", expr.to_string()), ("time", end_s.to_string())];
            ("/api/v1/query", params)
        };
        eprintln!("promql: {expr}");
        let (sx_ms, sx_answer) =
            time_query(&client, &format!("{sx_url}{path}"), &params, a.runs).await?;
        let (prom_ms, prom_answer) =
            time_query(&client, &format!("{}{path}", prom.url), &params, a.runs).await?;
        if prom_answer.is_empty() {
            return Err(format!("{expr}: Prometheus answers no series"));
        }
        if let Some(d) = difference(&sx_answer, &prom_answer) {
            return Err(format!("{expr}: the answers differ: {d}"));
        }
        let points: usize = prom_answer.values().map(Vec::len).sum();
        eprintln!(
            "  {} series, {points} points: Sextant {sx_ms:.1} ms, Prometheus {prom_ms:.1} ms",
            prom_answer.len()
        );
        rows.push((expr, range, sx_ms, prom_ms));
    }
    let queried = (
        proc_stats(sx.pid()).peak_rss,
        proc_stats(prom.pid()).peak_rss,
    );

    let mut report = String::new();
    let _ = writeln!(
        report,
        "### PromQL against Prometheus\n\n{series} series of the counter `{COUNTER}` and {series} of the histogram `{HISTOGRAM}` ({hosts} hosts), a sample every 10 s for {} h: {samples} samples, sent to Sextant and to Prometheus ({version}) as the same {requests} remote-write requests ({mb:.0} MB, each with {} s of every series), one at a time, in time order; then Sextant's tables were flushed and compacted. Range queries from the second hour to the end at a 60 s step, the instant query at the end. Milliseconds to the whole JSON answer, the median of {} runs after a discarded first run; ratio = Sextant / Prometheus (below 1: Sextant faster). Both servers' answers agree (same series, every value within 1e-9 relative).\n",
        a.promql_hours,
        per_request * 10,
        a.runs.max(1),
    );
    let _ = writeln!(
        report,
        "| query | Sextant ms | Prometheus ms | ratio |\n| --- | ---: | ---: | ---: |"
    );
    for (expr, range, sx_ms, prom_ms) in rows {
        let _ = writeln!(
            report,
            "| `{expr}`{} | {sx_ms:.1} | {prom_ms:.1} | {:.2}x |",
            if range { "" } else { " (instant)" },
            sx_ms / prom_ms
        );
    }
    let _ = writeln!(
        report,
        "\nLoad: Sextant {sx_load:.1} s ({:.0} samples/s), Prometheus {prom_load:.1} s ({:.0} samples/s).",
        samples as f64 / sx_load,
        samples as f64 / prom_load
    );
    let _ = writeln!(
        report,
        "Peak RSS (VmHWM) after loading: Sextant {}, Prometheus {}; after the queries: Sextant {}, Prometheus {}.",
        mib(loaded.0),
        mib(loaded.1),
        mib(queried.0),
        mib(queried.1)
    );
    Ok(report)
}
