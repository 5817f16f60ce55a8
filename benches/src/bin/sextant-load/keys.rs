//! `--scenario keys`: the cost of a key. The same TSBS cpu-only rows over
//! line protocol into a keyed table (line protocol's own: keyed by tags and
//! time) and into an append-only one (made in SQL first, so that line
//! protocol appends to it), each on a fresh server: ingest, then the TSBS
//! queries of the suite with every row in the write buffer (the merge runs
//! over all of them: the worst case) and after FLUSH and COMPACT TABLE (one
//! file per partition: no merge); DuckDB on the compacted keyed table's Parquet
//! files beside them. The same rows sent again to the keyed table change
//! nothing (checked).

use std::fmt::Write as _;
use std::path::Path;

use crate::generate;
use crate::ingest;
use crate::servers::Sextant;
use crate::views::line_protocol;
use crate::{Args, DAY, DAY_START_NS, bodies, clone_body, cpu_ddl, encode, median, pg, timed};

struct Run {
    rows_per_s: f64,
    before: Vec<f64>,
    after: Vec<f64>,
    answers: Vec<crate::answer::Answer>,
}

async fn hot(config: &str, sql: &str, runs: usize) -> Result<(f64, crate::answer::Answer), String> {
    let client = pg(config).await?;
    let (_, answer) = timed(&client, sql).await?;
    let mut ms = vec![];
    for _ in 0..runs.max(1) {
        ms.push(timed(&client, sql).await?.0);
    }
    Ok((median(ms), answer))
}

pub(crate) async fn run(a: &Args, bin: &Path, work: &Path) -> Result<String, String> {
    let rows = a.hosts as u64 * 8_640;
    eprintln!("keys: encoding {rows} cpu rows ...");
    let cpu_line = bodies(
        rows,
        a.batch,
        |i| generate::cpu(a.seed, DAY_START_NS, a.hosts, i),
        encode::line_protocol,
        encode::ndjson_cpu,
    );
    let queries: Vec<crate::queries::Query> = crate::queries::suite(a.seed, DAY, 0)
        .into_iter()
        .filter(|q| q.name.starts_with("TSBS"))
        .collect();
    let mut runs = vec![];
    let mut objects = None;
    for keyed in [false, true] {
        let dir = work.join(if keyed { "keyed" } else { "append" });
        let _ = std::fs::remove_dir_all(&dir);
        let sx = Sextant::start(bin, &dir, &[])?;
        let c = pg(&sx.pg_config()).await?;
        if !keyed {
            c.batch_execute(&format!(
                "CREATE TABLE cpu ({})",
                cpu_ddl("TIMESTAMP NOT NULL", "TEXT", "DOUBLE")
            ))
            .await
            .map_err(|e| e.to_string())?;
        }
        let label = if keyed { "keyed" } else { "append-only" };
        eprintln!("keys: ingest, {label}");
        let o = ingest::run(
            &format!("cpu, line protocol, {label}"),
            line_protocol(&sx),
            cpu_line.iter().map(clone_body).collect(),
            a.concurrency,
            sx.pid(),
            a.perf_dir.as_deref(),
        )
        .await?;
        if o.errors > 0 {
            return Err(format!("{label}: {} requests failed", o.errors));
        }
        let mut run = Run {
            rows_per_s: o.rows_per_s(),
            before: vec![],
            after: vec![],
            answers: vec![],
        };
        for q in &queries {
            run.before
                .push(hot(&sx.pg_config(), &q.sextant, a.runs).await?.0);
        }
        c.batch_execute("FLUSH TABLE cpu; COMPACT TABLE cpu")
            .await
            .map_err(|e| e.to_string())?;
        for q in &queries {
            let (ms, answer) = hot(&sx.pg_config(), &q.sextant, a.runs).await?;
            run.after.push(ms);
            run.answers.push(answer);
        }
        if keyed {
            // A retry of everything: the table stays as it was.
            ingest::run(
                "cpu, line protocol, keyed, again",
                line_protocol(&sx),
                cpu_line.iter().map(clone_body).collect(),
                a.concurrency,
                sx.pid(),
                None,
            )
            .await?;
            let n = c
                .simple_query("SELECT count(*) FROM cpu")
                .await
                .map_err(|e| e.to_string())?;
            let count = n.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            });
            if count.as_deref() != Some(&rows.to_string()) {
                return Err(format!(
                    "keyed cpu has {count:?} rows after the retry, {rows} written"
                ));
            }
            c.batch_execute("FLUSH TABLE cpu; COMPACT TABLE cpu")
                .await
                .map_err(|e| e.to_string())?;
            objects = Some(sx.data_dir.join("objects"));
        }
        runs.push(run);
        drop(sx);
    }
    let (append, keyed) = (&runs[0], &runs[1]);
    for (q, (x, y)) in queries
        .iter()
        .zip(append.answers.iter().zip(&keyed.answers))
    {
        if let Some(d) = x.difference(y) {
            return Err(format!(
                "{}: keyed and append-only answers differ: {d}",
                q.name
            ));
        }
    }
    // DuckDB on the keyed table's compacted files.
    let objects = objects.ok_or("no keyed run")?;
    let duck: Vec<f64> = crate::duckdb_on(a, &objects, &["cpu"], work, "duckdb-keys", &queries)?
        .parquet
        .iter()
        .map(|t| t.hot_ms)
        .collect();

    let mut report = String::new();
    let _ = writeln!(
        report,
        "### The cost of a key\n\n{rows} TSBS cpu-only rows ({} hosts, one day) over line protocol, batches of {}, {} clients, into the keyed table line protocol makes (tags and time) and into an append-only one (created in SQL first), each on a fresh server. Queries: hot medians of {} runs (ms), with every row in the write buffer (the keyed table merges all of them: the worst case) and after FLUSH and COMPACT TABLE (one file per partition: no merge); DuckDB on the compacted keyed table's Parquet files. The answers of the two tables agree.\n",
        a.hosts, a.batch, a.concurrency, a.runs
    );
    let _ = writeln!(
        report,
        "| | append-only | keyed | keyed / append-only |\n| --- | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        report,
        "| ingest, rows/s | {:.0} | {:.0} | {:.2}x |",
        append.rows_per_s,
        keyed.rows_per_s,
        keyed.rows_per_s / append.rows_per_s
    );
    let _ = writeln!(
        report,
        "\n| query | append-only, in the buffer | keyed, in the buffer | keyed / append-only | append-only, compacted | keyed, compacted | keyed / append-only | DuckDB (Parquet) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (i, q) in queries.iter().enumerate() {
        let _ = writeln!(
            report,
            "| {} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.2}x | {:.1} |",
            q.name,
            append.before[i],
            keyed.before[i],
            keyed.before[i] / append.before[i],
            append.after[i],
            keyed.after[i],
            keyed.after[i] / append.after[i],
            duck.get(i).copied().unwrap_or(f64::NAN)
        );
    }
    Ok(report)
}
