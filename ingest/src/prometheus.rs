//! Prometheus remote write 1.0 → rows, one table per metric.
//!
//! Data flow: the body of `POST /api/v1/write` is a snappy-compressed (the
//! *block* format, not the framed one) protobuf `prometheus.WriteRequest`.
//! [`decode`] reads the decompressed length from the snappy header first and
//! refuses bodies that would expand past the limit ([`IngestError::TooLarge`],
//! a 413) before allocating anything, then decompresses, decodes the protobuf
//! with the hand-written [`prost`] messages below, and pushes every sample as
//! one row into the [`TableRows`] of its metric.
//!
//! Table layout (like GreptimeDB and InfluxDB 3): one table per metric, named
//! by the `__name__` label. The sample timestamp (milliseconds) becomes
//! `time` (nanoseconds), the sample value a `value` column of type double,
//! and every other label a text column named exactly as the label. So
//! `http_requests_total{instance="a:9100",job="api"} 17 @1704067200000` is
//! the row `(time '2024-01-01 00:00:00', value 17.0, instance 'a:9100',
//! job 'api')` of table `http_requests_total`. A label with an empty value is
//! the same as no label in Prometheus, so it leaves its column NULL. Classic
//! histograms and summaries arrive as ordinary series (`*_bucket` with an
//! `le` text column, `*_sum`, `*_count`, `quantile`) and need nothing
//! special. NaN values, including the staleness marker Prometheus writes when
//! a series disappears (bits `0x7ff0000000000002`), are stored bit for bit.
//!
//! PromQL in SQL, roughly:
//!
//! ```sql
//! -- http_requests_total{job="api"}
//! SELECT time, instance, value FROM http_requests_total WHERE job = 'api';
//! -- sum by (instance) (rate(http_requests_total[5m])), without counter
//! -- resets (a reset inside the window makes max - min wrong) and with
//! -- staleness markers filtered out
//! SELECT instance, (max(value) - min(value)) / 300 AS rate
//! FROM http_requests_total
//! WHERE time > now() - INTERVAL '5 minutes' AND NOT isnan(value)
//! GROUP BY instance;
//! ```
//!
//! Rejections are per time series ([`Rejected::line`] is the 1-based index of
//! the series in the request) and take all the series' samples with them:
//! a series without a metric name, with a label named `time` or `value`
//! (they would collide with the table's own columns), with a duplicate or
//! invalid label name (`[a-zA-Z_][a-zA-Z0-9_]*`), with a timestamp outside
//! the nanosecond range (years 1677 to 2262), with native histograms (not
//! supported yet), or with a value that conflicts with an existing column's
//! type. The other series are written. Series with neither samples nor
//! histograms are skipped.
//!
//! Metric metadata (`WriteRequest.metadata`: a metric family's type, help
//! and unit, which Prometheus sends in requests of their own every
//! `metadata_config.send_interval`) comes back in [`Decoded::metadata`] for
//! the server to keep. Exemplars are accepted and ignored. A series carrying both float samples and
//! native histograms (which Prometheus never sends) keeps its samples; its
//! histograms are dropped and counted in [`Decoded::rejected_samples`].

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use prost::Message;

use crate::rows::{TIME, TableRows, Value};
use crate::{IngestError, Rejected};

/// Name of the column holding the sample value.
pub const VALUE: &str = "value";

/// The metric-name label, whose value names the table.
pub const METRIC_NAME: &str = "__name__";

/// `prometheus.WriteRequest` of remote write 1.0.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric families' metadata.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.MetricMetadata`: what a metric family is.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// `MetricType`: 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gauge
    /// histogram, 5 summary, 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// The family's name (a histogram's, without `_bucket`).
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Its HELP text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Its UNIT.
    #[prost(string, tag = "5")]
    pub unit: String,
}

impl MetricMetadata {
    /// The type as Prometheus's metadata API names it (`counter`, ...);
    /// a number this version does not know is `unknown`.
    pub fn type_name(&self) -> &'static str {
        match self.r#type {
            1 => "counter",
            2 => "gauge",
            3 => "histogram",
            4 => "gaugehistogram",
            5 => "summary",
            6 => "info",
            7 => "stateset",
            _ => "unknown",
        }
    }
}

