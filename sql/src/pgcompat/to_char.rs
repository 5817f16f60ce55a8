//! `to_char(timestamp | date, template)` as PostgreSQL writes it: the
//! template's patterns (`YYYY-MM-DD HH24:MI:SS`, `FMMonth DDth`, `Dy`,
//! `IW`, `TZ`, ...; PostgreSQL 15's table "Template Patterns for
//! Date/Time Formatting"), its `FM` and `TH` modifiers, and its quoted and
//! escaped literal text. DataFusion's own `to_char` reads chrono's `%Y`
//! patterns, which a Postgres user never writes: `%Y` is literal text here,
//! as in Postgres. Times are in UTC, Sextant's only time zone. A number or
//! an interval is refused (0A000) rather than formatted differently from
//! Postgres.

use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};
use datafusion::prelude::SessionContext;
use sextant_sqlstate::SqlState;

use super::functions::PgFunction;

/// Registers `to_char` over DataFusion's (whose alias `date_format` the
/// session drops, `crate::context`).
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(PgFunction::new(
        "to_char",
        &[2],
        DataType::Utf8,
        to_char,
    )));
}

fn to_char(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let rows = super::functions::rows(args);
    let values = args[0].to_array(rows)?;
    let templates = cast(&args[1].to_array(rows)?, &DataType::Utf8)?;
    let times = match values.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Null => {
            cast(&values, &DataType::Timestamp(TimeUnit::Nanosecond, None))?
        }
        other => {
            return Err(DataFusionError::External(Box::new(crate::SqlError::new(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!(
                    "to_char of {} is not supported: Sextant's to_char formats timestamps and dates (cast a number to text instead)",
                    type_name(other)
                ),
            ))));
        }
    };
    let times = times.as_primitive::<TimestampNanosecondType>();
    let templates = templates.as_string::<i32>();
    let out: StringArray = (0..rows)
        .map(|i| {
            if times.is_null(i) || templates.is_null(i) {
                return None;
            }
            let t = DateTime::from_timestamp_nanos(times.value(i)).naive_utc();
            Some(format(templates.value(i), &t))
        })
        .collect();
    super::functions::answer(args, Arc::new(out))
}

/// A type as a Postgres user names it, for the error.
fn type_name(t: &DataType) -> String {
    match t {
        t if t.is_integer() => "an integer".into(),
        t if t.is_floating() => "double precision".into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric".into(),
        DataType::Interval(_) | DataType::Duration(_) => "an interval".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        other => other.to_string(),
    }
}

/// The patterns, longest first where one begins another.
const PATTERNS: &[&str] = &[
    "Y,YYY", "y,yyy", "A.D.", "a.d.", "B.C.", "b.c.", "A.M.", "a.m.", "P.M.", "p.m.", "HH24",
    "hh24", "HH12", "hh12", "IDDD", "iddd", "IYYY", "iyyy", "YYYY", "yyyy", "MONTH", "Month",
    "month", "SSSSS", "sssss", "SSSS", "ssss", "FF1", "FF2", "FF3", "FF4", "FF5", "FF6", "ff1",
    "ff2", "ff3", "ff4", "ff5", "ff6", "DAY", "Day", "day", "DDD", "ddd", "IYY", "iyy", "YYY",
    "yyy", "MON", "Mon", "mon", "TZH", "tzh", "TZM", "tzm", "AD", "ad", "BC", "bc", "AM", "am",
    "PM", "pm", "CC", "cc", "DD", "dd", "DY", "Dy", "dy", "HH", "hh", "ID", "id", "IW", "iw", "IY",
    "iy", "MI", "mi", "MM", "mm", "MS", "ms", "OF", "of", "RM", "rm", "SS", "ss", "TZ", "tz", "US",
    "us", "WW", "ww", "YY", "yy", "D", "d", "I", "i", "J", "j", "Q", "q", "W", "w", "Y", "y",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const ROMAN: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

/// One piece of a template: text written as it is, or a pattern with its
/// `FM` (fill) and `TH`/`th` (suffix) modifiers.
enum Piece<'a> {
    Text(String),
    Pattern {
        pattern: &'a str,
        fill: bool,
        suffix: Option<bool>,
    },
}

