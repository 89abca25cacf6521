//! Clusters a segment's coarse vectors into partitions when the segment is written: k-means++
//! seeding and a few Lloyd rounds on an evenly spaced sample, then every row assigned to its
//! nearest centroid. It runs off the write path's lock (in a flush or a compaction) and costs
//! seconds per million rows, since the sample, not the segment, sets the rounds' cost.

use std::time::Instant;

use rayon::prelude::*;

use crate::data::bitmap::Bitmap;
use crate::data::column::VectorColumn;
use crate::format::partitions::{MAX_PARTITIONS, PartitionIndex};

/// Rows per partition the clustering aims at: a probe of a few partitions then reads a few
/// thousand rows, and scoring the centroids costs a small share of that. Measured on 1M
/// clustered rows (1,000 clusters, 64-d coarse): of the true top 10, the best 1% of the rows
/// held 86% with 1,024 rows a partition and 99% with 512.
pub const ROWS_PER_PARTITION: usize = 512;

/// Sample rows per partition the centroids are fitted on.
const SAMPLE_PER_PARTITION: usize = 32;

/// Lloyd rounds after seeding.
const LLOYD_ROUNDS: usize = 8;

/// Rows assigned per parallel task.
const ASSIGN_CHUNK: usize = 4096;

/// Partitions of the rows of `column` whose bit is set in `has`.
pub(crate) fn partition(column: &VectorColumn<'_>, has: &Bitmap) -> PartitionIndex {
    let started = Instant::now();
    let listed: Vec<u32> = (0..has.len())
        .filter(|&r| has.get(r))
        .map(|r| r as u32)
        .collect();
    let dim = column.dim();
    let k = (listed.len() / ROWS_PER_PARTITION).clamp(1, MAX_PARTITIONS);
    let sample_len = (k * SAMPLE_PER_PARTITION).min(listed.len());
    let sample_rows: Vec<u32> = (0..sample_len)
        .map(|i| listed[i * listed.len() / sample_len])
        .collect();
    let sample = rows_f32(column, &sample_rows);
    let mut centroids = seed(&sample, dim, k);
    for _ in 0..LLOYD_ROUNDS {
        let assignment = assign(&sample, dim, &centroids);
        centroids = means(&sample, dim, &assignment, centroids);
    }
    let assignment: Vec<u32> = listed
        .par_chunks(ASSIGN_CHUNK)
        .flat_map_iter(|rows| assign(&rows_f32(column, rows), dim, &centroids))
        .collect();
    PartitionIndex::from_assignment(
        dim,
        centroids,
        &listed,
        &assignment,
        has.len(),
        started.elapsed(),
    )
}

fn rows_f32(column: &VectorColumn<'_>, rows: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * column.dim());
    let mut row = Vec::new();
    for &r in rows {
        column.row_to_f32(r as usize, &mut row);
        out.extend_from_slice(&row);
    }
    out
}

/// k-means++: each next centroid drawn with probability proportional to the squared distance
/// to the nearest chosen one (a fixed-seed generator, so a segment's partitions are a function
/// of its rows).
fn seed(points: &[f32], dim: usize, k: usize) -> Vec<f32> {
    let n = points.len() / dim.max(1);
    let mut rng = SplitMix(0x5eed_cafe_f00d_u64);
    let mut centroids = Vec::with_capacity(k * dim);
    let first = (rng.next() % n as u64) as usize;
    centroids.extend_from_slice(&points[first * dim..(first + 1) * dim]);
    let mut nearest: Vec<f32> = points
        .par_chunks(dim)
        .map(|p| squared_distance(p, &centroids[..dim]))
        .collect();
    while centroids.len() < k * dim {
        let total: f64 = nearest.iter().map(|&d| f64::from(d)).sum();
        let chosen = if total > 0.0 {
            let mut target = rng.unit() * total;
            nearest
                .iter()
                .position(|&d| {
                    target -= f64::from(d);
                    target <= 0.0
                })
                .unwrap_or(n - 1)
        } else {
            // Every point is a centroid already (duplicates): any point will do.
            (rng.next() % n as u64) as usize
        };
        let c = points[chosen * dim..(chosen + 1) * dim].to_vec();
        nearest
            .par_iter_mut()
            .zip(points.par_chunks(dim))
            .for_each(|(d, p)| *d = d.min(squared_distance(p, &c)));
        centroids.extend_from_slice(&c);
    }
    centroids
}

/// The nearest centroid of each point: the largest `p·c − |c|²/2`.
fn assign(points: &[f32], dim: usize, centroids: &[f32]) -> Vec<u32> {
    let half_norms: Vec<f32> = centroids
        .chunks_exact(dim)
        .map(|c| dot(c, c) / 2.0)
        .collect();
    points
        .chunks_exact(dim)
        .map(|p| {
            let mut best = (f32::NEG_INFINITY, 0u32);
            for (i, (c, h)) in centroids.chunks_exact(dim).zip(&half_norms).enumerate() {
                let s = dot(p, c) - h;
                if s > best.0 {
                    best = (s, i as u32);
                }
            }
            best.1
        })
        .collect()
}

/// The mean of each partition's points; a partition left empty keeps its centroid.
fn means(points: &[f32], dim: usize, assignment: &[u32], previous: Vec<f32>) -> Vec<f32> {
    let k = previous.len() / dim;
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (p, &a) in points.chunks_exact(dim).zip(assignment) {
        let a = a as usize;
        counts[a] += 1;
        for (s, &v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(p) {
            *s += f64::from(v);
        }
    }
    let mut centroids = previous;
    for (c, (sum, &count)) in centroids
        .chunks_exact_mut(dim)
        .zip(sums.chunks_exact(dim).zip(&counts))
    {
        if count > 0 {
            for (v, s) in c.iter_mut().zip(sum) {
                *v = (s / count as f64) as f32;
            }
        }
    }
    centroids
}

/// A dot product with eight independent sums, so that it vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// SplitMix64: a tiny deterministic generator (no dependency for one seeded draw sequence).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ElemType;

    #[test]
    fn clusters_are_recovered_and_every_row_is_listed_once() {
        // Four well-separated clusters of 2-d points, 512 rows each, row 5 without a vector.
        let centres = [(10.0f32, 0.0f32), (-10.0, 0.0), (0.0, 10.0), (0.0, -10.0)];
        let rows = 4 * ROWS_PER_PARTITION;
        let mut values = Vec::new();
        for r in 0..rows {
            let (x, y) = centres[r % 4];
            let jitter = ((r * 7919) % 100) as f32 / 100.0;
            values.extend_from_slice(&[x + jitter, y - jitter]);
        }
        let bytes: &[u8] = bytemuck::cast_slice(&values);
        let column = VectorColumn::from_parts(ElemType::F32, 2, 8, bytes, None);
        let mut has = Bitmap::new(rows);
        for r in (0..rows).filter(|&r| r != 5) {
            has.set(r);
        }
        let index = partition(&column, &has);
        assert_eq!(index.len(), 3);
        assert_eq!(index.listed(), rows - 1);
        assert_eq!(index.partition_of(5), None);
        // Rows of one cluster share a partition.
        for r in 0..rows - 4 {
            if r != 5 && r + 4 != 5 {
                assert_eq!(index.partition_of(r), index.partition_of(r + 4), "{r}");
            }
        }
    }
}
