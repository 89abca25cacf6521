//! The single-query block kernels: one query against the live rows of a block (at most 64, one
//! skip-bitmap word) per call.
//!
//! A `simsimd` call per row costs about as much as a 64-d row's arithmetic, so small coarse
//! rows never streamed at memory bandwidth. Here the query is widened once per search (`i8` to
//! `i16`, `f16` to `f32`, zero-padded to whole registers), and four rows share each load of a
//! query chunk and one horizontal sum. One generic loop ([`dots`]) instantiated per element
//! type through [`Lanes`]; AVX2 with FMA and F16C, detected once per query ([`Kernels`]), with
//! `simsimd` per row as the portable fallback. `i8` products are summed in exact integer
//! arithmetic, so they equal the scalar `i32` dot product bit for bit.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, __m256i, _MM_HINT_T0, _mm_add_epi32, _mm_add_ps, _mm_loadu_si128, _mm_prefetch,
    _mm_storeu_ps, _mm_storeu_si128, _mm256_add_epi32, _mm256_castps256_ps128,
    _mm256_castsi256_si128, _mm256_cvtepi8_epi16, _mm256_cvtph_ps, _mm256_extractf128_ps,
    _mm256_extracti128_si256, _mm256_fmadd_ps, _mm256_hadd_epi32, _mm256_hadd_ps, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_madd_epi16, _mm256_setzero_ps, _mm256_setzero_si256,
};

use super::Rows;

/// Which kernels a query scores blocks of rows with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The block kernels where this CPU has AVX2, FMA and F16C, else the portable ones.
    Detected,
    /// `simsimd` per row, whatever the CPU (the fallback; kept selectable to compare).
    Portable,
}

/// Rows summed together: their accumulators share each query load and one horizontal sum.
const GROUP: usize = 4;

/// How far ahead of the row being scored the kernel asks for rows to be loaded.
const PREFETCH_ROWS: usize = 32;

const CACHE_LINE: usize = 64;

/// The most elements one register step reads (`i8` widened to 16 `i16` lanes).
const MAX_LANES: usize = 16;

/// A query widened for the block kernels, each copy zero-padded to whole registers. Exists
/// only where the CPU has the kernels' features, so holding one is the dispatch choice.
#[derive(Debug, Clone)]
pub(crate) struct BlockQuery {
    dim: usize,
    i8: Vec<i16>,
    /// The query's `f16` copy, converted exactly to `f32`: the products the portable kernel forms.
    f16: Vec<f32>,
    f32: Vec<f32>,
}

impl BlockQuery {
    /// The widened copies of a query's `f32`, `f16` and `i8` forms, or `None` where `kernels`
    /// or the CPU rule the block kernels out.
    pub fn new(kernels: Kernels, f32: &[f32], f16: &[half::f16], i8: &[i8]) -> Option<Self> {
        if kernels == Kernels::Portable || !detected() {
            return None;
        }
        fn padded<T: Copy, W: Default + Copy>(v: &[T], lanes: usize, f: impl Fn(T) -> W) -> Vec<W> {
            let mut wide = vec![W::default(); v.len().div_ceil(lanes) * lanes];
            for (w, &x) in wide.iter_mut().zip(v) {
                *w = f(x);
            }
            wide
        }
        Some(Self {
            dim: f32.len(),
            i8: padded(i8, I8Lanes::LANES, i16::from),
            f16: padded(f16, F16Lanes::LANES, half::f16::to_f32),
            f32: padded(f32, F32Lanes::LANES, |x| x),
        })
    }
}

/// Whether this CPU runs the block kernels.
fn detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Raw dot products (as [`super::Element::raw_dot`]) of `query` with the rows of the block at
/// `base` whose bit is set in `live`, into `out[row - base]`; other slots are left as they are.
/// `false` (nothing written) where the query has no block form or another length than the rows.
#[allow(unsafe_code)]
pub(crate) fn block_dots<L: Lanes>(
    query: Option<&BlockQuery>,
    rows: &Rows<'_, L::Elem>,
    base: usize,
    live: u64,
    out: &mut [f64; 64],
) -> bool {
    let Some(query) = query.filter(|q| q.dim == rows.dim && rows.dim > 0) else {
        return false;
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a `BlockQuery` exists only where `detected()` found AVX2, FMA and F16C; its
    // widened copy holds `dim` rounded up to whole `L::LANES` chunks, as `dots` requires.
    unsafe {
        dots::<L>(L::query(query), rows, base, live, out);
        true
    }
    // No block kernels off x86-64: `detected()` is false there, so no `BlockQuery` exists.
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (query, base, live, out);
        false
    }
}

