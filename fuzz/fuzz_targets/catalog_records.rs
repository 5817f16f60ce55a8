//! What the catalog stores as text and reads back at every start: a
//! table's columns (JSON with Arrow type names) and options, and a Parquet
//! file's column statistics (JSON), as a catalog restored from the object
//! store's snapshot would hold them. Input: the three texts separated by
//! 0xFF bytes. Nothing may panic; a bad record is a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xFF);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (columns, options, stats) = (text(), text(), text());
    sextant_catalog::fuzzing::decode_records(&columns, &options, &stats);
});
