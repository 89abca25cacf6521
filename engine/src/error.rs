//! Errors: one top-level [`Error`] whose variants the bindings map to their own exception types
//! (`Locked`, `Corruption`, `InvalidInput`, `Model`, `Io`).

use std::path::PathBuf;

use hivlp_storage::{CommitError, CompactionError, OpenError, SnapshotError, Tier};

pub use hivlp_storage::{CorruptionError, IoError};

use crate::Target;

/// Anything that can go wrong in a [`Database`](crate::Database) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another writer holds the database (another process, or another open handle).
    #[error("database {} is locked by another writer; open it read-only or close the other writer", path.display())]
    Locked { path: PathBuf },
    #[error("no database at {}", path.display())]
    NotFound { path: PathBuf },
    #[error("a database already exists at {}", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("the database was opened read-only")]
    ReadOnly,
    /// An earlier write failed half-way; reopen the database to recover.
    #[error("an earlier write failed ({0}); reopen the database to recover")]
    Poisoned(String),
    #[error(transparent)]
    Corruption(#[from] CorruptionError),
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Io(#[from] IoError),
    /// Compaction failed; nothing was changed.
    #[error("compaction failed: {0}")]
    Compaction(String),
}

/// A call's arguments were rejected; nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A row failed storage's validation (dimensions, non-finite values, sizes, duplicate
    /// or existing ids). Row indices are indices into the `insert` batch.
    #[error(transparent)]
    Row(#[from] hivlp_storage::InvalidInput),
    #[error("invalid schema: {0}")]
    Schema(String),
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
    /// Cosine databases normalise vectors; a zero vector has no direction.
    #[error("item {item}: {target:?} {tier} vector is all zeros, which has no cosine similarity")]
    ItemZero {
        item: usize,
        target: Target,
        tier: Tier,
    },
    #[error("item {item} has neither an image nor a text embedding")]
    ItemEmpty { item: usize },
    #[error(
        "item {item} has no {target:?} coarse vector, but this database stores user-supplied coarse vectors"
    )]
    CoarseRequired { item: usize, target: Target },
    #[error(
        "item {item} carries a {target:?} coarse vector, but this database derives coarse vectors from fine ones ({mode})"
    )]
    CoarseNotExpected {
        item: usize,
        target: Target,
        mode: &'static str,
    },
    #[error("query {tier} vector has {got} dimensions, the database has {expected}")]
    QueryDimension {
        tier: Tier,
        expected: usize,
        got: usize,
    },
    #[error(
        "query {tier} vector holds {value} at index {index}; only finite values can be searched"
    )]
    QueryNonFinite {
        tier: Tier,
        index: usize,
        value: f32,
    },
    #[error("query {tier} vector is all zeros, which has no cosine similarity")]
    QueryZero { tier: Tier },
    #[error(
        "the query has no coarse vector, and this database stores user-supplied coarse vectors (none can be derived)"
    )]
    QueryCoarseRequired,
    #[error("k must be at least 1")]
    ZeroK,
    #[error("candidates ({candidates}) must be at least k ({k})")]
    CandidatesBelowK { candidates: usize, k: usize },
    #[error("unknown target {0:?}; expected \"image\" or \"text\"")]
    UnknownTarget(String),
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
    #[error(transparent)]
    Load(#[from] hivlp_encoders::EncoderError),
    /// An input could not be encoded (the error names the failing item).
    #[error(transparent)]
    Encode(#[from] hivlp_encoders::EncodeError),
    #[error("the model's {what} ({model}) does not match the database schema ({schema})")]
    Schema {
        what: &'static str,
        model: String,
        schema: String,
    },
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Locked { path } => Error::Locked { path },
            OpenError::NotFound { path } => Error::NotFound { path },
            OpenError::AlreadyExists { path } => Error::AlreadyExists { path },
            OpenError::InvalidSchema(s) => InvalidInput::Schema(s).into(),
            OpenError::Corruption(c) => Error::Corruption(c),
            OpenError::Io(io) => Error::Io(io),
            other => Error::Io(IoError {
                context: "open".into(),
                source: std::io::Error::other(other.to_string()),
            }),
        }
    }
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::InvalidInput(i) => InvalidInput::Row(i).into(),
            CommitError::ReadOnly => Error::ReadOnly,
            CommitError::Poisoned(why) => Error::Poisoned(why),
            CommitError::Io(io) => Error::Io(io),
            other => Error::Poisoned(other.to_string()),
        }
    }
}

impl From<CompactionError> for Error {
    fn from(e: CompactionError) -> Self {
        match e {
            CompactionError::ReadOnly => Error::ReadOnly,
            CompactionError::Commit(c) => c.into(),
            CompactionError::Io(io) => Error::Io(io),
            other => Error::Compaction(other.to_string()),
        }
    }
}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::DestinationExists { path } => Error::AlreadyExists { path },
            SnapshotError::Io(io) => Error::Io(io),
            other => Error::Io(IoError {
                context: "snapshot".into(),
                source: std::io::Error::other(other.to_string()),
            }),
        }
    }
}
