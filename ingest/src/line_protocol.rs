//! InfluxDB line protocol → rows, one table per measurement.
//!
//! Parsing is influxdata's `influxdb-line-protocol` crate. Tags become text
//! columns; fields keep their type (`1.5` double, `1i` bigint, `1u` bigint
//! unsigned, `"x"` text, `t` boolean). Each line stands alone: a line that
//! does not parse, or whose value conflicts with a column's type, is rejected
//! with its line number and the rest are written.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use influxdb_line_protocol::{FieldValue, parse_lines, split_lines};

use crate::rows::{TableRows, Value};
use crate::{Precision, Rejected};

/// Decoded tables and rejected lines of one request.
pub struct Decoded {
    /// Rows per table (measurement), in name order.
    pub tables: Vec<TableRows>,
    /// Lines that were not accepted.
    pub rejected: Vec<Rejected>,
}

/// Decodes `body`. `schema_of` gives the current schema of an existing table.
pub fn decode(
    body: &str,
    precision: Precision,
    now_ns: i64,
    schema_of: &dyn Fn(&str) -> Option<SchemaRef>,
) -> Decoded {
    let mut tables: BTreeMap<String, TableRows> = BTreeMap::new();
    let mut rejected = vec![];
    for (i, line) in split_lines(body).enumerate() {
        // The parser rejects trailing blanks and does not take \r as
        // whitespace; CRLF bodies and trailing spaces are common.
        let line = line.trim_end();
        let Some(parsed) = parse_lines(line).next() else {
            continue; // blank or comment
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                rejected.push(Rejected {
                    line: i + 1,
                    reason: explain(line, &e),
                });
                continue;
            }
        };
        let time = match parsed.timestamp {
            None => now_ns,
            Some(t) => match precision.to_nanos(t) {
                Some(t) => t,
                None => {
                    rejected.push(Rejected {
                        line: i + 1,
                        reason: format!(
                            "timestamp {t} (precision {}) is out of range",
                            precision.name()
                        ),
                    });
                    continue;
                }
            },
        };
        let measurement = parsed.series.measurement.as_str();
        let rows = tables
            .entry(measurement.to_string())
            .or_insert_with(|| TableRows::new(measurement, schema_of(measurement)));
        // A literal beyond double precision (`x=1e400`) parses as infinity:
        // refused, as PostgreSQL refuses it, rather than stored as `inf`.
        if let Some((k, _)) = parsed
            .field_set
            .iter()
            .find(|(_, v)| matches!(v, FieldValue::F64(x) if x.is_infinite()))
        {
            rejected.push(Rejected {
                line: i + 1,
                reason: format!(
                    "field \"{}\" is out of range for type double precision",
                    k.as_str()
                ),
            });
            continue;
        }
        let mut values: Vec<(&str, Value<'_>)> = Vec::with_capacity(16);
        if let Some(tags) = &parsed.series.tag_set {
            for (k, v) in tags {
                values.push((k.as_str(), Value::Str(v.as_str())));
            }
        }
        for (k, v) in &parsed.field_set {
            values.push((
                k.as_str(),
                match v {
                    FieldValue::I64(x) => Value::I64(*x),
                    FieldValue::U64(x) => Value::U64(*x),
                    FieldValue::F64(x) => Value::F64(*x),
                    FieldValue::String(s) => Value::Str(s.as_str()),
                    FieldValue::Boolean(b) => Value::Bool(*b),
                },
            ));
        }
        let tags = parsed.series.tag_set.as_ref().map_or(0, |t| t.len());
        if let Err(reason) = rows.push_tagged(time, &values, 0..tags) {
            rejected.push(Rejected {
                line: i + 1,
                reason: reason.to_string(),
            });
        }
    }
    Decoded {
        tables: tables.into_values().collect(),
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[test]
    fn a_float_beyond_double_precision_is_rejected() {
        let d = decode(
            "m,host=a x=1e400 1\nm,host=b x=1.5 2\n",
            Precision::Nanoseconds,
            0,
            &|_| None,
        );
        assert_eq!(d.rejected.len(), 1, "{:?}", d.rejected);
        assert_eq!(d.rejected[0].line, 1);
        assert_eq!(
            d.rejected[0].reason,
            "field \"x\" is out of range for type double precision"
        );
        assert_eq!(d.tables.len(), 1);
    }

    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Schema, TimestampNanosecondType};

    use super::*;
    use crate::rows::{TIME, time_type};

    #[test]
    fn measurements_tags_fields_and_rejections() {
        let body = "cpu,host=a,region=west usage=1.5,cores=4i 1704067200000000000\n\
                    \n\
                    # a comment\n\
                    mem,host=a used=10u,ok=t,note=\"hi there\" 1704067200000000001\n\
                    cpu,host=b usage=2.5 \n\
                    this is not line protocol\n\
                    cpu,host=c usage=\"high\" 1\n";
        let cpu_schema = Arc::new(Schema::new(vec![
            Field::new(TIME, time_type(), false),
            Field::new("usage", DataType::Float64, true),
        ]));
        let d = decode(body, Precision::Nanoseconds, 99, &|t| {
            (t == "cpu").then(|| cpu_schema.clone())
        });
        let lines: Vec<usize> = d.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [6, 7], "{:?}", d.rejected);
        assert!(
            d.rejected[1]
                .reason
                .contains("is double, but this value is text")
        );
        assert_eq!(d.tables.len(), 2);
        let cpu = d
            .tables
            .into_iter()
            .next()
            .unwrap()
            .finish()
            .unwrap()
            .unwrap();
        assert_eq!(cpu.num_rows(), 2);
        let t = cpu.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!((t.value(0), t.value(1)), (1_704_067_200_000_000_000, 99));
        let names: Vec<String> = cpu
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["time", "host", "region", "usage", "cores"]);
    }

    #[test]
    fn precision_scales_timestamps() {
        let d = decode("m v=1 1704067200", Precision::Seconds, 0, &|_| None);
        let b = d
            .tables
            .into_iter()
            .next()
            .unwrap()
            .finish()
            .unwrap()
            .unwrap();
        let t = b.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(t.value(0), 1_704_067_200_000_000_000);
    }
}

