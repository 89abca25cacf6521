//! Files: the WAL writer and the one WAL replay, manifest install and read, and the writer of
//! immutable files.

pub(crate) mod file_writer;
pub(crate) mod manifest;
pub(crate) mod wal;
