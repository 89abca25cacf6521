//! Installing and reading the manifest: `MANIFEST-<n>` written and fsynced, then `CURRENT`
//! atomically renamed onto it, each step made durable with a directory fsync.

use std::path::Path;

use crate::error::{CorruptionError, IoError, OpenError};
use crate::format::file_name::FileName;
use crate::format::manifest::{Manifest, manifest_file_name};
use crate::io::dir::Dir;

impl Manifest {
    /// Writes `MANIFEST-<number>` and atomically points `CURRENT` at it.
    pub(crate) fn install(&self, io: &dyn Dir, dir: &Path, number: u64) -> Result<(), IoError> {
        let name = manifest_file_name(number);
        write_durable(io, &dir.join(&name), &self.encode())?;
        // Every file the new manifest references (segments, tombstones, the WAL) must be
        // durably linked into the directory before CURRENT can name it.
        sync_dir(io, dir)?;
        let tmp = dir.join("CURRENT.tmp");
        write_durable(io, &tmp, format!("{name}\n").as_bytes())?;
        let current = dir.join("CURRENT");
        io.rename(&tmp, &current)
            .map_err(|e| IoError::at(&current, "rename onto", e))?;
        sync_dir(io, dir)
    }
}

/// Reads `CURRENT` and the manifest it names: `(manifest number, manifest)`.
pub(crate) fn read_current(io: &dyn Dir, dir: &Path) -> Result<(u64, Manifest), OpenError> {
    let current = dir.join("CURRENT");
    let text = match io.read(&current) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OpenError::NotFound {
                path: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(IoError::at(&current, "read", e).into()),
    };
    let number = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .and_then(FileName::parse)
        .and_then(|name| match name {
            FileName::Manifest(n) => Some(n),
            _ => None,
        })
        .ok_or_else(|| CorruptionError::new(&current, 0, "CURRENT does not name a manifest"))?;
    let path = dir.join(manifest_file_name(number));
    let bytes = io.read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            OpenError::Corruption(CorruptionError::new(
                &current,
                0,
                format!("CURRENT names {}, which is missing", path.display()),
            ))
        } else {
            IoError::at(&path, "read", e).into()
        }
    })?;
    Ok((number, Manifest::decode(&bytes, &path)?))
}

/// Creates (or replaces) `path` with `bytes` and fsyncs it.
pub(crate) fn write_durable(io: &dyn Dir, path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let mut f = io
        .create(path)
        .map_err(|e| IoError::at(path, "create", e))?;
    f.append(bytes).map_err(|e| IoError::at(path, "write", e))?;
    f.sync_all().map_err(|e| IoError::at(path, "fsync", e))
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(io: &dyn Dir, dir: &Path) -> Result<(), IoError> {
    io.sync_dir(dir)
        .map_err(|e| IoError::at(dir, "fsync directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::tests::sample;
    use crate::io::dir::FsDir;

    #[test]
    fn install_swaps_current() {
        let d = tempfile::tempdir().unwrap();
        let mut m = sample();
        m.install(&FsDir, d.path(), 1).unwrap();
        assert_eq!(read_current(&FsDir, d.path()).unwrap(), (1, m.clone()));
        m.next_id = 100;
        m.install(&FsDir, d.path(), 2).unwrap();
        assert_eq!(read_current(&FsDir, d.path()).unwrap(), (2, m));
        assert!(!d.path().join("CURRENT.tmp").exists());
        std::fs::write(d.path().join("CURRENT"), b"garbage").unwrap();
        assert!(matches!(
            read_current(&FsDir, d.path()),
            Err(OpenError::Corruption(_))
        ));
    }
}
