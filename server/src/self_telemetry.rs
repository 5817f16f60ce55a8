//! `--self-telemetry`: Sextant's own spans and log lines into its own
//! `otel_traces` and `otel_logs` tables.
//!
//! `tracing` → [`TelemetryLayer`] (a subscriber layer with its own filter,
//! `--self-telemetry-filter`) turns each closed span into an OTLP `Span` and
//! each event into an OTLP `LogRecord`, with trace and span ids that follow
//! the span tree → a bounded channel (full: the record is dropped and
//! counted, the server never waits) → [`SelfTelemetry::run`], which every
//! `--self-telemetry-interval` wraps what came in into OTLP export requests,
//! decodes them with the OTLP/HTTP decoders and writes them through the
//! engine like any other ingest (WAL, then Parquet).
//!
//! No feedback: the writer task runs inside a task-local marker, and the
//! layer skips every span and event made under it, so writing the records
//! makes no new ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use sextant_ingest::otlp;
use sextant_storage::Engine;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Records waiting for the writer; past this, new ones are dropped.
const CHANNEL_CAPACITY: usize = 20_000;

/// Spans that stand for a request from outside (OTLP kind `server`).
const SERVER_SPANS: &[&str] = &["query", "http_request", "otlp_grpc_export"];

tokio::task_local! {
    /// Set while the writer runs: nothing made under it is exported.
    static WRITING: ();
}

enum Record {
    Span(Span),
    Log(LogRecord),
}

/// The layer to install in the subscriber; it feeds [`SelfTelemetry`].
pub struct TelemetryLayer {
    tx: mpsc::Sender<Record>,
}

/// The receiving end: run it once the engine is open.
pub struct SelfTelemetry {
    rx: mpsc::Receiver<Record>,
}

/// A layer and the writer it sends to.
pub fn channel() -> (TelemetryLayer, SelfTelemetry) {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    (TelemetryLayer { tx }, SelfTelemetry { rx })
}

/// What the layer keeps in a span's extensions while it is open.
struct SpanData {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    start_ns: u64,
    attributes: Vec<KeyValue>,
    /// Made by the writer: not exported, nor are its children and events.
    skip: bool,
}

/// Spans are timed by the system clock, not the server's (which tests may
/// hold still: every span would last nothing).
fn now_ns() -> u64 {
    sextant_clock::Clock::System.now_ns().max(0) as u64
}

fn writing() -> bool {
    WRITING.try_with(|_| ()).is_ok()
}

