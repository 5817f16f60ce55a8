//! OTLP export requests (logs, traces, metrics) → Arrow batches of the
//! `otel_*` tables.
//!
//! A request arrives as protobuf or as the OTLP JSON mapping ([`parse`]); the
//! decoders walk resource → scope → record and append one row per log
//! record, span or metric data point to the table of its kind, with a fixed
//! schema per table ([`table_schema`], documented in `docs/otel-schema.md`).
//!
//! - `service_name` is the resource attribute `service.name`, promoted to a
//!   column; every resource, scope and record attribute is also kept, as a
//!   JSON object in text (`attributes`, `resource_attributes`,
//!   `scope_attributes`): strings, integers, doubles, booleans, arrays and
//!   nested key-value lists map to their JSON counterparts, bytes to base64
//!   strings, and non-finite doubles to the strings `NaN`, `Infinity`,
//!   `-Infinity` (as in the OTLP JSON mapping).
//! - `trace_id`, `span_id` and `parent_span_id` are lowercase hex text.
//! - Timestamps are exact to the nanosecond.
//! - A record that cannot be stored (an id of the wrong length, a time past
//!   2262, a span without a start time, a histogram whose bucket counts do not
//!   match its bounds) is rejected alone; the rest of the request is kept and
//!   [`Decoded::rejected`] with [`Decoded::error_message`] become the OTLP
//!   `partial_success`.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status};

use crate::rows::time_type;

/// The table of log records.
pub const LOGS: &str = "otel_logs";
/// The table of spans.
pub const TRACES: &str = "otel_traces";
/// Gauge data points.
pub const GAUGE: &str = "otel_metrics_gauge";
/// Sum (counter and up-down counter) data points.
pub const SUM: &str = "otel_metrics_sum";
/// Explicit-bucket histogram data points.
pub const HISTOGRAM: &str = "otel_metrics_histogram";
/// Exponential histogram data points.
pub const EXP_HISTOGRAM: &str = "otel_metrics_exponential_histogram";
/// Summary data points.
pub const SUMMARY: &str = "otel_metrics_summary";

/// Every table the OTLP decoders write.
pub const TABLES: [&str; 7] = [LOGS, TRACES, GAUGE, SUM, HISTOGRAM, EXP_HISTOGRAM, SUMMARY];