/// `prometheus.TimeSeries`: one label set and its samples.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// The labels, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars (ignored).
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histogram samples, kept as raw `prometheus.Histogram` messages
    /// only to count them: they are not supported yet.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub histograms: Vec<Vec<u8>>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    /// Exemplar labels (a trace id, typically).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// Decoded tables and rejected series of one request.
pub struct Decoded {
    /// Rows per table (metric), in order of first appearance.
    pub tables: Vec<TableRows>,
    /// Series that were not accepted.
    pub rejected: Vec<Rejected>,
    /// Samples accepted (rows in `tables`).
    pub samples: usize,
    /// Samples (float and native histogram) of rejected series, plus any
    /// histograms dropped from series that also had float samples.
    pub rejected_samples: usize,
    /// The metric metadata the request carried, those with a family name
    /// of 1 to 128 printable characters (others are dropped).
    pub metadata: Vec<MetricMetadata>,
}

/// The size a remote-write body says it unpacks to (snappy's header),
/// before anything is unpacked; `None` when the header is not snappy's.
pub fn decoded_len(body: &[u8]) -> Option<usize> {
    snap::raw::decompress_len(body).ok()
}

/// Decodes a remote-write body. `max_decoded` bounds the decompressed size;
/// `schema_of` gives the current schema of an existing table.
pub fn decode(
    body: &[u8],
    max_decoded: usize,
    schema_of: &dyn Fn(&str) -> Option<SchemaRef>,
) -> Result<Decoded, IngestError> {
    let mut req = decompress_and_parse(body, max_decoded)?;
    let mut metadata = std::mem::take(&mut req.metadata);
    metadata.retain(|m| {
        let n = &m.metric_family_name;
        !n.is_empty() && n.len() <= 128 && !n.chars().any(char::is_control)
    });

    let mut tables: Vec<TableRows> = vec![];
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut rejected = vec![];
    let mut samples = 0;
    let mut rejected_samples = 0;
    // One row's values, reused: `value` first, then the labels.
    let mut values: Vec<(&str, Value<'_>)> = Vec::with_capacity(16);

    for (i, series) in req.timeseries.iter().enumerate() {
        if series.samples.is_empty() && series.histograms.is_empty() {
            continue;
        }
        let name = match check_series(series) {
            Ok(name) => name,
            Err(reason) => {
                rejected_samples += series.samples.len() + series.histograms.len();
                rejected.push(Rejected {
                    line: i + 1,
                    reason,
                });
                continue;
            }
        };
        // Histograms next to float samples: keep the samples.
        rejected_samples += series.histograms.len();

        values.clear();
        values.push((VALUE, Value::F64(0.0)));
        for l in &series.labels {
            if l.name != METRIC_NAME && !l.value.is_empty() {
                values.push((l.name.as_str(), Value::Str(l.value.as_str())));
            }
        }
        let t = match index.get(name) {
            Some(&t) => t,
            None => {
                tables.push(TableRows::new(name, schema_of(name)));
                index.insert(name, tables.len() - 1);
                tables.len() - 1
            }
        };
        let rows = &mut tables[t];
        for (k, s) in series.samples.iter().enumerate() {
            values[0].1 = Value::F64(s.value);
            // Checked in `check_series`.
            let time = s.timestamp * NANOS_PER_MILLI;
            if let Err(reason) = rows.push_tagged(time, &values, 1..values.len()) {
                // The types are the same for every sample of a series, so
                // this happens at the first one (`k == 0`) or not at all.
                rejected_samples += series.samples.len() - k;
                rejected.push(Rejected {
                    line: i + 1,
                    reason: format!("metric \"{name}\": {reason}"),
                });
                break;
            }
            samples += 1;
        }
    }
    Ok(Decoded {
        tables,
        rejected,
        samples,
        rejected_samples,
        metadata,
    })
}

/// Prost-encodes and snappy-compresses `req`: a remote-write body, for
/// tests and benchmarks.
pub fn encode_write_request(req: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("a WriteRequest below 4 GiB compresses")
}

const NANOS_PER_MILLI: i64 = 1_000_000;

fn decompress_and_parse(body: &[u8], max_decoded: usize) -> Result<WriteRequest, IngestError> {
    let not_snappy = |e: snap::Error| {
        let hint = if body.starts_with(b"\xff\x06\x00\x00sNaPpY") {
            " (this is the snappy framed format; remote write uses the block format)"
        } else {
            ""
        };
        IngestError::Malformed(format!("body is not snappy-compressed: {e}{hint}"))
    };
    let len = snap::raw::decompress_len(body).map_err(not_snappy)?;
    if len > max_decoded {
        return Err(IngestError::TooLarge {
            decoded: len,
            limit: max_decoded,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(not_snappy)?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| {
        IngestError::Malformed(format!(
            "body is not a valid Prometheus WriteRequest protobuf: {e}"
        ))
    })
}

/// The series' metric name, or why the series is refused.
fn check_series(series: &TimeSeries) -> Result<&str, String> {
    let name = series
        .labels
        .iter()
        .find(|l| l.name == METRIC_NAME)
        .map(|l| l.value.as_str());
    let name = match name {
        None => {
            return Err(format!(
                "series has no {METRIC_NAME} label (the metric name)"
            ));
        }
        Some("") => return Err(format!("series has an empty {METRIC_NAME} label")),
        Some(n) if n.len() > 128 || n.chars().any(char::is_control) => {
            return Err(format!(
                "metric name {n:?} is not a table name (1 to 128 printable characters)"
            ));
        }
        Some(n) => n,
    };
    if series.samples.is_empty() {
        return Err(format!(
            "metric \"{name}\": native histograms are not supported yet; send classic histograms"
        ));
    }
    for (i, l) in series.labels.iter().enumerate() {
        let n = l.name.as_str();
        if n == TIME || n == VALUE {
            return Err(format!(
                "metric \"{name}\": label \"{n}\" would collide with the table's own \"{n}\" \
                 column (the sample's {}); rename it with relabelling",
                if n == TIME { "timestamp" } else { "value" }
            ));
        }
        if !valid_label_name(n) {
            return Err(format!(
                "metric \"{name}\": label name {n:?} is not valid (must match [a-zA-Z_][a-zA-Z0-9_]*)"
            ));
        }
        if series.labels[..i].iter().any(|o| o.name == n) {
            return Err(format!("metric \"{name}\": label \"{n}\" appears twice"));
        }
    }
    const MIN_MS: i64 = i64::MIN / NANOS_PER_MILLI;
    const MAX_MS: i64 = i64::MAX / NANOS_PER_MILLI;
    if let Some(s) = series
        .samples
        .iter()
        .find(|s| !(MIN_MS..=MAX_MS).contains(&s.timestamp))
    {
        return Err(format!(
            "metric \"{name}\": timestamp {} ms is out of range (nanosecond timestamps cover \
             the years 1677 to 2262)",
            s.timestamp
        ));
    }
    Ok(name)
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn valid_label_name(n: &str) -> bool {
    let b = n.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
        _ => return false,
    }
    b[1..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimestampNanosecondType};

    use super::*;
    use crate::rows::time_type;

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
            ..Default::default()
        }
    }

    fn decode_series(ts: Vec<TimeSeries>) -> Decoded {
        let body = encode_write_request(&WriteRequest {
            timeseries: ts,
            metadata: vec![],
        });
        decode(&body, 1 << 20, &|_| None).unwrap()
    }

    fn batches(d: Decoded) -> Vec<RecordBatch> {
        d.tables
            .into_iter()
            .map(|t| t.finish().unwrap().unwrap())
            .collect()
    }

    fn names(b: &RecordBatch) -> Vec<String> {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    const T0: i64 = 1_704_067_200_000;

    #[test]
    fn round_trip_two_metrics_three_series() {
        let d = decode_series(vec![
            series(
                &[
                    ("__name__", "http_requests_total"),
                    ("instance", "a:9100"),
                    ("job", "api"),
                ],
                &[(1.0, T0), (2.0, T0 + 15_000)],
            ),
            series(&[("__name__", "up"), ("instance", "a:9100")], &[(1.0, T0)]),
            series(
                &[
                    ("__name__", "http_requests_total"),
                    ("instance", "b:9100"),
                    ("job", "api"),
                    ("code", "500"),
                ],
                &[(7.5, T0 + 1)],
            ),
        ]);
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        assert_eq!((d.samples, d.rejected_samples), (4, 0));
        let tables: Vec<&str> = d.tables.iter().map(|t| t.table()).collect();
        assert_eq!(tables, ["http_requests_total", "up"]);
        let b = batches(d);

        let http = &b[0];
        assert_eq!(names(http), ["time", "value", "instance", "job", "code"]);
        assert_eq!(http.schema().field(1).data_type(), &DataType::Float64);
        assert_eq!(http.schema().field(2).data_type(), &DataType::Utf8);
        let t = http.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(
            t.values().to_vec(),
            [
                T0 * 1_000_000,
                (T0 + 15_000) * 1_000_000,
                (T0 + 1) * 1_000_000
            ]
        );
        let v = http.column(1).as_primitive::<Float64Type>();
        assert_eq!(v.values().to_vec(), [1.0, 2.0, 7.5]);
        let instance = http.column(2).as_string::<i32>();
        assert_eq!(
            (instance.value(0), instance.value(1), instance.value(2)),
            ("a:9100", "a:9100", "b:9100")
        );
        let code = http.column(4).as_string::<i32>();
        assert!(code.is_null(0) && code.is_null(1));
        assert_eq!(code.value(2), "500");

        let up = &b[1];
        assert_eq!(names(up), ["time", "value", "instance"]);
        assert_eq!(up.num_rows(), 1);
        assert_eq!(up.column(1).as_primitive::<Float64Type>().value(0), 1.0);
    }

    #[test]
    fn empty_label_values_are_null() {
        let d = decode_series(vec![series(
            &[("__name__", "m"), ("a", ""), ("b", "x")],
            &[(1.0, T0)],
        )]);
        let b = &batches(d)[0];
        assert_eq!(names(b), ["time", "value", "b"]);
    }

    fn rejection(ts: TimeSeries) -> (Decoded, String) {
        let ok = series(&[("__name__", "ok")], &[(1.0, T0)]);
        let d = decode_series(vec![ok, ts]);
        assert_eq!(d.samples, 1);
        assert_eq!(d.rejected.len(), 1, "{:?}", d.rejected);
        assert_eq!(d.rejected[0].line, 2);
        let reason = d.rejected[0].reason.clone();
        (d, reason)
    }

    #[test]
    fn series_without_a_name_is_rejected() {
        let (d, reason) = rejection(series(&[("job", "x")], &[(1.0, T0), (2.0, T0)]));
        assert_eq!(d.rejected_samples, 2);
        assert!(reason.contains("no __name__ label"), "{reason}");
        let (_, reason) = rejection(series(&[("__name__", "")], &[(1.0, T0)]));
        assert!(reason.contains("empty __name__"), "{reason}");
    }

    #[test]
    fn time_and_value_labels_are_rejected() {
        for label in ["time", "value"] {
            let (d, reason) = rejection(series(&[("__name__", "m"), (label, "x")], &[(1.0, T0)]));
            assert_eq!(d.rejected_samples, 1);
            assert!(
                reason.contains(&format!(
                    "label \"{label}\" would collide with the table's own \"{label}\" column"
                )),
                "{reason}"
            );
        }
    }

    #[test]
    fn duplicate_label_names_are_rejected() {
        let (_, reason) = rejection(series(
            &[("__name__", "m"), ("a", "1"), ("a", "2")],
            &[(1.0, T0)],
        ));
        assert!(reason.contains("label \"a\" appears twice"), "{reason}");
    }

    #[test]
    fn invalid_label_names_are_rejected() {
        for bad in ["1a", "a-b", "a.b", "", "é"] {
            let (_, reason) = rejection(series(&[("__name__", "m"), (bad, "1")], &[(1.0, T0)]));
            assert!(reason.contains("is not valid"), "{bad}: {reason}");
        }
        assert!(valid_label_name("_a1") && valid_label_name("Z"));
    }

    #[test]
    fn native_histograms_are_rejected() {
        let mut ts = series(&[("__name__", "h")], &[]);
        ts.histograms = vec![vec![], vec![]];
        let (d, reason) = rejection(ts);
        assert_eq!(d.rejected_samples, 2);
        assert!(
            reason.contains("native histograms are not supported yet; send classic histograms"),
            "{reason}"
        );
    }

    #[test]
    fn out_of_range_timestamps_reject_the_series() {
        let (d, reason) = rejection(series(
            &[("__name__", "m")],
            &[(1.0, T0), (2.0, i64::MAX / 1000)],
        ));
        assert_eq!(d.rejected_samples, 2);
        assert!(reason.contains("out of range"), "{reason}");
        // Nothing of the rejected series was written.
        assert_eq!(d.tables.len(), 1);
    }

    #[test]
    fn type_conflicts_reject_the_series() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(TIME, time_type(), false),
            Field::new(VALUE, DataType::Float64, true),
            Field::new("job", DataType::Int64, true),
        ]));
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "m"), ("job", "x")], &[(1.0, T0), (2.0, T0)]),
                series(&[("__name__", "m")], &[(3.0, T0)]),
            ],
            metadata: vec![],
        };
        let d = decode(&encode_write_request(&req), 1 << 20, &|t| {
            (t == "m").then(|| schema.clone())
        })
        .unwrap();
        assert_eq!((d.samples, d.rejected_samples), (1, 2));
        assert_eq!(d.rejected.len(), 1);
        assert_eq!(d.rejected[0].line, 1);
        assert!(
            d.rejected[0]
                .reason
                .contains("column \"job\" of table \"m\" is bigint, but this value is text"),
            "{:?}",
            d.rejected
        );
    }

    #[test]
    fn metadata_comes_back_with_its_type_named_as_prometheus_names_it() {
        let meta = |t: i32, name: &str| MetricMetadata {
            r#type: t,
            metric_family_name: name.into(),
            help: format!("help of {name}"),
            unit: "seconds".into(),
        };
        let req = WriteRequest {
            timeseries: vec![],
            metadata: vec![
                meta(3, "http_request_duration_seconds"),
                meta(1, ""),
                meta(42, "odd"),
                meta(2, "bad\nname"),
            ],
        };
        let d = decode(&encode_write_request(&req), 1 << 20, &|_| None).unwrap();
        assert!(d.tables.is_empty());
        let got: Vec<(&str, &str, &str)> = d
            .metadata
            .iter()
            .map(|m| {
                (
                    m.metric_family_name.as_str(),
                    m.type_name(),
                    m.help.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "http_request_duration_seconds",
                    "histogram",
                    "help of http_request_duration_seconds"
                ),
                ("odd", "unknown", "help of odd"),
            ]
        );
    }

    #[test]
    fn staleness_marker_bits_are_kept() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let d = decode_series(vec![series(
            &[("__name__", "m")],
            &[(stale, T0), (f64::NAN, T0 + 1)],
        )]);
        assert!(d.rejected.is_empty());
        let b = &batches(d)[0];
        let v = b.column(1).as_primitive::<Float64Type>();
        assert_eq!(v.value(0).to_bits(), 0x7ff0_0000_0000_0002);
        assert_eq!(v.value(1).to_bits(), f64::NAN.to_bits());
    }

    #[test]
    fn bodies_past_the_limit_are_too_large() {
        // A snappy header announcing 1 MiB, and nothing after it.
        let body = [0x80, 0x80, 0x40];
        let err = decode(&body, 1000, &|_| None).err().unwrap();
        assert_eq!(
            err,
            IngestError::TooLarge {
                decoded: 1 << 20,
                limit: 1000
            }
        );
        assert_eq!(
            err.to_string(),
            "snappy body expands to 1048576 bytes, past the limit of 1000 (--max-body-size)"
        );
    }

    #[test]
    fn garbage_is_invalid() {
        let err = decode(b"\xff\xff\xff\xff\xff\xff", 1 << 20, &|_| None)
            .err()
            .unwrap();
        assert!(
            matches!(&err, IngestError::Malformed(m) if m.starts_with("body is not snappy-compressed")),
            "{err}"
        );
        let framed = b"\xff\x06\x00\x00sNaPpY\x01\x05\x00\x00\x00\x00\x00";
        let err = decode(framed, 1 << 20, &|_| None).err().unwrap();
        assert!(err.to_string().contains("framed format"), "{err}");
        let not_protobuf = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\xff\xff\xff")
            .unwrap();
        let err = decode(&not_protobuf, 1 << 20, &|_| None).err().unwrap();
        assert!(
            matches!(&err, IngestError::Malformed(m)
                if m.starts_with("body is not a valid Prometheus WriteRequest protobuf")),
            "{err}"
        );
    }

    #[test]
    fn empty_request_writes_nothing() {
        let d = decode_series(vec![series(&[("__name__", "m")], &[])]);
        assert!(d.tables.is_empty() && d.rejected.is_empty());
        assert_eq!((d.samples, d.rejected_samples), (0, 0));
    }
}
