//! System tables: the server described to itself in SQL (`system.tables`,
//! `system.files`, `system.wal`, `system.compactions`,
//! `system.materialized_views`, `system.alerts`, `system.alert_events`,
//! `system.metrics`, `system.queries`, `system.users`, `system.grants`,
//! `system.tokens`, `system.nodes`, `system.leases`, `system.deletes`).
//! Each is computed from the engine's (or the alert rules') state
//! when a query scans it.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use sextant_alerts::{AlertInfo, Alerts, EventRow, Phase};
use sextant_storage::{Engine, SyncMode};

type Build<S = Engine> = Arc<dyn Fn(&S) -> Result<RecordBatch> + Send + Sync>;
type Columns<S = Engine> = Arc<dyn Fn(&S) -> Result<Vec<ArrayRef>> + Send + Sync>;

/// A table whose rows are computed at scan time from its source (the
/// engine, or the alert rules).
struct SystemTable<S = Engine> {
    name: &'static str,
    schema: SchemaRef,
    source: S,
    build: Build<S>,
}

impl<S> fmt::Debug for SystemTable<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "system.{}", self.name)
    }
}

#[async_trait]
impl<S: Send + Sync + 'static> TableProvider for SystemTable<S> {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = (self.build)(&self.source)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// A column of UTC timestamps (ns), null where `None`.
fn utc(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter(values).with_timezone("UTC"))
}

/// A duration as PostgreSQL prints an interval of whole days and a time of
/// day: `30 days`, `1 day 12:00:00`, `01:00:00`, `00:00:00.5` (what
/// `WITH (retention = '30 days')` was given reads back as written).
fn interval_text(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let micros = d.subsec_micros();
    let mut parts = vec![];
    if days > 0 {
        parts.push(format!("{days} day{}", if days == 1 { "" } else { "s" }));
    }
    if rest > 0 || micros > 0 || days == 0 {
        let mut time = format!(
            "{:02}:{:02}:{:02}",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        );
        if micros > 0 {
            time.push_str(format!(".{micros:06}").trim_end_matches('0'));
        }
        parts.push(time);
    }
    parts.join(" ")
}

/// The `system` schema.
pub(crate) fn schema(engine: &Engine) -> Result<Arc<dyn SchemaProvider>> {
    let schema = MemorySchemaProvider::new();
    for (name, table_schema, build) in [
        tables_table(),
        files_table(),
        wal_table(),
        compactions_table(),
        views_table(),
        nodes_table(),
        leases_table(),
        deletes_table(),
    ] {
        schema.register_table(
            name.to_string(),
            Arc::new(SystemTable {
                name,
                schema: table_schema,
                source: engine.clone(),
                build,
            }),
        )?;
    }
    Ok(Arc::new(schema))
}

