//! The batch scan's `i8` kernel: every query of a tile against one block of rows with AVX2.
//!
//! `simsimd` computes one pair per call, and for a 64-d `i8` row the call costs as much as the
//! arithmetic, so a batch gained little over single queries. Here each row of a block is
//! sign-extended to `i16` once and multiplied (`vpmaddwd`) against every query, pre-widened
//! once per tile; four rows share each load of a query chunk and one horizontal sum. Integer
//! arithmetic throughout, so the dot products equal `simsimd`'s exact `i8` ones bit for bit.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256i, _mm_add_epi32, _mm_storeu_si128, _mm256_add_epi32, _mm256_castsi256_si128,
    _mm256_extracti128_si256, _mm256_hadd_epi32, _mm256_loadu_si256, _mm256_madd_epi16,
    _mm256_setzero_si256,
};

use super::{PerQuery, QueryVec, Rows, TileScorer, bit_range};

/// `i16` lanes of one AVX2 register: vectors are zero-padded to a multiple of this.
const LANES: usize = 16;

/// Rows summed together: their accumulators share one query load and one horizontal sum.
const GROUP: usize = 4;

/// Rows of a block (one skip-bitmap word).
const BLOCK: usize = 64;

/// How the batch scan scores `i8` rows for a tile of queries.
pub(crate) enum I8Tile<'q> {
    /// One query, a CPU without AVX2, or a query of the wrong length: `simsimd` per pair.
    PerQuery(PerQuery<'q>),
    Wide(WideTile),
}

impl<'q> I8Tile<'q> {
    pub fn new(queries: &'q [&'q QueryVec], dim: usize) -> Self {
        match WideTile::new(queries, dim) {
            Some(wide) if queries.len() > 1 => Self::Wide(wide),
            _ => Self::PerQuery(PerQuery(queries)),
        }
    }
}

impl TileScorer<i8> for I8Tile<'_> {
    fn raw_blocks(
        &mut self,
        rows: &Rows<'_, i8>,
        base: usize,
        end: usize,
        live: u64,
        out: &mut [[f64; 64]],
    ) {
        match self {
            Self::PerQuery(per_query) => per_query.raw_blocks(rows, base, end, live, out),
            Self::Wide(wide) => {
                let n = end - base;
                wide.widen_rows(
                    &rows.elems[base * rows.stride..end * rows.stride],
                    rows.stride,
                );
                wide.dots(n, out);
                // Rows not scanned hold NaN, as in `Rows::raw_block`.
                let dead = !live & bit_range(0, n);
                if dead != 0 {
                    for out in out.iter_mut() {
                        let mut bits = dead;
                        while bits != 0 {
                            out[bits.trailing_zeros() as usize] = f64::NAN;
                            bits &= bits - 1;
                        }
                    }
                }
            }
        }
    }
}

/// The tile's queries and the current block's rows, sign-extended to `i16` and zero-padded to
/// `width` elements each.
pub(crate) struct WideTile {
    dim: usize,
    width: usize,
    queries: Vec<i16>,
    rows: Vec<i16>,
}

impl WideTile {
    /// `None` where the CPU lacks AVX2 or a query does not have `dim` elements (the per-pair
    /// path then scores those rows lowest instead of panicking).
    fn new(queries: &[&QueryVec], dim: usize) -> Option<Self> {
        if !avx2() || dim == 0 || queries.iter().any(|q| q.i8.len() != dim) {
            return None;
        }
        let width = dim.div_ceil(LANES) * LANES;
        let mut wide = vec![0i16; queries.len() * width];
        for (wide, query) in wide.chunks_exact_mut(width).zip(queries) {
            for (w, &v) in wide.iter_mut().zip(&query.i8) {
                *w = i16::from(v);
            }
        }
        Some(Self {
            dim,
            width,
            queries: wide,
            rows: vec![0; BLOCK * width],
        })
    }

    /// Sign-extends the rows of `block` (`stride` apart) into the row buffer; the padding
    /// stays zero, and rows past the block's end keep stale values whose sums are never read.
    fn widen_rows(&mut self, block: &[i8], stride: usize) {
        for (wide, row) in self
            .rows
            .chunks_exact_mut(self.width)
            .zip(block.chunks(stride))
        {
            for (w, &v) in wide.iter_mut().zip(&row[..self.dim]) {
                *w = i16::from(v);
            }
        }
    }

