//! The single-query block kernels: one query against the live rows of a block (at most 64, one
//! skip-bitmap word) per call.
//!
//! A `simsimd` call per row costs about as much as a 64-d row's arithmetic, so small coarse
//! rows never streamed at memory bandwidth. Here the query is widened once per search (`i8` to
//! `i16`, `f16` to `f32`, zero-padded to whole registers), and four rows share each load of a
//! query chunk and one horizontal sum. One generic loop ([`dots`]) instantiated per element
//! type through [`Lanes`]; AVX2 with FMA and F16C, detected once per query ([`Kernels`]), with
//! `simsimd` per row as the portable fallback. Where the CPU has AVX-512 VNNI, `i8` rows take
//! their own kernel ([`dots_i8_vnni`]), and packed 16- and 32-byte rows one that reads four or
//! two rows a register ([`dots_i8_vnni_shared`]). `i8` products are summed in exact integer
//! arithmetic, so they equal the scalar `i32` dot product bit for bit.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, __m256i, __m512i, _MM_HINT_T0, _mm_add_epi32, _mm_add_ps, _mm_loadu_si128,
    _mm_prefetch, _mm_storeu_ps, _mm_storeu_si128, _mm256_add_epi32, _mm256_castps256_ps128,
    _mm256_castsi256_si128, _mm256_cvtepi8_epi16, _mm256_cvtph_ps, _mm256_extractf128_ps,
    _mm256_extracti128_si256, _mm256_fmadd_ps, _mm256_hadd_epi32, _mm256_hadd_ps, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_madd_epi16, _mm256_setzero_ps, _mm256_setzero_si256,
    _mm512_add_epi32, _mm512_castsi512_si256, _mm512_cvtepi32_pd, _mm512_dpbusd_epi32,
    _mm512_extracti64x4_epi64, _mm512_loadu_si512, _mm512_maskz_loadu_epi8,
    _mm512_permutexvar_epi32, _mm512_set1_epi8, _mm512_set1_epi32, _mm512_setr_epi32,
    _mm512_setzero_si512, _mm512_shuffle_i32x4, _mm512_storeu_pd, _mm512_sub_epi32,
    _mm512_unpackhi_epi32, _mm512_unpackhi_epi64, _mm512_unpacklo_epi32, _mm512_unpacklo_epi64,
    _mm512_xor_si512,
};

use super::Rows;

/// Which kernels a query scores blocks of rows with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The best this CPU has: for `i8` rows the AVX-512 VNNI kernel where it has AVX-512 BW
    /// and VNNI, else the AVX2 block kernels where it has AVX2, FMA and F16C, else the
    /// portable ones.
    Detected,
    /// The AVX2 block kernels even where AVX-512 is there (kept selectable to compare and to
    /// test both), else the portable ones.
    Avx2,
    /// `simsimd` per row, whatever the CPU (the fallback; kept selectable to compare).
    Portable,
}

/// Rows summed together: their accumulators share each query load and one horizontal sum.
const GROUP: usize = 4;

/// How far ahead of the rows being scored the kernels ask for bytes to be loaded: about what
/// the memory bandwidth delivers in one memory latency, whatever the row size (32 rows ahead
/// were 2 KiB of 64-byte rows but only 512 bytes of packed 16-byte ones, which left those
/// scans waiting on every load).
const PREFETCH_BYTES: usize = 4096;

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
    /// The `i8` query for the AVX-512 VNNI kernel, where the CPU and `kernels` allow it.
    vnni: Option<VnniQuery>,
}

/// An `i8` query as [`dots_i8_vnni`] reads it. `vpdpbusd` multiplies unsigned by signed
/// bytes, so rows are read offset by 128 (`r ^ 0x80` is `r + 128` as `u8`), and
/// `Σ (r + 128)·q − 128·Σ q` gives the exact `Σ r·q`.
#[derive(Debug, Clone)]
struct VnniQuery {
    /// Zero-padded to whole 64-byte registers.
    bytes: Vec<i8>,
    /// For a `dim` of 16 or 32: the query repeated across one register, to score the
    /// [`SHARED_REGISTER`] rows that one load of packed rows holds.
    repeated: Option<[i8; VNNI_BYTES]>,
    /// `128 · Σ q`.
    offset: i32,
}

