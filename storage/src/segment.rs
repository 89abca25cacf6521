//! Immutable segments: per modality and tier one memory-mapped vector file, one rkyv metadata
//! archive, and (from the manifest) a tombstone generation.
//!
//! [`Segment::open`] is the entry point used by the segment-open fuzz target: it must return
//! an error, never panic, whatever the files hold.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{Advice, Mmap};

use crate::data::bitmap::Bitmap;
use crate::data::column::VectorColumn;
use crate::data::vectors::{encode_row, stride};
use crate::error::{CompactionError, CorruptionError, IoError, OpenError};
use crate::format::codec::{self, Decoder, FileKind, VerifyLevel};
use crate::format::file_name::FileName;
use crate::schema::{ElemType, Modality, Schema};
use crate::source::{RowMeta, Source};

/// Size of the descriptor that ends a vector file's body (before the footer).
const DESCRIPTOR_LEN: usize = 32;

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
pub fn vector_file_name(id: u64, modality: Modality, fine: bool) -> String {
    FileName::SegmentVectors { id, modality, fine }.to_string()
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
    ids: Vec<u64>,
    order: Vec<u32>,
    captions: Vec<Option<String>>,
    uris: Vec<Option<String>>,
    metadata: Vec<Vec<u8>>,
    has_image: Vec<u64>,
    has_text: Vec<u64>,
}

/// One mapped vector file, validated.
#[derive(Debug)]
struct VectorFile {
    map: Mmap,
    elem: ElemType,
    dim: usize,
    stride: usize,
    rows: usize,
}

impl VectorFile {
    fn column(&self) -> VectorColumn<'_> {
        let data = &self.map[..self.rows * self.stride];
        let scales = (self.elem == ElemType::I8).then(|| {
            let at = self.rows * self.stride;
            bytemuck::try_cast_slice(&self.map[at..at + self.rows * 4]).unwrap_or(&[])
        });
        VectorColumn::from_parts(self.elem, self.dim, self.stride, data, scales)
    }
}

/// An open, immutable segment. Its files are deleted when the last reference is dropped after
/// compaction replaced it, so a [`View`](crate::View) that still
/// holds it keeps reading valid mappings.
#[derive(Debug)]
pub struct Segment {
    info: SegmentInfo,
    meta: Mmap,
    meta_len: usize,
    /// Indexed by modality (image, text), then tier (coarse, fine).
    vectors: [Option<[VectorFile; 2]>; 2],
    has: [Bitmap; 2],
    files: Vec<PathBuf>,
    /// `(device, inode)` of each of `files` as opened, to tell them from a file that
    /// later took the same name.
    identities: Vec<(u64, u64)>,
    obsolete: AtomicBool,
}

fn modality_index(m: Modality) -> usize {
    match m {
        Modality::Image => 0,
        Modality::Text => 1,
    }
}

/// `(device, inode)` of a file's metadata.
pub(crate) fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<(Mmap, (u64, u64)), OpenError> {
    let file = File::open(path).map_err(|e| IoError::at(path, "open", e))?;
    let meta = file.metadata().map_err(|e| IoError::at(path, "stat", e))?;
    let len = meta.len();
    if len == 0 {
        return Err(CorruptionError::new(path, 0, "empty file").into());
    }
    // SAFETY: segment files are immutable once written: hivlp never modifies or truncates a
    // file it has referenced from a manifest (it only deletes them, which keeps the mapping
    // valid on unix). Modification by another program is outside the contract documented in
    // FORMAT.md.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| IoError::at(path, "mmap", e))?;
    Ok((map, identity(&meta)))
}