fn tables_table() -> (&'static str, SchemaRef, Build) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("table_id", DataType::Int64, false),
        Field::new("columns", DataType::Int64, false),
        // NULL for a reference table, which has none (nor a partition).
        Field::new("time_column", DataType::Utf8, true),
        Field::new("partition", DataType::Utf8, true),
        Field::new("retention", DataType::Utf8, true),
        // NULL for an append-only table.
        Field::new("key", DataType::Utf8, true),
        Field::new("merge", DataType::Utf8, true),
        // The columns new files index for matches_term; NULL: none.
        Field::new("token_index", DataType::Utf8, true),
        Field::new("buffered_rows", DataType::UInt64, false),
        Field::new("buffered_bytes", DataType::UInt64, false),
        Field::new("files", DataType::UInt64, false),
        Field::new("persisted_rows", DataType::UInt64, false),
        Field::new("persisted_bytes", DataType::UInt64, false),
        Field::new("persisted_seq", DataType::UInt64, false),
        Field::new("created_at", ts(), false),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|e: &Engine| {
            let s = e.table_stats();
            let u = |f: &dyn Fn(&sextant_storage::TableStats) -> u64| -> ArrayRef {
                Arc::new(UInt64Array::from_iter_values(s.iter().map(f)))
            };
            Ok(vec![
                Arc::new(StringArray::from_iter_values(
                    s.iter().map(|t| t.def.name.clone()),
                )) as ArrayRef,
                Arc::new(Int64Array::from_iter_values(s.iter().map(|t| t.def.id))),
                Arc::new(Int64Array::from_iter_values(
                    s.iter()
                        .map(|t| t.def.visible_schema().fields().len() as i64),
                )),
                Arc::new(StringArray::from_iter(s.iter().map(|t| {
                    (!t.def.options.reference).then(|| t.def.time_column.clone())
                }))),
                Arc::new(StringArray::from_iter(s.iter().map(|t| {
                    (!t.def.options.reference)
                        .then(|| interval_text(t.def.options.partition_duration))
                }))),
                Arc::new(StringArray::from_iter(
                    s.iter().map(|t| t.def.options.retention.map(interval_text)),
                )),
                Arc::new(StringArray::from_iter(s.iter().map(|t| {
                    t.def.options.key.as_ref().map(|k| k.columns.join(", "))
                }))),
                Arc::new(StringArray::from_iter(
                    s.iter()
                        .map(|t| t.def.options.key.as_ref().map(|k| k.merge.name())),
                )),
                Arc::new(StringArray::from_iter(s.iter().map(|t| {
                    let columns = sextant_storage::indexed_columns(&t.def);
                    (!columns.is_empty()).then(|| columns.join(", "))
                }))),
                u(&|t| t.buffered_rows),
                u(&|t| t.buffered_bytes),
                u(&|t| t.files),
                u(&|t| t.persisted_rows),
                u(&|t| t.persisted_bytes),
                u(&|t| t.def.persisted_seq),
                utc(s.iter().map(|t| Some(t.def.created_at_ns))),
            ])
        }),
    );
    ("tables", schema, build)
}

fn with_schema<S: 'static>(schema: SchemaRef, columns: Columns<S>) -> Build<S> {
    Arc::new(move |e| Ok(RecordBatch::try_new(schema.clone(), columns(e)?)?))
}

fn files_table() -> (&'static str, SchemaRef, Build) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("file_id", DataType::Int64, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("partition_start", ts(), false),
        Field::new("min_time", ts(), false),
        Field::new("max_time", ts(), false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("created_at", ts(), false),
        Field::new("damage", DataType::Utf8, true),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|e: &Engine| {
            let files = e.files();
            let t = |f: &dyn Fn(&sextant_catalog::ParquetFile) -> i64| -> ArrayRef {
                utc(files.iter().map(|(_, p)| Some(f(p))))
            };
            Ok(vec![
                Arc::new(StringArray::from_iter_values(
                    files.iter().map(|(n, _)| n.clone()),
                )) as ArrayRef,
                Arc::new(Int64Array::from_iter_values(
                    files.iter().map(|(_, f)| f.id),
                )),
                Arc::new(StringArray::from_iter_values(
                    files.iter().map(|(_, f)| f.file.path.clone()),
                )),
                t(&|f| f.file.partition_start_ns),
                t(&|f| f.file.min_time_ns),
                t(&|f| f.file.max_time_ns),
                Arc::new(UInt64Array::from_iter_values(
                    files.iter().map(|(_, f)| f.file.rows),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    files.iter().map(|(_, f)| f.file.bytes),
                )),
                t(&|f| f.created_at_ns),
                Arc::new(StringArray::from_iter(
                    files.iter().map(|(_, f)| e.file_damage(&f.file.path)),
                )),
            ])
        }),
    );
    ("files", schema, build)
}

fn wal_table() -> (&'static str, SchemaRef, Build) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("segments", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("last_seq", DataType::UInt64, false),
        Field::new("fsync_before_ack", DataType::Boolean, false),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|e: &Engine| {
            let w = e.wal_stats();
            Ok(vec![
                Arc::new(UInt64Array::from(vec![w.segments as u64])) as ArrayRef,
                Arc::new(UInt64Array::from(vec![w.bytes])),
                Arc::new(UInt64Array::from(vec![w.last_seq])),
                Arc::new(BooleanArray::from(vec![w.sync == SyncMode::Always])),
            ])
        }),
    );
    ("wal", schema, build)
}