/// Span ids: random start, then counted (unique within the process and
/// across restarts with overwhelming probability).
fn next_span_id() -> [u8; 8] {
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    let n = NEXT
        .get_or_init(|| AtomicU64::new(rand::random::<u64>() | 1))
        .fetch_add(1, Ordering::Relaxed);
    let n = if n == 0 { 1 } else { n };
    n.to_be_bytes()
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Collects an event's or span's fields as OTLP attributes; `message`
/// apart.
#[derive(Default)]
struct Fields {
    attributes: Vec<KeyValue>,
    message: Option<String>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::StringValue(s) => s,
                other => format!("{other:?}"),
            });
            return;
        }
        // A span's `record` replaces a field declared empty at creation.
        match self.attributes.iter_mut().find(|a| a.key == field.name()) {
            Some(a) => a.value = Some(AnyValue { value: Some(value) }),
            None => self.attributes.push(kv(field.name(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::DoubleValue(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::IntValue(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::IntValue(value.min(i64::MAX as u64) as i64));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::BoolValue(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::StringValue(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::StringValue(format!("{value:?}")));
    }
}

fn severity(level: &Level) -> i32 {
    // OTLP SeverityNumber: TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17.
    match *level {
        Level::TRACE => 1,
        Level::DEBUG => 5,
        Level::INFO => 9,
        Level::WARN => 13,
        Level::ERROR => 17,
    }
}

fn text_of(a: &KeyValue) -> Option<&str> {
    match a.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// Error when the span says it failed: a statement's state, a non-success
/// SQLSTATE, an HTTP 5xx, an `error` field.
fn status(attributes: &[KeyValue]) -> Option<Status> {
    let mut failed = None;
    for a in attributes {
        match (
            a.key.as_str(),
            a.value.as_ref().and_then(|v| v.value.as_ref()),
        ) {
            ("state", Some(Value::StringValue(s))) if s == "failed" || s == "cancelled" => {
                failed.get_or_insert_with(|| format!("statement {s}"));
            }
            ("sqlstate", Some(Value::StringValue(s))) if !s.starts_with("00") => {
                failed.get_or_insert_with(|| format!("SQLSTATE {s}"));
            }
            ("status", Some(Value::IntValue(n))) if *n >= 500 => {
                failed.get_or_insert_with(|| format!("HTTP {n}"));
            }
            ("error", _) => {
                failed = Some(text_of(a).unwrap_or("error").to_string());
            }
            _ => {}
        }
    }
    failed.map(|message| Status {
        message,
        code: StatusCode::Error as i32,
    })
}

impl<S> Layer<S> for TelemetryLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| {
            p.extensions()
                .get::<SpanData>()
                .map(|d| (d.trace_id, d.span_id, d.skip))
        });
        let skip = writing() || parent.is_some_and(|(_, _, skip)| skip);
        let mut fields = Fields::default();
        if !skip {
            attrs.record(&mut fields);
        }
        let data = SpanData {
            trace_id: parent
                .map(|(t, _, _)| t)
                .unwrap_or_else(|| rand::random::<u128>().max(1).to_be_bytes()),
            span_id: next_span_id(),
            parent_span_id: parent.map(|(_, s, _)| s),
            start_ns: now_ns(),
            attributes: fields.attributes,
            skip,
        };
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(data) = ext.get_mut::<SpanData>() else {
            return;
        };
        if data.skip {
            return;
        }
        let mut fields = Fields {
            attributes: std::mem::take(&mut data.attributes),
            message: None,
        };
        values.record(&mut fields);
        data.attributes = fields.attributes;
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if writing() {
            return;
        }
        let ids = ctx.event_span(event).and_then(|s| {
            s.extensions()
                .get::<SpanData>()
                .map(|d| (d.trace_id, d.span_id, d.skip))
        });
        if ids.is_some_and(|(_, _, skip)| skip) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        fields
            .attributes
            .push(kv("target", Value::StringValue(meta.target().to_string())));
        let now = now_ns();
        let record = LogRecord {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number: severity(meta.level()),
            severity_text: meta.level().to_string(),
            body: fields.message.map(|m| AnyValue {
                value: Some(Value::StringValue(m)),
            }),
            attributes: fields.attributes,
            trace_id: ids.map(|(t, _, _)| t.to_vec()).unwrap_or_default(),
            span_id: ids.map(|(_, s, _)| s.to_vec()).unwrap_or_default(),
            ..Default::default()
        };
        self.send(Record::Log(record), "logs");
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(data) = span.extensions_mut().remove::<SpanData>() else {
            return;
        };
        if data.skip {
            return;
        }
        let meta = span.metadata();
        let mut attributes = data.attributes;
        attributes.push(kv("target", Value::StringValue(meta.target().to_string())));
        let kind = if data.parent_span_id.is_none() && SERVER_SPANS.contains(&meta.name()) {
            SpanKind::Server
        } else {
            SpanKind::Internal
        };
        let out = Span {
            trace_id: data.trace_id.to_vec(),
            span_id: data.span_id.to_vec(),
            parent_span_id: data.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: meta.name().to_string(),
            kind: kind as i32,
            start_time_unix_nano: data.start_ns,
            end_time_unix_nano: now_ns(),
            status: status(&attributes),
            attributes,
            ..Default::default()
        };
        self.send(Record::Span(out), "traces");
    }
}

impl TelemetryLayer {
    fn send(&self, record: Record, signal: &str) {
        if self.tx.try_send(record).is_err() {
            sextant_metrics::metrics()
                .self_telemetry_records
                .with_label_values(&[signal, "dropped"])
                .inc();
        }
    }
}

fn resource() -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", Value::StringValue("sextant".to_string())),
            kv(
                "service.version",
                Value::StringValue(env!("CARGO_PKG_VERSION").to_string()),
            ),
            kv(
                "process.pid",
                Value::IntValue(i64::from(std::process::id())),
            ),
        ],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "sextant".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

impl SelfTelemetry {
    /// Writes what the layer sends every `interval`, and a sample of every
    /// metric every `metrics_interval` (after `refresh_gauges` sets the
    /// state-like ones: write buffer, query memory, ...), until `shutdown`;
    /// then writes what is left.
    pub async fn run(
        mut self,
        engine: Engine,
        refresh_gauges: impl Fn() + Send + 'static,
        interval: Duration,
        metrics_interval: Duration,
        shutdown: CancellationToken,
    ) {
        WRITING
            .scope((), async move {
                let mut sample = tokio::time::interval(metrics_interval);
                sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    let stop = tokio::select! {
                        _ = shutdown.cancelled() => true,
                        _ = tokio::time::sleep(interval) => false,
                        _ = sample.tick() => {
                            refresh_gauges();
                            write_metrics(&engine).await;
                            continue;
                        }
                    };
                    self.flush(&engine).await;
                    if stop {
                        break;
                    }
                }
            })
            .await
    }

    async fn flush(&mut self, engine: &Engine) {
        let mut spans = Vec::new();
        let mut logs = Vec::new();
        while let Ok(record) = self.rx.try_recv() {
            match record {
                Record::Span(s) => spans.push(s),
                Record::Log(l) => logs.push(l),
            }
        }
        let mut decoded = Vec::new();
        if !spans.is_empty() {
            let n = spans.len();
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope()),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            decoded.push(("traces", n, otlp::decode_traces(&request)));
        }
        if !logs.is_empty() {
            let n = logs.len();
            let request = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(resource()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope()),
                        log_records: logs,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            decoded.push(("logs", n, otlp::decode_logs(&request, now_ns() as i64)));
        }
        let m = sextant_metrics::metrics();
        for (signal, n, d) in decoded {
            let batches = d
                .tables
                .into_iter()
                .map(|(t, b)| (t.to_string(), b))
                .collect();
            let outcome = match crate::write::write_batches(engine, batches, "self_telemetry").await
            {
                Ok(_) => "written",
                Err(e) => {
                    // Logged under WRITING: not exported in turn.
                    tracing::warn!(error = %e, records = n, signal, "self-telemetry could not write its records");
                    "dropped"
                }
            };
            m.self_telemetry_records
                .with_label_values(&[signal, outcome])
                .inc_by(n as u64);
        }
    }
}

