//! What readers scan, in memory or mapped: bitmaps, vector columns and row encoding, the
//! segment reader, and the [`Source`](source::Source)s of a [`View`](source::View) (segments
//! and memtable batches). Nothing here writes a file.

pub(crate) mod bitmap;
pub(crate) mod column;
pub(crate) mod fields;
pub(crate) mod kmeans;
pub(crate) mod segment;
pub(crate) mod source;
pub(crate) mod vectors;
