//! `hivlp`: an embedded vector database for image–text retrieval with coarse-to-fine search.
//!
//! Every item stores, per modality (image, text), a low-dimensional *coarse* vector and a
//! high-dimensional *fine* one. [`Database::search`] works in two stages:
//!
//! 1. **Coarse scan**: every live row's coarse vector (f32, f16 or i8 with a per-row scale, in
//!    memory-mapped segments and the memtable) is scored against the query by AVX2 kernels that
//!    take a block of 64 rows per call (`simsimd` per row where the CPU lacks AVX2, FMA or
//!    F16C) — one generic loop instantiated per element type, parallel over row blocks,
//!    skipping deleted rows a 64-bit bitmap word at a time — and a threshold filter keeps the
//!    best M ([`SearchParams::candidates`]) without ever materialising all scores. By default
//!    M is chosen per query: the coarse ranks of the best re-ranked candidates estimate the
//!    recall@k, and M grows (or the exact scan runs) until it reaches [`TARGET_RECALL`];
//!    [`Database::search_with_timing`] reports M and the estimate.
//! 2. **Re-rank**: the M candidates' fine vectors are read in file order and scored exactly;
//!    the best k are returned, ties broken by id, so results are the same for any thread count.
//!
//! `exact: true` is a flat scan of the fine vectors with the same loop (the ground truth), and
//! [`Database::search_batch`] scores a tile of queries against each block of rows while it is
//! in cache.
//!
//! Coarse vectors come from the caller ([`Embedding::coarse`]), from the model (the normalised
//! prefix of a Matryoshka embedding), or from the database's own projection of the fine vector:
//! a random orthogonal map until [`Options::projection_fit_rows`] rows exist, then PCA fitted on
//! them and refitted at [`Database::compact`] (every row's coarse vector is rewritten). The
//! choice is kept in the database, so rows and queries always use the same map.
//!
//! With a model bundle ([`ModelChoice`]), [`Database::insert_pairs`],
//! [`Database::search_text`] and [`Database::search_image`] encode with `hivlp-encoders`.
//!
//! [`SearchParams::predicate`] restricts a search to rows whose metadata fields match a
//! [`Predicate`] ([`filter`]): evaluated to one more skip bitmap per source before the scan,
//! with few matching rows ranked exactly by their fine vectors.
//!
//! Searches compose: [`SearchParams::min_score`] drops weak hits, [`SearchParams::collapse`]
//! counts near-duplicates once, and [`Database::search_parts`] searches with the weighted sum
//! of several texts, images and vectors (negative weights move away from a part). Inserted
//! photos' EXIF becomes metadata fields ([`exif_metadata`]).

mod adaptive;
mod compactor;
mod compose;
mod database;
mod error;
pub mod exif_metadata;
pub mod filter;
mod params;
mod probe;
mod projection;
mod scan;
mod search;
pub mod synthetic;

pub use adaptive::TARGET_RECALL;
pub use compactor::{CompactionState, CompactionStats};
pub use compose::{DEFAULT_NEGATIVE_WEIGHT, QueryPart};
pub use database::{Database, Pair, Record, StatValue, Stats, verify};
pub use error::{CorruptionError, Error, ForkedError, InvalidInput, IoError, ModelError};
pub use filter::{Predicate, PredicateError};
pub use hivlp_encoders::{
    Embedding, EncodeError, Encoder, EncoderError, EncoderOptions, ImageInput,
};
/// What [`Database::update`] changes in an item.
pub use hivlp_storage::MetadataUpdate;
pub use hivlp_storage::{
    CompactionReport, DroppedWalTail, Durability, ElemType, MAX_ID, Metric, Modality as Target,
    Occupancy, Schema, StoreStats, Tier, UnknownElemType, UnknownMetric, VerifyReport, occupancy,
};
pub use params::{
    DEFAULT_CANDIDATES, Filter, Hit, Item, MAX_CANDIDATES, ModelChoice, NewDatabase, Options,
    Query, SearchParams, SearchTiming, parse_target,
};
pub use projection::{CoarseDerivation, retained_energy};

/// The coarse scan of one column on its own, for the scan-bandwidth benchmark (not part of the
/// database's API).
#[doc(hidden)]
pub mod coarse_scan {
    pub use crate::scan::{Kernels, top_rows};
}

/// The README's Rust example, run as a doctest.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Result of every fallible [`Database`] call.
pub type Result<T> = std::result::Result<T, Error>;