/// `template` in pieces: quoted text (`"..."`, with `\"`), `\x`, the
/// patterns (longest first) and the characters between them.
fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = vec![];
    let mut text = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            // Quoted text, with \" for a quote.
            let mut chars = rest[1..].char_indices();
            let mut end = rest.len();
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            text.push(next);
                        }
                    }
                    '"' => {
                        end = i + 2;
                        break;
                    }
                    other => text.push(other),
                }
            }
            rest = &rest[end.min(rest.len())..];
            continue;
        }
        if c == '\\' {
            let mut chars = rest.chars();
            chars.next();
            match chars.next() {
                Some(next) => {
                    text.push(next);
                    rest = &rest[1 + next.len_utf8()..];
                }
                None => rest = "",
            }
            continue;
        }
        let fill = rest.starts_with("FM") || rest.starts_with("fm");
        let after = if fill { &rest[2..] } else { rest };
        let Some(pattern) = PATTERNS.iter().find(|p| after.starts_with(*p)) else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        rest = &after[pattern.len()..];
        let suffix = if rest.starts_with("TH") {
            rest = &rest[2..];
            Some(true)
        } else if rest.starts_with("th") {
            rest = &rest[2..];
            Some(false)
        } else {
            None
        };
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(Piece::Pattern {
            pattern,
            fill,
            suffix,
        });
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

/// `t` written by `template`.
pub(crate) fn format(template: &str, t: &NaiveDateTime) -> String {
    let mut out = String::new();
    for piece in pieces(template) {
        match piece {
            Piece::Text(text) => out.push_str(&text),
            Piece::Pattern {
                pattern,
                fill,
                suffix,
            } => out.push_str(&field(pattern, t, fill, suffix)),
        }
    }
    out
}

/// `template` as the chrono format that reads what it writes, for
/// `to_timestamp(text, template)` and `to_date(text, template)`; `Err`
/// names a pattern that cannot be read back (week numbers, Julian days,
/// time zones, ...).
pub(crate) fn chrono_format(template: &str) -> Result<String, String> {
    let mut out = String::new();
    for piece in pieces(template) {
        match piece {
            Piece::Text(text) => out.push_str(&text.replace('%', "%%")),
            Piece::Pattern { pattern, .. } => out.push_str(match pattern {
                "YYYY" | "yyyy" => "%Y",
                "YY" | "yy" => "%y",
                "MM" | "mm" => "%m",
                "DD" | "dd" => "%d",
                "DDD" | "ddd" => "%j",
                "HH24" | "hh24" => "%H",
                "HH12" | "hh12" | "HH" | "hh" => "%I",
                "MI" | "mi" => "%M",
                "SS" | "ss" => "%S",
                "MS" | "ms" | "FF3" | "ff3" => "%3f",
                "US" | "us" | "FF6" | "ff6" => "%6f",
                "AM" | "am" | "PM" | "pm" => "%p",
                "MONTH" | "Month" | "month" => "%B",
                "MON" | "Mon" | "mon" => "%b",
                "DAY" | "Day" | "day" => "%A",
                "DY" | "Dy" | "dy" => "%a",
                other => {
                    return Err(format!(
                        "the template pattern {other} cannot be read (to_timestamp and to_date \
                         read YYYY, YY, MM, DD, DDD, HH24, HH12, HH, MI, SS, MS, US, AM, PM, \
                         Month, Mon, Day, Dy)"
                    ));
                }
            }),
        }
    }
    Ok(out)
}

