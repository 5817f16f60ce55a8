//! InfluxDB line protocol → rows, one table per measurement.
//!
//! Parsing is influxdata's `influxdb-line-protocol` crate. Tags become text
//! columns; fields keep their type (`1.5` double, `1i` bigint, `1u` bigint
//! unsigned, `"x"` text, `t` boolean). Each line stands alone: a line that
//! does not parse, or whose value conflicts with a column's type, is rejected
//! with its line number and the rest are written.

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use influxdb_line_protocol::{FieldValue, parse_lines, split_lines};

use crate::rows::{TableRows, Value};
use crate::{Precision, Rejected};

mod fast;

/// Decoded tables and rejected lines of one request.
pub struct Decoded {
    /// Rows per table (measurement), in name order.
    pub tables: Vec<TableRows>,
    /// Lines that were not accepted.
    pub rejected: Vec<Rejected>,
}

/// Decodes `body`. `schema_of` gives the current schema of an existing table.
///
/// A plain line takes the hand-written fast path ([`fast`]); a line it does
/// not take (escapes, unusual values, errors) is parsed by the crate.
pub fn decode(
    body: &str,
    precision: Precision,
    now_ns: i64,
    schema_of: &dyn Fn(&str) -> Option<SchemaRef>,
) -> Decoded {
    let mut sink = Sink {
        precision,
        now_ns,
        schema_of,
        tables: vec![],
        index: HashMap::new(),
        last: 0,
        rejected: vec![],
    };
    let mut values: Vec<(&str, Value<'_>)> = Vec::with_capacity(32);
    for (i, line) in split_lines(body).enumerate() {
        // The parser rejects trailing blanks and does not take \r as
        // whitespace; CRLF bodies and trailing spaces are common.
        let line = line.trim_end();
        if let Some(head) = fast::parse(line, &mut values) {
            sink.row(i + 1, head.measurement, head.timestamp, &values, head.tags);
            continue;
        }
        let Some(parsed) = parse_lines(line).next() else {
            continue; // blank or comment
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                sink.reject(i + 1, explain(line, &e));
                continue;
            }
        };
        let (tags, fields) = crate_values(&parsed);
        let values: Vec<_> = tags.into_iter().chain(fields).collect();
        let tags = parsed.series.tag_set.as_ref().map_or(0, |t| t.len());
        sink.row(
            i + 1,
            parsed.series.measurement.as_str(),
            parsed.timestamp,
            &values,
            tags,
        );
    }
    let mut tables = sink.tables;
    tables.sort_by(|a, b| a.table().cmp(b.table()));
    Decoded {
        tables,
        rejected: sink.rejected,
    }
}

/// The tags and the fields of a line the crate parsed.
#[allow(clippy::type_complexity)]
fn crate_values<'a>(
    parsed: &'a influxdb_line_protocol::ParsedLine<'_>,
) -> (Vec<(&'a str, Value<'a>)>, Vec<(&'a str, Value<'a>)>) {
    let tags = parsed
        .series
        .tag_set
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), Value::Str(v.as_str())))
        .collect();
    let fields = parsed
        .field_set
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                match v {
                    FieldValue::I64(x) => Value::I64(*x),
                    FieldValue::U64(x) => Value::U64(*x),
                    FieldValue::F64(x) => Value::F64(*x),
                    FieldValue::String(s) => Value::Str(s.as_str()),
                    FieldValue::Boolean(b) => Value::Bool(*b),
                },
            )
        })
        .collect();
    (tags, fields)
}

/// Where the rows of one request go: a table per measurement.
struct Sink<'s> {
    precision: Precision,
    now_ns: i64,
    schema_of: &'s dyn Fn(&str) -> Option<SchemaRef>,
    tables: Vec<TableRows>,
    index: HashMap<String, usize>,
    /// The table of the previous row: lines of one measurement come together.
    last: usize,
    rejected: Vec<Rejected>,
}

