//! The partition file of one modality of a segment, `seg-<id>.<image|text>.parts`: the
//! centroids of a k-means clustering of the segment's coarse vectors and, per partition, the
//! rows assigned to it. A query scores the centroids and scans only the rows of the best
//! partitions (see `FORMAT.md`). The writer puts the rows of one modality in partition order,
//! so that its partitions are row ranges (listed rows `0, 1, 2, …`); the other modality's
//! partitions list rows scattered through the segment.
//!
//! Body, little-endian: `[dim u32][partitions u32][segment rows u64][listed u64]
//! [build micros u64][centroids f32 × partitions × dim][offsets u32 × (partitions + 1)]
//! [rows u32 × listed]`, then the usual footer. Partition `p` holds `rows[offsets[p]..
//! offsets[p + 1]]`, ascending, so a probe reads the coarse file forward.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use crate::data::bitmap::Bitmap;
use crate::error::CorruptionError;
use crate::format::codec::{Decoder, Encoder};

/// Most partitions one file may list: far more than a segment's row limit needs at the
/// rows per partition the writer aims at, and a bound for what a damaged header may ask for.
pub const MAX_PARTITIONS: usize = 1 << 20;

/// A segment modality's partitions, decoded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionIndex {
    dim: usize,
    /// `partitions × dim` values, partition by partition.
    centroids: Vec<f32>,
    offsets: Vec<u32>,
    segment_rows: usize,
    /// The rows of partitions scattered through the segment, partition by partition, and
    /// row → partition (`u32::MAX` for a row without a vector of the modality). `None` when
    /// the rows were written in this modality's partition order: partition `p` is then rows
    /// `offsets[p]..offsets[p + 1]`, and neither list is kept in memory.
    scattered: Option<(Vec<u32>, Vec<u32>)>,
    build_time: Duration,
}

/// The rows of one partition.
#[derive(Clone, Debug, PartialEq)]
pub enum PartitionRows<'a> {
    /// A partition of the modality whose rows the segment holds in partition order.
    Range(Range<usize>),
    /// A partition whose rows (ascending) lie scattered through the segment.
    Listed(&'a [u32]),
}

impl PartitionIndex {
    /// An index from its parts: `assignment[i]` is the partition of `listed[i]` (rows in
    /// ascending order), over a segment of `segment_rows` rows.
    pub(crate) fn from_assignment(
        dim: usize,
        centroids: Vec<f32>,
        listed: &[u32],
        assignment: &[u32],
        segment_rows: usize,
        build_time: Duration,
    ) -> Self {
        let partitions = centroids.len() / dim.max(1);
        let mut offsets = vec![0u32; partitions + 1];
        for &p in assignment {
            offsets[p as usize + 1] += 1;
        }
        for p in 0..partitions {
            offsets[p + 1] += offsets[p];
        }
        let mut next = offsets.clone();
        let mut rows = vec![0u32; listed.len()];
        for (&row, &p) in listed.iter().zip(assignment) {
            rows[next[p as usize] as usize] = row;
            next[p as usize] += 1;
        }
        Self::new(dim, centroids, offsets, rows, segment_rows, build_time)
    }

    fn new(
        dim: usize,
        centroids: Vec<f32>,
        offsets: Vec<u32>,
        rows: Vec<u32>,
        segment_rows: usize,
        build_time: Duration,
    ) -> Self {
        let contiguous = rows.iter().enumerate().all(|(i, &r)| r as usize == i);
        let scattered = (!contiguous).then(|| {
            let of = partition_of(&offsets, &rows, segment_rows);
            (rows, of)
        });
        Self {
            dim,
            centroids,
            offsets,
            segment_rows,
            scattered,
            build_time,
        }
    }

    /// Number of partitions.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are no partitions (never, for an index the writer built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The coarse dimension of the centroids.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Centroid `p` (`dim` values).
    pub fn centroid(&self, p: usize) -> &[f32] {
        &self.centroids[p * self.dim..(p + 1) * self.dim]
    }

