//! Immutable segments: per modality and tier one memory-mapped vector file, one rkyv metadata
//! archive, and (from the manifest) a tombstone generation.
//!
//! [`Segment::open`] is the entry point used by the segment-open fuzz target: it must return
//! an error, never panic, whatever the files hold.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::data::bitmap::Bitmap;
use crate::data::column::VectorColumn;
use crate::data::fields::OwnedFields;
use crate::data::vectors::{packed_stride, padded_stride, rows_region_len};
use crate::error::{CorruptionError, IoError, StorageError};
use crate::format::codec::{self, Decoder, FOOTER_LEN, FileKind, VerifyLevel};
use crate::format::field_column::FieldColumn;
use crate::format::partitions::PartitionIndex;
use crate::format::segment::{
    ArchivedSegmentMeta, DESCRIPTOR_LEN, FieldDirectory, SegmentInfo, decode_elem,
    field_column_file_name, field_directory_file_name, meta_file_name, partition_file_name,
    vector_file_name,
};
use crate::io::dir::{Access, Dir, FileId, FsDir, MappedBytes};
use crate::schema::{ElemType, Modality, Schema, Tier};

/// Caption, URI and user metadata of one row, borrowed from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMeta<'a> {
    pub caption: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub metadata: &'a [u8],
}

/// One mapped vector file, validated.
#[derive(Debug)]
pub(crate) struct VectorFile {
    map: Box<dyn MappedBytes>,
    elem: ElemType,
    dim: usize,
    stride: usize,
    rows: usize,
    /// Offset of the `i8` scales: the end of the rows region.
    scales_at: usize,
}

impl VectorFile {
    /// Maps `path` and checks it holds `rows` rows of `tier`'s vectors (see
    /// [`check_vector_file`]).
    pub(crate) fn open(
        io: &dyn Dir,
        path: &Path,
        schema: &Schema,
        tier: Tier,
        rows: usize,
        level: VerifyLevel,
    ) -> Result<(VectorFile, FileId), StorageError> {
        let (elem, dim) = schema.tier(tier);
        // A query touches a few hundred scattered fine rows: read-around would map far more
        // pages than it uses.
        let access = match tier {
            Tier::Coarse => Access::Scan,
            Tier::Fine => Access::Random,
        };
        let (map, id) = map_file(io, path, access)?;
        let (stride, scales_at) = check_vector_file(&map, path, elem, dim, rows, level)?;
        let file = VectorFile {
            map,
            elem,
            dim,
            stride,
            rows,
            scales_at,
        };
        Ok((file, id))
    }

    pub(crate) fn column(&self) -> VectorColumn<'_> {
        let data = &self.map[..self.rows * self.stride];
        let scales = (self.elem == ElemType::I8).then(|| {
            let at = self.scales_at;
            bytemuck::try_cast_slice(&self.map[at..at + self.rows * 4]).unwrap_or(&[])
        });
        VectorColumn::from_parts(self.elem, self.dim, self.stride, data, scales)
    }
}

/// A segment's field columns: the directory read at open, each column file mapped and
/// checked (crc32, values) on first use.
#[derive(Debug)]
struct FieldFiles {
    directory: FieldDirectory,
    /// Column `i` of the directory: its path, and its mapping once checked.
    columns: Vec<(PathBuf, OnceLock<Box<dyn MappedBytes>>)>,
}

/// An open, immutable segment. Its files are deleted when the last reference is dropped after
/// compaction replaced it, so a [`View`](crate::View) that still
/// holds it keeps reading valid mappings.
#[derive(Debug)]
pub struct Segment {
    info: SegmentInfo,
    /// Where the files are, and how they are deleted once obsolete.
    io: Arc<dyn Dir>,
    meta: Box<dyn MappedBytes>,
    meta_len: usize,
    /// Indexed by modality (image, text), then tier (coarse, fine).
    vectors: [Option<[VectorFile; 2]>; 2],
    has: [Bitmap; 2],
    /// Metadata and vector files (what [`mapped_files`](Self::mapped_files) lists), then the
    /// field directory and column files.
    files: Vec<PathBuf>,
    /// `(device, inode)` of each mapped file (the first `identities.len()` of `files`) as
    /// opened, to tell them from a file that later took the same name.
    identities: Vec<FileId>,
    /// `None` for a segment written before field columns existed.
    field_files: Option<FieldFiles>,
    /// Per modality, its coarse vectors' partitions (read whole at open: 4 bytes a row).
    partitions: [Option<PartitionIndex>; 2],
    /// Fields derived from the metadata archive on first use (segments without column files).
    derived_fields: OnceLock<OwnedFields>,
    obsolete: AtomicBool,
}

