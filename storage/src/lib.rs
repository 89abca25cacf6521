//! `hivlp-storage`: the on-disk format of a hivlp database. It knows nothing of models.
//!
//! A database is a directory (see `FORMAT.md`): immutable memory-mapped segments (coarse and
//! fine vectors in separate files, so a scan of the small coarse tier never touches the fine
//! one), a write-ahead log whose in-memory image is the memtable, and a manifest naming the
//! live files. [`Store`] is the entry point; readers take a [`View`] and scan its
//! [`Source`]s' [`VectorColumn`]s, skipping rows in [`Source::skip`].
//!
//! A scan over one modality, the shape of the engine's coarse stage:
//!
//! ```
//! use hivlp_storage::*;
//! let dir = tempfile::tempdir().unwrap();
//! let schema = Schema { fine_dim: 8, coarse_dim: 4, fine_type: ElemType::F16,
//!                       coarse_type: ElemType::I8, metric: Metric::InnerProduct };
//! let store = Store::create(dir.path(), schema, StoreOptions::default()).unwrap();
//! let rows = (0..10u64).map(|id| Row {
//!     id,
//!     text: Some(TierVectors { coarse: vec![id as f32; 4], fine: vec![1.0; 8] }),
//!     ..Row::default()
//! });
//! store.insert(rows.collect()).unwrap();
//! store.delete(&[9]).unwrap();
//! let view = store.view();
//! let query = [1.0f32; 4];
//! let mut best = (f32::MIN, 0);
//! let mut row_f32 = Vec::new();
//! for source in view.sources() {
//!     let coarse = source.coarse(Modality::Text);
//!     for row in 0..coarse.len() {
//!         if source.skip(Modality::Text).get(row) {
//!             continue; // deleted, or no text vectors
//!         }
//!         coarse.row_to_f32(row, &mut row_f32);
//!         let score: f32 = row_f32.iter().zip(&query).map(|(a, b)| a * b).sum();
//!         if score > best.0 {
//!             best = (score, source.id(row));
//!         }
//!     }
//! }
//! assert_eq!(best.1, 8);
//! ```
//!
//! Fuzzing entry points: [`wal::decode_log`], [`manifest::Manifest::decode`],
//! [`segment::Segment::open`] (and [`Store::open`] / [`verify()`] on a damaged directory).

#[cfg(target_endian = "big")]
compile_error!(
    "hivlp's file format maps little-endian data directly; big-endian hosts are not supported"
);

mod data;
mod error;
mod format;
pub mod manifest;
mod merge;
mod schema;
pub mod segment;
mod source;
mod store;
mod verify;
pub mod wal;

pub use data::bitmap::Bitmap;
pub use data::column::VectorColumn;
pub use data::vectors::{ROW_ALIGN, encode_row, stride};
pub use error::{
    CommitError, CompactionError, CorruptionError, Error, ForkedError, InvalidInput, IoError,
    OpenError, SnapshotError, Tier,
};
pub use format::codec::{FOOTER_LEN, FOOTER_MAGIC, FORMAT_VERSION, VerifyLevel};
pub use format::file_name::FileName;
pub use merge::{DefaultMergePolicy, MergeAll, MergePolicy, SegmentStats};
pub use schema::{ElemType, Metric, Modality, Properties, Row, Schema, TierVectors};
pub use segment::{CoarseRewrite, Rewrite};
pub use source::{RowMeta, Source, View};
pub use store::{
    CompactionReport, Durability, MAX_CAPTION_BYTES, MAX_ID, MAX_METADATA_BYTES,
    MAX_PROPERTY_KEY_BYTES, MAX_URI_BYTES, Occupancy, Store, StoreOptions, StoreStats, occupancy,
};
pub use verify::{VerifyReport, verify};
pub use wal::DroppedWalTail;

#[cfg(test)]
mod tests;
