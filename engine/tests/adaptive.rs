//! Default searches keep recall@10 ≥ 0.99 against exact search where a fixed candidate count
//! does not (clustered and unclustered data, PCA and random coarse projections, 100k rows), and
//! report an estimated recall close to the measured one.

use hivlp::synthetic::{Clustered, Pair, Unclustered, recall};
use hivlp::{
    Database, Durability, ElemType, Embedding, Item, Metric, Options, Query, Schema, SearchParams,
    TARGET_RECALL,
};

const ROWS: u64 = 100_000;
const FINE: usize = 64;
const COARSE: usize = 16;
const QUERIES: u64 = 60;

/// A database of `ROWS` items of `data` (stream 0) with coarse vectors derived by the
/// database: PCA fitted once 4,096 rows exist, or (`pca` false) the random projection kept.
fn database(
    dir: &std::path::Path,
    data: &dyn Fn(u64, std::ops::Range<u64>) -> Vec<Pair>,
    pca: bool,
) -> Database {
    let db = Database::create(
        dir.join("db"),
        Schema {
            fine_dim: FINE,
            coarse_dim: COARSE,
            fine_type: ElemType::F32,
            coarse_type: ElemType::I8,
            metric: Metric::Cosine,
        },
        Options {
            durability: Durability::Buffered,
            threads: Some(2),
            projection_fit_rows: if pca { 4096 } else { usize::MAX },
            ..Options::default()
        },
    )
    .unwrap();
    for start in (0..ROWS).step_by(20_000) {
        let range = start..(start + 20_000).min(ROWS);
        let items = data(0, range.clone())
            .into_iter()
            .zip(range)
            .map(|(p, id)| Item {
                id: Some(id),
                image: Some(Embedding {
                    fine: p.fine,
                    coarse: None,
                }),
                ..Item::default()
            })
            .collect();
        db.insert(items).unwrap();
    }
    db.flush().unwrap();
    db
}

/// Mean measured and mean estimated recall@10 of `params` against the exact search.
fn recalls(
    db: &Database,
    queries: &[Query],
    truth: &[Vec<hivlp::Hit>],
    params: &SearchParams,
) -> (f64, f64) {
    let ids = |h: &[hivlp::Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
    let (mut measured, mut estimated) = (0.0, 0.0);
    for (q, t) in queries.iter().zip(truth) {
        let (hits, timing) = db.search_with_timing(q, params).unwrap();
        measured += recall(&ids(&hits), &ids(t));
        estimated += timing.estimated_recall;
    }
    let n = queries.len() as f64;
    (measured / n, estimated / n)
}

fn check(data: &dyn Fn(u64, std::ops::Range<u64>) -> Vec<Pair>, pca: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path(), data, pca);
    let queries: Vec<Query> = data(1, 0..QUERIES)
        .into_iter()
        .map(|p| Query::new(p.fine))
        .collect();
    let exact = SearchParams {
        exact: true,
        ..SearchParams::default()
    };
    let truth = db.search_batch(&queries, &exact).unwrap();
    let (measured, estimated) = recalls(&db, &queries, &truth, &SearchParams::default());
    eprintln!("default: recall {measured:.3}, estimated {estimated:.3}");
    assert!(measured >= TARGET_RECALL, "default recall {measured}");
    assert!(
        estimated >= TARGET_RECALL,
        "default estimated recall {estimated}"
    );
    // A fixed M keeps its meaning, and the estimate tells the caller it falls short. It is a
    // model fitted on ten censored ranks: close to the measured recall near the target, within
    // 0.25 of it where M is far too small.
    for m in [50, 100] {
        let fixed = SearchParams {
            candidates: Some(m),
            ..SearchParams::default()
        };
        let (measured, estimated) = recalls(&db, &queries, &truth, &fixed);
        eprintln!("M = {m}: recall {measured:.3}, estimated {estimated:.3}");
        assert!(
            (measured - estimated).abs() <= 0.25,
            "M = {m}: {measured} vs {estimated}"
        );
        if measured < TARGET_RECALL - 0.05 {
            assert!(estimated < TARGET_RECALL, "M = {m}: estimated {estimated}");
        }
    }
}

fn clustered(stream: u64, range: std::ops::Range<u64>) -> Vec<Pair> {
    Clustered::new(FINE, COARSE, 1000, 0.6, 5).pairs(stream, range)
}

fn unclustered(stream: u64, range: std::ops::Range<u64>) -> Vec<Pair> {
    Unclustered::new(FINE, COARSE, 16.0, 5).pairs(stream, range)
}

#[test]
fn clustered_data_with_pca_coarse_vectors() {
    check(&clustered, true);
}

#[test]
fn clustered_data_with_random_coarse_vectors() {
    check(&clustered, false);
}

#[test]
fn unclustered_data_with_pca_coarse_vectors() {
    check(&unclustered, true);
}

#[test]
fn unclustered_data_with_random_coarse_vectors() {
    check(&unclustered, false);
}
