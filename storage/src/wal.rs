//! The write-ahead log: `wal-<n>.log` files of framed records `[len u32][crc32 u32][payload]`.
//!
//! `crc32` covers the four length bytes and the payload, so a damaged length is caught too.
//! The payload starts with a sequence number (`u64`, +1 per record, continuing across files),
//! the durable length (`u64`: how many bytes of the file had been fsynced when the record was
//! appended) and a record kind. [`decode_log`] is the entry point of the WAL fuzz target;
//! [`replay_logs`] replays a database's WAL files for both open and verify.
//!
//! Lost writes versus corruption: bytes past the last fsync may be missing after a crash (a
//! torn final record; in `Buffered` mode, after a power cut, also a page lost while later ones
//! reached the disk), bytes before it may not. When a frame at offset P fails its checks, the
//! decoder scans the rest of the file for valid frames (plausible length, a sequence number
//! after the last good one, matching crc). If one of them was appended after P had been
//! fsynced (its durable length is past P), the damage is in durable data: corruption.
//! Otherwise replay stops at P, reports the dropped tail, and the writer truncates it. The
//! scan is linear in the length of the tail (see [`PrefixCrcs`]).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{CorruptionError, InvalidInput, IoError, OpenError};
use crate::format::codec::{Decoder, Encoder};
use crate::format::file_name::FileName;
use crate::schema::{ElemType, Modality, Schema};
use crate::source::Source;

/// Largest payload one record may hold (a batch that encodes larger is refused).
pub const MAX_RECORD_LEN: usize = 1 << 30;
const HEADER_LEN: usize = 8;
/// Sequence number and durable length, the payload's bytes before the record kind.
const PAYLOAD_PREFIX: usize = 16;
const MIN_PAYLOAD: usize = PAYLOAD_PREFIX + 1;
/// How far past the last good sequence number a frame found after a bad one may be.
const SEQ_WINDOW: u64 = 1 << 32;

const KIND_INSERT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_SET_PROPERTY: u8 = 3;

/// `wal-<n>.log`.
pub fn wal_file_name(number: u64) -> String {
    FileName::Wal(number).to_string()
}

/// Numbers of the `wal-<n>.log` files in `dir`, ascending.
fn log_numbers(dir: &Path) -> Result<Vec<u64>, IoError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| IoError::at(dir, "list", e))? {
        let entry = entry.map_err(|e| IoError::at(dir, "list", e))?;
        if let Some(FileName::Wal(n)) = entry.file_name().to_str().and_then(FileName::parse) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
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
    SetProperty { key: &'a str, value: &'a [u8] },
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

/// What [`replay_logs`] replayed.
#[derive(Debug)]
pub(crate) struct Replay {
    /// Numbers of the files replayed, ascending.
    pub numbers: Vec<u64>,
    /// Records applied.
    pub records: usize,
    /// Sequence number of the next record.
    pub next_seq: u64,
    /// Bytes of the last file's valid prefix (a writer appends after it).
    pub valid_len: u64,
    /// What replay dropped from the end of the last file.
    pub dropped_tail: Option<DroppedWalTail>,
}

/// Replays the files `wal-<n>.log`, `n >= log_number`, of `dir` in order, starting at
/// sequence number `next_seq` (the manifest's WAL position), handing each record to `apply`.
/// Open and verify both replay through here, so they accept and refuse the same logs. Only
/// the last file may end in a dropped tail: a writer fsyncs a file whole before it creates
/// the next one.
pub(crate) fn replay_logs(
    dir: &Path,
    schema: &Schema,
    log_number: u64,
    next_seq: u64,
    mut apply: impl FnMut(&Path, WalRecord<'_>) -> Result<(), CorruptionError>,
) -> Result<Replay, OpenError> {
    let mut numbers = log_numbers(dir)?;
    numbers.retain(|&n| n >= log_number);
    let mut replay = Replay {
        numbers: Vec::new(),
        records: 0,
        next_seq,
        valid_len: 0,
        dropped_tail: None,
    };
    for (i, &n) in numbers.iter().enumerate() {
        let path = dir.join(wal_file_name(n));
        let bytes = std::fs::read(&path).map_err(|e| IoError::at(&path, "read", e))?;
        let log = decode_log(&bytes, schema, &path, Some(replay.next_seq))?;
        if let Some(tail) = &log.dropped
            && i + 1 < numbers.len()
        {
            return Err(CorruptionError::new(
                &path,
                tail.offset,
                "damaged record in a WAL file that is not the last (it was fsynced whole)",
            )
            .into());
        }
        replay.records += log.records.len();
        for (_, record) in log.records {
            apply(&path, record)?;
        }
        replay.next_seq = log.next_seq.unwrap_or(replay.next_seq);
        replay.valid_len = log.valid_len;
        replay.dropped_tail = log.dropped;
    }
    replay.numbers = numbers;
    Ok(replay)
}

/// A well-formed frame: complete, crc matching. Its fields are not checked against the log.
struct Frame<'a> {
    seq: u64,
    durable_len: u64,
    payload: &'a [u8],
}

fn u32_at(bytes: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], pos: usize) -> u64 {
    u64::from_le_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"))
}

