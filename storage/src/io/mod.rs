//! Files: the [`Dir`] seam every file operation goes through ([`FsDir`] for real use,
//! [`FaultyDir`] to test failures and power loss), the WAL writer and the one WAL replay,
//! manifest install and read, and the writer of immutable files.

pub(crate) mod dir;
pub(crate) mod faulty;
pub(crate) mod file_writer;
pub(crate) mod manifest;
pub(crate) mod wal;

pub use dir::{Access, Dir, DirEntry, DirFile, FileId, FsDir, LockGuard, MappedBytes, Stat};
pub use faulty::{CallCounts, CrashMode, Fault, FaultyDir};
