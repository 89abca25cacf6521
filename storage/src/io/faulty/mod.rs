//! [`FaultyDir`], a test tool: an in-memory POSIX-like file system that fails the I/O call
//! chosen by a test, and can cut the power.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::dir::{Access, Dir, DirEntry, DirFile, FileId, LockGuard, MappedBytes, Stat};

mod model;
#[cfg(test)]
mod tests;

use model::{DirNode, FileNode, Fs, Node, Plan, ROOT, names, not_found};

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
