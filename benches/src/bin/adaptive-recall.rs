//! Recall@10 and latency of the default search (candidates chosen per query) against a fixed
//! M, on clustered and unclustered synthetic data whose coarse vectors the database derives
//! (PCA after `projection_fit_rows`), with the estimated recall the search reports, batch
//! throughput, the bytes per row of each file kind and the resident memory of the searches.
//! With `--dir` the database is kept, and a later run over the same directory opens it instead
//! of building it (a fresh query process: its resident memory is what searches touch).
//!
//! ```sh
//! cargo run --release -p hivlp-benches --bin adaptive-recall -- --rows 100000 --data clustered
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use hivlp::synthetic::{Clustered, Pair, Unclustered, recall};
use hivlp::{
    Database, Durability, ElemType, Embedding, Hit, Item, Metric, Options, Query, Schema,
    SearchParams,
};
use hivlp_benches::search::{percentile, rss};

#[derive(Parser)]
struct Args {
    /// Rows of the database.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// `clustered` (`hivlp::synthetic::Clustered`: 1,000 clusters, spread 0.6, decaying
    /// spectrum), `isotropic-clusters` (1,000 unit-norm centres, isotropic noise of norm 0.6:
    /// the data set of issue 10) or `unclustered` (isotropic Gaussian).
    #[arg(long, default_value = "clustered")]
    data: String,
    #[arg(long, default_value_t = 512)]
    fine: usize,
    #[arg(long, default_value_t = 64)]
    coarse: usize,
    /// Queries timed and scored.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The fixed M compared with the default.
    #[arg(long, default_value_t = 200)]
    candidates: usize,
    /// Share of each partitioned segment's rows the fixed-M run reads (default: all of them).
    #[arg(long)]
    probe: Option<f64>,
    /// Where to build the database (a temporary directory if not given).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Rows of a memtable, so of each flushed segment.
    #[arg(long, default_value_t = 250_000)]
    memtable_rows: usize,
    /// `Options::partition_min_rows` of the build (default: the database's default).
    #[arg(long)]
    partition_min_rows: Option<usize>,
    /// Build without background compaction: the segments stay as flushed.
    #[arg(long)]
    no_compaction: bool,
    /// Merge every segment into one (`Database::compact`) before the searches, reporting how
    /// long it took; a database kept with `--dir` stays merged for later runs. Pass
    /// `--partition-min-rows` with it: the threshold is an open option, not stored, so without
    /// it the merged segment is written flat.
    #[arg(long)]
    compact: bool,
}

/// The data set's item (stream 0) and query (stream 1) vectors.
fn generate(args: &Args, stream: u64, range: std::ops::Range<u64>) -> Vec<Pair> {
    match args.data.as_str() {
        "clustered" => Clustered::new(args.fine, args.coarse, 1000, 0.6, 42).pairs(stream, range),
        "isotropic-clusters" => isotropic_clusters(args.fine, stream, range),
        _ => Unclustered::new(args.fine, args.coarse, f32::INFINITY, 42).pairs(stream, range),
    }
}

/// 1,000 unit-norm Gaussian centres; each item is a centre plus isotropic Gaussian noise of
/// expected norm 0.6, normalised (the coarse vector is left to the database).
fn isotropic_clusters(dim: usize, stream: u64, range: std::ops::Range<u64>) -> Vec<Pair> {
    // The unclustered generator's isotropic draws serve as centres (stream 7) and noise.
    let centres = Unclustered::new(dim, dim, f32::INFINITY, 7).pairs(7, 0..1000);
    let noise = Unclustered::new(dim, dim, f32::INFINITY, 8);
    range
        .map(|i| {
            let centre = &centres[(i.wrapping_mul(0x9E37_79B9) ^ stream) as usize % 1000].fine;
            let n = noise.pair(stream, i).fine;
            let mut fine: Vec<f32> = centre.iter().zip(&n).map(|(c, e)| c + 0.6 * e).collect();
            let norm = fine.iter().map(|x| x * x).sum::<f32>().sqrt();
            fine.iter_mut().for_each(|x| *x /= norm);
            Pair {
                coarse: Vec::new(),
                fine,
            }
        })
        .collect()
}

fn build(args: &Args, path: &Path) -> hivlp::Result<Database> {
    let db = Database::create(
        path,
        Schema {
            fine_dim: args.fine,
            coarse_dim: args.coarse,
            fine_type: ElemType::F32,
            coarse_type: ElemType::I8,
            metric: Metric::Cosine,
        },
        Options {
            durability: Durability::Buffered,
            memtable_rows: args.memtable_rows,
            threads: Some(args.threads),
            auto_compaction: !args.no_compaction,
            partition_min_rows: args
                .partition_min_rows
                .unwrap_or(Options::default().partition_min_rows),
            ..Options::default()
        },
    )?;
    const BATCH: u64 = 10_000;
    for start in (0..args.rows).step_by(BATCH as usize) {
        let end = (start + BATCH).min(args.rows);
        let items = generate(args, 0, start..end)
            .into_iter()
            .zip(start..end)
            .map(|(p, id)| Item {
                id: Some(id),
                image: Some(Embedding {
                    fine: p.fine,
                    coarse: None,
                }),
                ..Item::default()
            })
            .collect();
        db.insert(items)?;
    }
    db.flush()?;
    Ok(db)
}

fn ids(hits: &[Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

/// Bytes per row of each kind of file in the database directory (grouped by extension, or by
/// name without its number where there is none), largest first.
fn bytes_per_row(path: &Path, rows: u64) -> Vec<(String, f64)> {
    let mut kinds: Vec<(String, u64)> = Vec::new();
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = match name.rsplit_once('.') {
            Some((_, ext)) => ext.to_owned(),
            None => name
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                .to_owned(),
        };
        let bytes = entry.metadata().map_or(0, |m| m.len());
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, total)) => *total += bytes,
            None => kinds.push((kind, bytes)),
        }
    }
    kinds.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    kinds
        .into_iter()
        .map(|(kind, bytes)| (kind, bytes as f64 / rows.max(1) as f64))
        .collect()
}