fn map_file(
    io: &dyn Dir,
    path: &Path,
    access: Access,
) -> Result<(Box<dyn MappedBytes>, FileId), StorageError> {
    let (map, id) = io
        .map(path, access)
        .map_err(|e| IoError::at(path, "map", e))?;
    if map.is_empty() {
        return Err(CorruptionError::new(path, 0, "empty file").into());
    }
    Ok((map, id))
}

impl Segment {
    /// Opens and validates segment `info` in `dir`. With [`VerifyLevel::Cheap`] the vector
    /// files' footers, descriptors and lengths are checked; with `Full` also their crc32.
    /// The metadata archive and the field directory are always crc-checked (the archive
    /// validated with bytecheck); field column files are not read until a field is used.
    pub fn open(
        dir: &Path,
        info: &SegmentInfo,
        schema: &Schema,
        level: VerifyLevel,
    ) -> Result<Segment, StorageError> {
        Self::open_in(&FsDir::shared(), dir, info, schema, level)
    }

    /// [`open`](Self::open) through `io`.
    pub(crate) fn open_in(
        io: &Arc<dyn Dir>,
        dir: &Path,
        info: &SegmentInfo,
        schema: &Schema,
        level: VerifyLevel,
    ) -> Result<Segment, StorageError> {
        let mut files = Vec::new();
        let mut identities = Vec::new();
        let meta_path = dir.join(meta_file_name(info.id));
        let (meta, id) = map_file(io.as_ref(), &meta_path, Access::Scan)?;
        files.push(meta_path.clone());
        identities.push(id);
        let body = codec::check_footer(&meta, FileKind::Meta, &meta_path, true)?;
        let meta_len = body.len();
        let has = validate_meta(body, info, &meta_path)?;
        let mut vectors: [Option<[VectorFile; 2]>; 2] = [None, None];
        for m in Modality::ALL {
            let present = has[m.index()].count_ones() > 0;
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
            let mut open_tier = |tier: Tier| -> Result<VectorFile, StorageError> {
                let path = dir.join(vector_file_name(info.id, m, tier));
                let rows = info.rows as usize;
                let (file, id) = VectorFile::open(io.as_ref(), &path, schema, tier, rows, level)?;
                files.push(path);
                identities.push(id);
                Ok(file)
            };
            let coarse = open_tier(Tier::Coarse)?;
            let fine = open_tier(Tier::Fine)?;
            vectors[m.index()] = Some([coarse, fine]);
        }
        let field_files = if info.has_field_columns() {
            let field_files = open_field_directory(io.as_ref(), dir, info)?;
            files.push(dir.join(field_directory_file_name(info.id)));
            files.extend(field_files.columns.iter().map(|(p, _)| p.clone()));
            Some(field_files)
        } else {
            None
        };
        let mut partitions: [Option<PartitionIndex>; 2] = [None, None];
        for m in Modality::ALL
            .into_iter()
            .filter(|&m| info.has_partitions(m))
        {
            let path = dir.join(partition_file_name(info.id, m));
            let index = read_partitions(io.as_ref(), &path, schema, &has[m.index()])?;
            files.push(path);
            partitions[m.index()] = Some(index);
        }
        Ok(Segment {
            info: info.clone(),
            io: io.clone(),
            meta,
            meta_len,
            vectors,
            has,
            files,
            identities,
            field_files,
            partitions,
            derived_fields: OnceLock::new(),
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

    /// Files of this segment (metadata, vectors, field directory and columns, partitions;
    /// tombstones are tracked by the store).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Each of [`files`](Self::files) with its `(device, inode)` and its bytes as mapped
    /// (footer included): what this handle reads, even after the file was deleted.
    pub(crate) fn mapped_files(&self) -> impl Iterator<Item = (&Path, FileId, &[u8])> {
        let vectors = self
            .vectors
            .iter()
            .flatten()
            .flat_map(|tiers| tiers.iter().map(|t| &t.map[..]));
        let maps = std::iter::once(&self.meta[..]).chain(vectors);
        self.files[..self.identities.len()]
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
        &self.has[m.index()]
    }

    pub(crate) fn column(&self, m: Modality, tier: Tier) -> Option<VectorColumn<'_>> {
        self.vectors[m.index()]
            .as_ref()
            .map(|tiers| tiers[tier.index()].column())
    }

    /// The partitions of modality `m`'s coarse vectors; `None` for a segment scanned flat.
    pub fn partitions(&self, m: Modality) -> Option<&PartitionIndex> {
        self.partitions[m.index()].as_ref()
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

    fn derived_fields(&self) -> &OwnedFields {
        self.derived_fields.get_or_init(|| {
            let a = self.archive();
            OwnedFields::derive(self.rows(), a.metadata.iter().map(|m| m.as_slice()))
        })
    }

    pub(crate) fn field(&self, name: &str) -> Result<Option<FieldColumn<'_>>, CorruptionError> {
        let Some(files) = &self.field_files else {
            return Ok(self.derived_fields().column(name));
        };
        match files.directory.position(name) {
            Some(column) => match self.field_column(files, column)? {
                Some(col) => Ok(Some(col)),
                // Gone: a writer in another process compacted this segment away after this
                // handle opened it. The column is a function of the mapped metadata.
                None => Ok(self.derived_fields().column(name)),
            },
            None if files.directory.overflow => Ok(self.derived_fields().column(name)),
            None => Ok(None),
        }
    }

    pub(crate) fn field_names(&self) -> Vec<&str> {
        match &self.field_files {
            Some(files) if !files.directory.overflow => {
                files.directory.names.iter().map(String::as_str).collect()
            }
            _ => self.derived_fields().names().collect(),
        }
    }

    /// Maps and checks every field column file (what `verify` reads).
    pub(crate) fn check_field_columns(&self) -> Result<(), CorruptionError> {
        let Some(files) = &self.field_files else {
            return Ok(());
        };
        for (column, (path, _)) in files.columns.iter().enumerate() {
            if self.field_column(files, column)?.is_none() {
                return Err(CorruptionError::new(
                    path,
                    0,
                    "field column file is missing",
                ));
            }
        }
        Ok(())
    }

    /// Column `column` of the directory, mapped and fully checked the first time; `None`
    /// when its file does not exist.
    fn field_column<'s>(
        &'s self,
        files: &'s FieldFiles,
        column: usize,
    ) -> Result<Option<FieldColumn<'s>>, CorruptionError> {
        let (path, slot) = &files.columns[column];
        let map = match slot.get() {
            Some(map) => map,
            None => {
                let Some(map) = map_field_column(self.io.as_ref(), path, self.rows())? else {
                    return Ok(None);
                };
                // A concurrent first use may have won: either mapping holds the same bytes.
                let _ = slot.set(map);
                slot.get()
                    .ok_or_else(|| CorruptionError::new(path, 0, "column not mapped"))?
            }
        };
        FieldColumn::parse(&map[..map.len() - FOOTER_LEN], path).map(Some)
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
                let _ = self.io.remove_file(f);
            }
        }
    }
}

