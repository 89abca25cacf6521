//! Integrity check of a database directory, offline or beside a writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::segment::{Segment, read_tombstones};
use crate::error::{CorruptionError, OpenError, StorageError};
use crate::format::codec::VerifyLevel;
use crate::format::manifest::{Manifest, manifest_file_name};
use crate::format::segment::{meta_file_name, tombstone_file_name};
use crate::format::wal::{DroppedWalTail, wal_file_name};
use crate::io::dir::{Dir, FsDir};
use crate::io::manifest::read_current;
use crate::io::wal::{Replay, replay_logs};

/// How many times [`verify`] reads the manifest and the WAL again when it found damage while
/// a writer replaced them, before it gives up with [`OpenError::Changing`].
const ATTEMPTS: usize = 10;

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files read and checked.
    pub files_checked: Vec<PathBuf>,
    pub segments: usize,
    /// Rows in segments (deleted included).
    pub segment_rows: u64,
    /// Records in the WAL files that open would replay.
    pub wal_records: usize,
    /// What open would drop from the end of the WAL: written after the last fsync, so not a
    /// problem (normal after a crash).
    pub dropped_wal_tail: Option<DroppedWalTail>,
    /// Every damaged or missing file found.
    pub problems: Vec<CorruptionError>,
}

impl VerifyReport {
    /// No problems found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A damaged or unreadable file, as a problem of the report: an I/O failure (a missing
/// file, a read error) names the file it concerned; `file` is the one the check was about,
/// used only for an I/O error that names none.
fn as_problem(e: StorageError, file: &Path) -> CorruptionError {
    match e {
        StorageError::Corruption(c) => c,
        StorageError::Io(io) => CorruptionError::new(
            io.file.clone().unwrap_or_else(|| file.to_path_buf()),
            0,
            io.to_string(),
        ),
    }
}

/// Checks every footer, crc32 (with [`VerifyLevel::Full`], also of the vector files),
/// archive and WAL record of the database at `path` without modifying anything, and takes
/// no lock. Returns `Err` only when the database cannot be found, its manifest is
/// unreadable, or (with [`OpenError::Changing`]) a writer kept replacing what it read; damage
/// elsewhere is listed in [`VerifyReport::problems`].
///
/// A writer may be active: the manifest and the WAL are read as one state (again if a flush
/// replaced them meanwhile), and a segment or tombstone file that a newer manifest has
/// superseded and deleted since is not a problem.
pub fn verify(path: &Path, level: VerifyLevel) -> Result<VerifyReport, OpenError> {
    verify_in(&FsDir::shared(), path, level)
}

/// [`verify`] through `io` (e.g. a [`FaultyDir`](crate::io::FaultyDir) after a simulated crash).
pub fn verify_in(
    io: &Arc<dyn Dir>,
    path: &Path,
    level: VerifyLevel,
) -> Result<VerifyReport, OpenError> {
    let (number, manifest, wal) = read_state(io.as_ref(), path)?;
    let mut report = VerifyReport {
        files_checked: vec![path.join("CURRENT"), path.join(manifest_file_name(number))],
        ..VerifyReport::default()
    };
    match wal {
        Ok(replay) => {
            report.wal_records = replay.records;
            report.dropped_wal_tail = replay.dropped_tail;
            let logs = replay.numbers.iter().map(|&n| path.join(wal_file_name(n)));
            report.files_checked.extend(logs);
        }
        Err(e) => report.problems.push(as_problem(
            e,
            &path.join(wal_file_name(manifest.log_number)),
        )),
    }
    let schema = &manifest.schema;
    let mut check = |file: PathBuf, result: Result<Vec<PathBuf>, StorageError>| match result {
        Ok(files) => report.files_checked.extend(files),
        Err(_) if superseded(io.as_ref(), path, number, &file) => {}
        Err(e) => report.problems.push(as_problem(e, &file)),
    };
    for info in &manifest.segments {
        // A segment's files are deleted metadata first, so a missing file of a superseded
        // segment shows as a missing metadata file.
        let opened = Segment::open_in(io, path, info, schema, level).and_then(|seg| {
            seg.check_field_columns()?;
            Ok(seg.files().to_vec())
        });
        check(path.join(meta_file_name(info.id)), opened);
        if info.del_gen != 0 {
            let file = path.join(tombstone_file_name(info.id, info.del_gen));
            let read =
                read_tombstones(io.as_ref(), &file, info.rows as usize).map(|_| vec![file.clone()]);
            check(file, read);
        }
    }
    report.segments = manifest.segments.len();
    report.segment_rows = manifest.segments.iter().map(|s| s.rows).sum();
    Ok(report)
}

/// The manifest `CURRENT` names (with its number) and the replay of the WAL that continues
/// it, read as one state: a flush installs a new manifest, then deletes the WAL files and
/// the manifest it replaced, so a replay that fails while `CURRENT` changed is retried.
fn read_state(
    io: &dyn Dir,
    path: &Path,
) -> Result<(u64, Manifest, Result<Replay, StorageError>), OpenError> {
    let current = || io.read(&path.join("CURRENT")).ok();
    let mut attempt = 1;
    loop {
        let before = current();
        let state = read_current(io, path).map(|(number, manifest)| {
            let replay = replay_logs(
                io,
                path,
                &manifest.schema,
                manifest.log_number,
                manifest.next_seq,
                |_, _| Ok(()),
            );
            (number, manifest, replay)
        });
        let clean = matches!(state, Ok((_, _, Ok(_))));
        if clean || current() == before {
            return state;
        }
        if attempt == ATTEMPTS {
            return Err(OpenError::Changing {
                path: path.to_path_buf(),
                attempts: ATTEMPTS,
            });
        }
        attempt += 1;
    }
}

/// Whether `file`, of manifest `number`, is missing because a writer installed a newer
/// manifest and deleted it. Checked in this order: a file missing while `number` is still
/// current was never deleted by a writer, which deletes only after installing.
fn superseded(io: &dyn Dir, path: &Path, number: u64, file: &Path) -> bool {
    io.stat(file).is_err() && read_current(io, path).map(|(n, _)| n).ok() != Some(number)
}
