//! How close the single-query coarse scan comes to memory bandwidth: for each element type and
//! coarse dimension, the scan of one column of random rows on one thread, with the block kernels
//! and with the portable `simsimd` fallback, against a streaming read of the same bytes measured
//! in the same run. Rows are laid out as coarse files store them now (packed, `dim × element
//! size` bytes) and, where that differs, as databases written before packing store them (each
//! row padded to 64 bytes).
//! See benches/README.md, section "Coarse scan bandwidth".
//!
//! ```sh
//! cargo run --release -p hivlp-benches --bin scan-bandwidth
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::Parser;
use hivlp::ElemType;
use hivlp::coarse_scan::{Kernels, top_rows};
use hivlp_benches::search::percentile;
use hivlp_storage::{VectorColumn, encode_row, packed_stride, padded_stride};

#[derive(Parser)]
struct Args {
    /// Rows of every column but the issue's 16-d `i8` case.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Rows of the extra 16-d `i8` case (issue 10's 400k-row word-embedding set).
    #[arg(long, default_value_t = 400_000)]
    small_rows: usize,
    /// Queries timed per kernel and case (the median is reported).
    #[arg(long, default_value_t = 21)]
    queries: usize,
    /// Streaming reads of the buffer per case (the best is the bandwidth).
    #[arg(long, default_value_t = 5)]
    reads: usize,
    /// Candidates kept (the search's M).
    #[arg(long, default_value_t = 200)]
    candidates: usize,
    /// Only these coarse dimensions (e.g. `--dims 16`); every one of 16, 32 and 64 if absent.
    #[arg(long, value_delimiter = ',')]
    dims: Vec<usize>,
    /// Only these element types (`i8`, `f16`, `f32`); all three if absent.
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A column's storage: row bytes (`u64` words, so every element type is aligned) and scales.
struct Column {
    words: Vec<u64>,
    scales: Option<Vec<f32>>,
    elem: ElemType,
    dim: usize,
    rows: usize,
    stride: usize,
}

impl Column {
    fn random(elem: ElemType, rows: usize, dim: usize, stride: usize) -> Self {
        let mut words = vec![0u64; (rows * stride).div_ceil(8)];
        let mut scales = Vec::with_capacity(rows);
        let row_bytes = dim * elem.size();
        for (r, row) in bytemuck::cast_slice_mut::<u64, u8>(&mut words)
            .chunks_exact_mut(stride)
            .enumerate()
        {
            scales.push(encode_row(
                elem,
                &values(dim, r as u64 + 1),
                &mut row[..row_bytes],
            ));
        }
        Self {
            words,
            scales: (elem == ElemType::I8).then_some(scales),
            elem,
            dim,
            rows,
            stride,
        }
    }

    fn view(&self) -> VectorColumn<'_> {
        VectorColumn::new(
            self.elem,
            self.dim,
            self.stride,
            &bytemuck::cast_slice(&self.words)[..self.rows * self.stride],
            self.scales.as_deref(),
        )
        .expect("a consistent column")
    }
}

/// The best time of `reads` streaming reads of `words` (eight independent sums, so the loop
/// is bound by loads, not by the adds).
fn best_read(words: &[u64], reads: usize) -> Duration {
    (0..reads)
        .map(|_| {
            let start = Instant::now();
            let mut sums = [0u64; 8];
            for chunk in black_box(words).chunks_exact(8) {
                for (sum, &w) in sums.iter_mut().zip(chunk) {
                    *sum = sum.wrapping_add(w);
                }
            }
            black_box(sums);
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let args = Args::parse();
    let vnni = Kernels::Detected.use_vnni();
    let mut cases: Vec<(ElemType, usize, usize)> = Vec::new();
    for (elem, name) in [
        (ElemType::I8, "i8"),
        (ElemType::F16, "f16"),
        (ElemType::F32, "f32"),
    ] {
        if !args.types.is_empty() && !args.types.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            continue;
        }
        for dim in [16, 32, 64] {
            if args.dims.is_empty() || args.dims.contains(&dim) {
                cases.push((elem, dim, args.rows));
            }
        }
    }
    if args.small_rows > 0 && cases.contains(&(ElemType::I8, 16, args.rows)) {
        cases.push((ElemType::I8, 16, args.small_rows));
    }
    println!(
        "| rows | type | dim | layout | row bytes (stored) | read GB/s | kernel | ms/query | \
         GB/s streamed | GB/s useful | % of read | speed-up |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let layouts = cases.into_iter().flat_map(|(elem, dim, rows)| {
        let packed = packed_stride(elem, dim);
        let padded = padded_stride(elem, dim);
        let mut layouts = vec![(elem, dim, rows, "packed", packed)];
        if padded != packed {
            layouts.push((elem, dim, rows, "padded", padded));
        }
        layouts
    });
    for (elem, dim, rows, layout, stride) in layouts {
        let column = Column::random(elem, rows, dim, stride);
        let view = column.view();
        let read = best_read(&column.words, args.reads);
        let streamed = (rows * column.stride) as f64;
        let useful = (rows * dim * elem.size()) as f64;
        let queries: Vec<Vec<f32>> = (0..args.queries)
            .map(|q| values(dim, 1_000_000 + q as u64))
            .collect();
        // Kernels alternate query by query, so drifting load on the machine hits both alike.
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        let kernels = [Kernels::Detected, Kernels::Avx2, Kernels::Portable];
        black_box(top_rows(
            &view,
            &queries[0],
            args.candidates,
            Kernels::Detected,
        ));
        for query in &queries {
            for (kernels, times) in kernels.iter().zip(&mut times) {
                let start = Instant::now();
                black_box(top_rows(&view, query, args.candidates, *kernels));
                times.push(start.elapsed());
            }
        }
        let medians = times.map(|mut t| percentile(&mut t, 50.0).as_secs_f64());
        let read_gbs = streamed / read.as_secs_f64() / 1e9;
        // Detected is the AVX2 kernel but for `i8` rows on a CPU with AVX-512 VNNI.
        let shown: &[(&str, usize)] = if elem == ElemType::I8 && vnni {
            &[
                ("AVX-512 VNNI", 0),
                ("AVX2 block", 1),
                ("simsimd per row", 2),
            ]
        } else {
            &[("AVX2 block", 1), ("simsimd per row", 2)]
        };
        for &(name, kernel) in shown {
            let median = medians[kernel];
            let gbs = streamed / median / 1e9;
            println!(
                "| {rows} | {elem:?} | {dim} | {layout} | {} ({}) | {read_gbs:.1} | {name} | {:.3} | \
                 {gbs:.1} | \
                 {:.1} | {:.0}% | {:.2}× |",
                dim * elem.size(),
                column.stride,
                median * 1e3,
                useful / median / 1e9,
                100.0 * gbs / read_gbs,
                medians[2] / median,
            );
        }
    }
}