    /// `out[query][row]` for the first `n` rows of the buffer.
    #[allow(unsafe_code)]
    fn dots(&self, n: usize, out: &mut [[f64; 64]]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `WideTile` exists only where `avx2()` found AVX2 on this CPU.
        unsafe {
            dots_avx2(&self.queries, &self.rows, self.width, n, out);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (n, out);
    }
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// For each query (`width` `i16` each) and each group of `GROUP` rows among the first `n` of
/// `rows` (`BLOCK` rows of `width`): the exact dot products, as `f64` like `simsimd`'s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
fn dots_avx2(queries: &[i16], rows: &[i16], width: usize, n: usize, out: &mut [[f64; 64]]) {
    for (query, out) in queries.chunks_exact(width).zip(out.iter_mut()) {
        for (group, out) in rows[..n.div_ceil(GROUP) * GROUP * width]
            .chunks_exact(GROUP * width)
            .zip(out[..n].chunks_mut(GROUP))
        {
            let (r0, rest) = group.split_at(width);
            let (r1, rest) = rest.split_at(width);
            let (r2, r3) = rest.split_at(width);
            let mut acc = [_mm256_setzero_si256(); GROUP];
            for ((((q, a), b), c), d) in query
                .chunks_exact(LANES)
                .zip(r0.chunks_exact(LANES))
                .zip(r1.chunks_exact(LANES))
                .zip(r2.chunks_exact(LANES))
                .zip(r3.chunks_exact(LANES))
            {
                let q = load(q);
                for (acc, row) in acc.iter_mut().zip([a, b, c, d]) {
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(load(row), q));
                }
            }
            // Lane i of `sums` is row i's total: three pairwise adds then the two halves.
            let pairs = _mm256_hadd_epi32(
                _mm256_hadd_epi32(acc[0], acc[1]),
                _mm256_hadd_epi32(acc[2], acc[3]),
            );
            let sums = _mm_add_epi32(
                _mm256_castsi256_si128(pairs),
                _mm256_extracti128_si256::<1>(pairs),
            );
            let mut totals = [0i32; GROUP];
            // SAFETY: `totals` is 16 writable bytes; the store has no alignment requirement.
            unsafe { _mm_storeu_si128(totals.as_mut_ptr().cast(), sums) };
            for (slot, &total) in out.iter_mut().zip(&totals) {
                *slot = f64::from(total);
            }
        }
    }
}

/// One register of `i16` lanes from a chunk of exactly `LANES` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
fn load(chunk: &[i16]) -> __m256i {
    assert!(chunk.len() >= LANES);
    // SAFETY: `chunk` holds at least `LANES` i16 = 32 readable bytes (checked above; every
    // caller passes a `chunks_exact(LANES)` item, so the check folds away); the load has no
    // alignment requirement.
    unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) }
}

#[cfg(test)]
mod tests {
    use simsimd::SpatialSimilarity;

    use super::*;

    /// Deterministic pseudo-random `i8` in `lo..=hi`.
    fn ints(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (lo + (x % (hi - lo + 1) as u64) as i32) as i8
            })
            .collect()
    }

    fn query(values: Vec<i8>) -> QueryVec {
        QueryVec {
            f32: Vec::new(),
            f16: Vec::new(),
            f16_scale: 1.0,
            i8: values,
            i8_scale: 1.0,
            block: None,
        }
    }

    #[test]
    fn kernel_equals_scalar_and_simsimd_dot_products() {
        if !avx2() {
            return;
        }
        for dim in [1usize, 3, 16, 17, 64, 100, 768] {
            for (stride, n) in [(dim, 64), (dim + 5, 37), (dim, 1)] {
                let mut block = ints(n * stride, dim as u64, -128, 127);
                // Extremes in every row: the largest products must stay exact.
                for row in block.chunks_mut(stride) {
                    row[0] = -128;
                    row[dim - 1] = if dim % 2 == 0 { 127 } else { -128 };
                }
                let mut queries: Vec<QueryVec> = (0..5)
                    .map(|s| query(ints(dim, 100 + s, -127, 127)))
                    .collect();
                queries.push(query(vec![-127; dim]));
                queries.push(query(vec![127; dim]));
                let refs: Vec<&QueryVec> = queries.iter().collect();
                let mut tile = WideTile::new(&refs, dim).expect("AVX2 and matching dims");
                tile.widen_rows(&block, stride);
                let mut out = vec![[f64::NAN; 64]; refs.len()];
                tile.dots(n, &mut out);
                for (query, out) in refs.iter().zip(&out) {
                    for (r, row) in block.chunks(stride).enumerate() {
                        let row = &row[..dim];
                        let scalar: i64 = query
                            .i8
                            .iter()
                            .zip(row)
                            .map(|(&a, &b)| i64::from(a) * i64::from(b))
                            .sum();
                        let simd = <i8 as SpatialSimilarity>::dot(&query.i8, row).expect("dims");
                        assert_eq!(out[r], scalar as f64, "dim {dim}, row {r}");
                        assert_eq!(out[r].to_bits(), simd.to_bits(), "dim {dim}, row {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn single_queries_and_wrong_lengths_keep_the_per_pair_path() {
        let one = [query(vec![1; 8])];
        let one: Vec<&QueryVec> = one.iter().collect();
        assert!(matches!(I8Tile::new(&one, 8), I8Tile::PerQuery(_)));
        let mixed = [query(vec![1; 8]), query(vec![1; 7])];
        let mixed: Vec<&QueryVec> = mixed.iter().collect();
        assert!(matches!(I8Tile::new(&mixed, 8), I8Tile::PerQuery(_)));
    }
}
