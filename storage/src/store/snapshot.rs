//! Snapshot: a consistent copy of the database into a new directory, linked or copied from
//! what the handle maps.

use std::path::{Path, PathBuf};

use super::Store;
use super::segment_writer::{
    live_rows, write_field_files, write_partition_file, write_segment, write_tombstones,
};
use crate::data::source::View;
use crate::error::{CommitError, IoError, SnapshotError};
use crate::format::manifest::Manifest;
use crate::format::segment::{FIELD_COLUMNS, partition_file_name};
use crate::io::dir::{Dir, FileId};
use crate::io::manifest::sync_dir;
use crate::schema::Modality;

impl Store {
    /// Writes a consistent copy of the database as it is at this moment into `dest`, a new
    /// directory (missing parents are created) that must not exist and must not lie inside
    /// the database directory. The copy is built from what this handle holds open: segment
    /// files are hard-linked when the link is to the very file this handle maps (copied from
    /// the mapping otherwise, e.g. after a writer compacted it away or across file systems),
    /// field columns and tombstones are written from memory, and the memtable becomes a
    /// segment of the copy.
    /// Nothing is left behind on failure. Readers are never blocked; writers only while the
    /// state is captured.
    pub fn snapshot(&self, dest: &Path) -> Result<(), SnapshotError> {
        self.check_process().map_err(CommitError::from)?;
        let io = self.io();
        let target = SnapshotTarget::resolve(io, &self.dir, dest)?;
        let (view, mut manifest) = {
            let w = self.writer.lock();
            if let Some(why) = &w.poisoned {
                return Err(CommitError::Poisoned(why.clone()).into());
            }
            let mut m = w.manifest.clone();
            m.next_id = self.next_id();
            m.properties = (*w.properties).clone();
            (w.view(&self.schema), m)
        };
        target.create(io)?;
        let result = self.write_snapshot(&target.path, &view, &mut manifest);
        if result.is_err() {
            target.remove(io);
        }
        result
    }

    fn write_snapshot(
        &self,
        dest: &Path,
        view: &View,
        manifest: &mut Manifest,
    ) -> Result<(), SnapshotError> {
        let io = self.io();
        let mut segments = Vec::new();
        let mut mem_rows = Vec::new();
        for s in view.sources() {
            let Some(seg) = s.segment() else {
                mem_rows.extend(live_rows(std::slice::from_ref(s)));
                continue;
            };
            for (path, identity, bytes) in seg.mapped_files() {
                let Some(name) = path.file_name() else {
                    continue;
                };
                link_or_copy(io, path, identity, bytes, &dest.join(name))?;
            }
            // Field columns are written anew from the metadata this handle maps (they are
            // a function of it), so a segment whose column files were never mapped, or that
            // predates them, needs nothing from files that may have been deleted since.
            let metadata = (0..s.rows()).map(|r| s.meta(r).metadata);
            write_field_files(io, dest, seg.id(), s.rows(), metadata, &mut Vec::new())?;
            // Partitions too: the index this handle read is what the files held.
            for m in Modality::ALL {
                if let Some(index) = seg.partitions(m) {
                    let path = dest.join(partition_file_name(seg.id(), m));
                    write_partition_file(io, path, index)?;
                }
            }
            let mut info = seg.info().clone();
            info.modalities |= FIELD_COLUMNS;
            info.del_gen = 0;
            if s.deleted().count_ones() > 0 {
                write_tombstones(io, dest, info.id, 1, s.deleted())?;
                info.del_gen = 1;
            }
            segments.push(info);
        }
        if !mem_rows.is_empty() {
            let id = manifest.next_segment_id;
            manifest.next_segment_id += 1;
            let min_rows = self.options.partition_min_rows;
            let (info, _) = write_segment::<SnapshotError>(
                io,
                dest,
                id,
                &self.schema,
                &mem_rows,
                None,
                min_rows,
            )?;
            segments.push(info);
        }
        manifest.segments = segments;
        manifest.log_number = 1;
        manifest.next_seq = 1;
        manifest.install(io, dest, 1)?;
        Ok(())
    }
}

