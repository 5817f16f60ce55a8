//! Prometheus remote write bodies (snappy-compressed protobuf): decoded
//! into one table per metric, with a bound on the decompressed size.
//! Nothing may panic. The first byte chooses whether the rest is sent as
//! is or snappy-compressed first (so the protobuf decoder is reached).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_ingest::prometheus;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        match snap::raw::Encoder::new().compress_vec(rest) {
            Ok(b) => b,
            Err(_) => return,
        }
    };
    if let Ok(decoded) = prometheus::decode(&body, 1 << 20, &|_| None) {
        for rows in decoded.tables {
            let _ = rows.finish();
        }
    }
});
