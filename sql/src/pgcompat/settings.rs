//! Postgres settings as Sextant reports them (`SHOW`, `current_setting()`,
//! the `server_version` a client sees at start-up): names, defaults and
//! descriptions. A pgwire connection keeps the values it `SET`s itself.

/// The Postgres version Sextant speaks, as `server_version` reports it.
pub const SERVER_VERSION: &str = concat!("16.6 (Sextant ", env!("CARGO_PKG_VERSION"), ")");

/// Settings Sextant reports: (name as Postgres spells it, default,
/// description). Names compare case-insensitively.
pub const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "server_version",
        SERVER_VERSION,
        "Postgres version the server is compatible with",
    ),
    (
        "server_version_num",
        "160006",
        "Postgres version as an integer",
    ),
    ("server_encoding", "UTF8", "Server character set encoding"),
    ("client_encoding", "UTF8", "Client character set encoding"),
    (
        "DateStyle",
        "ISO, MDY",
        "Display format for date and time values",
    ),
    (
        "IntervalStyle",
        "postgres",
        "Display format for interval values",
    ),
    (
        "TimeZone",
        "UTC",
        "Time zone for displaying and interpreting time stamps",
    ),
    (
        "search_path",
        "public",
        "Schema search order for names that are not schema-qualified",
    ),
    (
        "application_name",
        "",
        "Application name reported by the client",
    ),
    (
        "standard_conforming_strings",
        "on",
        "'...' strings treat backslashes literally",
    ),
    ("integer_datetimes", "on", "Datetimes are integer based"),
    (
        "transaction_isolation",
        "read committed",
        "Current transaction's isolation level",
    ),
    (
        "default_transaction_isolation",
        "read committed",
        "Isolation level of new transactions",
    ),
    (
        "transaction_read_only",
        "off",
        "Whether the current transaction is read-only",
    ),
    (
        "default_transaction_read_only",
        "off",
        "Whether new transactions are read-only",
    ),
    (
        "is_superuser",
        "on",
        "Whether the current user is a superuser",
    ),
    (
        "in_hot_standby",
        "off",
        "Whether the server is a hot standby",
    ),
    ("max_identifier_length", "63", "Longest identifier"),
    ("max_connections", "100", "Connections the server accepts"),
    ("block_size", "8192", "Size of a disk block"),
    ("lc_collate", "C", "Collation order locale"),
    ("lc_ctype", "C", "Character classification locale"),
    ("lc_messages", "C", "Language of messages"),
    ("bytea_output", "hex", "Output format for bytea"),
    (
        "extra_float_digits",
        "1",
        "Extra digits for floating-point output",
    ),
    (
        "client_min_messages",
        "notice",
        "Message levels sent to the client",
    ),
    (
        "timezone_abbreviations",
        "Default",
        "Time zone abbreviations",
    ),
    ("jit", "off", "Whether JIT compilation is allowed"),
    (
        "statement_timeout",
        "0",
        "Longest a statement may run, planning to last row (0: no limit)",
    ),
];

/// A time setting's value (`statement_timeout`) as Postgres reads it: a
/// number with a unit (`us`, `ms`, `s`, `min`, `h`, `d`; none is `ms`),
/// space between them allowed, fractions rounded to the millisecond; at
/// most 2147483647 ms. The error is Postgres' message.
pub fn parse_milliseconds(name: &str, value: &str) -> Result<u64, String> {
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || format!("invalid value for parameter \"{name}\": \"{value}\"");
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let per_unit = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1e3,
        "min" => 60e3,
        "h" => 3600e3,
        "d" => 86400e3,
        _ => return Err(invalid()),
    };
    let ms = (number * per_unit).round_ties_even();
    if !(0.0..=2_147_483_647.0).contains(&ms) {
        return Err(format!(
            "{ms} ms is outside the valid range for parameter \"{name}\" (0 .. 2147483647)"
        ));
    }
    Ok(ms as u64)
}

/// Milliseconds as Postgres shows a time setting: in the largest unit that
/// holds it exactly (`1h`, `90s`, `1500ms`, `0`).
pub fn milliseconds_text(ms: u64) -> String {
    if ms == 0 {
        return "0".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The default of setting `name`, if Sextant reports it.
pub fn default_setting(name: &str) -> Option<(&'static str, &'static str)> {
    let name = canonical(name);
    DEFAULTS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(&name))
        .map(|(n, v, _)| (*n, *v))
}

/// `SHOW transaction isolation level` and `SHOW time zone` name their
/// settings in words.
pub fn canonical(name: &str) -> String {
    match name.to_lowercase().as_str() {
        "transaction isolation level" => "transaction_isolation".into(),
        "time zone" => "timezone".into(),
        "session authorization" => "session_authorization".into(),
        other => other.replace(' ', "_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_settings_read_and_show_as_postgres() {
        // Each from PostgreSQL 15: SET statement_timeout = v; SHOW statement_timeout.
        for (value, shown) in [
            ("2s", "2s"),
            ("500ms", "500ms"),
            ("1500", "1500ms"),
            ("1.5s", "1500ms"),
            ("5 s", "5s"),
            ("1min", "1min"),
            ("90s", "90s"),
            ("3600s", "1h"),
            ("1d", "1d"),
            ("0", "0"),
            ("10us", "0"),
            ("1.7ms", "2ms"),
            ("2 h", "2h"),
        ] {
            let ms = parse_milliseconds("statement_timeout", value).unwrap();
            assert_eq!(milliseconds_text(ms), shown, "{value}");
        }
        assert_eq!(
            parse_milliseconds("statement_timeout", "abc").unwrap_err(),
            "invalid value for parameter \"statement_timeout\": \"abc\""
        );
        assert_eq!(
            parse_milliseconds("statement_timeout", "-5").unwrap_err(),
            "-5 ms is outside the valid range for parameter \"statement_timeout\" (0 .. 2147483647)"
        );
    }
}
