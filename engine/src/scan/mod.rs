//! The scan kernels: one generic loop over the rows of a [`VectorColumn`], instantiated per
//! element type (`f32`, `f16`, `i8` with a per-row scale), with the top-M threshold filter
//! fused into the loop. A query scores each block of 64 rows with one call of its element
//! type's block kernel ([`block`]: AVX2, `simsimd` per row as the portable fallback). A batch's
//! tile of queries scores each block of rows together ([`TileScorer`]); for `i8` that is a
//! multi-query AVX2 kernel ([`batch_i8`]).

mod batch_i8;
mod block;
mod top;

use std::ops::Range;

use hivlp_storage::segment::PartitionRows;
use hivlp_storage::{ElemType, VectorColumn, quantize_i8};
use rayon::prelude::*;
use simsimd::SpatialSimilarity;

use block::BlockQuery;
pub use block::Kernels;
pub(crate) use top::{Candidate, TopM};

/// Rows per parallel task. A multiple of 64 so that every task starts on a bitmap word.
const TASK_ROWS: usize = 8192;

/// A query vector in every element type a column may hold, converted once per search.
#[derive(Debug, Clone)]
pub(crate) struct QueryVec {
    f32: Vec<f32>,
    /// `f32[j] ≈ f16[j] * f16_scale`, a power of two (1 unless some value is beyond the `f16`
    /// range, which an inner-product query may be), so the copy stays finite.
    f16: Vec<half::f16>,
    f16_scale: f32,
    /// Symmetric quantisation: `f32[j] ≈ i8[j] * i8_scale`, so an `i8` dot product times both
    /// scales approximates the `f32` dot product.
    i8: Vec<i8>,
    i8_scale: f32,
    /// The widened copies the block kernels read; `None` selects the portable kernels.
    block: Option<BlockQuery>,
}

impl QueryVec {
    /// The query in every element type, scored with the block kernels where the CPU has them.
    pub fn new(values: &[f32]) -> Self {
        Self::with_kernels(values, Kernels::Detected)
    }

    /// The query as given.
    pub fn values(&self) -> &[f32] {
        &self.f32
    }

    pub fn with_kernels(values: &[f32], kernels: Kernels) -> Self {
        let max_abs = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let mut i8 = vec![0; values.len()];
        let i8_scale = quantize_i8(values, &mut i8);
        let f16_max = f32::from(half::f16::MAX);
        let f16_scale = if max_abs > f16_max {
            (max_abs / f16_max).log2().ceil().exp2()
        } else {
            1.0
        };
        let f16: Vec<half::f16> = values
            .iter()
            .map(|&v| half::f16::from_f32(v / f16_scale))
            .collect();
        Self {
            block: BlockQuery::new(kernels, values, &f16, &i8),
            f32: values.to_vec(),
            f16,
            f16_scale,
            i8,
            i8_scale,
        }
    }
}

