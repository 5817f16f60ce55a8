//! Materialized views: what `CREATE MATERIALIZED VIEW` accepts, and how each
//! kind is kept up to date (storage keeps the invalid buckets and swaps
//! rows; this module plans and runs the queries).
//!
//! CREATE plans the query against its one base table and classifies it:
//! - `GROUP BY date_bin(<fixed interval>, time), ...` → *aggregate*: a bucket
//!   is re-aggregated from the base rows whenever a write touches it, so
//!   every aggregate (count DISTINCT, percentiles, first/last by time)
//!   is exact;
//! - projection and filter only → *transform*: compiled to physical
//!   expressions and applied to every write of the base as it is ingested;
//! - anything else is refused with the reason, or with `WITH (refresh =
//!   'full')` recomputed every `refresh_interval`.
//!
//! The view's table gets the query's output columns. An aggregating view
//! backfills the base's existing rows one base partition at a time from the
//! background refresher; a transform view backfills from the snapshot of
//! its base taken when its function was attached. [`runtime::run_refresher`] walks
//! the views in creation order (a view over a view after the view it reads)
//! every interval, and keeps going without sleeping while there is work.
//!
//! This file is the DDL (CREATE, DROP and REFRESH MATERIALIZED VIEW: their
//! options and checks; [`crate::classify`] parses them); the query analysis is [`analyze`], the
//! refresh runtime (the refresher, bucket refreshes, transforms at ingest)
//! is [`runtime`].

mod analyze;
pub(crate) mod runtime;

use sextant_sqlstate::SqlState;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CreateTableOptions, CreateView, SqlOption, Statement};
use sextant_catalog::{
    NewTable, NewView, TIME_COLUMN, TableOptions, ViewKind, ViewProgress, ViewSpec,
};
use sextant_storage::Engine;

use self::analyze::{analyze, plan_query};
use self::runtime::{compile_transform, dry_run, full_refresh, start_transform};
use crate::SqlError;
use crate::ast::{
    Done, DropObjects, option_text, parse_interval, parse_one, parse_retention, set_option,
    table_name,
};

/// Parses `CREATE MATERIALIZED VIEW [IF NOT EXISTS] v [WITH (...)] AS
/// SELECT ...`; the query is checked when the view is created.
pub(crate) fn parse_create(sql: &str) -> Result<Box<CreateView>, SqlError> {
    let Statement::CreateView(cv) = parse_one(sql)? else {
        return Err(SqlError::syntax(
            "expected CREATE MATERIALIZED VIEW name [WITH (...)] AS SELECT ...",
        ));
    };
    if !cv.materialized {
        return Err(SqlError::unsupported(
            "only materialized views are supported: CREATE MATERIALIZED VIEW",
        ));
    }
    if !cv.columns.is_empty() {
        return Err(SqlError::unsupported(
            "a column list is not supported: name the columns with AS in the query",
        ));
    }
    Ok(Box::new(cv))
}

/// Parses `CREATE [OR REPLACE] VIEW [IF NOT EXISTS] v AS SELECT ...`.
pub(crate) fn parse_create_plain(sql: &str) -> Result<crate::SextantStatement, SqlError> {
    let Statement::CreateView(cv) = parse_one(sql)? else {
        return Err(SqlError::syntax(
            "expected CREATE [OR REPLACE] VIEW name AS SELECT ...",
        ));
    };
    if !cv.columns.is_empty() {
        return Err(SqlError::unsupported(
            "a column list is not supported: name the columns with AS in the query",
        ));
    }
    Ok(crate::SextantStatement::CreatePlainView {
        name: table_name(&cv.name)?,
        query: cv.query.to_string(),
        or_replace: cv.or_replace,
        if_not_exists: cv.if_not_exists,
    })
}

