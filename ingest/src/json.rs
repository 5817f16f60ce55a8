//! NDJSON and JSON arrays of objects → rows of one table.
//!
//! The body is either one JSON array of objects or one object per line.
//! Nested objects flatten into columns joined with [`SEPARATOR`]
//! (`{"http": {"status": 200}}` → column `http.status`); arrays are kept as
//! their JSON text; `null` leaves the column NULL. The `time` field is an
//! RFC 3339 string or an integer in the request's precision; rows without
//! one get the time of arrival. A row that is not an object, or whose value
//! conflicts with a column's type, is rejected with its line (or array
//! index) and the other rows are kept.

use serde_json::{Map, Value as Json};

use crate::rows::{TIME, TableRows, Value};
use crate::{IngestError, Precision, Rejected};

/// Joins the keys of nested objects into column names.
pub const SEPARATOR: &str = ".";

/// Decodes `body` into `rows`, returning the rejected rows. Fails as a
/// whole only when the body is not JSON at all.
pub fn decode(
    body: &[u8],
    rows: &mut TableRows,
    precision: Precision,
    now_ns: i64,
) -> Result<Vec<Rejected>, IngestError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| IngestError::Malformed(format!("body is not UTF-8: {e}")))?;
    let mut rejected = vec![];
    if text.trim_start().starts_with('[') {
        if let Some(n) = integer_beyond_64_bits(text) {
            return Err(IngestError::Malformed(beyond_64_bits(&n)));
        }
        let items: Vec<Json> = serde_json::from_str(text)
            .map_err(|e| IngestError::Malformed(format!("invalid JSON array: {e}")))?;
        for (i, item) in items.iter().enumerate() {
            if let Err(reason) = push(item, rows, precision, now_ns) {
                rejected.push(Rejected {
                    line: i + 1,
                    reason: format!("element {i}: {reason}"),
                });
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let result = match integer_beyond_64_bits(line) {
                Some(n) => Err(IngestError::InvalidRow(beyond_64_bits(&n))),
                None => serde_json::from_str::<Json>(line)
                    .map_err(|e| IngestError::InvalidRow(format!("invalid JSON: {e}")))
                    .and_then(|item| push(&item, rows, precision, now_ns)),
            };
            if let Err(reason) = result {
                rejected.push(Rejected {
                    line: i + 1,
                    reason: reason.to_string(),
                });
            }
        }
    }
    Ok(rejected)
}

/// The first integer of the JSON `text` that neither a bigint nor an
/// unsigned 64-bit integer holds (`123456789012345678901234567890`), which
/// serde_json would read as a double, losing digits; strings are skipped.
fn integer_beyond_64_bits(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let fraction = matches!(b.get(i), Some(b'.' | b'e' | b'E'));
            let number = &text[start..i];
            if !fraction && number.parse::<i64>().is_err() && number.parse::<u64>().is_err() {
                return Some(number.to_string());
            }
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'+' | b'-'))
            {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    None
}

fn beyond_64_bits(n: &str) -> String {
    format!(
        "the integer {n} is out of range for bigint: JSON numbers are stored as bigint or \
         double precision, which would lose its digits; send it as a string to keep them"
    )
}

