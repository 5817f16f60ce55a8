//! Write-ahead log: every write (its payload: [`payload`], a table id and
//! an Arrow IPC batch) is framed, checksummed and appended to the active
//! segment by one writer thread ("sextant-wal"), which batches all queued appends
//! into one write and one fsync (group commit), then runs each record's `apply`
//! (insert into the write buffer) in sequence order and acknowledges the caller.
//! On start-up the segments are replayed in order; once persisted elsewhere they are deleted.
//!
//! # File format
//!
//! All integers are little-endian.
//!
//! * Segment file: `<dir>/<first seq, 20-digit zero-padded decimal>.wal`. The name
//!   is the sequence number of the first record the segment holds.
//! * Segment header (16 bytes): magic `b"SXTWAL\0\0"` (8), format version `1`
//!   (u16), 6 reserved zero bytes.
//! * Record frame (20-byte header, then payload): record magic `0x5352` (u16),
//!   record version `1` (u8), flags `0` (u8), payload length (u32, at most
//!   1 GiB), sequence number (u64), CRC-32 (u32, `crc32fast`) of
//!   the 8 sequence-number bytes followed by the payload; then the payload.
//! * Sequence numbers increase by one per record inside a segment and keep
//!   increasing across segments (a restart with a higher `next_seq_floor` may
//!   leave a gap between two segments, never inside one).
//!
//! # Recovery rules
//!
//! Only the last segment can have a torn tail, because a segment is fsynced
//! before the next one is created. There, a final record that is incomplete or
//! fails its checksum and whose frame reaches or passes the end of the file (or
//! is followed by nothing but zero bytes, which is what a file extended but not
//! yet written looks like after power loss) is cut off. Any other bad record
//! stops start-up with [`WalError::Corrupt`], because skipping it could drop
//! acknowledged data.
//!
//! # A failed write or fsync
//!
//! A group whose write or fsync fails is not acknowledged and not applied.
//! The WAL then no longer trusts the bytes after the last successful fsync
//! of the active segment: after a failed fsync the kernel may have dropped
//! those dirty pages and marked them clean (PostgreSQL's "fsyncgate"), so an
//! fsync retried on them could succeed for data that is not on disk. It never
//! retries. At once (and, while that fails, before each next group) it cuts
//! the active segment back to what the last successful fsync covered, fsyncs
//! that cut, closes the segment, and writes on in a new one; a segment file
//! it created whose records were never fsynced is removed. Until that
//! succeeds every append fails with the error, so a full disk refuses writes (the error's kind is
//! [`io::ErrorKind::StorageFull`]) and ingest resumes by itself once space is
//! freed. With [`SyncMode::Never`] the records cut this way were already
//! acknowledged: they stay in the write buffer and are durable once persisted.

pub mod payload;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

/// Largest payload one record may carry. A length field above this is treated
/// as damage rather than trusted for an allocation.
const MAX_PAYLOAD: usize = 1 << 30;

const SEGMENT_MAGIC: [u8; 8] = *b"SXTWAL\0\0";
const SEGMENT_VERSION: u16 = 1;
const SEGMENT_HEADER_LEN: u64 = 16;
const RECORD_MAGIC: u16 = 0x5352;
const RECORD_VERSION: u8 = 1;
const RECORD_HEADER_LEN: u64 = 20;
const SEGMENT_SUFFIX: &str = ".wal";
const SEGMENT_NAME_DIGITS: usize = 20;
/// With [`SyncMode::Never`], how long written data may sit unsynced.
const BACKGROUND_SYNC_EVERY: Duration = Duration::from_secs(1);
/// Small frames are gathered into one buffer so a group becomes few `write`
/// calls; payloads at least this big are written straight from the caller's
/// buffer instead of being copied.
const DIRECT_WRITE_MIN: usize = 64 * 1024;
const SCRATCH_FLUSH_AT: usize = 1 << 20;

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// fsync before acknowledging (the default): an acknowledged write survives
    /// `kill -9` and power loss.
    #[default]
    Always,
    /// Acknowledge once the record is in the OS page cache; a background fsync
    /// runs about every second and at close. Survives `kill -9`, but power loss
    /// may lose the last second of acknowledged writes.
    Never,
}

/// Where the WAL lives and how it syncs.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// Durability of an acknowledged append.
    pub sync: SyncMode,
    /// A new segment is started once the active one exceeds this many bytes.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("sextant-data/wal"),
            sync: SyncMode::Always,
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Everything that can go wrong in the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file system operation failed.
    #[error("WAL I/O error on {}: {source}", path.display())]
    Io {
        /// File or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file system holding the WAL is full (ENOSPC): the write was not
    /// applied, and may be retried once space is freed.
    #[error(
        "the disk holding the WAL is full ({}: {source}); the write was not applied: retry once space is freed",
        path.display()
    )]
    DiskFull {
        /// File or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A `.wal` file does not start with the segment magic number.
    #[error(
        "{} is not a Sextant WAL segment (bad magic number); refusing to start (move the file out of the WAL directory if it does not belong there)",
        path.display()
    )]
    BadMagic {
        /// The offending file.
        path: PathBuf,
    },
    /// A segment was written by a newer (or unknown) format version.
    #[error(
        "WAL segment {} has format version {version}, this build reads only version {SEGMENT_VERSION}; refusing to start",
        path.display()
    )]
    UnsupportedVersion {
        /// The offending file.
        path: PathBuf,
        /// The version found in its header.
        version: u16,
    },
    /// A damaged record that is not a torn tail.
    #[error(
        "corrupt WAL record in {} at byte offset {offset}: {reason}; refusing to start so that no acknowledged data is skipped (move the file away only if you accept losing its records)",
        path.display()
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record's frame in that file.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The WAL was closed (or its writer thread has stopped).
    #[error("the WAL writer has stopped")]
    Closed,
    /// The payload is bigger than a record may be.
    #[error("WAL record of {len} bytes exceeds the {max}-byte limit")]
    RecordTooLarge {
        /// Payload size.
        len: usize,
        /// The limit (1 GiB).
        max: usize,
    },
    /// The replay callback rejected a record.
    #[error("replaying WAL record {seq} failed: {message}")]
    Replay {
        /// Sequence number of the record.
        seq: u64,
        /// The callback's error.
        message: String,
    },
    /// The in-memory state the WAL feeds is no longer known (an `apply` step
    /// panicked), so the WAL accepts no more appends.
    #[error("the WAL refuses writes after an earlier failure ({reason}); restart the server")]
    Failed {
        /// The failure that stopped the WAL.
        reason: String,
    },
}

