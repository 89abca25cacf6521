//! Decoding logs written by the writer: torn tails, damage before and after the last fsync,
//! and the cost of the damaged-tail scan.

use super::frame::*;
use super::*;
use crate::io::dir::FsDir;
use crate::io::wal::WalWriter;
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
    let mut w = WalWriter::create(&FsDir, dir.path(), 1, 1).unwrap();
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
    let mut w = WalWriter::reopen(&FsDir, d.path(), 1, ends[1] as u64, 3).unwrap();
    w.append(&encode_delete(&[7])).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let log = decode(&bytes).unwrap();
    assert_eq!(log.records.len(), 3);
    assert_eq!(log.records[2], (3, WalRecord::Delete(vec![7])));
}