/// Row lengths (bytes) at which several packed `i8` rows share one AVX-512 register: one load,
/// one `vpdpbusd` and a shorter reduction score four 16-byte or two 32-byte rows, where a
/// register per row would leave three quarters or half of every load and product unused.
const SHARED_REGISTER: [usize; 2] = [16, 32];

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
        let vnni = kernels.use_vnni().then(|| VnniQuery {
            bytes: padded(i8, VNNI_BYTES, |x| x),
            repeated: SHARED_REGISTER
                .contains(&i8.len())
                .then(|| std::array::from_fn(|j| i8[j % i8.len()])),
            offset: 128 * i8.iter().map(|&q| i32::from(q)).sum::<i32>(),
        });
        Some(Self {
            dim: f32.len(),
            i8: padded(i8, I8Lanes::LANES, i16::from),
            f16: padded(f16, F16Lanes::LANES, half::f16::to_f32),
            f32: padded(f32, F32Lanes::LANES, |x| x),
            vnni,
        })
    }
}

/// Bytes of one AVX-512 register: the VNNI kernel's step along a row.
const VNNI_BYTES: usize = 64;

/// Rows the VNNI kernel sums together: one register of 16 `i32` totals.
const VNNI_GROUP: usize = 16;

/// Whether this CPU has every one of the named features (`false` off x86-64).
macro_rules! cpu_has {
    ($($feature:tt),+) => {{
        #[cfg(target_arch = "x86_64")]
        let has = true $(&& std::arch::is_x86_feature_detected!($feature))+;
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        has
    }};
}

/// Whether this CPU runs the AVX-512 VNNI `i8` kernel.
fn vnni_detected() -> bool {
    cpu_has!("avx512f", "avx512bw", "avx512vnni")
}

/// Whether this CPU runs the block kernels.
fn detected() -> bool {
    cpu_has!("avx2", "fma", "f16c")
}

impl Kernels {
    /// Whether these kernels score `i8` rows with the AVX-512 VNNI kernel on this CPU.
    pub fn use_vnni(self) -> bool {
        self == Kernels::Detected && detected() && vnni_detected()
    }
}

/// One query's block of raw dot products, to be turned into scores by [`scores_reaching`].
pub(crate) struct RawBlock<'a> {
    pub raw: &'a [f64],
    pub query_scale: f32,
    /// The rows' `i8` scales, slot by slot; `None`: 1.
    pub scales: Option<&'a [f32]>,
}

