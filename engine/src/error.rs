//! Errors: one top-level [`Error`] whose variants the bindings map to their own exception types
//! (`Locked`, `Corruption`, `InvalidInput`, `Model`, `Io`).

use std::path::PathBuf;

use hivlp_storage::{CommitError, CompactionError, OpenError, SnapshotError, Tier};

pub use hivlp_storage::{CorruptionError, ForkedError, IoError};

use crate::Target;

/// Anything that can go wrong in a [`Database`](crate::Database) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another writer holds the database (another process, or another open handle).
    #[error("database {} is locked by another writer; open it read-only or close the other writer", path.display())]
    Locked { path: PathBuf },
    /// `open` found no database at the path.
    #[error("no database at {}", path.display())]
    NotFound { path: PathBuf },
    /// `create` (or a snapshot destination) found a database already there.
    #[error("a database already exists at {}", path.display())]
    AlreadyExists { path: PathBuf },
    /// A write on a read-only handle.
    #[error("the database was opened read-only")]
    ReadOnly,
    /// An earlier write failed half-way; reopen the database to recover.
    #[error("an earlier write failed ({0}); reopen the database to recover")]
    Poisoned(String),
    /// The handle was opened by another process: this is a child of `fork()`, which must
    /// open the database itself. Nothing was read or written.
    #[error(transparent)]
    Forked(#[from] ForkedError),
    /// A file does not hold what hivlp wrote (names the file and byte offset).
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    /// The call's arguments were rejected; nothing changed.
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The embedding model could not be loaded, used, or does not fit the database.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An operating-system I/O failure, with the file or step it concerns.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Compaction failed; nothing was changed.
    #[error("compaction failed: {0}")]
    Compaction(String),
    /// [`verify`](crate::verify) found damage while a writer kept replacing the files it
    /// read (flushing or compacting), `attempts` times; retry, or close the writer.
    #[error("database {} changed during each of {attempts} attempts to read it consistently (a writer is flushing or compacting); retry, or close the writer", path.display())]
    Changing { path: PathBuf, attempts: usize },
}

