//! The I/O seam: every file operation storage performs goes through a [`Dir`], so that tests
//! can make any one of them fail, or cut the power after it ([`FaultyDir`](super::FaultyDir)).
//! [`FsDir`] is the real file system.

use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `(device, inode)`: tells a file from another that later took the same name.
pub type FileId = (u64, u64);

/// Bytes of a file mapped (or read) whole; they stay valid after the file is unlinked.
pub trait MappedBytes: Deref<Target = [u8]> + Send + Sync + Debug {}
impl<T: Deref<Target = [u8]> + Send + Sync + Debug> MappedBytes for T {}

/// Holds an advisory lock until dropped.
pub type LockGuard = Box<dyn Debug + Send + Sync>;

/// How a mapping will be read (a hint; [`FsDir`] passes it to `madvise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read in order or whole: the kernel's default read-ahead.
    Scan,
    /// Scattered reads of a few rows: read-around would load far more pages than used.
    Random,
}

/// What [`Dir::stat`] tells about a path (symbolic links followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub len: u64,
    pub is_file: bool,
    pub id: FileId,
}

/// One entry of [`Dir::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: OsString,
    /// A regular file (not a directory, not a symbolic link).
    pub is_file: bool,
}

/// An open file that storage writes: bytes always go at its end.
pub trait DirFile: Send + Sync + Debug {
    /// Writes all of `bytes` at the end of the file.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes (later appends go after them).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Bytes in the file.
    fn size(&self) -> io::Result<u64>;
    /// `fdatasync`: the file's bytes are durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// `fsync`: the file's bytes and metadata are durable.
    fn sync_all(&mut self) -> io::Result<()>;
}

/// The file operations storage uses, on full paths. A directory entry (a create, rename,
/// link or removal) is durable only once its directory is synced with [`sync_dir`](Self::sync_dir).
pub trait Dir: Send + Sync + Debug {
    /// Creates `path` for writing; fails with `AlreadyExists` if it exists (`O_EXCL`).
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DirFile>>;
    /// Creates `path` for writing, truncating it if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn DirFile>>;
    /// Opens an existing file to append to it.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DirFile>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Maps `path` read-only (an empty file maps to no bytes), with its identity.
    fn map(&self, path: &Path, access: Access) -> io::Result<(Box<dyn MappedBytes>, FileId)>;
    fn stat(&self, path: &Path) -> io::Result<Stat>;
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The absolute path with `.`, `..` and symbolic links resolved; fails if it is missing.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// Makes the entries of directory `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive advisory lock on `path` (created if missing) without waiting:
    /// `None` when another handle holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsDir;

impl FsDir {
    /// The shared handle [`StoreOptions`](crate::StoreOptions) default to.
    pub fn shared() -> Arc<dyn Dir> {
        Arc::new(FsDir)
    }
}

/// The writer lock of an [`FsDir`]: the locked file, unlocked when dropped by the process that
/// took it.
#[derive(Debug)]
struct FsLock {
    file: File,
    pid: u32,
}

impl Drop for FsLock {
    fn drop(&mut self) {
        // Unlocked explicitly: the `flock` belongs to the open file, which a child spawned
        // meanwhile by any thread shares until it execs, so closing our descriptor alone could
        // leave the lock held and make a writer opened right after this get `Locked`. A forked
        // child's copy unlocks nothing: the lock is its parent's.
        if std::process::id() == self.pid {
            let _ = self.file.unlock();
        }
    }
}

#[derive(Debug)]
struct FsFile(File);

impl DirFile for FsFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.seek(SeekFrom::Start(len)).map(drop)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Dir for FsDir {
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DirFile>> {
        let file = File::options().write(true).create_new(true).open(path)?;
        Ok(Box::new(FsFile(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DirFile>> {
        Ok(Box::new(FsFile(File::create(path)?)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DirFile>> {
        let mut file = File::options().write(true).open(path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Box::new(FsFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    #[allow(unsafe_code)]
    fn map(&self, path: &Path, access: Access) -> io::Result<(Box<dyn MappedBytes>, FileId)> {
        use std::os::unix::fs::MetadataExt;
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let id = (meta.dev(), meta.ino());
        if meta.len() == 0 {
            return Ok((Box::new(Vec::new()), id));
        }
        // SAFETY: segment files are immutable once written: hivlp never modifies or truncates
        // a file it has referenced from a manifest (it only deletes them, which keeps the
        // mapping valid on unix). Modification by another program is outside the contract
        // documented in FORMAT.md.
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        if access == Access::Random {
            // Advice is a hint; ignoring a refusal is safe.
            let _ = map.advise(memmap2::Advice::Random);
        }
        Ok((Box::new(map), id))
    }

    fn stat(&self, path: &Path) -> io::Result<Stat> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(Stat {
            len: meta.len(),
            is_file: meta.is_file(),
            id: (meta.dev(), meta.ino()),
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        std::fs::read_dir(dir)?
            .map(|entry| {
                let entry = entry?;
                Ok(DirEntry {
                    name: entry.file_name(),
                    is_file: entry.file_type().is_ok_and(|t| t.is_file()),
                })
            })
            .collect()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FsLock {
                file,
                pid: std::process::id(),
            }))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
