//! How a row's coarse vector is obtained when the caller gives only a fine one: the
//! normalised prefix of a Matryoshka embedding, or a linear projection (random orthogonal until
//! enough rows exist, then PCA fitted on them). Kept in the store's properties so that queries
//! and rows always go through the same map.

use hivlp_storage::{ElemType, Metric, Modality, View, l2_normalize};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

use crate::search::dot;

/// Store property holding the encoded [`CoarseMode`] in force.
pub(crate) const PROPERTY: &str = "hivlp.coarse";

const MAGIC: &[u8; 4] = b"HVCM";
const VERSION: u8 = 1;
/// Subspace iterations of the PCA fit.
const PCA_ITERATIONS: usize = 30;

/// Largest Euclidean norm of a vector an inner-product database stores or searches with
/// (cosine vectors are unit length). The dot product of two such vectors, at most 2^124, stays
/// far inside `f32` (about 2^128) whatever rounding and `i8` quantisation add, and so does any
/// orthonormal projection of one: no score and no derived coarse vector can overflow.
pub(crate) const MAX_NORM: f64 = (1u64 << 62) as f64;

/// Share of the `f16` range a projected coarse value may use: the rest absorbs the rounding
/// of the projection's dot product (at most `fine_dim · 2^-24 ≤ 2^-8` relative, as `fine_dim`
/// is at most 2^16) and the matrix rows' deviation from unit length.
const F16_HEADROOM: f64 = 1.0 - 1.0 / 128.0;

/// How the coarse vectors of one modality are derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoarseDerivation {
    /// Nothing inserted yet: the first insert decides between supplied and derived.
    Undecided,
    /// Callers supply coarse vectors with every item and query.
    Supplied,
    /// The first `coarse_dim` values of the fine vector (Matryoshka models).
    Prefix,
    /// A random orthogonal projection (until enough rows exist for PCA).
    RandomProjection,
    /// Principal components of the fine vectors inserted first.
    Pca,
}

/// A `coarse_dim × fine_dim` row-major matrix with orthonormal rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Projection {
    pub fitted: bool,
    pub matrix: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CoarseMode {
    Undecided,
    Supplied,
    Prefix,
    /// One projection per modality (index: image, text).
    Projected([Projection; 2]),
}

impl CoarseMode {
    pub fn derivation(&self, m: Modality) -> CoarseDerivation {
        match self {
            CoarseMode::Undecided => CoarseDerivation::Undecided,
            CoarseMode::Supplied => CoarseDerivation::Supplied,
            CoarseMode::Prefix => CoarseDerivation::Prefix,
            CoarseMode::Projected(p) if p[m.index()].fitted => CoarseDerivation::Pca,
            CoarseMode::Projected(_) => CoarseDerivation::RandomProjection,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            CoarseMode::Undecided => "undecided",
            CoarseMode::Supplied => "supplied",
            CoarseMode::Prefix => "Matryoshka prefix",
            CoarseMode::Projected(_) => "projection",
        }
    }

    /// A fresh projection mode with random orthogonal matrices (deterministic seed).
    pub fn random(fine_dim: usize, coarse_dim: usize) -> Self {
        let p = |seed| Projection {
            fitted: false,
            matrix: random_orthogonal(coarse_dim, fine_dim, seed),
        };
        CoarseMode::Projected([p(0x6869_766c_7001), p(0x6869_766c_7002)])
    }

    /// The largest norm a fine vector may have for this mode to derive a storable coarse
    /// vector from it now and after any refit: a projection's rows are orthonormal, so each
    /// coarse value is at most the fine vector's norm, whatever matrix a later PCA fit picks.
    /// Only an `f16` coarse tier (±65504) needs more than [`MAX_NORM`].
    pub fn max_fine_norm(&self, coarse_type: ElemType) -> f64 {
        match self {
            CoarseMode::Projected(_) if coarse_type == ElemType::F16 => {
                MAX_NORM.min(f64::from(f32::from(half::f16::MAX)) * F16_HEADROOM)
            }
            _ => MAX_NORM,
        }
    }

    /// Writes the coarse vector of modality `m` derived from `fine` into `out`, normalised for
    /// cosine databases. Returns `false` if this mode derives nothing.
    pub fn derive(&self, m: Modality, metric: Metric, fine: &[f32], out: &mut [f32]) -> bool {
        match self {
            CoarseMode::Prefix => out.copy_from_slice(&fine[..out.len()]),
            CoarseMode::Projected(p) => project(&p[m.index()].matrix, fine, out),
            CoarseMode::Undecided | CoarseMode::Supplied => return false,
        }
        if metric == Metric::Cosine {
            l2_normalize(out);
        }
        true
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        match self {
            CoarseMode::Undecided => out.push(0),
            CoarseMode::Supplied => out.push(1),
            CoarseMode::Prefix => out.push(2),
            CoarseMode::Projected(ps) => {
                out.push(3);
                for p in ps {
                    out.push(u8::from(p.fitted));
                    out.extend((p.matrix.len() as u64).to_le_bytes());
                    out.extend(p.matrix.iter().flat_map(|v| v.to_le_bytes()));
                }
            }
        }
        out
    }

