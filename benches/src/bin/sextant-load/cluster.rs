//! `--scenario cluster`: the query suite on one node and on a three-node
//! cluster on this machine, on the same data in one S3 bucket (moto's
//! server) with the catalog in PostgreSQL 15 for both.
//!
//! 1. One node (`--mode all`): logs and spans over OTLP/HTTP, cpu over line
//!    protocol; FLUSH; restarted; the suite cold and hot.
//! 2. Three nodes, a (ingest,query), b (ingest,query), c (query,compact):
//!    the same bodies, alternately to a and to b, both at once; FLUSH on
//!    both; the suite on c, as the planner chooses (small scans stay on c)
//!    and with every scan spread over the three workers
//!    (`distributed.file_scan_config_bytes_per_partition` = 1 MiB).
//! 3. The answers are compared with the single node's before any time is
//!    reported; the table gives each query's hot time and the overhead
//!    ratio of the cluster to one node.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ingest::{self, Body, Outcome, Target};
use crate::servers::{Postgres, Sextant};
use crate::{Args, DAY, Timing, clone_body, generate_all, pg, queries, suite_on};

const BUCKET: &str = "sextant-bench";
const SECRET: &str = "sextant-load-cluster-secret";
/// Bytes per partition that spread every scan of the suite over the workers.
const SPREAD: u64 = 1 << 20;

/// moto's S3 server, stopped on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start(python: &Path) -> Result<Self, String> {
        let port = crate::servers::free_port()?;
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start moto ({}): {e}", python.display()))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("moto did not listen in 30 s (pip install 'moto[server]')".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Moto { child, endpoint })
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a server needs to reach moto.
fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn create_database(pg_port: u16, name: &str) -> Result<String, String> {
    let c = pg(&format!(
        "host=127.0.0.1 port={pg_port} user=postgres dbname=postgres"
    ))
    .await?;
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("postgres://postgres@127.0.0.1:{pg_port}/{name}"))
}

