//! Metrics: an `ExportMetricsServiceRequest` → rows of the `otel_metrics_*`
//! table of each data point's kind (gauge, sum, histogram, exponential
//! histogram, summary). Every table shares the leading and trailing
//! columns ([`PointCols`]) and has its own value columns; a data point that
//! cannot be stored is rejected alone.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampNanosecondBuilder,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint, exemplar, metric, number_data_point,
};

use super::common::{
    Context, ContextCols, attrs_text, count, finish_ts, id, json_attrs, json_f64, json_str, nanos,
    non_empty, rfc3339,
};
use super::{Decoded, EXP_HISTOGRAM, GAUGE, HISTOGRAM, Rejections, SUM, SUMMARY, push_batch};

fn temporality_name(t: i32) -> &'static str {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Delta) => "delta",
        Ok(AggregationTemporality::Cumulative) => "cumulative",
        _ => "unspecified",
    }
}

/// Columns shared by every metrics table: the leading ones, and the tail.
#[derive(Default)]
struct PointCols {
    rows: usize,
    time: TimestampNanosecondBuilder,
    start_time: TimestampNanosecondBuilder,
    service_name: StringBuilder,
    metric_name: StringBuilder,
    metric_description: StringBuilder,
    metric_unit: StringBuilder,
    attributes: StringBuilder,
    flags: Int64Builder,
    exemplars: StringBuilder,
    metric_metadata: StringBuilder,
    context: ContextCols,
}

/// What every data point has.
struct Point<'a> {
    time: i64,
    start: Option<i64>,
    attributes: &'a [KeyValue],
    flags: u32,
    exemplars: String,
}

impl PointCols {
    fn append(&mut self, p: &Point<'_>, m: &Metric, metadata: &str, ctx: &Context) {
        self.rows += 1;
        self.time.append_value(p.time);
        self.start_time.append_option(p.start);
        self.service_name.append_option(ctx.service_name.as_deref());
        self.metric_name.append_value(&m.name);
        self.metric_description
            .append_option(non_empty(&m.description));
        self.metric_unit.append_option(non_empty(&m.unit));
        self.attributes.append_value(attrs_text(p.attributes));
        self.flags.append_value(p.flags.into());
        self.exemplars.append_value(&p.exemplars);
        self.metric_metadata.append_value(metadata);
        self.context.append(ctx);
    }

    fn head(&mut self) -> Vec<ArrayRef> {
        vec![
            finish_ts(&mut self.time),
            finish_ts(&mut self.start_time),
            Arc::new(self.service_name.finish()),
            Arc::new(self.metric_name.finish()),
            Arc::new(self.metric_description.finish()),
            Arc::new(self.metric_unit.finish()),
        ]
    }

    fn tail(&mut self, cols: &mut Vec<ArrayRef>) {
        cols.push(Arc::new(self.attributes.finish()));
        cols.push(Arc::new(self.flags.finish()));
        cols.push(Arc::new(self.exemplars.finish()));
        cols.push(Arc::new(self.metric_metadata.finish()));
        self.context.finish(cols);
    }
}

fn exemplars_text(ex: &[Exemplar]) -> Result<String, String> {
    let mut s = String::from("[");
    for (i, e) in ex.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"time\":");
        match nanos(e.time_unix_nano, "exemplar time_unix_nano")? {
            Some(t) => json_str(&mut s, &rfc3339(t)),
            None => s.push_str("null"),
        }
        s.push_str(",\"value\":");
        match e.value {
            Some(exemplar::Value::AsDouble(f)) => json_f64(&mut s, f),
            Some(exemplar::Value::AsInt(v)) => {
                let _ = write!(s, "{v}");
            }
            None => s.push_str("null"),
        }
        s.push_str(",\"trace_id\":");
        match id(&e.trace_id, 16, "exemplar trace_id")? {
            Some(t) => json_str(&mut s, &t),
            None => s.push_str("null"),
        }
        s.push_str(",\"span_id\":");
        match id(&e.span_id, 8, "exemplar span_id")? {
            Some(t) => json_str(&mut s, &t),
            None => s.push_str("null"),
        }
        s.push_str(",\"filtered_attributes\":");
        json_attrs(&mut s, &e.filtered_attributes);
        s.push('}');
    }
    s.push(']');
    Ok(s)
}

fn point<'a>(
    time: u64,
    start: u64,
    attributes: &'a [KeyValue],
    flags: u32,
    exemplars: &[Exemplar],
) -> Result<Point<'a>, String> {
    Ok(Point {
        time: nanos(time, "time_unix_nano")?.ok_or("the data point has no time_unix_nano")?,
        start: nanos(start, "start_time_unix_nano")?,
        attributes,
        flags,
        exemplars: exemplars_text(exemplars)?,
    })
}