fn push(
    item: &Json,
    rows: &mut TableRows,
    precision: Precision,
    now_ns: i64,
) -> Result<(), IngestError> {
    let bad = IngestError::InvalidRow;
    let Json::Object(obj) = item else {
        return Err(bad(format!("expected a JSON object, got {}", kind(item))));
    };
    let time = match obj.get(TIME) {
        None | Some(Json::Null) => now_ns,
        Some(Json::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| bad(format!("\"time\" is not an RFC 3339 timestamp: {s:?}")))?,
        Some(Json::Number(n)) => match n.as_i64() {
            Some(i) => precision
                .to_nanos(i)
                .ok_or_else(|| bad(format!("\"time\" {i} is out of range")))?,
            None => {
                return Err(bad(format!(
                    "\"time\" must be an integer (in {}, the precision) or an RFC 3339 string, got {n}",
                    precision.name()
                )));
            }
        },
        Some(other) => {
            return Err(bad(format!(
                "\"time\" must be a string or an integer, got {}",
                kind(other)
            )));
        }
    };
    let mut values = vec![];
    flatten(obj, "", &mut values);
    let values: Vec<(&str, Value<'_>)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    rows.push(time, &values)
}

fn flatten<'a>(obj: &'a Map<String, Json>, prefix: &str, out: &mut Vec<(String, Value<'a>)>) {
    for (k, v) in obj {
        if prefix.is_empty() && k == TIME {
            continue;
        }
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}{SEPARATOR}{k}")
        };
        match v {
            Json::Null => {}
            Json::Bool(b) => out.push((name, Value::Bool(*b))),
            Json::Number(n) => out.push((
                name,
                match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => Value::JsonInt(i),
                    (None, Some(u), _) => Value::U64(u),
                    (_, _, Some(f)) => Value::F64(f),
                    _ => Value::String(n.to_string()),
                },
            )),
            Json::String(s) => out.push((name, Value::Str(s))),
            Json::Array(_) => out.push((name, Value::String(v.to_string()))),
            Json::Object(inner) => flatten(inner, &name, out),
        }
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};

    use super::*;

    #[test]
    fn ndjson_flattens_and_keeps_good_rows() {
        let body =
            br#"{"time": "2024-01-01T00:00:00Z", "host": "a", "cpu": {"user": 1.5, "sys": 2}}
{"time": 1704067201000000000, "host": "b", "tags": ["x", "y"], "ok": true}
not json
{"host": 5}
[1, 2]
"#;
        let mut rows = TableRows::new("m", None);
        let rejected = decode(body, &mut rows, Precision::Nanoseconds, 42).unwrap();
        let lines: Vec<usize> = rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 4, 5], "{rejected:?}");
        assert!(
            rejected[1].reason.contains("column \"host\""),
            "{rejected:?}"
        );
        let b = rows.finish().unwrap().unwrap();
        assert_eq!(b.num_rows(), 2);
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["time", "cpu.sys", "cpu.user", "host", "ok", "tags"]);
        assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), 2);
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 1.5);
        assert_eq!(b.column(5).as_string::<i32>().value(1), r#"["x","y"]"#);
        let t = b
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        assert_eq!(t.value(0), 1_704_067_200_000_000_000);
        assert_eq!(t.value(1), 1_704_067_201_000_000_000);
    }

    #[test]
    fn integers_beyond_64_bits_are_rejected_not_rounded() {
        let mut rows = TableRows::new("t", None);
        let rejected = decode(
            b"{\"n\": 123456789012345678901234567890}\n{\"n\": 18446744073709551615, \"s\": \"123456789012345678901234567890\", \"f\": 1e29}\n",
            &mut rows,
            Precision::Nanoseconds,
            0,
        )
        .unwrap();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].line, 1);
        assert!(
            rejected[0]
                .reason
                .contains("the integer 123456789012345678901234567890 is out of range for bigint"),
            "{}",
            rejected[0].reason
        );
        let array = decode(
            b"[{\"n\": -99999999999999999999}]",
            &mut rows,
            Precision::Nanoseconds,
            0,
        );
        assert!(array.is_err());
    }

    #[test]
    fn arrays_and_missing_time() {
        let mut rows = TableRows::new("m", None);
        let rejected = decode(
            br#"[{"v": 1}, "x", {"v": 2, "time": 1704067200}]"#,
            &mut rows,
            Precision::Seconds,
            7,
        )
        .unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].line, 2);
        let b = rows.finish().unwrap().unwrap();
        let t = b
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        assert_eq!((t.value(0), t.value(1)), (7, 1_704_067_200_000_000_000));
        assert!(decode(b"[{", &mut TableRows::new("m", None), Precision::Seconds, 0).is_err());
    }
}
