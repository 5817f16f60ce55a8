//! Series out of Sextant's metric tables, read through DataFusion.
//!
//! A metric table is one remote write fills: a `time` timestamp, a
//! `value` double and a text column per label, named by the metric. A
//! selector's `__name__` matchers pick the tables (one for `name{...}`,
//! any number for `{__name__=~"..."}` or `{job="x"}`); its other matchers
//! and the time range become the scan's filters, so DataFusion prunes
//! Parquet files and row groups as it does for SQL, under the session's
//! memory pool and the query's cancellation. Rows are then grouped into
//! series by their label values, sorted by time, and a repeated timestamp
//! keeps its last value. What the series hold is reserved from the memory
//! pool: a selector over more than the query memory limit fails instead of
//! taking the server down.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Schema, TimestampNanosecondType};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{Expr as DfExpr, Operator, binary_expr, col, lit};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::PromError;
use crate::eval::{Point, Series};
use crate::ir::{MatchKind, Matcher};
use crate::labels::{Labels, METRIC_NAME};

const TIME: &str = "time";
const VALUE: &str = "value";

/// Whether a table of this schema holds a metric.
pub fn is_metric_table(schema: &Schema) -> bool {
    let time = schema.field_with_name(TIME).ok();
    let value = schema.field_with_name(VALUE).ok();
    matches!(time.map(|f| f.data_type()), Some(DataType::Timestamp(_, _)))
        && matches!(value.map(|f| f.data_type()), Some(DataType::Float64))
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

/// Reads series for one query: its tables, its memory.
pub struct TableSource {
    ctx: Arc<SessionContext>,
    reservation: MemoryReservation,
    /// Whether the querying principal may read a table.
    may_read: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl TableSource {
    pub fn new(
        ctx: Arc<SessionContext>,
        may_read: Box<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Self {
        let reservation =
            MemoryConsumer::new("promql series").register(&ctx.runtime_env().memory_pool);
        Self {
            ctx,
            reservation,
            may_read,
        }
    }

    /// The metric tables whose name the `__name__` matchers accept, with
    /// their schemas.
    pub async fn tables(
        &self,
        matchers: &[Matcher],
    ) -> Result<Vec<(String, Arc<Schema>)>, PromError> {
        let names: Vec<String> = match matchers
            .iter()
            .find(|m| m.name == METRIC_NAME && matches!(m.op, MatchKind::Equal))
        {
            Some(m) => vec![m.value.clone()],
            None => {
                let mut all = self.schema()?.table_names();
                all.sort();
                all
            }
        };
        let schema = self.schema()?;
        let mut out = Vec::new();
        for name in names {
            if !matchers
                .iter()
                .filter(|m| m.name == METRIC_NAME)
                .all(|m| m.matches(&name))
                || !(self.may_read)(&name)
            {
                continue;
            }
            let Ok(Some(table)) = schema.table(&name).await else {
                continue;
            };
            let s = table.schema();
            if is_metric_table(&s) {
                out.push((name, s));
            }
        }
        Ok(out)
    }

    fn schema(&self) -> Result<Arc<dyn datafusion::catalog::SchemaProvider>, PromError> {
        let state = self.ctx.state();
        let options = &state.config().options().catalog;
        self.ctx
            .catalog(&options.default_catalog)
            .and_then(|c| c.schema(&options.default_schema))
            .ok_or_else(|| PromError::internal("the session has no default schema"))
    }

    /// The series `matchers` select, with their samples in `[mint, maxt]`
    /// (milliseconds), staleness markers included.
    pub async fn select(
        &mut self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Series>, PromError> {
        let mut out = Vec::new();
        for (table, schema) in self.tables(matchers).await? {
            self.select_table(&table, &schema, matchers, mint, maxt, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// The DataFrame of `table`'s rows that `matchers` select in
    /// `[mint, maxt]`, and the table's label columns; `None` when a
    /// matcher on a label the table does not have refuses every series.
    async fn scan(
        &self,
        table: &str,
        schema: &Schema,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Option<(datafusion::dataframe::DataFrame, Vec<String>)>, PromError> {
        let labels: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| f.name() != TIME && f.name() != VALUE && is_text(f.data_type()))
            .map(|f| f.name().clone())
            .collect();
        let ns = |ms: i64| ms.saturating_mul(1_000_000);
        let mut filter = col(TIME)
            .gt_eq(lit(ScalarTime(ns(mint)).value()))
            .and(col(TIME).lt_eq(lit(ScalarTime(ns(maxt).saturating_add(999_999)).value())));
        for m in matchers.iter().filter(|m| m.name != METRIC_NAME) {
            if !labels.contains(&m.name) {
                // No such column: the label is empty in every series.
                if m.matches("") {
                    continue;
                }
                return Ok(None);
            }
            filter = filter.and(matcher_filter(m));
        }
        let df = self
            .ctx
            .table(datafusion::common::TableReference::bare(table))
            .await
            .and_then(|df| df.filter(filter))
            .map_err(|e| df_error(&e))?;
        Ok(Some((df, labels)))
    }

    async fn select_table(
        &mut self,
        table: &str,
        schema: &Schema,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        out: &mut Vec<Series>,
    ) -> Result<(), PromError> {
        let Some((df, labels)) = self.scan(table, schema, matchers, mint, maxt).await? else {
            return Ok(());
        };
        let mut projection = vec![col(TIME), col(VALUE)];
        projection.extend(labels.iter().map(|l| col(quoted(l))));
        let df = df.select(projection).map_err(|e| df_error(&e))?;
        let mut stream = df.execute_stream().await.map_err(|e| df_error(&e))?;
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let first = out.len();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| df_error(&e))?;
            self.add_batch(table, &labels, &batch, &mut index, out)?;
        }
        for s in &mut out[first..] {
            sort_and_dedup(&mut s.points);
        }
        Ok(())
    }

    /// The label sets of the series `matchers` select that have samples in
    /// `[mint, maxt]`, without reading the samples (`/api/v1/series`,
    /// `/labels`, `/label/<name>/values`).
    pub async fn series_labels(
        &mut self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, PromError> {
        let mut out = Vec::new();
        for (table, schema) in self.tables(matchers).await? {
            let Some((df, labels)) = self.scan(&table, &schema, matchers, mint, maxt).await? else {
                continue;
            };
            let df = if labels.is_empty() {
                df.select(vec![col(TIME)])
                    .and_then(|df| df.limit(0, Some(1)))
            } else {
                df.select(labels.iter().map(|l| col(quoted(l))).collect::<Vec<_>>())
                    .and_then(|df| df.distinct())
            }
            .map_err(|e| df_error(&e))?;
            let mut stream = df.execute_stream().await.map_err(|e| df_error(&e))?;
            let mut seen: std::collections::HashSet<Labels> = std::collections::HashSet::new();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| df_error(&e))?;
                let texts: Vec<Arc<dyn Array>> = if labels.is_empty() {
                    Vec::new()
                } else {
                    batch
                        .columns()
                        .iter()
                        .map(|c| arrow::compute::cast(c, &DataType::Utf8))
                        .collect::<Result<_, _>>()
                        .map_err(|e| PromError::internal(e.to_string()))?
                };
                for row in 0..batch.num_rows() {
                    let mut pairs = vec![(METRIC_NAME.to_string(), table.clone())];
                    for (l, a) in labels.iter().zip(&texts) {
                        let a = a.as_string::<i32>();
                        if !a.is_null(row) {
                            pairs.push((l.clone(), a.value(row).to_string()));
                        }
                    }
                    let labels = Labels::new(pairs);
                    self.grow(labels.iter().map(|(a, b)| a.len() + b.len() + 48).sum())?;
                    // NULL and '' are one label value, so DISTINCT can
                    // give one series twice.
                    if seen.insert(labels.clone()) {
                        out.push(labels);
                    }
                }
            }
        }
        Ok(out)
    }

    fn add_batch(
        &mut self,
        table: &str,
        labels: &[String],
        batch: &RecordBatch,
        index: &mut HashMap<Vec<u8>, usize>,
        out: &mut Vec<Series>,
    ) -> Result<(), PromError> {
        let n = batch.num_rows();
        self.grow(n * std::mem::size_of::<Point>())?;
        let time = arrow::compute::cast(
            batch.column(0),
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
        )
        .map_err(|e| PromError::internal(e.to_string()))?;
        let time = time.as_primitive::<TimestampNanosecondType>();
        let value = batch.column(1).as_primitive::<Float64Type>();
        let texts: Vec<Arc<dyn Array>> = (0..labels.len())
            .map(|i| arrow::compute::cast(batch.column(2 + i), &DataType::Utf8))
            .collect::<Result<_, _>>()
            .map_err(|e| PromError::internal(e.to_string()))?;
        let texts: Vec<&arrow::array::StringArray> =
            texts.iter().map(|a| a.as_string::<i32>()).collect();
        // The row's label values as one byte string (each value's length,
        // then its bytes; an empty or NULL value as no bytes at all), built
        // in one buffer: a row of a series already seen allocates nothing.
        let mut key: Vec<u8> = Vec::new();
        // The previous row's series: rows come sorted by series more often
        // than not, and a row whose label values are the previous row's is
        // of its series without building or hashing its key.
        let mut prev: Option<(usize, usize)> = None;
        for row in 0..n {
            if time.is_null(row) || value.is_null(row) {
                continue;
            }
            let same = |p: usize| {
                texts
                    .iter()
                    .all(|a| label_value(a, row) == label_value(a, p))
            };
            let i = match prev {
                Some((p, i)) if same(p) => i,
                _ => self.series_of(table, labels, &texts, row, &mut key, index, out)?,
            };
            prev = Some((row, i));
            // Nanoseconds to milliseconds, as Prometheus keeps them.
            out[i].points.push(Point {
                t: time.value(row).div_euclid(1_000_000),
                v: value.value(row),
            });
        }
        Ok(())
    }

    /// The index in `out` of the series of `row`, added if it is new.
    #[allow(clippy::too_many_arguments)]
    fn series_of(
        &mut self,
        table: &str,
        labels: &[String],
        texts: &[&arrow::array::StringArray],
        row: usize,
        key: &mut Vec<u8>,
        index: &mut HashMap<Vec<u8>, usize>,
        out: &mut Vec<Series>,
    ) -> Result<usize, PromError> {
        key.clear();
        for a in texts {
            let v = label_value(a, row);
            key.extend_from_slice(&(v.len() as u64).to_le_bytes());
            key.extend_from_slice(v.as_bytes());
        }
        Ok(match index.get(key.as_slice()) {
            Some(&i) => i,
            None => {
                let mut pairs = vec![(METRIC_NAME.to_string(), table.to_string())];
                for (l, a) in labels.iter().zip(texts) {
                    if !a.is_null(row) && !a.value(row).is_empty() {
                        pairs.push((l.clone(), a.value(row).to_string()));
                    }
                }
                let size: usize = pairs.iter().map(|(a, b)| a.len() + b.len() + 48).sum();
                self.grow(size)?;
                out.push(Series {
                    metric: Arc::new(Labels::new(pairs)),
                    points: Vec::new(),
                });
                index.insert(key.clone(), out.len() - 1);
                out.len() - 1
            }
        })
    }

    fn grow(&mut self, bytes: usize) -> Result<(), PromError> {
        self.reservation.try_grow(bytes).map_err(|_| {
            PromError::execution(format!(
                "query processing would load too many samples into memory in query execution: the series read hold more than the query memory limit ({} bytes reserved)",
                self.reservation.size()
            ))
        })
    }
}

/// A timestamp literal in nanoseconds, UTC.
struct ScalarTime(i64);

impl ScalarTime {
    fn value(self) -> datafusion::scalar::ScalarValue {
        datafusion::scalar::ScalarValue::TimestampNanosecond(Some(self.0), Some("UTC".into()))
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A label matcher as a filter on the label's column (NULL is the empty
/// value).
fn matcher_filter(m: &Matcher) -> DfExpr {
    let c = col(quoted(&m.name));
    let value = |c: DfExpr| c.clone().is_not_null().and(c.not_eq(lit("")));
    let cond = match &m.op {
        MatchKind::Equal if m.value.is_empty() => return datafusion::logical_expr::not(value(c)),
        MatchKind::Equal => c.clone().eq(lit(m.value.clone())),
        MatchKind::NotEqual if m.value.is_empty() => return value(c),
        MatchKind::NotEqual => c.clone().not_eq(lit(m.value.clone())),
        MatchKind::Re(r) => binary_expr(c.clone(), Operator::RegexMatch, lit(r.as_str())),
        MatchKind::NotRe(r) => binary_expr(c.clone(), Operator::RegexNotMatch, lit(r.as_str())),
    };
    // Where the column is NULL the label is empty: it matches as "" does.
    if m.matches("") {
        c.is_null().or(cond)
    } else {
        c.is_not_null().and(cond)
    }
}

fn df_error(e: &datafusion::error::DataFusionError) -> PromError {
    use datafusion::error::DataFusionError as E;
    match e.find_root() {
        E::ResourcesExhausted(m) => PromError::execution(format!(
            "query processing would load too many samples into memory in query execution: {m}"
        )),
        other => PromError::internal(format!("reading series: {other}")),
    }
}

/// A label's value in `row`: NULL is the empty value.
fn label_value(a: &arrow::array::StringArray, row: usize) -> &str {
    if a.is_null(row) { "" } else { a.value(row) }
}

/// Sorts by time; of points with one timestamp the last read wins.
fn sort_and_dedup(points: &mut Vec<Point>) {
    if points.windows(2).any(|w| w[0].t >= w[1].t) {
        points.sort_by_key(|p| p.t);
        let mut out: Vec<Point> = Vec::with_capacity(points.len());
        for p in points.drain(..) {
            match out.last_mut() {
                Some(last) if last.t == p.t => *last = p,
                _ => out.push(p),
            }
        }
        *points = out;
    }
}
