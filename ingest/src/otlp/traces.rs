//! Traces: an `ExportTraceServiceRequest` → `otel_traces` rows, one per
//! span, with its events and links as JSON text and its kind and status as
//! names; a span that cannot be stored is rejected alone.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{span, status};

use super::common::{
    Context, ContextCols, attrs_text, finish_ts, id, json_attrs, json_str, nanos, non_empty,
    rfc3339,
};
use super::{Decoded, Rejections, TRACES, push_batch};

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
