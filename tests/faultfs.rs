//! A file system that forgets what was not fsynced, for durability tests.
//!
//! [`FaultFs::mount`] mounts an in-memory FUSE file system (the `fuser`
//! crate, `/dev/fuse`, root) on an empty directory; the server under test
//! gets it as `--data-dir`. Every operation changes the *current* state,
//! which is what reads see. Separately the file system keeps the *durable*
//! state, what a disk would hold after a power cut, with the strictest
//! POSIX reading of `fsync`:
//!
//! - a file's bytes and length become durable when the file is fsynced
//!   (`fsync` or `fdatasync`);
//! - a directory's entries (files created, renamed, unlinked; directories
//!   made) become durable when the directory itself is fsynced. A file
//!   fsynced in a directory that was not is lost with the directory entry.
//!
//! [`FaultFs::power_cut`] (after the server was killed) unmounts, replaces
//! the current state by the durable one, drops whatever is no longer
//! reachable, and mounts again: what a machine finds after losing power.
//! This is Jepsen's LazyFS idea, kept small: the state lives in memory and
//! outlives the mount, not the test.
//!
//! Faults on command: [`FaultFs::set_capacity`] makes writes that would
//! grow the data past a size fail with `ENOSPC` (a full disk; freed by
//! raising the capacity), and [`FaultFs::fail_fsyncs`] makes the next fsyncs
//! of files with a given name suffix fail with `EIO` the way Linux does: the
//! dirty data is then considered written (marked clean) although it never
//! became durable, so a retried fsync "succeeds" without it (PostgreSQL's
//! fsyncgate).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// How long the kernel may cache names and attributes. Every change goes
/// through the kernel, so its cache stays right; a power cut remounts.
const TTL: Duration = Duration::from_secs(1);
const BLOCK: u64 = 4096;

/// The mounted file system and its state (which outlives a mount).
pub struct FaultFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

/// Counts of what the file system did, for a test's report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// fsyncs of files (successful).
    pub file_syncs: u64,
    /// fsyncs of directories.
    pub dir_syncs: u64,
    /// Writes refused with ENOSPC.
    pub enospc: u64,
    /// fsyncs failed with EIO on command.
    pub eio: u64,
    /// Power cuts so far.
    pub power_cuts: u64,
    /// Bytes the last power cut threw away (current minus durable file data).
    pub last_cut_lost_bytes: u64,
}

impl FaultFs {
    /// Mounts an empty file system on `mountpoint` (an existing, empty
    /// directory). Needs root and `/dev/fuse`.
    pub fn mount(mountpoint: &Path) -> FaultFs {
        let state = Arc::new(Mutex::new(State::new()));
        let mut fs = FaultFs {
            state,
            mountpoint: mountpoint.to_path_buf(),
            session: None,
        };
        fs.mount_again();
        fs
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    fn mount_again(&mut self) {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("sextant-faultfs".into()),
            MountOption::DefaultPermissions,
        ];
        // Other users too (`allow_other`): a PostgreSQL server runs as
        // `postgres`.
        config.acl = fuser::SessionACL::All;
        let fs = Fs {
            state: self.state.clone(),
        };
        let session = fuser::spawn_mount2(fs, &self.mountpoint, &config).unwrap_or_else(|e| {
            panic!(
                "mounting the test file system on {} failed: {e} (needs root and /dev/fuse)",
                self.mountpoint.display()
            )
        });
        self.session = Some(session);
    }