/// One element type's arithmetic in [`dots`]. Its functions are `unsafe` because they use
/// AVX2, FMA and F16C instructions: callers must have checked the CPU has them.
#[allow(unsafe_code)]
pub(crate) trait Lanes {
    /// The stored element.
    type Elem: Copy + Default;
    /// The widened query's element.
    type Wide;
    #[cfg(target_arch = "x86_64")]
    type Acc: Copy;
    /// Elements one step reads.
    const LANES: usize;
    fn query(query: &BlockQuery) -> &[Self::Wide];
    #[cfg(target_arch = "x86_64")]
    unsafe fn zero() -> Self::Acc;
    /// `acc` plus the products of `LANES` row elements at `row` with `LANES` query elements at
    /// `query` (both readable for `LANES` elements).
    #[cfg(target_arch = "x86_64")]
    unsafe fn mul_add(
        acc: Self::Acc,
        row: *const Self::Elem,
        query: *const Self::Wide,
    ) -> Self::Acc;
    /// Each accumulator's total.
    #[cfg(target_arch = "x86_64")]
    unsafe fn totals(acc: [Self::Acc; GROUP]) -> [f64; GROUP];
}

/// The generic block loop: the live rows in groups of [`GROUP`] (a short last group repeats
/// its last row, whose sums are written once), full register steps over each row, then the
/// row's tail copied into a zeroed buffer so no read passes the row's `dim` elements.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and `query` holds `rows.dim` rounded up to a multiple of
/// `L::LANES` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(unsafe_code)]
unsafe fn dots<L: Lanes>(
    query: &[L::Wide],
    rows: &Rows<'_, L::Elem>,
    base: usize,
    live: u64,
    out: &mut [f64; 64],
) {
    let dim = rows.dim;
    debug_assert!(query.len() >= dim.div_ceil(L::LANES) * L::LANES);
    let mut index = [0usize; 64];
    let mut count = 0;
    if live & live.wrapping_add(1) == 0 {
        // Rows `0..n` (the common, fully live block): no bit walk.
        count = live.count_ones() as usize;
        for (i, slot) in index[..count].iter_mut().enumerate() {
            *slot = i;
        }
    } else {
        let mut bits = live;
        while bits != 0 {
            index[count] = bits.trailing_zeros() as usize;
            count += 1;
            bits &= bits - 1;
        }
    }
    let row_bytes = rows.stride * size_of::<L::Elem>();
    let full = dim / L::LANES * L::LANES;
    let tail = dim - full;
    for group in index[..count].chunks(GROUP) {
        let row = |g: usize| {
            let start = (base + group[g.min(group.len() - 1)]) * rows.stride;
            &rows.elems[start..start + dim]
        };
        let members = [row(0), row(1), row(2), row(3)];
        for &i in group {
            // The rows `PREFETCH_ROWS` ahead, a cache line at a time: this VM's hardware
            // prefetcher alone left the scan well short of the read bandwidth. A prefetch
            // never faults, and the address is only formed (`wrapping_add`), never read.
            let ahead = rows
                .elems
                .as_ptr()
                .cast::<i8>()
                .wrapping_add((base + i + PREFETCH_ROWS) * row_bytes);
            for line in (0..row_bytes).step_by(CACHE_LINE) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
            }
        }
        // SAFETY: the CPU has the features (the caller's contract); every step
        // reads `LANES` elements at `j < full <= dim` of a row slice of `dim` elements, and of
        // the query, which holds at least `full + LANES` elements when `tail > 0`.
        unsafe {
            let mut acc = [L::zero(); GROUP];
            let mut j = 0;
            while j < full {
                let q = query.as_ptr().add(j);
                for (acc, member) in acc.iter_mut().zip(&members) {
                    *acc = L::mul_add(*acc, member.as_ptr().add(j), q);
                }
                j += L::LANES;
            }
            if tail > 0 {
                let q = query.as_ptr().add(full);
                for (acc, member) in acc.iter_mut().zip(&members) {
                    let mut padded = [L::Elem::default(); MAX_LANES];
                    padded[..tail].copy_from_slice(&member[full..]);
                    *acc = L::mul_add(*acc, padded.as_ptr(), q);
                }
            }
            for (&i, total) in group.iter().zip(L::totals(acc)) {
                out[i] = total;
            }
        }
    }
}

/// `i8` rows: sign-extended to `i16`, multiplied and pair-summed into `i32` (`vpmaddwd`).
pub(crate) struct I8Lanes;

/// `f16` rows: converted to `f32` (`vcvtph2ps`) and fused-multiply-added.
pub(crate) struct F16Lanes;

/// `f32` rows: fused-multiply-added.
pub(crate) struct F32Lanes;

