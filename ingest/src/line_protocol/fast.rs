//! The common line, parsed by hand: no backslash, no tab, no newline, no
//! comment, and every token in the plain form clients write
//! (`cpu,host=a usage=1.5,n=2i 1700000000000000000`). It accepts a strict
//! subset of what `influxdb-line-protocol` accepts, and gives the same
//! measurement, tags, fields and timestamp for it: anything else (an
//! escape, a value it does not know, an error of any kind) is `None`, and
//! the caller hands the line to the crate, whose parse and errors stay the
//! reference. [`super::check_fast_path`] compares the two.

use crate::rows::Value;

/// The head of a parsed line; its tags and fields are in the caller's vector.
pub(super) struct Head<'a> {
    pub(super) measurement: &'a str,
    /// How many of the values, from the first, are tags.
    pub(super) tags: usize,
    pub(super) timestamp: Option<i64>,
}

/// Parses `line` (already trimmed at its end) into `values` (tags, then
/// fields), or `None` to leave it to the crate. `values` is cleared first.
pub(super) fn parse<'a>(line: &'a str, values: &mut Vec<(&'a str, Value<'a>)>) -> Option<Head<'a>> {
    values.clear();
    let b = line.as_bytes();
    if b.is_empty() || matches!(b[0], b'#' | b' ') || memchr3(b'\\', b'\t', b'\n', b) {
        return None;
    }
    // Measurement: up to ',' or ' '.
    let mut i = 0;
    while i < b.len() && !matches!(b[i], b',' | b' ') {
        if b[i] == 0 {
            return None;
        }
        i += 1;
    }
    if i == 0 || i == b.len() {
        return None;
    }
    let measurement = &line[..i];
    // Tags: ',' key '=' value, repeated, up to ' '.
    while b[i] == b',' {
        i += 1;
        let k = i;
        while i < b.len() && b[i] != b'=' {
            if matches!(b[i], b',' | b' ') {
                return None; // the crate takes ',' into a key: leave it to it
            }
            i += 1;
        }
        if i == k || i == b.len() {
            return None;
        }
        let key = &line[k..i];
        i += 1;
        let v = i;
        while i < b.len() && !matches!(b[i], b',' | b' ') {
            i += 1;
        }
        if i == v || i == b.len() {
            return None;
        }
        values.push((key, Value::Str(&line[v..i])));
    }
    let tags = values.len();
    // One or more spaces, then fields: key '=' value, separated by ','.
    i = skip_spaces(b, i)?;
    loop {
        let k = i;
        while i < b.len() && b[i] != b'=' {
            if matches!(b[i], b',' | b' ' | b'"') {
                return None;
            }
            i += 1;
        }
        if i == k || i == b.len() {
            return None;
        }
        let key = &line[k..i];
        i += 1;
        let value;
        if b.get(i) == Some(&b'"') {
            let start = i + 1;
            let end = start + b[start..].iter().position(|&c| c == b'"')?;
            value = Value::Str(&line[start..end]);
            i = end + 1;
        } else {
            let v = i;
            while i < b.len() && !matches!(b[i], b',' | b' ') {
                i += 1;
            }
            value = scalar(&line[v..i])?;
        }
        values.push((key, value));
        match b.get(i) {
            None => {
                return Some(Head {
                    measurement,
                    tags,
                    timestamp: None,
                });
            }
            Some(b',') => i += 1,
            Some(b' ') => break,
            Some(_) => return None,
        }
    }
    // The timestamp: an optional '-' and digits, to the end.
    i = skip_spaces(b, i)?;
    let t = &line[i..];
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(Head {
        measurement,
        tags,
        timestamp: Some(t.parse().ok()?),
    })
}

/// The index after one or more spaces at `i`, if there are any and
/// something follows them.
fn skip_spaces(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) != Some(&b' ') {
        return None;
    }
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    (i < b.len()).then_some(i)
}

/// A field value that is not a string: `1i`, `1u`, a float in one of the
/// crate's four forms, or one of its boolean words; `None` for anything else.
fn scalar(t: &str) -> Option<Value<'_>> {
    let b = t.as_bytes();
    match b.last()? {
        b'i' => {
            let n = &t[..t.len() - 1];
            return signed_digits(n).then(|| n.parse().ok().map(Value::I64))?;
        }
        b'u' => {
            let n = &t[..t.len() - 1];
            return (!n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
                .then(|| n.parse().ok().map(Value::U64))?;
        }
        _ => {}
    }
    match t {
        "true" | "True" | "TRUE" | "t" | "T" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" | "f" | "F" => return Some(Value::Bool(false)),
        _ => {}
    }
    // -?digits ( '.' digits )? ( [eE] [-+]? digits )?
    let unsigned = t.strip_prefix('-').unwrap_or(t).as_bytes();
    let mut j = digits_at(unsigned, 0)?;
    if unsigned.get(j) == Some(&b'.') {
        j = digits_at(unsigned, j + 1)?;
    }
    if matches!(unsigned.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(unsigned.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        j = digits_at(unsigned, j)?;
    }
    (j == unsigned.len())
        .then(|| t.parse().ok().map(Value::F64))
        .flatten()
}

/// The index after one or more ASCII digits at `i`.
fn digits_at(b: &[u8], i: usize) -> Option<usize> {
    let n = b[i.min(b.len())..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    (n > 0).then_some(i + n)
}

fn signed_digits(t: &str) -> bool {
    let d = t.strip_prefix('-').unwrap_or(t);
    !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit())
}

fn memchr3(a: u8, b: u8, c: u8, s: &[u8]) -> bool {
    s.iter().any(|&x| x == a || x == b || x == c)
}