    fn unmount(&mut self) {
        if let Some(session) = self.session.take() {
            match session.umount_and_join() {
                // The kernel may end the session's read with ECONNABORTED
                // rather than ENODEV when it tears the connection down.
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) => panic!("unmounting {}: {e}", self.mountpoint.display()),
            }
        }
    }

    /// A power cut: unmounts (the server must be dead already, so nothing
    /// is open), forgets every change that was not made durable, and mounts
    /// the durable state again.
    pub fn power_cut(&mut self) {
        self.unmount();
        lock(&self.state).power_cut();
        self.mount_again();
    }

    /// Refuse writes that would make the file data bigger than `bytes` in
    /// all (`None`: no limit).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        lock(&self.state).capacity = bytes;
    }

    /// Refuse growth of the files whose name starts with `prefix` with
    /// ENOSPC, as a full disk would, while others still grow (`None`: no
    /// such files): how a full disk meets one writer and not another.
    pub fn set_full_for(&self, prefix: Option<&str>) {
        lock(&self.state).full_for = prefix.map(str::to_owned);
    }

    /// Bytes of file data now (current state).
    pub fn used_bytes(&self) -> u64 {
        lock(&self.state).used()
    }

    /// The next `count` fsyncs of files whose name ends with `suffix` fail
    /// with EIO, dropping their dirty data as Linux does.
    pub fn fail_fsyncs(&self, suffix: &str, count: u32) {
        lock(&self.state)
            .fsync_faults
            .push((suffix.to_owned(), count));
    }

    /// What the file system did so far.
    pub fn stats(&self) -> Stats {
        lock(&self.state).stats
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && let Err(e) = session.umount_and_join()
            && e.kind() != std::io::ErrorKind::ConnectionAborted
        {
            eprintln!("unmounting {}: {e}", self.mountpoint.display());
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    capacity: Option<u64>,
    /// Files named with this prefix cannot grow ([`FaultFs::set_full_for`]).
    full_for: Option<String>,
    fsync_faults: Vec<(String, u32)>,
    stats: Stats,
    /// Link counts of every linked inode, computed when first asked for
    /// after a change of any directory's entries (a lookup would otherwise
    /// walk every directory, which made long runs with thousands of files
    /// slow down cycle after cycle).
    link_counts: std::cell::OnceCell<HashMap<u64, u32>>,
}

struct Node {
    /// The last name it was linked under (for fault rules).
    name: OsString,
    perm: u16,
    /// Owner and group (PostgreSQL insists that its data directory be its
    /// own); kept like the data, not only across power cuts.
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    /// Open handles; an unlinked file stays readable while open.
    open: u32,
    kind: Kind,
}

enum Kind {
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
        /// The byte range written since the last fsync (`None`: clean),
        /// and whether the length changed.
        dirty: Option<(usize, usize)>,
        resized: bool,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

impl State {
    fn new() -> State {
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node::dir(OsString::from("/"), 0o755, (0, 0)),
        );
        State {
            nodes,
            next_ino: INodeNo::ROOT.0 + 1,
            capacity: None,
            full_for: None,
            fsync_faults: Vec::new(),
            stats: Stats::default(),
            link_counts: std::cell::OnceCell::new(),
        }
    }

    fn add(&mut self, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    /// How many directory entries point at `ino` (current state).
    fn links(&self, ino: u64) -> u32 {
        if ino == INodeNo::ROOT.0 {
            return 1;
        }
        let counts = self.link_counts.get_or_init(|| {
            let mut counts = HashMap::new();
            for node in self.nodes.values() {
                if let Kind::Dir { entries, .. } = &node.kind {
                    for &child in entries.values() {
                        *counts.entry(child).or_insert(0u32) += 1;
                    }
                }
            }
            counts
        });
        counts.get(&ino).copied().unwrap_or(0)
    }

    /// File bytes of every file that is linked or open.
    fn used(&self) -> u64 {
        let linked: HashSet<u64> = self
            .nodes
            .values()
            .filter_map(|n| match &n.kind {
                Kind::Dir { entries, .. } => Some(entries.values().copied()),
                Kind::File { .. } => None,
            })
            .flatten()
            .collect();
        self.nodes
            .iter()
            .filter(|(ino, n)| n.open > 0 || linked.contains(ino))
            .map(|(_, n)| match &n.kind {
                Kind::File { data, .. } => data.len() as u64,
                Kind::Dir { .. } => 0,
            })
            .sum()
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size) = match &node.kind {
            Kind::File { data, .. } => (FileType::RegularFile, data.len() as u64),
            Kind::Dir { entries, .. } => (FileType::Directory, entries.len() as u64),
        };
        let nlink = match node.kind {
            Kind::Dir { .. } => 2,
            Kind::File { .. } => self.links(ino),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: node.perm,
            nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        })
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get(&dir).map(|n| &n.kind) {
            Some(Kind::Dir { entries, .. }) => Ok(entries),
            Some(Kind::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        self.link_counts.take();
        match self.nodes.get_mut(&dir).map(|n| &mut n.kind) {
            Some(Kind::Dir { entries, .. }) => Ok(entries),
            Some(Kind::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// Creates `name` in `parent` (EEXIST if taken).
    fn create(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.add(node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(ino)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.mtime = SystemTime::now();
        }
    }

    /// Checks that `ino` is a file that may grow to `len` bytes (ENOSPC
    /// past the capacity).
    fn make_room(&mut self, ino: u64, len: usize) -> Result<(), Errno> {
        let (now, name) = match self.nodes.get(&ino).map(|n| (&n.kind, &n.name)) {
            Some((Kind::File { data, .. }, name)) => (data.len(), name),
            Some((Kind::Dir { .. }, _)) => return Err(Errno::EISDIR),
            None => return Err(Errno::ENOENT),
        };
        let full_here = self
            .full_for
            .as_deref()
            .is_some_and(|p| name.to_string_lossy().starts_with(p));
        if len > now
            && (full_here
                || self
                    .capacity
                    .is_some_and(|capacity| self.used() + (len - now) as u64 > capacity))
        {
            self.stats.enospc += 1;
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<u32, Errno> {
        let offset = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
        let end = offset + bytes.len();
        self.make_room(ino, end)?;
        let node = self.nodes.get_mut(&ino).expect("checked above");
        node.mtime = SystemTime::now();
        let Kind::File {
            data,
            dirty,
            resized,
            ..
        } = &mut node.kind
        else {
            unreachable!("checked above")
        };
        if end > data.len() {
            data.resize(end, 0);
            *resized = true;
        }
        data[offset..end].copy_from_slice(bytes);
        *dirty = Some(match *dirty {
            Some((from, to)) => (from.min(offset), to.max(end)),
            None => (offset, end),
        });
        Ok(u32::try_from(bytes.len()).expect("a FUSE write is at most a few MiB"))
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let size = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
        self.make_room(ino, size)?;
        let node = self.nodes.get_mut(&ino).expect("checked above");
        node.mtime = SystemTime::now();
        if let Kind::File { data, resized, .. } = &mut node.kind {
            data.resize(size, 0);
            *resized = true;
        }
        Ok(())
    }

    fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return Err(Errno::ENOENT);
        };
        let name = node.name.to_string_lossy().into_owned();
        let fault = self
            .fsync_faults
            .iter_mut()
            .find(|(suffix, count)| *count > 0 && name.ends_with(suffix.as_str()));
        let failed = if let Some((_, count)) = fault {
            *count -= 1;
            true
        } else {
            false
        };
        self.fsync_faults.retain(|(_, count)| *count > 0);
        match &mut node.kind {
            Kind::File {
                data,
                durable,
                dirty,
                resized,
            } => {
                if failed {
                    // Linux marks the pages clean after a failed writeback:
                    // the data stays readable but never reaches the disk.
                    *dirty = None;
                    *resized = false;
                    self.stats.eio += 1;
                    return Err(Errno::EIO);
                }
                if *resized {
                    durable.resize(data.len(), 0);
                }
                if let Some((from, to)) = dirty.take() {
                    let to = to.min(data.len());
                    if from < to {
                        if durable.len() < to {
                            durable.resize(to, 0);
                        }
                        durable[from..to].copy_from_slice(&data[from..to]);
                    }
                }
                *resized = false;
                self.stats.file_syncs += 1;
            }
            Kind::Dir { entries, durable } => {
                *durable = entries.clone();
                self.stats.dir_syncs += 1;
            }
        }
        Ok(())
    }

    /// The current state becomes the durable one; unreachable nodes go.
    fn power_cut(&mut self) {
        self.link_counts.take();
        let mut lost = 0u64;
        for node in self.nodes.values_mut() {
            node.open = 0;
            match &mut node.kind {
                Kind::File {
                    data,
                    durable,
                    dirty,
                    resized,
                } => {
                    lost += data.len().abs_diff(durable.len()) as u64;
                    if let Some((from, to)) = dirty.take() {
                        lost += to.saturating_sub(from) as u64;
                    }
                    *data = durable.clone();
                    *resized = false;
                }
                Kind::Dir { entries, durable } => *entries = durable.clone(),
            }
        }
        let mut reachable = HashSet::from([INodeNo::ROOT.0]);
        let mut todo = vec![INodeNo::ROOT.0];
        while let Some(ino) = todo.pop() {
            if let Some(Kind::Dir { entries, .. }) = self.nodes.get(&ino).map(|n| &n.kind) {
                for &child in entries.values() {
                    if reachable.insert(child) {
                        todo.push(child);
                    }
                }
            }
        }
        // A durable entry may name a node that no longer exists (never, as
        // nodes are only dropped here), or a node gone from the map.
        self.nodes.retain(|ino, _| reachable.contains(ino));
        for node in self.nodes.values_mut() {
            if let Kind::Dir { entries, durable } = &mut node.kind {
                entries.retain(|_, ino| reachable.contains(ino));
                durable.retain(|_, ino| reachable.contains(ino));
            }
        }
        self.stats.power_cuts += 1;
        self.stats.last_cut_lost_bytes = lost;
    }
}

impl Node {
    fn file(name: OsString, perm: u16, (uid, gid): (u32, u32)) -> Node {
        Node {
            name,
            perm,
            uid,
            gid,
            mtime: SystemTime::now(),
            open: 0,
            kind: Kind::File {
                data: Vec::new(),
                durable: Vec::new(),
                dirty: None,
                resized: false,
            },
        }
    }

    fn dir(name: OsString, perm: u16, (uid, gid): (u32, u32)) -> Node {
        Node {
            name,
            perm,
            uid,
            gid,
            mtime: SystemTime::now(),
            open: 0,
            kind: Kind::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        }
    }
}

fn perm(mode: u32, umask: u32) -> u16 {
    u16::try_from(mode & !umask & 0o7777).unwrap_or(0o644)
}

/// The FUSE side: each call locks the state once.
struct Fs {
    state: Arc<Mutex<State>>,
}

impl Fs {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let st = self.state();
        match st.lookup(parent.0, name).map(|ino| st.attr(ino)) {
            Ok(Some(attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.state();
        if let Some(size) = size
            && let Err(e) = st.truncate(ino.0, size)
        {
            return reply.error(e);
        }
        if let Some(node) = st.nodes.get_mut(&ino.0) {
            if let Some(mode) = mode {
                node.perm = perm(mode, 0);
            }
            node.uid = uid.unwrap_or(node.uid);
            node.gid = gid.unwrap_or(node.gid);
        }
        match st.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.state();
        let node = Node::dir(name.to_owned(), perm(mode, umask), (req.uid(), req.gid()));
        match st.create(parent.0, name, node) {
            Ok(ino) => reply.entry(&TTL, &st.attr(ino).expect("just made"), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.state();
        match st.lookup(parent.0, name) {
            Ok(ino) if matches!(st.nodes[&ino].kind, Kind::Dir { .. }) => {
                reply.error(Errno::EISDIR)
            }
            Ok(_) => {
                st.entries_mut(parent.0).expect("looked up").remove(name);
                st.touch(parent.0);
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.state();
        match st.lookup(parent.0, name) {
            Ok(ino) => match st.entries(ino) {
                Ok(entries) if !entries.is_empty() => reply.error(Errno::ENOTEMPTY),
                Ok(_) => {
                    st.entries_mut(parent.0).expect("looked up").remove(name);
                    st.touch(parent.0);
                    reply.ok();
                }
                Err(e) => reply.error(e),
            },
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state();
        let ino = match st.lookup(parent.0, name) {
            Ok(ino) => ino,
            Err(e) => return reply.error(e),
        };
        match st.lookup(newparent.0, newname) {
            Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => {
                return reply.error(Errno::EEXIST);
            }
            Ok(target) if st.entries(target).is_ok_and(|e| !e.is_empty()) => {
                return reply.error(Errno::ENOTEMPTY);
            }
            Ok(_) | Err(_) => {}
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return reply.error(Errno::EINVAL);
        }
        if let Err(e) = st.entries(newparent.0) {
            return reply.error(e);
        }
        st.entries_mut(parent.0).expect("looked up").remove(name);
        st.entries_mut(newparent.0)
            .expect("checked")
            .insert(newname.to_owned(), ino);
        if let Some(node) = st.nodes.get_mut(&ino) {
            node.name = newname.to_owned();
        }
        st.touch(parent.0);
        st.touch(newparent.0);
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.state();
        if (flags.0 & libc::O_TRUNC) != 0
            && let Err(e) = st.truncate(ino.0, 0)
        {
            return reply.error(e);
        }
        match st.nodes.get_mut(&ino.0) {
            Some(node) => {
                node.open += 1;
                reply.opened(FileHandle(0), FopenFlags::empty());
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.state();
        match st.nodes.get(&ino.0).map(|n| &n.kind) {
            Some(Kind::File { data, .. }) => {
                let from = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let to = (from + size as usize).min(data.len());
                reply.data(&data[from..to]);
            }
            Some(Kind::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(node) = self.state().nodes.get_mut(&ino.0) {
            node.open = node.open.saturating_sub(1);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.state();
        let entries = match st.entries(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        let listing = [
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ]
        .into_iter()
        .chain(entries.iter().map(|(name, &child)| {
            let kind = match st.nodes.get(&child).map(|n| &n.kind) {
                Some(Kind::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (child, kind, name.clone())
        }));
        for (i, (child, kind, name)) in listing
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.state();
        let used = st.used().div_ceil(BLOCK);
        let total = st.capacity.map_or(1 << 30, |c| c.div_ceil(BLOCK)).max(used);
        let free = total - used;
        reply.statfs(
            total,
            free,
            free,
            1 << 20,
            1 << 20,
            BLOCK as u32,
            255,
            BLOCK as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.state();
        let existing = st.lookup(parent.0, name).ok();
        let ino = match existing {
            Some(_) if (flags & libc::O_EXCL) != 0 => return reply.error(Errno::EEXIST),
            Some(ino) => {
                if (flags & libc::O_TRUNC) != 0
                    && let Err(e) = st.truncate(ino, 0)
                {
                    return reply.error(e);
                }
                ino
            }
            None => match st.create(
                parent.0,
                name,
                Node::file(name.to_owned(), perm(mode, umask), (req.uid(), req.gid())),
            ) {
                Ok(ino) => ino,
                Err(e) => return reply.error(e),
            },
        };
        if let Some(node) = st.nodes.get_mut(&ino) {
            node.open += 1;
        }
        let attr = st.attr(ino).expect("just made");
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(0),
            FopenFlags::empty(),
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut st = self.state();
        let len = match st.nodes.get(&ino.0).map(|n| &n.kind) {
            Some(Kind::File { data, .. }) => data.len() as u64,
            _ => return reply.error(Errno::EBADF),
        };
        if offset + length > len
            && let Err(e) = st.truncate(ino.0, offset + length)
        {
            return reply.error(e);
        }
        reply.ok();
    }
}