/// One pattern's text; `fill` is `FM` (no padding), `suffix` `TH` (true)
/// or `th`.
fn field(pattern: &str, t: &NaiveDateTime, fill: bool, suffix: Option<bool>) -> String {
    let number = |n: i64, width: usize| -> String {
        let text = if fill {
            n.to_string()
        } else if n < 0 {
            format!("-{:0width$}", -n, width = width)
        } else {
            format!("{n:0width$}")
        };
        match suffix {
            Some(upper) => {
                let s = ordinal(n);
                format!("{text}{}", if upper { s.to_uppercase() } else { s.into() })
            }
            None => text,
        }
    };
    let name = |text: &str, upper: &str| -> String {
        // MONTH, Month, month by the pattern's own case; padded to 9.
        let cased = if upper.chars().all(|c| !c.is_lowercase()) {
            text.to_uppercase()
        } else if upper.chars().all(|c| !c.is_uppercase()) {
            text.to_lowercase()
        } else {
            text.to_string()
        };
        if fill { cased } else { format!("{cased:<9}") }
    };
    let abbreviation = |text: &str, pattern: &str| -> String {
        let short: String = text.chars().take(3).collect();
        if pattern.chars().all(|c| !c.is_lowercase()) {
            short.to_uppercase()
        } else if pattern.chars().all(|c| !c.is_uppercase()) {
            short.to_lowercase()
        } else {
            short
        }
    };
    let year = t.year() as i64;
    let iso = t.iso_week();
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    } as i64;
    let pm = t.hour() >= 12;
    let meridiem = |upper: bool, dots: bool| -> String {
        let s = match (pm, dots) {
            (false, false) => "am",
            (true, false) => "pm",
            (false, true) => "a.m.",
            (true, true) => "p.m.",
        };
        if upper {
            s.to_uppercase()
        } else {
            s.to_string()
        }
    };
    let era = |upper: bool, dots: bool| -> String {
        let s = match (year > 0, dots) {
            (true, false) => "ad",
            (false, false) => "bc",
            (true, true) => "a.d.",
            (false, true) => "b.c.",
        };
        if upper {
            s.to_uppercase()
        } else {
            s.to_string()
        }
    };
    let micros = (t.nanosecond() / 1000) as i64;
    let seconds_of_day = t.num_seconds_from_midnight() as i64;
    let day_of_week = t.weekday().num_days_from_sunday() as usize;
    match pattern {
        "Y,YYY" | "y,yyy" => {
            let text = format!("{},{:03}", year / 1000, year % 1000);
            text
        }
        "YYYY" | "yyyy" => number(year, 4),
        "YYY" | "yyy" => number(year % 1000, 3),
        "YY" | "yy" => number(year % 100, 2),
        "Y" | "y" => number(year % 10, 1),
        "IYYY" | "iyyy" => number(iso.year() as i64, 4),
        "IYY" | "iyy" => number(iso.year() as i64 % 1000, 3),
        "IY" | "iy" => number(iso.year() as i64 % 100, 2),
        "I" | "i" => number(iso.year() as i64 % 10, 1),
        "HH" | "hh" | "HH12" | "hh12" => number(hour12, 2),
        "HH24" | "hh24" => number(t.hour() as i64, 2),
        "MI" | "mi" => number(t.minute() as i64, 2),
        "SS" | "ss" => number(t.second() as i64, 2),
        "MS" | "ms" => number(micros / 1000, 3),
        "US" | "us" => number(micros, 6),
        "SSSS" | "ssss" | "SSSSS" | "sssss" => number(seconds_of_day, 1),
        p if p.len() == 3 && (p.starts_with("FF") || p.starts_with("ff")) => {
            let digits = p[2..].parse::<u32>().unwrap_or(6);
            number(micros / 10_i64.pow(6 - digits), digits as usize)
        }
        "AM" | "PM" => meridiem(true, false),
        "am" | "pm" => meridiem(false, false),
        "A.M." | "P.M." => meridiem(true, true),
        "a.m." | "p.m." => meridiem(false, true),
        "AD" | "BC" => era(true, false),
        "ad" | "bc" => era(false, false),
        "A.D." | "B.C." => era(true, true),
        "a.d." | "b.c." => era(false, true),
        "MONTH" | "Month" | "month" => name(MONTHS[t.month0() as usize], pattern),
        "MON" | "Mon" | "mon" => abbreviation(MONTHS[t.month0() as usize], pattern),
        "MM" | "mm" => number(t.month() as i64, 2),
        "DAY" | "Day" | "day" => name(DAYS[day_of_week], pattern),
        "DY" | "Dy" | "dy" => abbreviation(DAYS[day_of_week], pattern),
        "DDD" | "ddd" => number(t.ordinal() as i64, 3),
        "IDDD" | "iddd" => number(
            (iso.week() as i64 - 1) * 7 + t.weekday().number_from_monday() as i64,
            3,
        ),
        "DD" | "dd" => number(t.day() as i64, 2),
        "D" | "d" => number(day_of_week as i64 + 1, 1),
        "ID" | "id" => number(t.weekday().number_from_monday() as i64, 1),
        "W" | "w" => number((t.day() as i64 - 1) / 7 + 1, 1),
        "WW" | "ww" => number((t.ordinal() as i64 - 1) / 7 + 1, 2),
        "IW" | "iw" => number(iso.week() as i64, 2),
        "CC" | "cc" => number(
            if year > 0 {
                (year + 99) / 100
            } else {
                year / 100 - 1
            },
            2,
        ),
        "J" | "j" => number(t.date().num_days_from_ce() as i64 + 1_721_425, 1),
        "Q" | "q" => number((t.month0() as i64) / 3 + 1, 1),
        "RM" | "rm" => {
            let roman = ROMAN[t.month0() as usize];
            let roman = if pattern == "rm" {
                roman.to_lowercase()
            } else {
                roman.to_string()
            };
            if fill { roman } else { format!("{roman:<4}") }
        }
        "TZ" => "UTC".into(),
        "tz" => "utc".into(),
        "OF" | "of" | "TZH" | "tzh" => "+00".into(),
        "TZM" | "tzm" => "00".into(),
        other => other.to_string(),
    }
}

