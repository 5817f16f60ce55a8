//! `--scenario overload`: what Sextant does when writers send more than it
//! can take (#28). One server with the flags of `--sextant-arg` (defaults
//! otherwise), an append-only `cpu` table made in SQL (so every
//! acknowledged row counts once, however often a body is sent) and
//! `otel_logs`:
//!
//! 1. **sustainable**: `--concurrency` clients send back to back for 30 s,
//!    alternating TSBS cpu rows over line protocol and logs over OTLP/HTTP;
//!    the accepted rate is the sustainable rate;
//! 2. **overload**: requests are started at `--overload-factor` times that
//!    rate, each on its own, for `--overload-seconds`, with at most
//!    `--overload-clients` in flight (a request that would exceed it is not
//!    sent and is counted as held back by the clients); refusals (429, 503)
//!    are counted and not retried. Meanwhile a pgwire client counts the rows
//!    twice a second, and the server's RSS is sampled every 100 ms;
//! 3. **nothing lost**: once the last request has an answer, the rows in
//!    each table must equal the acknowledged rows (plus at most the rows of
//!    requests without an answer); then the server is killed (SIGKILL),
//!    started again, and counted again.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ingest::{Body, Target};
use crate::servers::{Sextant, proc_stats};
use crate::views::line_protocol;
use crate::{Args, DAY_START_NS, bodies, clone_body, cpu_ddl, encode, generate, pg};

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    held_back: AtomicU64,
    acked_requests: AtomicU64,
    acked_cpu: AtomicU64,
    acked_logs: AtomicU64,
    /// 429 and 503: refused, retryable, nothing written.
    refused: AtomicU64,
    /// Any other answer, or none (a transport error): the rows may or may
    /// not be written.
    failed: AtomicU64,
    failed_rows: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
    latencies_ms: std::sync::Mutex<Vec<f64>>,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

async fn count(config: &str, table: &str) -> Result<u64, String> {
    let c = pg(config).await?;
    let rows = c
        .simple_query(&format!("SELECT count(*) FROM {table}"))
        .await
        .map_err(|e| format!("count {table}: {e}"))?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| format!("count {table}: no row"))
}

