//! The WAL's replay at start-up (`sextant_wal`): segment files read back
//! after a crash, a power cut or damage, and the payload of every record
//! they yield (a table id and an Arrow IPC batch). Input: the first byte
//! picks what the rest is. Even: the bytes of one segment file as they are
//! (headers, frames, checksums, torn tails). Odd: one record's payload,
//! framed with a valid header and checksum, so that the payload decoder
//! sees it. Nothing may panic; start-up either replays or refuses
//! with an error.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sextant_wal::{SyncMode, Wal, WalConfig, payload, segment_bytes, segment_file_name};

/// A directory of this process in memory (/dev/shm where there is one).
fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("sextant-fuzz-wal-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    // The payload decoder catches the panics of Arrow's IPC reader and
    // answers an error, as the server does; libFuzzer's panic hook would
    // abort on those caught panics too. This one says nothing (a backtrace
    // for each would slow the run a hundredfold); a panic that escapes
    // still fails the run (libfuzzer-sys aborts on it).
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = dir();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let segment = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        segment_bytes(1, &[rest])
    };
    std::fs::write(dir.join(segment_file_name(1)), segment).unwrap();
    let config = WalConfig {
        dir: dir.clone(),
        sync: SyncMode::Always,
        segment_bytes: 1 << 20,
    };
    let opened = Wal::open(config, 1, |_seq, p| {
        payload::table_id(p).map_err(|e| e.to_string())?;
        payload::decode_batch(p).map_err(|e| e.to_string())?;
        Ok(())
    });
    drop(opened);
});
