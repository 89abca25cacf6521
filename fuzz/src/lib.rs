//! Harnesses of hivlp's fuzz targets, shared by the cargo-fuzz binaries in `fuzz_targets/`,
//! the seed corpus generator (`examples/gen_corpus.rs`) and the corpus replay test
//! (`tests/corpus.rs`): hivlp-storage's decoders of bytes from disk (here) and
//! hivlp-encoders' decoders of bytes from users ([`encoders`]).
//!
//! Every storage input starts with two bytes, flags and a schema selector ([`SCHEMAS`]):
//! - [`FIXUP`]: the harness frames what follows with valid checksums (WAL frame crc32s, file
//!   footers), so that the fuzzer explores the decoders behind the checksums; without it the
//!   bytes are used as they are, which exercises framing, footers and torn-tail detection.
//! - [`STRICT`]: full verification (vector file crc32s) for segments, a known first sequence
//!   number for the WAL.
//!
//! Each harness returns whether the storage layer accepted the input. Whatever the bytes,
//! storage must return an error or data that satisfies its documented invariants (checked here
//! with `assert!`), never panic, hang or read out of bounds.

pub mod encoders;
mod store_ops;

pub use encoders::{bundle_manifest, image_decode};
pub use store_ops::store_ops;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hivlp_storage::manifest::{Manifest, manifest_file_name};
use hivlp_storage::segment::{SegmentInfo, meta_file_name, tombstone_file_name, vector_file_name};
use hivlp_storage::wal::{decode_log, wal_file_name};
use hivlp_storage::{
    ElemType, FOOTER_MAGIC, FORMAT_VERSION, Metric, Modality, Schema, Store, StoreOptions, Tier,
    VerifyLevel, View,
};

/// Flag: wrap the input in valid checksums.
pub const FIXUP: u8 = 1;
/// Flag: full verification / known first WAL sequence number.
pub const STRICT: u8 = 2;

/// The schemas an input can select: every element type appears in each tier.
pub const SCHEMAS: [Schema; 3] = [
    Schema {
        fine_dim: 24,
        coarse_dim: 8,
        fine_type: ElemType::F32,
        coarse_type: ElemType::F32,
        metric: Metric::Cosine,
    },
    Schema {
        fine_dim: 24,
        coarse_dim: 8,
        fine_type: ElemType::F16,
        coarse_type: ElemType::I8,
        metric: Metric::InnerProduct,
    },
    Schema {
        fine_dim: 7,
        coarse_dim: 3,
        fine_type: ElemType::I8,
        coarse_type: ElemType::F16,
        metric: Metric::Cosine,
    },
];

/// Id of the one segment of a `segment_open` input.
pub const SEGMENT_ID: u64 = 1;

/// The files of a `segment_open` input, in input order: metadata, image coarse/fine, text
/// coarse/fine, tombstones (generation 1).
pub fn segment_files() -> [(String, &'static [u8; 4]); 6] {
    [
        (meta_file_name(SEGMENT_ID), b"META"),
        (
            vector_file_name(SEGMENT_ID, Modality::Image, Tier::Coarse),
            b"VECS",
        ),
        (
            vector_file_name(SEGMENT_ID, Modality::Image, Tier::Fine),
            b"VECS",
        ),
        (
            vector_file_name(SEGMENT_ID, Modality::Text, Tier::Coarse),
            b"VECS",
        ),
        (
            vector_file_name(SEGMENT_ID, Modality::Text, Tier::Fine),
            b"VECS",
        ),
        (tombstone_file_name(SEGMENT_ID, 1), b"TOMB"),
    ]
}

struct Input<'a> {
    fixup: bool,
    strict: bool,
    schema: Schema,
    rest: &'a [u8],
}

fn split(data: &[u8]) -> Option<Input<'_>> {
    let (&[flags, sel], rest) = data.split_first_chunk::<2>()?;
    Some(Input {
        fixup: flags & FIXUP != 0,
        strict: flags & STRICT != 0,
        schema: SCHEMAS[usize::from(sel) % SCHEMAS.len()].clone(),
        rest,
    })
}

/// `[len u32][bytes]` chunks; a final chunk shorter than its length takes what is left.
pub fn chunks(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = (u32::from_le_bytes(*len) as usize).min(tail.len());
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    out
}

/// Appends `bytes` as one `[len u32][bytes]` chunk.
pub fn push_chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// `body` followed by a valid footer of `kind` (see storage/FORMAT.md).
pub fn with_footer(body: &[u8], kind: &[u8; 4]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(&FOOTER_MAGIC);
    out
}

/// A WAL frame around `payload`: `[len u32][crc32 of len bytes and payload][payload]`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    let mut out = len.to_vec();
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payloads of the well-formed frames at the start of a WAL file's bytes.
pub fn payloads(mut log: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((header, rest)) = log.split_first_chunk::<8>() {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > rest.len() {
            break;
        }
        out.push(&rest[..len]);
        log = &rest[len..];
    }
    out
}

/// A scratch directory for one harness call, unique to the process and thread, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let name = format!("hivlp-fuzz-{}-{}", std::process::id(), INDEX.with(|i| *i));
        // Memory-backed where available: the harness writes files on every execution.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_database(dir: &Path, manifest: &Manifest) {
    fs::write(dir.join(manifest_file_name(1)), manifest.encode()).expect("write manifest");
    fs::write(dir.join("CURRENT"), format!("{}\n", manifest_file_name(1))).expect("write CURRENT");
}