/// `CREATE [OR REPLACE] VIEW v AS SELECT ...`: the query is planned as a
/// client's (so it must run now), and kept as the statement layer reads it
/// (its Postgres idioms written as DataFusion plans them), with its
/// columns; a statement that reads the view plans it there
/// ([`sextant_storage::PlainViewTable`]).
pub(crate) async fn create_plain(
    name: &str,
    query: &str,
    or_replace: bool,
    if_not_exists: bool,
    engine: &Engine,
    ctx: &SessionContext,
) -> Result<crate::Done, SqlError> {
    let done = Ok(crate::Done {
        tag: "CREATE VIEW",
        rows: None,
        batch: None,
    });
    if if_not_exists && engine.plain_view(name).is_some() {
        return done;
    }
    let (statement, plan) = match crate::plan(ctx, query, &crate::Session::server()).await? {
        crate::Planned::Query {
            statement: statement @ Statement::Query(_),
            plan,
        } => (statement, plan),
        _ => {
            return Err(SqlError::new(
                SqlState::WRONG_OBJECT_TYPE,
                "a view is one SELECT",
            ));
        }
    };
    let columns = std::sync::Arc::new(plan.schema().as_arrow().clone());
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = columns
        .fields()
        .iter()
        .find(|f| !seen.insert(f.name().clone()))
    {
        return Err(SqlError::invalid_definition(format!(
            "column \"{}\" appears twice in the view: give each output column its own name with AS",
            dup.name()
        )));
    }
    engine
        .create_plain_view(
            sextant_catalog::PlainView {
                name: name.to_string(),
                query: statement.to_string(),
                columns,
                created_at_ns: engine.now_ns(),
            },
            or_replace,
        )
        .await?;
    done
}

/// `DROP VIEW [IF EXISTS] a, b`.
pub(crate) async fn drop_plain(
    drop: &crate::ast::DropObjects,
    engine: &Engine,
) -> Result<crate::Done, SqlError> {
    for name in &drop.names {
        if engine.plain_view(name).is_none() {
            if drop.if_exists {
                continue;
            }
            let hint = if engine.view(name).is_some() {
                format!(": \"{name}\" is a materialized view, use DROP MATERIALIZED VIEW {name}")
            } else {
                String::new()
            };
            return Err(SqlError::new(
                SqlState::UNDEFINED_TABLE,
                format!("view \"{name}\" does not exist{hint}"),
            ));
        }
        engine.drop_plain_view(name).await?;
    }
    Ok(crate::Done {
        tag: "DROP VIEW",
        rows: None,
        batch: None,
    })
}

/// The bucket by which a transform view is refreshed on a shared catalog.
const SHARED_TRANSFORM_BUCKET: Duration = Duration::from_secs(60);

/// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] v [WITH (...)] AS SELECT ...`.
pub(crate) async fn create(
    cv: &CreateView,
    engine: &Engine,
    ctx: &SessionContext,
) -> Result<Done, SqlError> {
    let done = Done {
        tag: "CREATE MATERIALIZED VIEW",
        rows: None,
        batch: None,
    };
    let name = table_name(&cv.name)?;
    if engine.table(&name).is_some() {
        if cv.if_not_exists {
            return Ok(done);
        }
        return Err(SqlError::new(
            SqlState::DUPLICATE_TABLE,
            format!("relation \"{name}\" already exists"),
        ));
    }
    let opts = view_options(&cv.options)?;
    let query = cv.query.to_string();
    let plan = plan_query(ctx, &query).await?;
    let a = analyze(&plan, engine, opts.full)?;
    let base = engine.table(&a.base).ok_or_else(|| {
        SqlError::new(
            SqlState::UNDEFINED_TABLE,
            format!("table \"{}\" does not exist", a.base),
        )
    })?;
    let mut reads = vec![base.clone()];
    for t in &a.reads[1..] {
        reads.push(engine.table(t).ok_or_else(|| {
            SqlError::new(
                SqlState::UNDEFINED_TABLE,
                format!("table \"{t}\" does not exist"),
            )
        })?);
    }
    dry_run(ctx, &query, &reads).await?;
    let mut spec = a.spec.clone();
    let transform = match a.spec.kind {
        // On a shared catalog the refreshing node re-derives a transform
        // view by one-minute buckets of its base, as it re-aggregates an
        // aggregating view's (other nodes' writes cannot apply its
        // function here).
        ViewKind::Transform if engine.shares_catalog() => {
            spec.bucket_ns = SHARED_TRANSFORM_BUCKET.as_nanos() as i64;
            spec.origin_ns = 0;
            None
        }
        ViewKind::Transform => Some(compile_transform(ctx, &plan, &a.schema)?),
        _ => None,
    };
    let options = TableOptions {
        retention: opts.retention,
        partition_duration: opts
            .partition
            .unwrap_or_else(|| default_partition(&a.spec, &base.options)),
        reference: false,
        key: None,
        token_index: base.options.token_index.clone(),
    };
    let progress = ViewProgress {
        // A full view's first refresh counts as its backfill.
        backfill: Some((i64::MIN, i64::MAX)),
        backfilled_to_ns: i64::MIN,
    };
    let result = engine
        .create_view(
            NewTable {
                name: name.clone(),
                schema: a.schema.clone(),
                time_column: TIME_COLUMN.to_string(),
                options,
            },
            NewView {
                base_table_id: base.id,
                query,
                spec,
                progress,
            },
        )
        .await;
    match result {
        Ok(_) => {}
        Err(sextant_storage::StorageError::Catalog(
            sextant_catalog::CatalogError::TableExists(_),
        )) if cv.if_not_exists => return Ok(done),
        Err(e) => return Err(e.into()),
    }
    if let Some(retention) = opts.source_retention {
        let mut o = base.options.clone();
        o.retention = retention;
        engine.set_options(&base.name, o).await?;
    }
    if let Some(f) = transform {
        start_transform(engine, &name, f).await?;
    }
    Ok(done)
}