/// An element type the scan can read.
pub(crate) trait Element: bytemuck::Pod + Sync {
    const TYPE: ElemType;
    /// The dot product of the query (in this element type) with one stored row (`simsimd`'s
    /// for `f32` and `i8`), before the query's and the row's scales. A length mismatch cannot
    /// occur (columns and queries are checked against the schema); should it ever, the row
    /// scores lowest instead of panicking.
    fn raw_dot(query: &QueryVec, row: &[Self]) -> f64;
    /// The type's arithmetic in the block kernel ([`block::block_dots`]).
    type Lanes: block::Lanes<Elem = Self>;
    /// Factor turning `raw_dot` into the query side of the real dot product.
    fn query_scale(query: &QueryVec) -> f32;
    /// How a tile of queries scores a block of rows: [`PerQuery`] unless the type has a
    /// multi-query kernel.
    type Tile<'q>: TileScorer<Self>;
    fn tile<'q>(queries: &'q [&'q QueryVec], dim: usize) -> Self::Tile<'q>;
}

/// Fills raw dot products (see [`Element::raw_dot`]) of every query of a tile with the rows
/// `base..end` (at most 64) of a block: `out[query][row - base]`, NaN for rows not in `live`.
pub(crate) trait TileScorer<E: Element> {
    fn raw_blocks(
        &mut self,
        rows: &Rows<'_, E>,
        base: usize,
        end: usize,
        live: u64,
        out: &mut [[f64; 64]],
    );
}

/// The default [`TileScorer`]: one tight `simsimd` loop per query.
pub(crate) struct PerQuery<'q>(&'q [&'q QueryVec]);

impl<E: Element> TileScorer<E> for PerQuery<'_> {
    fn raw_blocks(
        &mut self,
        rows: &Rows<'_, E>,
        base: usize,
        end: usize,
        live: u64,
        out: &mut [[f64; 64]],
    ) {
        for (query, out) in self.0.iter().zip(out) {
            rows.raw_block(query, base, end, live, out);
        }
    }
}

impl Element for f32 {
    const TYPE: ElemType = ElemType::F32;
    type Lanes = block::F32Lanes;
    type Tile<'q> = PerQuery<'q>;
    fn tile<'q>(queries: &'q [&'q QueryVec], _: usize) -> PerQuery<'q> {
        PerQuery(queries)
    }
    #[inline(always)]
    fn raw_dot(query: &QueryVec, row: &[f32]) -> f64 {
        <f32 as SpatialSimilarity>::dot(&query.f32, row).unwrap_or(f64::NEG_INFINITY)
    }
    fn query_scale(_: &QueryVec) -> f32 {
        1.0
    }
}

impl Element for half::f16 {
    const TYPE: ElemType = ElemType::F16;
    type Lanes = block::F16Lanes;
    type Tile<'q> = PerQuery<'q>;
    fn tile<'q>(queries: &'q [&'q QueryVec], _: usize) -> PerQuery<'q> {
        PerQuery(queries)
    }
    /// Widened to `f64` here rather than `simsimd`'s: on CPUs with AVX-512 FP16 (Sapphire
    /// Rapids) its kernel multiplies and sums in `f16`, which loses digits and overflows for
    /// queries scaled into the `f16` range. A product of two `f16` is exact in `f64`.
    #[inline(always)]
    fn raw_dot(query: &QueryVec, row: &[half::f16]) -> f64 {
        if query.f16.len() != row.len() {
            return f64::NEG_INFINITY;
        }
        query
            .f16
            .iter()
            .zip(row)
            .map(|(q, r)| f64::from(q.to_f32()) * f64::from(r.to_f32()))
            .sum()
    }
    fn query_scale(query: &QueryVec) -> f32 {
        query.f16_scale
    }
}

impl Element for i8 {
    const TYPE: ElemType = ElemType::I8;
    type Lanes = block::I8Lanes;
    type Tile<'q> = batch_i8::I8Tile<'q>;
    fn tile<'q>(queries: &'q [&'q QueryVec], dim: usize) -> Self::Tile<'q> {
        batch_i8::I8Tile::new(queries, dim)
    }
    #[inline(always)]
    fn raw_dot(query: &QueryVec, row: &[i8]) -> f64 {
        <i8 as SpatialSimilarity>::dot(&query.i8, row).unwrap_or(f64::NEG_INFINITY)
    }
    fn query_scale(query: &QueryVec) -> f32 {
        query.i8_scale
    }
}

/// The rows of a column as typed slices.
pub(crate) struct Rows<'a, E> {
    elems: &'a [E],
    /// Distance between row starts, in elements.
    stride: usize,
    dim: usize,
    scales: Option<&'a [f32]>,
}

impl<'a, E: Element> Rows<'a, E> {
    /// `VectorColumn::new` guarantees the alignment and length this cast needs.
    fn of(column: &VectorColumn<'a>) -> Self {
        debug_assert_eq!(column.elem(), E::TYPE);
        Self {
            elems: bytemuck::cast_slice(column.bytes()),
            stride: column.stride() / E::TYPE.size(),
            dim: column.dim(),
            scales: column.scales(),
        }
    }

