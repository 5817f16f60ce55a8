//! Answers of the Prometheus HTTP API, byte for byte as 2.42 writes them:
//! `{"status":"success","data":...}` or `{"status":"error","errorType":...,
//! "error":...}`; sample values as strings in Go's float format, times as
//! seconds with at most three decimals.

use std::fmt::Write;

use crate::PromError;
use crate::eval::{Point, Sample, Series, Value};
use crate::labels::Labels;

/// A float as Go's `strconv.FormatFloat(v, fmt, -1, 64)` writes it
/// (`fmt` is `'f'`, `'e'` or `'g'`), with Go's `NaN`, `+Inf`, `-Inf`.
pub fn go_float(v: f64, fmt: char) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let e_form = || {
        // Rust's shortest `{:e}` is `1.5e-7`; Go writes `1.5e-07`.
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        format!("{mantissa}e{sign}{digits:0>2}")
    };
    match fmt {
        'e' => e_form(),
        'g' => {
            let exp = if v == 0.0 {
                0
            } else {
                format!("{v:e}")
                    .split_once('e')
                    .and_then(|(_, e)| e.parse::<i32>().ok())
                    .unwrap_or(0)
            };
            if !(-4..21).contains(&exp) {
                e_form()
            } else {
                format!("{v}")
            }
        }
        _ => format!("{v}"),
    }
}

/// A sample value as the API writes it (`MarshalValue`): fixed notation,
/// exponent below 1e-6 and from 1e21 on.
pub fn value_text(v: f64) -> String {
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        go_float(v, 'e')
    } else {
        go_float(v, 'f')
    }
}

/// A timestamp in milliseconds as the API writes it (`MarshalTimestamp`).
pub fn time_text(t: i64) -> String {
    let (sign, t) = if t < 0 {
        ("-", t.unsigned_abs())
    } else {
        ("", t as u64)
    };
    let (secs, frac) = (t / 1000, t % 1000);
    if frac == 0 {
        format!("{sign}{secs}")
    } else {
        format!("{sign}{secs}.{frac:03}")
    }
}

fn string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, (n, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&string(n));
        out.push(':');
        out.push_str(&string(v));
    }
    out.push('}');
}

fn point(out: &mut String, t: i64, v: f64) {
    let _ = write!(out, "[{},\"{}\"]", time_text(t), value_text(v));
}

fn sample(out: &mut String, s: &Sample) {
    out.push_str("{\"metric\":");
    labels(out, &s.metric);
    out.push_str(",\"value\":");
    point(out, s.t, s.v);
    out.push('}');
}

fn series(out: &mut String, s: &Series) {
    out.push_str("{\"metric\":");
    labels(out, &s.metric);
    out.push_str(",\"values\":[");
    for (i, Point { t, v }) in s.points.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        point(out, *t, *v);
    }
    out.push_str("]}");
}

/// The `data` of a query's answer.
pub fn query_data(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Scalar { t, v } => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            point(&mut out, *t, *v);
        }
        Value::String { t, v } => {
            let _ = write!(
                out,
                "{{\"resultType\":\"string\",\"result\":[{},{}]",
                time_text(*t),
                string(v)
            );
        }
        Value::Vector(samples) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                sample(&mut out, s);
            }
            out.push(']');
        }
        Value::Matrix(m) => {
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                series(&mut out, s);
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

/// A successful answer around `data` (JSON text).
pub fn success(data: &str) -> String {
    format!("{{\"status\":\"success\",\"data\":{data}}}")
}

/// An error answer.
pub fn error(e: &PromError) -> String {
    format!(
        "{{\"status\":\"error\",\"errorType\":\"{}\",\"error\":{}}}",
        e.error_type(),
        string(&e.message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_times_are_written_as_go_writes_them() {
        assert_eq!(value_text(1.0), "1");
        assert_eq!(value_text(0.1), "0.1");
        assert_eq!(value_text(1e-7), "1e-07");
        assert_eq!(value_text(1.5e21), "1.5e+21");
        assert_eq!(value_text(123456789.0), "123456789");
        assert_eq!(value_text(f64::NAN), "NaN");
        assert_eq!(value_text(f64::NEG_INFINITY), "-Inf");
        assert_eq!(value_text(-0.0), "-0");
        assert_eq!(time_text(1500), "1.500");
        assert_eq!(time_text(1_435_781_451_781), "1435781451.781");
        assert_eq!(time_text(-1050), "-1.050");
        assert_eq!(time_text(3000), "3");
        assert_eq!(go_float(1e100, 'g'), "1e+100");
    }
}