/// The latest compaction runs, newest first (the catalog keeps them).
fn compactions_table() -> (&'static str, SchemaRef, Build) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("partition_start", ts(), false),
        Field::new("started_at", ts(), false),
        Field::new("duration_ms", DataType::UInt64, false),
        Field::new("files_in", DataType::UInt64, false),
        Field::new("files_out", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes_in", DataType::UInt64, false),
        Field::new("bytes_out", DataType::UInt64, false),
        Field::new("trigger", DataType::Utf8, false),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|e: &Engine| {
            let runs = e
                .catalog()
                .compactions(10_000)
                .map_err(|err| datafusion::error::DataFusionError::External(Box::new(err)))?;
            let t = |f: &dyn Fn(&sextant_catalog::CompactionRun) -> i64| -> ArrayRef {
                utc(runs.iter().map(|r| Some(f(r))))
            };
            let u = |f: &dyn Fn(&sextant_catalog::CompactionRun) -> u64| -> ArrayRef {
                Arc::new(UInt64Array::from_iter_values(runs.iter().map(f)))
            };
            Ok(vec![
                Arc::new(StringArray::from_iter_values(
                    runs.iter().map(|r| r.table.clone()),
                )) as ArrayRef,
                t(&|r| r.partition_start_ns),
                t(&|r| r.started_at_ns),
                u(&|r| r.duration.as_millis() as u64),
                u(&|r| r.files_in),
                u(&|r| r.files_out),
                u(&|r| r.rows),
                u(&|r| r.bytes_in),
                u(&|r| r.bytes_out),
                Arc::new(StringArray::from_iter_values(
                    runs.iter().map(|r| r.trigger.clone()),
                )),
            ])
        }),
    );
    ("compactions", schema, build)
}

/// Every node that registered in the catalog: its addresses, start, latest
/// heartbeat and state (`up`, `down` after 15 s without a heartbeat,
/// `stopped` cleanly).
fn nodes_table() -> (&'static str, SchemaRef, Build) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("node_id", DataType::Utf8, false),
        Field::new("modes", DataType::Utf8, false),
        Field::new("pg_addr", DataType::Utf8, true),
        Field::new("http_addr", DataType::Utf8, true),
        Field::new("grpc_addr", DataType::Utf8, true),
        Field::new("flight_addr", DataType::Utf8, true),
        Field::new("started_at", ts(), false),
        Field::new("last_heartbeat", ts(), false),
        Field::new("state", DataType::Utf8, false),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|e: &Engine| {
            let nodes = e
                .catalog()
                .nodes()
                .map_err(|err| datafusion::error::DataFusionError::External(Box::new(err)))?;
            let now = e.now_ns();
            let text = |f: &dyn Fn(&sextant_catalog::NodeInfo) -> String| -> ArrayRef {
                Arc::new(StringArray::from_iter_values(nodes.iter().map(f)))
            };
            let address = |name: &str| -> ArrayRef {
                Arc::new(StringArray::from_iter(nodes.iter().map(|n| {
                    serde_json::from_str::<serde_json::Value>(&n.addresses)
                        .ok()
                        .and_then(|a| a.get(name)?.as_str().map(str::to_string))
                })))
            };
            let t = |f: &dyn Fn(&sextant_catalog::NodeInfo) -> i64| -> ArrayRef {
                utc(nodes.iter().map(|n| Some(f(n))))
            };
            Ok(vec![
                text(&|n| n.id.clone()),
                text(&|n| n.modes.clone()),
                address("pg"),
                address("http"),
                address("grpc"),
                address("flight"),
                t(&|n| n.started_at_ns),
                t(&|n| n.last_heartbeat_ns),
                text(&|n| n.state(now).to_string()),
            ])
        }),
    );
    ("nodes", schema, build)
}

