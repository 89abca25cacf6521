//! The write-ahead log: `wal-<n>.log` files of framed records `[len u32][crc32 u32][payload]`.
//!
//! `crc32` covers the four length bytes and the payload, so a damaged length is caught too.
//! The payload starts with a sequence number (`u64`, +1 per record, continuing across files),
//! the durable length (`u64`: how many bytes of the file had been fsynced when the record was
//! appended) and a record kind. [`decode_log`] is the entry point of the WAL fuzz target;
//! [`replay_logs`](crate::io::wal::replay_logs) replays a database's WAL files for both open
//! and verify.
//!
//! Lost writes versus corruption: bytes past the last fsync may be missing after a crash (a
//! torn final record; in `Buffered` mode, after a power cut, also a page lost while later ones
//! reached the disk), bytes before it may not. When a frame at offset P fails its checks, the
//! decoder scans the rest of the file for valid frames (plausible length, a sequence number
//! after the last good one, matching crc). If one of them was appended after P had been
//! fsynced (its durable length is past P), the damage is in durable data: corruption.
//! Otherwise replay stops at P, reports the dropped tail, and the writer truncates it. The
//! scan is linear in the length of the tail (see [`PrefixCrcs`](frame::PrefixCrcs)).

use std::path::{Path, PathBuf};

use crate::error::{CorruptionError, InvalidInput};
use crate::format::codec::{Decoder, Encoder};
use crate::format::file_name::FileName;
use crate::schema::{ElemType, Schema};

mod frame;
#[cfg(test)]
mod tests;

pub(crate) use frame::crc_extend;
use frame::{frame_at, scan_after_damage};

/// Largest payload one record may hold (a batch that encodes larger is refused).
pub const MAX_RECORD_LEN: usize = 1 << 30;
pub(crate) const HEADER_LEN: usize = 8;
/// Sequence number and durable length, the payload's bytes before the record kind.
pub(crate) const PAYLOAD_PREFIX: usize = 16;
const MIN_PAYLOAD: usize = PAYLOAD_PREFIX + 1;
/// How far past the last good sequence number a frame found after a bad one may be.
const SEQ_WINDOW: u64 = 1 << 32;

pub(crate) const KIND_INSERT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_SET_PROPERTY: u8 = 3;
pub(crate) const KIND_UPDATE: u8 = 4;

/// `wal-<n>.log`.
pub fn wal_file_name(number: u64) -> String {
    FileName::Wal(number).to_string()
}

/// Refuses a record whose body (from the kind byte on) would not fit in one frame.
pub(crate) fn check_body_len(body_len: usize) -> Result<(), InvalidInput> {
    let len = body_len.saturating_add(PAYLOAD_PREFIX);
    if len > MAX_RECORD_LEN {
        return Err(InvalidInput::BatchTooLarge {
            len,
            max: MAX_RECORD_LEN,
        });
    }
    Ok(())
}

/// Body length of a delete record of `ids` ids (see [`encode_delete`]).
pub(crate) fn delete_body_len(ids: usize) -> usize {
    ids.saturating_mul(8).saturating_add(5)
}

/// The encoded vectors of one modality of a row in an insert record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodedVectors<'a> {
    pub coarse: &'a [u8],
    pub coarse_scale: f32,
    pub fine: &'a [u8],
    pub fine_scale: f32,
}

/// One row of an insert record, borrowing the log's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRow<'a> {
    pub id: u64,
    pub caption: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub metadata: &'a [u8],
    /// Image, text.
    pub vectors: [Option<EncodedVectors<'a>>; 2],
}

/// A decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum WalRecord<'a> {
    Insert(Vec<EncodedRow<'a>>),
    Delete(Vec<u64>),
    SetProperty {
        key: &'a str,
        value: &'a [u8],
    },
    /// Each row replaces the live row with its id (same encoding as an insert): the old row
    /// is tombstoned and the new one inserted, in one record.
    Update(Vec<EncodedRow<'a>>),
}

/// The end of a WAL file that replay drops because it lies past the last fsync: a torn final
/// record, or (after a power cut in `Buffered` mode) the records after a write that never
/// reached the disk. Not corruption; the writes in it are lost, which `Buffered` permits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedWalTail {
    pub file: PathBuf,
    /// Where the valid prefix ends: the first incomplete or damaged frame.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub bytes: u64,
    /// Intact records found after the damaged one (acknowledged writes lost with it).
    pub records: usize,
}

/// The valid prefix of a log file.
#[derive(Debug)]
pub struct LogContents<'a> {
    /// Records with their sequence numbers, in order.
    pub records: Vec<(u64, WalRecord<'a>)>,
    /// Bytes of valid frames; a writer truncates the file to this length.
    pub valid_len: u64,
    /// Sequence number the next record carries (`None` while unknown: no record, and no
    /// first sequence number given).
    pub next_seq: Option<u64>,
    /// What follows the valid prefix, if anything.
    pub dropped: Option<DroppedWalTail>,
}

