//! Errors, one enum per operation family (open, commit, compaction, snapshot), plus the
//! top-level [`Error`] that wraps them all.

use std::io;
use std::path::{Path, PathBuf};

use crate::schema::Modality;
pub use crate::schema::Tier;

/// Bytes on disk that cannot be what hivlp wrote: a bad footer, a crc mismatch, an impossible
/// length, an archive that fails validation.
///
/// `file` names the damaged file and `offset` the byte position in it where decoding failed
/// (0 when the problem concerns the whole file, e.g. its length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt file {}: {what} (at byte {offset})", file.display())]
pub struct CorruptionError {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset in `file` where decoding failed.
    pub offset: u64,
    /// What was wrong.
    pub what: String,
}

impl CorruptionError {
    /// A corruption report for `file` at `offset`.
    pub fn new(file: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            offset,
            what: what.into(),
        }
    }
}

/// A batch rejected before anything was written. `row` is the index of the offending row in
/// the batch handed to [`Store::insert`](crate::Store::insert).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// `insert` was given no rows.
    #[error("empty batch")]
    EmptyBatch,
    /// A vector's length differs from the schema's dimension.
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
    /// A vector holds NaN or an infinity.
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
    /// A value does not fit the tier's `F16` element type.
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
    /// A row without any vector could never be found by a search.
    #[error("row {row} (id {id}) has neither an image nor a text vector")]
    NoVectors { row: usize, id: u64 },
    /// Two rows of the batch share an id.
    #[error("id {id} appears twice in the batch (rows {first} and {second})")]
    DuplicateId {
        id: u64,
        first: usize,
        second: usize,
    },
    /// A live row with this id exists (delete it first to replace it).
    #[error("id {id} (row {row}) already exists in the database")]
    IdExists { id: u64, row: usize },
    /// An id above [`MAX_ID`](crate::MAX_ID) that [`Store::allocate_ids`](crate::Store::allocate_ids)
    /// did not hand out.
    #[error(
        "id {id} (row {row}) is above {max}, the largest id an insert may choose (ids fit an int64); leave the id out to have one assigned"
    )]
    IdTooLarge { id: u64, row: usize, max: u64 },
    /// `u64::MAX` is reserved so that `next_id` never overflows.
    #[error("id {id} (row {row}) is u64::MAX, which is reserved")]
    ReservedId { id: u64, row: usize },
    /// Caption, URI or metadata over its limit ([`MAX_CAPTION_BYTES`](crate::MAX_CAPTION_BYTES), …).
    #[error("row {row} (id {id}): {field} is {len} bytes, the limit is {max}")]
    TooLarge {
        row: usize,
        id: u64,
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// The batch (or property, or the ids of a delete) would exceed one WAL record
    /// ([`MAX_RECORD_LEN`](crate::wal::MAX_RECORD_LEN)).
    #[error("batch encodes to {len} bytes, more than one WAL record may hold ({max}); split it")]
    BatchTooLarge { len: usize, max: usize },
    /// A property key over [`MAX_PROPERTY_KEY_BYTES`](crate::MAX_PROPERTY_KEY_BYTES).
    #[error("property key is {len} bytes, the limit is {max}")]
    PropertyTooLarge { len: usize, max: usize },
}

/// An I/O failure: the operation, the file it concerns (when there is one) and the
/// operating system's error.
#[derive(Debug, thiserror::Error)]
#[error("{op}{}: {source}", file.as_ref().map(|f| format!(" {}", f.display())).unwrap_or_default())]
pub struct IoError {
    /// The operation that failed, e.g. `fsync`, `create`, `rename`.
    pub op: &'static str,
    /// The file or directory it concerned, `None` for a step that concerns no file (e.g.
    /// starting threads).
    pub file: Option<PathBuf>,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// A failure of `op` that concerns no particular file.
    pub fn new(op: &'static str, source: io::Error) -> Self {
        Self {
            op,
            file: None,
            source,
        }
    }

    /// A failure of `op` on `path`.
    pub fn at(path: &Path, op: &'static str, source: io::Error) -> Self {
        Self {
            op,
            file: Some(path.to_path_buf()),
            source,
        }
    }
}

