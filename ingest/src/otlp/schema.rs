//! The schemas of the `otel_*` tables: the column helpers, the resource
//! and scope columns every table ends with, the columns every metrics table
//! shares, and [`table_schema`], which the decoders build their batches in
//! and `docs/otel-schema.md` documents.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{EXP_HISTOGRAM, GAUGE, HISTOGRAM, LOGS, SUM, SUMMARY, TRACES};
use crate::rows::time_type;

pub(super) fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, time_type(), nullable)
}

pub(super) fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

pub(super) fn int64(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

pub(super) fn int32(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}

pub(super) fn float64(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

pub(super) fn list(name: &str, item: DataType) -> Field {
    Field::new(name, DataType::new_list(item, true), true)
}

/// Resource and scope columns, at the end of every table.
pub(super) fn context_fields() -> Vec<Field> {
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
pub(super) fn metric_fields() -> Vec<Field> {
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
pub(super) fn metric_tail_fields() -> Vec<Field> {
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
