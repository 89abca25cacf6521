//! What readers scan, in memory or mapped: bitmaps, vector columns and row encoding.

pub(crate) mod bitmap;
pub(crate) mod column;
pub(crate) mod vectors;