    /// Raw dot products (see [`Element::raw_dot`]) of rows `base..end` (at most 64) into
    /// `out[row - base]` for the rows whose bit is set in `live`; the others get NaN. One call
    /// of the block kernel, or (portable) a tight loop of `simsimd` calls.
    #[inline(always)]
    fn raw_block(&self, query: &QueryVec, base: usize, end: usize, live: u64, out: &mut [f64; 64]) {
        let n = end - base;
        let full = live == bit_range(0, n);
        if !full {
            out.fill(f64::NAN);
        }
        if block::block_dots::<E::Lanes>(query.block.as_ref(), self, base, live, out) {
            return;
        }
        if full {
            let block = &self.elems[base * self.stride..end * self.stride];
            for (slot, row) in out[..n].iter_mut().zip(block.chunks_exact(self.stride)) {
                *slot = E::raw_dot(query, &row[..self.dim]);
            }
        } else {
            let mut bits = live;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let start = (base + i) * self.stride;
                out[i] = E::raw_dot(query, &self.elems[start..start + self.dim]);
            }
        }
    }

    /// The score of one row: its dot product with the query.
    #[inline(always)]
    fn score(&self, query: &QueryVec, row: usize) -> f32 {
        let start = row * self.stride;
        let dot = E::raw_dot(query, &self.elems[start..start + self.dim]) as f32;
        let row_scale = self.scales.map_or(1.0, |s| s[row]);
        dot * E::query_scale(query) * row_scale
    }
}

/// One column to scan, with the rows to skip (deleted, or without vectors of the modality).
#[derive(Clone, Copy)]
pub(crate) struct Part<'a> {
    pub column: VectorColumn<'a>,
    /// Bit `i` of word `i / 64` set: skip row `i`. Missing words mean "scan".
    pub skip: &'a [u64],
    /// Only these rows (the probed partitions of a partitioned segment); `None`: every row.
    pub listed: Option<&'a [PartitionRows<'a>]>,
}

/// Scores the raw dot products of one block of rows (`raw[query][i]`, NaN for rows not
/// scanned) and offers the rows that beat each query's threshold to its top-M; `row_of(i)`
/// is the row of slot `i` and `scales` the rows' `i8` scales, slot by slot.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn offer<E: Element>(
    raw: &[[f64; 64]],
    n: usize,
    scales: Option<&[f32]>,
    row_of: impl Fn(usize) -> usize,
    source: u32,
    queries: &[&QueryVec],
    accept: &(impl Fn(u32, usize) -> bool + ?Sized),
    tops: &mut [TopM],
) {
    for ((query, top), raw) in queries.iter().zip(tops.iter_mut()).zip(raw) {
        let mut scores = [0.0f32; 64];
        let scores = &mut scores[..n];
        let mut threshold = top.threshold();
        // Once the top-M fills, most blocks hold no row that beats it: one vectorised pass
        // settles them. Rows not scanned hold NaN, which never passes.
        let block = block::RawBlock {
            raw: &raw[..n],
            query_scale: E::query_scale(query),
            scales,
        };
        if !block::scores_reaching(&block, threshold, scores) {
            continue;
        }
        for (i, &score) in scores.iter().enumerate() {
            let row = row_of(i);
            if score >= threshold && accept(source, row) {
                top.push(Candidate {
                    score,
                    source,
                    row: row as u32,
                    depth: 0.0,
                });
                threshold = top.threshold();
            }
        }
    }
}