fn list_i64(b: &mut ListBuilder<Int64Builder>, v: &[u64]) -> Result<(), String> {
    for c in v {
        b.values().append_value(count(*c, "bucket count")?);
    }
    b.append(true);
    Ok(())
}

fn check_counts(v: &[u64]) -> Result<(), String> {
    v.iter()
        .try_for_each(|c| count(*c, "bucket count").map(|_| ()))
}

#[derive(Default)]
struct NumberCols {
    p: PointCols,
    value: Float64Builder,
    value_int: Int64Builder,
    temporality: StringBuilder,
    monotonic: BooleanBuilder,
}

impl NumberCols {
    fn append(&mut self, dp: &NumberDataPoint, p: &Point<'_>, m: &Metric, md: &str, ctx: &Context) {
        match dp.value {
            Some(number_data_point::Value::AsDouble(f)) => {
                self.value.append_value(f);
                self.value_int.append_null();
            }
            Some(number_data_point::Value::AsInt(i)) => {
                self.value.append_value(i as f64);
                self.value_int.append_value(i);
            }
            None => {
                self.value.append_null();
                self.value_int.append_null();
            }
        }
        self.p.append(p, m, md, ctx);
    }

    fn finish(mut self, sum: bool) -> Vec<ArrayRef> {
        let mut cols = self.p.head();
        cols.push(Arc::new(self.value.finish()));
        cols.push(Arc::new(self.value_int.finish()));
        if sum {
            cols.push(Arc::new(self.temporality.finish()));
            cols.push(Arc::new(self.monotonic.finish()));
        }
        self.p.tail(&mut cols);
        cols
    }
}

#[derive(Default)]
struct HistogramCols {
    p: PointCols,
    count: Int64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<Int64Builder>,
    explicit_bounds: ListBuilder<Float64Builder>,
    temporality: StringBuilder,
}

impl HistogramCols {
    fn check(dp: &HistogramDataPoint) -> Result<(), String> {
        count(dp.count, "count")?;
        check_counts(&dp.bucket_counts)?;
        if !dp.bucket_counts.is_empty() && dp.bucket_counts.len() != dp.explicit_bounds.len() + 1 {
            return Err(format!(
                "{} bucket counts for {} explicit bounds (must be one more)",
                dp.bucket_counts.len(),
                dp.explicit_bounds.len()
            ));
        }
        Ok(())
    }

    fn append(
        &mut self,
        dp: &HistogramDataPoint,
        temporality: i32,
        p: &Point<'_>,
        m: &Metric,
        md: &str,
        ctx: &Context,
    ) -> Result<(), String> {
        self.count.append_value(count(dp.count, "count")?);
        self.sum.append_option(dp.sum);
        self.min.append_option(dp.min);
        self.max.append_option(dp.max);
        list_i64(&mut self.bucket_counts, &dp.bucket_counts)?;
        self.explicit_bounds
            .values()
            .append_slice(&dp.explicit_bounds);
        self.explicit_bounds.append(true);
        self.temporality.append_value(temporality_name(temporality));
        self.p.append(p, m, md, ctx);
        Ok(())
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        let mut cols = self.p.head();
        cols.push(Arc::new(self.count.finish()));
        cols.push(Arc::new(self.sum.finish()));
        cols.push(Arc::new(self.min.finish()));
        cols.push(Arc::new(self.max.finish()));
        cols.push(Arc::new(self.bucket_counts.finish()));
        cols.push(Arc::new(self.explicit_bounds.finish()));
        cols.push(Arc::new(self.temporality.finish()));
        self.p.tail(&mut cols);
        cols
    }
}

#[derive(Default)]
struct ExpHistogramCols {
    p: PointCols,
    count: Int64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    scale: Int32Builder,
    zero_count: Int64Builder,
    zero_threshold: Float64Builder,
    positive_offset: Int32Builder,
    positive_bucket_counts: ListBuilder<Int64Builder>,
    negative_offset: Int32Builder,
    negative_bucket_counts: ListBuilder<Int64Builder>,
    temporality: StringBuilder,
}

impl ExpHistogramCols {
    fn check(dp: &ExponentialHistogramDataPoint) -> Result<(), String> {
        count(dp.count, "count")?;
        count(dp.zero_count, "zero_count")?;
        for b in [&dp.positive, &dp.negative].into_iter().flatten() {
            check_counts(&b.bucket_counts)?;
        }
        Ok(())
    }

