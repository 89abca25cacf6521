//! Segment descriptors, bytes only: the manifest's entry for a segment, the modality and
//! element-type codes, the descriptor that ends a vector file, the layout of the metadata
//! archive, and segment file names.

use std::path::Path;

use crate::error::CorruptionError;
use crate::format::codec::{Decoder, Encoder};
use crate::format::file_name::FileName;
use crate::schema::{ElemType, Modality, Tier};

/// Size of the descriptor that ends a vector file's body (before the footer).
pub(crate) const DESCRIPTOR_LEN: usize = 32;

/// A segment as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub id: u64,
    pub rows: u64,
    /// Bit 0: some row has image vectors (the `image.*` files exist); bit 1: text; bit 2
    /// ([`FIELD_COLUMNS`]): the segment was written with field columns (`seg-<id>.fields`
    /// exists). Segments written before field columns existed lack bit 2 and derive their
    /// fields from the metadata archive. Bits 3 and 4 ([`partitions_bit`]): the image / text
    /// coarse vectors are partitioned (`seg-<id>.<image|text>.parts` exists); segments
    /// written before partitions existed, and small ones, lack them and are scanned flat.
    pub modalities: u8,
    /// Tombstone file generation; 0 means no tombstone file (no deleted rows).
    pub del_gen: u64,
}

impl SegmentInfo {
    pub fn has_modality(&self, m: Modality) -> bool {
        self.modalities & modality_bit(m) != 0
    }

    /// Whether the segment has a field directory and column files.
    pub fn has_field_columns(&self) -> bool {
        self.modalities & FIELD_COLUMNS != 0
    }

    /// Whether the segment has a partition file for modality `m`.
    pub fn has_partitions(&self, m: Modality) -> bool {
        self.modalities & partitions_bit(m) != 0
    }
}

/// [`SegmentInfo::modalities`] bit: the segment has field column files.
pub const FIELD_COLUMNS: u8 = 4;
/// Every bit [`SegmentInfo::modalities`] may hold.
pub(crate) const ALL_SEGMENT_FLAGS: u8 = 1 | 2 | FIELD_COLUMNS | 8 | 16;

/// [`SegmentInfo::modalities`] bit: modality `m`'s coarse vectors have a partition file.
pub(crate) fn partitions_bit(m: Modality) -> u8 {
    modality_bit(m) << 3
}

/// Most field columns one segment gets: the most frequent fields (ties by name) up to this
/// many, so that metadata with thousands of distinct keys cannot explode into as many files.
/// Fields past it are answered from the metadata archive, like a segment without columns.
pub(crate) const MAX_FIELD_COLUMNS: usize = 256;

/// The body of `seg-<id>.fields`: `rows u64`, `overflow u8` (1: some fields have no column,
/// see [`MAX_FIELD_COLUMNS`]), `count u32`, then the field names (u32 length + UTF-8) in
/// strictly ascending order; name `i` is stored in `seg-<id>.field-<i>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldDirectory {
    pub(crate) rows: u64,
    pub(crate) overflow: bool,
    pub(crate) names: Vec<String>,
}

impl FieldDirectory {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.u64(self.rows);
        e.u8(u8::from(self.overflow));
        e.u32(self.names.len() as u32);
        for n in &self.names {
            e.bytes(n.as_bytes());
        }
        e.buf
    }

    pub(crate) fn decode(body: &[u8], file: &Path) -> Result<FieldDirectory, CorruptionError> {
        let mut d = Decoder::new(body, 0, file);
        let rows = d.u64("row count")?;
        let overflow = match d.u8("overflow flag")? {
            0 => false,
            1 => true,
            b => return Err(d.error(format!("overflow flag {b}"))),
        };
        let count = d.len(MAX_FIELD_COLUMNS, "field count")?;
        let mut names: Vec<String> = Vec::with_capacity(count);
        for _ in 0..count {
            let name = d.string("field name")?;
            if names.last().is_some_and(|prev| prev.as_str() >= name) {
                return Err(d.error("field names are not in strictly ascending order"));
            }
            names.push(name.to_owned());
        }
        d.finish("field directory")?;
        Ok(FieldDirectory {
            rows,
            overflow,
            names,
        })
    }

    /// Column index of field `name`.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }
}

/// `seg-<id>.fields`.
pub fn field_directory_file_name(id: u64) -> String {
    FileName::FieldDirectory(id).to_string()
}

/// `seg-<id>.field-<column>`.
pub fn field_column_file_name(id: u64, column: usize) -> String {
    FileName::FieldColumn {
        id,
        column: column as u64,
    }
    .to_string()
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

/// `seg-<id>.<image|text>.parts`.
pub fn partition_file_name(id: u64, modality: Modality) -> String {
    FileName::SegmentPartitions { id, modality }.to_string()
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
