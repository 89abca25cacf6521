//! Clusters a segment's coarse vectors into partitions when the segment is written: k-means++
//! seeding and a few Lloyd rounds on an evenly spaced sample, then every row assigned to its
//! nearest centroid. It runs off the write path's lock (in a flush or a compaction) and costs
//! seconds per million rows: the sample, not the segment, sets the rounds' cost, and with many
//! centroids a point is compared with the members of a few groups of them, not with all.

use rayon::prelude::*;

use crate::format::partitions::MAX_PARTITIONS;

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

/// Up to this many centroids a point is compared with every one; beyond, with the members of
/// its [`GROUPS_SEARCHED`] nearest groups of centroids.
const EXACT_CENTROIDS: usize = 256;

/// Groups of centroids whose members a point is compared with.
const GROUPS_SEARCHED: usize = 8;

/// Centroids (`k × dim` values) and, per vector, the index of its centroid.
pub(crate) struct Clustering {
    pub centroids: Vec<f32>,
    pub assignment: Vec<u32>,
}

/// Clusters `n` vectors of `dim` values into about one partition per [`ROWS_PER_PARTITION`]
/// vectors; `vector(i, out)` puts vector `i` into `out`.
pub(crate) fn cluster(
    n: usize,
    dim: usize,
    vector: &(impl Fn(usize, &mut Vec<f32>) + Sync),
) -> Clustering {
    let k = (n / ROWS_PER_PARTITION).clamp(1, MAX_PARTITIONS);
    let sample_len = (k * SAMPLE_PER_PARTITION).min(n);
    let sample_rows: Vec<usize> = (0..sample_len).map(|i| i * n / sample_len).collect();
    let sample = gather(&sample_rows, dim, vector);
    let mut centroids = seed(&sample, dim, k);
    for _ in 0..LLOYD_ROUNDS {
        let assignment = Nearest::new(&centroids, dim).assign(&sample);
        centroids = means(&sample, dim, &assignment, centroids);
    }
    let nearest = Nearest::new(&centroids, dim);
    let all: Vec<usize> = (0..n).collect();
    let assignment = all
        .par_chunks(ASSIGN_CHUNK)
        .flat_map_iter(|rows| nearest.assign(&gather(rows, dim, vector)))
        .collect();
    Clustering {
        centroids,
        assignment,
    }
}

/// Vectors `rows`, one after another.
fn gather(rows: &[usize], dim: usize, vector: &impl Fn(usize, &mut Vec<f32>)) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * dim);
    let mut row = Vec::with_capacity(dim);
    for &r in rows {
        vector(r, &mut row);
        row.resize(dim, 0.0);
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

/// The nearest centroid of a point (the largest `p·c − |c|²/2`): among all centroids when
/// there are few, else among the members of the point's nearest groups of centroids (a
/// k-means of the centroids themselves), which finds the nearest or one almost as near.
struct Nearest<'a> {
    all: Centroids<'a>,
    groups: Option<(Centroids<'static>, Vec<Vec<u32>>)>,
}

impl<'a> Nearest<'a> {
    fn new(centroids: &'a [f32], dim: usize) -> Self {
        let all = Centroids::new(centroids.into(), dim);
        let k = all.len();
        let groups = (k > EXACT_CENTROIDS).then(|| {
            let g = (k as f64).sqrt().ceil() as usize;
            let mut centres = seed(centroids, dim, g);
            for _ in 0..LLOYD_ROUNDS / 2 {
                let of = Centroids::new(centres.as_slice().into(), dim).assign_all(centroids);
                centres = means(centroids, dim, &of, centres);
            }
            let centres = Centroids::new(centres.into(), dim);
            let mut members = vec![Vec::new(); g];
            for (c, group) in centres.assign_all(centroids).into_iter().enumerate() {
                members[group as usize].push(c as u32);
            }
            (centres, members)
        });
        Self { all, groups }
    }

    /// The centroid of each of `points`.
    fn assign(&self, points: &[f32]) -> Vec<u32> {
        let Some((centres, members)) = &self.groups else {
            return self.all.assign_all(points);
        };
        let dim = self.all.dim;
        let mut near = Vec::with_capacity(centres.len());
        points
            .chunks_exact(dim)
            .map(|p| {
                near.clear();
                near.extend((0..centres.len() as u32).map(|g| (centres.score(p, g), g)));
                let searched = GROUPS_SEARCHED.min(near.len());
                near.select_nth_unstable_by(searched - 1, |a, b| b.0.total_cmp(&a.0));
                let candidates = near[..searched]
                    .iter()
                    .flat_map(|&(_, g)| members[g as usize].iter().copied());
                self.all.best(p, candidates)
            })
            .collect()
    }
}

/// Centroids with their halved squared norms.
struct Centroids<'a> {
    values: std::borrow::Cow<'a, [f32]>,
    half_norms: Vec<f32>,
    dim: usize,
}

