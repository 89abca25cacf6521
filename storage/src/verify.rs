//! Offline integrity check of a database directory.

use std::path::{Path, PathBuf};

use crate::codec::VerifyLevel;
use crate::error::{CorruptionError, OpenError};
use crate::manifest::{manifest_file_name, read_current};
use crate::segment::{Segment, read_tombstones, tombstone_file_name};
use crate::wal::{DroppedWalTail, decode_log, wal_file_name};

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

fn as_problem(e: OpenError, fallback: &Path) -> CorruptionError {
    match e {
        OpenError::Corruption(c) => c,
        other => CorruptionError::new(fallback, 0, other.to_string()),
    }
}

/// Checks every footer, crc32 (with [`VerifyLevel::Full`], also of the vector files),
/// archive and WAL record of the database at `path` without modifying anything, and takes
/// no lock. Returns `Err` only when the database cannot be found or its manifest is
/// unreadable; damage elsewhere is listed in [`VerifyReport::problems`].
///
/// Meant for a database no writer is changing: a concurrent flush or compaction deletes
/// files, which would show up as missing.
pub fn verify(path: &Path, level: VerifyLevel) -> Result<VerifyReport, OpenError> {
    let (number, manifest) = read_current(path)?;
    let mut report = VerifyReport {
        files_checked: vec![path.join("CURRENT"), path.join(manifest_file_name(number))],
        ..VerifyReport::default()
    };
    let schema = &manifest.schema;
    for info in &manifest.segments {
        report.segments += 1;
        report.segment_rows += info.rows;
        match Segment::open(path, info, schema, level) {
            Ok(seg) => report.files_checked.extend(seg.files().iter().cloned()),
            Err(e) => report.problems.push(as_problem(
                e,
                &path.join(crate::segment::meta_file_name(info.id)),
            )),
        }
        if info.del_gen != 0 {
            let file = path.join(tombstone_file_name(info.id, info.del_gen));
            match read_tombstones(&file, info.rows as usize) {
                Ok(_) => report.files_checked.push(file),
                Err(e) => report.problems.push(as_problem(e, &file)),
            }
        }
    }
    let mut numbers: Vec<u64> = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name();
                    let n = name.to_str()?.strip_prefix("wal-")?.strip_suffix(".log")?;
                    n.parse().ok()
                })
                .filter(|&n| n >= manifest.log_number)
                .collect()
        })
        .unwrap_or_default();
    numbers.sort_unstable();
    let mut next_seq = Some(manifest.next_seq);
    for n in numbers {
        let file = path.join(wal_file_name(n));
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                report
                    .problems
                    .push(CorruptionError::new(&file, 0, format!("unreadable: {e}")));
                continue;
            }
        };
        match decode_log(&bytes, schema, &file, next_seq) {
            Ok(log) => {
                report.wal_records += log.records.len();
                next_seq = log.next_seq.or(next_seq);
                if log.dropped.is_some() {
                    report.dropped_wal_tail = log.dropped;
                }
                report.files_checked.push(file);
            }
            Err(e) => {
                report.problems.push(e);
                next_seq = None;
            }
        }
    }
    Ok(report)
}
