//! What the OTLP decoders share: attributes and values as JSON text, ids
//! as hex, times and counts checked to fit, and the resource and scope of
//! the records being decoded ([`Context`]) with the builders of their
//! columns ([`ContextCols`]), appended to every row of every table.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder, TimestampNanosecondBuilder};
use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;

// ---------------------------------------------------------------------------
// JSON text of attributes and values

/// Appends `s` as a JSON string literal.
pub(super) fn json_str(out: &mut String, s: &str) {
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

pub(super) fn json_f64(out: &mut String, f: f64) {
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

pub(super) fn json_any(out: &mut String, v: Option<&AnyValue>) {
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

pub(super) fn json_attrs(out: &mut String, kvs: &[KeyValue]) {
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

pub(super) fn attrs_text(kvs: &[KeyValue]) -> String {
    let mut s = String::with_capacity(16 * kvs.len() + 2);
    json_attrs(&mut s, kvs);
    s
}

/// A log body: a string as is, anything else as its JSON text.
pub(super) fn body_text(v: &AnyValue) -> Option<String> {
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

pub(super) fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// An id as hex text: `None` when absent (empty), an error when its length is wrong.
pub(super) fn id(bytes: &[u8], len: usize, what: &str) -> Result<Option<String>, String> {
    match bytes.len() {
        0 => Ok(None),
        n if n == len => Ok(Some(hex(bytes))),
        n => Err(format!("{what} must be {len} bytes, not {n}")),
    }
}

/// A `*_unix_nano` value as a timestamp; 0 means absent.
pub(super) fn nanos(t: u64, what: &str) -> Result<Option<i64>, String> {
    match t {
        0 => Ok(None),
        t => i64::try_from(t)
            .map(Some)
            .map_err(|_| format!("{what} {t} is past the year 2262")),
    }
}

pub(super) fn count(c: u64, what: &str) -> Result<i64, String> {
    i64::try_from(c).map_err(|_| format!("{what} {c} does not fit a bigint"))
}

pub(super) fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

// ---------------------------------------------------------------------------
// Builders

pub(super) fn finish_ts(b: &mut TimestampNanosecondBuilder) -> ArrayRef {
    Arc::new(b.finish().with_timezone("UTC"))
}

/// The resource and scope of the records being decoded, as column values.
pub(super) struct Context {
    pub(super) service_name: Option<String>,
    pub(super) resource_attributes: String,
    pub(super) resource_schema_url: String,
    pub(super) scope_name: String,
    pub(super) scope_version: String,
    pub(super) scope_attributes: String,
    pub(super) scope_schema_url: String,
}

impl Context {
    pub(super) fn resource(resource: Option<&Resource>, schema_url: &str) -> Self {
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

    pub(super) fn set_scope(&mut self, scope: Option<&InstrumentationScope>, schema_url: &str) {
        self.scope_name = scope.map(|s| s.name.clone()).unwrap_or_default();
        self.scope_version = scope.map(|s| s.version.clone()).unwrap_or_default();
        self.scope_attributes = attrs_text(scope.map(|s| s.attributes.as_slice()).unwrap_or(&[]));
        self.scope_schema_url = schema_url.to_string();
    }
}

/// Builders of the resource and scope columns.
#[derive(Default)]
pub(super) struct ContextCols {
    pub(super) resource_attributes: StringBuilder,
    pub(super) resource_schema_url: StringBuilder,
    pub(super) scope_name: StringBuilder,
    pub(super) scope_version: StringBuilder,
    pub(super) scope_attributes: StringBuilder,
    pub(super) scope_schema_url: StringBuilder,
}

impl ContextCols {
    pub(super) fn append(&mut self, c: &Context) {
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

    pub(super) fn finish(&mut self, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(self.resource_attributes.finish()));
        out.push(Arc::new(self.resource_schema_url.finish()));
        out.push(Arc::new(self.scope_name.finish()));
        out.push(Arc::new(self.scope_version.finish()));
        out.push(Arc::new(self.scope_attributes.finish()));
        out.push(Arc::new(self.scope_schema_url.finish()));
    }
}