/// `st`, `nd`, `rd` or `th` for `n`, in English as Postgres writes it.
fn ordinal(n: i64) -> &'static str {
    match (n % 100, n % 10) {
        (11..=13, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every expected line is what PostgreSQL 15 printed here for
    /// `SET TimeZone = 'UTC'; SELECT to_char(t, p)`.
    #[test]
    fn templates_write_as_postgres_writes_them() {
        let times = [
            "2023-12-31 23:59:59.000000",
            "2024-01-01 12:00:00.000000",
            "2024-03-05 07:08:09.123456",
        ];
        let cases: &[(&str, [&str; 3])] = &[
            (
                "\"Week\" IW, \"of\" YYYY",
                ["Week 52, of 2023", "Week 01, of 2024", "Week 10, of 2024"],
            ),
            (
                "DDD IDDD D ID W WW IW Q CC J",
                [
                    "365 364 1 7 5 53 52 4 21 2460310",
                    "001 001 2 1 1 01 01 1 21 2460311",
                    "065 065 3 2 1 10 10 1 21 2460375",
                ],
            ),
            (
                "DDth FMDDth ddTH",
                ["31st 31st 31ST", "01st 1st 01ST", "05th 5th 05TH"],
            ),
            (
                "Dy Mon DD HH12:MI:SS AM",
                [
                    "Sun Dec 31 11:59:59 PM",
                    "Mon Jan 01 12:00:00 PM",
                    "Tue Mar 05 07:08:09 AM",
                ],
            ),
            (
                "FMMonth FMDD, YYYY",
                ["December 31, 2023", "January 1, 2024", "March 5, 2024"],
            ),
            (
                "HH:MI:SS.MS US FF3",
                [
                    "11:59:59.000 000000 000",
                    "12:00:00.000 000000 000",
                    "07:08:09.123 123456 123",
                ],
            ),
            (
                "Month DD, YYYY",
                [
                    "December  31, 2023",
                    "January   01, 2024",
                    "March     05, 2024",
                ],
            ),
            ("RM rm", ["XII  xii ", "I    i   ", "III  iii "]),
            ("SSSS SSSSS", ["86399 86399", "43200 43200", "25689 25689"]),
            ("TZ OF", ["UTC +00", "UTC +00", "UTC +00"]),
            (
                "Y,YYY YYY YY Y IYYY",
                [
                    "2,023 023 23 3 2023",
                    "2,024 024 24 4 2024",
                    "2,024 024 24 4 2024",
                ],
            ),
            (
                "YYYY-MM-DD HH24:MI",
                ["2023-12-31 23:59", "2024-01-01 12:00", "2024-03-05 07:08"],
            ),
            (
                "YYYY-MM-DD HH24:MI:SS",
                [
                    "2023-12-31 23:59:59",
                    "2024-01-01 12:00:00",
                    "2024-03-05 07:08:09",
                ],
            ),
            (
                "a.m. P.M. pm",
                ["p.m. P.M. pm", "p.m. P.M. pm", "a.m. A.M. am"],
            ),
            (
                "day DAY Day dy DY",
                [
                    "sunday    SUNDAY    Sunday    sun SUN",
                    "monday    MONDAY    Monday    mon MON",
                    "tuesday   TUESDAY   Tuesday   tue TUE",
                ],
            ),
            (
                "mon month MON MONTH",
                [
                    "dec december  DEC DECEMBER ",
                    "jan january   JAN JANUARY  ",
                    "mar march     MAR MARCH    ",
                ],
            ),
            (
                "yyyy-mm-dd hh24:mi:ss",
                [
                    "2023-12-31 23:59:59",
                    "2024-01-01 12:00:00",
                    "2024-03-05 07:08:09",
                ],
            ),
        ];
        let mut wrong = vec![];
        for (template, want) in cases {
            for (time, want) in times.iter().zip(want) {
                let t = NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S%.f").unwrap();
                let got = format(template, &t);
                if got != *want {
                    wrong.push(format!("{template} at {time}: {got:?}, want {want:?}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
