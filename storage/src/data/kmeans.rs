//! Clusters a segment's coarse vectors into partitions when the segment is written: k-means++
//! seeding and a few Lloyd rounds on an evenly spaced sample, then every row assigned to its
//! nearest centroid. It runs off the write path's lock (in a flush or a compaction) and costs
//! seconds per million rows: the sample, not the segment, sets the rounds' cost, and the
//! assignment scores each row against blocks of centroids laid out for SIMD (AVX2 where the CPU
//! has it). Up to [`DIRECT_MAX_PARTITIONS`] every row is scored against every centroid; beyond
//! that, where the partitions grow with the rows and exact assignment grows with their square,
//! the clustering goes through ~√k groups and searches a row's 8 best ([`Grouped`]): on one
//! 10M-row segment 68 s against 886 s, and on 1M rows (1,953 partitions) 2.4 s against 9.4 s
//! with recall@10 at a 2% probe of 0.998 against 1.000 (`adaptive-recall`, `benches/README.md`).
//! An earlier two-level search that kept one group per row lost more (0.996 to 0.934).

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

/// Centroids scored together by the assignment kernel (four AVX2 registers of sums).
const BLOCK: usize = 32;

/// Partitions up to which every vector is scored against every centroid. Above it the
/// clustering goes through groups ([`Grouped`]): exact assignment costs `rows × partitions`,
/// and the partitions grow with the rows, so one 10M-row segment took 886 s of k-means.
const DIRECT_MAX_PARTITIONS: usize = 1024;

/// Groups a grouped clustering searches for each vector's nearest centroid: the best-scoring
/// ones, so that a vector near a group's border still finds a centroid of the next group.
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
    let sample = gather((0..sample_len).map(|i| i * n / sample_len), dim, vector);
    if k <= DIRECT_MAX_PARTITIONS {
        let centroids = lloyd(&sample, dim, k);
        let assignment = assign_rows(n, dim, vector, &Blocks::new(&centroids, dim));
        Clustering {
            centroids,
            assignment,
        }
    } else {
        let grouped = Grouped::fit(&sample, dim, k);
        let assignment = assign_rows(n, dim, vector, &grouped);
        Clustering {
            centroids: grouped.centroids,
            assignment,
        }
    }
}

/// k-means++ seeding and [`LLOYD_ROUNDS`] rounds on `points`, each point scored against
/// every centroid.
fn lloyd(points: &[f32], dim: usize, k: usize) -> Vec<f32> {
    let mut centroids = seed(points, dim, k);
    for _ in 0..LLOYD_ROUNDS {
        let blocks = Blocks::new(&centroids, dim);
        let assignment: Vec<u32> = points
            .par_chunks(ASSIGN_CHUNK * dim.max(1))
            .flat_map_iter(|chunk| assign(&blocks, chunk, dim))
            .collect();
        centroids = means(points, dim, &assignment, centroids);
    }
    centroids
}

/// The nearest centroid (by `nearest`) of each of the `n` vectors, in parallel chunks.
fn assign_rows(
    n: usize,
    dim: usize,
    vector: &(impl Fn(usize, &mut Vec<f32>) + Sync),
    nearest: &impl Nearest,
) -> Vec<u32> {
    (0..n.div_ceil(ASSIGN_CHUNK))
        .into_par_iter()
        .flat_map_iter(|chunk| {
            let rows = chunk * ASSIGN_CHUNK..((chunk + 1) * ASSIGN_CHUNK).min(n);
            assign(nearest, &gather(rows, dim, vector), dim)
        })
        .collect()
}

