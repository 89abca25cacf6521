//! [`FaultyDir`], a test tool: an in-memory POSIX-like file system that fails the I/O call
//! chosen by a test, and can cut the power.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::dir::{Access, Dir, DirEntry, DirFile, FileId, LockGuard, MappedBytes, Stat};

/// Linux `EIO`.
const EIO: i32 = 5;
/// Linux `ENOSPC`.
const ENOSPC: i32 = 28;

/// What a failing call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The call fails with `EIO` and changes nothing. Any call can get it.
    Eio,
    /// The call fails with `ENOSPC` and changes nothing. Any call can get it.
    NoSpace,
    /// An append writes the first half of its bytes, then fails with `ENOSPC`. Only appends.
    ShortWrite,
    /// A `sync_data`, `sync_all` or `sync_dir` fails with `EIO`; nothing becomes durable, and
    /// a file's unsynced bytes are lost (Linux may drop dirty pages after a writeback error,
    /// so a retried sync that succeeds has not saved them). Only syncs.
    SyncFails,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Fault::Eio,
        Fault::NoSpace,
        Fault::ShortWrite,
        Fault::SyncFails,
    ];

    /// Whether a call of `kind` can get this fault.
    fn applies_to(self, kind: CallKind) -> bool {
        match self {
            Fault::Eio | Fault::NoSpace => true,
            Fault::ShortWrite => kind == CallKind::Append,
            Fault::SyncFails => kind == CallKind::Sync,
        }
    }

    fn error(self) -> io::Error {
        match self {
            Fault::Eio | Fault::SyncFails => io::Error::from_raw_os_error(EIO),
            Fault::NoSpace | Fault::ShortWrite => io::Error::from_raw_os_error(ENOSPC),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Append,
    Sync,
    Other,
}

/// I/O calls since the counts were last reset (by [`FaultyDir::reset_counts`],
/// [`FaultyDir::fail`] or [`FaultyDir::crash_at`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Every call.
    pub calls: u64,
    /// [`DirFile::append`] calls.
    pub appends: u64,
    /// `sync_data`, `sync_all` and `sync_dir` calls.
    pub syncs: u64,
}

impl CallCounts {
    /// How many calls could get `fault`: the points a sweep of it fails one by one.
    pub fn points(&self, fault: Fault) -> u64 {
        match fault {
            Fault::Eio | Fault::NoSpace => self.calls,
            Fault::ShortWrite => self.appends,
            Fault::SyncFails => self.syncs,
        }
    }
}

/// What a crash keeps of what was not made durable. Any of these can happen on a POSIX
/// file system; a sweep runs them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: files and directories are as last synced.
    DropUnsynced,
    /// A torn write: the first half of the bytes appended to each file since its last sync
    /// (when it only grew); directories as last synced.
    KeepHalfUnsynced,
    /// Every directory change (its metadata was committed), but file bytes only as last
    /// synced: finds a rename or link of a file whose bytes were not synced first.
    KeepDirChanges,
    /// Of each directory's changes since its last sync, only the latest (metadata made
    /// durable out of order): finds a rename made durable before a create it depends on.
    KeepLastDirChange,
}

impl CrashMode {
    pub const ALL: [CrashMode; 4] = [
        CrashMode::DropUnsynced,
        CrashMode::KeepHalfUnsynced,
        CrashMode::KeepDirChanges,
        CrashMode::KeepLastDirChange,
    ];
}