impl Sink<'_> {
    fn reject(&mut self, line: usize, reason: String) {
        self.rejected.push(Rejected { line, reason });
    }

    /// One parsed line: `values` are its tags (the first `tags`) and fields.
    fn row(
        &mut self,
        line: usize,
        measurement: &str,
        timestamp: Option<i64>,
        values: &[(&str, Value<'_>)],
        tags: usize,
    ) {
        let time = match timestamp {
            None => self.now_ns,
            Some(t) => match self.precision.to_nanos(t) {
                Some(t) => t,
                None => {
                    let reason = format!(
                        "timestamp {t} (precision {}) is out of range",
                        self.precision.name()
                    );
                    return self.reject(line, reason);
                }
            },
        };
        // A literal beyond double precision (`x=1e400`) parses as infinity:
        // refused, as PostgreSQL refuses it, rather than stored as `inf`.
        if let Some((k, _)) = values[tags..]
            .iter()
            .find(|(_, v)| matches!(v, Value::F64(x) if x.is_infinite()))
        {
            let reason = format!("field \"{k}\" is out of range for type double precision");
            return self.reject(line, reason);
        }
        let t = match self.tables.get(self.last) {
            Some(rows) if rows.table() == measurement => self.last,
            _ => match self.index.get(measurement) {
                Some(&t) => t,
                None => {
                    let rows = TableRows::new(measurement, (self.schema_of)(measurement));
                    self.tables.push(rows);
                    self.index
                        .insert(measurement.to_string(), self.tables.len() - 1);
                    self.tables.len() - 1
                }
            },
        };
        self.last = t;
        if let Err(reason) = self.tables[t].push_tagged(time, values, 0..tags) {
            self.reject(line, reason.to_string());
        }
    }
}

/// Panics unless the fast path and the crate agree on every line of `body`
/// the fast path takes (for the fuzz target and the tests).
#[doc(hidden)]
pub fn check_fast_path(body: &str) {
    let mut values = vec![];
    for line in split_lines(body) {
        let line = line.trim_end();
        let Some(head) = fast::parse(line, &mut values) else {
            continue;
        };
        let parsed = match parse_lines(line).next() {
            Some(Ok(p)) => p,
            other => panic!("fast path took {line:?}, the crate gave {other:?}"),
        };
        let (tags, fields) = crate_values(&parsed);
        let theirs: Vec<_> = tags.iter().chain(&fields).cloned().collect();
        let same_values = values.len() == theirs.len()
            && values.iter().zip(&theirs).all(|(a, b)| {
                a.0 == b.0
                    && match (&a.1, &b.1) {
                        // NaN is not a float literal; compare bits for -0.0.
                        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
                        (x, y) => x == y,
                    }
            });
        assert!(
            head.measurement == parsed.series.measurement.as_str()
                && head.tags == tags.len()
                && head.timestamp == parsed.timestamp
                && same_values,
            "fast path and crate differ on {line:?}: {:?} {values:?} {:?} against {parsed:?}",
            head.measurement,
            head.timestamp
        );
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

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    /// Lines at the edges of the grammar: each is either left to the crate
    /// or parsed exactly as the crate parses it.
    const EDGES: &[&str] = &[
        "cpu,host=a,region=us-west usage_user=58.2,usage_system=2i,n=3u,ok=t,s=\"x y,z=1\" 1700000000000000000",
        "cpu usage=1",
        "cpu usage=-1.5e-3,b=1E5,c=2.5E+10,d=-0,e=007 -42",
        "cpu,host=a usage=1   17",
        "cpu,host=a   usage=1 17",
        "cpu,a,b=c f=1",
        "cpu,a=b=c f=1",
        "cpu,a=b, f=1",
        "cpu, f=1",
        "cpu,=b f=1",
        "cpu,a= f=1",
        "cpu a,b=1",
        "cpu a=1,",
        "cpu a=1,b",
        "cpu a=",
        "cpu a=1.",
        "cpu a=.5",
        "cpu a=+1",
        "cpu a=1e",
        "cpu a=1.5e",
        "cpu a=1x",
        "cpu a=1i2",
        "cpu a=-i",
        "cpu a=-1u",
        "cpu a=99999999999999999999i",
        "cpu a=99999999999999999999u",
        "cpu a=1e400",
        "cpu a=tru",
        "cpu a=True,b=FALSE,c=F,d=false",
        "cpu a=fi",
        "cpu a=\"\"",
        "cpu a=\"unterminated",
        "cpu a=\"x\"y",
        "cpu a=\"x\" 12x",
        "cpu a=1 99999999999999999999",
        "cpu a=1 -",
        "cpu a=1 1 2",
        "cpu\ta=1",
        "cpu\0 a=1",
        "cp\"u a=1",
        "cpu,\"k\"=v a=1",
        "cpu a\"=1",
        "cpu,ho\\ st=a a=1",
        "#cpu a=1",
        " cpu a=1",
        "cpu",
        "cpu,host=a",
        "cpu ",
        "mém,hôte=é ü=1.5 1",
        "cpu,time=1 a=1",
        "cpu a=1,a=2",
        "cpu,k=1,k=2 a=1",
    ];

    #[test]
    fn fast_path_agrees_with_the_crate_on_the_edges() {
        for line in EDGES {
            check_fast_path(line);
        }
        // And on whole bodies: each line with every line protocol of the tests.
        check_fast_path(&EDGES.join("\n"));
    }

    #[test]
    fn fast_path_takes_plain_lines_and_gives_the_same_rows() {
        let plain = EDGES[0];
        let mut values = vec![];
        assert!(fast::parse(plain, &mut values).is_some());
        assert!(fast::parse("cpu,ho\\ st=a a=1", &mut values).is_none());
        // The same body through the fast path and, escaped so that every
        // line takes the crate's, gives the same batch.
        let fast_body = "cpu,host=a u=1.5,n=2i 1\ncpu,host=b u=2.5,n=3i 2\n";
        let slow_body = "cpu,host=\\a u=1.5,n=2i 1\ncpu,host=\\b u=2.5,n=3i 2\n";
        let batch = |body| {
            let d = decode(body, Precision::Nanoseconds, 0, &|_| None);
            assert!(d.rejected.is_empty(), "{:?}", d.rejected);
            d.tables
                .into_iter()
                .next()
                .unwrap()
                .finish()
                .unwrap()
                .unwrap()
        };
        let (a, b) = (batch(fast_body), batch(slow_body));
        assert_eq!(a.schema(), b.schema());
        for c in 0..a.num_columns() {
            if a.schema().field(c).name() != "host" {
                assert_eq!(a.column(c).as_ref(), b.column(c).as_ref());
            }
        }
    }

    #[test]
    fn rows_switching_shape_keep_their_columns() {
        let body = "m,h=a x=1 1\nm,h=a y=2i 2\nm,h=a x=3 3\nm x=\"s\" 4\nm x=4 5\nn z=1 6\nm,h=b x=5,y=6i 7\n";
        let d = decode(body, Precision::Nanoseconds, 0, &|_| None);
        assert_eq!(d.rejected.len(), 1, "{:?}", d.rejected);
        assert_eq!(d.rejected[0].line, 4);
        let names: Vec<_> = d.tables.iter().map(|t| t.table().to_string()).collect();
        assert_eq!(names, ["m", "n"]);
        let m = d
            .tables
            .into_iter()
            .next()
            .unwrap()
            .finish()
            .unwrap()
            .unwrap();
        assert_eq!(m.num_rows(), 5);
        use arrow::util::pretty::pretty_format_batches;
        let text = pretty_format_batches(&[m.project(&[1, 2, 3]).unwrap()])
            .unwrap()
            .to_string();
        let rows: Vec<&str> = text.lines().skip(3).take(5).collect();
        assert_eq!(
            rows,
            [
                "| a | 1.0 |   |",
                "| a |     | 2 |",
                "| a | 3.0 |   |",
                "|   | 4.0 |   |",
                "| b | 5.0 | 6 |",
            ],
            "{text}"
        );
    }
}