    /// `None` if the bytes are not an encoded mode for these dimensions.
    pub fn decode(bytes: &[u8], fine_dim: usize, coarse_dim: usize) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let (&version, rest) = rest.split_first()?;
        let (&kind, mut rest) = rest.split_first()?;
        if version != VERSION {
            return None;
        }
        let mode = match kind {
            0 => CoarseMode::Undecided,
            1 => CoarseMode::Supplied,
            2 => CoarseMode::Prefix,
            3 => {
                let mut take = || -> Option<Projection> {
                    let (&fitted, r) = rest.split_first()?;
                    let len = u64::from_le_bytes(r.get(..8)?.try_into().ok()?) as usize;
                    if len != fine_dim * coarse_dim {
                        return None;
                    }
                    let body = r.get(8..8 + 4 * len)?;
                    rest = &r[8 + 4 * len..];
                    Some(Projection {
                        fitted: fitted == 1,
                        matrix: body
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    })
                };
                let image = take()?;
                let text = take()?;
                CoarseMode::Projected([image, text])
            }
            _ => return None,
        };
        rest.is_empty().then_some(mode)
    }
}

/// `out = matrix · fine` with `matrix` of `out.len()` rows.
fn project(matrix: &[f32], fine: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(matrix.chunks_exact(fine.len())) {
        *o = dot(row, fine);
    }
}

/// Orthonormalises the rows of a `rows × cols` matrix in place (modified Gram–Schmidt); a row
/// that becomes numerically zero is replaced by a random direction and redone.
fn orthonormalize_rows(matrix: &mut [f32], cols: usize, rng: &mut StdRng) {
    let rows = matrix.len() / cols;
    for i in 0..rows {
        loop {
            let (done, rest) = matrix.split_at_mut(i * cols);
            let row = &mut rest[..cols];
            for prev in done.chunks_exact(cols) {
                let c = dot(prev, row);
                row.iter_mut().zip(prev).for_each(|(x, p)| *x -= c * p);
            }
            if l2_normalize(row) {
                break;
            }
            row.iter_mut().for_each(|x| *x = gaussian(rng));
        }
    }
}