/// The base storage error every per-operation enum wraps: the operating system failed, or
/// bytes on disk are not what hivlp wrote. What reading or writing a file can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file is damaged.
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    /// The operating system reported an error.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why [`Store::create`](crate::Store::create), [`Store::open`](crate::Store::open) or
/// [`verify`](crate::verify) failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another writer holds the database's `LOCK` file; `path` names it.
    #[error("database {} is locked by another writer (another process or another open handle); open it read-only or close the other writer", path.display())]
    Locked { path: PathBuf },
    /// `path` holds no database (no `CURRENT` file).
    #[error("no database at {}", path.display())]
    NotFound { path: PathBuf },
    /// `create` found a database at `path`.
    #[error("a database already exists at {}", path.display())]
    AlreadyExists { path: PathBuf },
    /// The schema (or the create options) cannot be stored.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// An empty path would mean the current directory, which is never what was meant.
    #[error("the database path is empty")]
    EmptyPath,
    /// A file is damaged.
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    /// The operating system reported an error.
    #[error(transparent)]
    Io(#[from] IoError),
    /// [`verify`](crate::verify) found damage, but a writer replaced the files it read (a
    /// flush or compaction) during each of `attempts` tries, so it cannot tell real damage
    /// from files that were superseded meanwhile.
    #[error("database {} changed during each of {attempts} attempts to read it consistently (a writer is flushing or compacting); retry, or close the writer", path.display())]
    Changing { path: PathBuf, attempts: usize },
}

/// A handle used in a process other than the one that opened it, i.e. in a child of `fork()`
/// (what `multiprocessing` does by default on Linux). The child shares the parent's file
/// offsets and lock but not its threads, so its writes would corrupt the WAL and its searches
/// would wait forever; it must open the database itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "database {} was opened by process {opened_by}, not by this process {current} (a child of fork()); open the database again in this process",
    path.display()
)]
pub struct ForkedError {
    /// The database directory.
    pub path: PathBuf,
    /// The process that opened the handle.
    pub opened_by: u32,
    /// The process that used it.
    pub current: u32,
}

/// Why a write ([`Store::insert`](crate::Store::insert), `delete`, `sync`, `flush`,
/// `set_property`) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The input was rejected; nothing was written.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The handle was opened with `read_only`.
    #[error("the database was opened read-only")]
    ReadOnly,
    /// An earlier write failed half-way (e.g. disk full during a WAL append); the handle
    /// refuses further writes because its in-memory state may no longer match the disk.
    /// Reopen the database: recovery restores the last durable state.
    #[error("an earlier write failed ({0}); reopen the database to recover")]
    Poisoned(String),
    /// The handle was opened by another process (see [`ForkedError`]); nothing was written.
    #[error(transparent)]
    Forked(#[from] ForkedError),
    /// A file is damaged, e.g. a segment a flush just wrote reads back wrong.
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    /// The operating system reported an error.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why [`Store::compact`](crate::Store::compact) failed. Nothing is changed on failure.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// The handle was opened with `read_only`.
    #[error("the database was opened read-only")]
    ReadOnly,
    /// The [`CoarseRewrite`](crate::CoarseRewrite) hook produced a value the coarse tier
    /// cannot store: non-finite, or beyond the `f16` range for an `F16` tier.
    #[error("coarse rewrite hook produced an invalid vector: {0}")]
    Rewrite(String),
    /// Flushing or installing the result failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A file is damaged, e.g. a merged segment reads back wrong.
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    /// The operating system reported an error.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why [`Store::snapshot`](crate::Store::snapshot) failed. A partial destination directory
/// is left behind only if removing it failed too.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Snapshots never overwrite.
    #[error("snapshot destination {} already exists", path.display())]
    DestinationExists { path: PathBuf },
    /// The destination is unusable (empty, inside the database directory, ...); nothing
    /// was created.
    #[error("cannot snapshot into {}: {reason}", path.display())]
    InvalidDestination { path: PathBuf, reason: String },
    /// The handle is poisoned, or another write-side refusal.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A file is damaged.
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    /// The operating system reported an error.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Any storage error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`OpenError`].
    #[error(transparent)]
    Open(#[from] OpenError),
    /// See [`CommitError`].
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// See [`CompactionError`].
    #[error(transparent)]
    Compaction(#[from] CompactionError),
    /// See [`SnapshotError`].
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A file is damaged.
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    /// The input was rejected; nothing was written.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The operating system reported an error.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Every per-operation enum wraps the base error: its I/O and corruption variants.
macro_rules! wraps_storage_error {
    ($($ty:ident),*) => {$(
        impl From<StorageError> for $ty {
            fn from(e: StorageError) -> Self {
                match e {
                    StorageError::Corruption(c) => $ty::Corruption(c),
                    StorageError::Io(io) => $ty::Io(io),
                }
            }
        }
    )*};
}

wraps_storage_error!(
    OpenError,
    CommitError,
    CompactionError,
    SnapshotError,
    Error
);