/// Scores the rows `listed` (ascending) of one column against every query, as
/// [`scan_rows`] does for a range: 64 rows at a time are copied into a block (the probed rows
/// of a partition are scattered through the file) and scored with one kernel call.
fn scan_listed<E: Element>(
    rows: &Rows<'_, E>,
    skip: &[u64],
    listed: &[u32],
    source: u32,
    queries: &[&QueryVec],
    accept: &(impl Fn(u32, usize) -> bool + ?Sized),
    tops: &mut [TopM],
) {
    let mut raw = vec![[0.0f64; 64]; queries.len()];
    let mut tile = E::tile(queries, rows.dim);
    let mut elems = vec![E::zeroed(); 64 * rows.stride];
    let mut scales = [0f32; 64];
    for chunk in listed.chunks(64) {
        let mut live = 0u64;
        for (i, &row) in chunk.iter().enumerate() {
            let row = row as usize;
            if is_skipped(skip, row) {
                continue;
            }
            live |= 1 << i;
            let at = row * rows.stride;
            elems[i * rows.stride..(i + 1) * rows.stride]
                .copy_from_slice(&rows.elems[at..at + rows.stride]);
            if let Some(s) = rows.scales {
                scales[i] = s[row];
            }
        }
        if live == 0 {
            continue;
        }
        let block = Rows {
            elems: &elems,
            stride: rows.stride,
            dim: rows.dim,
            scales: rows.scales.map(|_| &scales[..]),
        };
        let n = chunk.len();
        tile.raw_blocks(&block, 0, n, live, &mut raw);
        let scales = rows.scales.map(|_| &scales[..n]);
        let row_of = |i: usize| chunk[i] as usize;
        offer::<E>(&raw, n, scales, row_of, source, queries, accept, tops);
    }
}

fn is_skipped(skip: &[u64], row: usize) -> bool {
    skip.get(row / 64).is_some_and(|w| w >> (row % 64) & 1 == 1)
}

/// Scores rows `range` of one column against every query, feeding each query's top-M.
///
/// Rows go in blocks of 64, one bitmap word: a fully deleted block costs one compare. Per
/// block, the element type's [`TileScorer`] fills 64 raw dot products per query while the
/// block's rows stay in L1, then per query the scales and the threshold filter run over them.
fn scan_rows<E: Element>(
    rows: &Rows<'_, E>,
    skip: &[u64],
    range: Range<usize>,
    source: u32,
    queries: &[&QueryVec],
    accept: &(impl Fn(u32, usize) -> bool + ?Sized),
    tops: &mut [TopM],
) {
    let mut raw = vec![[0.0f64; 64]; queries.len()];
    let mut tile = E::tile(queries, rows.dim);
    let mut start = range.start;
    while start < range.end {
        let word = start / 64;
        let base = word * 64;
        let end = (base + 64).min(range.end);
        let live = !skip.get(word).copied().unwrap_or(0) & bit_range(start - base, end - base);
        if live != 0 {
            tile.raw_blocks(rows, base, end, live, &mut raw);
            let scales = rows.scales.map(|s| &s[base..end]);
            let row_of = |i: usize| base + i;
            offer::<E>(
                &raw,
                end - base,
                scales,
                row_of,
                source,
                queries,
                accept,
                tops,
            );
        }
        start = end;
    }
}

/// Bits `from..to` of a word (`to <= 64`).
#[inline(always)]
fn bit_range(from: usize, to: usize) -> u64 {
    let upper = if to >= 64 { u64::MAX } else { (1u64 << to) - 1 };
    upper & !((1u64 << from) - 1)
}

/// What one parallel task of [`top_m`] scans of a part: a range of its rows, or one of its
/// probed partitions.
#[derive(Clone)]
enum Task {
    Range(Range<usize>),
    Listed(usize),
}

fn scan_part(
    part: &Part<'_>,
    task: Task,
    source: u32,
    queries: &[&QueryVec],
    accept: &(impl Fn(u32, usize) -> bool + ?Sized),
    tops: &mut [TopM],
) {
    /// `scan_rows` or `scan_listed` for the element type `E` the column holds.
    fn typed<E: Element>(
        part: &Part<'_>,
        task: Task,
        source: u32,
        queries: &[&QueryVec],
        accept: &(impl Fn(u32, usize) -> bool + ?Sized),
        tops: &mut [TopM],
    ) {
        let rows = Rows::<E>::of(&part.column);
        match task {
            Task::Range(range) => {
                scan_rows(&rows, part.skip, range, source, queries, accept, tops);
            }
            Task::Listed(i) => match part.listed.map(|l| &l[i]) {
                Some(PartitionRows::Range(range)) => {
                    let range = range.clone();
                    scan_rows(&rows, part.skip, range, source, queries, accept, tops);
                }
                Some(PartitionRows::Listed(listed)) => {
                    scan_listed(&rows, part.skip, listed, source, queries, accept, tops);
                }
                None => {}
            },
        }
    }
    match part.column.elem() {
        ElemType::F32 => typed::<f32>(part, task, source, queries, accept, tops),
        ElemType::F16 => typed::<half::f16>(part, task, source, queries, accept, tops),
        ElemType::I8 => typed::<i8>(part, task, source, queries, accept, tops),
    }
}