/// Vectors `rows`, one after another.
fn gather(
    rows: impl ExactSizeIterator<Item = usize>,
    dim: usize,
    vector: &impl Fn(usize, &mut Vec<f32>),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * dim);
    let mut row = Vec::with_capacity(dim);
    for r in rows {
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

/// Centroids transposed in blocks of [`BLOCK`], for the nearest-centroid search: block `b`
/// holds, dimension by dimension, that value of its centroids, so that one point's scores
/// against a block are `BLOCK`-wide multiply-adds with no horizontal sums.
struct Blocks {
    /// `blocks × dim × BLOCK` values; the last block is padded with zeros.
    values: Vec<f32>,
    /// `|c|²/2` per centroid, `+∞` for the padding (never nearest).
    half_norms: Vec<f32>,
    dim: usize,
}

impl Blocks {
    fn new(centroids: &[f32], dim: usize) -> Self {
        let k = centroids.len() / dim.max(1);
        let blocks = k.div_ceil(BLOCK);
        let mut values = vec![0f32; blocks * dim * BLOCK];
        let mut half_norms = vec![f32::INFINITY; blocks * BLOCK];
        for (c, centroid) in centroids.chunks_exact(dim).enumerate() {
            let (b, lane) = (c / BLOCK, c % BLOCK);
            for (d, &v) in centroid.iter().enumerate() {
                values[(b * dim + d) * BLOCK + lane] = v;
            }
            half_norms[c] = dot(centroid, centroid) / 2.0;
        }
        Self {
            values,
            half_norms,
            dim,
        }
    }

    /// Calls `f(centroid, p·c − |c|²/2)` for every centroid: the larger, the nearer.
    #[inline(always)]
    fn for_each_score(&self, p: &[f32], mut f: impl FnMut(usize, f32)) {
        let dim = self.dim.max(1);
        let blocks = self.values.chunks_exact(dim * BLOCK);
        for (b, (block, half_norms)) in blocks.zip(self.half_norms.chunks_exact(BLOCK)).enumerate()
        {
            let mut sums = [0f32; BLOCK];
            for (&x, column) in p.iter().zip(block.chunks_exact(BLOCK)) {
                for (s, &c) in sums.iter_mut().zip(column) {
                    *s += x * c;
                }
            }
            for (lane, (&s, &h)) in sums.iter().zip(half_norms).enumerate() {
                f(b * BLOCK + lane, s - h);
            }
        }
    }

    /// The nearest centroid's score and index, the first of equals.
    #[inline(always)]
    fn best(&self, p: &[f32]) -> (f32, u32) {
        let mut best = (f32::NEG_INFINITY, 0u32);
        self.for_each_score(p, |c, score| {
            if score > best.0 {
                best = (score, c as u32);
            }
        });
        best
    }
}

/// A nearest-centroid search, called inside [`assign`]'s SIMD-compiled loop.
trait Nearest: Sync {
    fn nearest(&self, p: &[f32]) -> u32;
}

impl Nearest for Blocks {
    #[inline(always)]
    fn nearest(&self, p: &[f32]) -> u32 {
        self.best(p).1
    }
}

/// The nearest centroid of each of `points` (`dim` values each).
#[allow(unsafe_code)]
fn assign(nearest: &impl Nearest, points: &[f32], dim: usize) -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { assign_avx2(nearest, points, dim) };
    }
    assign_portable(nearest, points, dim)
}

/// [`assign_portable`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn assign_avx2(nearest: &impl Nearest, points: &[f32], dim: usize) -> Vec<u32> {
    assign_portable(nearest, points, dim)
}

#[inline(always)]
fn assign_portable(nearest: &impl Nearest, points: &[f32], dim: usize) -> Vec<u32> {
    points
        .chunks_exact(dim.max(1))
        .map(|p| nearest.nearest(p))
        .collect()
}

/// Two-level k-means for segments of many partitions: the sample is clustered into about
/// √k groups, each group's points into its share of the k centroids, and a vector's centroid
/// is the nearest among the centroids of its [`GROUPS_SEARCHED`] best groups, so that a row
/// costs about `9·√k` scores instead of `k`.
struct Grouped {
    /// Every group's centroids, group after group.
    centroids: Vec<f32>,
    /// The groups' own centroids.
    groups: Blocks,
    /// Per group, its centroids and the index of the first of them in `centroids`.
    members: Vec<(Blocks, u32)>,
}

