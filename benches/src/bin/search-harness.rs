//! The search benchmark table: two-stage and exact search over synthetic clustered data
//! (fine 512-d f32, coarse 64-d f32/f16/i8) at several sizes, with 1 and 2 threads, against
//! the machine's memory read bandwidth measured in the same run. See benches/README.md.
//!
//! `cargo run --release -p hivlp-benches --bin search-harness -- --n 100000,1000000`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use hivlp::synthetic::recall;
use hivlp::{Database, ElemType, Hit, Options, SearchParams};
use hivlp_benches::search::{
    bandwidth_buffer, build, bytes_per_query, file_bytes, parse_elem, percentile, queries,
    read_bandwidth, rss,
};

#[derive(Parser, Debug)]
#[command(about = "hivlp search benchmark: latency, throughput, recall and bandwidth")]
struct Args {
    /// Database sizes (rows).
    #[arg(long, value_delimiter = ',', default_values_t = [100_000u64, 1_000_000])]
    n: Vec<u64>,
    /// Coarse element types.
    #[arg(long, value_delimiter = ',', default_value = "f32,f16,i8")]
    types: Vec<String>,
    /// Search thread counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    threads: Vec<usize>,
    /// Coarse candidates M.
    #[arg(long, default_value_t = 200)]
    candidates: usize,
    /// Single queries timed per configuration.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Queries of the batch-throughput run.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Queries compared against exact search for recall@10.
    #[arg(long, default_value_t = 100)]
    recall_queries: usize,
    /// Flat exact queries timed per configuration.
    #[arg(long, default_value_t = 10)]
    exact_queries: usize,
    /// Directory for the databases (default: a temporary directory, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Internal: measure peak RSS of searches over the database at this path and exit.
    #[arg(long, hide = true)]
    rss_probe: Option<PathBuf>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ids(hits: &[Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

fn open(path: &Path, threads: usize) -> hivlp::Result<Database> {
    Database::open(
        path,
        Options {
            read_only: true,
            threads: Some(threads),
            ..Options::default()
        },
    )
}

/// Child process: open, run `n_queries` searches, print the peak RSS after the first and
/// after the last, with the file-backed and anonymous parts:
/// `rss <peak after 1> <peak after all> <file after all> <anon after all>`.
fn rss_probe(path: &Path, candidates: usize, n_queries: usize) -> hivlp::Result<()> {
    let db = open(path, 2)?;
    let params = SearchParams {
        candidates: Some(candidates),
        ..SearchParams::default()
    };
    let mut after_first = 0;
    for (i, q) in queries(n_queries).iter().enumerate() {
        std::hint::black_box(db.search(q, &params)?);
        if i == 0 {
            after_first = rss().map_or(0, |r| r.peak);
        }
    }
    let r = rss().unwrap_or_default();
    println!("rss {after_first} {} {} {}", r.peak, r.file, r.anon);
    Ok(())
}

/// Drops the page cache of the database's fine-vector files (`dd iflag=nocache`), so the
/// probe sees what one search maps rather than what earlier runs left cached.
fn evict_fine_files(path: &Path) {
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".fine") {
            let _ = Command::new("dd")
                .arg(format!("if={}", entry.path().display()))
                .args(["iflag=nocache", "count=0", "status=none"])
                .status();
        }
    }
}

struct Row {
    n: u64,
    elem: ElemType,
    threads: usize,
    best: Duration,
    median: Duration,
    p99: Duration,
    coarse_median: Duration,
    fine_median: Duration,
    batch_qps: f64,
    single_qps: f64,
    recall: f64,
    gbps: f64,
    bandwidth: f64,
    exact_median: Duration,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(path) = &args.rss_probe {
        rss_probe(path, args.candidates, args.queries)?;
        return Ok(());
    }
    let types: Vec<ElemType> = args
        .types
        .iter()
        .map(|t| parse_elem(t).ok_or_else(|| format!("unknown type {t}")))
        .collect::<Result<_, _>>()?;
    let temp = tempfile::tempdir()?;
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&root)?;

    eprintln!("measuring memory read bandwidth (1 GiB buffer)...");
    let buffer = bandwidth_buffer(1 << 30);
    let bandwidth: Vec<(usize, f64)> = args
        .threads
        .iter()
        .map(|&t| (t, read_bandwidth(&buffer, t)))
        .collect();
    drop(buffer);
    for (t, gb) in &bandwidth {
        eprintln!("  {t} thread(s): {gb:.1} GB/s");
    }

