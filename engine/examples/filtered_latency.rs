//! Median latency of filtered against unfiltered search, and recall@10 against the exact
//! filtered search, on synthetic clustered rows (default 100k × 128-d fine, 32-d i8 coarse).
//!
//! ```sh
//! cargo run --release -p hivlp --example filtered_latency -- [ROWS] [QUERIES] [M]
//! ```
//! `bucket = id % 10000` in each row's metadata; the predicates match 50%, 10%, 1%, 0.1% and
//! 0.01% of the rows. Prints one line per predicate: recall, median latency, the time of the
//! first evaluation of the predicate (cold) and its median (segments' bitmaps cached).

use std::time::Duration;

use hivlp::synthetic::{Clustered, recall};
use hivlp::{
    Database, Durability, ElemType, Embedding, Item, Metric, Options, Predicate, Query, Schema,
    SearchParams,
};

const FINE: usize = 128;
const COARSE: usize = 32;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let queries: u64 = args.next().map_or(Ok(200), |a| a.parse())?;
    let candidates: Option<usize> = args.next().map(|a| a.parse()).transpose()?;
    let generator = Clustered::new(FINE, COARSE, 1000, 1.0, 3);
    let dir = tempfile::tempdir()?;
    let schema = Schema {
        fine_dim: FINE,
        coarse_dim: COARSE,
        fine_type: ElemType::F32,
        coarse_type: ElemType::I8,
        metric: Metric::Cosine,
    };
    let options = Options {
        durability: Durability::Buffered,
        ..Options::default()
    };
    let db = Database::create(dir.path().join("db"), schema, options)?;
    for start in (0..rows).step_by(50_000) {
        let end = (start + 50_000).min(rows);
        let items = generator
            .pairs(0, start..end)
            .into_iter()
            .zip(start..)
            .map(|(p, id)| Item {
                id: Some(id),
                metadata: format!("{{\"bucket\": {}}}", id % 10_000).into_bytes(),
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
    let queries: Vec<Query> = generator
        .pairs(1, 0..queries)
        .into_iter()
        .map(|p| Query {
            fine: p.fine,
            coarse: Some(p.coarse),
        })
        .collect();
    println!(
        "{rows} rows, {} queries, k = 10, M = {}",
        queries.len(),
        candidates.unwrap_or(hivlp::DEFAULT_CANDIDATES)
    );
    println!("predicate              matching  recall@10  median ms  cold filter ms  filter ms");
    for (text, matching) in [
        (None, 1.0),
        (Some("bucket < 5000"), 0.5),
        (Some("bucket < 1000"), 0.1),
        (Some("bucket < 100"), 0.01),
        (Some("bucket < 10"), 0.001),
        (Some("bucket = 7"), 0.0001),
    ] {
        let predicate = text.map(Predicate::parse).transpose()?;
        let params = |exact| SearchParams {
            exact,
            candidates,
            predicate: predicate.clone(),
            ..SearchParams::default()
        };
        let (mut total, mut filter, mut found) = (Vec::new(), Vec::new(), 0.0);
        for query in &queries {
            let started = std::time::Instant::now();
            let (hits, timing) = db.search_with_timing(query, &params(false))?;
            total.push(started.elapsed());
            filter.push(timing.filter);
            let truth = db.search(query, &params(true))?;
            let ids = |h: &[hivlp::Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
            found += recall(&ids(&hits), &ids(&truth));
        }
        println!(
            "{:<22} {:>7.2}%  {:>9.4}  {:>9.3}  {:>14.3}  {:>9.3}",
            text.unwrap_or("(none)"),
            matching * 100.0,
            found / queries.len() as f64,
            median(total).as_secs_f64() * 1e3,
            filter[0].as_secs_f64() * 1e3,
            median(filter).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