impl Grouped {
    fn fit(sample: &[f32], dim: usize, k: usize) -> Self {
        let n = sample.len() / dim.max(1);
        let tops = lloyd(sample, dim, k.isqrt());
        let top_blocks = Blocks::new(&tops, dim);
        let of: Vec<u32> = sample
            .par_chunks(ASSIGN_CHUNK * dim.max(1))
            .flat_map_iter(|chunk| assign(&top_blocks, chunk, dim))
            .collect();
        let mut points: Vec<Vec<f32>> = vec![Vec::new(); tops.len() / dim.max(1)];
        for (p, &g) in sample.chunks_exact(dim.max(1)).zip(&of) {
            points[g as usize].extend_from_slice(p);
        }
        // A group no sample point chose is left out: it would lead vectors to no centroid.
        let fitted: Vec<(Vec<f32>, Vec<f32>)> = points
            .into_par_iter()
            .zip(tops.par_chunks(dim.max(1)))
            .filter(|(p, _)| !p.is_empty())
            .map(|(p, top)| {
                let len = p.len() / dim.max(1);
                let share = (k * len).div_ceil(n).min(len);
                (top.to_vec(), lloyd(&p, dim, share))
            })
            .collect();
        let mut centroids = Vec::new();
        let mut members = Vec::with_capacity(fitted.len());
        for (_, group) in &fitted {
            members.push((
                Blocks::new(group, dim),
                (centroids.len() / dim.max(1)) as u32,
            ));
            centroids.extend_from_slice(group);
        }
        let tops: Vec<f32> = fitted.into_iter().flat_map(|(top, _)| top).collect();
        Self {
            centroids,
            groups: Blocks::new(&tops, dim),
            members,
        }
    }
}

impl Nearest for Grouped {
    #[inline(always)]
    fn nearest(&self, p: &[f32]) -> u32 {
        // The best groups by score, best first (the padding scores -inf and stays out).
        let mut best = [(f32::NEG_INFINITY, usize::MAX); GROUPS_SEARCHED];
        self.groups.for_each_score(p, |g, score| {
            if score > best[GROUPS_SEARCHED - 1].0 {
                let at = best
                    .iter()
                    .position(|b| score > b.0)
                    .unwrap_or(GROUPS_SEARCHED - 1);
                best.copy_within(at..GROUPS_SEARCHED - 1, at + 1);
                best[at] = (score, g);
            }
        });
        let mut nearest = (f32::NEG_INFINITY, 0u32);
        for &(_, g) in best.iter().filter(|b| b.1 < self.members.len()) {
            let (blocks, first) = &self.members[g];
            let (score, c) = blocks.best(p);
            if score > nearest.0 || (score == nearest.0 && first + c < nearest.1) {
                nearest = (score, first + c);
            }
        }
        nearest.1
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
    fn every_point_goes_to_its_nearest_centroid() {
        let dim = 12;
        // 70 centroids: two full blocks and a padded one.
        let centroids = noise(70 * dim, 2);
        let points = noise(500 * dim, 3);
        let assigned = assign(&Blocks::new(&centroids, dim), &points, dim);
        for (p, &a) in points.chunks_exact(dim).zip(&assigned) {
            let distance = |c: usize| squared_distance(p, &centroids[c * dim..(c + 1) * dim]);
            let nearest = (0..70).map(distance).fold(f32::INFINITY, f32::min);
            assert!(distance(a as usize) <= nearest * (1.0 + 1e-5) + 1e-6);
        }
    }

    #[test]
    fn grouped_clustering_finds_nearly_every_nearest_centroid() {
        // Enough partitions for the two-level path, on points with no cluster structure (the
        // case where group borders cut through the most points).
        let (dim, k) = (8, DIRECT_MAX_PARTITIONS + 100);
        let sample = noise(k * 16 * dim, 4);
        let grouped = Grouped::fit(&sample, dim, k);
        let centroids = &grouped.centroids;
        let count = centroids.len() / dim;
        assert!(
            count.abs_diff(k) <= k.isqrt() + 1,
            "{count} centroids for {k}"
        );
        let points = noise(2000 * dim, 5);
        let assigned = assign(&grouped, &points, dim);
        let exact = assign(&Blocks::new(centroids, dim), &points, dim);
        let same = assigned.iter().zip(&exact).filter(|(a, e)| a == e).count();
        assert!(
            same * 100 >= 95 * points.len() / dim,
            "{same} of 2000 exact"
        );
        // A miss still lands on a near centroid: within 10% of the nearest's distance.
        for (p, (&a, &e)) in points.chunks_exact(dim).zip(assigned.iter().zip(&exact)) {
            let distance = |c: u32| squared_distance(p, &centroids[c as usize * dim..][..dim]);
            assert!(distance(a) <= distance(e) * 1.1 + 1e-6);
        }
    }
}