/// The frame at `pos`, if one is there.
fn frame_at(bytes: &[u8], pos: usize) -> Option<Frame<'_>> {
    let header = bytes.get(pos..pos.checked_add(HEADER_LEN)?)?;
    let len = u32_at(header, 0) as usize;
    if !(MIN_PAYLOAD..=MAX_RECORD_LEN).contains(&len) {
        return None;
    }
    let start = pos + HEADER_LEN;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (crc_extend(crc_extend(0, &header[..4]), payload) == u32_at(header, 4)).then(|| Frame {
        seq: u64_at(payload, 0),
        durable_len: u64_at(payload, 8),
        payload,
    })
}

/// What follows a damaged frame.
struct AfterDamage {
    /// Valid frames found (each one skipped over whole).
    records: usize,
    /// Offset of a valid frame appended after the damaged one had been fsynced.
    durable_evidence: Option<usize>,
}

/// Scans the bytes after the damaged frame at `bad` for valid frames whose sequence numbers
/// follow `last_seq`. Cheap filters (length, sequence window, durable length) run first; a
/// candidate's crc then comes from prefix crcs in constant time, so the scan is linear in the
/// tail even when every position passes the filters.
fn scan_after_damage(bytes: &[u8], bad: usize, last_seq: Option<u64>) -> AfterDamage {
    let (lo, hi) = match last_seq {
        Some(l) => (l.saturating_add(1), l.saturating_add(SEQ_WINDOW)),
        None => (0, SEQ_WINDOW << 8),
    };
    let from = bad + 1;
    let crcs = PrefixCrcs::new(bytes, from.min(bytes.len()));
    let mut after = AfterDamage {
        records: 0,
        durable_evidence: None,
    };
    let mut p = from;
    while p + HEADER_LEN + MIN_PAYLOAD <= bytes.len() {
        let len = u32_at(bytes, p) as usize;
        let start = p + HEADER_LEN;
        let plausible = (MIN_PAYLOAD..=MAX_RECORD_LEN).contains(&len)
            && len <= bytes.len() - start
            && (lo..=hi).contains(&u64_at(bytes, start))
            && u64_at(bytes, start + 8) <= p as u64;
        let valid = plausible && {
            let crc = shift(crc_extend(0, &bytes[p..p + 4]), len) ^ crcs.range(start, start + len);
            crc == u32_at(bytes, p + 4)
        };
        if !valid {
            p += 1;
            continue;
        }
        after.records += 1;
        if u64_at(bytes, start + 8) > bad as u64 {
            after.durable_evidence = Some(p);
            return after;
        }
        p = start + len;
    }
    after
}

