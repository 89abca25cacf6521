//! `hivlp`: an embedded vector database for image–text retrieval with coarse-to-fine search.
//!
//! Every item stores a low-dimensional *coarse* and a high-dimensional *fine* vector per
//! modality (image, text). A search scans all coarse vectors (SIMD dot products over
//! memory-mapped segments, fused with a top-M threshold filter), then re-ranks the M best
//! with their fine vectors. See [`Database`].

mod database;
mod error;
mod params;
mod projection;
mod scan;
mod search;
pub mod synthetic;

pub use database::{Database, Pair, Record, Stats, verify};
pub use error::{CorruptionError, Error, InvalidInput, IoError, ModelError};
pub use hivlp_encoders::{Embedding, Encoder, EncoderOptions, ImageInput};
pub use hivlp_storage::{
    CompactionReport, Durability, ElemType, Metric, Modality as Target, Schema, StoreStats, Tier,
    VerifyReport,
};
pub use params::{
    DEFAULT_CANDIDATES, Filter, Hit, Item, ModelChoice, Options, Query, SearchParams, SearchTiming,
    parse_target,
};
pub use projection::{CoarseDerivation, retained_energy};

/// Result of every fallible [`Database`] call.
pub type Result<T> = std::result::Result<T, Error>;