/// `DROP MATERIALIZED VIEW [IF EXISTS] v [, ...]`.
pub(crate) async fn drop(drop: &DropObjects, engine: &Engine) -> Result<Done, SqlError> {
    for name in &drop.names {
        let name = name.clone();
        if engine.view(&name).is_none() {
            if engine.table(&name).is_some() {
                return Err(not_a_view(&name));
            }
            if drop.if_exists {
                continue;
            }
            return Err(SqlError::new(
                SqlState::UNDEFINED_TABLE,
                format!("materialized view \"{name}\" does not exist"),
            ));
        }
        if let Some(over) = engine.views().into_iter().find(|v| v.base_table == name) {
            return Err(SqlError::new(
                SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop materialized view \"{name}\" because materialized view \"{}\" depends on it: drop that first",
                    over.name
                ),
            ));
        }
        // A refresh in flight finishes first.
        let _lock = engine.lock_view(&name).await;
        engine.drop_view(&name).await?;
    }
    Ok(Done {
        tag: "DROP MATERIALIZED VIEW",
        rows: None,
        batch: None,
    })
}

/// `REFRESH MATERIALIZED VIEW v`: recomputes the whole view from its base
/// and swaps it in at once. A transform view is already exact (its rows are
/// derived as the base is written), so there is nothing to redo.
pub(crate) async fn refresh(
    name: &str,
    engine: &Engine,
    ctx: &SessionContext,
) -> Result<Done, SqlError> {
    let Some(view) = engine.view(name) else {
        if engine.table(name).is_some() {
            return Err(not_a_view(name));
        }
        return Err(SqlError::new(
            SqlState::UNDEFINED_TABLE,
            format!("materialized view \"{name}\" does not exist"),
        ));
    };
    if view.spec.kind != ViewKind::Transform || engine.shares_catalog() {
        let _lock = engine.lock_view(name).await;
        full_refresh(engine, ctx, &view).await?;
    }
    Ok(Done {
        tag: "REFRESH MATERIALIZED VIEW",
        rows: None,
        batch: None,
    })
}

fn not_a_view(name: &str) -> SqlError {
    SqlError::new(
        SqlState::WRONG_OBJECT_TYPE,
        format!("\"{name}\" is not a materialized view"),
    )
}

/// Options of `CREATE MATERIALIZED VIEW ... WITH (...)`.
#[derive(Debug, Default)]
struct ViewOptions {
    retention: Option<Duration>,
    partition: Option<Duration>,
    source_retention: Option<Option<Duration>>,
    full: Option<Duration>,
}

