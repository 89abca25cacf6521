//! The writer of every immutable file (segment vectors and metadata, tombstones).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::error::IoError;
use crate::format::codec::{self, FileKind};

/// Streams a file body, then its footer, then fsyncs it.
pub(crate) struct FileWriter {
    path: PathBuf,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl FileWriter {
    /// Creates `path`; fails if it exists.
    pub fn create(path: PathBuf) -> Result<Self, IoError> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| IoError::at(&path, "create", e))?;
        Ok(Self {
            path,
            out: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| IoError::at(&self.path, "write", e))
    }

    /// Writes the footer and makes the file durable.
    pub fn finish(mut self, kind: FileKind) -> Result<PathBuf, IoError> {
        let footer = codec::footer(kind, self.len, self.crc.clone().finalize());
        self.out
            .write_all(&footer)
            .map_err(|e| IoError::at(&self.path, "write", e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| IoError::at(&self.path, "write", e.into_error()))?;
        file.sync_all()
            .map_err(|e| IoError::at(&self.path, "fsync", e))?;
        Ok(self.path)
    }
}
