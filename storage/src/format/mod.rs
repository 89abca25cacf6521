//! Bytes only, no I/O: the codec and footer every file ends with, and the one `FileName`
//! enum that every file name is built from and parsed by.

pub(crate) mod codec;
pub(crate) mod file_name;
