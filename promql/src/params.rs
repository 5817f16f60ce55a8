//! The parameters of the HTTP API as Prometheus 2.42 reads them: times as
//! Unix seconds (with up to millisecond precision) or RFC 3339, durations
//! as seconds or Prometheus durations (`1h30m`), and the checks of a range
//! query (`end` before `start`, step, 11,000 points).

use chrono::DateTime;

use crate::PromError;

/// The most points a range query may give per series.
pub const MAX_POINTS: i64 = 11_000;

/// A time parameter in milliseconds (`parseTime`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<f64>()
        && t.is_finite()
        && !s.trim().is_empty()
    {
        let secs = t.trunc();
        let frac = ((t - secs) * 1000.0).round();
        if secs.abs() < 9.2e15 {
            return Ok(secs as i64 * 1000 + frac as i64);
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    Err(format!("cannot parse {s:?} to a valid timestamp"))
}

/// A duration parameter in milliseconds (`parseDuration`).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(d) = s.parse::<f64>()
        && !s.trim().is_empty()
    {
        let ns = d * 1e9;
        if !(ns <= i64::MAX as f64 && ns >= i64::MIN as f64) {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok((ns as i64) / 1_000_000);
    }
    prometheus_duration(s).ok_or_else(|| format!("cannot parse {s:?} to a valid duration"))
}

/// `model.ParseDuration`: `1y2w3d4h5m6s7ms`, units in that order, each at
/// most once.
pub fn prometheus_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // "ms" before "m".
        let (i, unit) = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())?;
        rest = &rest[unit.0.len()..];
        total = total.checked_add(n.checked_mul(unit.1)?)?;
        next_unit = i + 1;
    }
    Some(total)
}

/// `invalid parameter "name": message`, a `bad_data` error.
pub fn invalid(name: &str, message: impl std::fmt::Display) -> PromError {
    PromError::bad_data(format!("invalid parameter {name:?}: {message}"))
}

/// Checks a range query's times and step (milliseconds).
pub fn check_range(start: i64, end: i64, step: i64) -> Result<(), PromError> {
    if end < start {
        return Err(invalid(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    if step <= 0 {
        return Err(invalid(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(PromError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_parse_as_prometheus_reads_them() {
        assert_eq!(parse_time("1.5"), Ok(1500));
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Ok(1_435_781_451_781)
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("100ms"), Ok(100));
        assert!(parse_duration("1m1h").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(check_range(0, 1_000_000, 1).is_err());
        assert!(check_range(10, 0, 1).is_err());
        assert!(check_range(0, 10, 0).is_err());
        assert!(check_range(0, 11_000, 1).is_ok());
    }
}