/// Writes the scores of a block, `raw[i] as f32 · query_scale · scales[i]`, and says whether
/// any reaches `threshold` (NaN never does). Every query pays this per row, so where the CPU
/// has AVX2 it runs a copy compiled for it (eight lanes; the baseline x86-64 build does four);
/// the products are the same either way.
pub(crate) fn scores_reaching(block: &RawBlock<'_>, threshold: f32, scores: &mut [f32]) -> bool {
    #[inline(always)]
    fn generic(block: &RawBlock<'_>, threshold: f32, scores: &mut [f32]) -> bool {
        let query_scale = block.query_scale;
        match block.scales {
            Some(scales) => {
                for ((score, &dot), &scale) in scores.iter_mut().zip(block.raw).zip(scales) {
                    *score = dot as f32 * query_scale * scale;
                }
            }
            None => {
                for (score, &dot) in scores.iter_mut().zip(block.raw) {
                    *score = dot as f32 * query_scale;
                }
            }
        }
        scores.iter().fold(false, |any, &s| any | (s >= threshold))
    }
    #[cfg(target_arch = "x86_64")]
    if detected() {
        #[target_feature(enable = "avx2,fma,f16c")]
        fn wide(block: &RawBlock<'_>, threshold: f32, scores: &mut [f32]) -> bool {
            generic(block, threshold, scores)
        }
        // SAFETY: `detected()` found the features `wide` is compiled for.
        #[allow(unsafe_code)]
        return unsafe { wide(block, threshold, scores) };
    }
    generic(block, threshold, scores)
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
        if !L::vnni(query, rows, base, live, out) {
            dots::<L>(L::query(query), rows, base, live, out);
        }
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
    /// The AVX-512 VNNI kernel's raw dot products, as [`block_dots`] describes; `false`
    /// (nothing written) where the type or the query has none, as for every float type.
    #[cfg(target_arch = "x86_64")]
    fn vnni(
        _query: &BlockQuery,
        _rows: &Rows<'_, Self::Elem>,
        _base: usize,
        _live: u64,
        _out: &mut [f64; 64],
    ) -> bool {
        false
    }
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

/// Writes the slots of the set bits of `live` to `index`, ascending, and returns how many.
#[inline(always)]
fn live_slots(live: u64, index: &mut [usize; 64]) -> usize {
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
    count
}

/// The lines that rows `first..=last` of a block span, [`PREFETCH_BYTES`] ahead: this VM's
/// hardware prefetcher alone left the scan well short of the read bandwidth. One prefetch per
/// line, not per row: a packed 16-byte row is a quarter of one. A prefetch never faults, and
/// the address is only formed (`wrapping_add`), never read.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch_ahead(elems: *const i8, row_bytes: usize, first: usize, last: usize) {
    let start = first * row_bytes + PREFETCH_BYTES;
    let span = (last - first + 1) * row_bytes;
    for line in (start..start + span).step_by(CACHE_LINE) {
        // SAFETY: SSE (every x86-64 CPU); a prefetch of any address is defined.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(elems.wrapping_add(line)) };
    }
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
    let count = live_slots(live, &mut index);
    let row_bytes = rows.stride * size_of::<L::Elem>();
    let full = dim / L::LANES * L::LANES;
    let tail = dim - full;
    let ahead = rows.elems.as_ptr().cast::<i8>();
    for group in index[..count].chunks(GROUP) {
        let last = group.len() - 1;
        let row = |g: usize| {
            let start = (base + group[g.min(last)]) * rows.stride;
            &rows.elems[start..start + dim]
        };
        let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
        prefetch_ahead(ahead, row_bytes, base + group[0], base + group[last]);
        // SAFETY: the CPU has the features (the caller's contract); every step
        // reads `LANES` elements at `j < full <= dim` of a row slice of `dim` elements, and of
        // the query, which holds at least `full + LANES` elements when `tail > 0`. Four named
        // accumulators, not an array, so they stay in registers.
        unsafe {
            let (mut a0, mut a1, mut a2, mut a3) = (L::zero(), L::zero(), L::zero(), L::zero());
            let mut j = 0;
            while j < full {
                let q = query.as_ptr().add(j);
                a0 = L::mul_add(a0, r0.as_ptr().add(j), q);
                a1 = L::mul_add(a1, r1.as_ptr().add(j), q);
                a2 = L::mul_add(a2, r2.as_ptr().add(j), q);
                a3 = L::mul_add(a3, r3.as_ptr().add(j), q);
                j += L::LANES;
            }
            if tail > 0 {
                let q = query.as_ptr().add(full);
                let padded = |r: &[L::Elem]| {
                    let mut padded = [L::Elem::default(); MAX_LANES];
                    padded[..tail].copy_from_slice(&r[full..]);
                    padded
                };
                a0 = L::mul_add(a0, padded(r0).as_ptr(), q);
                a1 = L::mul_add(a1, padded(r1).as_ptr(), q);
                a2 = L::mul_add(a2, padded(r2).as_ptr(), q);
                a3 = L::mul_add(a3, padded(r3).as_ptr(), q);
            }
            for (&i, total) in group.iter().zip(L::totals([a0, a1, a2, a3])) {
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
    fn vnni(
        query: &BlockQuery,
        rows: &Rows<'_, i8>,
        base: usize,
        live: u64,
        out: &mut [f64; 64],
    ) -> bool {
        let Some(vnni) = &query.vnni else {
            return false;
        };
        let packed = rows.stride == rows.dim;
        // SAFETY: a `VnniQuery` exists only where `vnni_detected()` found AVX-512 F, BW and
        // VNNI; its bytes hold `dim` rounded up to whole registers (the caller checked that
        // the query's `dim` is the rows'), and `repeated` is there for a `dim` of 16 or 32.
        unsafe {
            match (&vnni.repeated, rows.dim) {
                (Some(repeated), 16) if packed => {
                    dots_i8_vnni_shared::<16>(repeated, vnni.offset, rows, base, live, out);
                }
                (Some(repeated), 32) if packed => {
                    dots_i8_vnni_shared::<32>(repeated, vnni.offset, rows, base, live, out);
                }
                _ => dots_i8_vnni(vnni, rows, base, live, out),
            }
        }
        true
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

/// The `i8` block loop on AVX-512 VNNI: the live rows in groups of [`VNNI_GROUP`] (a short last
/// group repeats its last row, whose sum is written once), each row read a register at a time
/// with the bytes past its `dim` masked off (a masked load reads nothing there, so no copy),
/// offset to unsigned and multiplied into `i32` lanes by `vpdpbusd`, then the sixteen
/// accumulators reduced to one register of sixteen totals. Exact integer arithmetic, as the
/// AVX2 kernel.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI, and `query.bytes` holds `rows.dim` rounded up to a
/// multiple of [`VNNI_BYTES`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(unsafe_code)]
unsafe fn dots_i8_vnni(
    query: &VnniQuery,
    rows: &Rows<'_, i8>,
    base: usize,
    live: u64,
    out: &mut [f64; 64],
) {
    let dim = rows.dim;
    let steps = dim.div_ceil(VNNI_BYTES);
    debug_assert!(query.bytes.len() >= steps * VNNI_BYTES);
    let last_mask = match dim % VNNI_BYTES {
        0 => u64::MAX,
        tail => (1u64 << tail) - 1,
    };
    let mut index = [0usize; 64];
    let count = live_slots(live, &mut index);
    let elems = rows.elems.as_ptr();
    let flip = _mm512_set1_epi8(i8::MIN);
    let offset = _mm512_set1_epi32(query.offset);
    for group in index[..count].chunks(VNNI_GROUP) {
        let last = group.len() - 1;
        prefetch_ahead(elems, rows.stride, base + group[0], base + group[last]);
        let starts: [usize; VNNI_GROUP] =
            std::array::from_fn(|g| (base + group[g.min(last)]) * rows.stride);
        // SAFETY: the CPU has the features (the caller's contract). Each load reads the
        // register at `start + step·64` of a row of `dim` elements inside `rows.elems` (the
        // live rows of a block exist), masked to the bytes before `dim`: masked-off bytes are
        // neither read nor faulted on. The query holds `steps` whole registers.
        unsafe {
            let mut acc = [_mm512_setzero_si512(); VNNI_GROUP];
            for step in 0..steps {
                let mask = if step + 1 == steps {
                    last_mask
                } else {
                    u64::MAX
                };
                let q = _mm512_loadu_si512(query.bytes.as_ptr().add(step * VNNI_BYTES).cast());
                for g in 0..VNNI_GROUP {
                    let row = elems.add(starts[g] + step * VNNI_BYTES);
                    let unsigned = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, row), flip);
                    acc[g] = _mm512_dpbusd_epi32(acc[g], unsigned, q);
                }
            }
            let totals = _mm512_sub_epi32(vnni_totals(acc), offset);
            let mut wide = [0f64; VNNI_GROUP];
            _mm512_storeu_pd(
                wide.as_mut_ptr(),
                _mm512_cvtepi32_pd(_mm512_castsi512_si256(totals)),
            );
            _mm512_storeu_pd(
                wide.as_mut_ptr().add(8),
                _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(totals)),
            );
            if group.len() == VNNI_GROUP && group[last] - group[0] == last {
                out[group[0]..group[0] + VNNI_GROUP].copy_from_slice(&wide);
            } else {
                for (&i, total) in group.iter().zip(wide) {
                    out[i] = total;
                }
            }
        }
    }
}

/// Lane `g` of the result: the sum of the sixteen lanes of `acc[g]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
fn vnni_totals(acc: [__m512i; VNNI_GROUP]) -> __m512i {
    reduce_lanes(acc, VNNI_GROUP)
}

/// Sums the lanes of the first `n` accumulators (1, 2, 4, 8 or 16) into one register, each
/// level halving the accumulators: pairs of registers are interleaved and added twice within
/// 128-bit lanes (after which lane `l` of the result holds, side by side, the sums of lane
/// `l` of four accumulators), then 128-bit lanes are gathered and added across registers.
/// Sixteen accumulators end as sixteen totals in order; fewer end one level or two short,
/// with each total the sum of a half or a quarter of an accumulator, as the rows of
/// [`dots_i8_vnni_shared`] lie.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(unsafe_code)]
fn reduce_lanes(mut acc: [__m512i; VNNI_GROUP], mut n: usize) -> __m512i {
    let mut level = 0;
    while n > 1 {
        for k in 0..n / 2 {
            let (a, b) = (acc[2 * k], acc[2 * k + 1]);
            // Writes slot `k` after reading `2k` and `2k + 1`, which no later `k` reads.
            acc[k] = match level {
                0 => _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b)),
                1 => _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b)),
                _ => _mm512_add_epi32(
                    _mm512_shuffle_i32x4::<0b10_00_10_00>(a, b),
                    _mm512_shuffle_i32x4::<0b11_01_11_01>(a, b),
                ),
            };
        }
        n /= 2;
        level += 1;
    }
    acc[0]
}

