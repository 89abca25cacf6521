//! Bytes only, no I/O: the codec and footer every file ends with, the one `FileName` enum
//! that every file name is built from and parsed by, the manifest encoding, WAL record
//! encoding and decoding, segment descriptors and partition files.

pub(crate) mod codec;
pub(crate) mod field;
pub(crate) mod field_column;
pub(crate) mod file_name;
pub(crate) mod manifest;
pub(crate) mod partitions;
pub(crate) mod segment;
pub(crate) mod wal;