    let query_set = queries(args.queries.max(args.batch).max(args.recall_queries));
    let params = SearchParams {
        candidates: Some(args.candidates),
        ..SearchParams::default()
    };
    let exact = SearchParams {
        exact: true,
        ..SearchParams::default()
    };
    let mut rows = Vec::new();
    let mut rss_line = None;
    for &n in &args.n {
        let mut truth: Option<Vec<Vec<Hit>>> = None;
        for &elem in &types {
            let path = root.join(format!("search-{n}-{elem:?}").to_lowercase());
            if path.exists() {
                std::fs::remove_dir_all(&path)?;
            }
            eprintln!("building {n} rows, coarse {elem:?}...");
            let started = Instant::now();
            drop(build(&path, elem, n, 2)?);
            eprintln!("  built in {:.1} s", started.elapsed().as_secs_f64());
            let recall_set = &query_set[..args.recall_queries];
            if truth.is_none() {
                truth = Some(open(&path, 2)?.search_batch(recall_set, &exact)?);
            }
            let truth = truth.as_ref().ok_or("no ground truth")?;
            for &threads in &args.threads {
                let db = open(&path, threads)?;
                for q in &query_set[..10] {
                    db.search(q, &params)?;
                }
                let mut total = Vec::new();
                let mut coarse = Vec::new();
                let mut fine = Vec::new();
                for q in &query_set[..args.queries] {
                    let started = Instant::now();
                    let (_, timing) = db.search_with_timing(q, &params)?;
                    total.push(started.elapsed());
                    coarse.push(timing.coarse);
                    fine.push(timing.fine);
                }
                let single_qps = args.queries as f64 / total.iter().sum::<Duration>().as_secs_f64();
                let median = percentile(&mut total, 50.0);
                let started = Instant::now();
                let batch = db.search_batch(&query_set[..args.batch], &params)?;
                let batch_qps = batch.len() as f64 / started.elapsed().as_secs_f64();
                let found = db.search_batch(recall_set, &params)?;
                let recall_mean = found
                    .iter()
                    .zip(truth)
                    .map(|(f, t)| recall(&ids(f), &ids(t)))
                    .sum::<f64>()
                    / found.len() as f64;
                let mut exact_times = Vec::new();
                for q in &query_set[..args.exact_queries] {
                    let started = Instant::now();
                    db.search(q, &exact)?;
                    exact_times.push(started.elapsed());
                }
                let bytes = bytes_per_query(n, elem, args.candidates);
                let row = Row {
                    n,
                    elem,
                    threads,
                    best: percentile(&mut total, 0.0),
                    median,
                    p99: percentile(&mut total, 99.0),
                    coarse_median: percentile(&mut coarse, 50.0),
                    fine_median: percentile(&mut fine, 50.0),
                    batch_qps,
                    single_qps,
                    recall: recall_mean,
                    gbps: bytes as f64 / median.as_secs_f64() / 1e9,
                    bandwidth: bandwidth
                        .iter()
                        .find(|(t, _)| *t == threads)
                        .map_or(0.0, |b| b.1),
                    exact_median: percentile(&mut exact_times, 50.0),
                };
                eprintln!(
                    "  {threads} thread(s): median {:.2} ms, p99 {:.2} ms, batch {:.0} q/s, recall {:.4}, exact {:.1} ms",
                    ms(row.median),
                    ms(row.p99),
                    row.batch_qps,
                    row.recall,
                    ms(row.exact_median)
                );
                rows.push(row);
            }
            if elem == ElemType::I8 && n == *args.n.iter().max().unwrap_or(&n) {
                evict_fine_files(&path);
                let output = std::env::current_exe().and_then(|exe| {
                    Command::new(exe)
                        .arg("--rss-probe")
                        .arg(&path)
                        .args([
                            "--candidates",
                            &args.candidates.to_string(),
                            "--queries",
                            "50",
                        ])
                        .output()
                });
                let text = match output {
                    Ok(output) => String::from_utf8_lossy(&output.stdout).into_owned(),
                    Err(e) => {
                        eprintln!("RSS probe failed: {e}");
                        String::new()
                    }
                };
                let numbers: Vec<f64> = text
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .map(|b| b as f64 / 1048576.0)
                    .collect();
                if let [first, all, file, anon] = numbers[..] {
                    rss_line = Some(format!(
                        "Peak RSS, fresh process, {n} rows, i8 coarse, M = {}, 2 threads, fine files evicted from the page cache first: \
                         {first:.1} MiB after one search, {all:.1} MiB after 50 (file-backed {file:.1} MiB, anonymous {anon:.1} MiB). \
                         Coarse files {:.1} MiB, fine files {:.1} MiB, M fine rows {:.2} MiB.",
                        args.candidates,
                        file_bytes(&path, ".coarse") as f64 / 1048576.0,
                        file_bytes(&path, ".fine") as f64 / 1048576.0,
                        (args.candidates * 512 * 4) as f64 / 1048576.0,
                    ));
                }
            }
            if args.dir.is_none() {
                std::fs::remove_dir_all(&path)?;
            }
        }
    }

    println!();
    println!(
        "Memory read bandwidth: {}",
        bandwidth
            .iter()
            .map(|(t, b)| format!("{b:.1} GB/s ({t} thread{})", if *t == 1 { "" } else { "s" }))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "Two-stage: M = {}, k = 10, {} single queries, batch of {}, recall over {} queries.",
        args.candidates, args.queries, args.batch, args.recall_queries
    );
    println!();
    println!(
        "| N | coarse | threads | best ms | median ms | p99 ms | coarse / fine ms | single q/s | batch q/s | recall@10 | MB/query | GB/s (of bw) | exact ms | speed-up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:?} | {} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {:.0} | {:.0} | {:.4} | {:.1} | {:.1} ({:.0}%) | {:.1} | {:.1}× |",
            r.n,
            r.elem,
            r.threads,
            ms(r.best),
            ms(r.median),
            ms(r.p99),
            ms(r.coarse_median),
            ms(r.fine_median),
            r.single_qps,
            r.batch_qps,
            r.recall,
            bytes_per_query(r.n, r.elem, args.candidates) as f64 / 1e6,
            r.gbps,
            100.0 * r.gbps / r.bandwidth.max(f64::MIN_POSITIVE),
            ms(r.exact_median),
            r.exact_median.as_secs_f64() / r.median.as_secs_f64(),
        );
    }
    if let Some(line) = rss_line {
        println!();
        println!("{line}");
    }
    Ok(())
}