/// Reads and fully checks a partition file for the rows of `has`.
fn read_partitions(
    io: &dyn Dir,
    path: &Path,
    schema: &Schema,
    has: &Bitmap,
) -> Result<PartitionIndex, StorageError> {
    let bytes = io.read(path).map_err(|e| IoError::at(path, "read", e))?;
    let body = codec::check_footer(&bytes, FileKind::Partitions, path, true)?;
    Ok(PartitionIndex::decode(body, path, schema.coarse_dim, has)?)
}

/// Reads and checks `seg-<id>.fields` (small: names only; the columns are mapped on use).
fn open_field_directory(
    io: &dyn Dir,
    dir: &Path,
    info: &SegmentInfo,
) -> Result<FieldFiles, StorageError> {
    let path = dir.join(field_directory_file_name(info.id));
    let bytes = io.read(&path).map_err(|e| IoError::at(&path, "read", e))?;
    let body = codec::check_footer(&bytes, FileKind::FieldDirectory, &path, true)?;
    let directory = FieldDirectory::decode(body, &path)?;
    if directory.rows != info.rows {
        return Err(CorruptionError::new(
            &path,
            0,
            format!(
                "field directory for {} rows, the segment has {}",
                directory.rows, info.rows
            ),
        )
        .into());
    }
    let columns = (0..directory.names.len())
        .map(|c| {
            (
                dir.join(field_column_file_name(info.id, c)),
                OnceLock::new(),
            )
        })
        .collect();
    Ok(FieldFiles { directory, columns })
}

