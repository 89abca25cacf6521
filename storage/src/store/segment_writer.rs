//! Writes segments and tombstones from the rows of readers' [`Source`]s: the flush,
//! compaction and snapshot paths share it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::data::bitmap::Bitmap;
use crate::data::fields::field_values;
use crate::data::kmeans::{Clustering, cluster};
use crate::data::source::Source;
use crate::data::vectors::{encode_row, file_stride, rows_region_len};
use crate::error::{CompactionError, IoError, StorageError};
use crate::format::codec::FileKind;
use crate::format::field_column::encode_column;
use crate::format::partitions::PartitionIndex;
use crate::format::segment::{
    DESCRIPTOR_LEN, FIELD_COLUMNS, FieldDirectory, MAX_FIELD_COLUMNS, SegmentInfo, SegmentMeta,
    encode_elem, field_column_file_name, field_directory_file_name, meta_file_name, modality_bit,
    partition_file_name, partitions_bit, tombstone_file_name, vector_file_name,
};
use crate::io::dir::Dir;
use crate::io::file_writer::FileWriter;
use crate::schema::{ElemType, Modality, Schema, Tier};

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

/// A coarse rewrite hook and how to report a vector it made that cannot be stored. Its error
/// type is the writer's: a segment written without a hook can fail only with an [`IoError`].
pub(crate) type RewriteWith<'a, E> = (&'a CoarseRewrite, fn(String) -> E);

/// The rewrite hook of a compaction, which reports unstorable vectors as
/// [`CompactionError::Rewrite`].
pub(crate) fn compaction_rewrite(
    hook: Option<&CoarseRewrite>,
) -> Option<RewriteWith<'_, CompactionError>> {
    hook.map(|h| (h, CompactionError::Rewrite as fn(String) -> CompactionError))
}

/// Where each row given to [`write_segment`] went: the rows of a partitioned segment are
/// written in partition order, so that a probe reads each partition as one range of rows.
pub(crate) struct RowOrder(Option<Vec<u32>>);

impl RowOrder {
    /// The segment row of the `input`-th row given.
    pub fn segment_row(&self, input: usize) -> usize {
        self.0.as_ref().map_or(input, |rows| rows[input] as usize)
    }
}