#[derive(Debug, Clone)]
struct FileNode {
    data: Vec<u8>,
    /// The bytes as of the last successful sync: what a crash leaves.
    durable: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct DirNode {
    entries: BTreeMap<OsString, u64>,
    /// The entries as of the last `sync_dir`: what a crash leaves.
    durable: BTreeMap<OsString, u64>,
    /// The changes since the last `sync_dir`, in order, each one call's edits (a name
    /// pointed at an inode, or removed).
    changes: Vec<Vec<(OsString, Option<u64>)>>,
}

impl DirNode {
    fn change(&mut self, edits: Vec<(OsString, Option<u64>)>) {
        apply(&mut self.entries, &edits);
        self.changes.push(edits);
    }
}

fn apply(entries: &mut BTreeMap<OsString, u64>, edits: &[(OsString, Option<u64>)]) {
    for (name, ino) in edits {
        match ino {
            Some(ino) => entries.insert(name.clone(), *ino),
            None => entries.remove(name),
        };
    }
}

#[derive(Debug, Clone)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

const ROOT: u64 = 0;

/// What the test asked for next.
#[derive(Debug, Clone, Copy)]
enum Plan {
    None,
    /// Fail the `n`-th call (from 0, counted among those the fault applies to).
    Fail(Fault, u64),
    /// Cut the power before the `n`-th call (from 0, among all calls).
    Crash(u64, CrashMode),
}

struct Fs {
    /// Inodes by number; never freed, so an open handle keeps an unlinked file alive.
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    counts: CallCounts,
    plan: Plan,
    fired: bool,
    /// The power is off: every call fails until [`FaultyDir::restart`].
    down: bool,
    /// Bumped by every crash; handles opened before it fail.
    boot: u64,
    /// Inodes whose advisory lock is held.
    locks: HashSet<u64>,
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

fn names(path: &Path) -> Vec<OsString> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

impl Fs {
    /// Counts a call of `kind`, and runs the plan: `Err` when the call must fail without
    /// effect, `Ok(Some(fault))` when it must fail its own way (a short write, a failed sync).
    fn enter(&mut self, kind: CallKind) -> io::Result<Option<Fault>> {
        if self.down {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let call = self.counts.calls;
        let class = match kind {
            CallKind::Append => self.counts.appends,
            CallKind::Sync => self.counts.syncs,
            CallKind::Other => call,
        };
        self.counts.calls += 1;
        match kind {
            CallKind::Append => self.counts.appends += 1,
            CallKind::Sync => self.counts.syncs += 1,
            CallKind::Other => {}
        }
        match self.plan {
            Plan::Crash(n, mode) if call == n => {
                self.plan = Plan::None;
                self.fired = true;
                self.crash(mode);
                Err(io::Error::from_raw_os_error(EIO))
            }
            Plan::Fail(fault, n) if fault.applies_to(kind) => {
                let index = match fault {
                    Fault::Eio | Fault::NoSpace => call,
                    Fault::ShortWrite | Fault::SyncFails => class,
                };
                if index != n {
                    return Ok(None);
                }
                self.plan = Plan::None;
                self.fired = true;
                match fault {
                    Fault::ShortWrite | Fault::SyncFails => Ok(Some(fault)),
                    Fault::Eio | Fault::NoSpace => Err(fault.error()),
                }
            }
            _ => Ok(None),
        }
    }

    fn crash(&mut self, mode: CrashMode) {
        for node in self.nodes.values_mut() {
            match node {
                Node::Dir(d) => {
                    match mode {
                        CrashMode::DropUnsynced | CrashMode::KeepHalfUnsynced => {
                            d.entries = d.durable.clone();
                        }
                        CrashMode::KeepDirChanges => {}
                        CrashMode::KeepLastDirChange => {
                            d.entries = d.durable.clone();
                            if let Some(last) = d.changes.last() {
                                apply(&mut d.entries, last);
                            }
                        }
                    }
                    d.durable = d.entries.clone();
                    d.changes.clear();
                }
                Node::File(f) => {
                    let grown = f.data.len() > f.durable.len() && f.data.starts_with(&f.durable);
                    if mode == CrashMode::KeepHalfUnsynced && grown {
                        let keep = f.durable.len() + (f.data.len() - f.durable.len()) / 2;
                        f.data.truncate(keep);
                    } else {
                        f.data = f.durable.clone();
                    }
                    f.durable = f.data.clone();
                }
            }
        }
        self.down = true;
        self.boot += 1;
        self.locks.clear();
    }

    fn dir(&self, ino: u64) -> io::Result<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(io::Error::from(io::ErrorKind::NotADirectory)),
            None => Err(not_found()),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(io::Error::from(io::ErrorKind::NotADirectory)),
            None => Err(not_found()),
        }
    }

    fn file_mut(&mut self, ino: u64) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(io::Error::from(io::ErrorKind::IsADirectory)),
            None => Err(not_found()),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        names(path).iter().try_fold(ROOT, |ino, name| {
            self.dir(ino)?
                .entries
                .get(name)
                .copied()
                .ok_or_else(not_found)
        })
    }