/// Maps one field column file and checks its footer, crc32, row count and values; `None`
/// when it does not exist. A file that cannot be mapped otherwise is reported as damage of
/// that file (the segment's directory names it).
fn map_field_column(
    io: &dyn Dir,
    path: &Path,
    rows: usize,
) -> Result<Option<Box<dyn MappedBytes>>, CorruptionError> {
    let map = match io.map(path, Access::Scan) {
        Ok((map, _)) => map,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let what = format!("cannot map field column: {e}");
            return Err(CorruptionError::new(path, 0, what));
        }
    };
    let body = codec::check_footer(&map, FileKind::FieldColumn, path, true)?;
    let column = FieldColumn::parse(body, path)?;
    if column.rows() != rows {
        return Err(CorruptionError::new(
            path,
            0,
            format!(
                "field column of {} rows, the segment has {rows}",
                column.rows()
            ),
        ));
    }
    column.validate(path)?;
    Ok(Some(map))
}

fn validate_meta(
    body: &[u8],
    info: &SegmentInfo,
    path: &Path,
) -> Result<[Bitmap; 2], StorageError> {
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

/// Checks a vector file's footer, descriptor and length against the schema and returns its
/// stride and the length of its rows region. The stride is the descriptor's, which must be the padded one (fine files, and every file of a
/// database written before coarse rows were packed) or the packed one (coarse files now).
fn check_vector_file(
    bytes: &[u8],
    path: &Path,
    elem: ElemType,
    dim: usize,
    rows: usize,
    level: VerifyLevel,
) -> Result<(usize, usize), CorruptionError> {
    let body = codec::check_footer(bytes, FileKind::Vectors, path, level == VerifyLevel::Full)?;
    let Some(at) = body.len().checked_sub(DESCRIPTOR_LEN) else {
        return Err(CorruptionError::new(
            path,
            0,
            format!("body is {} bytes, shorter than the descriptor", body.len()),
        ));
    };
    let mut d = Decoder::new(&body[at..], at as u64, path);
    let file_elem = decode_elem(d.u8("element type")?).ok_or_else(|| d.error("element type"))?;
    d.take(3, "padding")?;
    let file_dim = d.u32("dim")? as usize;
    let stride = d.u32("stride")? as usize;
    d.take(4, "padding")?;
    let file_rows = d.u64("rows")?;
    let known_stride = stride == padded_stride(elem, dim) || stride == packed_stride(elem, dim);
    if (file_elem, file_dim, file_rows) != (elem, dim, rows as u64) || !known_stride {
        return Err(CorruptionError::new(
            path,
            at as u64,
            format!(
                "descriptor says {file_elem:?}×{file_dim} stride {stride}, {file_rows} rows; \
                 expected {elem:?}×{dim} stride {} or {}, {rows} rows",
                padded_stride(elem, dim),
                packed_stride(elem, dim)
            ),
        ));
    }
    let scales = if elem == ElemType::I8 { rows * 4 } else { 0 };
    let region = rows_region_len(rows, stride);
    let expected = region.and_then(|n| n.checked_add(scales + DESCRIPTOR_LEN));
    if expected != Some(body.len()) {
        return Err(CorruptionError::new(
            path,
            0,
            format!(
                "body is {} bytes, {rows} rows of {elem:?}×{dim} at stride {stride} need {expected:?}",
                body.len()
            ),
        ));
    }
    Ok((stride, region.unwrap_or(0)))
}

/// Reads and fully checks a tombstone file for a segment of `rows` rows.
pub(crate) fn read_tombstones(
    io: &dyn Dir,
    path: &Path,
    rows: usize,
) -> Result<Bitmap, StorageError> {
    let bytes = io.read(path).map_err(|e| IoError::at(path, "read", e))?;
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
