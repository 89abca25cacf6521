//! What a directory holds, and removing the files of ours that no manifest references.

use std::path::Path;

use super::Writer;
use crate::error::IoError;
use crate::format::file_name::FileName;
use crate::io::dir::{Dir, FsDir};
use crate::io::manifest::sync_dir;

/// What a directory holds, for callers that open a database or create it if absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// A database (`CURRENT` exists): open it.
    Database,
    /// Nothing, or only hivlp files left by a create that never finished: create there.
    Empty,
    /// Files that are not hivlp's: not a database, and perhaps not meant to become one.
    Other,
}

/// Tells what `dir` holds (a missing or unreadable directory is [`Occupancy::Empty`]; creating
/// there reports the actual problem).
pub fn occupancy(dir: &Path) -> Occupancy {
    let io = FsDir;
    if io.stat(&dir.join(FileName::Current.to_string())).is_ok() {
        return Occupancy::Database;
    }
    let Ok(entries) = io.list(dir) else {
        return Occupancy::Empty;
    };
    let ours = |name: &std::ffi::OsStr| name.to_str().and_then(FileName::parse).is_some();
    if entries.iter().all(|e| ours(&e.name)) {
        Occupancy::Empty
    } else {
        Occupancy::Other
    }
}

/// Removes files of ours that the current manifest does not reference: leftovers of an
/// interrupted flush, compaction or create. Only exact hivlp file names are touched.
pub(super) fn remove_orphans(io: &dyn Dir, dir: &Path, w: &Writer) -> Result<(), IoError> {
    let manifest = &w.manifest;
    let wanted = |id: u64| manifest.segments.iter().find(|s| s.id == id);
    remove_files(io, dir, |name| match name {
        FileName::Current | FileName::Lock => false,
        FileName::CurrentTmp => true,
        FileName::Manifest(n) => n != w.manifest_number,
        FileName::Wal(n) => n < manifest.log_number,
        FileName::SegmentMeta(id)
        | FileName::SegmentVectors { id, .. }
        | FileName::FieldDirectory(id)
        | FileName::FieldColumn { id, .. }
        | FileName::SegmentPartitions { id, .. } => wanted(id).is_none(),
        FileName::Tombstones { id, generation } => {
            wanted(id).is_none_or(|info| info.del_gen != generation)
        }
    })
}

/// Removes the regular files of `dir` whose name is one of hivlp's and that `doomed` picks,
/// then makes the removals durable. Anything else (other names, directories) is left alone.
pub(super) fn remove_files(
    io: &dyn Dir,
    dir: &Path,
    doomed: impl Fn(FileName) -> bool,
) -> Result<(), IoError> {
    let mut removed = false;
    for entry in io.list(dir).map_err(|e| IoError::at(dir, "list", e))? {
        let Some(name) = entry.name.to_str().and_then(FileName::parse) else {
            continue;
        };
        if !doomed(name) || !entry.is_file {
            continue;
        }
        let path = dir.join(&entry.name);
        io.remove_file(&path)
            .map_err(|e| IoError::at(&path, "remove", e))?;
        removed = true;
    }
    if removed {
        sync_dir(io, dir)?;
    }
    Ok(())
}