/// A standard normal sample (Box–Muller).
pub(crate) fn gaussian(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn random_orthogonal(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m: Vec<f32> = (0..rows * cols).map(|_| gaussian(&mut rng)).collect();
    orthonormalize_rows(&mut m, cols, &mut rng);
    m
}

/// The top-`coarse_dim` principal directions (of the uncentred second moment, which is what
/// dot-product ranking preserves) of `samples` (`n × fine_dim`, row-major), by subspace
/// iteration on the `fine_dim²` moment matrix.
pub(crate) fn fit_pca(samples: &[f32], fine_dim: usize, coarse_dim: usize) -> Vec<f32> {
    let n = samples.len() / fine_dim;
    // The directions do not depend on the samples' scale, but the `f32` moments of huge (or
    // tiny) inner-product vectors would overflow (or vanish): fit on samples scaled to at most 1.
    let max_abs = f64::from(samples.iter().fold(0.0f32, |m, v| m.max(v.abs())));
    let scaled = |v: f32| {
        if max_abs > 0.0 {
            (f64::from(v) / max_abs) as f32
        } else {
            v
        }
    };
    // Columns of the sample matrix, contiguous, so each moment entry is one long dot product.
    let mut columns = vec![0.0f32; n * fine_dim];
    for (r, row) in samples.chunks_exact(fine_dim).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            columns[j * n + r] = scaled(v);
        }
    }
    let moment: Vec<f32> = (0..fine_dim * fine_dim)
        .into_par_iter()
        .map(|ij| {
            let (i, j) = (ij / fine_dim, ij % fine_dim);
            dot(&columns[i * n..(i + 1) * n], &columns[j * n..(j + 1) * n])
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(0x6869_766c_7003);
    let mut basis = random_orthogonal(coarse_dim, fine_dim, 0x6869_766c_7004);
    for _ in 0..PCA_ITERATIONS {
        // basis ← orthonormalise(basis · moment); the moment matrix is symmetric.
        basis = basis
            .par_chunks_exact(fine_dim)
            .flat_map_iter(|b| {
                moment
                    .chunks_exact(fine_dim)
                    .map(|m_row| dot(m_row, b))
                    .collect::<Vec<_>>()
            })
            .collect();
        orthonormalize_rows(&mut basis, fine_dim, &mut rng);
    }
    basis
}

/// Up to `limit` fine vectors of modality `m` from the view, oldest rows first (deleted rows
/// and rows without `m` skipped), as `f32`.
pub(crate) fn sample_fine(view: &View, m: Modality, limit: usize) -> Vec<f32> {
    let mut out = Vec::new();
    let mut row_buf = Vec::new();
    let mut taken = 0;
    for source in view.sources() {
        let column = source.fine(m);
        if column.is_empty() {
            continue;
        }
        let skip = source.skip(m);
        for row in 0..source.rows() {
            if taken == limit {
                return out;
            }
            if !skip.get(row) {
                column.row_to_f32(row, &mut row_buf);
                out.extend_from_slice(&row_buf);
                taken += 1;
            }
        }
    }
    out
}

/// Live rows of the view with vectors of modality `m`.
pub(crate) fn rows_with(view: &View, m: Modality) -> usize {
    view.sources()
        .iter()
        .map(|s| s.rows() - s.skip(m).count_ones())
        .sum()
}

/// Fraction of the samples' energy (sum of squared norms) kept by a projection (its rows
/// orthonormal): how much of the dot-product geometry the coarse vectors can keep.
pub fn retained_energy(matrix: &[f32], samples: &[f32], fine_dim: usize) -> f64 {
    let coarse_dim = matrix.len() / fine_dim;
    let mut out = vec![0.0f32; coarse_dim];
    let (mut kept, mut total) = (0.0f64, 0.0f64);
    for x in samples.chunks_exact(fine_dim) {
        project(matrix, x, &mut out);
        kept += f64::from(dot(&out, &out));
        total += f64::from(dot(x, x));
    }
    if total > 0.0 { kept / total } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_projection_has_orthonormal_rows() {
        let m = random_orthogonal(16, 64, 1);
        for i in 0..16 {
            for j in 0..16 {
                let d = dot(&m[i * 64..(i + 1) * 64], &m[j * 64..(j + 1) * 64]);
                let expected = if i == j { 1.0 } else { 0.0 };
                assert!((d - expected).abs() < 1e-4, "({i},{j}) = {d}");
            }
        }
    }

    #[test]
    fn pca_finds_the_high_variance_subspace() {
        // Energy lives mostly in dimensions 0..4 of 32.
        let mut rng = StdRng::seed_from_u64(9);
        let samples: Vec<f32> = (0..2000 * 32)
            .map(|i| gaussian(&mut rng) * if i % 32 < 4 { 10.0 } else { 0.5 })
            .collect();
        let pca = fit_pca(&samples, 32, 4);
        let random = random_orthogonal(4, 32, 3);
        let kept = retained_energy(&pca, &samples, 32);
        assert!(kept > 0.95, "PCA keeps {kept}");
        assert!(retained_energy(&random, &samples, 32) < kept);
    }

    /// Inner-product vectors may be huge: their squares overflow `f32`, yet PCA must still
    /// find the same subspace as for the same vectors at unit scale.
    #[test]
    fn pca_is_independent_of_the_samples_scale() {
        let mut rng = StdRng::seed_from_u64(9);
        let samples: Vec<f32> = (0..2000 * 32)
            .map(|i| gaussian(&mut rng) * if i % 32 < 4 { 10.0 } else { 0.5 })
            .collect();
        let huge: Vec<f32> = samples.iter().map(|v| v * 1e30).collect();
        let pca = fit_pca(&huge, 32, 4);
        assert!(pca.iter().all(|v| v.is_finite()));
        let kept = retained_energy(&pca, &samples, 32);
        assert!(kept > 0.95, "PCA of the huge copy keeps {kept}");
    }

    #[test]
    fn modes_round_trip_and_garbage_is_rejected() {
        for mode in [
            CoarseMode::Undecided,
            CoarseMode::Supplied,
            CoarseMode::Prefix,
            CoarseMode::random(8, 2),
        ] {
            assert_eq!(CoarseMode::decode(&mode.encode(), 8, 2), Some(mode.clone()));
            let bytes = mode.encode();
            assert_eq!(CoarseMode::decode(&bytes[..bytes.len() - 1], 8, 2), None);
        }
        assert_eq!(
            CoarseMode::decode(&CoarseMode::random(8, 2).encode(), 16, 2),
            None
        );
    }
}