    /// The directory that holds `path`'s last name, and that name.
    fn parent(&self, path: &Path) -> io::Result<(u64, OsString)> {
        let mut names = names(path);
        let name = names
            .pop()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let parent = names.iter().try_fold(ROOT, |ino, n| {
            self.dir(ino)?.entries.get(n).copied().ok_or_else(not_found)
        })?;
        self.dir(parent)?;
        Ok((parent, name))
    }

    fn add(&mut self, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn new_file(&mut self, path: &Path, exclusive: bool) -> io::Result<u64> {
        let (parent, name) = self.parent(path)?;
        if let Some(&ino) = self.dir(parent)?.entries.get(&name) {
            if exclusive {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            self.file_mut(ino)?.data.clear();
            return Ok(ino);
        }
        let ino = self.add(Node::File(FileNode {
            data: Vec::new(),
            durable: Vec::new(),
        }));
        self.dir_mut(parent)?.change(vec![(name, Some(ino))]);
        Ok(ino)
    }

    fn new_dir(&mut self, path: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(path)?;
        if self.dir(parent)?.entries.contains_key(&name) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let ino = self.add(Node::Dir(DirNode::default()));
        self.dir_mut(parent)?.change(vec![(name, Some(ino))]);
        Ok(())
    }

    fn unlink(&mut self, path: &Path, want_dir: bool) -> io::Result<u64> {
        let (parent, name) = self.parent(path)?;
        let ino = *self.dir(parent)?.entries.get(&name).ok_or_else(not_found)?;
        match (self.nodes.get(&ino), want_dir) {
            (Some(Node::File(_)), true) => {
                return Err(io::Error::from(io::ErrorKind::NotADirectory));
            }
            (Some(Node::Dir(_)), false) => {
                return Err(io::Error::from(io::ErrorKind::IsADirectory));
            }
            _ => {}
        }
        self.dir_mut(parent)?.change(vec![(name, None)]);
        Ok(ino)
    }
}

/// A test tool: an in-memory POSIX-like file system to hand to
/// [`StoreOptions::io`](crate::StoreOptions::io). Directory entries name inodes, open handles
/// keep unlinked files alive, advisory locks are held per handle.
///
/// It counts I/O calls ([`counts`](Self::counts)), fails the one a test picks
/// ([`fail`](Self::fail)), and keeps what was made durable: per file the bytes as of its last
/// `sync_data`/`sync_all`, per directory the entries as of its last `sync_dir`. A crash
/// ([`crash`](Self::crash), [`crash_at`](Self::crash_at)) throws away everything else —
/// unsynced bytes, and creates, removes and renames whose directory was not synced — and
/// releases every lock; calls fail with `EIO` until [`restart`](Self::restart).
/// In memory, so that a test can rerun an operation once per I/O call it makes.
pub struct FaultyDir {
    fs: Arc<Mutex<Fs>>,
}

impl fmt::Debug for FaultyDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fs = self.lock();
        f.debug_struct("FaultyDir")
            .field("counts", &fs.counts)
            .field("down", &fs.down)
            .finish_non_exhaustive()
    }
}

