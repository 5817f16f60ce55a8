//! PromQL from SQL: `promql('<expr>'[, time])` (an instant query, at now()
//! without a time) and `promql('<expr>', start, end, step)` (a range
//! query), a table of `time`, `value` and `labels` (the label set as a
//! JSON object) with one row per sample, so a materialized view or an
//! alert rule can use a PromQL expression.
//!
//! The arguments are constants once DataFusion has simplified them
//! (`now() - INTERVAL '1 hour'` is one); times are timestamps, Unix
//! seconds or RFC 3339 text, the step an interval, seconds or a Prometheus
//! duration (`'30s'`). The expression is parsed when the statement is
//! planned (a bad one fails there) and evaluated when it is scanned, in the
//! statement's session: the same memory pool, and the statement's
//! principal, whose plans DataFusion checks as it reads each table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Float64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use crate::{ErrorKind, Params, PromError, TableSource, Value, params};

/// `promql(...)`, with the server's PromQL settings.
#[derive(Debug, Clone, Copy)]
pub struct PromqlFunction {
    pub lookback_ms: i64,
    pub max_samples: usize,
    pub subquery_step_ms: i64,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("value", DataType::Float64, false),
        Field::new("labels", DataType::Utf8, false),
    ]))
}

fn plan_error(message: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(message.into())
}

/// A PromQL error as DataFusion carries it: the expression's faults as
/// planning errors, the rest as execution errors.
fn df_error(e: PromError) -> DataFusionError {
    match e.kind {
        ErrorKind::BadData => plan_error(format!("promql: {}", e.message)),
        ErrorKind::Execution if e.message.contains("memory") => {
            DataFusionError::ResourcesExhausted(format!("promql: {}", e.message))
        }
        _ => DataFusionError::Execution(format!("promql: {}", e.message)),
    }
}

fn time_ms(v: &ScalarValue, what: &str) -> Result<i64> {
    let ms = match v {
        ScalarValue::TimestampNanosecond(Some(t), _) => t.div_euclid(1_000_000),
        ScalarValue::TimestampMicrosecond(Some(t), _) => t.div_euclid(1_000),
        ScalarValue::TimestampMillisecond(Some(t), _) => *t,
        ScalarValue::TimestampSecond(Some(t), _) => t.saturating_mul(1000),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => {
            params::parse_time(s).map_err(|e| plan_error(format!("promql(): the {what}: {e}")))?
        }
        v if v.data_type().is_numeric() && !v.is_null() => {
            let secs = v
                .cast_to(&DataType::Float64)
                .ok()
                .and_then(|f| match f {
                    ScalarValue::Float64(Some(f)) => Some(f),
                    _ => None,
                })
                .unwrap_or(f64::NAN);
            params::parse_time(&secs.to_string())
                .map_err(|e| plan_error(format!("promql(): the {what}: {e}")))?
        }
        other => {
            return Err(plan_error(format!(
                "promql(): the {what} is a timestamp, Unix seconds or RFC 3339 text, not {other}"
            )));
        }
    };
    Ok(ms)
}

fn step_ms(v: &ScalarValue) -> Result<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Ok(i64::from(i.days) * 86_400_000 + i.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Ok(i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds))
        }
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => {
            params::parse_duration(s).map_err(|e| plan_error(format!("promql(): the step: {e}")))
        }
        v if v.data_type().is_numeric() && !v.is_null() => {
            let text = v.to_string();
            params::parse_duration(&text)
                .map_err(|e| plan_error(format!("promql(): the step: {e}")))
        }
        other => Err(plan_error(format!(
            "promql(): the step is an interval (without months), seconds or a duration like '30s', not {other}"
        ))),
    }
}

