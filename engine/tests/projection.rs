//! Coarse vectors derived from fine ones: random projection first, PCA once enough rows
//! exist (rows rewritten), refitted at compaction, kept across reopen.

mod common;

use common::{create, generator, items, options};
use hivlp::synthetic::recall;
use hivlp::{CoarseDerivation, Database, ElemType, Options, Query, SearchParams};

fn recall_at_10(db: &Database, candidates: usize) -> f64 {
    let queries: Vec<Query> = (0..50)
        .map(|i| Query::new(generator().pair(1, i).fine))
        .collect();
    let exact = db
        .search_batch(
            &queries,
            &SearchParams {
                exact: true,
                ..SearchParams::default()
            },
        )
        .unwrap();
    let found = db
        .search_batch(
            &queries,
            &SearchParams {
                candidates: Some(candidates),
                ..SearchParams::default()
            },
        )
        .unwrap();
    let ids = |h: &[hivlp::Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
    exact
        .iter()
        .zip(&found)
        .map(|(e, f)| recall(&ids(f), &ids(e)))
        .sum::<f64>()
        / queries.len() as f64
}

#[test]
fn pca_replaces_the_random_projection_once_enough_rows_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Database::create(
        &path,
        common::schema(ElemType::I8),
        Options {
            projection_fit_rows: 2000,
            ..options()
        },
    )
    .unwrap();
    db.insert(items(0..1000, false)).unwrap();
    assert_eq!(
        db.stats().unwrap().coarse[0],
        CoarseDerivation::RandomProjection
    );
    let random_recall = recall_at_10(&db, 20);
    db.insert(items(1000..2500, false)).unwrap();
    assert_eq!(db.stats().unwrap().coarse[0], CoarseDerivation::Pca);
    // Every row, old ones included, now carries the PCA coarse vector: a stored row's own
    // fine vector as the query finds it first through the coarse stage with M = k.
    let own = Query::new(generator().pair(0, 10).fine);
    let params = SearchParams {
        k: 1,
        candidates: Some(1),
        ..SearchParams::default()
    };
    assert_eq!(db.search(&own, &params).unwrap()[0].id, 10);
    let pca_recall = recall_at_10(&db, 20);
    eprintln!(
        "recall@10 at M=20: random {random_recall:.3} (1000 rows), PCA {pca_recall:.3} (2500 rows)"
    );
    assert!(pca_recall > random_recall + 0.1, "PCA recall {pca_recall}");
    assert!(recall_at_10(&db, 200) > 0.97);

    db.insert(items(2500..4000, false)).unwrap();
    let before = recall_at_10(&db, 50);
    db.compact().unwrap();
    assert_eq!(db.stats().unwrap().coarse[0], CoarseDerivation::Pca);
    let after = recall_at_10(&db, 50);
    assert!(
        after >= before - 0.02,
        "refit lost recall: {before} → {after}"
    );
    drop(db);
    let db = Database::open(&path, options()).unwrap();
    assert_eq!(db.stats().unwrap().coarse[0], CoarseDerivation::Pca);
    assert_eq!(recall_at_10(&db, 50), after);
    assert_eq!(db.search(&own, &params).unwrap()[0].id, 10);
}

#[test]
fn a_database_with_supplied_coarse_vectors_stays_supplied() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::F16);
    db.insert(items(0..100, true)).unwrap();
    assert_eq!(db.stats().unwrap().coarse, [CoarseDerivation::Supplied; 2]);
    db.compact().unwrap();
    assert_eq!(db.stats().unwrap().coarse, [CoarseDerivation::Supplied; 2]);
}