/// Puts the segment file this handle maps as `bytes` at `to`, in a directory the snapshot
/// created: a hard link when `from` is still that very file, else a fresh copy of the bytes.
/// Never writes through an existing name, so it cannot truncate a live file.
fn link_or_copy(
    io: &dyn Dir,
    from: &Path,
    identity: FileId,
    bytes: &[u8],
    to: &Path,
) -> Result<(), IoError> {
    if io.hard_link(from, to).is_ok() {
        let linked = io.stat(to).map_err(|e| IoError::at(to, "stat", e))?;
        if linked.id == identity {
            return Ok(());
        }
        // `from` names another file now: the link is not ours to keep.
        io.remove_file(to)
            .map_err(|e| IoError::at(to, "remove", e))?;
    }
    let mut file = io
        .create_new(to)
        .map_err(|e| IoError::at(to, "create", e))?;
    file.append(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| IoError::at(to, "copy to", e))
}

/// Where a snapshot goes: checked before anything is created, then created exclusively.
struct SnapshotTarget {
    /// The destination with its existing ancestors canonicalised.
    path: PathBuf,
    /// Ancestors of `path` that do not exist yet, outermost first.
    missing_parents: Vec<PathBuf>,
}

impl SnapshotTarget {
    /// Refuses an empty destination, one inside (or equal to) the database directory, and one
    /// whose not-yet-existing part climbs with `..` (it could lead anywhere).
    fn resolve(io: &dyn Dir, db_dir: &Path, dest: &Path) -> Result<SnapshotTarget, SnapshotError> {
        let invalid = |reason: &str| SnapshotError::InvalidDestination {
            path: dest.to_path_buf(),
            reason: reason.to_owned(),
        };
        if dest.as_os_str().is_empty() {
            return Err(invalid("the path is empty"));
        }
        let db = io
            .canonicalize(db_dir)
            .map_err(|e| IoError::at(db_dir, "resolve", e))?;
        // The deepest ancestor that exists, canonicalised, then the missing names as given
        // (they name nothing yet, so no link can redirect them).
        let mut existing = dest;
        let mut missing = Vec::new();
        let mut path = loop {
            // Only a missing name is part of what to create: any other failure to resolve
            // is an I/O error, not a reason to create more (or to call the path invalid).
            match io.canonicalize(existing) {
                Ok(base) => break base,
                Err(e)
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Err(IoError::at(existing, "resolve", e).into());
                }
                Err(_) => {}
            }
            let Some(name) = existing.file_name() else {
                return Err(invalid("'..' after a folder that does not exist yet"));
            };
            missing.push(name);
            existing = match existing.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
        };
        let mut missing_parents = Vec::new();
        for name in missing.iter().rev() {
            path.push(name);
            missing_parents.push(path.clone());
        }
        if path.starts_with(&db) {
            return Err(invalid("it lies inside the database directory"));
        }
        if missing_parents.pop().is_none() {
            return Err(SnapshotError::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        Ok(SnapshotTarget {
            path,
            missing_parents,
        })
    }

    /// Creates the missing parents, then the destination itself exclusively: of two
    /// snapshots racing for one destination, one gets `DestinationExists`.
    fn create(&self, io: &dyn Dir) -> Result<(), SnapshotError> {
        let mut created = Vec::new();
        let result = self
            .missing_parents
            .iter()
            .try_for_each(|p| match io.create_dir(p) {
                Ok(()) => {
                    created.push(p);
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(IoError::at(p, "create directory", e).into()),
            })
            .and_then(|()| match io.create_dir(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(SnapshotError::DestinationExists {
                        path: self.path.clone(),
                    })
                }
                Err(e) => Err(IoError::at(&self.path, "create directory", e).into()),
            });
        if result.is_err() {
            for p in created.iter().rev() {
                let _ = io.remove_dir(p);
            }
            return result;
        }
        // Each directory made here is durable only once the one holding it is synced: the
        // missing parents' too, or a power cut can drop the acknowledged snapshot with them.
        for dir in self.missing_parents.iter().chain([&self.path]) {
            let parent = dir.parent().unwrap_or(Path::new("/"));
            sync_dir(io, parent).inspect_err(|_| self.remove(io))?;
        }
        Ok(())
    }

    /// Removes what [`create`](Self::create) made (after a failed snapshot).
    fn remove(&self, io: &dyn Dir) {
        let _ = io.remove_dir_all(&self.path);
        for p in self.missing_parents.iter().rev() {
            if io.remove_dir(p).is_err() {
                break;
            }
        }
    }
}