/// The best `m` rows of all `parts` for each query, best first. With `parallel`, over parts
/// and blocks of rows on the current rayon pool, else on the calling thread; the result does
/// not depend on the number of threads.
///
/// `accept(part, row)` is asked only about rows that would enter a top-M (the filter hook).
pub(crate) fn top_m(
    parts: &[Part<'_>],
    queries: &[&QueryVec],
    m: usize,
    accept: &(impl Fn(u32, usize) -> bool + Sync + ?Sized),
    parallel: bool,
) -> Vec<Vec<Candidate>> {
    let mut tasks: Vec<(u32, Task)> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let source = i as u32;
        match part.listed {
            Some(listed) => tasks.extend((0..listed.len()).map(|p| (source, Task::Listed(p)))),
            None => {
                let rows = part.column.len();
                tasks.extend(
                    (0..rows)
                        .step_by(TASK_ROWS)
                        .map(|start| (source, Task::Range(start..(start + TASK_ROWS).min(rows)))),
                );
            }
        }
    }
    let fresh = || vec![TopM::new(m); queries.len()];
    let scan = |mut tops: Vec<TopM>, (source, task): (u32, Task)| {
        let part = &parts[source as usize];
        scan_part(part, task, source, queries, accept, &mut tops);
        tops
    };
    let tops = if parallel {
        tasks
            .into_par_iter()
            .fold(fresh, scan)
            .reduce(fresh, |a, b| {
                a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect()
            })
    } else {
        tasks.into_iter().fold(fresh(), scan)
    };
    tops.into_iter().map(TopM::into_sorted).collect()
}

/// The best `m` rows of one column for one query, `(row, score)` best first, on the calling
/// thread with the chosen kernels: the coarse stage of a search without a database around it,
/// for `benches/src/bin/scan-bandwidth.rs` to time against the memory bandwidth.
pub fn top_rows(
    column: &VectorColumn<'_>,
    query: &[f32],
    m: usize,
    kernels: Kernels,
) -> Vec<(u32, f32)> {
    let parts = [Part {
        column: *column,
        skip: &[],
        listed: None,
    }];
    let query = QueryVec::with_kernels(query, kernels);
    top_m(&parts, &[&query], m, &|_, _| true, false)
        .swap_remove(0)
        .into_iter()
        .map(|c| (c.row, c.score))
        .collect()
}

