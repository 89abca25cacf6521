//! The file system a [`FaultyDir`](super::FaultyDir) keeps in memory: inodes, directory
//! entries with what of them is durable, and the plan of the next fault or crash.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path};

use super::{CallCounts, CallKind, CrashMode, EIO, Fault};

#[derive(Debug, Clone)]
pub(super) struct FileNode {
    pub(super) data: Vec<u8>,
    /// The bytes as of the last successful sync: what a crash leaves.
    pub(super) durable: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct DirNode {
    pub(super) entries: BTreeMap<OsString, u64>,
    /// The entries as of the last `sync_dir`: what a crash leaves.
    pub(super) durable: BTreeMap<OsString, u64>,
    /// The changes since the last `sync_dir`, in order, each one call's edits (a name
    /// pointed at an inode, or removed).
    pub(super) changes: Vec<Vec<(OsString, Option<u64>)>>,
}

impl DirNode {
    pub(super) fn change(&mut self, edits: Vec<(OsString, Option<u64>)>) {
        apply(&mut self.entries, &edits);
        self.changes.push(edits);
    }
}

pub(super) fn apply(entries: &mut BTreeMap<OsString, u64>, edits: &[(OsString, Option<u64>)]) {
    for (name, ino) in edits {
        match ino {
            Some(ino) => entries.insert(name.clone(), *ino),
            None => entries.remove(name),
        };
    }
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    File(FileNode),
    Dir(DirNode),
}

pub(super) const ROOT: u64 = 0;

/// What the test asked for next.
#[derive(Debug, Clone, Copy)]
pub(super) enum Plan {
    None,
    /// Fail the `n`-th call (from 0, counted among those the fault applies to).
    Fail(Fault, u64),
    /// Cut the power before the `n`-th call (from 0, among all calls).
    Crash(u64, CrashMode),
}

pub(super) struct Fs {
    /// Inodes by number; never freed, so an open handle keeps an unlinked file alive.
    pub(super) nodes: HashMap<u64, Node>,
    pub(super) next_ino: u64,
    pub(super) counts: CallCounts,
    pub(super) plan: Plan,
    pub(super) fired: bool,
    /// The power is off: every call fails until [`FaultyDir::restart`].
    pub(super) down: bool,
    /// Bumped by every crash; handles opened before it fail.
    pub(super) boot: u64,
    /// Inodes whose advisory lock is held.
    pub(super) locks: HashSet<u64>,
}

pub(super) fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

pub(super) fn names(path: &Path) -> Vec<OsString> {
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
    pub(super) fn enter(&mut self, kind: CallKind) -> io::Result<Option<Fault>> {
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

    pub(super) fn crash(&mut self, mode: CrashMode) {
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

    pub(super) fn dir(&self, ino: u64) -> io::Result<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(io::Error::from(io::ErrorKind::NotADirectory)),
            None => Err(not_found()),
        }
    }

    pub(super) fn dir_mut(&mut self, ino: u64) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(io::Error::from(io::ErrorKind::NotADirectory)),
            None => Err(not_found()),
        }
    }

    pub(super) fn file_mut(&mut self, ino: u64) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(io::Error::from(io::ErrorKind::IsADirectory)),
            None => Err(not_found()),
        }
    }

    pub(super) fn lookup(&self, path: &Path) -> io::Result<u64> {
        names(path).iter().try_fold(ROOT, |ino, name| {
            self.dir(ino)?
                .entries
                .get(name)
                .copied()
                .ok_or_else(not_found)
        })
    }

    /// The directory that holds `path`'s last name, and that name.
    pub(super) fn parent(&self, path: &Path) -> io::Result<(u64, OsString)> {
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

    pub(super) fn add(&mut self, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    pub(super) fn new_file(&mut self, path: &Path, exclusive: bool) -> io::Result<u64> {
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

    pub(super) fn new_dir(&mut self, path: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(path)?;
        if self.dir(parent)?.entries.contains_key(&name) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let ino = self.add(Node::Dir(DirNode::default()));
        self.dir_mut(parent)?.change(vec![(name, Some(ino))]);
        Ok(())
    }

    pub(super) fn unlink(&mut self, path: &Path, want_dir: bool) -> io::Result<u64> {
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