/// crc32 of `bytes` continuing from `crc`, the crc32 of what precedes them (0 for nothing).
fn crc_extend(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(test)]
    tests::HASHED.with(|h| h.set(h.get() + bytes.len() as u64));
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(bytes);
    h.finalize()
}

/// Bytes between two prefix crcs of a [`PrefixCrcs`].
const CHECKPOINT: usize = 64;

/// crc32s of `bytes[base..base + k·CHECKPOINT]` for every k, so that the crc32 of any range
/// at or after `base` costs at most 2 × 63 bytes of hashing and a few multiplications, for
/// one u32 of memory per 64 bytes. crc32 arithmetic as in zlib's `crc32_combine`:
/// crc(A‖B) = crc(A)·x^(8|B|) ⊕ crc(B), so crc(B) follows from the crcs of A and A‖B.
struct PrefixCrcs<'a> {
    bytes: &'a [u8],
    base: usize,
    checkpoints: Vec<u32>,
}

impl<'a> PrefixCrcs<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        let mut checkpoints = Vec::with_capacity((bytes.len() - base) / CHECKPOINT + 1);
        checkpoints.push(0);
        for chunk in bytes[base..].chunks_exact(CHECKPOINT) {
            let last = *checkpoints.last().expect("starts with one");
            checkpoints.push(crc_extend(last, chunk));
        }
        Self {
            bytes,
            base,
            checkpoints,
        }
    }

    /// crc32 of `bytes[base..end]`.
    fn prefix(&self, end: usize) -> u32 {
        let k = (end - self.base) / CHECKPOINT;
        let at = self.base + k * CHECKPOINT;
        crc_extend(self.checkpoints[k], &self.bytes[at..end])
    }

    /// crc32 of `bytes[start..end]`.
    fn range(&self, start: usize, end: usize) -> u32 {
        self.prefix(end) ^ shift(self.prefix(start), end - start)
    }
}

/// The crc32 polynomial, bit-reflected: bit 31 holds the coefficient of x⁰.
const POLY: u32 = 0xedb8_8320;

/// a·b modulo the crc32 polynomial (zlib's `multmodp`).
const fn multiply(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut bit = 1u32 << 31;
    while bit != 0 {
        if a & bit != 0 {
            product ^= b;
        }
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        bit >>= 1;
    }
    product
}

/// `BYTE_SHIFTS[j][v]` = x^(8·v·256^j): with one table per byte of a length n, x^(8n) takes
/// at most three multiplications.
const BYTE_SHIFTS: [[u32; 256]; 4] = byte_shifts();

const fn byte_shifts() -> [[u32; 256]; 4] {
    let mut tables = [[0u32; 256]; 4];
    let mut step = 1u32 << (31 - 8); // x^8: one byte
    let mut j = 0;
    while j < 4 {
        tables[j][0] = 1 << 31; // x^0
        let mut v = 1;
        while v < 256 {
            tables[j][v] = multiply(tables[j][v - 1], step);
            v += 1;
        }
        step = multiply(tables[j][255], step);
        j += 1;
    }
    tables
}

