//! Recall@10 and latency of the default search (candidates chosen per query) against a fixed
//! M, on clustered and unclustered synthetic data whose coarse vectors the database derives
//! (PCA after `projection_fit_rows`), with the estimated recall the search reports.
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
use hivlp_benches::search::percentile;

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
    /// Where to build the database (a temporary directory if not given).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
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
            memtable_rows: 250_000,
            threads: Some(args.threads),
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    let path = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf())
        .join("db");
    let started = Instant::now();
    let db = if path.exists() {
        Database::open(
            &path,
            Options {
                threads: Some(args.threads),
                ..Options::default()
            },
        )?
    } else {
        build(&args, &path)?
    };
    eprintln!(
        "{} rows ready in {:.1} s",
        args.rows,
        started.elapsed().as_secs_f64()
    );
    let queries: Vec<Query> = generate(&args, 1, 0..args.queries as u64)
        .into_iter()
        .map(|p| Query::new(p.fine))
        .collect();
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
        "| rows | data | M | recall@10 | est. recall | median ms | p99 ms | median M | passes | exact |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for candidates in [Some(args.candidates), None] {
        let params = SearchParams {
            candidates,
            ..SearchParams::default()
        };
        for q in &queries[..10.min(queries.len())] {
            db.search(q, &params)?;
        }
        let (mut times, mut used, mut recalls) = (Vec::new(), Vec::new(), 0.0);
        let (mut estimated, mut passes, mut exact) = (0.0, 0, 0);
        for (q, t) in queries.iter().zip(&truth) {
            let started = Instant::now();
            let (hits, timing) = db.search_with_timing(q, &params)?;
            times.push(started.elapsed());
            used.push(timing.candidates);
            let r = recall(&ids(&hits), &ids(t));
            recalls += r;
            estimated += timing.estimated_recall;
            passes += timing.passes;
            exact += usize::from(timing.exact);
        }
        used.sort_unstable();
        let n = queries.len() as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.2} | {:.2} | {} | {:.2} | {:.0}% |",
            args.rows,
            args.data,
            candidates.map_or("default".to_owned(), |m| m.to_string()),
            recalls / n,
            estimated / n,
            ms(percentile(&mut times.clone(), 50.0)),
            ms(percentile(&mut times, 99.0)),
            used[used.len() / 2],
            f64::from(passes) / n,
            100.0 * exact as f64 / n,
        );
    }
    Ok(())
}