/// Which node runs each singleton job, since when and until when (unless
/// it renews the lease).
fn leases_table() -> (&'static str, SchemaRef, Build) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("holder", DataType::Utf8, false),
        Field::new("acquired_at", ts(), false),
        Field::new("expires_at", ts(), false),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|e: &Engine| {
            let leases = e
                .catalog()
                .leases()
                .map_err(|err| datafusion::error::DataFusionError::External(Box::new(err)))?;
            let t = |f: &dyn Fn(&sextant_catalog::Lease) -> i64| -> ArrayRef {
                utc(leases.iter().map(|l| Some(f(l))))
            };
            Ok(vec![
                Arc::new(StringArray::from_iter_values(
                    leases.iter().map(|l| l.name.clone()),
                )) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    leases.iter().map(|l| l.holder.clone()),
                )),
                t(&|l| l.acquired_at_ns),
                t(&|l| l.expires_at_ns),
            ])
        }),
    );
    ("leases", schema, build)
}

/// The deletes whose rows some files still hold (until compaction
/// rewrites them): docs/storage.md, "DELETE".
fn deletes_table() -> (&'static str, SchemaRef, Build) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("condition", DataType::Utf8, false),
        Field::new("deleted_at", ts(), false),
        Field::new("node", DataType::Utf8, false),
        Field::new("files_to_rewrite", DataType::UInt64, false),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|e: &Engine| {
            let deletes = e.delete_stats();
            Ok(vec![
                Arc::new(StringArray::from_iter_values(
                    deletes.iter().map(|d| d.table.clone()),
                )) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    deletes.iter().map(|d| d.delete.predicate.clone()),
                )),
                utc(deletes.iter().map(|d| Some(d.delete.created_at_ns))),
                Arc::new(StringArray::from_iter_values(
                    deletes.iter().map(|d| d.delete.node.clone()),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    deletes.iter().map(|d| d.files as u64),
                )),
            ])
        }),
    );
    ("deletes", schema, build)
}

/// Each materialized view: its definition and how its maintenance is going.
fn views_table() -> (&'static str, SchemaRef, Build) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("view_name", DataType::Utf8, false),
        Field::new("base_table", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
        Field::new("bucket", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, false),
        Field::new("backfill_progress", DataType::Float64, true),
        Field::new("pending_buckets", DataType::UInt64, false),
        Field::new("oldest_pending", ts(), true),
        Field::new("newest_base_time", ts(), true),
        Field::new("newest_view_time", ts(), true),
        Field::new("materialized_until", ts(), true),
        Field::new("lag_seconds", DataType::Float64, true),
        Field::new("last_refresh", ts(), true),
        Field::new("last_refresh_ms", DataType::UInt64, false),
        Field::new("refreshes", DataType::UInt64, false),
        Field::new("last_error", DataType::Utf8, true),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|e: &Engine| {
            let v = e.view_stats();
            let t = |f: &dyn Fn(&sextant_storage::ViewStats) -> Option<i64>| -> ArrayRef {
                utc(v.iter().map(f))
            };
            let text = |f: &dyn Fn(&sextant_storage::ViewStats) -> Option<String>| -> ArrayRef {
                Arc::new(StringArray::from_iter(v.iter().map(f)))
            };
            let progress = |s: &sextant_storage::ViewStats| -> Option<f64> {
                if let Some((done, total)) = s.status.backfill_rows {
                    return Some(if total == 0 {
                        0.0
                    } else {
                        done as f64 / total as f64
                    });
                }
                let (from, to) = s.def.progress.backfill?;
                if from == i64::MIN || to <= from {
                    return Some(0.0);
                }
                Some((s.def.progress.backfilled_to_ns.max(from) - from) as f64 / (to - from) as f64)
            };
            let by_name: std::collections::HashMap<&str, &sextant_storage::ViewStats> =
                v.iter().map(|s| (s.def.name.as_str(), s)).collect();
            let own = |s: &sextant_storage::ViewStats| -> &'static str {
                if s.status.last_error.is_some() {
                    "error"
                } else if s.def.progress.backfill.is_some() || s.status.backfill_rows.is_some() {
                    "backfilling"
                } else if s.pending_buckets > 0 {
                    "refreshing"
                } else {
                    "current"
                }
            };
            // A view over a view is not current while the view it reads
            // is still backfilling or refreshing: it says what that one does.
            let state = |s: &sextant_storage::ViewStats| -> String {
                let mut here = s;
                let mut state = own(here);
                for _ in 0..by_name.len() {
                    if state != "current" {
                        break;
                    }
                    let Some(base) = by_name.get(here.def.base_table.as_str()) else {
                        break;
                    };
                    here = base;
                    state = match own(here) {
                        "error" => "current",
                        other => other,
                    };
                }
                state.to_string()
            };
            Ok(vec![
                text(&|s| Some(s.def.name.clone())),
                text(&|s| Some(s.def.base_table.clone())),
                text(&|s| Some(s.def.spec.kind.as_str().to_string())),
                text(&|s| Some(s.def.query.clone())),
                text(&|s| {
                    (s.def.spec.bucket_ns > 0).then(|| {
                        interval_text(std::time::Duration::from_nanos(s.def.spec.bucket_ns as u64))
                    })
                }),
                text(&|s| Some(state(s))),
                Arc::new(Float64Array::from_iter(v.iter().map(progress))),
                Arc::new(UInt64Array::from_iter_values(
                    v.iter().map(|s| s.pending_buckets),
                )),
                t(&|s| s.oldest_pending_ns),
                t(&|s| s.base_newest_ns),
                t(&|s| s.view_newest_ns),
                t(&|s| s.status.materialized_ns),
                Arc::new(Float64Array::from_iter(v.iter().map(|s| {
                    let base = s.base_newest_ns?;
                    let done = s.status.materialized_ns?;
                    Some((base - done).max(0) as f64 / 1e9)
                }))),
                t(&|s| s.status.last_refresh_ns),
                Arc::new(UInt64Array::from_iter_values(
                    v.iter().map(|s| s.status.last_duration_ms),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    v.iter().map(|s| s.status.refreshes),
                )),
                text(&|s| s.status.last_error.clone()),
            ])
        }),
    );
    ("materialized_views", schema, build)
}

