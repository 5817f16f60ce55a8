//! `--scenario overhead`: what Sextant's self-observability (#10) costs on
//! ingest.
//!
//! The same ingest runs (logs over OTLP/HTTP protobuf, TSBS `cpu-only`
//! rows over line protocol) against three servers, each on a fresh data
//! directory:
//!
//! - **off**: `--baseline-bin`, a release build of the commit before the
//!   instrumentation (no metrics, no statement registry, no spans);
//! - **on**: this build with its defaults (metrics, spans, system.queries);
//! - **on + self-telemetry**: this build with `--self-telemetry`, writing
//!   its own spans, logs and metric samples into its own tables.
//!
//! Five rounds; each round runs every configuration, starting with a
//! different one each time, so that warm-up and page cache favour none of
//! them. The median of each is reported with its ratio to **off**.

use std::fmt::Write as _;
use std::path::Path;

use crate::ingest::{self, Body, Outcome, Target};
use crate::servers::Sextant;
use crate::{Args, DAY_START_NS, bodies, clone_body, encode, generate, median};

const ROUNDS: usize = 5;

struct Config {
    name: &'static str,
    baseline: bool,
    args: &'static [&'static str],
}

const CONFIGS: [Config; 3] = [
    Config {
        name: "off (before #10)",
        baseline: true,
        args: &[],
    },
    Config {
        name: "on (defaults)",
        baseline: false,
        args: &[],
    },
    Config {
        name: "on + --self-telemetry",
        baseline: false,
        args: &["--self-telemetry"],
    },
];

pub(crate) async fn run(
    a: &Args,
    bin: &Path,
    baseline: &Path,
    work: &Path,
) -> Result<String, String> {
    if !baseline.exists() {
        return Err(format!(
            "--baseline-bin {} not found: build the commit to compare with (see docs/benchmarks.md)",
            baseline.display()
        ));
    }
    let window = generate::Window {
        start_ns: DAY_START_NS,
        span_ns: crate::DAY_NS,
    };
    let cpu_rows = a.hosts as u64 * 8_640;
    eprintln!(
        "overhead: encoding {} logs and {cpu_rows} cpu rows ...",
        a.logs
    );
    let logs = bodies(
        a.logs,
        a.batch,
        |i| generate::log(a.seed, &window, i, a.logs),
        encode::otlp_logs_bytes,
        encode::ndjson_log,
    );
    let cpu = bodies(
        cpu_rows,
        a.batch,
        |i| generate::cpu(a.seed, DAY_START_NS, a.hosts, i),
        encode::line_protocol,
        encode::ndjson_cpu,
    );
    let workloads: [(&str, &str, &str, &[Body]); 2] = [
        (
            "logs, OTLP/HTTP protobuf",
            "/v1/logs",
            "application/x-protobuf",
            &logs,
        ),
        (
            "cpu, line protocol",
            "/api/v2/write?precision=ns",
            "text/plain",
            &cpu,
        ),
    ];
    // results[workload][config] = outcomes of the rounds
    let mut results: Vec<Vec<Vec<Outcome>>> = workloads
        .iter()
        .map(|_| CONFIGS.iter().map(|_| vec![]).collect())
        .collect();
    for round in 1..=ROUNDS {
        for k in 0..CONFIGS.len() {
            let c = (k + round) % CONFIGS.len();
            let config = &CONFIGS[c];
            let dir = work.join(format!("overhead-{c}-{round}"));
            let args: Vec<String> = config.args.iter().map(|s| s.to_string()).collect();
            let sx = Sextant::start(if config.baseline { baseline } else { bin }, &dir, &args)?;
            for (w, (name, path, content_type, data)) in workloads.iter().enumerate() {
                let label = format!("{name}, {}, round {round}", config.name);
                eprintln!("overhead: ingest {label}");
                let o = ingest::run(
                    &label,
                    Target::Http {
                        url: format!("http://{}{path}", sx.http),
                        content_type,
                    },
                    data.iter().map(clone_body).collect(),
                    a.concurrency,
                    sx.pid(),
                    a.perf_dir.as_deref(),
                )
                .await?;
                if o.errors > 0 {
                    return Err(format!("{label}: {} requests failed", o.errors));
                }
                eprintln!("  {:.0} rows/s", o.rows_per_s());
                results[w][c].push(o);
            }
            drop(sx);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let mut report = String::new();
    let _ = writeln!(
        report,
        "### Instrumentation overhead on ingest\n\n{} logs (OTLP/HTTP protobuf) and {cpu_rows} TSBS cpu-only rows (line protocol), batches of {}, {} clients, fsync before ack; a fresh server per configuration and round; medians of {ROUNDS} rounds, each starting with another configuration. **off** is `--baseline-bin` {}.\n",
        a.logs,
        a.batch,
        a.concurrency,
        baseline.display()
    );
    let _ = writeln!(
        report,
        "| ingest | instrumentation | rows/s | vs off | p50 ms | p99 ms | server cores | peak RSS MiB |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (w, (name, ..)) in workloads.iter().enumerate() {
        let mut off = None;
        for (c, config) in CONFIGS.iter().enumerate() {
            let outcomes = &results[w][c];
            let pick = |f: &dyn Fn(&Outcome) -> f64| median(outcomes.iter().map(f).collect());
            let rate = pick(&|o| o.rows_per_s());
            let base = *off.get_or_insert(rate);
            let _ = writeln!(
                report,
                "| {name} | {} | {rate:.0} | {:.3}x | {:.1} | {:.1} | {:.2} | {:.0} |",
                config.name,
                rate / base,
                pick(&|o| o.p50_ms),
                pick(&|o| o.p99_ms),
                pick(&|o| o.server_cores),
                pick(&|o| (o.peak_rss >> 20) as f64),
            );
        }
    }
    Ok(report)
}
