//! InfluxDB line protocol bodies (POST /api/v2/write): decoded into rows and
//! built into Arrow batches. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_ingest::{Precision, line_protocol};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for precision in [Precision::Nanoseconds, Precision::Seconds] {
        let decoded = line_protocol::decode(text, precision, 1_700_000_000_000_000_000, &|_| None);
        for rows in decoded.tables {
            let _ = rows.finish();
        }
    }
});
