//! Search quality on synthetic clustered embeddings (1,000 Gaussian clusters, fine 512-d,
//! coarse 64-d = normalised prefix of a decaying spectrum, see `hivlp::synthetic`): the
//! two-stage search against exact search, determinism across thread counts, deletes and the
//! memtable.

use std::sync::OnceLock;

use hivlp::synthetic::{Clustered, Pair, recall};
use hivlp::{
    Database, Durability, ElemType, Embedding, Item, Metric, Options, Query, Schema, SearchParams,
};

const N: u64 = 100_000;
const FINE: usize = 512;
const COARSE: usize = 64;
const QUERIES: u64 = 100;
const ITEMS: u64 = 0;
const QUERY_STREAM: u64 = 1;

fn generator() -> &'static Clustered {
    static GEN: OnceLock<Clustered> = OnceLock::new();
    GEN.get_or_init(|| Clustered::new(FINE, COARSE, 1000, 1.1, 42))
}

fn items() -> &'static [Pair] {
    static ITEMS_CACHE: OnceLock<Vec<Pair>> = OnceLock::new();
    ITEMS_CACHE.get_or_init(|| generator().pairs(ITEMS, 0..N))
}

fn queries() -> Vec<Query> {
    generator()
        .pairs(QUERY_STREAM, 0..QUERIES)
        .into_iter()
        .map(|p| Query {
            fine: p.fine,
            coarse: Some(p.coarse),
        })
        .collect()
}

fn schema(coarse_type: ElemType) -> Schema {
    Schema {
        fine_dim: FINE,
        coarse_dim: COARSE,
        fine_type: ElemType::F32,
        coarse_type,
        metric: Metric::Cosine,
    }
}

fn options(threads: usize) -> Options {
    Options {
        durability: Durability::Buffered,
        threads: Some(threads),
        ..Options::default()
    }
}

fn item(id: u64, pair: &Pair) -> Item {
    Item {
        id: Some(id),
        caption: Some(format!("item {id}")),
        image: Some(Embedding {
            fine: pair.fine.clone(),
            coarse: Some(pair.coarse.clone()),
        }),
        ..Item::default()
    }
}

/// A database of items `0..rows` (ids = indices), flushed to segments.
fn build(dir: &std::path::Path, coarse_type: ElemType, rows: u64) -> Database {
    let db = Database::create(dir, schema(coarse_type), options(2)).expect("create");
    let all = items();
    for start in (0..rows).step_by(10_000) {
        let end = (start + 10_000).min(rows);
        let batch = (start..end).map(|i| item(i, &all[i as usize])).collect();
        db.insert(batch).expect("insert");
    }
    db.flush().expect("flush");
    db
}

fn ids(hits: &[hivlp::Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

#[test]
fn two_stage_recall_at_default_candidates_for_every_coarse_type() {
    let queries = queries();
    let approximate = SearchParams::default();
    let exact = SearchParams {
        exact: true,
        ..SearchParams::default()
    };
    for coarse_type in [ElemType::F32, ElemType::F16, ElemType::I8] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = build(&dir.path().join("db"), coarse_type, N);
        let truth = db.search_batch(&queries, &exact).expect("exact");
        let found = db.search_batch(&queries, &approximate).expect("search");
        let mean: f64 = truth
            .iter()
            .zip(&found)
            .map(|(t, f)| recall(&ids(f), &ids(t)))
            .sum::<f64>()
            / queries.len() as f64;
        eprintln!("{coarse_type:?}: recall@10 = {mean:.4}");
        assert!(mean >= 0.99, "{coarse_type:?}: recall@10 {mean} < 0.99");
        // Single-query search agrees with the batch.
        for (q, batch) in queries.iter().zip(&found).take(10) {
            assert_eq!(&db.search(q, &approximate).expect("search"), batch);
        }
    }
}

#[test]
fn results_are_identical_with_one_and_two_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let writer = build(&path, ElemType::I8, 30_000);
    // Rows in the memtable too.
    let all = items();
    writer
        .insert(
            (30_000..32_000)
                .map(|i| item(i, &all[i as usize]))
                .collect(),
        )
        .expect("insert");
    writer.sync().expect("sync");
    let one = &writer;
    let two = Database::open(
        &path,
        Options {
            read_only: true,
            ..options(2)
        },
    )
    .expect("open read-only");
    let one_thread = Database::open(
        &path,
        Options {
            read_only: true,
            ..options(1)
        },
    )
    .expect("open read-only");
    let queries = queries();
    for params in [
        SearchParams::default(),
        SearchParams {
            k: 50,
            candidates: Some(60),
            ..SearchParams::default()
        },
        SearchParams {
            exact: true,
            ..SearchParams::default()
        },
    ] {
        let a = one_thread
            .search_batch(&queries, &params)
            .expect("1 thread");
        let b = two.search_batch(&queries, &params).expect("2 threads");
        assert_eq!(a, b);
        assert_eq!(a, one.search_batch(&queries, &params).expect("writer"));
        for (q, expected) in queries.iter().zip(&a).take(20) {
            assert_eq!(&one_thread.search(q, &params).expect("search"), expected);
            assert_eq!(&two.search(q, &params).expect("search"), expected);
        }
    }
}

#[test]
fn deleted_rows_are_never_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = build(&dir.path().join("db"), ElemType::F16, 30_000);
    let queries = queries();
    let params = SearchParams::default();
    let before = db.search_batch(&queries, &params).expect("search");
    let deleted: Vec<u64> = before.iter().flat_map(|hits| ids(&hits[..5])).collect();
    assert!(db.delete(&deleted).expect("delete") > 0);
    for exact in [false, true] {
        let params = SearchParams {
            exact,
            k: 100,
            ..SearchParams::default()
        };
        for hits in db.search_batch(&queries, &params).expect("search") {
            assert!(hits.iter().all(|h| !deleted.contains(&h.id)));
            assert_eq!(hits.len(), 100);
        }
    }
    // Still true after the tombstones reach disk and after compaction drops the rows.
    db.flush().expect("flush");
    db.compact().expect("compact");
    for hits in db.search_batch(&queries, &params).expect("search") {
        assert!(hits.iter().all(|h| !deleted.contains(&h.id)));
    }
}

#[test]
fn memtable_rows_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = build(&dir.path().join("db"), ElemType::I8, 20_000);
    let all = items();
    // Not flushed: these rows live only in the memtable (and the WAL).
    let fresh: Vec<u64> = (50_000..50_100).collect();
    db.insert(fresh.iter().map(|&i| item(i, &all[i as usize])).collect())
        .expect("insert");
    assert!(db.stats().unwrap().store.memtable_rows >= fresh.len());
    for &id in &fresh {
        let pair = &all[id as usize];
        let query = Query {
            fine: pair.fine.clone(),
            coarse: Some(pair.coarse.clone()),
        };
        let hits = db.search(&query, &SearchParams::default()).expect("search");
        assert_eq!(hits[0].id, id);
        assert!((hits[0].score - 1.0).abs() < 1e-4);
        assert_eq!(
            hits[0].caption.as_deref(),
            Some(format!("item {id}").as_str())
        );
    }
}
