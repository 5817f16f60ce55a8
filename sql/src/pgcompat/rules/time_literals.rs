//! Timestamps written as PostgreSQL reads them: `timestamptz '2026-01-01
//! 00:00'` (no seconds) and `'2026-01-01 9:30'` (a one-digit hour), which
//! arrow's parser refuses, are written out in full (`2026-01-01 00:00:00`)
//! before DataFusion reads them. Here for typed literals and casts of a
//! literal (`timestamptz '...'`, `'...'::timestamp`); a literal compared
//! with a timestamp column is cast by DataFusion's type coercion, and
//! `arithmetic.rs`'s analyzer rule writes it out there with
//! [`full_timestamp`].

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, ObjectName, Statement, Value, VisitMut, VisitorMut,
};

/// Writes out the timestamp literals of `stmt` (see the module header).
pub(crate) fn time_literals(stmt: &mut Statement) {
    let _ = VisitMut::visit(stmt, &mut TimeLiterals);
}

struct TimeLiterals;

impl VisitorMut for TimeLiterals {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::TypedString(t) if is_timestamp(&t.data_type) => {
                if let Value::SingleQuotedString(s) = &mut t.value.value
                    && let Some(full) = full_timestamp(s)
                {
                    *s = full;
                }
            }
            Expr::Cast {
                expr: inner,
                data_type,
                ..
            } if is_timestamp(data_type) => {
                if let Expr::Value(v) = inner.as_mut()
                    && let Value::SingleQuotedString(s) = &mut v.value
                    && let Some(full) = full_timestamp(s)
                {
                    *s = full;
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn is_timestamp(t: &DataType) -> bool {
    match t {
        DataType::Timestamp(..) | DataType::TimestampNtz(_) | DataType::Datetime(_) => true,
        DataType::Custom(ObjectName(parts), _) => parts.last().is_some_and(|p| {
            p.as_ident().is_some_and(|i| {
                matches!(i.value.to_lowercase().as_str(), "timestamptz" | "timestamp")
            })
        }),
        _ => false,
    }
}

/// `s` with its time of day written out (`HH:MM:SS`), when it is a date
/// and a time PostgreSQL reads but arrow does not: `2026-01-01 00:00`,
/// `2026-01-01T9:30+02`. `None` when nothing needs writing out.
pub(crate) fn full_timestamp(s: &str) -> Option<String> {
    let t = s.trim();
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.end <= b.len() && b[r.clone()].iter().all(u8::is_ascii_digit);
    let date = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10);
    if !date || !matches!(b.get(10), Some(b' ' | b'T')) {
        return None;
    }
    let rest = &t[11..];
    let hour_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=2).contains(&hour_len) || rest.as_bytes().get(hour_len) != Some(&b':') {
        return None;
    }
    let after_hour = &rest[hour_len + 1..];
    let minute_len = after_hour.bytes().take_while(u8::is_ascii_digit).count();
    if minute_len != 2 {
        return None;
    }
    let after_minute = &after_hour[2..];
    let has_seconds = after_minute.starts_with(':');
    if hour_len == 2 && has_seconds && b[10] == b' ' {
        return None;
    }
    let seconds = if has_seconds { "" } else { ":00" };
    Some(format!(
        "{} {:0>2}:{}{}{}",
        &t[..10],
        &rest[..hour_len],
        &after_hour[..2],
        seconds,
        after_minute
    ))
}

#[cfg(test)]
mod tests {
    use super::full_timestamp;

    #[test]
    fn times_are_written_out() {
        let cases = [
            ("2026-01-01 00:00", Some("2026-01-01 00:00:00")),
            ("2026-01-01T00:00", Some("2026-01-01 00:00:00")),
            ("2026-01-01 9:30+02", Some("2026-01-01 09:30:00+02")),
            ("2026-01-01 1:02:03", Some("2026-01-01 01:02:03")),
            ("2026-01-01T10:02:03Z", Some("2026-01-01 10:02:03Z")),
            ("2026-01-01 00:00:00", None),
            ("2026-01-01", None),
            ("Jan 1 2026", None),
            ("2026-01-01 00", None),
        ];
        for (input, want) in cases {
            assert_eq!(full_timestamp(input).as_deref(), want, "{input}");
        }
    }
}
