//! Helpers of the search benchmarks: synthetic databases, a memory-bandwidth probe, and
//! latency statistics.

use std::path::Path;
use std::time::{Duration, Instant};

use hivlp::synthetic::Clustered;
use hivlp::{Database, Durability, ElemType, Embedding, Item, Metric, Options, Query, Schema};
use rayon::prelude::*;

pub const FINE_DIM: usize = 512;
pub const COARSE_DIM: usize = 64;
/// Item stream and query stream of the generator.
const ITEMS: u64 = 0;
const QUERIES: u64 = 1;

/// The synthetic data set of the recall test and the benchmarks: 1,000 clusters, spread 1.1
/// (two-stage recall@10 at M = 100/200/500 of about 0.99/0.993/0.999 at 100k rows, like the
/// reference prototype's data).
pub fn generator() -> Clustered {
    Clustered::new(FINE_DIM, COARSE_DIM, 1000, 1.1, 42)
}

pub fn schema(coarse_type: ElemType) -> Schema {
    Schema {
        fine_dim: FINE_DIM,
        coarse_dim: COARSE_DIM,
        fine_type: ElemType::F32,
        coarse_type,
        metric: Metric::Cosine,
    }
}

pub fn parse_elem(name: &str) -> Option<ElemType> {
    name.to_ascii_lowercase().parse().ok()
}

/// Creates a database of `rows` synthetic items (ids `0..rows`, image vectors with their
/// coarse prefix) at `path`, flushed to segments.
pub fn build(
    path: &Path,
    coarse_type: ElemType,
    rows: u64,
    threads: usize,
) -> hivlp::Result<Database> {
    let generator = generator();
    let db = Database::create(
        path,
        schema(coarse_type),
        Options {
            durability: Durability::Buffered,
            memtable_rows: 250_000,
            threads: Some(threads),
            ..Options::default()
        },
    )?;
    const BATCH: u64 = 10_000;
    for start in (0..rows).step_by(BATCH as usize) {
        let end = (start + BATCH).min(rows);
        let items = generator
            .pairs(ITEMS, start..end)
            .into_iter()
            .zip(start..end)
            .map(|(p, id)| Item {
                id: Some(id),
                image: Some(Embedding {
                    fine: p.fine,
                    coarse: Some(p.coarse),
                }),
                ..Item::default()
            })
            .collect();
        db.insert(items)?;
    }
    db.flush()?;
    Ok(db)
}

/// `n` query vectors (fine and coarse) from the query stream.
pub fn queries(n: usize) -> Vec<Query> {
    generator()
        .pairs(QUERIES, 0..n as u64)
        .into_iter()
        .map(|p| Query {
            fine: p.fine,
            coarse: Some(p.coarse),
        })
        .collect()
}

/// Memory read bandwidth in GB/s with `threads` threads: the best of five sums of a buffer of
/// `bytes` (which should be far larger than the caches).
pub fn read_bandwidth(buffer: &[u64], threads: usize) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let chunk = buffer.len().div_ceil(threads);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let sum: u64 = pool.install(|| {
            buffer
                .par_chunks(chunk)
                .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
                .reduce(|| 0, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        best = best.min(started.elapsed());
    }
    std::mem::size_of_val(buffer) as f64 / best.as_secs_f64() / 1e9
}

/// A buffer for [`read_bandwidth`], written so every page is resident.
pub fn bandwidth_buffer(bytes: usize) -> Vec<u64> {
    (0..bytes / 8).map(|i| i as u64).collect()
}

/// The `p`-th percentile (0–100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Bytes a two-stage query reads: every coarse row (plus its i8 scale) and `m` fine rows.
pub fn bytes_per_query(rows: u64, coarse_type: ElemType, m: usize) -> u64 {
    let coarse_row =
        (COARSE_DIM * coarse_type.size()) as u64 + if coarse_type == ElemType::I8 { 4 } else { 0 };
    rows * coarse_row + (m * FINE_DIM * 4) as u64
}

/// Resident memory of this process, in bytes (Linux `/proc/self/status`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// Peak resident set size (`VmHWM`).
    pub peak: u64,
    /// Resident pages mapped from files (`RssFile`): page cache, shared and reclaimable.
    pub file: u64,
    /// Private resident memory (`RssAnon`): heap and stacks.
    pub anon: u64,
}

pub fn rss() -> Option<Rss> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(Rss {
        peak: field("VmHWM:")?,
        file: field("RssFile:")?,
        anon: field("RssAnon:")?,
    })
}

/// Total bytes of the database's files whose names end with `suffix` (e.g. ".coarse").
pub fn file_bytes(dir: &Path, suffix: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