fn node_args(catalog: &str, prefix: &str, id: &str, mode: &str) -> Vec<String> {
    [
        "--catalog",
        catalog,
        "--cluster-secret",
        SECRET,
        "--object-store",
        &format!("s3://{BUCKET}/{prefix}"),
        "--node-id",
        id,
        "--mode",
        mode,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The bodies of one run: logs and spans over OTLP/HTTP, cpu over line
/// protocol.
struct Bodies {
    logs: Vec<Body>,
    spans: Vec<Body>,
    cpu: Vec<Body>,
}

impl Bodies {
    fn clone_all(&self) -> Bodies {
        let c = |v: &[Body]| v.iter().map(clone_body).collect();
        Bodies {
            logs: c(&self.logs),
            spans: c(&self.spans),
            cpu: c(&self.cpu),
        }
    }

    /// Every other body, starting at `first`.
    fn half(&self, first: usize) -> Bodies {
        let c = |v: &[Body]| v.iter().skip(first).step_by(2).map(clone_body).collect();
        Bodies {
            logs: c(&self.logs),
            spans: c(&self.spans),
            cpu: c(&self.cpu),
        }
    }
}

/// Ingests `bodies` into `sx`; the rows and seconds of all three runs.
async fn ingest_into(sx: &Sextant, bodies: Bodies, concurrency: usize) -> Result<Outcome, String> {
    let http = |path: &str, ct| Target::Http {
        url: format!("http://{}{path}", sx.http),
        content_type: ct,
    };
    let runs = [
        (
            "logs",
            http("/v1/logs", "application/x-protobuf"),
            bodies.logs,
        ),
        (
            "spans",
            http("/v1/traces", "application/x-protobuf"),
            bodies.spans,
        ),
        (
            "cpu",
            http("/api/v2/write?bucket=b&org=o&precision=ns", "text/plain"),
            bodies.cpu,
        ),
    ];
    let mut total: Option<Outcome> = None;
    for (label, target, b) in runs {
        let o = ingest::run(label, target, b, concurrency, sx.pid(), None).await?;
        if o.errors > 0 {
            return Err(format!("{label}: {} failed requests", o.errors));
        }
        total = Some(match total {
            None => o,
            Some(t) => Outcome {
                rows: t.rows + o.rows,
                ndjson_bytes: t.ndjson_bytes + o.ndjson_bytes,
                seconds: t.seconds + o.seconds,
                ..t
            },
        });
    }
    total.ok_or_else(|| "nothing ingested".into())
}

async fn flush(sx: &Sextant) -> Result<(), String> {
    pg(&sx.pg_config())
        .await?
        .batch_execute("FLUSH TABLE otel_logs, otel_traces, cpu")
        .await
        .map_err(|e| e.to_string())
}

pub(crate) async fn run(a: &Args, bin: &Path, work: &Path) -> Result<String, String> {
    let mut report = String::new();
    eprintln!("cluster: PostgreSQL for the catalog, moto for the bucket");
    let postgres = Postgres::start(&a.postgres_bin, &work.join("postgres"))?;
    let moto = Moto::start(&a.python)?;
    let env = aws_env(&moto.endpoint);
    let status = reqwest::Client::new()
        .put(format!("{}/{BUCKET}", moto.endpoint))
        .send()
        .await
        .map_err(|e| format!("create bucket: {e}"))?
        .status();
    if !status.is_success() {
        return Err(format!("create bucket: {status}"));
    }

    eprintln!("generating and encoding the data ...");
    let data = generate_all(a);
    let bodies = Bodies {
        logs: data.logs_otlp,
        spans: data.spans_otlp,
        cpu: data.cpu_line,
    };
    let suite = queries::suite(a.seed, DAY, a.logs.min(a.spans) / 8);
    let sql: Vec<_> = suite.iter().map(|q| (q.name, q.sextant.clone())).collect();
    let spread: Vec<_> = suite
        .iter()
        .map(|q| {
            (
                q.name,
                format!(
                    "SET distributed.file_scan_config_bytes_per_partition = {SPREAD}; {}",
                    q.sextant
                ),
            )
        })
        .collect();

    // --- One node -----------------------------------------------------------
    let catalog = create_database(postgres.port, "single").await?;
    let one = Sextant::start_with_env(
        bin,
        &work.join("single"),
        &node_args(&catalog, "single", "single", "all"),
        &env,
    )?;
    eprintln!("cluster: ingest into one node (pid {})", one.pid());
    let one_ingest = ingest_into(&one, bodies.clone_all(), a.concurrency).await?;
    flush(&one).await?;
    let one = one.restart()?;
    eprintln!("cluster: the suite on one node");
    let one_t = suite_on(&one.pg_config(), &sql, a.runs, None).await?;
    drop(one);

    // --- Three nodes ----------------------------------------------------------
    let catalog = create_database(postgres.port, "cluster").await?;
    let start = |id: &str, mode: &str| {
        Sextant::start_with_env(
            bin,
            &work.join(format!("node-{id}")),
            &node_args(&catalog, "cluster", id, mode),
            &env,
        )
    };
    let na = start("a", "ingest,query")?;
    let nb = start("b", "ingest,query")?;
    let nc = start("c", "query,compact")?;
    eprintln!("cluster: ingest into a and b at once");
    let t = Instant::now();
    let (oa, ob) = tokio::join!(
        ingest_into(&na, bodies.half(0), a.concurrency / 2),
        ingest_into(&nb, bodies.half(1), a.concurrency / 2)
    );
    let (oa, ob) = (oa?, ob?);
    let both_seconds = t.elapsed().as_secs_f64();
    flush(&na).await?;
    flush(&nb).await?;
    let nc = nc.restart()?;
    eprintln!("cluster: the suite on c, as the planner chooses");
    let chosen_t = suite_on(&nc.pg_config(), &sql, a.runs, None).await?;
    eprintln!("cluster: the suite on c, every scan spread over a, b and c");
    let spread_t = suite_on(&nc.pg_config(), &spread, a.runs, None).await?;

    // --- Answers first, then times ------------------------------------------
    let mut differences = vec![];
    for (i, q) in suite.iter().enumerate() {
        if !q.exact {
            continue;
        }
        for (what, t) in [("as chosen", &chosen_t), ("spread", &spread_t)] {
            if let Some(d) = one_t[i].answer.difference(&t[i].answer) {
                differences.push(format!("{} ({what}): {d}", q.name));
            }
        }
    }
    if !differences.is_empty() {
        return Err(format!(
            "the cluster's answers differ from one node's:\n{}",
            differences.join("\n")
        ));
    }

    let rate = |rows: u64, s: f64| rows as f64 / s.max(1e-9);
    let _ = writeln!(report, "### One node and a three-node cluster\n");
    let _ = writeln!(
        report,
        "Catalog in PostgreSQL 15 and Parquet in one S3 bucket (moto) for both; the cluster is \
         a (ingest,query), b (ingest,query), c (query,compact) on this same machine. Every \
         exact answer of the cluster equals the single node's.\n"
    );
    let _ = writeln!(report, "| ingest | rows | rows/s |");
    let _ = writeln!(report, "| --- | ---: | ---: |");
    let _ = writeln!(
        report,
        "| one node | {} | {:.0} |",
        one_ingest.rows,
        rate(one_ingest.rows, one_ingest.seconds)
    );
    let _ = writeln!(
        report,
        "| a and b at once | {} | {:.0} |\n",
        oa.rows + ob.rows,
        rate(oa.rows + ob.rows, both_seconds)
    );
    let _ = writeln!(
        report,
        "| query | one node cold | one node hot | cluster hot (planner's choice) | cluster hot (spread over 3) | spread / one node | rows |"
    );
    let _ = writeln!(report, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut ratios = vec![];
    for (i, q) in suite.iter().enumerate() {
        let (o, c, s): (&Timing, &Timing, &Timing) = (&one_t[i], &chosen_t[i], &spread_t[i]);
        ratios.push(s.hot_ms / o.hot_ms);
        let _ = writeln!(
            report,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {} |",
            q.name,
            o.cold_ms,
            o.hot_ms,
            c.hot_ms,
            s.hot_ms,
            s.hot_ms / o.hot_ms,
            o.answer.rows()
        );
    }
    ratios.sort_by(|x, y| x.total_cmp(y));
    let _ = writeln!(
        report,
        "\nSpread over three workers / one node, hot: median {:.2}x, worst {:.2}x.",
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1]
    );
    Ok(report)
}