/// Writes segment `id` from `rows` into `dir` (files fsynced; the caller fsyncs the directory),
/// with a partition file for each modality of at least `partition_min_rows` rows.
/// On error the files written so far are removed.
pub(crate) fn write_segment<E: From<IoError> + From<StorageError>>(
    io: &dyn Dir,
    dir: &Path,
    id: u64,
    schema: &Schema,
    rows: &[RowRef<'_>],
    rewrite: Option<RewriteWith<'_, E>>,
    partition_min_rows: usize,
) -> Result<(SegmentInfo, RowOrder), E> {
    let hook = rewrite.map(|(hook, _)| hook);
    let plan = PartitionPlan::new(schema, rows, hook, partition_min_rows);
    let row_order = plan.row_order();
    let PartitionPlan { clusterings, order } = plan;
    let ordered: Vec<RowRef<'_>>;
    let rows = match &order {
        Some(order) => {
            ordered = order.iter().map(|&i| rows[i as usize]).collect();
            &ordered[..]
        }
        None => rows,
    };
    let mut written = Vec::new();
    let result = write_segment_files(io, dir, id, schema, rows, rewrite, &mut written).and_then(
        |(mut info, has)| {
            for (m, clustering) in clusterings {
                let index = clustering.into_index(&has[m.index()], order.as_deref());
                let path = dir.join(partition_file_name(info.id, m));
                written.push(path.clone());
                write_partition_file(io, path, &index)?;
                info.modalities |= partitions_bit(m);
            }
            Ok(info)
        },
    );
    match result {
        Ok(info) => Ok((info, row_order)),
        Err(e) => {
            for f in written {
                let _ = io.remove_file(&f);
            }
            Err(e)
        }
    }
}

/// The partitions of a segment about to be written, and the row order they give it.
struct PartitionPlan {
    /// Per modality with enough rows, the clustering of its coarse vectors (rows given).
    clusterings: Vec<(Modality, ModalityClustering)>,
    /// `order[j]`: the given row written as segment row `j`; `None` when no modality is
    /// partitioned. The rows of the modality with the most vectors (image on a tie) go
    /// partition by partition, the rows without its vectors last: its partitions are row
    /// ranges. The other modality's partitions list rows scattered through the segment.
    order: Option<Vec<u32>>,
}

/// One modality's clustering, over the given rows.
struct ModalityClustering {
    centroids: Vec<f32>,
    dim: usize,
    /// Per given row, its partition (`u32::MAX` for a row without a vector of the modality).
    partition_of: Vec<u32>,
    build_time: Duration,
}

impl PartitionPlan {
    /// Clusters the coarse vectors of each modality of `rows` that has at least `min_rows`
    /// vectors: as `rewrite` makes them where given (a compaction that recomputes them), else
    /// as stored.
    fn new(
        schema: &Schema,
        rows: &[RowRef<'_>],
        rewrite: Option<&CoarseRewrite>,
        min_rows: usize,
    ) -> Self {
        let mut clusterings = Vec::new();
        for m in Modality::ALL {
            let listed: Vec<u32> = (0..rows.len() as u32)
                .filter(|&i| {
                    let r = rows[i as usize];
                    r.source.has(m).get(r.row)
                })
                .collect();
            if listed.len() < min_rows.max(1) {
                continue;
            }
            let started = Instant::now();
            let dim = schema.coarse_dim;
            let vector = |i: usize, out: &mut Vec<f32>| {
                let r = rows[listed[i] as usize];
                match rewrite {
                    Some(hook) => {
                        // The fine vector and the coarse one made from it share `out`, so
                        // that clustering allocates nothing per row.
                        r.source.fine(m).row_to_f32(r.row, out);
                        let fine_dim = out.len();
                        out.resize(fine_dim + dim, 0.0);
                        let (fine, coarse) = out.split_at_mut(fine_dim);
                        hook(m, fine, coarse);
                        out.copy_within(fine_dim.., 0);
                        out.truncate(dim);
                    }
                    None => r.source.coarse(m).row_to_f32(r.row, out),
                }
            };
            let Clustering {
                centroids,
                assignment,
            } = cluster(listed.len(), dim, &vector);
            let mut partition_of = vec![u32::MAX; rows.len()];
            for (&i, &p) in listed.iter().zip(&assignment) {
                partition_of[i as usize] = p;
            }
            let clustering = ModalityClustering {
                centroids,
                dim,
                partition_of,
                build_time: started.elapsed(),
            };
            clusterings.push((m, clustering));
        }
        // `max_by_key` keeps the last of equals: reversed, image wins a tie.
        let primary = clusterings
            .iter()
            .rev()
            .map(|(_, c)| c)
            .max_by_key(|c| c.partition_of.iter().filter(|&&p| p != u32::MAX).count());
        let order = primary.map(|c| {
            let mut order: Vec<u32> = (0..rows.len() as u32).collect();
            order.sort_by_key(|&i| c.partition_of[i as usize]);
            order
        });
        Self { clusterings, order }
    }

    /// The segment row of each given row.
    fn row_order(&self) -> RowOrder {
        RowOrder(self.order.as_ref().map(|order| {
            let mut segment_row = vec![0u32; order.len()];
            for (j, &i) in order.iter().enumerate() {
                segment_row[i as usize] = j as u32;
            }
            segment_row
        }))
    }
}

impl ModalityClustering {
    /// The partition index of the segment written in `order` (see [`PartitionPlan::order`]),
    /// whose rows with vectors of the modality are `has`.
    fn into_index(self, has: &Bitmap, order: Option<&[u32]>) -> PartitionIndex {
        let given = |j: usize| order.map_or(j, |o| o[j] as usize);
        let listed: Vec<u32> = (0..has.len())
            .filter(|&j| has.get(j))
            .map(|j| j as u32)
            .collect();
        let assignment: Vec<u32> = listed
            .iter()
            .map(|&j| self.partition_of[given(j as usize)])
            .collect();
        let rows = has.len();
        PartitionIndex::from_assignment(
            self.dim,
            self.centroids,
            &listed,
            &assignment,
            rows,
            self.build_time,
        )
    }
}

fn write_segment_files<E: From<IoError>>(
    io: &dyn Dir,
    dir: &Path,
    id: u64,
    schema: &Schema,
    rows: &[RowRef<'_>],
    rewrite: Option<RewriteWith<'_, E>>,
    written: &mut Vec<PathBuf>,
) -> Result<(SegmentInfo, [Bitmap; 2]), E> {
    let n = rows.len();
    let mut has = [Bitmap::new(n), Bitmap::new(n)];
    for (i, r) in rows.iter().enumerate() {
        for m in Modality::ALL {
            if r.source.has(m).get(r.row) {
                has[m.index()].set(i);
            }
        }
    }
    let mut modalities = 0u8;
    let mut fine_buf = Vec::new();
    let mut coarse_buf = vec![0f32; schema.coarse_dim];
    for m in Modality::ALL {
        let has_m = &has[m.index()];
        if has_m.count_ones() == 0 {
            continue;
        }
        modalities |= modality_bit(m);
        for tier in Tier::ALL {
            let (elem, dim) = schema.tier(tier);
            let stride = file_stride(tier, elem, dim);
            let path = dir.join(vector_file_name(id, m, tier));
            written.push(path.clone());
            let mut w = FileWriter::create(io, path)?;
            let mut row_buf = vec![0u8; stride];
            let mut scales = Vec::with_capacity(if elem == ElemType::I8 { n } else { 0 });
            for (i, r) in rows.iter().enumerate() {
                row_buf.fill(0);
                let mut scale = 0.0;
                if has_m.get(i) {
                    let fine_col = r.source.fine(m);
                    match rewrite.filter(|_| tier == Tier::Coarse) {
                        Some((hook, reject)) => {
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
                                return Err(reject(format!(
                                    "{m:?} coarse vector of id {} holds {v} at index {j}",
                                    r.source.id(r.row)
                                )));
                            }
                            scale =
                                encode_row(elem, &coarse_buf, &mut row_buf[..dim * elem.size()]);
                        }
                        None => {
                            let col = match tier {
                                Tier::Coarse => r.source.coarse(m),
                                Tier::Fine => fine_col,
                            };
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
            let region = rows_region_len(n, stride).unwrap_or(n * stride);
            w.write(&vec![0u8; region - n * stride])?;
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
    let mut w = FileWriter::create(io, path)?;
    w.write(&archive)?;
    w.finish(FileKind::Meta)?;
    let metadata = meta.metadata.iter().map(Vec::as_slice);
    write_field_files(io, dir, id, n, metadata, written)?;
    let info = SegmentInfo {
        id,
        rows: n as u64,
        modalities: modalities | FIELD_COLUMNS,
        del_gen: 0,
    };
    Ok((info, has))
}

/// Writes one partition file (fsynced).
pub(crate) fn write_partition_file(
    io: &dyn Dir,
    path: PathBuf,
    index: &PartitionIndex,
) -> Result<PathBuf, IoError> {
    let mut w = FileWriter::create(io, path)?;
    w.write(&index.encode())?;
    w.finish(FileKind::Partitions)
}

/// Writes the field columns of segment `id` from its rows' metadata (in row order): one
/// column file per field (the [`MAX_FIELD_COLUMNS`] most frequent), then the directory
/// naming them. Every path is pushed to `written` before its file is created.
pub(crate) fn write_field_files<'m>(
    io: &dyn Dir,
    dir: &Path,
    id: u64,
    rows: usize,
    metadata: impl Iterator<Item = &'m [u8]>,
    written: &mut Vec<PathBuf>,
) -> Result<(), IoError> {
    let mut fields: Vec<_> = field_values(metadata).into_iter().collect();
    let overflow = fields.len() > MAX_FIELD_COLUMNS;
    if overflow {
        fields.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        fields.truncate(MAX_FIELD_COLUMNS);
        fields.sort_by(|a, b| a.0.cmp(&b.0));
    }
    for (column, (_, values)) in fields.iter().enumerate() {
        let path = dir.join(field_column_file_name(id, column));
        written.push(path.clone());
        let mut w = FileWriter::create(io, path)?;
        w.write(&encode_column(rows, values))?;
        w.finish(FileKind::FieldColumn)?;
    }
    let directory = FieldDirectory {
        rows: rows as u64,
        overflow,
        names: fields.into_iter().map(|(name, _)| name).collect(),
    };
    let path = dir.join(field_directory_file_name(id));
    written.push(path.clone());
    let mut w = FileWriter::create(io, path)?;
    w.write(&directory.encode())?;
    w.finish(FileKind::FieldDirectory)?;
    Ok(())
}

/// Writes tombstone generation `generation` of segment `id`: `[rows u64][words u64…]`.
pub(crate) fn write_tombstones(
    io: &dyn Dir,
    dir: &Path,
    id: u64,
    generation: u64,
    deleted: &Bitmap,
) -> Result<PathBuf, IoError> {
    let mut w = FileWriter::create(io, dir.join(tombstone_file_name(id, generation)))?;
    w.write(&(deleted.len() as u64).to_le_bytes())?;
    w.write(bytemuck::cast_slice(deleted.words()))?;
    w.finish(FileKind::Tombstones)
}

/// Every live row of `sources`, in order.
pub(super) fn live_rows(sources: &[Source]) -> Vec<RowRef<'_>> {
    sources
        .iter()
        .flat_map(|s| {
            (0..s.rows())
                .filter(|&r| !s.is_deleted(r))
                .map(move |row| RowRef { source: s, row })
        })
        .collect()
}