impl TableFunctionImpl for PromqlFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let props = args.session().execution_props();
        let start_time = props
            .query_execution_start_time
            .unwrap_or_else(chrono::Utc::now);
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_query_execution_start_time(Some(start_time))
                .build(),
        );
        let values = args
            .exprs()
            .iter()
            .map(|e| match simplifier.simplify(e.clone())? {
                Expr::Literal(v, _) => Ok(v),
                Expr::Placeholder(p) => Err(plan_error(format!(
                    "promql() takes its arguments written in the statement, not as parameters ({}): the table is planned before parameters are bound",
                    p.id
                ))),
                other => Err(plan_error(format!(
                    "promql() takes constant arguments, not {other}"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let text = match values.first() {
            Some(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
            ) => s.clone(),
            _ => {
                return Err(plan_error(
                    "promql() takes the expression as text first: promql('<expr>'[, time]) or promql('<expr>', start, end, step)",
                ));
            }
        };
        let now_ms = start_time.timestamp_millis();
        let (start, end, step) = match values.len() {
            1 => (now_ms, now_ms, 0),
            2 => {
                let t = time_ms(&values[1], "time")?;
                (t, t, 0)
            }
            4 => {
                let (start, end) = (time_ms(&values[1], "start")?, time_ms(&values[2], "end")?);
                let step = step_ms(&values[3])?;
                params::check_range(start, end, step).map_err(df_error)?;
                (start, end, step)
            }
            n => {
                return Err(plan_error(format!(
                    "promql() takes 1, 2 or 4 arguments (the expression; a time; or start, end and step), not {n}"
                )));
            }
        };
        let expr = crate::parse(&text).map_err(df_error)?;
        if step > 0
            && !matches!(
                expr.kind(),
                crate::ir::Kind::Scalar | crate::ir::Kind::Vector
            )
        {
            return Err(plan_error(format!(
                "promql: invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                expr.kind().name()
            )));
        }
        Ok(Arc::new(PromqlTable {
            text,
            params: Params {
                start,
                end,
                step,
                lookback: self.lookback_ms,
                max_samples: self.max_samples,
                subquery_step: self.subquery_step_ms,
            },
        }))
    }
}

#[derive(Debug)]
struct PromqlTable {
    text: String,
    params: Params,
}

/// Set when the scan's future is dropped (the statement was cancelled):
/// the evaluation, on its own thread, stops at its next step.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl TableProvider for PromqlTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = state
            .as_any()
            .downcast_ref::<datafusion::execution::SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("promql(): not a DataFusion session".into())
            })?;
        let ctx = Arc::new(SessionContext::new_with_state(state.clone()));
        let mut source = TableSource::new(ctx, Box::new(|_| true));
        let dropped = Arc::new(AtomicBool::new(false));
        let _guard = Dropped(dropped.clone());
        let stop: crate::Stop = Arc::new(move || {
            if dropped.load(Ordering::Relaxed) {
                Err(PromError::canceled(false))
            } else {
                Ok(())
            }
        });
        let value = crate::run(&mut source, &self.text, self.params, stop)
            .await
            .map_err(df_error)?;
        let batch = to_batch(&value)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            schema(),
            projection.cloned(),
        )?)
    }
}

fn to_batch(v: &Value) -> Result<RecordBatch> {
    let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut value = Float64Builder::new();
    let mut labels = StringBuilder::new();
    let mut push = |t: i64, v: f64, l: &crate::labels::Labels| {
        time.append_value(t.saturating_mul(1_000_000));
        value.append_value(v);
        let map: serde_json::Map<String, serde_json::Value> = l
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(v)))
            .collect();
        labels.append_value(serde_json::Value::Object(map).to_string());
    };
    let empty = crate::labels::Labels::empty();
    match v {
        Value::Scalar { t, v } => push(*t, *v, &empty),
        Value::String { .. } => {
            return Err(plan_error(
                "promql(): a string expression has no samples to return",
            ));
        }
        Value::Vector(samples) => {
            for s in samples {
                push(s.t, s.v, &s.metric);
            }
        }
        Value::Matrix(series) => {
            for s in series {
                for p in &s.points {
                    push(p.t, p.v, &s.metric);
                }
            }
        }
    }
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(time.finish()),
            Arc::new(value.finish()),
            Arc::new(labels.finish()),
        ],
    )?)
}