/// Adds one more table to the session's `system` schema.
fn add_table<S: Send + Sync + 'static>(
    ctx: &datafusion::prelude::SessionContext,
    name: &'static str,
    schema: SchemaRef,
    source: S,
    build: Build<S>,
) -> Result<()> {
    let system = ctx
        .catalog(sextant_catalog::DATABASE_NAME)
        .and_then(|c| c.schema("system"))
        .ok_or_else(|| datafusion::error::DataFusionError::Plan("no system schema".into()))?;
    system.register_table(
        name.to_string(),
        Arc::new(SystemTable {
            name,
            schema,
            source,
            build,
        }),
    )?;
    Ok(())
}

/// Adds `system.alerts` and `system.alert_events` to the session's system
/// schema.
pub(crate) fn register_alerts(
    ctx: &datafusion::prelude::SessionContext,
    alerts: &Alerts,
) -> Result<()> {
    for (name, table_schema, build) in [alerts_table(), alert_events_table()] {
        add_table(ctx, name, table_schema, alerts.clone(), build)?;
    }
    Ok(())
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn nanos_text(ns: i64) -> Option<String> {
    (ns > 0).then(|| interval_text(std::time::Duration::from_nanos(ns as u64)))
}

/// Each alert rule: its definition, where its instances are, and how its
/// evaluations go.
fn alerts_table() -> (&'static str, SchemaRef, Build<Alerts>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("alert_name", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("health", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("every", DataType::Utf8, false),
        Field::new("for", DataType::Utf8, true),
        Field::new("keep_firing_for", DataType::Utf8, true),
        Field::new("labels", DataType::Utf8, false),
        Field::new("annotations", DataType::Utf8, false),
        Field::new("webhook", DataType::Utf8, false),
        Field::new("pending", DataType::UInt64, false),
        Field::new("firing", DataType::UInt64, false),
        Field::new("evaluations", DataType::UInt64, false),
        Field::new("last_evaluation", ts(), true),
        Field::new("last_duration_ms", DataType::Float64, true),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("next_run", ts(), true),
        Field::new("undelivered", DataType::UInt64, false),
        Field::new("created_at", ts(), false),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|a: &Alerts| {
            let rules = a.list();
            let text = |f: &dyn Fn(&AlertInfo) -> Option<String>| -> ArrayRef {
                Arc::new(StringArray::from_iter(rules.iter().map(f)))
            };
            let u = |f: &dyn Fn(&AlertInfo) -> u64| -> ArrayRef {
                Arc::new(UInt64Array::from_iter_values(rules.iter().map(f)))
            };
            let t =
                |f: &dyn Fn(&AlertInfo) -> Option<i64>| -> ArrayRef { utc(rules.iter().map(f)) };
            Ok(vec![
                text(&|r| Some(r.def.name.clone())),
                text(&|r| Some(r.state.summary().to_string())),
                text(&|r| {
                    Some(
                        match (&r.state.last_eval_ns, &r.state.last_error) {
                            (_, Some(_)) => "error",
                            (None, None) => "unknown",
                            (Some(_), None) => "ok",
                        }
                        .to_string(),
                    )
                }),
                text(&|r| Some(r.def.query.clone())),
                text(&|r| nanos_text(r.def.every_ns)),
                text(&|r| nanos_text(r.def.for_ns)),
                text(&|r| nanos_text(r.def.keep_firing_for_ns)),
                text(&|r| Some(json_text(&r.def.labels))),
                text(&|r| Some(json_text(&r.def.annotations))),
                text(&|r| Some(r.def.webhook.clone())),
                u(&|r| r.state.count(Phase::Pending)),
                u(&|r| r.state.count(Phase::Firing)),
                u(&|r| r.state.evaluations),
                t(&|r| r.state.last_eval_ns),
                Arc::new(Float64Array::from_iter(rules.iter().map(|r| {
                    r.state
                        .last_eval_ns
                        .map(|_| r.state.last_duration_us as f64 / 1000.0)
                }))),
                text(&|r| r.state.last_error.clone()),
                t(&|r| (!r.state.paused).then_some(r.state.next_run_ns)),
                u(&|r| r.queued),
                t(&|r| Some(r.created_at_ns)),
            ])
        }),
    );
    ("alerts", schema, build)
}