/// The shape every line has, quoted in the errors.
const SHAPE: &str = "measurement[,tag=value...] field=value[,field=value...] [timestamp]";

/// What is wrong with `line`, and where (1-based columns), in words a
/// person can act on; the parser's own errors name its internals
/// (`A generic parsing error occurred: TakeWhile1`).
fn explain(line: &str, e: &influxdb_line_protocol::Error) -> String {
    use influxdb_line_protocol::Error as E;
    // Where the series (measurement and tags) ends, and any quote that is
    // never closed, skipping escaped characters.
    let (mut series_end, mut open_quote, mut escaped) = (None, None, false);
    for (col, c) in line.chars().enumerate() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' if series_end.is_some() => {
                open_quote = if open_quote.is_some() {
                    None
                } else {
                    Some(col + 1)
                };
            }
            ' ' if series_end.is_none() => series_end = Some(col + 1),
            _ => {}
        }
    }
    if let Some(col) = open_quote {
        return format!("unterminated string: the quote at column {col} is never closed");
    }
    match e {
        _ if series_end.is_none() => format!(
            "missing fields: the line ends after the measurement and tags (a line is {SHAPE})"
        ),
        E::FieldSetMissing => format!(
            "missing fields after column {} (a line is {SHAPE})",
            series_end.unwrap_or(0)
        ),
        E::CannotParseEntireLine { trailing_content } => {
            let col = line.chars().count() - trailing_content.chars().count() + 1;
            format!(
                "cannot parse from column {col}: {:?} (a field value is a number, 1i, 1u, \"text\", true or false; the timestamp an integer)",
                trailing_content.trim()
            )
        }
        E::TagSetMalformed => format!(
            "malformed tags before column {}: each tag is key=value, both non-empty (a line is {SHAPE})",
            series_end.unwrap_or(0)
        ),
        E::GenericParsingError { .. } => format!("cannot parse this line (a line is {SHAPE})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod explain_tests {
    use super::*;

    #[test]
    fn errors_say_what_and_where() {
        let reason = |body: &str| {
            decode(body, Precision::Nanoseconds, 0, &|_| None)
                .rejected
                .into_iter()
                .map(|r| r.reason)
                .collect::<Vec<_>>()
                .join("; ")
        };
        assert_eq!(
            reason("m,host=a"),
            format!(
                "missing fields: the line ends after the measurement and tags (a line is {SHAPE})"
            )
        );
        assert_eq!(
            reason("m,host=a f=\"abc"),
            "unterminated string: the quote at column 12 is never closed"
        );
        assert_eq!(
            reason("m f=1i,g=2x"),
            "cannot parse from column 11: \"x\" (a field value is a number, 1i, 1u, \"text\", true or false; the timestamp an integer)"
        );
        assert!(reason("m,host= f=2").starts_with("malformed tags before column 8"));
        // Quoted text may hold spaces, quotes escaped and commas.
        assert_eq!(reason("m,host=a f=\"a \\\"b\\\" c\" 1"), "");
    }
}