/// Figures about the WAL, for `system.wal`.
#[derive(Debug, Clone)]
pub struct WalStats {
    /// Segment files on disk (closed ones plus the active one, if created).
    pub segments: usize,
    /// Total size of those files.
    pub bytes: u64,
    /// Highest sequence number handed out so far (one below the next one).
    pub last_seq: u64,
    /// The configured sync mode.
    pub sync: SyncMode,
}

/// The write-ahead log. Cheap to clone; all clones share one writer thread.
/// Dropping the last clone without [`Wal::close`] still lets the writer finish
/// the queued appends in the background.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` once closing has begun, so no request can slip in behind the close.
    tx: Mutex<Option<Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<Result<(), WalError>>>>,
    /// Turns `true` when the writer thread has done its last work.
    done: watch::Receiver<bool>,
}

/// What the writer thread and the callers of `truncate_before`/`stats` share.
struct Shared {
    dir: PathBuf,
    sync: SyncMode,
    segment_bytes: u64,
    state: Mutex<State>,
    failure: Mutex<Option<Failure>>,
    /// fsyncs of segment data, so tests can see group commit at work.
    syncs: AtomicU64,
}

struct State {
    closed: VecDeque<ClosedSegment>,
    /// Created lazily by the first append after open or rotation, so an idle
    /// restart leaves no empty file whose name the next segment would need.
    active: Option<ActiveSegment>,
    next_seq: u64,
    scratch: Vec<u8>,
}

/// Why the WAL is not taking appends as they come.
#[derive(Clone)]
enum Failure {
    /// A write or fsync failed: the active segment must be cut back to its
    /// last fsync before the next group ([`Shared::recover`]).
    Io(String),
    /// An `apply` step panicked: no more appends until a restart.
    Fatal(String),
}

struct ClosedSegment {
    path: PathBuf,
    /// `None` only for a segment that never got a record.
    last_seq: Option<u64>,
    bytes: u64,
}

struct ActiveSegment {
    file: File,
    path: PathBuf,
    last_seq: Option<u64>,
    bytes: u64,
    unsynced: bool,
    /// What the last successful fsync covered: the length and last record
    /// (`None`: no record is durable yet).
    synced_bytes: u64,
    synced_last_seq: Option<u64>,
}