    /// Rows of partition `p`.
    pub fn rows_of(&self, p: usize) -> PartitionRows<'_> {
        let span = self.offsets[p] as usize..self.offsets[p + 1] as usize;
        match &self.scattered {
            Some((rows, _)) => PartitionRows::Listed(&rows[span]),
            None => PartitionRows::Range(span),
        }
    }

    /// Number of rows of partition `p`.
    pub fn len_of(&self, p: usize) -> usize {
        (self.offsets[p + 1] - self.offsets[p]) as usize
    }

    /// Rows listed over all partitions (the segment's rows with a vector of the modality).
    pub fn listed(&self) -> usize {
        self.offsets[self.len()] as usize
    }

    /// The partition of `row`, `None` for a row without a vector of the modality.
    pub fn partition_of(&self, row: usize) -> Option<usize> {
        match &self.scattered {
            Some((_, of)) => of.get(row).filter(|&&p| p != u32::MAX).map(|&p| p as usize),
            // The last partition starting at or before `row` (empty ones start there too).
            None => (row < self.listed())
                .then(|| self.offsets.partition_point(|&o| o as usize <= row) - 1),
        }
    }

    /// How long clustering the segment's coarse vectors took when it was written.
    pub fn build_time(&self) -> Duration {
        self.build_time
    }

    /// The file body (footer excluded).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.u32(self.dim as u32);
        e.u32(self.len() as u32);
        e.u64(self.segment_rows as u64);
        e.u64(self.listed() as u64);
        e.u64(self.build_time.as_micros().min(u128::from(u64::MAX)) as u64);
        let mut body = e.buf;
        body.extend_from_slice(bytemuck::cast_slice(&self.centroids));
        body.extend_from_slice(bytemuck::cast_slice(&self.offsets));
        match &self.scattered {
            Some((rows, _)) => body.extend_from_slice(bytemuck::cast_slice(rows)),
            None => {
                for row in 0..self.listed() as u32 {
                    body.extend_from_slice(&row.to_le_bytes());
                }
            }
        }
        body
    }

    /// Decodes and checks a body against the segment: `dim` coarse values per centroid, all
    /// finite; offsets ascending from 0 to the rows listed; every row of `has` listed exactly
    /// once, ascending within its partition.
    pub(crate) fn decode(
        body: &[u8],
        path: &Path,
        dim: usize,
        has: &Bitmap,
    ) -> Result<Self, CorruptionError> {
        let mut d = Decoder::new(body, 0, path);
        let file_dim = d.u32("centroid dimension")? as usize;
        let partitions = d.u32("partition count")? as usize;
        let segment_rows = d.u64("segment rows")?;
        let listed = d.u64("rows listed")?;
        let build_micros = d.u64("build time")?;
        if file_dim != dim {
            return Err(d.error(format!(
                "centroids of dimension {file_dim}, the coarse vectors have {dim}"
            )));
        }
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(d.error(format!("{partitions} partitions")));
        }
        if segment_rows != has.len() as u64 || listed != has.count_ones() as u64 {
            return Err(d.error(format!(
                "{listed} of {segment_rows} rows listed, the segment has {} of {} rows with \
                 vectors",
                has.count_ones(),
                has.len()
            )));
        }
        let listed = listed as usize;
        let centroids: Vec<f32> = floats(&mut d, partitions * dim, "centroids")?;
        if let Some(i) = centroids.iter().position(|v| !v.is_finite()) {
            return Err(d.error(format!("centroid value {i} is not finite")));
        }
        let offsets = words(&mut d, partitions + 1, "partition offsets")?;
        let rows = words(&mut d, listed, "partition rows")?;
        d.finish("partition file")?;
        if offsets[0] != 0 || offsets[partitions] as usize != listed {
            return Err(d.error("partition offsets do not span the listed rows"));
        }
        let mut seen = Bitmap::new(has.len());
        for p in 0..partitions {
            let (from, to) = (offsets[p] as usize, offsets[p + 1] as usize);
            if from > to || to > listed {
                return Err(d.error(format!(
                    "offsets of partition {p} descend or pass the listed rows"
                )));
            }
            let mut prev = None;
            for &row in &rows[from..to] {
                let r = row as usize;
                if r >= has.len() || !has.get(r) || seen.get(r) || prev.is_some_and(|q| q >= row) {
                    return Err(d.error(format!(
                        "partition {p} lists row {row}: beyond the segment, without a vector, \
                         listed twice or out of order"
                    )));
                }
                seen.set(r);
                prev = Some(row);
            }
        }
        let build_time = Duration::from_micros(build_micros);
        Ok(Self::new(
            dim,
            centroids,
            offsets,
            rows,
            has.len(),
            build_time,
        ))
    }
}