pub(crate) async fn run(a: &Args, bin: &Path, work: &Path) -> Result<String, String> {
    let cpu_rows = a.hosts as u64 * 8_640;
    let log_rows = a.logs.min(200_000);
    eprintln!("overload: encoding {cpu_rows} cpu rows and {log_rows} logs ...");
    let cpu_line = bodies(
        cpu_rows,
        a.batch,
        |i| generate::cpu(a.seed, DAY_START_NS, a.hosts, i),
        encode::line_protocol,
        encode::ndjson_cpu,
    );
    let w = generate::Window {
        start_ns: DAY_START_NS,
        span_ns: crate::DAY_NS,
    };
    let logs_otlp = bodies(
        log_rows,
        a.batch,
        |i| generate::log(a.seed, &w, i, log_rows),
        encode::otlp_logs_bytes,
        encode::ndjson_log,
    );

    let dir = work.join("overload");
    let _ = std::fs::remove_dir_all(&dir);
    let sx = Sextant::start(bin, &dir, &a.sextant_arg)?;
    let config = sx.pg_config();
    pg(&config)
        .await?
        .batch_execute(&format!(
            "CREATE TABLE cpu ({})",
            cpu_ddl("TIMESTAMP NOT NULL", "TEXT", "DOUBLE")
        ))
        .await
        .map_err(|e| e.to_string())?;
    let lp = line_protocol(&sx);
    let otlp = Target::Http {
        url: format!("http://{}/v1/logs", sx.http),
        content_type: "application/x-protobuf",
    };
    // Alternating bodies of both kinds: (is it cpu, body).
    let mixed: Vec<(bool, Body)> = {
        let mut out = vec![];
        let n = cpu_line.len().max(logs_otlp.len());
        for i in 0..n {
            out.push((true, clone_body(&cpu_line[i % cpu_line.len()])));
            out.push((false, clone_body(&logs_otlp[i % logs_otlp.len()])));
        }
        out
    };
    let mixed = Arc::new(mixed);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(a.overload_clients)
        .build()
        .map_err(|e| e.to_string())?;

    // 1. The sustainable rate: closed-loop clients, back to back.
    eprintln!(
        "overload: sustainable rate, {} clients, 30 s",
        a.concurrency
    );
    let steady = Arc::new(Tally::default());
    let next = Arc::new(AtomicUsize::new(0));
    let before = proc_stats(sx.pid());
    let started = Instant::now();
    let until = started + Duration::from_secs(30);
    let mut tasks = vec![];
    for _ in 0..a.concurrency {
        let (mixed, next, tally, client, lp, otlp) = (
            mixed.clone(),
            next.clone(),
            steady.clone(),
            client.clone(),
            lp.clone(),
            otlp.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let i = next.fetch_add(1, Ordering::Relaxed) % mixed.len();
                send(&client, &lp, &otlp, &mixed[i], &tally).await;
            }
        }));
    }
    let mut steady_peak = before.rss;
    while !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        steady_peak = steady_peak.max(proc_stats(sx.pid()).rss);
    }
    let steady_s = started.elapsed().as_secs_f64();
    let steady_cores = (proc_stats(sx.pid()).cpu_s - before.cpu_s) / steady_s;
    let steady_rows =
        steady.acked_cpu.load(Ordering::Relaxed) + steady.acked_logs.load(Ordering::Relaxed);
    let steady_requests = steady.acked_requests.load(Ordering::Relaxed);
    let request_rate = steady_requests as f64 / steady_s;
    if request_rate <= 0.0 {
        return Err(format!(
            "no request was acknowledged in the sustainable phase; the first failure: {:?}",
            steady.first_failure.lock().unwrap()
        ));
    }

    // 2. Overload: open loop at factor x the sustainable request rate.
    let offered_rate = request_rate * a.overload_factor;
    eprintln!(
        "overload: {:.0} requests/s sustainable ({:.0} rows/s); offering {:.0} requests/s for {} s, at most {} in flight",
        request_rate,
        steady_rows as f64 / steady_s,
        offered_rate,
        a.overload_seconds,
        a.overload_clients
    );
    let tally = Arc::new(Tally::default());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let probe_ms = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let probe_failures = Arc::new(AtomicU64::new(0));
    let probe_first = Arc::new(std::sync::Mutex::new(None::<String>));
    let stop_probe = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (config, probe_ms, probe_failures, probe_first, stop) = (
            config.clone(),
            probe_ms.clone(),
            probe_failures.clone(),
            probe_first.clone(),
            stop_probe.clone(),
        );
        tokio::spawn(async move {
            let c = match pg(&config).await {
                Ok(c) => c,
                Err(e) => {
                    probe_failures.fetch_add(1, Ordering::Relaxed);
                    *probe_first.lock().unwrap() = Some(e);
                    return;
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match c.simple_query("SELECT count(*) FROM cpu").await {
                    Ok(_) => probe_ms
                        .lock()
                        .unwrap()
                        .push(t.elapsed().as_secs_f64() * 1e3),
                    Err(e) => {
                        probe_failures.fetch_add(1, Ordering::Relaxed);
                        probe_first.lock().unwrap().get_or_insert(e.to_string());
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let before = proc_stats(sx.pid());
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / offered_rate);
    let end = started + Duration::from_secs(a.overload_seconds);
    let mut peak_rss = before.rss;
    let mut last_sample = Instant::now();
    let mut last_print = Instant::now();
    let mut due = started;
    let mut i = 0usize;
    let mut rss_series: Vec<(f64, u64)> = vec![];
    // Peaks of the server's own gauges, once a second: allocated, write
    // buffer (with persistence's and compaction's working memory not
    // included), writes in flight.
    let mut peaks = [0u64; 5];
    while Instant::now() < end {
        let now = Instant::now();
        while due <= now {
            due += interval;
            if in_flight.load(Ordering::Relaxed) >= a.overload_clients {
                tally.held_back.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (mixed, tally, client, lp, otlp, in_flight) = (
                mixed.clone(),
                tally.clone(),
                client.clone(),
                lp.clone(),
                otlp.clone(),
                in_flight.clone(),
            );
            let k = i % mixed.len();
            i += 1;
            tokio::spawn(async move {
                send(&client, &lp, &otlp, &mixed[k], &tally).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        if last_sample.elapsed() >= Duration::from_millis(100) {
            last_sample = Instant::now();
            let st = proc_stats(sx.pid());
            peak_rss = peak_rss.max(st.rss);
            rss_series.push((started.elapsed().as_secs_f64(), st.rss));
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            if let Some(m) = gauges(&client, &sx.http).await {
                for (peak, now) in peaks.iter_mut().zip(m) {
                    *peak = (*peak).max(now);
                }
            }
            let st = proc_stats(sx.pid());
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\r  overload {:>4.0} s: {} sent, {} acked, {} refused, {} failed, {} held back, {} in flight; server {} MiB (peak {} MiB)   ",
                secs,
                tally.sent.load(Ordering::Relaxed),
                tally.acked_requests.load(Ordering::Relaxed),
                tally.refused.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
                tally.held_back.load(Ordering::Relaxed),
                in_flight.load(Ordering::Relaxed),
                st.rss >> 20,
                peak_rss >> 20,
            );
        }
        tokio::time::sleep(interval.min(Duration::from_millis(5))).await;
    }
    let offered_s = started.elapsed().as_secs_f64();
    eprintln!("\n  overload: waiting for the requests in flight");
    while in_flight.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_rss = peak_rss.max(proc_stats(sx.pid()).rss);
    }
    let drained_s = started.elapsed().as_secs_f64();
    stop_probe.store(true, Ordering::Relaxed);
    let _ = probe.await;
    let after = proc_stats(sx.pid());
    peak_rss = peak_rss.max(after.rss);
    let cores = (after.cpu_s - before.cpu_s) / drained_s;

    // 3. Nothing acknowledged lost, before and after kill -9.
    let acked_cpu =
        steady.acked_cpu.load(Ordering::Relaxed) + tally.acked_cpu.load(Ordering::Relaxed);
    let acked_logs =
        steady.acked_logs.load(Ordering::Relaxed) + tally.acked_logs.load(Ordering::Relaxed);
    let doubt =
        steady.failed_rows.load(Ordering::Relaxed) + tally.failed_rows.load(Ordering::Relaxed);
    let check = |label: &str, cpu: u64, logs: u64| -> Result<String, String> {
        let ok = cpu >= acked_cpu
            && logs >= acked_logs
            && (cpu - acked_cpu) + (logs - acked_logs) <= doubt;
        let line = format!(
            "{label}: cpu {cpu} rows (acknowledged {acked_cpu}), otel_logs {logs} rows (acknowledged {acked_logs}), {doubt} rows in doubt: {}",
            if ok { "nothing lost" } else { "MISMATCH" }
        );
        eprintln!("  {line}");
        if ok { Ok(line) } else { Err(line) }
    };
    let live = check(
        "after the overload",
        count(&config, "cpu").await?,
        count(&config, "otel_logs").await?,
    )?;
    let sx = sx.kill_and_start()?;
    let config = sx.pg_config();
    let restarted = check(
        "after kill -9 and restart",
        count(&config, "cpu").await?,
        count(&config, "otel_logs").await?,
    )?;
    drop(sx);

    let sent = tally.sent.load(Ordering::Relaxed);
    let acked = tally.acked_requests.load(Ordering::Relaxed);
    let refused = tally.refused.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let held = tally.held_back.load(Ordering::Relaxed);
    let mut lat = tally.latencies_ms.lock().unwrap().clone();
    let mut probes = probe_ms.lock().unwrap().clone();
    let share = |n: u64| n as f64 * 100.0 / sent.max(1) as f64;
    let flags = if a.sextant_arg.is_empty() {
        "defaults".to_string()
    } else {
        a.sextant_arg.join(" ")
    };
    let mut r = String::new();
    let _ = writeln!(
        r,
        "### Overload: {}x the sustainable ingest rate for {} s (server flags: {flags})\n",
        a.overload_factor, a.overload_seconds
    );
    let _ = writeln!(
        r,
        "Bodies of {} rows, alternating TSBS cpu rows over line protocol (into an append-only table) and logs over OTLP/HTTP protobuf.\n",
        a.batch
    );
    let _ = writeln!(
        r,
        "| phase | requests/s offered | requests sent | acknowledged | rows/s acknowledged | refused (429/503) | other failures | held back by the clients | p50 / p99 ack | server CPU | server peak RSS |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut steady_lat = steady.latencies_ms.lock().unwrap().clone();
    let _ = writeln!(
        r,
        "| sustainable ({} clients, closed loop, 30 s) | – | {} | {} | {:.0} | {} | {} | – | {:.0} / {:.0} ms | {:.2} cores | {} MiB |",
        a.concurrency,
        steady.sent.load(Ordering::Relaxed),
        steady_requests,
        steady_rows as f64 / steady_s,
        steady.refused.load(Ordering::Relaxed),
        steady.failed.load(Ordering::Relaxed),
        pct(&mut steady_lat, 0.5),
        pct(&mut steady_lat, 0.99),
        steady_cores,
        steady_peak >> 20
    );
    let overload_rows =
        tally.acked_cpu.load(Ordering::Relaxed) + tally.acked_logs.load(Ordering::Relaxed);
    let _ = writeln!(
        r,
        "| overload (open loop, up to {} in flight, {:.0} s + {:.0} s to drain) | {:.0} | {sent} | {acked} ({:.1}%) | {:.0} | {refused} ({:.1}%) | {failed} ({:.1}%) | {held} | {:.0} / {:.0} ms | {:.2} cores | {} MiB |",
        a.overload_clients,
        offered_s,
        drained_s - offered_s,
        offered_rate,
        share(acked),
        overload_rows as f64 / drained_s,
        share(refused),
        share(failed),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        cores,
        peak_rss >> 20
    );
    let _ = writeln!(
        r,
        "\nQueries during the overload (`SELECT count(*) FROM cpu` twice a second): {} answered, p50 {:.0} ms, p99 {:.0} ms, slowest {:.0} ms; {} failed{}.\n",
        probes.len(),
        pct(&mut probes, 0.5),
        pct(&mut probes, 0.99),
        probes.iter().cloned().fold(0.0, f64::max),
        probe_failures.load(Ordering::Relaxed),
        probe_first
            .lock()
            .unwrap()
            .as_ref()
            .map_or(String::new(), |e| format!(" (the first: {e})"))
    );
    if let Some(e) = tally.first_failure.lock().unwrap().as_ref() {
        let _ = writeln!(r, "The first failure other than a refusal: {e}\n");
    }
    let _ = writeln!(
        r,
        "Peaks of the server's gauges (sampled once a second): `sextant_memory_allocated_bytes` {} MiB, `sextant_buffer_bytes` {} MiB, `sextant_buffer_work_bytes` {} MiB, `sextant_ingest_inflight_bytes` {} MiB; the three limited ones together at most {} MiB.\n",
        peaks[0] >> 20,
        peaks[1] >> 20,
        peaks[3] >> 20,
        peaks[2] >> 20,
        peaks[4] >> 20
    );
    let _ = writeln!(r, "- {live}\n- {restarted}\n");
    // The RSS over time, in 10 s steps, to show it levels off.
    let _ = write!(r, "Server RSS (MiB) every 10 s of the overload:");
    let mut next_mark = 0.0;
    for (t, rss) in &rss_series {
        if *t >= next_mark {
            let _ = write!(r, " {}", rss >> 20);
            next_mark += 10.0;
        }
    }
    r.push_str("\n\n");
    Ok(r)
}

/// Sends one body, and files its answer in `tally`.
async fn send(
    client: &reqwest::Client,
    lp: &Target,
    otlp: &Target,
    (is_cpu, body): &(bool, Body),
    tally: &Tally,
) {
    let target = if *is_cpu { lp } else { otlp };
    let Target::Http { url, content_type } = target else {
        unreachable!("HTTP targets")
    };
    tally.sent.fetch_add(1, Ordering::Relaxed);
    let t = Instant::now();
    let answer = client
        .post(url)
        .header("content-type", *content_type)
        .body(body.bytes.clone())
        .send()
        .await;
    let failure = match answer {
        Ok(r) if r.status().is_success() => {
            tally
                .latencies_ms
                .lock()
                .unwrap()
                .push(t.elapsed().as_secs_f64() * 1e3);
            tally.acked_requests.fetch_add(1, Ordering::Relaxed);
            let acked = if *is_cpu {
                &tally.acked_cpu
            } else {
                &tally.acked_logs
            };
            acked.fetch_add(body.rows, Ordering::Relaxed);
            return;
        }
        Ok(r) if r.status().as_u16() == 429 || r.status().as_u16() == 503 => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok(r) => {
            let status = r.status();
            format!("{status}: {}", r.text().await.unwrap_or_default())
        }
        Err(e) => e.to_string(),
    };
    tally.failed.fetch_add(1, Ordering::Relaxed);
    tally.failed_rows.fetch_add(body.rows, Ordering::Relaxed);
    tally.first_failure.lock().unwrap().get_or_insert(failure);
}

/// The server's allocated bytes, write-buffer bytes, bytes in flight,
/// bytes persistence and compaction hold, and the last three together,
/// from `/metrics`.
async fn gauges(client: &reqwest::Client, http: &str) -> Option<[u64; 5]> {
    let text = client
        .get(format!("http://{http}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let read = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let limited = [
        read("sextant_buffer_bytes "),
        read("sextant_ingest_inflight_bytes "),
        read("sextant_buffer_work_bytes "),
    ];
    Some([
        read("sextant_memory_allocated_bytes "),
        limited[0],
        limited[1],
        limited[2],
        limited.iter().sum(),
    ])
}