/// At most this many rejection reasons are quoted in the error message.
const MAX_REASONS: usize = 5;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf` (and gRPC).
    Protobuf,
    /// `application/json`: the OTLP JSON mapping.
    Json,
}

/// Parses an export request body.
pub fn parse<T>(body: &[u8], encoding: Encoding) -> Result<T, String>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    match encoding {
        Encoding::Protobuf => {
            T::decode(body).map_err(|e| format!("body is not a valid OTLP protobuf message: {e}"))
        }
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| format!("body is not a valid OTLP JSON message: {e}")),
    }
}

/// The rows of one export request, by table.
#[derive(Debug, Default)]
pub struct Decoded {
    /// One batch per table that received rows, in the schema of
    /// [`table_schema`].
    pub tables: Vec<(&'static str, RecordBatch)>,
    /// Records (log records, spans or data points) accepted.
    pub accepted: usize,
    /// Records rejected.
    pub rejected: usize,
    /// Why, for the first few rejections; empty when none was rejected.
    pub error_message: String,
}

#[derive(Default)]
struct Rejections {
    count: usize,
    reasons: Vec<String>,
}

impl Rejections {
    fn reject(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(what());
        }
    }

    /// The result of a request with `accepted` rows (tables added later).
    fn decoded(&self, accepted: usize) -> Decoded {
        Decoded {
            accepted,
            rejected: self.count,
            error_message: self.message(),
            tables: vec![],
        }
    }

    fn message(&self) -> String {
        if self.count == 0 {
            return String::new();
        }
        let more = if self.count > self.reasons.len() {
            format!("; and {} more", self.count - self.reasons.len())
        } else {
            String::new()
        };
        format!("{} rejected: {}{more}", self.count, self.reasons.join("; "))
    }
}

// ---------------------------------------------------------------------------
// Schemas

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, time_type(), nullable)
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn int64(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn int32(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}

fn float64(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

fn list(name: &str, item: DataType) -> Field {
    Field::new(name, DataType::new_list(item, true), true)
}

/// Resource and scope columns, at the end of every table.
fn context_fields() -> Vec<Field> {
    vec![
        text("resource_attributes"),
        text("resource_schema_url"),
        text("scope_name"),
        text("scope_version"),
        text("scope_attributes"),
        text("scope_schema_url"),
    ]
}

/// Columns every metrics table starts with.
fn metric_fields() -> Vec<Field> {
    vec![
        ts("time", false),
        ts("start_time", true),
        text("service_name"),
        text("metric_name"),
        text("metric_description"),
        text("metric_unit"),
    ]
}

/// Columns every metrics table has after its value columns.
fn metric_tail_fields() -> Vec<Field> {
    let mut f = vec![
        text("attributes"),
        int64("flags"),
        text("exemplars"),
        text("metric_metadata"),
    ];
    f.extend(context_fields());
    f
}

/// The schema of an `otel_*` table, or `None` for another name.
pub fn table_schema(table: &str) -> Option<SchemaRef> {
    let temporality = text("aggregation_temporality");
    let mut fields = match table {
        LOGS => {
            let mut f = vec![
                ts("time", false),
                ts("observed_time", true),
                text("service_name"),
                int32("severity_number"),
                text("severity_text"),
                text("body"),
                text("trace_id"),
                text("span_id"),
                int64("flags"),
                text("event_name"),
                text("attributes"),
                int64("dropped_attributes_count"),
            ];
            f.extend(context_fields());
            return Some(Arc::new(Schema::new(f)));
        }
        TRACES => {
            let mut f = vec![
                ts("time", false),
                ts("end_time", true),
                int64("duration_ns"),
                text("trace_id"),
                text("span_id"),
                text("parent_span_id"),
                text("trace_state"),
                text("service_name"),
                text("name"),
                text("kind"),
                text("status_code"),
                text("status_message"),
                text("attributes"),
                text("events"),
                text("links"),
                int64("flags"),
                int64("dropped_attributes_count"),
                int64("dropped_events_count"),
                int64("dropped_links_count"),
            ];
            f.extend(context_fields());
            return Some(Arc::new(Schema::new(f)));
        }
        GAUGE => vec![float64("value"), int64("value_int")],
        SUM => vec![
            float64("value"),
            int64("value_int"),
            temporality,
            Field::new("is_monotonic", DataType::Boolean, true),
        ],
        HISTOGRAM => vec![
            int64("count"),
            float64("sum"),
            float64("min"),
            float64("max"),
            list("bucket_counts", DataType::Int64),
            list("explicit_bounds", DataType::Float64),
            temporality,
        ],
        EXP_HISTOGRAM => vec![
            int64("count"),
            float64("sum"),
            float64("min"),
            float64("max"),
            int32("scale"),
            int64("zero_count"),
            float64("zero_threshold"),
            int32("positive_offset"),
            list("positive_bucket_counts", DataType::Int64),
            int32("negative_offset"),
            list("negative_bucket_counts", DataType::Int64),
            temporality,
        ],
        SUMMARY => vec![
            int64("count"),
            float64("sum"),
            list("quantiles", DataType::Float64),
            list("quantile_values", DataType::Float64),
        ],
        _ => return None,
    };
    let mut all = metric_fields();
    all.append(&mut fields);
    all.extend(metric_tail_fields());
    Some(Arc::new(Schema::new(all)))
}

// ---------------------------------------------------------------------------
// JSON text of attributes and values

/// Appends `s` as a JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_f64(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("\"NaN\"");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        // serde_json writes the shortest exact form and keeps a ".0" on
        // whole numbers, so a double stays a double.
        match serde_json::Number::from_f64(f) {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => out.push_str("null"),
        }
    }
}

fn json_any(out: &mut String, v: Option<&AnyValue>) {
    match v.and_then(|v| v.value.as_ref()) {
        None => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => json_str(out, s),
        Some(any_value::Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(any_value::Value::DoubleValue(f)) => json_f64(out, *f),
        Some(any_value::Value::BytesValue(b)) => {
            json_str(out, &base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(any_value::Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_any(out, Some(v));
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(kv)) => json_attrs(out, &kv.values),
        Some(any_value::Value::StringValueStrindex(_)) => out.push_str("null"),
    }
}

fn json_attrs(out: &mut String, kvs: &[KeyValue]) {
    out.push('{');
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, &kv.key);
        out.push(':');
        json_any(out, kv.value.as_ref());
    }
    out.push('}');
}

fn attrs_text(kvs: &[KeyValue]) -> String {
    let mut s = String::with_capacity(16 * kvs.len() + 2);
    json_attrs(&mut s, kvs);
    s
}

/// A log body: a string as is, anything else as its JSON text.
fn body_text(v: &AnyValue) -> Option<String> {
    match &v.value {
        None => None,
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        Some(_) => {
            let mut s = String::new();
            json_any(&mut s, Some(v));
            Some(s)
        }
    }
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// An id as hex text: `None` when absent (empty), an error when its length is wrong.
fn id(bytes: &[u8], len: usize, what: &str) -> Result<Option<String>, String> {
    match bytes.len() {
        0 => Ok(None),
        n if n == len => Ok(Some(hex(bytes))),
        n => Err(format!("{what} must be {len} bytes, not {n}")),
    }
}

/// A `*_unix_nano` value as a timestamp; 0 means absent.
fn nanos(t: u64, what: &str) -> Result<Option<i64>, String> {
    match t {
        0 => Ok(None),
        t => i64::try_from(t)
            .map(Some)
            .map_err(|_| format!("{what} {t} is past the year 2262")),
    }
}

fn count(c: u64, what: &str) -> Result<i64, String> {
    i64::try_from(c).map_err(|_| format!("{what} {c} does not fit a bigint"))
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn temporality_name(t: i32) -> &'static str {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Delta) => "delta",
        Ok(AggregationTemporality::Cumulative) => "cumulative",
        _ => "unspecified",
    }
}

fn kind_name(k: i32) -> &'static str {
    match span::SpanKind::try_from(k) {
        Ok(span::SpanKind::Internal) => "internal",
        Ok(span::SpanKind::Server) => "server",
        Ok(span::SpanKind::Client) => "client",
        Ok(span::SpanKind::Producer) => "producer",
        Ok(span::SpanKind::Consumer) => "consumer",
        _ => "unspecified",
    }
}

fn status_name(c: i32) -> &'static str {
    match status::StatusCode::try_from(c) {
        Ok(status::StatusCode::Ok) => "ok",
        Ok(status::StatusCode::Error) => "error",
        _ => "unset",
    }
}

// ---------------------------------------------------------------------------
// Builders

fn finish_ts(b: &mut TimestampNanosecondBuilder) -> ArrayRef {
    Arc::new(b.finish().with_timezone("UTC"))
}

/// The resource and scope of the records being decoded, as column values.
struct Context {
    service_name: Option<String>,
    resource_attributes: String,
    resource_schema_url: String,
    scope_name: String,
    scope_version: String,
    scope_attributes: String,
    scope_schema_url: String,
}

impl Context {
    fn resource(resource: Option<&Resource>, schema_url: &str) -> Self {
        let attrs: &[KeyValue] = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let service_name = attrs
            .iter()
            .rev()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            });
        Self {
            service_name,
            resource_attributes: attrs_text(attrs),
            resource_schema_url: schema_url.to_string(),
            scope_name: String::new(),
            scope_version: String::new(),
            scope_attributes: "{}".into(),
            scope_schema_url: String::new(),
        }
    }

    fn set_scope(&mut self, scope: Option<&InstrumentationScope>, schema_url: &str) {
        self.scope_name = scope.map(|s| s.name.clone()).unwrap_or_default();
        self.scope_version = scope.map(|s| s.version.clone()).unwrap_or_default();
        self.scope_attributes = attrs_text(scope.map(|s| s.attributes.as_slice()).unwrap_or(&[]));
        self.scope_schema_url = schema_url.to_string();
    }
}

/// Builders of the resource and scope columns.
#[derive(Default)]
struct ContextCols {
    resource_attributes: StringBuilder,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: StringBuilder,
    scope_schema_url: StringBuilder,
}

impl ContextCols {
    fn append(&mut self, c: &Context) {
        self.resource_attributes
            .append_value(&c.resource_attributes);
        self.resource_schema_url
            .append_option(non_empty(&c.resource_schema_url));
        self.scope_name.append_option(non_empty(&c.scope_name));
        self.scope_version
            .append_option(non_empty(&c.scope_version));
        self.scope_attributes.append_value(&c.scope_attributes);
        self.scope_schema_url
            .append_option(non_empty(&c.scope_schema_url));
    }

    fn finish(&mut self, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(self.resource_attributes.finish()));
        out.push(Arc::new(self.resource_schema_url.finish()));
        out.push(Arc::new(self.scope_name.finish()));
        out.push(Arc::new(self.scope_version.finish()));
        out.push(Arc::new(self.scope_attributes.finish()));
        out.push(Arc::new(self.scope_schema_url.finish()));
    }
}

fn batch(table: &'static str, columns: Vec<ArrayRef>) -> Result<RecordBatch, String> {
    let schema = table_schema(table).expect("an otel table");
    RecordBatch::try_new(schema, columns).map_err(|e| format!("{table}: {e}"))
}

// ---------------------------------------------------------------------------
// Logs

#[derive(Default)]
struct LogCols {
    rows: usize,
    time: TimestampNanosecondBuilder,
    observed_time: TimestampNanosecondBuilder,
    service_name: StringBuilder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    flags: Int64Builder,
    event_name: StringBuilder,
    attributes: StringBuilder,
    dropped_attributes_count: Int64Builder,
    context: ContextCols,
}

/// Decodes a logs export request into `otel_logs` rows. A record without a
/// time takes its observed time, and without either the receive time `now_ns`.
pub fn decode_logs(req: &ExportLogsServiceRequest, now_ns: i64) -> Decoded {
    let mut c = LogCols::default();
    let mut rejections = Rejections::default();
    for rl in &req.resource_logs {
        let mut ctx = Context::resource(rl.resource.as_ref(), &rl.schema_url);
        for sl in &rl.scope_logs {
            ctx.set_scope(sl.scope.as_ref(), &sl.schema_url);
            for (i, r) in sl.log_records.iter().enumerate() {
                let checked = (|| {
                    let time = nanos(r.time_unix_nano, "time_unix_nano")?;
                    let observed = nanos(r.observed_time_unix_nano, "observed_time_unix_nano")?;
                    let trace_id = id(&r.trace_id, 16, "trace_id")?;
                    let span_id = id(&r.span_id, 8, "span_id")?;
                    Ok::<_, String>((time, observed, trace_id, span_id))
                })();
                let (time, observed, trace_id, span_id) = match checked {
                    Ok(v) => v,
                    Err(e) => {
                        rejections.reject(|| format!("log record {}: {e}", i + 1));
                        continue;
                    }
                };
                c.rows += 1;
                c.time.append_value(time.or(observed).unwrap_or(now_ns));
                c.observed_time.append_option(observed);
                c.service_name.append_option(ctx.service_name.as_deref());
                c.severity_number.append_value(r.severity_number);
                c.severity_text.append_option(non_empty(&r.severity_text));
                c.body.append_option(r.body.as_ref().and_then(body_text));
                c.trace_id.append_option(trace_id);
                c.span_id.append_option(span_id);
                c.flags.append_value(r.flags.into());
                c.event_name.append_option(non_empty(&r.event_name));
                c.attributes.append_value(attrs_text(&r.attributes));
                c.dropped_attributes_count
                    .append_value(r.dropped_attributes_count.into());
                c.context.append(&ctx);
            }
        }
    }
    let mut decoded = rejections.decoded(c.rows);
    if c.rows > 0 {
        let mut cols: Vec<ArrayRef> = vec![
            finish_ts(&mut c.time),
            finish_ts(&mut c.observed_time),
            Arc::new(c.service_name.finish()),
            Arc::new(c.severity_number.finish()),
            Arc::new(c.severity_text.finish()),
            Arc::new(c.body.finish()),
            Arc::new(c.trace_id.finish()),
            Arc::new(c.span_id.finish()),
            Arc::new(c.flags.finish()),
            Arc::new(c.event_name.finish()),
            Arc::new(c.attributes.finish()),
            Arc::new(c.dropped_attributes_count.finish()),
        ];
        c.context.finish(&mut cols);
        push_batch(&mut decoded, LOGS, c.rows, cols);
    }
    decoded
}

/// Adds a finished batch; a failure to build one is a bug, reported as a
/// rejection of its rows rather than a panic.
fn push_batch(decoded: &mut Decoded, table: &'static str, rows: usize, cols: Vec<ArrayRef>) {
    match batch(table, cols) {
        Ok(b) => decoded.tables.push((table, b)),
        Err(e) => {
            decoded.accepted -= rows;
            decoded.rejected += rows;
            if !decoded.error_message.is_empty() {
                decoded.error_message.push_str("; ");
            }
            decoded.error_message.push_str(&e);
        }
    }
}

// ---------------------------------------------------------------------------
// Traces

#[derive(Default)]
struct SpanCols {
    rows: usize,
    time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    service_name: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attributes: StringBuilder,
    events: StringBuilder,
    links: StringBuilder,
    flags: Int64Builder,
    dropped_attributes_count: Int64Builder,
    dropped_events_count: Int64Builder,
    dropped_links_count: Int64Builder,
    context: ContextCols,
}

fn events_text(events: &[span::Event]) -> Result<String, String> {
    let mut s = String::from("[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"time\":");
        match nanos(e.time_unix_nano, "event time_unix_nano")? {
            Some(t) => json_str(&mut s, &rfc3339(t)),
            None => s.push_str("null"),
        }
        s.push_str(",\"name\":");
        json_str(&mut s, &e.name);
        s.push_str(",\"attributes\":");
        json_attrs(&mut s, &e.attributes);
        let _ = write!(
            s,
            ",\"dropped_attributes_count\":{}}}",
            e.dropped_attributes_count
        );
    }
    s.push(']');
    Ok(s)
}

fn links_text(links: &[span::Link]) -> Result<String, String> {
    let mut s = String::from("[");
    for (i, l) in links.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"trace_id\":");
        match id(&l.trace_id, 16, "link trace_id")? {
            Some(t) => json_str(&mut s, &t),
            None => s.push_str("null"),
        }
        s.push_str(",\"span_id\":");
        match id(&l.span_id, 8, "link span_id")? {
            Some(t) => json_str(&mut s, &t),
            None => s.push_str("null"),
        }
        s.push_str(",\"trace_state\":");
        json_str(&mut s, &l.trace_state);
        s.push_str(",\"attributes\":");
        json_attrs(&mut s, &l.attributes);
        let _ = write!(
            s,
            ",\"dropped_attributes_count\":{},\"flags\":{}}}",
            l.dropped_attributes_count, l.flags
        );
    }
    s.push(']');
    Ok(s)
}

/// Decodes a trace export request into `otel_traces` rows (one per span,
/// `time` being its start).
pub fn decode_traces(req: &ExportTraceServiceRequest) -> Decoded {
    let mut c = SpanCols::default();
    let mut rejections = Rejections::default();
    for rs in &req.resource_spans {
        let mut ctx = Context::resource(rs.resource.as_ref(), &rs.schema_url);
        for ss in &rs.scope_spans {
            ctx.set_scope(ss.scope.as_ref(), &ss.schema_url);
            for (i, s) in ss.spans.iter().enumerate() {
                let checked = (|| {
                    let start = nanos(s.start_time_unix_nano, "start_time_unix_nano")?
                        .ok_or("the span has no start_time_unix_nano")?;
                    let end = nanos(s.end_time_unix_nano, "end_time_unix_nano")?;
                    if let Some(end) = end
                        && end < start
                    {
                        return Err(format!(
                            "end_time_unix_nano {end} is before start_time_unix_nano {start}"
                        ));
                    }
                    let trace_id =
                        id(&s.trace_id, 16, "trace_id")?.ok_or("the span has no trace_id")?;
                    let span_id = id(&s.span_id, 8, "span_id")?.ok_or("the span has no span_id")?;
                    let parent = id(&s.parent_span_id, 8, "parent_span_id")?;
                    let events = events_text(&s.events)?;
                    let links = links_text(&s.links)?;
                    Ok::<_, String>((start, end, trace_id, span_id, parent, events, links))
                })();
                let (start, end, trace_id, span_id, parent, events, links) = match checked {
                    Ok(v) => v,
                    Err(e) => {
                        rejections.reject(|| format!("span {} ({:?}): {e}", i + 1, s.name));
                        continue;
                    }
                };
                c.rows += 1;
                c.time.append_value(start);
                c.end_time.append_option(end);
                c.duration_ns.append_option(end.map(|e| e - start));
                c.trace_id.append_value(trace_id);
                c.span_id.append_value(span_id);
                c.parent_span_id.append_option(parent);
                c.trace_state.append_option(non_empty(&s.trace_state));
                c.service_name.append_option(ctx.service_name.as_deref());
                c.name.append_value(&s.name);
                c.kind.append_value(kind_name(s.kind));
                let status = s.status.as_ref();
                c.status_code
                    .append_value(status_name(status.map(|st| st.code).unwrap_or(0)));
                c.status_message
                    .append_option(status.and_then(|st| non_empty(&st.message)));
                c.attributes.append_value(attrs_text(&s.attributes));
                c.events.append_value(events);
                c.links.append_value(links);
                c.flags.append_value(s.flags.into());
                c.dropped_attributes_count
                    .append_value(s.dropped_attributes_count.into());
                c.dropped_events_count
                    .append_value(s.dropped_events_count.into());
                c.dropped_links_count
                    .append_value(s.dropped_links_count.into());
                c.context.append(&ctx);
            }
        }
    }
    let mut decoded = rejections.decoded(c.rows);
    if c.rows > 0 {
        let mut cols: Vec<ArrayRef> = vec![
            finish_ts(&mut c.time),
            finish_ts(&mut c.end_time),
            Arc::new(c.duration_ns.finish()),
            Arc::new(c.trace_id.finish()),
            Arc::new(c.span_id.finish()),
            Arc::new(c.parent_span_id.finish()),
            Arc::new(c.trace_state.finish()),
            Arc::new(c.service_name.finish()),
            Arc::new(c.name.finish()),
            Arc::new(c.kind.finish()),
            Arc::new(c.status_code.finish()),
            Arc::new(c.status_message.finish()),
            Arc::new(c.attributes.finish()),
            Arc::new(c.events.finish()),
            Arc::new(c.links.finish()),
            Arc::new(c.flags.finish()),
            Arc::new(c.dropped_attributes_count.finish()),
            Arc::new(c.dropped_events_count.finish()),
            Arc::new(c.dropped_links_count.finish()),
        ];
        c.context.finish(&mut cols);
        push_batch(&mut decoded, TRACES, c.rows, cols);
    }
    decoded
}

// ---------------------------------------------------------------------------
// Metrics

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

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampNanosecondType};
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{Histogram, ResourceMetrics, ScopeMetrics, Sum};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    use super::*;

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn text_col<'a>(b: &'a RecordBatch, name: &str) -> &'a arrow::array::StringArray {
        b.column_by_name(name).unwrap().as_string::<i32>()
    }

    #[test]
    fn attributes_are_json_of_every_value_type() {
        use any_value::Value as V;
        let attrs = vec![
            kv("s", V::StringValue("a \"q\"\n".into())),
            kv("b", V::BoolValue(true)),
            kv("i", V::IntValue(9_007_199_254_740_993)),
            kv("d", V::DoubleValue(2.0)),
            kv("nan", V::DoubleValue(f64::NAN)),
            kv("bytes", V::BytesValue(vec![0, 1, 2])),
            kv(
                "arr",
                V::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(V::IntValue(1)),
                    }],
                }),
            ),
            kv(
                "kv",
                V::KvlistValue(KeyValueList {
                    values: vec![kv("x", V::StringValue("y".into()))],
                }),
            ),
            KeyValue {
                key: "empty".into(),
                value: None,
                ..Default::default()
            },
        ];
        let text = attrs_text(&attrs);
        assert_eq!(
            text,
            r#"{"s":"a \"q\"\n","b":true,"i":9007199254740993,"d":2.0,"nan":"NaN","bytes":"AAEC","arr":[1],"kv":{"x":"y"},"empty":null}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["i"].as_i64(), Some(9_007_199_254_740_993));
    }

    fn span(trace_id: Vec<u8>, start: u64, end: u64) -> Span {
        Span {
            trace_id,
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn spans_keep_nanoseconds_and_hex_ids_and_reject_bad_ones_alone() {
        let good = span(
            (0..16).collect(),
            1_700_000_000_123_456_789,
            1_700_000_000_223_456_790,
        );
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("api".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        good,
                        span(vec![1; 5], 1, 2),
                        span((0..16).collect(), 0, 0),
                        span((0..16).collect(), 10, 5),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let d = decode_traces(&req);
        assert_eq!((d.accepted, d.rejected), (1, 3));
        assert!(
            d.error_message.contains("trace_id must be 16 bytes, not 5"),
            "{}",
            d.error_message
        );
        assert!(
            d.error_message.contains("no start_time_unix_nano"),
            "{}",
            d.error_message
        );
        assert!(
            d.error_message.contains("is before start_time_unix_nano"),
            "{}",
            d.error_message
        );
        let (table, b) = &d.tables[0];
        assert_eq!(*table, TRACES);
        assert_eq!(b.schema(), table_schema(TRACES).unwrap());
        let time = b.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(time.value(0), 1_700_000_000_123_456_789);
        assert_eq!(
            b.column_by_name("duration_ns")
                .unwrap()
                .as_primitive::<Int64Type>()
                .value(0),
            100_000_001
        );
        assert_eq!(
            text_col(b, "trace_id").value(0),
            "000102030405060708090a0b0c0d0e0f"
        );
        assert_eq!(text_col(b, "span_id").value(0), "0102030405060708");
        assert!(text_col(b, "parent_span_id").is_null(0));
        assert_eq!(text_col(b, "service_name").value(0), "api");
        assert_eq!(text_col(b, "kind").value(0), "server");
        assert_eq!(text_col(b, "status_code").value(0), "error");
        assert_eq!(text_col(b, "events").value(0), "[]");
    }

    #[test]
    fn log_time_falls_back_to_observed_then_now() {
        let rec = |t, o| LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: o,
            body: Some(AnyValue {
                value: Some(any_value::Value::IntValue(7)),
            }),
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![rec(5, 6), rec(0, 6), rec(0, 0)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let d = decode_logs(&req, 99);
        let b = &d.tables[0].1;
        let time = b.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(time.values().to_vec(), vec![5, 6, 99]);
        assert_eq!(text_col(b, "body").value(0), "7");
        assert!(text_col(b, "service_name").is_null(0));
    }

    #[test]
    fn metrics_go_to_the_table_of_their_type() {
        let sum = Metric {
            name: "requests".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    time_unix_nano: 10,
                    value: Some(number_data_point::Value::AsInt(3)),
                    ..Default::default()
                }],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let hist = Metric {
            name: "latency".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![
                    HistogramDataPoint {
                        time_unix_nano: 10,
                        count: 3,
                        bucket_counts: vec![1, 2],
                        explicit_bounds: vec![0.5],
                        ..Default::default()
                    },
                    HistogramDataPoint {
                        time_unix_nano: 10,
                        count: 3,
                        bucket_counts: vec![1, 2],
                        explicit_bounds: vec![0.5, 1.0],
                        ..Default::default()
                    },
                ],
                aggregation_temporality: 1,
            })),
            ..Default::default()
        };
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        sum,
                        hist,
                        Metric {
                            name: "empty".into(),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let d = decode_metrics(&req);
        assert_eq!((d.accepted, d.rejected), (2, 2));
        assert!(
            d.error_message.contains(r#"metric "empty" has no data"#),
            "{}",
            d.error_message
        );
        assert!(
            d.error_message
                .contains("2 bucket counts for 2 explicit bounds"),
            "{}",
            d.error_message
        );
        let names: Vec<_> = d.tables.iter().map(|(t, _)| *t).collect();
        assert_eq!(names, [SUM, HISTOGRAM]);
        for (t, b) in &d.tables {
            assert_eq!(b.schema(), table_schema(t).unwrap());
        }
        let s = &d.tables[0].1;
        assert_eq!(
            text_col(s, "aggregation_temporality").value(0),
            "cumulative"
        );
        assert_eq!(
            s.column_by_name("value_int")
                .unwrap()
                .as_primitive::<Int64Type>()
                .value(0),
            3
        );
    }

    #[test]
    fn json_mapping_is_parsed() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
            "scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000001","severityNumber":17,
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "body":{"stringValue":"hi"},"attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
        let req: ExportLogsServiceRequest = parse(body, Encoding::Json).unwrap();
        let d = decode_logs(&req, 0);
        let b = &d.tables[0].1;
        let time = b.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(time.value(0), 1_700_000_000_000_000_001);
        assert_eq!(
            text_col(b, "trace_id").value(0),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(text_col(b, "attributes").value(0), r#"{"n":42}"#);
        assert!(parse::<ExportLogsServiceRequest>(b"{", Encoding::Json).is_err());
        assert!(parse::<ExportLogsServiceRequest>(b"\xff\xff", Encoding::Protobuf).is_err());
    }
}
