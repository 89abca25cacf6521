//! Frames of a log file, and the linear scan of a damaged tail (see the [module
//! documentation](super)).

use super::{HEADER_LEN, MAX_RECORD_LEN, MIN_PAYLOAD, SEQ_WINDOW};

/// A well-formed frame: complete, crc matching. Its fields are not checked against the log.
pub(super) struct Frame<'a> {
    pub(super) seq: u64,
    pub(super) durable_len: u64,
    pub(super) payload: &'a [u8],
}

fn u32_at(bytes: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], pos: usize) -> u64 {
    u64::from_le_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"))
}

/// The frame at `pos`, if one is there.
pub(super) fn frame_at(bytes: &[u8], pos: usize) -> Option<Frame<'_>> {
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
pub(super) struct AfterDamage {
    /// Valid frames found (each one skipped over whole).
    pub(super) records: usize,
    /// Offset of a valid frame appended after the damaged one had been fsynced.
    pub(super) durable_evidence: Option<usize>,
}

/// Scans the bytes after the damaged frame at `bad` for valid frames whose sequence numbers
/// follow `last_seq`. Cheap filters (length, sequence window, durable length) run first; a
/// candidate's crc then comes from prefix crcs in constant time, so the scan is linear in the
/// tail even when every position passes the filters.
pub(super) fn scan_after_damage(bytes: &[u8], bad: usize, last_seq: Option<u64>) -> AfterDamage {
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
pub(crate) fn crc_extend(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(test)]
    super::tests::HASHED.with(|h| h.set(h.get() + bytes.len() as u64));
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
pub(super) struct PrefixCrcs<'a> {
    bytes: &'a [u8],
    base: usize,
    checkpoints: Vec<u32>,
}

impl<'a> PrefixCrcs<'a> {
    pub(super) fn new(bytes: &'a [u8], base: usize) -> Self {
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
    pub(super) fn prefix(&self, end: usize) -> u32 {
        let k = (end - self.base) / CHECKPOINT;
        let at = self.base + k * CHECKPOINT;
        crc_extend(self.checkpoints[k], &self.bytes[at..end])
    }

    /// crc32 of `bytes[start..end]`.
    pub(super) fn range(&self, start: usize, end: usize) -> u32 {
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
pub(super) fn shift(crc: u32, n: usize) -> u32 {
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