/// Exact scores of chosen rows of one column (the re-rank). `rows` should be ascending so the
/// reads go forward through the file.
pub(crate) fn score_rows(column: &VectorColumn<'_>, query: &QueryVec, rows: &[usize]) -> Vec<f32> {
    fn typed<E: Element>(column: &VectorColumn<'_>, query: &QueryVec, rows: &[usize]) -> Vec<f32> {
        let typed = Rows::<E>::of(column);
        rows.iter().map(|&r| typed.score(query, r)).collect()
    }
    match column.elem() {
        ElemType::F32 => typed::<f32>(column, query, rows),
        ElemType::F16 => typed::<half::f16>(column, query, rows),
        ElemType::I8 => typed::<i8>(column, query, rows),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    /// A column of `rows` vectors in `elem`, stored the way storage stores them, with the
    /// `f32` values they decode to.
    struct Owned {
        bytes: Vec<u64>,
        scales: Option<Vec<f32>>,
        elem: ElemType,
        dim: usize,
        decoded: Vec<f32>,
    }

    impl Owned {
        fn new(elem: ElemType, rows: usize, dim: usize, seed: u64) -> Self {
            let raw = values(rows * dim, seed);
            let mut bytes: Vec<u8> = Vec::new();
            let mut decoded = Vec::new();
            let mut scales = Vec::new();
            for row in raw.chunks(dim) {
                match elem {
                    ElemType::F32 => {
                        bytes.extend(row.iter().flat_map(|v| v.to_le_bytes()));
                        decoded.extend_from_slice(row);
                    }
                    ElemType::F16 => {
                        for v in row {
                            let h = half::f16::from_f32(*v);
                            bytes.extend(h.to_le_bytes());
                            decoded.push(h.to_f32());
                        }
                    }
                    ElemType::I8 => {
                        let q = QueryVec::new(row);
                        bytes.extend(q.i8.iter().map(|&v| v as u8));
                        decoded.extend(q.i8.iter().map(|&v| v as f32 * q.i8_scale));
                        scales.push(q.i8_scale);
                    }
                }
            }
            let mut words = vec![0u64; bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
            words.truncate(bytes.len() / 8);
            Self {
                bytes: words,
                scales: (elem == ElemType::I8).then_some(scales),
                elem,
                dim,
                decoded,
            }
        }

        fn column(&self) -> VectorColumn<'_> {
            let bytes: &[u8] = bytemuck::cast_slice(&self.bytes);
            VectorColumn::new(
                self.elem,
                self.dim,
                self.dim * self.elem.size(),
                bytes,
                self.scales.as_deref(),
            )
            .expect("consistent test column")
        }
    }

    fn brute_force(owned: &Owned, query: &[f32], skip: &[u64], m: usize) -> Vec<u32> {
        let mut scored: Vec<(f32, u32)> = owned
            .decoded
            .chunks(owned.dim)
            .enumerate()
            .filter(|(r, _)| skip.get(r / 64).is_none_or(|w| w & (1 << (r % 64)) == 0))
            .map(|(r, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum(), r as u32))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(m).map(|(_, r)| r).collect()
    }

    #[test]
    fn every_element_type_finds_the_brute_force_top_m() {
        let (rows, dim, m) = (20_000usize, 64, 50);
        let mut skip = vec![0u64; rows.div_ceil(64)];
        skip[3] = u64::MAX; // a fully deleted word
        skip[10] = 0b1011; // a partly deleted one
        for elem in [ElemType::F32, ElemType::F16, ElemType::I8] {
            let owned = Owned::new(elem, rows, dim, 7);
            let query = values(dim, 99);
            let parts = [Part {
                column: owned.column(),
                skip: &skip,
                listed: None,
            }];
            let found = top_m(&parts, &[&QueryVec::new(&query)], m, &|_, _| true, true);
            let rows_found: Vec<u32> = found[0].iter().map(|c| c.row).collect();
            let expected = brute_force(&owned, &query, &skip, m);
            // Quantising the query to i8 perturbs scores slightly: compare as sets, mostly.
            let common = rows_found.iter().filter(|r| expected.contains(r)).count();
            let needed = if elem == ElemType::I8 { m * 9 / 10 } else { m };
            assert!(common >= needed, "{elem:?}: {common} of {m} rows agree");
            assert!(
                rows_found
                    .iter()
                    .all(|r| skip[*r as usize / 64] & (1 << (r % 64)) == 0)
            );
        }
    }

    #[test]
    fn batch_equals_single_queries_and_filter_applies() {
        let owned = Owned::new(ElemType::I8, 10_000, 64, 3);
        let parts = [
            Part {
                column: owned.column(),
                skip: &[],
                listed: None,
            },
            Part {
                column: owned.column(),
                skip: &[u64::MAX; 10],
                listed: None,
            },
        ];
        let queries: Vec<QueryVec> = (0..5).map(|s| QueryVec::new(&values(64, s))).collect();
        let refs: Vec<&QueryVec> = queries.iter().collect();
        let odd_rows = |_: u32, row: usize| row % 2 == 1;
        let batch = top_m(&parts, &refs, 20, &odd_rows, true);
        for (query, expected) in refs.iter().zip(&batch) {
            let single = top_m(&parts, &[query], 20, &odd_rows, false);
            assert_eq!(&single[0], expected);
            assert!(
                expected
                    .iter()
                    .all(|c| c.row % 2 == 1 && (c.source == 0 || c.row >= 640))
            );
        }
    }

    #[test]
    fn result_is_independent_of_thread_count() {
        let owned = Owned::new(ElemType::F16, 50_000, 64, 11);
        let parts = [Part {
            column: owned.column(),
            skip: &[],
            listed: None,
        }];
        let query = QueryVec::new(&values(64, 5));
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool")
                .install(|| top_m(&parts, &[&query], 100, &|_, _| true, threads > 1))
        };
        assert_eq!(run(1), run(2));
    }

    /// An inner-product query may hold values beyond ±65504: its `f16` copy is scaled down
    /// instead of holding infinities, and the scores scaled back.
    #[test]
    fn f16_rows_score_queries_beyond_the_f16_range() {
        let owned = Owned::new(ElemType::F16, 10, 64, 4);
        let query: Vec<f32> = values(64, 8).iter().map(|v| v * 1e9).collect();
        let scores = score_rows(&owned.column(), &QueryVec::new(&query), &[0, 9]);
        for (score, row) in scores.iter().zip([0, 9]) {
            let expected: f32 = owned.decoded[row * 64..(row + 1) * 64]
                .iter()
                .zip(&query)
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                (score - expected).abs() <= 1e-2 * expected.abs(),
                "{score} vs {expected}"
            );
        }
    }

    /// Dims covering every tail length of every register width, and long rows.
    fn kernel_dims() -> impl Iterator<Item = usize> {
        (1..=70).chain([128, 256, 300])
    }

    /// Checks `raw_block` with the block kernels and with the portable ones against a scalar
    /// `f64` reference, for blocks of 1..=64 rows at a nonzero base, full and random live
    /// masks, with rows padded to 64 bytes with NaN (floats) or -1 (`i8`) so a read past `dim`
    /// shows, and packed back to back as coarse files store them (where 16- and 32-byte `i8`
    /// rows share registers). `tolerance` is relative to the sum of the products' magnitudes;
    /// 0 means exact.
    fn check_block_kernel<E: Element>(
        padding: E,
        element: impl Fn(f32) -> E,
        wide: impl Fn(&QueryVec, usize) -> f64,
        narrow: impl Fn(E) -> f64,
        tolerance: f64,
    ) {
        let layouts = |dim| {
            [
                hivlp_storage::padded_stride(E::TYPE, dim),
                hivlp_storage::packed_stride(E::TYPE, dim),
            ]
            .map(|stride| (dim, stride / E::TYPE.size()))
        };
        for (dim, stride) in kernel_dims().flat_map(layouts) {
            let rows = 128;
            let raw = values(rows * dim, dim as u64);
            let mut elems = vec![padding; rows * stride];
            for (row, raw) in elems.chunks_exact_mut(stride).zip(raw.chunks_exact(dim)) {
                for (e, &v) in row.iter_mut().zip(raw) {
                    *e = element(v);
                }
                // Extremes: the largest `i8` products must stay exact.
                row[0] = element(-1.0);
            }
            let query_values = values(dim, 1000 + dim as u64);
            let queries = [Kernels::Detected, Kernels::Avx2, Kernels::Portable]
                .map(|kernels| QueryVec::with_kernels(&query_values, kernels));
            let masks = values(64, dim as u64 + 7);
            for n in 1..=64 {
                let base = 64;
                let random = masks
                    .iter()
                    .enumerate()
                    .fold(0u64, |m, (i, v)| m | (u64::from(*v > 0.0) << i));
                // The column ends at the block's last row, so a read past it shows (the
                // kernels' debug checks, or a fault).
                let block = Rows {
                    elems: &elems[..(base + n) * stride],
                    stride,
                    dim,
                    scales: None,
                };
                for live in [bit_range(0, n), random & bit_range(0, n)] {
                    for query in &queries {
                        let mut out = [0.0f64; 64];
                        block.raw_block(query, base, base + n, live, &mut out);
                        for (i, &got) in out[..n].iter().enumerate() {
                            if live & (1 << i) == 0 {
                                assert!(
                                    got.is_nan(),
                                    "dim {dim} stride {stride}, n {n}, dead row {i}: {got}"
                                );
                                continue;
                            }
                            let row = &elems[(base + i) * stride..][..dim];
                            let products = row
                                .iter()
                                .enumerate()
                                .map(|(j, &e)| wide(query, j) * narrow(e));
                            let expected: f64 = products.clone().sum();
                            let magnitude: f64 = products.map(f64::abs).sum();
                            assert!(
                                (got - expected).abs() <= tolerance * magnitude,
                                "{:?} dim {dim} stride {stride}, n {n}, row {i}: {got} vs {expected}",
                                E::TYPE
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn i8_block_kernel_equals_the_scalar_dot_product() {
        check_block_kernel(
            -1i8,
            |v| if v <= -1.0 { -128 } else { (v * 127.0) as i8 },
            |q, j| f64::from(q.i8[j]),
            f64::from,
            0.0,
        );
    }

    #[test]
    fn f16_block_kernel_matches_the_scalar_dot_product() {
        check_block_kernel(
            half::f16::NAN,
            half::f16::from_f32,
            |q, j| f64::from(q.f16[j].to_f32()),
            |e| f64::from(e.to_f32()),
            1e-5,
        );
    }

    #[test]
    fn f32_block_kernel_matches_the_scalar_dot_product() {
        check_block_kernel(f32::NAN, |v| v, |q, j| f64::from(q.f32[j]), f64::from, 1e-5);
    }

    #[test]
    fn block_and_portable_kernels_rank_alike() {
        let m = 30;
        for elem in [ElemType::F32, ElemType::F16, ElemType::I8] {
            for dim in [16, 37, 64] {
                let owned = Owned::new(elem, 3000, dim, dim as u64);
                let mut skip = vec![0u64; 3000usize.div_ceil(64)];
                skip[2] = 0x00ff_00ff_00ff_00ff;
                let parts = [Part {
                    column: owned.column(),
                    skip: &skip,
                    listed: None,
                }];
                let query = values(dim, 77);
                let [detected, avx2, portable] =
                    [Kernels::Detected, Kernels::Avx2, Kernels::Portable].map(|kernels| {
                        let query = QueryVec::with_kernels(&query, kernels);
                        top_m(&parts, &[&query], m, &|_, _| true, false).swap_remove(0)
                    });
                let rows = |found: &[Candidate]| found.iter().map(|c| c.row).collect::<Vec<_>>();
                assert_eq!(rows(&detected), rows(&portable), "{elem:?}, dim {dim}");
                assert_eq!(rows(&avx2), rows(&portable), "{elem:?}, dim {dim}");
                for (b, p) in detected.iter().chain(&avx2).zip(portable.iter().cycle()) {
                    let exact = elem == ElemType::I8;
                    assert!(
                        if exact {
                            b.score == p.score
                        } else {
                            (b.score - p.score).abs() <= 1e-5 * p.score.abs().max(1.0)
                        },
                        "{elem:?}, dim {dim}: {} vs {}",
                        b.score,
                        p.score
                    );
                }
            }
        }
    }

    #[test]
    fn score_rows_matches_decoded_values() {
        let owned = Owned::new(ElemType::F32, 100, 512, 1);
        let query = values(512, 2);
        let scores = score_rows(&owned.column(), &QueryVec::new(&query), &[0, 5, 99]);
        for (score, row) in scores.iter().zip([0, 5, 99]) {
            let expected: f32 = owned.decoded[row * 512..(row + 1) * 512]
                .iter()
                .zip(&query)
                .map(|(a, b)| a * b)
                .sum();
            assert!((score - expected).abs() < 1e-3);
        }
    }
}