impl Segment {
    /// Opens and validates segment `info` in `dir`. With [`VerifyLevel::Cheap`] the vector
    /// files' footers, descriptors and lengths are checked; with `Full` also their crc32.
    /// The metadata archive is always crc-checked and validated with bytecheck.
    pub fn open(
        dir: &Path,
        info: &SegmentInfo,
        schema: &Schema,
        level: VerifyLevel,
    ) -> Result<Segment, OpenError> {
        let mut files = Vec::new();
        let mut identities = Vec::new();
        let meta_path = dir.join(meta_file_name(info.id));
        let (meta, id) = map_file(&meta_path)?;
        files.push(meta_path.clone());
        identities.push(id);
        let body = codec::check_footer(&meta, FileKind::Meta, &meta_path, true)?;
        let meta_len = body.len();
        let has = validate_meta(body, info, &meta_path)?;
        let mut vectors: [Option<[VectorFile; 2]>; 2] = [None, None];
        for m in Modality::ALL {
            let present = has[modality_index(m)].count_ones() > 0;
            if present != info.has_modality(m) {
                return Err(CorruptionError::new(
                    &meta_path,
                    0,
                    format!("metadata and manifest disagree on whether {m:?} vectors exist"),
                )
                .into());
            }
            if !present {
                continue;
            }
            let mut open_tier = |fine: bool| -> Result<VectorFile, OpenError> {
                let path = dir.join(vector_file_name(info.id, m, fine));
                let (elem, dim) = if fine {
                    (schema.fine_type, schema.fine_dim)
                } else {
                    (schema.coarse_type, schema.coarse_dim)
                };
                let (map, id) = map_file(&path)?;
                check_vector_file(&map, &path, elem, dim, info.rows as usize, level)?;
                if fine {
                    // A query touches a few hundred scattered fine rows: read-around would map
                    // far more pages than it uses. Advice is a hint; ignoring a refusal is safe.
                    let _ = map.advise(Advice::Random);
                }
                files.push(path);
                identities.push(id);
                Ok(VectorFile {
                    map,
                    elem,
                    dim,
                    stride: stride(elem, dim),
                    rows: info.rows as usize,
                })
            };
            let coarse = open_tier(false)?;
            let fine = open_tier(true)?;
            vectors[modality_index(m)] = Some([coarse, fine]);
        }
        Ok(Segment {
            info: info.clone(),
            meta,
            meta_len,
            vectors,
            has,
            files,
            identities,
            obsolete: AtomicBool::new(false),
        })
    }

    /// The manifest entry this segment was opened from.
    pub fn info(&self) -> &SegmentInfo {
        &self.info
    }

    /// Segment id (file name stem `seg-<id>`).
    pub fn id(&self) -> u64 {
        self.info.id
    }

    /// Rows, deleted ones included.
    pub fn rows(&self) -> usize {
        self.info.rows as usize
    }

    /// Files of this segment (vectors and metadata; tombstones are tracked by the store).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Each of [`files`](Self::files) with its `(device, inode)` and its bytes as mapped
    /// (footer included): what this handle reads, even after the file was deleted.
    pub(crate) fn mapped_files(&self) -> impl Iterator<Item = (&Path, (u64, u64), &[u8])> {
        let vectors = self
            .vectors
            .iter()
            .flatten()
            .flat_map(|tiers| tiers.iter().map(|t| &t.map[..]));
        let maps = std::iter::once(&self.meta[..]).chain(vectors);
        self.files
            .iter()
            .zip(&self.identities)
            .zip(maps)
            .map(|((path, id), bytes)| (path.as_path(), *id, bytes))
    }

