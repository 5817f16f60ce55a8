//! PromQL on Sextant's metric tables, answering as Prometheus 2.42 does.
//!
//! Text → [`parse`] (`promql-parser`, then Sextant's [`Expr`]) → the time
//! range each selector needs ([`eval::selector_ranges`]) → its series read
//! from the tables remote write fills, through DataFusion
//! ([`TableSource`]: filters pushed into the scan, memory reserved from the
//! query pool) → [`eval::evaluate`], a port of Prometheus's engine, on a
//! blocking thread, asking the query's cancellation between steps → a
//! [`Value`] that [`json`] writes as the HTTP API does. The HTTP API and
//! the SQL table function are front ends over [`run`].

mod aggregate;
mod binary;
mod error;
pub mod eval;
mod functions;
pub mod ir;
pub mod json;
pub mod labels;
pub mod params;
#[cfg(feature = "datafusion")]
mod source;
#[cfg(feature = "datafusion")]
mod table_function;

use std::sync::Arc;

pub use error::{ErrorKind, PromError};
pub use eval::{Params, Point, STALE_NAN, Sample, Series, Value, is_stale};
pub use ir::{Expr, format_query, parse};
#[cfg(feature = "datafusion")]
pub use source::{TableSource, is_metric_table};
#[cfg(feature = "datafusion")]
pub use table_function::PromqlFunction;

/// Prometheus's default lookback delta.
pub const DEFAULT_LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// Prometheus's default `--query.max-samples`.
pub const DEFAULT_MAX_SAMPLES: usize = 50_000_000;

/// Asked between steps: `Err` stops the evaluation (cancelled, timed out).
pub type Stop = Arc<dyn Fn() -> Result<(), PromError> + Send + Sync>;

/// Parses `text`, reads the series it selects from `source` and evaluates
/// it at `params`.
#[cfg(feature = "datafusion")]
pub async fn run(
    source: &mut TableSource,
    text: &str,
    params: Params,
    stop: Stop,
) -> Result<Value, PromError> {
    let expr = parse(text)?;
    let mut data = eval::Data::new();
    for (sel, mint, maxt) in eval::selector_ranges(&expr, &params) {
        stop()?;
        let series = source.select(&sel.matchers, mint, maxt).await?;
        data.insert(sel.id, series);
    }
    // The evaluation is CPU work: off the runtime's threads.
    tokio::task::spawn_blocking(move || eval::evaluate(&expr, &data, &params, &*stop))
        .await
        .map_err(|e| PromError::internal(format!("the evaluation failed: {e}")))?
}