fn view_options(opts: &CreateTableOptions) -> Result<ViewOptions, SqlError> {
    let list: &[SqlOption] = match opts {
        CreateTableOptions::None => &[],
        CreateTableOptions::With(l) => l,
        _ => {
            return Err(SqlError::syntax(
                "view options go in WITH (retention = '90 days', ...)",
            ));
        }
    };
    let known = "known: retention, partition, source_retention, refresh, refresh_interval";
    let mut out = ViewOptions::default();
    let mut refresh: Option<String> = None;
    let mut interval: Option<Duration> = None;
    for opt in list {
        let SqlOption::KeyValue { key, value } = opt else {
            return Err(SqlError::syntax(format!("unsupported view option {opt}")));
        };
        let text = option_text(value)?;
        match key.value.to_lowercase().as_str() {
            "retention" => out.retention = parse_retention(&text)?,
            "partition" => {
                let mut o = TableOptions::default();
                set_option(&mut o, "partition", &text)?;
                out.partition = Some(o.partition_duration);
            }
            "source_retention" => out.source_retention = Some(parse_retention(&text)?),
            "refresh" => refresh = Some(text.to_lowercase()),
            "refresh_interval" => interval = Some(parse_interval(&text)?),
            other => {
                return Err(SqlError::invalid_parameter(format!(
                    "unknown materialized view option \"{other}\" ({known})"
                )));
            }
        }
    }
    match refresh.as_deref() {
        None | Some("incremental") => {
            if interval.is_some() {
                return Err(SqlError::invalid_parameter(
                    "refresh_interval applies to WITH (refresh = 'full') views only",
                ));
            }
        }
        Some("full") => out.full = Some(interval.unwrap_or(Duration::from_secs(60))),
        Some(other) => {
            return Err(SqlError::invalid_parameter(format!(
                "refresh must be 'incremental' or 'full', got '{other}'"
            )));
        }
    }
    Ok(out)
}

/// A view's partition unless it says: about a thousand buckets each (at
/// least an hour, at most a week), so a 1-minute view of a month is 120
/// files rather than 720, while late data still rewrites a bounded file.
/// A transform view keeps its base's.
fn default_partition(spec: &ViewSpec, base: &TableOptions) -> Duration {
    if spec.kind == ViewKind::Transform {
        return base.partition_duration;
    }
    let target = Duration::from_nanos(spec.bucket_ns.max(1) as u64).saturating_mul(1000);
    [6 * 3600, 86400, 7 * 86400]
        .into_iter()
        .map(Duration::from_secs)
        .rfind(|p| *p <= target)
        .unwrap_or(Duration::from_secs(3600))
}

/// Rows of `table` that its retention hid before `hidden_before` and no
/// longer hides (`ALTER TABLE ... RESET (retention)`, or a longer one; they
/// are visible from `visible_from`) reach its aggregating views: the buckets
/// they fall in are computed again, as a backfill, by the refresher.
pub(crate) async fn reveal(
    engine: &Engine,
    table: &str,
    visible_from: Option<i64>,
    hidden_before: i64,
) -> Result<(), SqlError> {
    let Some((oldest, _)) = engine.time_range(table) else {
        return Ok(());
    };
    let from = visible_from.map_or(oldest, |c| oldest.max(c));
    if from >= hidden_before {
        return Ok(());
    }
    for view in engine.views() {
        if view.base_table != table
            || view.spec.kind != ViewKind::Aggregate
            || view.progress.backfill.is_some()
        {
            continue;
        }
        let (w, o) = (view.spec.bucket_ns, view.spec.origin_ns);
        let start = sextant_storage::bucket_start(from, w, o);
        let end = sextant_storage::bucket_start(hidden_before, w, o) + w;
        tracing::info!(view = %view.name, table, "rows past the old retention are visible again: recomputing their buckets");
        engine
            .set_view_progress(
                &view.name,
                ViewProgress {
                    backfill: Some((start, end)),
                    backfilled_to_ns: start,
                },
            )
            .await?;
    }
    Ok(())
}
