//! Errors, one enum per operation family (open, commit, compaction, snapshot), plus the
//! top-level [`Error`] that wraps them all.

use std::io;
use std::path::{Path, PathBuf};

use crate::schema::Modality;

/// Bytes on disk that cannot be what hivlp wrote: a bad footer, a crc mismatch, an impossible
/// length, an archive that fails validation.
///
/// `file` names the damaged file and `offset` the byte position in it where decoding failed
/// (0 when the problem concerns the whole file, e.g. its length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt file {}: {what} (at byte {offset})", file.display())]
pub struct CorruptionError {
    pub file: PathBuf,
    pub offset: u64,
    pub what: String,
}

impl CorruptionError {
    pub fn new(file: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            offset,
            what: what.into(),
        }
    }
}

/// Which vector of a row a validation error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Coarse,
    Fine,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Coarse => "coarse",
            Tier::Fine => "fine",
        })
    }
}

/// A batch rejected before anything was written. `row` is the index of the offending row in
/// the batch handed to [`Store::insert`](crate::Store::insert).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    #[error("empty batch")]
    EmptyBatch,
    #[error(
        "row {row} (id {id}): {modality:?} {tier} vector has {got} dimensions, the schema has {expected}"
    )]
    Dimension {
        row: usize,
        id: u64,
        modality: Modality,
        tier: Tier,
        expected: usize,
        got: usize,
    },
    #[error(
        "row {row} (id {id}): {modality:?} {tier} vector holds {value} at index {index}; only finite values can be stored"
    )]
    NonFinite {
        row: usize,
        id: u64,
        modality: Modality,
        tier: Tier,
        index: usize,
        value: f32,
    },
    #[error(
        "row {row} (id {id}): {modality:?} {tier} vector holds {value} at index {index}, beyond the f16 range (±65504)"
    )]
    OutOfRange {
        row: usize,
        id: u64,
        modality: Modality,
        tier: Tier,
        index: usize,
        value: f32,
    },
    #[error("row {row} (id {id}) has neither an image nor a text vector")]
    NoVectors { row: usize, id: u64 },
    #[error("id {id} appears twice in the batch (rows {first} and {second})")]
    DuplicateId {
        id: u64,
        first: usize,
        second: usize,
    },
    #[error("id {id} (row {row}) already exists in the database")]
    IdExists { id: u64, row: usize },
    #[error("id {id} (row {row}) is u64::MAX, which is reserved")]
    ReservedId { id: u64, row: usize },
    #[error("row {row} (id {id}): {field} is {len} bytes, the limit is {max}")]
    TooLarge {
        row: usize,
        id: u64,
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("batch encodes to {len} bytes, more than one WAL record may hold ({max}); split it")]
    BatchTooLarge { len: usize, max: usize },
    #[error("property key is {len} bytes, the limit is {max}")]
    PropertyTooLarge { len: usize, max: usize },
}

/// An I/O failure with the file or step it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct IoError {
    pub context: String,
    #[source]
    pub source: io::Error,
}

impl IoError {
    pub(crate) fn new(context: impl Into<String>, source: io::Error) -> Self {
        Self {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn at(path: &Path, what: &str, source: io::Error) -> Self {
        Self::new(format!("{what} {}", path.display()), source)
    }
}

/// Why [`Store::create`](crate::Store::create), [`Store::open`](crate::Store::open) or
/// [`verify`](crate::verify) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("database {} is locked by another writer (another process or another open handle); open it read-only or close the other writer", path.display())]
    Locked { path: PathBuf },
    #[error("no database at {}", path.display())]
    NotFound { path: PathBuf },
    #[error("a database already exists at {}", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why a write ([`Store::insert`](crate::Store::insert), `delete`, `sync`, `flush`,
/// `set_property`) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("the database was opened read-only")]
    ReadOnly,
    /// An earlier write failed half-way (e.g. disk full during a WAL append); the handle
    /// refuses further writes because its in-memory state may no longer match the disk.
    /// Reopen the database: recovery restores the last durable state.
    #[error("an earlier write failed ({0}); reopen the database to recover")]
    Poisoned(String),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why [`Store::compact`](crate::Store::compact) failed. Nothing is changed on failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactionError {
    #[error("the database was opened read-only")]
    ReadOnly,
    #[error("coarse rewrite hook produced an invalid vector: {0}")]
    Rewrite(String),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why [`Store::snapshot`](crate::Store::snapshot) failed. A partial destination directory
/// is left behind only if removing it failed too.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("snapshot destination {} already exists", path.display())]
    DestinationExists { path: PathBuf },
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Any storage error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Compaction(#[from] CompactionError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error(transparent)]
    Io(#[from] IoError),
}