/// A call's arguments were rejected; nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A row failed storage's validation (dimensions, non-finite values, sizes, duplicate
    /// or existing ids). Row indices are indices into the `insert` batch.
    #[error(transparent)]
    Row(#[from] hivlp_storage::InvalidInput),
    /// A database without a model needs its dimensions (`NewDatabase::dims`); one with a
    /// model takes them from the model.
    #[error("{0}")]
    Dimensions(&'static str),
    /// `create` or `open` was given an empty path.
    #[error("the database path is empty")]
    EmptyPath,
    /// A snapshot destination that is empty, inside the database directory, or otherwise
    /// unusable; nothing was created.
    #[error("cannot snapshot into {}: {reason}", path.display())]
    SnapshotDestination { path: PathBuf, reason: String },
    /// The schema given to `create` is unusable (zero dimensions, unsupported fine type...).
    #[error("invalid schema: {0}")]
    Schema(String),
    /// An item's vector has the wrong length.
    #[error(
        "item {item}: {target:?} {tier} vector has {got} dimensions, the database has {expected}"
    )]
    ItemDimension {
        item: usize,
        target: Target,
        tier: Tier,
        expected: usize,
        got: usize,
    },
    /// An item's vector holds NaN or an infinity.
    #[error(
        "item {item}: {target:?} {tier} vector holds {value} at index {index}; only finite values can be stored"
    )]
    ItemNonFinite {
        item: usize,
        target: Target,
        tier: Tier,
        index: usize,
        value: f32,
    },
    /// An inner-product vector too long to score or project within `f32`: its norm is
    /// above `max` (2^62, or less for a coarse tier of `f16` derived from it).
    #[error(
        "item {item}: {target:?} {tier} vector has norm {norm:e}, above the {max:e} this database can score and project without overflow"
    )]
    ItemNorm {
        item: usize,
        target: Target,
        tier: Tier,
        norm: f64,
        max: f64,
    },
    /// Cosine databases normalise vectors; a zero vector has no direction.
    #[error("item {item}: {target:?} {tier} vector is all zeros, which has no cosine similarity")]
    ItemZero {
        item: usize,
        target: Target,
        tier: Tier,
    },
    /// An item carries no vectors at all.
    #[error("item {item} has neither an image nor a text embedding")]
    ItemEmpty { item: usize },
    /// The database stores caller-supplied coarse vectors and an item has none.
    #[error(
        "item {item} has no {target:?} coarse vector, but this database stores user-supplied coarse vectors"
    )]
    CoarseRequired { item: usize, target: Target },
    /// The database derives coarse vectors and an item brings its own.
    #[error(
        "item {item} carries a {target:?} coarse vector, but this database derives coarse vectors from fine ones ({mode})"
    )]
    CoarseNotExpected {
        item: usize,
        target: Target,
        mode: &'static str,
    },
    /// A query vector has the wrong length.
    #[error("query {tier} vector has {got} dimensions, the database has {expected}")]
    QueryDimension {
        tier: Tier,
        expected: usize,
        got: usize,
    },
    /// A query vector holds NaN or an infinity.
    #[error(
        "query {tier} vector holds {value} at index {index}; only finite values can be searched"
    )]
    QueryNonFinite {
        tier: Tier,
        index: usize,
        value: f32,
    },
    /// An inner-product query vector with a norm above 2^62, which could overflow scores.
    #[error(
        "query {tier} vector has norm {norm:e}, above the {max:e} that can be scored without overflow"
    )]
    QueryNorm { tier: Tier, norm: f64, max: f64 },
    /// A cosine query vector is all zeros.
    #[error("query {tier} vector is all zeros, which has no cosine similarity")]
    QueryZero { tier: Tier },
    /// A two-stage query without a coarse vector on a database that cannot derive one.
    #[error(
        "the query has no coarse vector, and this database stores user-supplied coarse vectors (none can be derived)"
    )]
    QueryCoarseRequired,
    /// `SearchParams::k` is 0.
    #[error("k must be at least 1")]
    ZeroK,
    /// `SearchParams::k` is above [`MAX_CANDIDATES`](crate::MAX_CANDIDATES).
    #[error("k ({k}) is above the limit of {max}")]
    KTooLarge { k: usize, max: usize },
    /// `SearchParams::candidates` is above [`MAX_CANDIDATES`](crate::MAX_CANDIDATES).
    #[error("candidates ({candidates}) is above the limit of {max}")]
    CandidatesTooLarge { candidates: usize, max: usize },
    /// `SearchParams::candidates` is below `k`.
    #[error("candidates ({candidates}) must be at least k ({k})")]
    CandidatesBelowK { candidates: usize, k: usize },
    /// `SearchParams::min_score` is NaN or infinite.
    #[error("min_score must be a finite number, got {0}")]
    MinScoreNotFinite(f32),
    /// `SearchParams::collapse` is not a cosine similarity (-1 to 1).
    #[error("collapse must be a cosine similarity between -1 and 1, got {0}")]
    CollapseOutOfRange(f32),
    /// `SearchParams::probe` is not a share of rows in (0, 1].
    #[error("probe must be a share of rows greater than 0 and at most 1, got {0}")]
    ProbeOutOfRange(f64),
    /// A composed query ([`Database::compose_query`](crate::Database::compose_query)) has no
    /// parts.
    #[error("a composed query needs at least one part")]
    NoQueryParts,
    /// A composed query's part has a weight that is NaN or infinite.
    #[error("query part {part} has weight {weight}; weights must be finite")]
    PartWeightNotFinite { part: usize, weight: f32 },
    /// A part of a composed query is unusable (wrong length, non-finite, zero, no coarse
    /// vector where the database needs one); `reason` is the query error it would raise alone.
    #[error("query part {part}: {reason}")]
    QueryPart {
        part: usize,
        reason: Box<InvalidInput>,
    },
    /// The weighted parts of a composed query cancel out: the sum has no direction.
    #[error(
        "the weighted sum of the query parts is all zeros (the parts cancel out); change the weights"
    )]
    ComposedQueryZero,
    /// A target name other than "image" or "text" (see [`parse_target`](crate::parse_target)).
    #[error("unknown target {0:?}; expected \"image\" or \"text\"")]
    UnknownTarget(String),
    /// A search predicate does not parse, names a field no row has, or compares a field with
    /// a literal of a type it never holds; the message points at the offending part.
    #[error(transparent)]
    Predicate(#[from] crate::filter::PredicateError),
    /// `Options::threads` is `Some(0)`.
    #[error("thread count must be at least 1")]
    ZeroThreads,
}

