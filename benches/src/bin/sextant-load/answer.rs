//! The answer of one suite query, as every engine's text reads the same:
//! rows of cells (NULL, a number, a time, a boolean or text), in a set
//! order, so Sextant, DuckDB and PostgreSQL can be compared by value, not
//! only by row count. Numbers agree to a relative 1e-6 (sums of floats
//! differ in their last bits between engines); times agree to the
//! microsecond (PostgreSQL keeps no finer).

use std::cmp::Ordering;

/// One value, from its text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Number(f64),
    /// Microseconds since the Unix epoch (UTC).
    Time(i64),
    Bool(bool),
    Text(String),
}

impl Cell {
    /// A value as an engine printed it: `2`, `2.0`, `2.000`, `1e3`;
    /// `2024-01-01 00:00:00+00`, `2024-01-01 00:00:00.000000+00`,
    /// `2024-01-01 00:00:00+00:00`, `2024-01-01T00:00:00`; `t`/`True`.
    pub(crate) fn parse(text: Option<&str>) -> Cell {
        let Some(t) = text else {
            return Cell::Null;
        };
        let t = t.trim();
        if let Ok(v) = t.parse::<f64>()
            && v.is_finite()
        {
            return Cell::Number(v);
        }
        if let Some(us) = time_us(t) {
            return Cell::Time(us);
        }
        match t {
            "t" | "true" | "True" => Cell::Bool(true),
            "f" | "false" | "False" => Cell::Bool(false),
            _ => Cell::Text(t.to_string()),
        }
    }

    fn same(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Number(a), Cell::Number(b)) => {
                a == b || (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
            }
            (a, b) => a == b,
        }
    }

    /// The order rows are sorted in before they are compared.
    fn order(&self, other: &Cell) -> Ordering {
        let rank = |c: &Cell| match c {
            Cell::Null => 0,
            Cell::Number(_) => 1,
            Cell::Time(_) => 2,
            Cell::Bool(_) => 3,
            Cell::Text(_) => 4,
        };
        match (self, other) {
            (Cell::Number(a), Cell::Number(b)) => a.total_cmp(b),
            (Cell::Time(a), Cell::Time(b)) => a.cmp(b),
            (Cell::Bool(a), Cell::Bool(b)) => a.cmp(b),
            (Cell::Text(a), Cell::Text(b)) => a.cmp(b),
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }
}

/// A time as text, with or without a zone (only UTC is written here).
fn time_us(t: &str) -> Option<i64> {
    let t = t.replace('T', " ");
    let t = ["+00:00", "+00", "Z", " UTC"]
        .iter()
        .find_map(|z| t.strip_suffix(z))
        .unwrap_or(&t);
    let at = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    Some(at.and_utc().timestamp_micros())
}

/// The rows of an answer, in a set order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Answer(Vec<Vec<Cell>>);

impl Answer {
    pub(crate) fn new<'a, R, C>(rows: R) -> Answer
    where
        R: IntoIterator<Item = C>,
        C: IntoIterator<Item = Option<&'a str>>,
    {
        let mut rows: Vec<Vec<Cell>> = rows
            .into_iter()
            .map(|r| r.into_iter().map(Cell::parse).collect())
            .collect();
        rows.sort_by(|a, b| {
            a.iter()
                .zip(b)
                .map(|(x, y)| x.order(y))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.len().cmp(&b.len()))
        });
        Answer(rows)
    }

    pub(crate) fn rows(&self) -> usize {
        self.0.len()
    }

    /// `None` if the answers agree, else where they first differ.
    pub(crate) fn difference(&self, other: &Answer) -> Option<String> {
        if self.0.len() != other.0.len() {
            return Some(format!("{} rows, not {}", other.0.len(), self.0.len()));
        }
        for (i, (a, b)) in self.0.iter().zip(&other.0).enumerate() {
            if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| !x.same(y)) {
                return Some(format!("row {i}: {b:?}, not {a:?}"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(rows: &[&[Option<&'static str>]]) -> Answer {
        Answer::new(rows.iter().map(|r| r.iter().copied()))
    }

    #[test]
    fn engines_spell_the_same_values_differently() {
        let sextant = answer(&[
            &[
                Some("b"),
                Some("2.0"),
                Some("2024-01-01 00:00:00.000000+00"),
                Some("t"),
            ],
            &[Some("a"), Some("0.30000000000000004"), None, Some("f")],
        ]);
        let postgres = answer(&[
            &[Some("a"), Some("0.3"), None, Some("f")],
            &[
                Some("b"),
                Some("2"),
                Some("2024-01-01 00:00:00+00"),
                Some("t"),
            ],
        ]);
        let duckdb = answer(&[
            &[
                Some("b"),
                Some("2.000"),
                Some("2024-01-01 00:00:00+00:00"),
                Some("True"),
            ],
            &[Some("a"), Some("0.3"), None, Some("False")],
        ]);
        assert_eq!(sextant.difference(&postgres), None);
        assert_eq!(sextant.difference(&duckdb), None);
    }

    #[test]
    fn a_different_value_is_found() {
        let a = answer(&[&[Some("host_1"), Some("10")], &[Some("host_2"), Some("20")]]);
        let b = answer(&[&[Some("host_1"), Some("10")], &[Some("host_2"), Some("21")]]);
        assert!(a.difference(&b).unwrap().starts_with("row 1"));
        let c = answer(&[&[Some("host_1"), Some("10")]]);
        assert_eq!(a.difference(&c).unwrap(), "1 rows, not 2");
        let d = answer(&[&[Some("2024-01-01 00:00:01+00")]]);
        let e = answer(&[&[Some("2024-01-01 00:00:00+00")]]);
        assert!(d.difference(&e).is_some());
    }
}