struct Request {
    payload: Vec<u8>,
    apply: Box<dyn FnOnce(u64) + Send>,
    resp: oneshot::Sender<Result<u64, WalError>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.shared.dir)
            .field("sync", &self.inner.shared.sync)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating the directory if needed) and replays every segment in order, calling
    /// `replay(seq, payload)` for every whole record. `next_seq_floor` is the lowest sequence
    /// number the next new record may get (the caller knows seqs already persisted elsewhere, so
    /// sequence numbers never go backwards even when all segments were deleted).
    ///
    /// A torn tail of the last segment is cut off with a warning; a damaged record anywhere
    /// else fails with [`WalError::Corrupt`] (see the module documentation). Segments without
    /// records are removed. New records always go to a new segment, never into a replayed one.
    /// An error returned by `replay` stops the open with [`WalError::Replay`].
    pub fn open(
        config: WalConfig,
        next_seq_floor: u64,
        mut replay: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<Wal, WalError> {
        let dir = config.dir;
        create_dir_durable(&dir).map_err(|source| io_err(&dir, source))?;
        let files = list_segments(&dir)?;

        let mut closed = VecDeque::new();
        let mut prev_last: Option<u64> = None;
        let mut removed = false;
        for (i, (name_seq, path)) in files.iter().enumerate() {
            let is_last = i + 1 == files.len();
            match replay_segment(path, *name_seq, is_last, prev_last, &mut replay)? {
                Replayed::Records { last_seq, bytes } => {
                    prev_last = Some(last_seq);
                    closed.push_back(ClosedSegment {
                        path: path.clone(),
                        last_seq: Some(last_seq),
                        bytes,
                    });
                }
                Replayed::Empty => {
                    fs::remove_file(path).map_err(|source| io_err(path, source))?;
                    removed = true;
                }
            }
        }
        if removed {
            sync_dir(&dir)?;
        }

        let next_seq = prev_last.map_or(next_seq_floor, |last| next_seq_floor.max(last + 1));
        info!(
            dir = %dir.display(),
            segments = closed.len(),
            next_seq,
            "WAL opened"
        );

        let shared = Arc::new(Shared {
            dir: dir.clone(),
            sync: config.sync,
            segment_bytes: config.segment_bytes,
            state: Mutex::new(State {
                closed,
                active: None,
                next_seq,
                scratch: Vec::new(),
            }),
            failure: Mutex::new(None),
            syncs: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = watch::channel(false);
        let thread_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("sextant-wal".into())
            .spawn(move || {
                let result = writer_loop(&thread_shared, &rx);
                done_tx.send_replace(true);
                result
            })
            .map_err(|source| io_err(&dir, source))?;

        Ok(Wal {
            inner: Arc::new(Inner {
                shared,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                done: done_rx,
            }),
        })
    }

    /// Appends one record and resolves to its sequence number once it is durable (per
    /// [`SyncMode`]). Group commit: the writer thread takes every append queued so far, writes
    /// them together, issues one fsync, then for each record in sequence order runs `apply(seq)`
    /// on the writer thread and answers its caller. So `apply` runs only for durable records, in
    /// strict sequence order. If the write or fsync fails, every append of that group gets the
    /// error and no `apply` runs; the next group first cuts the WAL back to its last fsync (see
    /// the module documentation) and gets that step's error while it fails.
    /// Dropping the returned future does not withdraw a queued record.
    pub async fn append(
        &self,
        payload: Vec<u8>,
        apply: Box<dyn FnOnce(u64) + Send>,
    ) -> Result<u64, WalError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        if let Some(Failure::Fatal(reason)) = self.inner.shared.failure() {
            return Err(WalError::Failed { reason });
        }
        let (resp, answer) = oneshot::channel();
        {
            let tx = lock(&self.inner.tx);
            let tx = tx.as_ref().ok_or(WalError::Closed)?;
            tx.send(Request {
                payload,
                apply,
                resp,
            })
            .map_err(|_| WalError::Closed)?;
        }
        // The writer only drops a request unanswered if it died.
        answer.await.unwrap_or(Err(WalError::Closed))
    }

    /// Deletes every closed segment all of whose records have seq < `min_needed_seq`; if the
    /// active segment is non-empty and all its records are < `min_needed_seq`, it is closed first
    /// so it can go too (the next append starts a new segment). Returns the number of segment
    /// files deleted. Safe to call concurrently with appends: it waits for a group being written.
    pub fn truncate_before(&self, min_needed_seq: u64) -> Result<usize, WalError> {
        let shared = &self.inner.shared;
        let deleted = {
            let mut st = lock(&shared.state);
            if st
                .active
                .as_ref()
                .is_some_and(|a| a.last_seq.is_some_and(|last| last < min_needed_seq))
            {
                shared.close_active(&mut st)?;
            }
            let mut deleted = 0;
            while let Some(seg) = st.closed.front() {
                if seg.last_seq.is_some_and(|last| last >= min_needed_seq) {
                    break;
                }
                match fs::remove_file(&seg.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(io_err(&seg.path, source)),
                }
                debug!(file = %seg.path.display(), "WAL segment deleted");
                st.closed.pop_front();
                deleted += 1;
            }
            deleted
        };
        if deleted > 0 {
            // Outside the lock: appends need not wait for the directory fsync.
            sync_dir(&shared.dir)?;
        }
        Ok(deleted)
    }

    /// Stops accepting appends, lets every already-queued append finish (written, synced,
    /// applied, answered), fsyncs, and joins the writer thread. Idempotent: only the first call
    /// reports a failure of the final sync; later calls return `Ok(())`. Appends after close get
    /// [`WalError::Closed`].
    pub async fn close(&self) -> Result<(), WalError> {
        // Dropping the only sender ends the writer's loop once the queue is drained.
        drop(lock(&self.inner.tx).take());
        let mut done = self.inner.done.clone();
        // An error means the thread ended without signalling (a panic); join reports it.
        let _signalled = done.wait_for(|done| *done).await.is_ok();
        let writer = lock(&self.inner.writer).take();
        match writer {
            // The thread has finished its work; join only reaps it.
            Some(handle) => handle.join().unwrap_or_else(|_| {
                Err(WalError::Failed {
                    reason: "the WAL writer thread panicked".into(),
                })
            }),
            None => Ok(()),
        }
    }

    /// Current figures.
    pub fn stats(&self) -> WalStats {
        let shared = &self.inner.shared;
        let st = lock(&shared.state);
        let active = st.active.as_ref();
        WalStats {
            segments: st.closed.len() + usize::from(active.is_some()),
            bytes: st.closed.iter().map(|s| s.bytes).sum::<u64>() + active.map_or(0, |a| a.bytes),
            last_seq: st.next_seq.saturating_sub(1),
            sync: shared.sync,
        }
    }
}

impl Shared {
    fn failure(&self) -> Option<Failure> {
        lock(&self.failure).clone()
    }

    /// Marks the WAL as needing [`Shared::recover`] before the next group.
    fn poison(&self, err: &WalError) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            error!(error = %err, "WAL write failed; the unacknowledged records are dropped and the next write starts a new segment");
            *failure = Some(Failure::Io(err.to_string()));
        }
    }

    /// Stops the WAL until a restart.
    fn poison_fatal(&self, reason: String) {
        error!(%reason, "refusing further WAL appends until a restart");
        *lock(&self.failure) = Some(Failure::Fatal(reason));
    }

    /// After a failed write or fsync: cuts the active segment back to what
    /// its last successful fsync covered (never fsyncing the unknown bytes
    /// again), makes the cut durable and closes the segment, and removes
    /// segment files whose records were never fsynced. The next group then
    /// starts a new segment. Clears the failure on success.
    fn recover(&self) -> Result<(), WalError> {
        let mut st = lock(&self.state);
        st.scratch.clear();
        if let Some(active) = st.active.as_ref() {
            if active.synced_last_seq.is_some() {
                active
                    .file
                    .set_len(active.synced_bytes)
                    .and_then(|()| active.file.sync_all())
                    .map_err(|source| io_err(&active.path, source))?;
            } else {
                remove_if_present(&active.path)?;
            }
        }
        if let Some(active) = st.active.take()
            && let Some(last_seq) = active.synced_last_seq
        {
            st.closed.push_back(ClosedSegment {
                path: active.path,
                last_seq: Some(last_seq),
                bytes: active.synced_bytes,
            });
        }
        // A segment created during the failed group (rotation) that is not
        // the active one: its name is at or after the next seq.
        for (first_seq, path) in list_segments(&self.dir)? {
            let known = st.closed.iter().any(|c| c.path == path);
            if first_seq >= st.next_seq && !known {
                remove_if_present(&path)?;
            }
        }
        sync_dir(&self.dir)?;
        let reason = match lock(&self.failure).take() {
            Some(Failure::Io(reason)) => reason,
            other => {
                *lock(&self.failure) = other;
                return Ok(());
            }
        };
        info!(dir = %self.dir.display(), next_seq = st.next_seq, after = %reason, "WAL recovered from a failed write: cut back to its last fsync; writing on in a new segment");
        Ok(())
    }

    /// Every data fsync goes through here. A failed fsync marks the WAL for
    /// [`Shared::recover`], never a retry: the kernel may already have dropped
    /// the dirty pages (PostgreSQL's "fsyncgate"), so a retry could report
    /// success for lost data.
    fn sync_segment(&self, file: &File, path: &Path) -> Result<(), WalError> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let synced = file.sync_data();
        sextant_metrics::metrics()
            .wal_fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        synced
            .map_err(|source| io_err(path, source))
            .inspect_err(|e| self.poison(e))
    }

    /// Writes a group of payloads with consecutive seqs, rotating segments as
    /// they fill, and (with [`SyncMode::Always`]) fsyncs. Returns the first seq.
    fn write_group<'a>(
        &self,
        st: &mut State,
        payloads: impl Iterator<Item = &'a [u8]>,
    ) -> Result<u64, WalError> {
        let first_seq = st.next_seq;
        let mut seq = first_seq;
        st.scratch.clear();
        for payload in payloads {
            let full = st
                .active
                .as_ref()
                .is_none_or(|a| a.bytes > self.segment_bytes);
            if full {
                flush_scratch(st)?;
                self.close_active(st)?;
                st.active = Some(self.create_segment(seq)?);
            }
            encode_header(&mut st.scratch, seq, payload);
            if payload.len() >= DIRECT_WRITE_MIN {
                flush_scratch(st)?;
                let active = st.active.as_mut().expect("active segment was just ensured");
                active
                    .file
                    .write_all(payload)
                    .map_err(|source| io_err(&active.path, source))?;
            } else {
                st.scratch.extend_from_slice(payload);
            }
            let active = st.active.as_mut().expect("active segment was just ensured");
            active.bytes += RECORD_HEADER_LEN + payload.len() as u64;
            active.last_seq = Some(seq);
            active.unsynced = true;
            seq += 1;
            if st.scratch.len() >= SCRATCH_FLUSH_AT {
                flush_scratch(st)?;
            }
        }
        flush_scratch(st)?;
        if st.scratch.capacity() > 2 * SCRATCH_FLUSH_AT {
            st.scratch = Vec::new();
        }
        if self.sync == SyncMode::Always {
            self.sync_active(st)?;
        }
        st.next_seq = seq;
        Ok(first_seq)
    }

    fn sync_active(&self, st: &mut State) -> Result<(), WalError> {
        if let Some(active) = st.active.as_mut().filter(|a| a.unsynced) {
            self.sync_segment(&active.file, &active.path)?;
            active.unsynced = false;
            active.synced_bytes = active.bytes;
            active.synced_last_seq = active.last_seq;
        }
        Ok(())
    }

    /// Moves the active segment (if any) to the closed list, durable first, so
    /// that only the newest segment can ever have a torn tail (even if a
    /// segment closed for deletion then fails to be deleted).
    fn close_active(&self, st: &mut State) -> Result<(), WalError> {
        self.sync_active(st)?;
        if let Some(active) = st.active.take() {
            st.closed.push_back(ClosedSegment {
                path: active.path,
                last_seq: active.last_seq,
                bytes: active.bytes,
            });
        }
        Ok(())
    }

    fn create_segment(&self, first_seq: u64) -> Result<ActiveSegment, WalError> {
        let path = segment_path(&self.dir, first_seq);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| io_err(&path, source))?;
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        header[..8].copy_from_slice(&SEGMENT_MAGIC);
        header[8..10].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        // The header is made durable by the first group's fsync; a crash before
        // that leaves a short or zero segment, which replay drops as torn. The
        // directory entry, though, must be durable before any ack. A file
        // left by a failure here is removed by `recover`.
        file.write_all(&header)
            .map_err(|source| io_err(&path, source))?;
        sync_dir(&self.dir)?;
        debug!(file = %path.display(), "WAL segment created");
        Ok(ActiveSegment {
            file,
            path,
            last_seq: None,
            bytes: SEGMENT_HEADER_LEN,
            unsynced: true,
            synced_bytes: 0,
            synced_last_seq: None,
        })
    }
}