/// Problems with the embedding model bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The database was written with embeddings of another bundle; their vectors are not
    /// comparable. Set `Options::allow_model_mismatch` to open it anyway.
    #[error(
        "the database holds embeddings of model {stored}, but model {opened} was given; set allow_model_mismatch to use it anyway"
    )]
    Mismatch { stored: String, opened: String },
    /// Text or image search and `insert_pairs` need an encoder.
    #[error(
        "this database was opened without a model; pass Options::model to encode text or images"
    )]
    NoModel,
    /// The bundle could not be loaded (manifest, files, ONNX Runtime).
    #[error(transparent)]
    Load(#[from] hivlp_encoders::EncoderError),
    /// An input could not be encoded (the error names the failing item).
    #[error(transparent)]
    Encode(#[from] hivlp_encoders::EncodeError),
    /// The bundle's dimensions or metric differ from the database schema.
    #[error("the model's {what} ({model}) does not match the database schema ({schema})")]
    Schema {
        what: &'static str,
        model: String,
        schema: String,
    },
}

// Every storage variant is mapped explicitly (the storage enums are exhaustive), so a new
// one is a compile error here rather than a silent change of kind.

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Locked { path } => Error::Locked { path },
            OpenError::NotFound { path } => Error::NotFound { path },
            OpenError::AlreadyExists { path } => Error::AlreadyExists { path },
            OpenError::InvalidSchema(s) => InvalidInput::Schema(s).into(),
            OpenError::EmptyPath => InvalidInput::EmptyPath.into(),
            OpenError::Corruption(c) => Error::Corruption(c),
            OpenError::Io(io) => Error::Io(io),
            OpenError::Changing { path, attempts } => Error::Changing { path, attempts },
        }
    }
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::InvalidInput(i) => InvalidInput::Row(i).into(),
            CommitError::ReadOnly => Error::ReadOnly,
            CommitError::Poisoned(why) => Error::Poisoned(why),
            CommitError::Forked(f) => Error::Forked(f),
            CommitError::Corruption(c) => Error::Corruption(c),
            CommitError::Io(io) => Error::Io(io),
        }
    }
}

impl From<CompactionError> for Error {
    fn from(e: CompactionError) -> Self {
        match e {
            CompactionError::ReadOnly => Error::ReadOnly,
            CompactionError::Rewrite(why) => Error::Compaction(format!(
                "coarse rewrite hook produced an invalid vector: {why}"
            )),
            CompactionError::Commit(c) => c.into(),
            CompactionError::Corruption(c) => Error::Corruption(c),
            CompactionError::Io(io) => Error::Io(io),
        }
    }
}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::DestinationExists { path } => Error::AlreadyExists { path },
            SnapshotError::InvalidDestination { path, reason } => {
                InvalidInput::SnapshotDestination { path, reason }.into()
            }
            SnapshotError::Commit(c) => c.into(),
            SnapshotError::Corruption(c) => Error::Corruption(c),
            SnapshotError::Io(io) => Error::Io(io),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corruption() -> CorruptionError {
        CorruptionError::new("/db/seg-000001.meta", 7, "bad footer")
    }

    #[test]
    fn storage_errors_keep_their_kind() {
        // A segment a flush or compaction just wrote that reads back damaged is corruption,
        // not an I/O error or a poisoned handle.
        assert!(matches!(
            Error::from(CommitError::Corruption(corruption())),
            Error::Corruption(c) if c.offset == 7
        ));
        assert!(matches!(
            Error::from(CompactionError::Corruption(corruption())),
            Error::Corruption(_)
        ));
        assert!(matches!(
            Error::from(SnapshotError::Corruption(corruption())),
            Error::Corruption(_)
        ));
        assert!(matches!(
            Error::from(CompactionError::Commit(CommitError::ReadOnly)),
            Error::ReadOnly
        ));
        // verify's "the files kept changing" was reported as an I/O error with a made-up
        // source.
        assert!(matches!(
            Error::from(OpenError::Changing {
                path: "/db".into(),
                attempts: 10
            }),
            Error::Changing { attempts: 10, .. }
        ));
        let io = IoError::at(
            std::path::Path::new("/db/wal-000001.log"),
            "fsync",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        assert_eq!(
            io.to_string().split(':').next(),
            Some("fsync /db/wal-000001.log")
        );
        match Error::from(CommitError::Io(io)) {
            Error::Io(io) => {
                assert_eq!(io.op, "fsync");
                assert_eq!(io.source.kind(), std::io::ErrorKind::StorageFull);
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