/// Every transition of an alert instance and every notification attempt,
/// oldest first (the catalog keeps the latest 100 000).
fn alert_events_table() -> (&'static str, SchemaRef, Build<Alerts>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("time", ts(), false),
        Field::new("alert_name", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, true),
        Field::new("from_state", DataType::Utf8, true),
        Field::new("to_state", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("attempt", DataType::UInt64, true),
        Field::new("outcome", DataType::Utf8, true),
        Field::new("http_status", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("values", DataType::Utf8, true),
    ]));
    let build = with_schema(
        schema.clone(),
        Arc::new(|a: &Alerts| {
            let events = a
                .events(100_000)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            let text = |f: &dyn Fn(&EventRow) -> Option<String>| -> ArrayRef {
                Arc::new(StringArray::from_iter(events.iter().map(f)))
            };
            Ok(vec![
                utc(events.iter().map(|e| Some(e.time_ns))),
                text(&|e| Some(e.alert.clone())),
                text(&|e| Some(e.event.event.clone())),
                text(&|e| e.event.labels.as_ref().map(json_text)),
                text(&|e| e.event.from.clone()),
                text(&|e| e.event.to.clone()),
                text(&|e| e.event.status.clone()),
                Arc::new(UInt64Array::from_iter(
                    events.iter().map(|e| e.event.attempt.map(u64::from)),
                )),
                text(&|e| e.event.outcome.clone()),
                Arc::new(Int64Array::from_iter(
                    events.iter().map(|e| e.event.http_status.map(i64::from)),
                )),
                text(&|e| e.event.error.clone()),
                text(&|e| e.event.values.as_ref().map(json_text)),
            ])
        }),
    );
    ("alert_events", schema, build)
}

/// What the gauges of the metrics are read from, just before each read of
/// `/metrics` or `system.metrics`.
pub(crate) struct Gauges {
    pub(crate) engine: Engine,
    pub(crate) alerts: Alerts,
    pub(crate) pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
}