fn flush_scratch(st: &mut State) -> Result<(), WalError> {
    if st.scratch.is_empty() {
        return Ok(());
    }
    let active = st
        .active
        .as_mut()
        .expect("frames are only encoded once a segment is active");
    active
        .file
        .write_all(&st.scratch)
        .map_err(|source| io_err(&active.path, source))?;
    st.scratch.clear();
    Ok(())
}

/// The bytes of a whole segment file holding `payloads` as the records
/// `first_seq`, `first_seq + 1`, ...: for tests and fuzzing, which write
/// it under [`segment_file_name`] and replay it with [`Wal::open`].
pub fn segment_bytes(first_seq: u64, payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 6]);
    for (seq, payload) in (first_seq..).zip(payloads) {
        encode_header(&mut out, seq, payload);
        out.extend_from_slice(payload);
    }
    out
}

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!(
        "{first_seq:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

fn encode_header(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload length is capped by MAX_PAYLOAD");
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.push(RECORD_VERSION);
    out.push(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&record_crc(seq, payload).to_le_bytes());
}

fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn writer_loop(shared: &Shared, rx: &Receiver<Request>) -> Result<(), WalError> {
    let mut batch = Vec::new();
    // Only used with SyncMode::Never: written but not yet fsynced.
    let mut dirty = false;
    let mut last_sync = Instant::now();
    loop {
        if dirty && last_sync.elapsed() >= BACKGROUND_SYNC_EVERY {
            background_sync(shared);
            dirty = false;
            last_sync = Instant::now();
        }
        let first = if dirty {
            let wait = BACKGROUND_SYNC_EVERY.saturating_sub(last_sync.elapsed());
            match rx.recv_timeout(wait) {
                Ok(req) => req,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(req) => req,
                Err(_) => break,
            }
        };
        batch.push(first);
        batch.extend(rx.try_iter());
        if commit_group(shared, &mut batch) && shared.sync == SyncMode::Never {
            if !dirty {
                last_sync = Instant::now();
            }
            dirty = true;
        }
    }
    // Every sender is gone and the queue is drained: make everything durable.
    if let Some(Failure::Io(reason) | Failure::Fatal(reason)) = shared.failure() {
        return Err(WalError::Failed { reason });
    }
    let mut st = lock(&shared.state);
    shared.sync_active(&mut st)
}

fn background_sync(shared: &Shared) {
    if shared.failure().is_some() {
        return;
    }
    let mut st = lock(&shared.state);
    // A failure poisons the WAL; the next append reports it.
    let _ = shared.sync_active(&mut st);
}

/// Writes, syncs, applies and answers one group (after recovering from an
/// earlier failed one). Returns whether anything was written.
fn commit_group(shared: &Shared, batch: &mut Vec<Request>) -> bool {
    let refused = match shared.failure() {
        None => None,
        Some(Failure::Fatal(reason)) => Some(WalError::Failed { reason }),
        Some(Failure::Io(_)) => shared.recover().err(),
    };
    if let Some(err) = refused {
        for req in batch.drain(..) {
            let _ = req.resp.send(Err(duplicate(&err)));
        }
        return false;
    }
    sextant_metrics::metrics()
        .wal_group_records
        .observe(batch.len() as f64);
    let _span = tracing::debug_span!(
        "wal_sync",
        records = batch.len(),
        bytes = batch.iter().map(|r| r.payload.len()).sum::<usize>()
    )
    .entered();
    let written = {
        let mut st = lock(&shared.state);
        shared.write_group(&mut st, batch.iter().map(|r| r.payload.as_slice()))
    };
    match written {
        Ok(first_seq) => {
            for (seq, req) in (first_seq..).zip(batch.drain(..)) {
                let Request {
                    payload,
                    apply,
                    resp,
                } = req;
                drop(payload);
                let answer = match catch_unwind(AssertUnwindSafe(|| apply(seq))) {
                    Ok(()) => Ok(seq),
                    Err(_) => {
                        // The caller's in-memory state is now unknown; stop taking
                        // writes rather than build on it. The record is durable and
                        // will be replayed after a restart.
                        let reason = format!("the apply step of WAL record {seq} panicked");
                        shared.poison_fatal(reason.clone());
                        Err(WalError::Failed { reason })
                    }
                };
                let _ = resp.send(answer);
            }
            true
        }
        Err(e) => {
            shared.poison(&e);
            // Cut back at once, before answering, so that the unknown bytes
            // go (and free their space); if that fails too, the next group
            // tries again.
            if let Err(again) = shared.recover() {
                warn!(error = %again, "WAL could not cut back after a failed write; the next write tries again");
            }
            for req in batch.drain(..) {
                let _ = req.resp.send(Err(duplicate(&e)));
            }
            true
        }
    }
}

/// `io::Error` is not `Clone`; every request of a failed group gets an equivalent error.
fn duplicate(err: &WalError) -> WalError {
    match err {
        WalError::Io { path, source } => WalError::Io {
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        WalError::DiskFull { path, source } => WalError::DiskFull {
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        other => WalError::Failed {
            reason: other.to_string(),
        },
    }
}

enum Replayed {
    Records {
        last_seq: u64,
        bytes: u64,
    },
    /// No records: removed by the caller.
    Empty,
}

/// Replays one segment; in the last one, cuts a torn tail off the file.
fn replay_segment(
    path: &Path,
    name_seq: u64,
    is_last: bool,
    prev_last: Option<u64>,
    replay: &mut impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<Replayed, WalError> {
    let ioe = |source| io_err(path, source);
    let file = File::open(path).map_err(ioe)?;
    let len = file.metadata().map_err(ioe)?.len();
    if len == 0 {
        warn!(file = %path.display(), "empty WAL segment (crash right after it was created); removing it");
        return Ok(Replayed::Empty);
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    if len < SEGMENT_HEADER_LEN {
        if is_last {
            warn!(file = %path.display(), bytes = len, "WAL segment with a torn header; removing it");
            return Ok(Replayed::Empty);
        }
        return Err(corrupt(
            path,
            0,
            format!("segment header is {len} bytes, expected {SEGMENT_HEADER_LEN}"),
        ));
    }
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    reader.read_exact(&mut header).map_err(ioe)?;
    if header[..8] != SEGMENT_MAGIC {
        // A file that was extended but never written reads back as zeros.
        if is_last && rest_is_zero(&mut reader, 0).map_err(ioe)? {
            warn!(file = %path.display(), bytes = len, "WAL segment holds only zero bytes (torn at creation); removing it");
            return Ok(Replayed::Empty);
        }
        return Err(WalError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != SEGMENT_VERSION {
        return Err(WalError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }

    let mut offset = SEGMENT_HEADER_LEN;
    let mut last_seq: Option<u64> = None;
    let mut payload = Vec::new();
    while offset < len {
        let record = read_record(&mut reader, offset, len, &mut payload).map_err(ioe)?;
        let (seq, next_offset) = match record {
            Record::Whole { seq, end } => (seq, end),
            Record::Bad { reason, frame_end } => {
                let torn = is_last
                    && match frame_end {
                        Some(end) if end >= len => true,
                        Some(end) => rest_is_zero(&mut reader, end).map_err(ioe)?,
                        None => rest_is_zero(&mut reader, offset).map_err(ioe)?,
                    };
                if !torn {
                    return Err(corrupt(path, offset, reason));
                }
                cut_tail(path, offset, len, &reason)?;
                break;
            }
        };
        // The checksum covers the seq, so a wrong one here is real damage (or a
        // foreign file), never a torn write.
        let expected = last_seq.map_or(name_seq, |last| last + 1);
        if seq != expected {
            return Err(corrupt(
                path,
                offset,
                format!("sequence number {seq} where {expected} was expected"),
            ));
        }
        if last_seq.is_none() && prev_last.is_some_and(|prev| seq <= prev) {
            return Err(corrupt(
                path,
                offset,
                format!(
                    "sequence number {seq} does not follow the previous segment's last record {}",
                    prev_last.unwrap_or_default()
                ),
            ));
        }
        replay(seq, &payload).map_err(|message| WalError::Replay { seq, message })?;
        last_seq = Some(seq);
        offset = next_offset;
    }
    Ok(match last_seq {
        Some(last_seq) => Replayed::Records {
            last_seq,
            bytes: offset,
        },
        None => {
            info!(file = %path.display(), "WAL segment without records; removing it");
            Replayed::Empty
        }
    })
}

enum Record {
    /// The payload is in the buffer; `end` is the offset after the frame.
    Whole { seq: u64, end: u64 },
    /// `frame_end` is where the frame claims to end, if its header could be read.
    Bad {
        reason: String,
        frame_end: Option<u64>,
    },
}

/// Reads the frame at `offset` (the reader is positioned there).
fn read_record(
    reader: &mut BufReader<File>,
    offset: u64,
    len: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Record> {
    let remaining = len - offset;
    if remaining < RECORD_HEADER_LEN {
        return Ok(Record::Bad {
            reason: format!(
                "incomplete record header ({remaining} of {RECORD_HEADER_LEN} bytes before end of file)"
            ),
            frame_end: Some(len),
        });
    }
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    reader.read_exact(&mut h)?;
    let magic = u16::from_le_bytes([h[0], h[1]]);
    let (version, flags) = (h[2], h[3]);
    let payload_len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
    let bad_header = |reason| {
        Ok(Record::Bad {
            reason,
            frame_end: None,
        })
    };
    if magic != RECORD_MAGIC {
        return bad_header(format!("bad record magic {magic:#06x}"));
    }
    if version != RECORD_VERSION {
        return bad_header(format!("unsupported record version {version}"));
    }
    if flags != 0 {
        return bad_header(format!("unknown record flags {flags:#04x}"));
    }
    let frame_end = offset + RECORD_HEADER_LEN + u64::from(payload_len);
    if payload_len as usize > MAX_PAYLOAD {
        return Ok(Record::Bad {
            reason: format!("payload length {payload_len} exceeds the {MAX_PAYLOAD}-byte limit"),
            frame_end: Some(frame_end),
        });
    }
    if frame_end > len {
        return Ok(Record::Bad {
            reason: format!(
                "incomplete record (frame of {} bytes, {remaining} bytes before end of file)",
                RECORD_HEADER_LEN + u64::from(payload_len)
            ),
            frame_end: Some(frame_end),
        });
    }
    payload.clear();
    payload.resize(payload_len as usize, 0);
    reader.read_exact(payload)?;
    if record_crc(seq, payload) != crc {
        return Ok(Record::Bad {
            reason: "checksum mismatch".into(),
            frame_end: Some(frame_end),
        });
    }
    Ok(Record::Whole {
        seq,
        end: frame_end,
    })
}

/// Whether the file holds only zero bytes from `from` to its end.
fn rest_is_zero(reader: &mut BufReader<File>, from: u64) -> io::Result<bool> {
    reader.seek(SeekFrom::Start(from))?;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

fn cut_tail(path: &Path, offset: u64, len: u64, reason: &str) -> Result<(), WalError> {
    let ioe = |source| io_err(path, source);
    let file = OpenOptions::new().write(true).open(path).map_err(ioe)?;
    file.set_len(offset).map_err(ioe)?;
    file.sync_all().map_err(ioe)?;
    warn!(
        file = %path.display(),
        offset,
        dropped_bytes = len - offset,
        reason,
        "torn WAL tail cut off (the write was never acknowledged)"
    );
    Ok(())
}

/// `.wal` files named by their first seq, in seq order; anything else is left alone.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|source| io_err(dir, source))? {
        let entry = entry.map_err(|source| io_err(dir, source))?;
        let name = entry.file_name();
        let parsed = name
            .to_str()
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .filter(|n| n.len() == SEGMENT_NAME_DIGITS && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok());
        match parsed {
            Some(seq) if entry.file_type().is_ok_and(|t| t.is_file()) => {
                out.push((seq, entry.path()));
            }
            _ => debug!(file = %entry.path().display(), "not a WAL segment; ignored"),
        }
    }
    out.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(out)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(segment_file_name(first_seq))
}

/// Makes file creations and deletions in `dir` survive power loss.
/// Creates `dir` and its missing parents, and makes each new directory's
/// entry durable by fsyncing its parent (a directory made but not synced
/// into its parent can vanish in a power cut, with everything in it).
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        at = d.parent();
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), WalError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_err(path, source)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_err(dir, source))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn io_err(path: &Path, source: io::Error) -> WalError {
    let path = path.to_path_buf();
    if source.kind() == io::ErrorKind::StorageFull {
        WalError::DiskFull { path, source }
    } else {
        WalError::Io { path, source }
    }
}

fn corrupt(path: &Path, offset: u64, reason: String) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (apply closures run
    // outside every lock), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicUsize;

    type Seen = Vec<(u64, Vec<u8>)>;

    fn config(dir: &Path) -> WalConfig {
        WalConfig {
            dir: dir.to_path_buf(),
            ..WalConfig::default()
        }
    }

    fn open_collect(config: WalConfig, floor: u64) -> Result<(Wal, Seen), WalError> {
        let mut seen = Vec::new();
        let wal = Wal::open(config, floor, |seq, payload| {
            seen.push((seq, payload.to_vec()));
            Ok(())
        })?;
        Ok((wal, seen))
    }

    fn noop() -> Box<dyn FnOnce(u64) + Send> {
        Box::new(|_| {})
    }

    async fn append_seq(wal: &Wal, payloads: impl IntoIterator<Item = Vec<u8>>) -> Vec<u64> {
        let mut seqs = Vec::new();
        for p in payloads {
            seqs.push(wal.append(p, noop()).await.unwrap());
        }
        seqs
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir)
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    fn frame_len(payload_len: usize) -> u64 {
        RECORD_HEADER_LEN + payload_len as u64
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("record-{i:04}").into_bytes()
    }

    fn seqs(replayed: &Seen) -> Vec<u64> {
        replayed.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn wal_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Wal>();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_trip_across_restart_with_concurrent_writers() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert!(seen.is_empty());

        let applied = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..8u64 {
            let wal = wal.clone();
            let applied = applied.clone();
            tasks.spawn(async move {
                let mut acked = Vec::new();
                for i in 0..50u64 {
                    let body = format!("t{task}-{i}").into_bytes();
                    let applied = applied.clone();
                    let seq = wal
                        .append(
                            body.clone(),
                            Box::new(move |seq| applied.lock().unwrap().push(seq)),
                        )
                        .await
                        .unwrap();
                    acked.push((seq, body));
                }
                acked
            });
        }
        let mut acked = Vec::new();
        while let Some(res) = tasks.join_next().await {
            acked.extend(res.unwrap());
        }
        wal.close().await.unwrap();
        acked.sort();
        assert_eq!(acked.len(), 400);
        assert_eq!(*applied.lock().unwrap(), (1..=400).collect::<Vec<_>>());

        let (wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seen, acked, "every acked record replays once, in order");
        // New records go to a new segment, after the replayed ones.
        assert_eq!(append_seq(&wal, [b"after".to_vec()]).await, vec![401]);
        assert_eq!(wal.stats().segments, 2);
        assert_eq!(wal.stats().last_seq, 401);
        wal.close().await.unwrap();
        let (_wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seen.len(), 401);
        assert_eq!(seen.last().unwrap(), &(401, b"after".to_vec()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_batches_many_appends_into_few_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();

        // Hold the writer thread inside the first record's apply step so the
        // other appends pile up in the queue, as they would behind a slow fsync.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let wal = wal.clone();
            tokio::spawn(async move {
                wal.append(
                    b"first".to_vec(),
                    Box::new(move |_| {
                        entered_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                    }),
                )
                .await
            })
        };
        tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
            .await
            .unwrap();
        let syncs_before = wal.inner.shared.syncs.load(Ordering::Relaxed);

        let order = Arc::new(Mutex::new(Vec::new()));
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..63u64 {
            let wal = wal.clone();
            let order = order.clone();
            let started = started.clone();
            tasks.spawn(async move {
                // `append` queues its record before its first await.
                started.fetch_add(1, Ordering::SeqCst);
                wal.append(
                    payload(i),
                    Box::new(move |seq| order.lock().unwrap().push(seq)),
                )
                .await
                .unwrap()
            });
        }
        while started.load(Ordering::SeqCst) < 63 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        let mut acked = Vec::new();
        while let Some(res) = tasks.join_next().await {
            acked.push(res.unwrap());
        }
        acked.sort_unstable();
        assert_eq!(acked, (2..=64).collect::<Vec<_>>());
        assert_eq!(*order.lock().unwrap(), (2..=64).collect::<Vec<_>>());

        // What group commit promises: the records that queued up while the
        // writer was busy are written together and share one fsync.
        let syncs = wal.inner.shared.syncs.load(Ordering::Relaxed);
        assert_eq!(
            syncs - syncs_before,
            1,
            "the 63 records queued behind the first took {} fsyncs",
            syncs - syncs_before
        );
        wal.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apply_runs_in_seq_order_before_the_ack() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 10).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200u64 {
            let wal = wal.clone();
            let order = order.clone();
            tasks.spawn(async move {
                let order2 = order.clone();
                let seq = wal
                    .append(
                        payload(i),
                        Box::new(move |seq| order2.lock().unwrap().push(seq)),
                    )
                    .await
                    .unwrap();
                assert!(order.lock().unwrap().contains(&seq), "acked before apply");
                seq
            });
        }
        while let Some(res) = tasks.join_next().await {
            res.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (10..210).collect::<Vec<_>>());
        wal.close().await.unwrap();
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_later_appends_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        append_seq(&wal, (1..=10).map(payload)).await;
        wal.close().await.unwrap();

        let files = segment_files(dir.path());
        assert_eq!(files.len(), 1);
        let full_len = fs::metadata(&files[0]).unwrap().len();
        let torn_len = full_len - 3;
        OpenOptions::new()
            .write(true)
            .open(&files[0])
            .unwrap()
            .set_len(torn_len)
            .unwrap();

        let (wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seqs(&seen), (1..=9).collect::<Vec<_>>());
        assert_eq!(seen[8].1, payload(9));
        let cut_len = full_len - frame_len(payload(10).len());
        assert_eq!(fs::metadata(&files[0]).unwrap().len(), cut_len);

        assert_eq!(
            append_seq(&wal, (10..=14).map(payload)).await,
            vec![10, 11, 12, 13, 14]
        );
        wal.close().await.unwrap();
        let (_wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seqs(&seen), (1..=14).collect::<Vec<_>>());
        assert!(seen.iter().all(|(s, p)| *p == payload(*s)));
        assert_eq!(fs::metadata(&files[0]).unwrap().len(), cut_len);
    }

    #[tokio::test]
    async fn partial_frame_after_last_record_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        append_seq(&wal, (1..=5).map(payload)).await;
        wal.close().await.unwrap();
        let path = segment_files(dir.path()).remove(0);
        let good_len = fs::metadata(&path).unwrap().len();

        // A frame header that promises 100 payload bytes, followed by only 7.
        let mut garbage = Vec::new();
        encode_header(&mut garbage, 6, &[0xAB; 100]);
        garbage.extend_from_slice(&[0xAB; 7]);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&garbage).unwrap();
        drop(f);

        let (wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seqs(&seen), (1..=5).collect::<Vec<_>>());
        assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(append_seq(&wal, [payload(6)]).await, vec![6]);
        wal.close().await.unwrap();
    }

    #[tokio::test]
    async fn short_garbage_and_zero_fill_after_last_record_are_cut() {
        for tail in [vec![0x52u8, 0x53, 0x01], vec![0u8; 4096]] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
            append_seq(&wal, (1..=3).map(payload)).await;
            wal.close().await.unwrap();
            let path = segment_files(dir.path()).remove(0);
            let good_len = fs::metadata(&path).unwrap().len();
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(&tail).unwrap();
            drop(f);

            let (wal, seen) = open_collect(config(dir.path()), 1).unwrap();
            assert_eq!(seqs(&seen), vec![1, 2, 3]);
            assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
            wal.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn checksum_failure_in_final_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        append_seq(&wal, (1..=4).map(payload)).await;
        wal.close().await.unwrap();
        let path = segment_files(dir.path()).remove(0);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        fs::write(&path, &bytes).unwrap();

        let (wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seqs(&seen), vec![1, 2, 3]);
        wal.close().await.unwrap();
    }

    #[tokio::test]
    async fn corrupt_record_in_the_middle_stops_open() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        append_seq(&wal, (1..=10).map(payload)).await;
        wal.close().await.unwrap();
        let path = segment_files(dir.path()).remove(0);
        let mut bytes = fs::read(&path).unwrap();
        // Third record (seq 3): flip a byte of its payload.
        let offset = SEGMENT_HEADER_LEN + 2 * frame_len(payload(1).len());
        bytes[(offset + RECORD_HEADER_LEN + 2) as usize] ^= 0x01;
        fs::write(&path, &bytes).unwrap();

        let mut replayed = 0;
        let err = Wal::open(config(dir.path()), 1, |_, _| {
            replayed += 1;
            Ok(())
        })
        .unwrap_err();
        match &err {
            WalError::Corrupt {
                path: p,
                offset: o,
                reason,
            } => {
                assert_eq!(p, &path);
                assert_eq!(*o, offset);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("byte offset {offset}")), "{msg}");
        assert!(msg.contains("refusing to start"), "{msg}");
        // The file is left untouched for the operator.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[tokio::test]
    async fn bad_record_in_a_non_last_segment_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WalConfig {
            segment_bytes: 100,
            ..config(dir.path())
        };
        let (wal, _) = open_collect(cfg.clone(), 1).unwrap();
        append_seq(&wal, (1..=6).map(payload)).await;
        wal.close().await.unwrap();
        let files = segment_files(dir.path());
        assert!(files.len() >= 2);
        // Cut the first segment's last record short: a torn tail anywhere but
        // in the last segment means acknowledged data went missing.
        let first = &files[0];
        let len = fs::metadata(first).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(first)
            .unwrap()
            .set_len(len - 2)
            .unwrap();
        let err = open_collect(cfg, 1).unwrap_err();
        assert!(
            matches!(&err, WalError::Corrupt { path, .. } if path == first),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn empty_segment_files_are_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // Only a zero-byte segment.
        fs::write(segment_path(dir.path(), 7), b"").unwrap();
        let (wal, seen) = open_collect(config(dir.path()), 7).unwrap();
        assert!(seen.is_empty());
        assert!(segment_files(dir.path()).is_empty());
        assert_eq!(append_seq(&wal, [payload(7)]).await, vec![7]);
        wal.close().await.unwrap();

        // A zero-byte segment after real ones, and a torn (short) header.
        fs::write(segment_path(dir.path(), 8), b"").unwrap();
        let (wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seqs(&seen), vec![7]);
        assert_eq!(append_seq(&wal, [payload(8)]).await, vec![8]);
        wal.close().await.unwrap();
        fs::write(segment_path(dir.path(), 9), b"SXTW").unwrap();
        let (wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seqs(&seen), vec![7, 8]);
        assert_eq!(append_seq(&wal, [payload(9)]).await, vec![9]);
        wal.close().await.unwrap();
        let (_wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seqs(&seen), vec![7, 8, 9]);
    }

    #[tokio::test]
    async fn bad_magic_and_unknown_version_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        fs::write(&path, b"NOTAWAL\0\x01\0\0\0\0\0\0\0more bytes").unwrap();
        let err = open_collect(config(dir.path()), 1).unwrap_err();
        assert!(
            matches!(&err, WalError::BadMagic { path: p } if *p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));

        let mut header = SEGMENT_MAGIC.to_vec();
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&[0; 6]);
        fs::write(&path, &header).unwrap();
        let err = open_collect(config(dir.path()), 1).unwrap_err();
        assert!(
            matches!(err, WalError::UnsupportedVersion { version: 2, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn rotation_and_truncate_before() {
        let dir = tempfile::tempdir().unwrap();
        // 16-byte header + 3 frames of 31 bytes = 109 > 100: three records per segment.
        let cfg = WalConfig {
            segment_bytes: 100,
            ..config(dir.path())
        };
        let (wal, _) = open_collect(cfg.clone(), 1).unwrap();
        assert_eq!(frame_len(payload(1).len()), 31);
        append_seq(&wal, (1..=20).map(payload)).await;
        let names = |dir: &Path| -> Vec<u64> {
            list_segments(dir)
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect()
        };
        assert_eq!(names(dir.path()), vec![1, 4, 7, 10, 13, 16, 19]);
        assert_eq!(wal.stats().segments, 7);
        assert_eq!(wal.stats().last_seq, 20);
        let on_disk: u64 = segment_files(dir.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(wal.stats().bytes, on_disk);

        assert_eq!(wal.truncate_before(1).unwrap(), 0);
        assert_eq!(wal.truncate_before(8).unwrap(), 2);
        assert_eq!(names(dir.path()), vec![7, 10, 13, 16, 19]);
        assert_eq!(wal.truncate_before(9).unwrap(), 0);
        assert_eq!(wal.stats().segments, 5);
        wal.close().await.unwrap();

        let (wal, seen) = open_collect(cfg.clone(), 1).unwrap();
        assert_eq!(seqs(&seen), (7..=20).collect::<Vec<_>>());
        assert!(seen.iter().all(|(s, p)| *p == payload(*s)));
        // Replayed segments are closed ones and go as a whole.
        assert_eq!(wal.truncate_before(21).unwrap(), 5);
        assert!(segment_files(dir.path()).is_empty());
        assert_eq!(append_seq(&wal, [payload(21)]).await, vec![21]);
        // The active segment is rotated so it can go too.
        assert_eq!(wal.truncate_before(21).unwrap(), 0);
        assert_eq!(wal.truncate_before(22).unwrap(), 1);
        assert_eq!(wal.stats().segments, 0);
        assert_eq!(wal.stats().bytes, 0);
        assert_eq!(append_seq(&wal, [payload(22)]).await, vec![22]);
        assert_eq!(names(dir.path()), vec![22]);
        wal.close().await.unwrap();
        let (_wal, seen) = open_collect(cfg, 1).unwrap();
        assert_eq!(seen, vec![(22, payload(22))]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncate_before_is_safe_during_appends() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WalConfig {
            segment_bytes: 200,
            ..config(dir.path())
        };
        let (wal, _) = open_collect(cfg.clone(), 1).unwrap();
        let applied = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicUsize::new(0));
        let truncator = {
            let wal = wal.clone();
            let applied = applied.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut deleted = 0;
                while stop.load(Ordering::SeqCst) == 0 {
                    // Pretend everything applied is persisted, except the last 5.
                    let needed = applied.load(Ordering::SeqCst).saturating_sub(5);
                    deleted += wal.truncate_before(needed).unwrap();
                    tokio::task::yield_now().await;
                }
                deleted
            })
        };
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..4u64 {
            let wal = wal.clone();
            let applied = applied.clone();
            tasks.spawn(async move {
                for i in 0..100u64 {
                    let applied = applied.clone();
                    wal.append(
                        payload(t * 1000 + i),
                        Box::new(move |seq| applied.store(seq, Ordering::SeqCst)),
                    )
                    .await
                    .unwrap();
                }
            });
        }
        while let Some(res) = tasks.join_next().await {
            res.unwrap();
        }
        stop.store(1, Ordering::SeqCst);
        let deleted = truncator.await.unwrap();
        assert!(deleted > 0);
        wal.close().await.unwrap();

        let (_wal, seen) = open_collect(cfg, 1).unwrap();
        let s = seqs(&seen);
        assert_eq!(*s.last().unwrap(), 400);
        assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "{s:?}");
        assert!(s[0] <= 395, "records still needed were deleted: {s:?}");
    }

    #[tokio::test]
    async fn next_seq_floor_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(append_seq(&wal, (1..=3).map(payload)).await, vec![1, 2, 3]);
        assert_eq!(wal.truncate_before(4).unwrap(), 1);
        wal.close().await.unwrap();
        assert!(segment_files(dir.path()).is_empty());

        // Everything is gone; the caller knows seqs up to 3 were persisted.
        let (wal, seen) = open_collect(config(dir.path()), 4).unwrap();
        assert!(seen.is_empty());
        assert_eq!(wal.stats().last_seq, 3);
        assert_eq!(append_seq(&wal, [payload(4)]).await, vec![4]);
        wal.close().await.unwrap();

        // A floor below what the segments hold does not rewind.
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(append_seq(&wal, [payload(5)]).await, vec![5]);
        wal.close().await.unwrap();

        // A floor above them leaves a gap between segments, which replays fine.
        let (wal, _) = open_collect(config(dir.path()), 1000).unwrap();
        assert_eq!(append_seq(&wal, [payload(1000)]).await, vec![1000]);
        wal.close().await.unwrap();
        let (_wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(seqs(&seen), vec![4, 5, 1000]);
    }

    #[tokio::test]
    async fn append_after_close_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        append_seq(&wal, [payload(1)]).await;
        wal.close().await.unwrap();
        wal.close().await.unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let ran2 = ran.clone();
        let err = wal
            .append(
                payload(2),
                Box::new(move |_| {
                    ran2.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, WalError::Closed), "{err:?}");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_finishes_queued_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32u64 {
            let wal = wal.clone();
            tasks.spawn(async move { wal.append(payload(i), noop()).await });
        }
        // Let them queue, then close while some may still be in flight.
        tokio::task::yield_now().await;
        wal.close().await.unwrap();
        let mut ok = HashSet::new();
        while let Some(res) = tasks.join_next().await {
            match res.unwrap() {
                Ok(seq) => assert!(ok.insert(seq)),
                Err(WalError::Closed) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        let (_wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        let replayed: HashSet<u64> = seqs(&seen).into_iter().collect();
        assert_eq!(replayed, ok, "every acked append is durable, nothing else");
    }

    #[tokio::test]
    async fn replay_callback_error_stops_open() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        append_seq(&wal, (1..=3).map(payload)).await;
        wal.close().await.unwrap();
        let err = Wal::open(config(dir.path()), 1, |seq, _| {
            if seq == 2 {
                Err("bad batch".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(
            matches!(&err, WalError::Replay { seq: 2, message } if message == "bad batch"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn sync_never_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WalConfig {
            sync: SyncMode::Never,
            ..config(dir.path())
        };
        let (wal, _) = open_collect(cfg.clone(), 1).unwrap();
        assert_eq!(wal.stats().sync, SyncMode::Never);
        append_seq(&wal, (1..=10).map(payload)).await;
        // No fsync per append; at most the background one if this test was slow.
        assert!(wal.inner.shared.syncs.load(Ordering::Relaxed) <= 1);
        wal.close().await.unwrap();
        // Close syncs whatever the background sync has not.
        assert!(wal.inner.shared.syncs.load(Ordering::Relaxed) >= 1);
        let (_wal, seen) = open_collect(cfg, 1).unwrap();
        assert_eq!(seqs(&seen), (1..=10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn large_payloads_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = open_collect(config(dir.path()), 1).unwrap();
        let big: Vec<u8> = (0..3 * DIRECT_WRITE_MIN).map(|i| (i % 251) as u8).collect();
        append_seq(&wal, [payload(1), big.clone(), payload(3), Vec::new()]).await;
        wal.close().await.unwrap();
        let (_wal, seen) = open_collect(config(dir.path()), 1).unwrap();
        assert_eq!(
            seen,
            vec![(1, payload(1)), (2, big), (3, payload(3)), (4, Vec::new())]
        );
    }
}