fn empty_manifest(schema: Schema) -> Manifest {
    Manifest {
        schema,
        next_id: 0,
        next_segment_id: SEGMENT_ID + 1,
        log_number: 1,
        next_seq: 1,
        segments: Vec::new(),
        properties: BTreeMap::new(),
    }
}

/// Opens `dir` read-only and reads every row of every source, checking what readers rely on.
fn open_and_read(dir: &Path, level: VerifyLevel) -> bool {
    let options = StoreOptions {
        read_only: true,
        verify: level,
        ..StoreOptions::default()
    };
    match Store::open(dir, options) {
        Ok(store) => {
            read_all(&store.view());
            true
        }
        Err(_) => false,
    }
}

/// Touches every byte a scan or a lookup would, asserting storage's documented invariants.
pub fn read_all(view: &View) {
    let mut live = 0;
    let mut buf = Vec::new();
    for source in view.sources() {
        let rows = source.rows();
        for m in Modality::ALL {
            for column in [source.coarse(m), source.fine(m)] {
                assert!(column.is_empty() || column.len() == rows, "column length");
                // Values on disk are not re-validated (a cheap open does not read them): any
                // bits must convert without panicking.
                for row in 0..column.len() {
                    column.row_to_f32(row, &mut buf);
                    std::hint::black_box(&buf);
                }
            }
            assert_eq!(source.skip(m).len(), rows, "skip bitmap length");
        }
        for row in 0..rows {
            let id = source.id(row);
            let meta = source.meta(row);
            std::hint::black_box((meta.caption, meta.uri, meta.metadata));
            if source.is_deleted(row) {
                assert_eq!(source.locate(id), None, "deleted row found by locate");
            } else {
                live += 1;
                assert_eq!(source.locate(id), Some(row), "locate disagrees with id()");
            }
        }
    }
    assert_eq!(view.len(), live, "view.len()");
}

/// WAL decoder, then (when it accepts the log) replay of the log into a read-only store.
pub fn wal_decode(data: &[u8]) -> bool {
    let Some(input) = split(data) else {
        return false;
    };
    let log: Vec<u8> = if input.fixup {
        chunks(input.rest).into_iter().flat_map(frame).collect()
    } else {
        input.rest.to_vec()
    };
    let file = PathBuf::from(wal_file_name(1));
    let first_seq = input.strict.then_some(1);
    let Ok(contents) = decode_log(&log, &input.schema, &file, first_seq) else {
        return false;
    };
    let valid_len = contents.valid_len as usize;
    assert!(valid_len <= log.len(), "valid_len past the end");
    assert_eq!(
        contents.dropped.as_ref().map(|d| (d.offset, d.bytes)),
        (valid_len < log.len()).then(|| (valid_len as u64, (log.len() - valid_len) as u64)),
        "a log drops a tail exactly when it has bytes after its valid prefix, and all of them"
    );
    let scratch = Scratch::new();
    let dir = &scratch.0;
    let mut manifest = empty_manifest(input.schema);
    manifest.next_seq = contents.records.first().map_or(1, |(seq, _)| *seq);
    write_database(dir, &manifest);
    fs::write(dir.join(&file), &log).expect("write WAL");
    // Replay may still refuse the log (e.g. a delete of an id that is not live is fine, an
    // insert of a live id is corruption); either way it must not panic.
    open_and_read(dir, VerifyLevel::Full);
    true
}

/// Manifest decoder; an accepted manifest must survive an encode/decode round trip.
pub fn manifest_decode(data: &[u8]) -> bool {
    let Some(input) = split(data) else {
        return false;
    };
    let bytes = if input.fixup {
        with_footer(input.rest, b"MANI")
    } else {
        input.rest.to_vec()
    };
    let file = Path::new("MANIFEST-000001");
    let Ok(manifest) = Manifest::decode(&bytes, file) else {
        return false;
    };
    let again = Manifest::decode(&manifest.encode(), file).expect("a re-encoded manifest decodes");
    assert_eq!(again, manifest, "manifest round trip");
    true
}

/// Segment open: `[rows u32][modalities u8]` then the [`segment_files`] as chunks, written
/// into a database whose manifest lists the segment, opened read-only and read in full.
pub fn segment_open(data: &[u8]) -> bool {
    let Some(input) = split(data) else {
        return false;
    };
    let Some((header, rest)) = input.rest.split_first_chunk::<5>() else {
        return false;
    };
    // At least one row (the manifest refuses empty segments), at most a size that keeps a
    // valid input small.
    let rows = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ])) % (1 << 16)
        + 1;
    let scratch = Scratch::new();
    let dir = &scratch.0;
    let files = chunks(rest);
    for ((name, kind), bytes) in segment_files().iter().zip(&files) {
        let bytes = if input.fixup {
            with_footer(bytes, kind)
        } else {
            bytes.to_vec()
        };
        fs::write(dir.join(name), bytes).expect("write segment file");
    }
    let mut manifest = empty_manifest(input.schema);
    manifest.next_id = u64::MAX;
    manifest.segments.push(SegmentInfo {
        id: SEGMENT_ID,
        rows,
        modalities: header[4] & 3,
        del_gen: u64::from(files.len() > 5),
    });
    write_database(dir, &manifest);
    let level = if input.strict {
        VerifyLevel::Full
    } else {
        VerifyLevel::Cheap
    };
    open_and_read(dir, level)
}
