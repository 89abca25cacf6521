//! The manifest: everything needed to open a database besides the WAL. `CURRENT` names the
//! live `MANIFEST-<n>`; both are replaced atomically (write a new file, fsync it, rename,
//! fsync the directory: see [`crate::io::manifest`]). [`Manifest::decode`] is the entry point
//! of the manifest fuzz target.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::CorruptionError;
use crate::format::codec::{self, Decoder, Encoder, FileKind};
use crate::format::file_name::FileName;
use crate::format::segment::{ALL_SEGMENT_FLAGS, SegmentInfo, decode_elem, encode_elem};
use crate::schema::{MAX_DIM, Metric, Schema};
const MAX_SEGMENTS: usize = 1 << 20;
const MAX_PROPERTIES: usize = 1 << 16;

/// The decoded contents of a `MANIFEST-<n>` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Dimensions, element types and metric, fixed at creation.
    pub schema: Schema,
    /// Smallest row id never used.
    pub next_id: u64,
    /// Id the next new segment gets.
    pub next_segment_id: u64,
    /// WAL files numbered `log_number` and up are replayed on open.
    pub log_number: u64,
    /// Sequence number of the first record of WAL `log_number`.
    pub next_seq: u64,
    /// Live segments, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// Opaque engine state (coarse projection, model name and hash, …).
    pub properties: BTreeMap<String, Vec<u8>>,
}

/// `MANIFEST-<n>`.
pub fn manifest_file_name(number: u64) -> String {
    FileName::Manifest(number).to_string()
}

/// Checks that a schema can be stored.
pub fn check_schema(s: &Schema) -> Result<(), String> {
    for (what, dim) in [("fine_dim", s.fine_dim), ("coarse_dim", s.coarse_dim)] {
        if dim == 0 || dim > MAX_DIM {
            return Err(format!("{what} is {dim}; it must be 1..={MAX_DIM}"));
        }
    }
    Ok(())
}

fn encode_metric(m: Metric) -> u8 {
    match m {
        Metric::Cosine => 0,
        Metric::InnerProduct => 1,
    }
}

fn decode_metric(b: u8) -> Option<Metric> {
    Some(match b {
        0 => Metric::Cosine,
        1 => Metric::InnerProduct,
        _ => return None,
    })
}

impl Manifest {
    /// The file's bytes: body then footer.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        let s = &self.schema;
        e.u32(s.fine_dim as u32);
        e.u32(s.coarse_dim as u32);
        e.u8(encode_elem(s.fine_type));
        e.u8(encode_elem(s.coarse_type));
        e.u8(encode_metric(s.metric));
        e.u64(self.next_id);
        e.u64(self.next_segment_id);
        e.u64(self.log_number);
        e.u64(self.next_seq);
        e.u32(self.segments.len() as u32);
        for seg in &self.segments {
            e.u64(seg.id);
            e.u64(seg.rows);
            e.u8(seg.modalities);
            e.u64(seg.del_gen);
        }
        e.u32(self.properties.len() as u32);
        for (k, v) in &self.properties {
            e.bytes(k.as_bytes());
            e.bytes(v);
        }
        let crc = crc32fast::hash(&e.buf);
        let footer = codec::footer(FileKind::Manifest, e.buf.len() as u64, crc);
        e.buf.extend_from_slice(&footer);
        e.buf
    }

    /// Decodes and fully checks a manifest file's bytes; `file` names it in errors.
    pub fn decode(bytes: &[u8], file: &Path) -> Result<Manifest, CorruptionError> {
        let body = codec::check_footer(bytes, FileKind::Manifest, file, true)?;
        let mut d = Decoder::new(body, 0, file);
        let fine_dim = d.u32("fine_dim")? as usize;
        let coarse_dim = d.u32("coarse_dim")? as usize;
        let fine_type = decode_elem(d.u8("fine type")?).ok_or_else(|| d.error("fine type"))?;
        let coarse_type =
            decode_elem(d.u8("coarse type")?).ok_or_else(|| d.error("coarse type"))?;
        let metric = decode_metric(d.u8("metric")?).ok_or_else(|| d.error("metric"))?;
        let schema = Schema {
            fine_dim,
            coarse_dim,
            fine_type,
            coarse_type,
            metric,
        };
        check_schema(&schema).map_err(|e| CorruptionError::new(file, 0, e))?;
        let next_id = d.u64("next_id")?;
        let next_segment_id = d.u64("next_segment_id")?;
        let log_number = d.u64("log_number")?;
        let next_seq = d.u64("next_seq")?;
        let n = d.len(MAX_SEGMENTS, "segment count")?;
        let mut segments: Vec<SegmentInfo> = Vec::with_capacity(n.min(d.remaining() / 25));
        for _ in 0..n {
            let seg = SegmentInfo {
                id: d.u64("segment id")?,
                rows: d.u64("segment rows")?,
                modalities: d.u8("segment modalities")?,
                del_gen: d.u64("tombstone generation")?,
            };
            if seg.id >= next_segment_id || segments.iter().any(|s| s.id == seg.id) {
                return Err(d.error(format!("segment id {} repeated or not allocated", seg.id)));
            }
            if seg.rows == 0
                || seg.rows > u32::MAX as u64
                || seg.modalities & !ALL_SEGMENT_FLAGS != 0
                || (seg.modalities >> 3) & 3 & !seg.modalities != 0
            {
                return Err(d.error(format!("segment {} has an impossible shape", seg.id)));
            }
            segments.push(seg);
        }
        let n = d.len(MAX_PROPERTIES, "property count")?;
        let mut properties = BTreeMap::new();
        for _ in 0..n {
            let k = d.string("property key")?.to_owned();
            let v = d.bytes("property value")?.to_vec();
            properties.insert(k, v);
        }
        d.finish("manifest")?;
        Ok(Manifest {
            schema,
            next_id,
            next_segment_id,
            log_number,
            next_seq,
            segments,
            properties,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schema::ElemType;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            schema: Schema {
                fine_dim: 256,
                coarse_dim: 64,
                fine_type: ElemType::F16,
                coarse_type: ElemType::I8,
                metric: Metric::InnerProduct,
            },
            next_id: 42,
            next_segment_id: 9,
            log_number: 3,
            next_seq: 77,
            segments: vec![
                SegmentInfo {
                    id: 2,
                    rows: 10,
                    modalities: 3,
                    del_gen: 0,
                },
                SegmentInfo {
                    id: 8,
                    rows: 5,
                    modalities: 1,
                    del_gen: 4,
                },
            ],
            properties: [("projection".to_string(), vec![1, 2, 3])].into(),
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let m = sample();
        let bytes = m.encode();
        let p = Path::new("MANIFEST-000001");
        assert_eq!(Manifest::decode(&bytes, p).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let e = Manifest::decode(&bad, p).unwrap_err();
            assert_eq!(e.file, p);
        }
        for n in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..n], p).is_err());
        }
    }
}
