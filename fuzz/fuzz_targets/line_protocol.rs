//! InfluxDB line protocol bodies (POST /api/v2/write): decoded into rows and
//! built into Arrow batches. Nothing may panic, and the fast path agrees
//! with the crate on every line it takes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_ingest::{Precision, line_protocol};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The hand-written fast path takes a line only to parse it exactly as
    // the crate does.
    line_protocol::check_fast_path(text);
    for precision in [Precision::Nanoseconds, Precision::Seconds] {
        let decoded = line_protocol::decode(text, precision, 1_700_000_000_000_000_000, &|_| None);
        for rows in decoded.tables {
            let _ = rows.finish();
        }
    }
});
