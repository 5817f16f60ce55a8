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
];

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
