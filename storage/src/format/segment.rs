//! Segment descriptors, bytes only: the manifest's entry for a segment, the modality and
//! element-type codes, the descriptor that ends a vector file, the layout of the metadata
//! archive, and segment file names.

use crate::format::file_name::FileName;
use crate::schema::{ElemType, Modality, Tier};

/// Size of the descriptor that ends a vector file's body (before the footer).
pub(crate) const DESCRIPTOR_LEN: usize = 32;

/// A segment as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub id: u64,
    pub rows: u64,
    /// Bit 0: some row has image vectors (the `image.*` files exist); bit 1: text.
    pub modalities: u8,
    /// Tombstone file generation; 0 means no tombstone file (no deleted rows).
    pub del_gen: u64,
}

impl SegmentInfo {
    pub fn has_modality(&self, m: Modality) -> bool {
        self.modalities & modality_bit(m) != 0
    }
}

pub(crate) fn modality_bit(m: Modality) -> u8 {
    match m {
        Modality::Image => 1,
        Modality::Text => 2,
    }
}

/// `seg-<id>.<image|text>.<coarse|fine>`.
pub fn vector_file_name(id: u64, modality: Modality, tier: Tier) -> String {
    FileName::SegmentVectors { id, modality, tier }.to_string()
}

/// `seg-<id>.meta`.
pub fn meta_file_name(id: u64) -> String {
    FileName::SegmentMeta(id).to_string()
}

/// `seg-<id>.del-<gen>`.
pub fn tombstone_file_name(id: u64, generation: u64) -> String {
    FileName::Tombstones { id, generation }.to_string()
}

/// The columnar metadata archive of a segment (rkyv). Row `r` of every vector file belongs to
/// `ids[r]`; `order` lists rows by ascending id so that lookups are a binary search over the
/// mapped file, without an index built in memory.
#[derive(rkyv::Archive, rkyv::Serialize)]
pub(crate) struct SegmentMeta {
    pub(crate) ids: Vec<u64>,
    pub(crate) order: Vec<u32>,
    pub(crate) captions: Vec<Option<String>>,
    pub(crate) uris: Vec<Option<String>>,
    pub(crate) metadata: Vec<Vec<u8>>,
    pub(crate) has_image: Vec<u64>,
    pub(crate) has_text: Vec<u64>,
}

pub(crate) fn encode_elem(e: ElemType) -> u8 {
    match e {
        ElemType::F32 => 0,
        ElemType::F16 => 1,
        ElemType::I8 => 2,
    }
}

pub(crate) fn decode_elem(b: u8) -> Option<ElemType> {
    Some(match b {
        0 => ElemType::F32,
        1 => ElemType::F16,
        2 => ElemType::I8,
        _ => return None,
    })
}