/// [`dots_i8_vnni`] for packed rows of `DIM` = 16 or 32 bytes, which share registers: the
/// rows of a group are read a register at a time back to back (the last register masked at
/// the end of the last live row, so nothing past it is read), each multiplied by the query
/// repeated across the register, and the lanes reduced per row. Rows of a group that are not
/// live are scored too (they lie between live ones) but never written.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI; `rows.stride == rows.dim == DIM`, and `repeated` is
/// the query repeated across a register, whose sum times 128 is `offset`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(unsafe_code)]
unsafe fn dots_i8_vnni_shared<const DIM: usize>(
    repeated: &[i8; VNNI_BYTES],
    offset: i32,
    rows: &Rows<'_, i8>,
    base: usize,
    live: u64,
    out: &mut [f64; 64],
) {
    const { assert!(DIM == 16 || DIM == 32) };
    debug_assert!(rows.stride == DIM && rows.dim == DIM);
    let loads = VNNI_GROUP * DIM / VNNI_BYTES;
    // Slot `r` of the reduced register takes the total at `order[r]`: after two levels
    // (16-byte rows) lane `l` holds rows `l, l + 4, l + 8, l + 12`; after three (32-byte
    // rows) lanes hold rows `0 2 4 6 | 1 3 5 7 | 8 10 12 14 | 9 11 13 15`.
    let order = if DIM == 16 {
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
    } else {
        _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15)
    };
    let end = (base + 64 - live.leading_zeros() as usize) * DIM;
    debug_assert!(end <= rows.elems.len());
    let elems = rows.elems.as_ptr();
    let flip = _mm512_set1_epi8(i8::MIN);
    let offset = _mm512_set1_epi32(offset);
    // SAFETY: AVX-512 F (the caller's contract); 64 readable bytes.
    let query = unsafe { _mm512_loadu_si512(repeated.as_ptr().cast()) };
    for group in 0..64 / VNNI_GROUP {
        let group_live = (live >> (group * VNNI_GROUP)) & 0xffff;
        if group_live == 0 {
            continue;
        }
        let first = base + group * VNNI_GROUP;
        prefetch_ahead(elems, DIM, first, first + VNNI_GROUP - 1);
        let mut acc = [_mm512_setzero_si512(); VNNI_GROUP];
        for (k, acc) in acc[..loads].iter_mut().enumerate() {
            let at = first * DIM + k * VNNI_BYTES;
            let mask = match end.saturating_sub(at) {
                0 => 0,
                left if left >= VNNI_BYTES => u64::MAX,
                left => (1u64 << left) - 1,
            };
            // SAFETY: the bytes before `end` are rows of the column (every row from the
            // block's base to its last live one exists); masked-off bytes are neither read
            // nor faulted on.
            let bytes = unsafe { _mm512_maskz_loadu_epi8(mask, elems.add(at)) };
            *acc =
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(bytes, flip), query);
        }
        let totals = _mm512_sub_epi32(
            _mm512_permutexvar_epi32(order, reduce_lanes(acc, loads)),
            offset,
        );
        let mut wide = [0f64; VNNI_GROUP];
        // SAFETY: AVX-512 F; `wide` is 16 writable `f64`, the stores have no alignment need.
        unsafe {
            _mm512_storeu_pd(
                wide.as_mut_ptr(),
                _mm512_cvtepi32_pd(_mm512_castsi512_si256(totals)),
            );
            _mm512_storeu_pd(
                wide.as_mut_ptr().add(8),
                _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(totals)),
            );
        }
        let slots = &mut out[group * VNNI_GROUP..][..VNNI_GROUP];
        if group_live == 0xffff {
            slots.copy_from_slice(&wide);
        } else {
            for (i, (slot, total)) in slots.iter_mut().zip(wide).enumerate() {
                if group_live >> i & 1 == 1 {
                    *slot = total;
                }
            }
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

    /// The kernel tests in `scan` compare every path: this checks they really are distinct.
    #[test]
    fn kernels_choose_the_block_form_only_where_detected() {
        let values = [0.5f32, -1.0, 2.0];
        let f16 = values.map(half::f16::from_f32);
        let i8 = [32i8, -64, 127];
        assert!(BlockQuery::new(Kernels::Portable, &values, &f16, &i8).is_none());
        let avx2 = BlockQuery::new(Kernels::Avx2, &values, &f16, &i8);
        assert!(avx2.is_none_or(|q| q.vnni.is_none()));
        let detected_query = BlockQuery::new(Kernels::Detected, &values, &f16, &i8);
        assert_eq!(detected_query.is_some(), detected());
        assert_eq!(
            detected_query.as_ref().is_some_and(|q| q.vnni.is_some()),
            detected() && vnni_detected()
        );
        if let Some(query) = detected_query {
            assert_eq!(
                query.i8,
                [32, -64, 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            );
            assert_eq!(query.f16, [0.5, -1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
            assert_eq!(query.f32, query.f16);
            if let Some(vnni) = &query.vnni {
                assert_eq!(vnni.bytes.len(), VNNI_BYTES);
                assert_eq!(vnni.bytes[..4], [32, -64, 127, 0]);
                assert_eq!(vnni.offset, 128 * (32 - 64 + 127));
                assert!(vnni.repeated.is_none());
            }
        }
        let values: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
        let f16: Vec<_> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
        let i8: Vec<i8> = (0..16).collect();
        let query = BlockQuery::new(Kernels::Detected, &values, &f16, &i8);
        if let Some(vnni) = query.and_then(|q| q.vnni) {
            let repeated = vnni.repeated.expect("a 16-d query shares registers");
            assert!(repeated.chunks(16).all(|chunk| chunk == i8.as_slice()));
        }
    }
}