/// The table of metric samples: one row per series and sample.
pub(crate) const METRICS_TABLE: &str = "sextant_metrics";

/// How long samples in [`METRICS_TABLE`] are kept (its retention, set when
/// the table is created; `ALTER TABLE` changes it).
const METRICS_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// One sample of every series of `GET /metrics` into [`METRICS_TABLE`]:
/// `time`, `name`, `labels` (a JSON object, for `json_get_str(labels,
/// 'protocol')`), `value`.
async fn write_metrics(engine: &Engine) {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;

    let time = now_ns() as i64;
    let samples = sextant_metrics::samples();
    let labels: Vec<String> = samples
        .iter()
        .map(|s| {
            let object: serde_json::Map<String, serde_json::Value> = s
                .label_pairs()
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            serde_json::Value::Object(object).to_string()
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("name", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(
                TimestampNanosecondArray::from(vec![time; samples.len()]).with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                samples.iter().map(|s| &s.name),
            )),
            Arc::new(StringArray::from_iter_values(&labels)),
            Arc::new(Float64Array::from_iter_values(
                samples.iter().map(|s| s.value),
            )),
        ],
    );
    let result = match batch {
        Ok(batch) => {
            let options = sextant_catalog::TableOptions {
                retention: Some(METRICS_RETENTION),
                ..Default::default()
            };
            match engine.ensure_columns(METRICS_TABLE, &schema, options).await {
                Ok(_) => crate::write::write_batches(
                    engine,
                    vec![(METRICS_TABLE.to_string(), batch)],
                    "self_telemetry",
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        // Logged under WRITING: not exported in turn.
        tracing::warn!(error = %e, "self-telemetry could not write its metrics");
    }
}