    /// Deletes this segment's files once the last reference is dropped.
    pub(crate) fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::SeqCst);
    }

    #[allow(unsafe_code)]
    fn archive(&self) -> &ArchivedSegmentMeta {
        // SAFETY: `Segment::open` validated exactly these bytes with `rkyv::access` (bytecheck)
        // and the mapping is immutable for the segment's lifetime.
        unsafe { rkyv::access_unchecked::<ArchivedSegmentMeta>(&self.meta[..self.meta_len]) }
    }

    pub(crate) fn has(&self, m: Modality) -> &Bitmap {
        &self.has[modality_index(m)]
    }

    pub(crate) fn column(&self, m: Modality, fine: bool) -> Option<VectorColumn<'_>> {
        self.vectors[modality_index(m)]
            .as_ref()
            .map(|tiers| tiers[usize::from(fine)].column())
    }

    pub(crate) fn id_at(&self, row: usize) -> u64 {
        self.archive().ids[row].to_native()
    }

    pub(crate) fn meta(&self, row: usize) -> RowMeta<'_> {
        let a = self.archive();
        RowMeta {
            caption: a.captions[row].as_ref().map(|s| s.as_str()),
            uri: a.uris[row].as_ref().map(|s| s.as_str()),
            metadata: a.metadata[row].as_slice(),
        }
    }

    /// Row of `id` (deleted or not), by binary search over the sorted order.
    pub(crate) fn locate(&self, id: u64) -> Option<usize> {
        let a = self.archive();
        let order = a.order.as_slice();
        let ids = a.ids.as_slice();
        let pos = order
            .binary_search_by_key(&id, |r| {
                ids.get(r.to_native() as usize)
                    .map_or(u64::MAX, |v| v.to_native())
            })
            .ok()?;
        Some(order[pos].to_native() as usize)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::SeqCst) {
            for f in &self.files {
                // Best effort: a file left behind is removed as an orphan at the next open.
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

fn validate_meta(body: &[u8], info: &SegmentInfo, path: &Path) -> Result<[Bitmap; 2], OpenError> {
    let corrupt = |what: String| CorruptionError::new(path, 0, what);
    let a = rkyv::access::<ArchivedSegmentMeta, rkyv::rancor::Error>(body)
        .map_err(|e| corrupt(format!("metadata archive fails validation: {e}")))?;
    let rows = info.rows as usize;
    if rows > u32::MAX as usize {
        return Err(corrupt(format!("{rows} rows exceed the segment limit")).into());
    }
    let words = rows.div_ceil(64);
    let lens = [
        ("ids", a.ids.len(), rows),
        ("order", a.order.len(), rows),
        ("captions", a.captions.len(), rows),
        ("uris", a.uris.len(), rows),
        ("metadata", a.metadata.len(), rows),
        ("has_image", a.has_image.len(), words),
        ("has_text", a.has_text.len(), words),
    ];
    for (what, got, want) in lens {
        if got != want {
            return Err(corrupt(format!("{what} has {got} entries, expected {want}")).into());
        }
    }
    // `order` must list rows by strictly ascending id; with every entry in range that also
    // makes it a permutation, so `locate` is correct.
    let mut prev: Option<u64> = None;
    for r in a.order.iter() {
        let r = r.to_native() as usize;
        let Some(id) = a.ids.get(r).map(|v| v.to_native()) else {
            return Err(corrupt(format!("order lists row {r}, beyond {rows} rows")).into());
        };
        if prev.is_some_and(|p| p >= id) {
            return Err(corrupt("ids are not unique or order is not sorted".into()).into());
        }
        prev = Some(id);
    }
    let bitmap = |w: &rkyv::vec::ArchivedVec<rkyv::rend::u64_le>| {
        let words = w.iter().map(|v| v.to_native()).collect();
        Bitmap::from_words(words, rows).unwrap_or_else(|| Bitmap::new(rows))
    };
    Ok([bitmap(&a.has_image), bitmap(&a.has_text)])
}

fn check_vector_file(
    bytes: &[u8],
    path: &Path,
    elem: ElemType,
    dim: usize,
    rows: usize,
    level: VerifyLevel,
) -> Result<(), CorruptionError> {
    let body = codec::check_footer(bytes, FileKind::Vectors, path, level == VerifyLevel::Full)?;
    let stride = stride(elem, dim);
    let scales = if elem == ElemType::I8 { rows * 4 } else { 0 };
    let expected = rows
        .checked_mul(stride)
        .and_then(|n| n.checked_add(scales + DESCRIPTOR_LEN));
    if expected != Some(body.len()) {
        return Err(CorruptionError::new(
            path,
            0,
            format!(
                "body is {} bytes, {rows} rows of {elem:?}×{dim} need {expected:?}",
                body.len()
            ),
        ));
    }
    let at = body.len() - DESCRIPTOR_LEN;
    let mut d = Decoder::new(&body[at..], at as u64, path);
    let file_elem = decode_elem(d.u8("element type")?).ok_or_else(|| d.error("element type"))?;
    d.take(3, "padding")?;
    let file_dim = d.u32("dim")? as usize;
    let file_stride = d.u32("stride")? as usize;
    d.take(4, "padding")?;
    let file_rows = d.u64("rows")?;
    if (file_elem, file_dim, file_stride, file_rows) != (elem, dim, stride, rows as u64) {
        return Err(CorruptionError::new(
            path,
            at as u64,
            format!(
                "descriptor says {file_elem:?}×{file_dim} stride {file_stride}, {file_rows} rows; \
                 expected {elem:?}×{dim} stride {stride}, {rows} rows"
            ),
        ));
    }
    Ok(())
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

/// Streams a file body, then its footer, then fsyncs it.
pub(crate) struct FileWriter {
    path: PathBuf,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl FileWriter {
    /// Creates `path`; fails if it exists.
    pub fn create(path: PathBuf) -> Result<Self, IoError> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| IoError::at(&path, "create", e))?;
        Ok(Self {
            path,
            out: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| IoError::at(&self.path, "write", e))
    }

    /// Writes the footer and makes the file durable.
    pub fn finish(mut self, kind: FileKind) -> Result<PathBuf, IoError> {
        let footer = codec::footer(kind, self.len, self.crc.clone().finalize());
        self.out
            .write_all(&footer)
            .map_err(|e| IoError::at(&self.path, "write", e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| IoError::at(&self.path, "write", e.into_error()))?;
        file.sync_all()
            .map_err(|e| IoError::at(&self.path, "fsync", e))?;
        Ok(self.path)
    }
}

/// One row to copy into a new segment.
#[derive(Clone, Copy)]
pub(crate) struct RowRef<'a> {
    pub source: &'a Source,
    pub row: usize,
}

/// Recomputes a row's coarse vector from its fine vector during compaction (e.g. after the
/// engine refits its coarse projection). Arguments: the modality, the fine vector as `f32`
/// (dequantised), and the coarse output buffer of `schema.coarse_dim` values to fill.
pub type CoarseRewrite = dyn Fn(Modality, &[f32], &mut [f32]) + Send + Sync;

/// A compaction that recomputes coarse vectors: every merged row's coarse vectors come from
/// `coarse`, and `properties` (what the engine needs to score the new vectors, e.g. the
/// projection that made them) are set in the same manifest. Readers, in this process and
/// others, see the new rows and their properties together or neither.
pub struct Rewrite<'a> {
    pub coarse: &'a CoarseRewrite,
    pub properties: Vec<(String, Vec<u8>)>,
}

/// Writes segment `id` from `rows` into `dir` (files fsynced; the caller fsyncs the directory).
/// On error the files written so far are removed.
pub(crate) fn write_segment(
    dir: &Path,
    id: u64,
    schema: &Schema,
    rows: &[RowRef<'_>],
    rewrite: Option<&CoarseRewrite>,
) -> Result<SegmentInfo, CompactionError> {
    let mut written = Vec::new();
    let result = write_segment_files(dir, id, schema, rows, rewrite, &mut written);
    if result.is_err() {
        for f in written {
            let _ = std::fs::remove_file(f);
        }
    }
    result
}

fn write_segment_files(
    dir: &Path,
    id: u64,
    schema: &Schema,
    rows: &[RowRef<'_>],
    rewrite: Option<&CoarseRewrite>,
    written: &mut Vec<PathBuf>,
) -> Result<SegmentInfo, CompactionError> {
    let n = rows.len();
    let mut has = [Bitmap::new(n), Bitmap::new(n)];
    for (i, r) in rows.iter().enumerate() {
        for m in Modality::ALL {
            if r.source.has(m).get(r.row) {
                has[modality_index(m)].set(i);
            }
        }
    }
    let mut modalities = 0u8;
    let mut fine_buf = Vec::new();
    let mut coarse_buf = vec![0f32; schema.coarse_dim];
    for m in Modality::ALL {
        let has_m = &has[modality_index(m)];
        if has_m.count_ones() == 0 {
            continue;
        }
        modalities |= modality_bit(m);
        for fine in [false, true] {
            let (elem, dim) = if fine {
                (schema.fine_type, schema.fine_dim)
            } else {
                (schema.coarse_type, schema.coarse_dim)
            };
            let stride = stride(elem, dim);
            let path = dir.join(vector_file_name(id, m, fine));
            written.push(path.clone());
            let mut w = FileWriter::create(path)?;
            let mut row_buf = vec![0u8; stride];
            let mut scales = Vec::with_capacity(if elem == ElemType::I8 { n } else { 0 });
            for (i, r) in rows.iter().enumerate() {
                row_buf.fill(0);
                let mut scale = 0.0;
                if has_m.get(i) {
                    let fine_col = r.source.fine(m);
                    match rewrite.filter(|_| !fine) {
                        Some(hook) => {
                            fine_col.row_to_f32(r.row, &mut fine_buf);
                            coarse_buf.fill(0.0);
                            hook(m, &fine_buf, &mut coarse_buf);
                            // An f16 beyond ±65504 would be stored as an infinity.
                            let storable = |v: f32| {
                                v.is_finite()
                                    && (elem != ElemType::F16
                                        || v.abs() <= f32::from(half::f16::MAX))
                            };
                            if let Some((j, v)) =
                                coarse_buf.iter().enumerate().find(|(_, v)| !storable(**v))
                            {
                                return Err(CompactionError::Rewrite(format!(
                                    "{m:?} coarse vector of id {} holds {v} at index {j}",
                                    r.source.id(r.row)
                                )));
                            }
                            scale =
                                encode_row(elem, &coarse_buf, &mut row_buf[..dim * elem.size()]);
                        }
                        None => {
                            let col = if fine { fine_col } else { r.source.coarse(m) };
                            let raw = col.row_bytes(r.row);
                            row_buf[..raw.len()].copy_from_slice(raw);
                            scale = col.scales().map_or(0.0, |s| s[r.row]);
                        }
                    }
                }
                w.write(&row_buf)?;
                if elem == ElemType::I8 {
                    scales.push(scale);
                }
            }
            w.write(bytemuck::cast_slice(&scales))?;
            let mut desc = [0u8; DESCRIPTOR_LEN];
            desc[0] = encode_elem(elem);
            desc[4..8].copy_from_slice(&(dim as u32).to_le_bytes());
            desc[8..12].copy_from_slice(&(stride as u32).to_le_bytes());
            desc[16..24].copy_from_slice(&(n as u64).to_le_bytes());
            w.write(&desc)?;
            w.finish(FileKind::Vectors)?;
        }
    }
    let ids: Vec<u64> = rows.iter().map(|r| r.source.id(r.row)).collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by_key(|&r| ids[r as usize]);
    let mut meta = SegmentMeta {
        ids,
        order,
        captions: Vec::with_capacity(n),
        uris: Vec::with_capacity(n),
        metadata: Vec::with_capacity(n),
        has_image: has[0].words().to_vec(),
        has_text: has[1].words().to_vec(),
    };
    for r in rows {
        let m = r.source.meta(r.row);
        meta.captions.push(m.caption.map(str::to_owned));
        meta.uris.push(m.uri.map(str::to_owned));
        meta.metadata.push(m.metadata.to_vec());
    }
    let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&meta)
        .map_err(|e| IoError::new("serialising segment metadata", std::io::Error::other(e)))?;
    let path = dir.join(meta_file_name(id));
    written.push(path.clone());
    let mut w = FileWriter::create(path)?;
    w.write(&archive)?;
    w.finish(FileKind::Meta)?;
    Ok(SegmentInfo {
        id,
        rows: n as u64,
        modalities,
        del_gen: 0,
    })
}

/// Writes tombstone generation `generation` of segment `id`: `[rows u64][words u64…]`.
pub(crate) fn write_tombstones(
    dir: &Path,
    id: u64,
    generation: u64,
    deleted: &Bitmap,
) -> Result<PathBuf, IoError> {
    let mut w = FileWriter::create(dir.join(tombstone_file_name(id, generation)))?;
    w.write(&(deleted.len() as u64).to_le_bytes())?;
    w.write(bytemuck::cast_slice(deleted.words()))?;
    w.finish(FileKind::Tombstones)
}

/// Reads and fully checks a tombstone file for a segment of `rows` rows.
pub(crate) fn read_tombstones(path: &Path, rows: usize) -> Result<Bitmap, OpenError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::at(path, "read", e))?;
    let body = codec::check_footer(&bytes, FileKind::Tombstones, path, true)?;
    let mut d = Decoder::new(body, 0, path);
    let n = d.u64("row count")?;
    if n != rows as u64 {
        return Err(CorruptionError::new(
            path,
            0,
            format!("tombstones for {n} rows, the segment has {rows}"),
        )
        .into());
    }
    let words = (0..rows.div_ceil(64))
        .map(|_| d.u64("tombstone word"))
        .collect::<Result<Vec<_>, _>>()?;
    d.finish("tombstones")?;
    Ok(Bitmap::from_words(words, rows).unwrap_or_else(|| Bitmap::new(rows)))
}
