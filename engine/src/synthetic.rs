//! Synthetic embeddings with a known structure, for recall tests and benchmarks.
//!
//! [`Clustered`]:
//! Items are noisy points around Gaussian cluster centres in `fine_dim` dimensions, with a
//! decaying variance spectrum (dimension `j` scaled by `1/sqrt(1 + j/8)`), so the first
//! `coarse_dim` dimensions carry about half of the energy, as PCA to 64 of 512 dimensions
//! keeps of real embeddings. The coarse vector is that prefix, normalised: what a rotated PCA
//! prefix of real embeddings looks like. Everything is a pure function of the seed and the
//! index, so any subset can be regenerated in parallel.
//!
//! [`Unclustered`]: one Gaussian with the same kind of spectrum (or none): no structure a
//! clustering recovers, and the coarse prefix keeps only part of what separates neighbours.

use hivlp_storage::l2_normalize;
use rayon::prelude::*;

/// A generator of clustered fine/coarse vector pairs.
#[derive(Debug, Clone)]
pub struct Clustered {
    fine_dim: usize,
    coarse_dim: usize,
    centres: Vec<f32>,
    spectrum: Vec<f32>,
    /// Within-cluster standard deviation, relative to the centres' (1.0).
    noise: f32,
    seed: u64,
}

/// One generated vector pair, both unit length.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub fine: Vec<f32>,
    pub coarse: Vec<f32>,
}

impl Pair {
    /// The unit-length fine vector and its first `coarse_dim` dimensions, normalised.
    fn from_fine(mut fine: Vec<f32>, coarse_dim: usize) -> Self {
        let mut coarse = fine[..coarse_dim].to_vec();
        l2_normalize(&mut fine);
        l2_normalize(&mut coarse);
        Pair { fine, coarse }
    }
}

/// SplitMix64: a tiny, fast, seedable generator (statistical quality is ample here).
struct SplitMix(u64);

impl SplitMix {
    /// The generator of item `i` of stream `stream`: items are independent of each other.
    fn item(seed: u64, stream: u64, i: u64) -> Self {
        Self(
            seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)
                ^ i.wrapping_mul(0x9FB2_1C65_1E98_DF25),
        )
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 1.0) / (1u64 << 24) as f32
    }

    /// Two independent standard normal samples (Box–Muller).
    fn gaussians(&mut self) -> [f32; 2] {
        let r = (-2.0 * self.unit().ln()).sqrt();
        let (s, c) = (std::f32::consts::TAU * self.unit()).sin_cos();
        [r * c, r * s]
    }

    fn fill_gaussian(&mut self, out: &mut [f32]) {
        for pair in out.chunks_mut(2) {
            let g = self.gaussians();
            pair.copy_from_slice(&g[..pair.len()]);
        }
    }
}

impl Clustered {
    /// `clusters` Gaussian clusters; `noise` is the within-cluster spread (0.5 to 1.0 gives
    /// neighbourhoods of realistic difficulty).
    pub fn new(fine_dim: usize, coarse_dim: usize, clusters: usize, noise: f32, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let mut centres = vec![0.0; clusters.max(1) * fine_dim];
        rng.fill_gaussian(&mut centres);
        Self {
            fine_dim,
            coarse_dim: coarse_dim.min(fine_dim),
            centres,
            spectrum: spectrum(fine_dim, 8.0),
            noise,
            seed,
        }
    }

    /// The `i`-th item of stream `stream` (use different streams for items and queries).
    pub fn pair(&self, stream: u64, i: u64) -> Pair {
        let mut rng = SplitMix::item(self.seed, stream, i);
        let clusters = self.centres.len() / self.fine_dim;
        let c = (rng.next() % clusters as u64) as usize;
        let centre = &self.centres[c * self.fine_dim..(c + 1) * self.fine_dim];
        let mut fine = vec![0.0; self.fine_dim];
        rng.fill_gaussian(&mut fine);
        for ((x, &m), &s) in fine.iter_mut().zip(centre).zip(&self.spectrum) {
            *x = (m + self.noise * *x) * s;
        }
        Pair::from_fine(fine, self.coarse_dim)
    }

    /// Items `range` of stream `stream`, generated in parallel.
    pub fn pairs(&self, stream: u64, range: std::ops::Range<u64>) -> Vec<Pair> {
        range
            .into_par_iter()
            .map(|i| self.pair(stream, i))
            .collect()
    }
}

/// Standard deviation of each dimension: `1/sqrt(1 + j/decay)`, or 1 with `decay` infinite.
fn spectrum(fine_dim: usize, decay: f32) -> Vec<f32> {
    (0..fine_dim)
        .map(|j| (1.0 + j as f32 / decay).sqrt().recip())
        .collect()
}

/// A generator of unclustered fine/coarse vector pairs: one zero-mean Gaussian whose
/// dimension `j` has standard deviation `1/sqrt(1 + j/decay)` (isotropic with `decay`
/// infinite), normalised. Near neighbours differ in every dimension, so a coarse prefix (or
/// PCA) keeps only part of what separates them: the hard case for a fixed candidate count.
#[derive(Debug, Clone)]
pub struct Unclustered {
    fine_dim: usize,
    coarse_dim: usize,
    spectrum: Vec<f32>,
    seed: u64,
}

impl Unclustered {
    pub fn new(fine_dim: usize, coarse_dim: usize, decay: f32, seed: u64) -> Self {
        Self {
            fine_dim,
            coarse_dim: coarse_dim.min(fine_dim),
            spectrum: spectrum(fine_dim, decay),
            seed,
        }
    }

    /// The `i`-th item of stream `stream` (use different streams for items and queries).
    pub fn pair(&self, stream: u64, i: u64) -> Pair {
        let mut rng = SplitMix::item(self.seed, stream, i);
        let mut fine = vec![0.0; self.fine_dim];
        rng.fill_gaussian(&mut fine);
        for (x, &s) in fine.iter_mut().zip(&self.spectrum) {
            *x *= s;
        }
        Pair::from_fine(fine, self.coarse_dim)
    }

    /// Items `range` of stream `stream`, generated in parallel.
    pub fn pairs(&self, stream: u64, range: std::ops::Range<u64>) -> Vec<Pair> {
        range
            .into_par_iter()
            .map(|i| self.pair(stream, i))
            .collect()
    }
}

/// Fraction of `truth`'s ids found in `found` (recall@k with k = `truth.len()`).
pub fn recall(found: &[u64], truth: &[u64]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let hits = truth.iter().filter(|id| found.contains(id)).count();
    hits as f64 / truth.len() as f64
}