impl Gauges {
    /// Sets the state-like metrics: write buffer, query memory, view lag,
    /// firing alerts.
    pub(crate) fn refresh(&self) {
        let m = sextant_metrics::metrics();
        let tables = self.engine.table_stats();
        m.buffer_bytes
            .set(tables.iter().map(|t| t.buffered_bytes as i64).sum());
        m.buffer_rows
            .set(tables.iter().map(|t| t.buffered_rows as i64).sum());
        m.query_memory_bytes.set(self.pool.reserved() as i64);
        m.ingest_inflight_bytes
            .set(self.engine.inflight_bytes() as i64);
        m.buffer_work_bytes.set(self.engine.working_bytes() as i64);
        // jemalloc's figures, as of a new epoch.
        if tikv_jemalloc_ctl::epoch::advance().is_ok() {
            if let Ok(n) = tikv_jemalloc_ctl::stats::allocated::read() {
                m.memory_allocated_bytes.set(n as i64);
            }
            if let Ok(n) = tikv_jemalloc_ctl::stats::resident::read() {
                m.memory_resident_bytes.set(n as i64);
            }
        }
        for v in self.engine.view_stats() {
            if let (Some(base), Some(done)) = (v.base_newest_ns, v.status.materialized_ns) {
                m.view_lag_seconds
                    .with_label_values(&[v.def.name.as_str()])
                    .set((base - done).max(0) as f64 / 1e9);
            }
        }
        m.alerts_firing.reset();
        for a in self.alerts.list() {
            m.alerts_firing
                .with_label_values(&[a.def.name.as_str()])
                .set(a.state.count(Phase::Firing) as i64);
        }
    }
}

/// Adds `system.metrics`: the samples of `GET /metrics`, one row each.
pub(crate) fn register_metrics(
    ctx: &datafusion::prelude::SessionContext,
    gauges: Arc<Gauges>,
) -> Result<()> {
    let table_schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("help", DataType::Utf8, false),
    ]));
    let build = with_schema(
        table_schema.clone(),
        Arc::new(|g: &Arc<Gauges>| {
            g.refresh();
            let s = sextant_metrics::samples();
            let text = |f: &dyn Fn(&sextant_metrics::Sample) -> String| -> ArrayRef {
                Arc::new(StringArray::from_iter_values(s.iter().map(f)))
            };
            Ok(vec![
                text(&|x| x.name.clone()),
                text(&|x| x.labels.clone()),
                Arc::new(Float64Array::from_iter_values(s.iter().map(|x| x.value))) as ArrayRef,
                text(&|x| x.kind.clone()),
                text(&|x| x.help.clone()),
            ])
        }),
    );
    add_table(ctx, "metrics", table_schema, gauges, build)
}

/// Adds `system.queries`: running statements, then the latest 1000 that
/// finished, newest first.
pub(crate) fn register_queries(
    ctx: &datafusion::prelude::SessionContext,
    queries: &sextant_sql::Queries,
) -> Result<()> {
    let table_schema = Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Int64, false),
        Field::new("pid", DataType::Int32, true),
        Field::new("user_name", DataType::Utf8, false),
        Field::new("protocol", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("started_at", ts(), false),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes_scanned", DataType::UInt64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
    ]));
    let build = with_schema(
        table_schema.clone(),
        Arc::new(|q: &sextant_sql::Queries| {
            let list = q.list();
            let text = |f: &dyn Fn(&sextant_sql::QueryInfo) -> Option<String>| -> ArrayRef {
                Arc::new(StringArray::from_iter(list.iter().map(f)))
            };
            Ok(vec![
                Arc::new(Int64Array::from_iter_values(
                    list.iter().map(|i| i.id as i64),
                )) as ArrayRef,
                Arc::new(arrow::array::Int32Array::from_iter(
                    list.iter().map(|i| i.pid),
                )),
                text(&|i| Some(i.user.clone())),
                text(&|i| Some(i.protocol.to_string())),
                text(&|i| Some(i.text.clone())),
                utc(list.iter().map(|i| Some(i.started_ns))),
                Arc::new(Float64Array::from_iter_values(
                    list.iter().map(|i| i.duration.as_secs_f64() * 1000.0),
                )),
                Arc::new(UInt64Array::from_iter_values(list.iter().map(|i| i.rows))),
                Arc::new(UInt64Array::from_iter_values(
                    list.iter().map(|i| i.bytes_scanned),
                )),
                text(&|i| Some(i.state.to_string())),
                text(&|i| i.error.clone()),
            ])
        }),
    );
    add_table(ctx, "queries", table_schema, queries.clone(), build)
}