impl FaultyDir {
    /// An empty file system holding only `/`.
    pub fn new() -> Arc<FaultyDir> {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        Arc::new(FaultyDir {
            fs: Arc::new(Mutex::new(Fs {
                nodes,
                next_ino: ROOT + 1,
                counts: CallCounts::default(),
                plan: Plan::None,
                fired: false,
                down: false,
                boot: 0,
                locks: HashSet::new(),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Fs> {
        // A test that panicked while holding the lock has failed already.
        self.fs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls since the last reset.
    pub fn counts(&self) -> CallCounts {
        self.lock().counts
    }

    pub fn reset_counts(&self) {
        self.lock().counts = CallCounts::default();
    }

    /// Resets the counts and makes call `n` (from 0) of those `fault` applies to fail once.
    pub fn fail(&self, fault: Fault, n: u64) {
        let mut fs = self.lock();
        fs.counts = CallCounts::default();
        fs.plan = Plan::Fail(fault, n);
        fs.fired = false;
    }

    /// Resets the counts and cuts the power just before call `n` (from 0).
    pub fn crash_at(&self, n: u64, mode: CrashMode) {
        let mut fs = self.lock();
        fs.counts = CallCounts::default();
        fs.plan = Plan::Crash(n, mode);
        fs.fired = false;
    }

    /// Whether the planned fault or crash happened.
    pub fn fired(&self) -> bool {
        self.lock().fired
    }

    /// Drops a plan that has not fired.
    pub fn disarm(&self) {
        self.lock().plan = Plan::None;
    }

    /// Cuts the power now.
    pub fn crash(&self, mode: CrashMode) {
        self.lock().crash(mode);
    }

    /// Powers the file system back on after a crash; handles opened before it stay dead.
    pub fn restart(&self) {
        self.lock().down = false;
    }

    fn handle(&self, ino: u64, boot: u64) -> Box<dyn DirFile> {
        Box::new(FaultyFile {
            fs: self.fs.clone(),
            ino,
            boot,
        })
    }

    /// Runs `open` as one call and hands out a handle on the inode it names.
    fn open_file(
        &self,
        open: impl FnOnce(&mut Fs) -> io::Result<u64>,
    ) -> io::Result<Box<dyn DirFile>> {
        let (ino, boot) = self.call(|fs| Ok((open(fs)?, fs.boot)))?;
        Ok(self.handle(ino, boot))
    }

    /// Runs `f` as one call that is not an append or a sync.
    fn call<T>(&self, f: impl FnOnce(&mut Fs) -> io::Result<T>) -> io::Result<T> {
        let mut fs = self.lock();
        fs.enter(CallKind::Other)?;
        f(&mut fs)
    }
}

/// An open file of a [`FaultyDir`].
struct FaultyFile {
    fs: Arc<Mutex<Fs>>,
    ino: u64,
    /// The boot it was opened in: a crash kills it.
    boot: u64,
}

impl fmt::Debug for FaultyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyFile")
            .field("ino", &self.ino)
            .finish()
    }
}

impl FaultyFile {
    fn call<T>(
        &self,
        kind: CallKind,
        f: impl FnOnce(&mut FileNode, Option<Fault>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut fs = self.fs.lock().unwrap_or_else(|e| e.into_inner());
        if fs.boot != self.boot {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let fault = fs.enter(kind)?;
        f(fs.file_mut(self.ino)?, fault)
    }
}

impl DirFile for FaultyFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.call(CallKind::Append, |f, fault| {
            if fault == Some(Fault::ShortWrite) {
                f.data.extend_from_slice(&bytes[..bytes.len() / 2]);
                return Err(Fault::ShortWrite.error());
            }
            f.data.extend_from_slice(bytes);
            Ok(())
        })
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.call(CallKind::Other, |f, _| {
            f.data.resize(len as usize, 0);
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.call(CallKind::Other, |f, _| Ok(f.data.len() as u64))
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.sync_all()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.call(CallKind::Sync, |f, fault| {
            if fault == Some(Fault::SyncFails) {
                f.data = f.durable.clone();
                return Err(Fault::SyncFails.error());
            }
            f.durable = f.data.clone();
            Ok(())
        })
    }
}

/// A lock held on a [`FaultyDir`] inode; a crash releases it.
struct FaultyLock {
    fs: Arc<Mutex<Fs>>,
    ino: u64,
    boot: u64,
}

impl fmt::Debug for FaultyLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyLock")
            .field("ino", &self.ino)
            .finish()
    }
}

impl Drop for FaultyLock {
    fn drop(&mut self) {
        let mut fs = self.fs.lock().unwrap_or_else(|e| e.into_inner());
        if fs.boot == self.boot {
            fs.locks.remove(&self.ino);
        }
    }
}

/// Mapped bytes of a [`FaultyDir`] file: a copy, in words so that it is aligned for every
/// element type a column casts it to (as a page-aligned mapping is).
#[derive(Debug)]
struct Copied {
    words: Vec<u64>,
    len: usize,
}

impl Copied {
    fn new(bytes: &[u8]) -> Copied {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Copied {
            words,
            len: bytes.len(),
        }
    }
}

impl Deref for Copied {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

impl Dir for FaultyDir {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DirFile>> {
        self.open_file(|fs| fs.new_file(path, true))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DirFile>> {
        self.open_file(|fs| fs.new_file(path, false))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DirFile>> {
        self.open_file(|fs| {
            let ino = fs.lookup(path)?;
            fs.file_mut(ino)?;
            Ok(ino)
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.call(|fs| {
            let ino = fs.lookup(path)?;
            Ok(fs.file_mut(ino)?.data.clone())
        })
    }

    fn map(&self, path: &Path, _access: Access) -> io::Result<(Box<dyn MappedBytes>, FileId)> {
        self.call(|fs| {
            let ino = fs.lookup(path)?;
            let bytes = Copied::new(&fs.file_mut(ino)?.data);
            Ok((Box::new(bytes) as Box<dyn MappedBytes>, (0, ino)))
        })
    }

    fn stat(&self, path: &Path) -> io::Result<Stat> {
        self.call(|fs| {
            let ino = fs.lookup(path)?;
            let (len, is_file) = match &fs.nodes[&ino] {
                Node::File(f) => (f.data.len() as u64, true),
                Node::Dir(d) => (d.entries.len() as u64, false),
            };
            Ok(Stat {
                len,
                is_file,
                id: (0, ino),
            })
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.call(|fs| {
            let ino = fs.lookup(dir)?;
            let d = fs.dir(ino)?;
            Ok(d.entries
                .iter()
                .map(|(name, ino)| DirEntry {
                    name: name.clone(),
                    is_file: matches!(fs.nodes.get(ino), Some(Node::File(_))),
                })
                .collect())
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.call(|fs| {
            let (to_parent, to_name) = fs.parent(to)?;
            if let Some(existing) = fs.dir(to_parent)?.entries.get(&to_name)
                && matches!(fs.nodes.get(existing), Some(Node::Dir(_)))
            {
                return Err(io::Error::from(io::ErrorKind::IsADirectory));
            }
            let (from_parent, from_name) = fs.parent(from)?;
            let ino = *fs
                .dir(from_parent)?
                .entries
                .get(&from_name)
                .ok_or_else(not_found)?;
            if from_parent == to_parent {
                let edits = vec![(from_name, None), (to_name, Some(ino))];
                fs.dir_mut(to_parent)?.change(edits);
            } else {
                fs.dir_mut(from_parent)?.change(vec![(from_name, None)]);
                fs.dir_mut(to_parent)?.change(vec![(to_name, Some(ino))]);
            }
            Ok(())
        })
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.call(|fs| {
            let ino = fs.lookup(from)?;
            fs.file_mut(ino)?;
            let (parent, name) = fs.parent(to)?;
            let d = fs.dir_mut(parent)?;
            if d.entries.contains_key(&name) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            d.change(vec![(name, Some(ino))]);
            Ok(())
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.call(|fs| fs.unlink(path, false).map(drop))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.call(|fs| fs.new_dir(path))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.call(|fs| {
            let mut at = PathBuf::from("/");
            for name in names(path) {
                at.push(name);
                match fs.lookup(&at) {
                    Ok(ino) => {
                        fs.dir(ino)?;
                    }
                    Err(_) => fs.new_dir(&at)?,
                }
            }
            Ok(())
        })
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.call(|fs| {
            let ino = fs.lookup(path)?;
            if !fs.dir(ino)?.entries.is_empty() {
                return Err(io::Error::from(io::ErrorKind::DirectoryNotEmpty));
            }
            fs.unlink(path, true).map(drop)
        })
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        // The subtree goes with its entry; a crash before the parent is synced brings it back.
        self.call(|fs| fs.unlink(path, true).map(drop))
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        self.call(|fs| {
            fs.lookup(path)?;
            let mut out = PathBuf::from("/");
            out.extend(names(path));
            Ok(out)
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut fs = self.lock();
        if fs.enter(CallKind::Sync)? == Some(Fault::SyncFails) {
            return Err(Fault::SyncFails.error());
        }
        let ino = fs.lookup(dir)?;
        let d = fs.dir_mut(ino)?;
        d.durable = d.entries.clone();
        d.changes.clear();
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let mut fs = self.lock();
        fs.enter(CallKind::Other)?;
        let ino = match fs.lookup(path) {
            Ok(ino) => ino,
            Err(_) => fs.new_file(path, true)?,
        };
        if !fs.locks.insert(ino) {
            return Ok(None);
        }
        Ok(Some(Box::new(FaultyLock {
            fs: self.fs.clone(),
            ino,
            boot: fs.boot,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(io: &FaultyDir, path: &str, bytes: &[u8], sync: bool) -> Box<dyn DirFile> {
        let mut f = io.create_new(Path::new(path)).unwrap();
        f.append(bytes).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
        f
    }

    #[test]
    fn a_crash_keeps_only_what_was_synced() {
        let io = FaultyDir::new();
        io.create_dir(Path::new("/d")).unwrap();
        io.sync_dir(Path::new("/")).unwrap();
        write(&io, "/d/synced", b"abcd", true);
        io.sync_dir(Path::new("/d")).unwrap();
        let mut f = write(&io, "/d/unsynced-entry", b"xy", true);
        io.rename(Path::new("/d/synced"), Path::new("/d/renamed"))
            .unwrap();
        io.crash(CrashMode::DropUnsynced);
        assert!(f.append(b"z").is_err(), "a handle outlives the crash");
        assert!(io.read(Path::new("/d/renamed")).is_err(), "powered off");
        io.restart();
        assert_eq!(io.read(Path::new("/d/synced")).unwrap(), b"abcd");
        assert!(io.stat(Path::new("/d/unsynced-entry")).is_err());
        assert!(io.stat(Path::new("/d/renamed")).is_err());
    }

    #[test]
    fn torn_and_reordered_crashes() {
        let io = FaultyDir::new();
        let mut f = write(&io, "/log", b"1234", true);
        f.append(b"5678").unwrap();
        write(&io, "/a", b"a", true);
        write(&io, "/b", b"b", true);
        io.sync_dir(Path::new("/")).unwrap();
        io.remove_file(Path::new("/a")).unwrap();
        io.rename(Path::new("/b"), Path::new("/c")).unwrap();
        io.crash(CrashMode::KeepHalfUnsynced);
        io.restart();
        assert_eq!(io.read(Path::new("/log")).unwrap(), b"123456");
        assert!(io.stat(Path::new("/a")).is_ok() && io.stat(Path::new("/b")).is_ok());
        io.remove_file(Path::new("/a")).unwrap();
        io.rename(Path::new("/b"), Path::new("/c")).unwrap();
        io.crash(CrashMode::KeepLastDirChange);
        io.restart();
        // Only the rename survived.
        assert!(io.stat(Path::new("/a")).is_ok() && io.stat(Path::new("/c")).is_ok());
        assert!(io.stat(Path::new("/b")).is_err());
    }

    #[test]
    fn unlinked_files_stay_readable_and_locks_are_per_handle() {
        let io = FaultyDir::new();
        let (map, _) = {
            write(&io, "/f", b"bytes", true);
            io.map(Path::new("/f"), Access::Scan).unwrap()
        };
        io.remove_file(Path::new("/f")).unwrap();
        assert_eq!(&map[..], b"bytes");
        let lock = io.try_lock(Path::new("/LOCK")).unwrap();
        assert!(lock.is_some());
        assert!(io.try_lock(Path::new("/LOCK")).unwrap().is_none());
        drop(lock);
        let held = io.try_lock(Path::new("/LOCK")).unwrap();
        assert!(held.is_some());
        io.crash(CrashMode::DropUnsynced);
        io.restart();
        assert!(
            io.try_lock(Path::new("/LOCK")).unwrap().is_some(),
            "a crash frees locks"
        );
    }

    #[test]
    fn faults_fire_once_on_the_chosen_call() {
        let io = FaultyDir::new();
        let mut f = write(&io, "/f", b"", false);
        io.fail(Fault::ShortWrite, 1);
        f.append(b"ab").unwrap();
        let e = f.append(b"cdef").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENOSPC));
        assert!(io.fired());
        f.append(b"g").unwrap();
        assert_eq!(io.read(Path::new("/f")).unwrap(), b"abcdg");
        io.fail(Fault::SyncFails, 0);
        assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(EIO));
        // The failed sync lost the unsynced bytes; the retry saves nothing.
        f.sync_all().unwrap();
        assert_eq!(io.read(Path::new("/f")).unwrap(), b"");
        assert_eq!(
            io.counts(),
            CallCounts {
                calls: 3,
                appends: 0,
                syncs: 2
            }
        );
    }
}