/// Decodes a whole log file. `first_seq`, when known, is the sequence number its first record
/// must carry. Errors are corruption: a damaged frame in durable data, a sequence gap, a
/// durable length past the record's own offset (also what a log of another format version
/// shows), or a well-framed record whose payload does not decode against `schema`.
pub fn decode_log<'a>(
    bytes: &'a [u8],
    schema: &Schema,
    file: &Path,
    first_seq: Option<u64>,
) -> Result<LogContents<'a>, CorruptionError> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let mut expected = first_seq;
    while pos < bytes.len() {
        let Some(frame) = frame_at(bytes, pos) else {
            let after = scan_after_damage(bytes, pos, expected.map(|e| e.saturating_sub(1)));
            if let Some(at) = after.durable_evidence {
                return Err(CorruptionError::new(
                    file,
                    pos as u64,
                    format!(
                        "damaged WAL record in durable data: the valid record at byte {at} was \
                         appended after it had been fsynced"
                    ),
                ));
            }
            return Ok(LogContents {
                records,
                valid_len: pos as u64,
                next_seq: expected,
                dropped: Some(DroppedWalTail {
                    file: file.to_path_buf(),
                    offset: pos as u64,
                    bytes: (bytes.len() - pos) as u64,
                    records: after.records,
                }),
            });
        };
        if frame.durable_len > pos as u64 {
            return Err(CorruptionError::new(
                file,
                pos as u64 + HEADER_LEN as u64,
                format!(
                    "WAL record at byte {pos} claims {} durable bytes before it (a log of another \
                     format version?)",
                    frame.durable_len
                ),
            ));
        }
        if let Some(e) = expected
            && frame.seq != e
        {
            return Err(CorruptionError::new(
                file,
                pos as u64 + HEADER_LEN as u64,
                format!("WAL sequence number {}, expected {e}", frame.seq),
            ));
        }
        let base = (pos + HEADER_LEN) as u64;
        records.push((
            frame.seq,
            decode_payload(frame.payload, schema, file, base)?,
        ));
        expected =
            Some(frame.seq.checked_add(1).ok_or_else(|| {
                CorruptionError::new(file, base, "WAL sequence number overflows")
            })?);
        pos += HEADER_LEN + frame.payload.len();
    }
    Ok(LogContents {
        records,
        valid_len: pos as u64,
        next_seq: expected,
        dropped: None,
    })
}

fn vector_bytes(elem: ElemType, dim: usize) -> usize {
    elem.size() * dim
}

fn decode_payload<'a>(
    payload: &'a [u8],
    schema: &Schema,
    file: &Path,
    base: u64,
) -> Result<WalRecord<'a>, CorruptionError> {
    let mut d = Decoder::new(payload, base, file);
    d.u64("sequence number")?;
    d.u64("durable length")?;
    let kind = d.u8("record kind")?;
    let record = match kind {
        KIND_INSERT => WalRecord::Insert(decode_rows(&mut d, schema)?),
        KIND_UPDATE => WalRecord::Update(decode_rows(&mut d, schema)?),
        KIND_DELETE => {
            let n = d.len(d.remaining() / 8, "id count")?;
            WalRecord::Delete((0..n).map(|_| d.u64("id")).collect::<Result<_, _>>()?)
        }
        KIND_SET_PROPERTY => WalRecord::SetProperty {
            key: d.string("property key")?,
            value: d.bytes("property value")?,
        },
        k => return Err(d.error(format!("unknown record kind {k}"))),
    };
    d.finish("WAL record")?;
    Ok(record)
}

/// The rows of an insert or update record.
fn decode_rows<'a>(
    d: &mut Decoder<'a, '_>,
    schema: &Schema,
) -> Result<Vec<EncodedRow<'a>>, CorruptionError> {
    let n = d.len(d.remaining(), "row count")?;
    // Each row takes at least 15 bytes; never trust the count for the allocation.
    let mut rows = Vec::with_capacity(n.min(d.remaining() / 15));
    for _ in 0..n {
        let id = d.u64("id")?;
        let caption = d.opt_string("caption")?;
        let uri = d.opt_string("uri")?;
        let metadata = d.bytes("metadata")?;
        let mask = d.u8("modality mask")?;
        if mask & !3 != 0 {
            return Err(d.error(format!("modality mask {mask:#x}")));
        }
        let mut vectors = [None, None];
        for (i, v) in vectors.iter_mut().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            let mut tier = |elem: ElemType, dim: usize| -> Result<_, CorruptionError> {
                let scale = if elem == ElemType::I8 {
                    f32::from_bits(d.u32("scale")?)
                } else {
                    0.0
                };
                Ok((d.take(vector_bytes(elem, dim), "vector")?, scale))
            };
            let (coarse, coarse_scale) = tier(schema.coarse_type, schema.coarse_dim)?;
            let (fine, fine_scale) = tier(schema.fine_type, schema.fine_dim)?;
            *v = Some(EncodedVectors {
                coarse,
                coarse_scale,
                fine,
                fine_scale,
            });
        }
        if mask == 0 {
            return Err(d.error(format!("row {id} has no vectors")));
        }
        rows.push(EncodedRow {
            id,
            caption,
            uri,
            metadata,
            vectors,
        });
    }
    if rows.is_empty() {
        return Err(d.error("empty insert record"));
    }
    Ok(rows)
}

pub(crate) fn encode_delete(ids: &[u64]) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(KIND_DELETE);
    e.u32(ids.len() as u32);
    for id in ids {
        e.u64(*id);
    }
    debug_assert_eq!(e.buf.len(), delete_body_len(ids.len()));
    e.buf
}

pub(crate) fn encode_set_property(key: &str, value: &[u8]) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(KIND_SET_PROPERTY);
    e.bytes(key.as_bytes());
    e.bytes(value);
    e.buf
}