/// Adds `system.users`, `system.grants` and `system.tokens` (never a
/// password or a token's secret). A non-admin sees its own rows only
/// (`sextant_sql::authorize_plan`).
pub(crate) fn register_access(
    ctx: &datafusion::prelude::SessionContext,
    directory: &Arc<sextant_auth::Directory>,
) -> Result<()> {
    type Dir = Arc<sextant_auth::Directory>;
    let text = |v: Vec<Option<String>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let time = |v: Vec<Option<i64>>| -> ArrayRef { utc(v) };

    let users = Arc::new(Schema::new(vec![
        Field::new("user_name", DataType::Utf8, false),
        Field::new("admin", DataType::Boolean, false),
        Field::new("auth_method", DataType::Utf8, false),
        Field::new("created_at", ts(), false),
    ]));
    let build = with_schema(
        users.clone(),
        Arc::new(move |d: &Dir| {
            let rows = d.users();
            Ok(vec![
                text(rows.iter().map(|u| Some(u.name.clone())).collect()),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|u| Some(u.admin)))) as ArrayRef,
                text(
                    rows.iter()
                        .map(|u| Some(u.auth_method.to_string()))
                        .collect(),
                ),
                time(rows.iter().map(|u| Some(u.created_at_ns)).collect()),
            ])
        }),
    );
    add_table(ctx, "users", users, directory.clone(), build)?;

    let grants = Arc::new(Schema::new(vec![
        Field::new("user_name", DataType::Utf8, false),
        Field::new("privilege", DataType::Utf8, false),
        Field::new("object", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, true),
    ]));
    let build = with_schema(
        grants.clone(),
        Arc::new(move |d: &Dir| {
            let rows = d.grants();
            Ok(vec![
                text(rows.iter().map(|g| Some(g.user.clone())).collect()),
                text(
                    rows.iter()
                        .map(|g| Some(g.privilege.as_str().to_string()))
                        .collect(),
                ),
                text(
                    rows.iter()
                        .map(|g| {
                            Some(
                                if g.table.is_some() {
                                    "table"
                                } else {
                                    "database"
                                }
                                .into(),
                            )
                        })
                        .collect(),
                ),
                text(rows.iter().map(|g| g.table.clone()).collect()),
            ])
        }),
    );
    add_table(ctx, "grants", grants, directory.clone(), build)?;

    let tokens = Arc::new(Schema::new(vec![
        Field::new("token_name", DataType::Utf8, false),
        Field::new("user_name", DataType::Utf8, false),
        Field::new("insert_only_table", DataType::Utf8, true),
        Field::new("expires_at", ts(), true),
        Field::new("expired", DataType::Boolean, false),
        Field::new("created_at", ts(), false),
    ]));
    let build = with_schema(
        tokens.clone(),
        Arc::new(move |d: &Dir| {
            let rows = d.tokens();
            let now = d.now_ns();
            Ok(vec![
                text(rows.iter().map(|t| Some(t.name.clone())).collect()),
                text(rows.iter().map(|t| Some(t.user.clone())).collect()),
                text(rows.iter().map(|t| t.table.clone()).collect()),
                time(rows.iter().map(|t| t.expires_at_ns).collect()),
                Arc::new(BooleanArray::from_iter(
                    rows.iter()
                        .map(|t| Some(t.expires_at_ns.is_some_and(|e| e <= now))),
                )) as ArrayRef,
                time(rows.iter().map(|t| Some(t.created_at_ns)).collect()),
            ])
        }),
    );
    add_table(ctx, "tokens", tokens, directory.clone(), build)
}