    fn append(
        &mut self,
        dp: &ExponentialHistogramDataPoint,
        temporality: i32,
        p: &Point<'_>,
        m: &Metric,
        md: &str,
        ctx: &Context,
    ) -> Result<(), String> {
        self.count.append_value(count(dp.count, "count")?);
        self.sum.append_option(dp.sum);
        self.min.append_option(dp.min);
        self.max.append_option(dp.max);
        self.scale.append_value(dp.scale);
        self.zero_count
            .append_value(count(dp.zero_count, "zero_count")?);
        self.zero_threshold.append_value(dp.zero_threshold);
        let empty = Default::default();
        let pos = dp.positive.as_ref().unwrap_or(&empty);
        let neg = dp.negative.as_ref().unwrap_or(&empty);
        self.positive_offset.append_value(pos.offset);
        list_i64(&mut self.positive_bucket_counts, &pos.bucket_counts)?;
        self.negative_offset.append_value(neg.offset);
        list_i64(&mut self.negative_bucket_counts, &neg.bucket_counts)?;
        self.temporality.append_value(temporality_name(temporality));
        self.p.append(p, m, md, ctx);
        Ok(())
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        let mut cols = self.p.head();
        cols.push(Arc::new(self.count.finish()));
        cols.push(Arc::new(self.sum.finish()));
        cols.push(Arc::new(self.min.finish()));
        cols.push(Arc::new(self.max.finish()));
        cols.push(Arc::new(self.scale.finish()));
        cols.push(Arc::new(self.zero_count.finish()));
        cols.push(Arc::new(self.zero_threshold.finish()));
        cols.push(Arc::new(self.positive_offset.finish()));
        cols.push(Arc::new(self.positive_bucket_counts.finish()));
        cols.push(Arc::new(self.negative_offset.finish()));
        cols.push(Arc::new(self.negative_bucket_counts.finish()));
        cols.push(Arc::new(self.temporality.finish()));
        self.p.tail(&mut cols);
        cols
    }
}

#[derive(Default)]
struct SummaryCols {
    p: PointCols,
    count: Int64Builder,
    sum: Float64Builder,
    quantiles: ListBuilder<Float64Builder>,
    quantile_values: ListBuilder<Float64Builder>,
}

impl SummaryCols {
    fn append(
        &mut self,
        dp: &SummaryDataPoint,
        p: &Point<'_>,
        m: &Metric,
        md: &str,
        ctx: &Context,
    ) -> Result<(), String> {
        self.count.append_value(count(dp.count, "count")?);
        self.sum.append_value(dp.sum);
        for q in &dp.quantile_values {
            self.quantiles.values().append_value(q.quantile);
            self.quantile_values.values().append_value(q.value);
        }
        self.quantiles.append(true);
        self.quantile_values.append(true);
        self.p.append(p, m, md, ctx);
        Ok(())
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        let mut cols = self.p.head();
        cols.push(Arc::new(self.count.finish()));
        cols.push(Arc::new(self.sum.finish()));
        cols.push(Arc::new(self.quantiles.finish()));
        cols.push(Arc::new(self.quantile_values.finish()));
        self.p.tail(&mut cols);
        cols
    }
}

#[derive(Default)]
struct MetricCols {
    gauge: NumberCols,
    sum: NumberCols,
    histogram: HistogramCols,
    exp_histogram: ExpHistogramCols,
    summary: SummaryCols,
}

