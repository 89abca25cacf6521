//! `hivlp-storage`: the on-disk format of a hivlp database. It knows nothing of models.
//!
//! A database is a directory (see `FORMAT.md`): immutable memory-mapped segments (coarse and
//! fine vectors in separate files, so a scan of the small coarse tier never touches the fine
//! one), a write-ahead log whose in-memory image is the memtable, and a manifest naming the
//! live files. [`Store`] is the entry point; readers take a [`View`] and scan its
//! [`Source`]s' [`VectorColumn`]s, skipping rows in [`Source::skip`].
//!
//! The folders are the layers, each using only those before it: `format/` (bytes: codec and
//! footers, file names, manifest, WAL and segment encodings; no I/O), `io/` (files: the
//! [`io::Dir`] seam every file operation goes through, with [`io::FaultyDir`] to test
//! failures and power loss; the WAL writer and the one WAL replay, manifest install,
//! durable file writes), `data/` (what readers hold: bitmaps, vector columns, segments,
//! the memtable, sources and views) and `store/` (the [`Store`], one file per job: open and recovery, writes, flush, compaction,
//! snapshot, clean-up).
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
//! Metadata stays opaque bytes per row; its typed top-level fields (see [`FieldType`] for
//! the rule) are read per source with [`Source::field`]: a segment's column file
//! (`seg-<id>.field-<n>`, mapped on first use), or the memtable's columns built at insert.
//! [`Store::update`] replaces a row's caption, URI or metadata, keeping its vectors.
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
pub mod io;
mod schema;
mod store;
mod verify;

/// The manifest's format (kept at its old path; the code lives in `format/manifest.rs`, its
/// install and read in `io/manifest.rs`).
pub mod manifest {
    pub use crate::format::manifest::{Manifest, check_schema, manifest_file_name};
    pub use crate::schema::MAX_DIM;
}

/// Segments (kept at their old path): descriptors and file names from `format/segment.rs`,
/// the reader from `data/segment.rs`, the rewrite hook of the writer in `store/`.
pub mod segment {
    pub use crate::data::kmeans::ROWS_PER_PARTITION;
    pub use crate::data::segment::Segment;
    pub use crate::format::partitions::{MAX_PARTITIONS, PartitionIndex, PartitionRows};
    pub use crate::format::segment::{
        FIELD_COLUMNS, SegmentInfo, field_column_file_name, field_directory_file_name,
        meta_file_name, partition_file_name, tombstone_file_name, vector_file_name,
    };
    pub use crate::store::{CoarseRewrite, Rewrite};
}

/// The WAL's record format (kept at its old path; the code lives in `format/wal/`, the writer
/// and the replay in `io/wal.rs`).
pub mod wal {
    pub use crate::format::wal::{
        DroppedWalTail, EncodedRow, EncodedVectors, LogContents, MAX_RECORD_LEN, WalRecord,
        decode_log, wal_file_name,
    };
}

pub use data::bitmap::Bitmap;
pub use data::column::VectorColumn;
pub use data::segment::RowMeta;
pub use data::source::{Source, View};
pub use data::vectors::{
    ROW_ALIGN, UNIT_NORM_TOLERANCE, encode_row, file_stride, l2_norm, l2_normalize, packed_stride,
    padded_stride, quantize_i8, rows_region_len,
};
pub use error::{
    CommitError, CompactionError, CorruptionError, Error, ForkedError, InvalidInput, IoError,
    OpenError, SnapshotError, StorageError,
};
pub use format::codec::{FOOTER_LEN, FOOTER_MAGIC, FORMAT_VERSION, VerifyLevel};
pub use format::field::{FieldType, FieldTypes, FieldValue, Tags, parse_timestamp};
pub use format::field_column::FieldColumn;
pub use format::file_name::FileName;
pub use format::wal::DroppedWalTail;
pub use schema::{
    ElemType, MAX_DIM, Metric, Modality, Properties, Row, Schema, Tier, TierVectors,
    UnknownElemType, UnknownMetric,
};
pub use store::{CoarseRewrite, Rewrite};
pub use store::{
    CompactionReport, DEFAULT_PARTITION_MIN_ROWS, Durability, MAX_CAPTION_BYTES, MAX_ID,
    MAX_METADATA_BYTES, MAX_PROPERTY_KEY_BYTES, MAX_URI_BYTES, MetadataUpdate, Occupancy, Store,
    StoreOptions, StoreStats, occupancy,
};
pub use store::{DefaultMergePolicy, MergeAll, MergePolicy, SegmentStats, TieredMergePolicy};
pub use verify::{VerifyReport, verify, verify_in};

#[cfg(test)]
mod tests;