#[allow(unsafe_code)]
impl Lanes for I8Lanes {
    type Elem = i8;
    type Wide = i16;
    #[cfg(target_arch = "x86_64")]
    type Acc = __m256i;
    const LANES: usize = 16;
    fn query(query: &BlockQuery) -> &[i16] {
        &query.i8
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        // SAFETY: AVX (the caller's contract).
        unsafe { _mm256_setzero_si256() }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mul_add(acc: __m256i, row: *const i8, query: *const i16) -> __m256i {
        // SAFETY: the caller's contract: 16 readable `i8` at `row` and `i16` at `query`, and
        // AVX2; the loads have no alignment requirement.
        unsafe {
            let row = _mm256_cvtepi8_epi16(_mm_loadu_si128(row.cast()));
            _mm256_add_epi32(
                acc,
                _mm256_madd_epi16(row, _mm256_loadu_si256(query.cast())),
            )
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn totals(acc: [__m256i; GROUP]) -> [f64; GROUP] {
        // SAFETY: AVX2 (the caller's contract); `totals` is 16 writable bytes, the store has
        // no alignment requirement. Lane i of `sums` is accumulator i's total: three pairwise
        // adds, then the two halves.
        unsafe {
            let pairs = _mm256_hadd_epi32(
                _mm256_hadd_epi32(acc[0], acc[1]),
                _mm256_hadd_epi32(acc[2], acc[3]),
            );
            let sums = _mm_add_epi32(
                _mm256_castsi256_si128(pairs),
                _mm256_extracti128_si256::<1>(pairs),
            );
            let mut totals = [0i32; GROUP];
            _mm_storeu_si128(totals.as_mut_ptr().cast(), sums);
            totals.map(f64::from)
        }
    }
}

/// Horizontal totals of four `f32` accumulators, as [`I8Lanes::totals`] does for `i32`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn float_totals(acc: [__m256; GROUP]) -> [f64; GROUP] {
    // SAFETY: AVX (the caller's contract); `totals` is 16 writable bytes, the store has no
    // alignment requirement.
    unsafe {
        let pairs = _mm256_hadd_ps(
            _mm256_hadd_ps(acc[0], acc[1]),
            _mm256_hadd_ps(acc[2], acc[3]),
        );
        let sums = _mm_add_ps(
            _mm256_castps256_ps128(pairs),
            _mm256_extractf128_ps::<1>(pairs),
        );
        let mut totals = [0f32; GROUP];
        _mm_storeu_ps(totals.as_mut_ptr(), sums);
        totals.map(f64::from)
    }
}

#[allow(unsafe_code)]
impl Lanes for F16Lanes {
    type Elem = half::f16;
    type Wide = f32;
    #[cfg(target_arch = "x86_64")]
    type Acc = __m256;
    const LANES: usize = 8;
    fn query(query: &BlockQuery) -> &[f32] {
        &query.f16
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: AVX (the caller's contract).
        unsafe { _mm256_setzero_ps() }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mul_add(acc: __m256, row: *const half::f16, query: *const f32) -> __m256 {
        // SAFETY: the caller's contract: 8 readable `f16` at `row` and `f32` at `query`, and
        // F16C and FMA; the loads have no alignment requirement.
        unsafe {
            let row = _mm256_cvtph_ps(_mm_loadu_si128(row.cast()));
            _mm256_fmadd_ps(row, _mm256_loadu_ps(query), acc)
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn totals(acc: [__m256; GROUP]) -> [f64; GROUP] {
        // SAFETY: the caller's contract (AVX).
        unsafe { float_totals(acc) }
    }
}

#[allow(unsafe_code)]
impl Lanes for F32Lanes {
    type Elem = f32;
    type Wide = f32;
    #[cfg(target_arch = "x86_64")]
    type Acc = __m256;
    const LANES: usize = 8;
    fn query(query: &BlockQuery) -> &[f32] {
        &query.f32
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: AVX (the caller's contract).
        unsafe { _mm256_setzero_ps() }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mul_add(acc: __m256, row: *const f32, query: *const f32) -> __m256 {
        // SAFETY: the caller's contract: 8 readable `f32` at `row` and at `query`, and FMA;
        // the loads have no alignment requirement.
        unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(row), _mm256_loadu_ps(query), acc) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn totals(acc: [__m256; GROUP]) -> [f64; GROUP] {
        // SAFETY: the caller's contract (AVX).
        unsafe { float_totals(acc) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel tests in `scan` compare both paths: this checks they really are two.
    #[test]
    fn kernels_choose_the_block_form_only_where_detected() {
        let values = [0.5f32, -1.0, 2.0];
        let f16 = values.map(half::f16::from_f32);
        let i8 = [32i8, -64, 127];
        assert!(BlockQuery::new(Kernels::Portable, &values, &f16, &i8).is_none());
        let detected_query = BlockQuery::new(Kernels::Detected, &values, &f16, &i8);
        assert_eq!(detected_query.is_some(), detected());
        if let Some(query) = detected_query {
            assert_eq!(
                query.i8,
                [32, -64, 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            );
            assert_eq!(query.f16, [0.5, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
            assert_eq!(query.f32, query.f16);
        }
    }
}