impl<'a> Centroids<'a> {
    fn new(values: std::borrow::Cow<'a, [f32]>, dim: usize) -> Self {
        let half_norms = values.chunks_exact(dim).map(|c| dot(c, c) / 2.0).collect();
        Self {
            values,
            half_norms,
            dim,
        }
    }

    fn len(&self) -> usize {
        self.half_norms.len()
    }

    /// `p·c − |c|²/2` of centroid `c`: larger is nearer.
    #[inline]
    fn score(&self, p: &[f32], c: u32) -> f32 {
        let c = c as usize;
        dot(p, &self.values[c * self.dim..(c + 1) * self.dim]) - self.half_norms[c]
    }

    /// The nearest of `candidates` to `p` (the first on ties; 0 when there are none).
    fn best(&self, p: &[f32], candidates: impl Iterator<Item = u32>) -> u32 {
        let mut best = (f32::NEG_INFINITY, 0u32);
        for c in candidates {
            let s = self.score(p, c);
            if s > best.0 {
                best = (s, c);
            }
        }
        best.1
    }

    /// The nearest centroid of each point, among all of them.
    fn assign_all(&self, points: &[f32]) -> Vec<u32> {
        points
            .chunks_exact(self.dim)
            .map(|p| self.best(p, 0..self.len() as u32))
            .collect()
    }
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

    /// Deterministic values in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix(seed);
        (0..n).map(|_| rng.unit() as f32 * 2.0 - 1.0).collect()
    }

    #[test]
    fn clusters_are_recovered() {
        // Four well-separated clusters of 2-d points, 511 of each, interleaved.
        let centres = [(10.0f32, 0.0f32), (-10.0, 0.0), (0.0, 10.0), (0.0, -10.0)];
        let n = 4 * ROWS_PER_PARTITION - 4;
        let jitter = noise(2 * n, 1);
        let vector = |i: usize, out: &mut Vec<f32>| {
            let (x, y) = centres[i % 4];
            out.clear();
            out.extend_from_slice(&[x + jitter[2 * i], y + jitter[2 * i + 1]]);
        };
        let clustering = cluster(n, 2, &vector);
        assert_eq!(clustering.centroids.len(), 3 * 2);
        assert_eq!(clustering.assignment.len(), n);
        // Points of one cluster share a partition.
        let a = &clustering.assignment;
        for i in 0..n - 4 {
            assert_eq!(a[i], a[i + 4], "{i}");
        }
    }

    #[test]
    fn grouped_assignment_finds_a_centroid_almost_as_near_as_the_nearest() {
        let dim = 16;
        let centroids = noise(4 * EXACT_CENTROIDS * dim, 2);
        let points = noise(4000 * dim, 3);
        let nearest = Nearest::new(&centroids, dim);
        assert!(nearest.groups.is_some());
        let grouped = nearest.assign(&points);
        let exact = nearest.all.assign_all(&points);
        let same = grouped.iter().zip(&exact).filter(|(a, b)| a == b).count();
        // The sum of squared distance to the centroid chosen, over that to the nearest.
        let distortion = |assignment: &[u32]| -> f64 {
            points
                .chunks_exact(dim)
                .zip(assignment)
                .map(|(p, &c)| {
                    let c = c as usize;
                    f64::from(squared_distance(p, &centroids[c * dim..(c + 1) * dim]))
                })
                .sum()
        };
        let excess = distortion(&grouped) / distortion(&exact);
        // Uniform noise has no structure to group by, the worst case: 91% agree, 1.2% excess.
        assert!(
            excess < 1.03,
            "{same} of {} agree, {excess} excess",
            exact.len()
        );
    }
}