impl MetricCols {
    /// Appends every data point of `m`, rejecting those that cannot be stored.
    fn append(&mut self, m: &Metric, ctx: &Context, rejections: &mut Rejections) {
        if m.data.is_none() {
            // Also what the OTLP JSON decoder yields for data it cannot read
            // (e.g. a double written as the string "NaN"): say so, rather
            // than drop the metric silently.
            rejections.reject(|| {
                format!(
                    "metric {:?} has no data (gauge, sum, histogram, exponential histogram or summary), or data that could not be decoded",
                    m.name
                )
            });
            return;
        }
        let md = attrs_text(&m.metadata);
        let mut reject = |i: usize, e: String| {
            rejections.reject(|| format!("metric {:?} data point {}: {e}", m.name, i + 1))
        };
        match &m.data {
            None => {}
            Some(metric::Data::Gauge(g)) => {
                for (i, dp) in g.data_points.iter().enumerate() {
                    match point(
                        dp.time_unix_nano,
                        dp.start_time_unix_nano,
                        &dp.attributes,
                        dp.flags,
                        &dp.exemplars,
                    ) {
                        Ok(p) => self.gauge.append(dp, &p, m, &md, ctx),
                        Err(e) => reject(i, e),
                    }
                }
            }
            Some(metric::Data::Sum(s)) => {
                for (i, dp) in s.data_points.iter().enumerate() {
                    match point(
                        dp.time_unix_nano,
                        dp.start_time_unix_nano,
                        &dp.attributes,
                        dp.flags,
                        &dp.exemplars,
                    ) {
                        Ok(p) => {
                            self.sum
                                .temporality
                                .append_value(temporality_name(s.aggregation_temporality));
                            self.sum.monotonic.append_value(s.is_monotonic);
                            self.sum.append(dp, &p, m, &md, ctx);
                        }
                        Err(e) => reject(i, e),
                    }
                }
            }
            Some(metric::Data::Histogram(h)) => {
                for (i, dp) in h.data_points.iter().enumerate() {
                    let r = HistogramCols::check(dp)
                        .and_then(|()| {
                            point(
                                dp.time_unix_nano,
                                dp.start_time_unix_nano,
                                &dp.attributes,
                                dp.flags,
                                &dp.exemplars,
                            )
                        })
                        .and_then(|p| {
                            self.histogram
                                .append(dp, h.aggregation_temporality, &p, m, &md, ctx)
                        });
                    if let Err(e) = r {
                        reject(i, e);
                    }
                }
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                for (i, dp) in h.data_points.iter().enumerate() {
                    let r = ExpHistogramCols::check(dp)
                        .and_then(|()| {
                            point(
                                dp.time_unix_nano,
                                dp.start_time_unix_nano,
                                &dp.attributes,
                                dp.flags,
                                &dp.exemplars,
                            )
                        })
                        .and_then(|p| {
                            self.exp_histogram.append(
                                dp,
                                h.aggregation_temporality,
                                &p,
                                m,
                                &md,
                                ctx,
                            )
                        });
                    if let Err(e) = r {
                        reject(i, e);
                    }
                }
            }
            Some(metric::Data::Summary(s)) => {
                for (i, dp) in s.data_points.iter().enumerate() {
                    let r = count(dp.count, "count")
                        .and_then(|_| {
                            point(
                                dp.time_unix_nano,
                                dp.start_time_unix_nano,
                                &dp.attributes,
                                dp.flags,
                                &[],
                            )
                        })
                        .and_then(|p| self.summary.append(dp, &p, m, &md, ctx));
                    if let Err(e) = r {
                        reject(i, e);
                    }
                }
            }
        }
    }
}

/// Decodes a metrics export request into rows of the `otel_metrics_*` tables
/// (one row per data point, in the table of the metric's type).
pub fn decode_metrics(req: &ExportMetricsServiceRequest) -> Decoded {
    let mut c = MetricCols::default();
    let mut rejections = Rejections::default();
    for rm in &req.resource_metrics {
        let mut ctx = Context::resource(rm.resource.as_ref(), &rm.schema_url);
        for sm in &rm.scope_metrics {
            ctx.set_scope(sm.scope.as_ref(), &sm.schema_url);
            for m in &sm.metrics {
                if m.name.is_empty() {
                    let points = match &m.data {
                        None => 0,
                        Some(metric::Data::Gauge(g)) => g.data_points.len(),
                        Some(metric::Data::Sum(s)) => s.data_points.len(),
                        Some(metric::Data::Histogram(h)) => h.data_points.len(),
                        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
                        Some(metric::Data::Summary(s)) => s.data_points.len(),
                    };
                    for _ in 0..points {
                        rejections.reject(|| "a metric without a name".into());
                    }
                    continue;
                }
                c.append(m, &ctx, &mut rejections);
            }
        }
    }
    let rows = [
        c.gauge.p.rows,
        c.sum.p.rows,
        c.histogram.p.rows,
        c.exp_histogram.p.rows,
        c.summary.p.rows,
    ];
    let mut decoded = rejections.decoded(rows.iter().sum());
    if rows[0] > 0 {
        push_batch(&mut decoded, GAUGE, rows[0], c.gauge.finish(false));
    }
    if rows[1] > 0 {
        push_batch(&mut decoded, SUM, rows[1], c.sum.finish(true));
    }
    if rows[2] > 0 {
        push_batch(&mut decoded, HISTOGRAM, rows[2], c.histogram.finish());
    }
    if rows[3] > 0 {
        push_batch(
            &mut decoded,
            EXP_HISTOGRAM,
            rows[3],
            c.exp_histogram.finish(),
        );
    }
    if rows[4] > 0 {
        push_batch(&mut decoded, SUMMARY, rows[4], c.summary.finish());
    }
    decoded
}