/// `crc`·x^(8n): the crc32 of a message followed by `n` more bytes, less the crc32 of those.
fn shift(crc: u32, n: usize) -> u32 {
    debug_assert!(n < 1 << 32, "frame lengths fit in 32 bits");
    BYTE_SHIFTS
        .iter()
        .enumerate()
        .map(|(j, table)| table[(n >> (8 * j)) & 0xff])
        .fold(
            crc,
            |acc, x| if x == 1 << 31 { acc } else { multiply(x, acc) },
        )
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
        KIND_INSERT => {
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
            WalRecord::Insert(rows)
        }
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

/// Payload body (after sequence number and kind) of an insert of all rows of `batch`.
pub(crate) fn encode_insert(batch: &Source) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(KIND_INSERT);
    e.u32(batch.rows() as u32);
    for r in 0..batch.rows() {
        e.u64(batch.id(r));
        let m = batch.meta(r);
        e.opt_str(m.caption);
        e.opt_str(m.uri);
        e.bytes(m.metadata);
        let mask = Modality::ALL
            .iter()
            .enumerate()
            .filter(|(_, m)| batch.has(**m).get(r))
            .fold(0u8, |acc, (i, _)| acc | (1 << i));
        e.u8(mask);
        for m in Modality::ALL {
            if !batch.has(m).get(r) {
                continue;
            }
            for col in [batch.coarse(m), batch.fine(m)] {
                if let Some(s) = col.scales() {
                    e.u32(s[r].to_bits());
                }
                e.buf.extend_from_slice(col.row_bytes(r));
            }
        }
    }
    e.buf
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

/// The open WAL file a writer appends to.
#[derive(Debug)]
pub(crate) struct WalWriter {
    file: File,
    path: PathBuf,
    number: u64,
    len: u64,
    /// Bytes of the file fsynced so far; every record appended carries it (see the module
    /// documentation).
    durable_len: u64,
    next_seq: u64,
    last_sync: Instant,
}

impl WalWriter {
    /// Creates a new, empty log (the caller fsyncs the directory).
    pub fn create(dir: &Path, number: u64, next_seq: u64) -> Result<Self, IoError> {
        let path = dir.join(wal_file_name(number));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| IoError::at(&path, "create", e))?;
        Ok(Self::from_parts(file, path, number, 0, next_seq))
    }

    /// Reopens an existing log for appending after its first `valid_len` bytes: a dropped
    /// tail past them is cut off, and the rest fsynced (after a killed process it may exist
    /// only in the page cache, and the records appended next claim it durable).
    pub fn reopen(dir: &Path, number: u64, valid_len: u64, next_seq: u64) -> Result<Self, IoError> {
        let path = dir.join(wal_file_name(number));
        let file = File::options()
            .write(true)
            .open(&path)
            .map_err(|e| IoError::at(&path, "open", e))?;
        let len = file
            .metadata()
            .map_err(|e| IoError::at(&path, "stat", e))?
            .len();
        if len != valid_len {
            file.set_len(valid_len)
                .map_err(|e| IoError::at(&path, "truncate the dropped tail of", e))?;
        }
        file.sync_all()
            .map_err(|e| IoError::at(&path, "fsync", e))?;
        use std::io::Seek;
        let mut w = Self::from_parts(file, path, number, valid_len, next_seq);
        w.file
            .seek(std::io::SeekFrom::Start(valid_len))
            .map_err(|e| IoError::at(&w.path, "seek", e))?;
        Ok(w)
    }

    /// A writer at the end of a file whose `len` bytes are durable.
    fn from_parts(file: File, path: PathBuf, number: u64, len: u64, next_seq: u64) -> Self {
        Self {
            file,
            path,
            number,
            len,
            durable_len: len,
            next_seq,
            last_sync: Instant::now(),
        }
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Sequence number the next record will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one record (`body` starts with the kind byte, and passed [`check_body_len`])
    /// in a single write.
    pub fn append(&mut self, body: &[u8]) -> Result<(), IoError> {
        let len = PAYLOAD_PREFIX + body.len();
        let mut frame = Vec::with_capacity(HEADER_LEN + len);
        frame.extend_from_slice(&(len as u32).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&self.next_seq.to_le_bytes());
        frame.extend_from_slice(&self.durable_len.to_le_bytes());
        frame.extend_from_slice(body);
        let crc = crc_extend(crc_extend(0, &frame[..4]), &frame[HEADER_LEN..]);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all(&frame)
            .map_err(|e| IoError::at(&self.path, "append to", e))?;
        self.len += frame.len() as u64;
        self.next_seq += 1;
        Ok(())
    }

    /// fsyncs the log if anything was appended since the last sync.
    pub fn sync(&mut self) -> Result<(), IoError> {
        if self.len > self.durable_len {
            self.file
                .sync_data()
                .map_err(|e| IoError::at(&self.path, "fsync", e))?;
            self.durable_len = self.len;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Time since the last fsync.
    pub fn since_sync(&self) -> std::time::Duration {
        self.last_sync.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Metric;

    thread_local! {
        /// Bytes this thread has hashed with crc32: what the scan's cost is measured in.
        pub(super) static HASHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn schema() -> Schema {
        Schema {
            fine_dim: 4,
            coarse_dim: 2,
            fine_type: ElemType::F32,
            coarse_type: ElemType::I8,
            metric: Metric::Cosine,
        }
    }

    /// A log of `n` delete records, record `i` fsynced right after it was appended when
    /// `synced(i)`; the bytes and where each record ends.
    fn log_with(n: u64, synced: impl Fn(u64) -> bool) -> (tempfile::TempDir, Vec<u8>, Vec<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, 1).unwrap();
        let mut ends = Vec::new();
        for i in 0..n {
            w.append(&encode_delete(&[i, i + 100])).unwrap();
            if synced(i) {
                w.sync().unwrap();
            }
            ends.push(w.len() as usize);
        }
        let bytes = std::fs::read(dir.path().join(wal_file_name(1))).unwrap();
        (dir, bytes, ends)
    }

    fn decode(bytes: &[u8]) -> Result<LogContents<'_>, CorruptionError> {
        decode_log(bytes, &schema(), Path::new("wal"), Some(1))
    }

    #[test]
    fn round_trip_and_torn_tail_at_every_length() {
        let (_d, bytes, ends) = log_with(5, |_| true);
        let full = decode(&bytes).unwrap();
        assert_eq!(full.records.len(), 5);
        assert_eq!(full.records[2], (3, WalRecord::Delete(vec![2, 102])));
        assert_eq!((full.dropped, full.next_seq), (None, Some(6)));
        for cut in 0..bytes.len() {
            let log = decode(&bytes[..cut]).unwrap();
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(log.records.len(), complete, "cut at {cut}");
            assert_eq!(
                log.valid_len as usize,
                ends.get(complete.wrapping_sub(1)).map_or(0, |e| *e)
            );
        }
        // Zeros appended after a crash (file extended, data not written) are a torn tail.
        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 100]);
        let log = decode(&zeros).unwrap();
        let dropped = log.dropped.unwrap();
        assert_eq!(log.records.len(), 5);
        assert_eq!(
            (dropped.offset, dropped.bytes, dropped.records),
            (bytes.len() as u64, 100, 0)
        );
    }

    #[test]
    fn damage_before_valid_records_is_corruption() {
        let (_d, bytes, ends) = log_with(5, |_| true);
        for i in 0..ends[3] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let err = decode(&bad).unwrap_err();
            assert!(err.offset <= i as u64, "flip at {i}: {err}");
        }
        // Damage in the last record only is a torn tail.
        let mut bad = bytes.clone();
        bad[ends[3] + 10] ^= 1;
        let log = decode(&bad).unwrap();
        assert_eq!(log.records.len(), 4);
    }

    /// Buffered mode and a power cut: a write after the last fsync never reached the disk, but
    /// later ones did. Damage there drops the records from it on; damage in what had been
    /// fsynced is corruption.
    #[test]
    fn damage_after_the_last_fsync_drops_the_tail() {
        let (_d, bytes, ends) = log_with(6, |i| i < 2);
        let starts: Vec<usize> = [0].into_iter().chain(ends.iter().copied()).collect();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let k = ends.iter().position(|&e| e > i).unwrap();
            if k < 2 {
                let err = decode(&bad).unwrap_err();
                assert!(err.what.contains("durable data"), "flip at {i}: {err}");
                continue;
            }
            let log = decode(&bad).unwrap();
            let dropped = log.dropped.unwrap();
            assert_eq!(log.records.len(), k, "flip at {i}");
            assert_eq!(log.valid_len as usize, starts[k]);
            assert_eq!(dropped.offset as usize, starts[k]);
            assert_eq!(dropped.bytes as usize, bytes.len() - starts[k]);
            assert_eq!(dropped.records, 5 - k, "flip at {i}");
        }
        // A lost write reads back as zeros.
        let mut lost = bytes.clone();
        lost[starts[3]..ends[3]].fill(0);
        let log = decode(&lost).unwrap();
        assert_eq!((log.records.len(), log.dropped.unwrap().records), (3, 2));
    }

    #[test]
    fn log_of_the_previous_format_is_refused() {
        // Format version 1 had no durable length: payload = seq, kind, body.
        let mut bytes = Vec::new();
        for seq in 1..4u64 {
            let payload = [&seq.to_le_bytes()[..], &encode_delete(&[seq])].concat();
            let len = (payload.len() as u32).to_le_bytes();
            bytes.extend_from_slice(&len);
            bytes.extend_from_slice(&crc_extend(crc_extend(0, &len), &payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        let err = decode(&bytes).unwrap_err();
        assert!(err.what.contains("format version"), "{err}");
    }

    #[test]
    fn crc_of_a_range_from_prefix_crcs_matches_a_direct_crc() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let bytes: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for base in [0, 1, 63, 64, 300] {
            let crcs = PrefixCrcs::new(&bytes, base);
            for start in (base..bytes.len()).step_by(37).chain([bytes.len()]) {
                for end in (start..=bytes.len()).step_by(29).chain([bytes.len()]) {
                    assert_eq!(
                        crcs.range(start, end),
                        crc32fast::hash(&bytes[start..end]),
                        "base {base}, {start}..{end}"
                    );
                }
            }
        }
        assert_eq!(
            shift(crc32fast::hash(b"abc"), 3) ^ crc32fast::hash(b"def"),
            crc32fast::hash(b"abcdef")
        );
    }

    /// A crafted tail where every 24th byte starts a plausible frame (length fits, next
    /// sequence number, durable length in range) whose crc is wrong. Hashing each candidate's
    /// payload, as the scan once did, costs the square of the tail's length.
    #[test]
    fn scan_after_damage_is_linear_in_the_tail() {
        let (_d, mut bytes, ends) = log_with(3, |_| true);
        let tail = 1 << 20;
        let end = bytes.len() + tail;
        while bytes.len() + 24 <= end {
            let len = (end - bytes.len() - HEADER_LEN) as u32;
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&0xdead_beefu32.to_le_bytes());
            bytes.extend_from_slice(&4u64.to_le_bytes());
            bytes.extend_from_slice(&0u64.to_le_bytes());
        }
        bytes.resize(end, 0);
        HASHED.with(|h| h.set(0));
        let log = decode(&bytes).unwrap();
        let hashed = HASHED.with(|h| h.get());
        assert_eq!((log.records.len(), log.valid_len as usize), (3, ends[2]));
        assert_eq!(log.dropped.unwrap().records, 0);
        // The good records and the damaged frame's own check (≤ 2 × tail), the prefix crcs
        // (tail), and ≤ 130 bytes for each of tail / 24 candidates: under 8 × tail.
        assert!(
            hashed <= 8 * tail as u64,
            "{hashed} bytes hashed for a {tail}-byte tail"
        );
    }

    #[test]
    fn reopen_truncates_torn_tail() {
        let (d, bytes, ends) = log_with(3, |_| true);
        let path = d.path().join(wal_file_name(1));
        std::fs::write(&path, &bytes[..ends[2] - 3]).unwrap();
        let mut w = WalWriter::reopen(d.path(), 1, ends[1] as u64, 3).unwrap();
        w.append(&encode_delete(&[7])).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let log = decode(&bytes).unwrap();
        assert_eq!(log.records.len(), 3);
        assert_eq!(log.records[2], (3, WalRecord::Delete(vec![7])));
    }
}
