//! Logs: an `ExportLogsServiceRequest` → `otel_logs` rows, one per log
//! record, each with its resource and scope columns; a record that cannot
//! be stored is rejected alone.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

use super::common::{Context, ContextCols, attrs_text, body_text, finish_ts, id, nanos, non_empty};
use super::{Decoded, LOGS, Rejections, push_batch};

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
