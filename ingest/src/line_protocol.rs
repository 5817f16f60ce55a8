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
                    reason: format!("{e}"),
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
        if let Err(reason) = rows.push(time, &values) {
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