fn partition_of(offsets: &[u32], rows: &[u32], segment_rows: usize) -> Vec<u32> {
    let mut of = vec![u32::MAX; segment_rows];
    for p in 0..offsets.len() - 1 {
        for &row in &rows[offsets[p] as usize..offsets[p + 1] as usize] {
            of[row as usize] = p as u32;
        }
    }
    of
}

fn words(d: &mut Decoder<'_, '_>, n: usize, what: &str) -> Result<Vec<u32>, CorruptionError> {
    let bytes = d.take(n.saturating_mul(4), what)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn floats(d: &mut Decoder<'_, '_>, n: usize, what: &str) -> Result<Vec<f32>, CorruptionError> {
    Ok(words(d, n, what)?.into_iter().map(f32::from_bits).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> (PartitionIndex, Bitmap) {
        let mut has = Bitmap::new(6);
        for r in [0, 1, 3, 4, 5] {
            has.set(r);
        }
        let centroids = vec![1.0, 0.0, 0.0, 1.0];
        let listed = [0, 1, 3, 4, 5];
        let assignment = [1, 0, 1, 0, 0];
        let index = PartitionIndex::from_assignment(
            2,
            centroids,
            &listed,
            &assignment,
            6,
            Duration::from_micros(7),
        );
        (index, has)
    }

    #[test]
    fn round_trip_and_lookups() {
        let (index, has) = index();
        assert_eq!(index.rows_of(0), PartitionRows::Listed(&[1, 4, 5]));
        assert_eq!(index.rows_of(1), PartitionRows::Listed(&[0, 3]));
        assert_eq!(index.partition_of(3), Some(1));
        assert_eq!(index.partition_of(2), None);
        let p = Path::new("seg.parts");
        let back = PartitionIndex::decode(&index.encode(), p, 2, &has).unwrap();
        assert_eq!(back, index);
        assert!(PartitionIndex::decode(&index.encode(), p, 3, &has).is_err());
    }

    #[test]
    fn rows_in_partition_order_make_ranges() {
        let mut has = Bitmap::new(5);
        for r in 0..4 {
            has.set(r);
        }
        // Partition 1 is empty.
        let centroids = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let (listed, assignment) = ([0, 1, 2, 3], [0, 0, 0, 2]);
        let index =
            PartitionIndex::from_assignment(2, centroids, &listed, &assignment, 5, Duration::ZERO);
        assert_eq!(index.rows_of(0), PartitionRows::Range(0..3));
        assert_eq!(index.rows_of(1), PartitionRows::Range(3..3));
        assert_eq!(index.rows_of(2), PartitionRows::Range(3..4));
        assert_eq!(index.len_of(0), 3);
        let of: Vec<_> = (0..5).map(|r| index.partition_of(r)).collect();
        assert_eq!(of, [Some(0), Some(0), Some(0), Some(2), None]);
        let p = Path::new("seg.parts");
        let back = PartitionIndex::decode(&index.encode(), p, 2, &has).unwrap();
        assert_eq!(back, index);
    }

    #[test]
    fn every_damaged_body_is_refused() {
        let (index, has) = index();
        let body = index.encode();
        let p = Path::new("seg.parts");
        for cut in 0..body.len() {
            assert!(PartitionIndex::decode(&body[..cut], p, 2, &has).is_err());
        }
        // A row listed twice, rows out of order, a row without a vector, descending offsets.
        let rows_at = body.len() - 5 * 4;
        for (at, value) in [
            (rows_at, 4u32),
            (rows_at + 4, 1),
            (rows_at, 2),
            (rows_at - 8, 9),
        ] {
            let mut bad = body.clone();
            bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert!(PartitionIndex::decode(&bad, p, 2, &has).is_err(), "{at}");
        }
        let mut nan = body.clone();
        nan[32..36].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(PartitionIndex::decode(&nan, p, 2, &has).is_err());
    }
}
