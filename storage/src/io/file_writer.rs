//! The writer of every immutable file (segment vectors and metadata, tombstones).

use std::path::PathBuf;

use crate::error::IoError;
use crate::format::codec::{self, FileKind};
use crate::io::dir::{Dir, DirFile};

/// Bytes gathered before one append: large writes, few calls.
const BUFFER_BYTES: usize = 1 << 20;

/// Streams a file body, then its footer, then fsyncs it.
pub(crate) struct FileWriter {
    path: PathBuf,
    out: Box<dyn DirFile>,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl FileWriter {
    /// Creates `path`; fails if it exists.
    pub fn create(io: &dyn Dir, path: PathBuf) -> Result<Self, IoError> {
        let out = io
            .create_new(&path)
            .map_err(|e| IoError::at(&path, "create", e))?;
        Ok(Self {
            path,
            out,
            buf: Vec::with_capacity(BUFFER_BYTES),
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        if self.buf.len() + bytes.len() > BUFFER_BYTES {
            self.drain()?;
        }
        if bytes.len() >= BUFFER_BYTES {
            return self
                .out
                .append(bytes)
                .map_err(|e| IoError::at(&self.path, "write", e));
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn drain(&mut self) -> Result<(), IoError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.out
            .append(&self.buf)
            .map_err(|e| IoError::at(&self.path, "write", e))?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the footer and makes the file durable.
    pub fn finish(mut self, kind: FileKind) -> Result<PathBuf, IoError> {
        let footer = codec::footer(kind, self.len, self.crc.clone().finalize());
        self.buf.extend_from_slice(&footer);
        self.drain()?;
        self.out
            .sync_all()
            .map_err(|e| IoError::at(&self.path, "fsync", e))?;
        Ok(self.path)
    }
}
