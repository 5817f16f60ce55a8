//! NDJSON and JSON-array bodies (POST /v1/ingest/{table}): decoded into
//! rows and built into an Arrow batch. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_ingest::rows::TableRows;
use sextant_ingest::{Precision, json};

fuzz_target!(|data: &[u8]| {
    let mut rows = TableRows::new("events", None);
    if json::decode(
        data,
        &mut rows,
        Precision::Milliseconds,
        1_700_000_000_000_000_000,
    )
    .is_ok()
    {
        let _ = rows.finish();
    }
});