/// One setting's searches: single queries timed one by one, then the batch.
struct Run {
    candidates: Option<usize>,
    hits: Vec<Vec<Hit>>,
    times: Vec<Duration>,
    timings: Vec<hivlp::SearchTiming>,
    batch_qps: f64,
}

fn run(
    db: &Database,
    queries: &[Query],
    candidates: Option<usize>,
    probe: Option<f64>,
) -> hivlp::Result<Run> {
    let params = SearchParams {
        candidates,
        probe,
        ..SearchParams::default()
    };
    for q in &queries[..10.min(queries.len())] {
        db.search(q, &params)?;
    }
    let (mut hits, mut times, mut timings) = (Vec::new(), Vec::new(), Vec::new());
    for q in queries {
        let started = Instant::now();
        let (found, timing) = db.search_with_timing(q, &params)?;
        times.push(started.elapsed());
        hits.push(found);
        timings.push(timing);
    }
    let started = Instant::now();
    let batch = db.search_batch(queries, &params)?;
    let batch_qps = batch.len() as f64 / started.elapsed().as_secs_f64();
    Ok(Run {
        candidates,
        hits,
        times,
        timings,
        batch_qps,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let path = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf())
        .join("db");
    let started = Instant::now();
    let opened = path.exists();
    let db = if opened {
        Database::open(
            &path,
            Options {
                read_only: !args.compact,
                threads: Some(args.threads),
                partition_min_rows: args
                    .partition_min_rows
                    .unwrap_or(Options::default().partition_min_rows),
                ..Options::default()
            },
        )?
    } else {
        build(&args, &path)?
    };
    if args.compact {
        let started = Instant::now();
        let report = db.compact()?;
        eprintln!(
            "compacted {} segments into {} in {:.1} s",
            report.segments_merged,
            report.segments_written,
            started.elapsed().as_secs_f64()
        );
    }
    let ready = started.elapsed();
    let stats = db.stats()?.store;
    let rows = stats.live_rows as u64;
    eprintln!(
        "{rows} rows ready in {:.1} s: {} segments, {} partitioned, {} partitions, {:.1} s clustering them",
        ready.as_secs_f64(),
        stats.segments,
        stats.partitioned_segments,
        stats.partitions,
        stats.partition_build.as_secs_f64(),
    );
    let queries: Vec<Query> = generate(&args, 1, 0..args.queries as u64)
        .into_iter()
        .map(|p| Query::new(p.fine))
        .collect();
    let runs = [Some(args.candidates), None]
        .into_iter()
        .map(|candidates| run(&db, &queries, candidates, candidates.and(args.probe)))
        .collect::<hivlp::Result<Vec<_>>>()?;
    // Before the ground truth, whose flat fine scan maps every fine vector.
    let memory = rss().unwrap_or_default();
    let started = Instant::now();
    let truth = db.search_batch(
        &queries,
        &SearchParams {
            exact: true,
            ..SearchParams::default()
        },
    )?;
    eprintln!("ground truth in {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "| rows | data | threads | M | recall@10 | est. recall | median ms | p99 ms | batch q/s | median M | median probe | passes | exact |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for r in runs {
        let n = queries.len() as f64;
        let found: f64 = r
            .hits
            .iter()
            .zip(&truth)
            .map(|(f, t)| recall(&ids(f), &ids(t)))
            .sum();
        let mut used: Vec<usize> = r.timings.iter().map(|t| t.candidates).collect();
        used.sort_unstable();
        let mut probes: Vec<f64> = r.timings.iter().map(|t| t.probe).collect();
        probes.sort_unstable_by(f64::total_cmp);
        let mut times = r.times;
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.2} | {:.2} | {:.0} | {} | {:.3} | {:.2} | {:.0}% |",
            rows,
            args.data,
            args.threads,
            match (r.candidates, args.probe) {
                (None, _) => "default".to_owned(),
                (Some(m), None) => m.to_string(),
                (Some(m), Some(p)) => format!("{m}, probe {p}"),
            },
            found / n,
            r.timings.iter().map(|t| t.estimated_recall).sum::<f64>() / n,
            ms(percentile(&mut times, 50.0)),
            ms(percentile(&mut times, 99.0)),
            r.batch_qps,
            used[used.len() / 2],
            probes[probes.len() / 2],
            f64::from(r.timings.iter().map(|t| t.passes).sum::<u32>()) / n,
            100.0 * r.timings.iter().filter(|t| t.exact).count() as f64 / n,
        );
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    println!();
    println!(
        "Ready in {:.1} s ({}); {} segments, {} partitioned into {} partitions ({:.1} s of k-means).",
        ready.as_secs_f64(),
        if opened { "opened" } else { "built" },
        stats.segments,
        stats.partitioned_segments,
        stats.partitions,
        stats.partition_build.as_secs_f64(),
    );
    println!(
        "Bytes per row: {}.",
        bytes_per_row(&path, rows)
            .iter()
            .filter(|(_, b)| *b >= 0.05)
            .map(|(kind, b)| format!("{kind} {b:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "Resident after the searches (before the ground truth): {:.1} MiB (file-backed {:.1} MiB, anonymous {:.1} MiB); peak {:.1} MiB.",
        mib(memory.file + memory.anon),
        mib(memory.file),
        mib(memory.anon),
        mib(memory.peak),
    );
    Ok(())
}
