//! Partitioned segments: a search that reads every partition returns what the flat scan
//! returns (deletes, memtable rows and predicates included), the default search over
//! partitions keeps recall@10 ≥ 0.99 while reading a share of the rows, a damaged partition
//! file is a corruption error naming it, and segments without partitions search flat.

use hivlp::filter::Predicate;
use hivlp::synthetic::{Clustered, Pair, Unclustered, recall};
use hivlp::{
    Database, Durability, ElemType, Embedding, Error, Item, Metric, Options, Query, Schema,
    SearchParams, TARGET_RECALL,
};

const ROWS: u64 = 100_000;
const FINE: usize = 64;
const COARSE: usize = 16;
const QUERIES: u64 = 50;

fn options(partition_min_rows: usize) -> Options {
    Options {
        durability: Durability::Buffered,
        threads: Some(2),
        memtable_rows: ROWS as usize,
        partition_min_rows,
        ..Options::default()
    }
}

fn items(pairs: Vec<Pair>, ids: std::ops::Range<u64>) -> Vec<Item> {
    pairs
        .into_iter()
        .zip(ids)
        .map(|(p, id)| Item {
            id: Some(id),
            image: Some(Embedding {
                fine: p.fine,
                coarse: Some(p.coarse),
            }),
            metadata: format!(r#"{{"shard": {}}}"#, id % 10).into_bytes(),
            ..Item::default()
        })
        .collect()
}

/// One segment of `ROWS` rows of `data` (coarse vectors as generated), partitioned unless
/// `partition_min_rows` exceeds it.
fn database(
    dir: &std::path::Path,
    data: &dyn Fn(u64, std::ops::Range<u64>) -> Vec<Pair>,
    partition_min_rows: usize,
) -> Database {
    let schema = Schema {
        fine_dim: FINE,
        coarse_dim: COARSE,
        fine_type: ElemType::F32,
        coarse_type: ElemType::I8,
        metric: Metric::Cosine,
    };
    let db = Database::create(dir.join("db"), schema, options(partition_min_rows)).unwrap();
    for start in (0..ROWS).step_by(25_000) {
        let range = start..(start + 25_000).min(ROWS);
        db.insert(items(data(0, range.clone()), range)).unwrap();
    }
    db.flush().unwrap();
    db
}

fn clustered(stream: u64, range: std::ops::Range<u64>) -> Vec<Pair> {
    Clustered::new(FINE, COARSE, 1000, 0.6, 5).pairs(stream, range)
}

fn unclustered(stream: u64, range: std::ops::Range<u64>) -> Vec<Pair> {
    Unclustered::new(FINE, COARSE, 16.0, 5).pairs(stream, range)
}

fn queries(data: &dyn Fn(u64, std::ops::Range<u64>) -> Vec<Pair>) -> Vec<Query> {
    data(1, 0..QUERIES)
        .into_iter()
        .map(|p| Query {
            fine: p.fine,
            coarse: Some(p.coarse),
        })
        .collect()
}

fn ids(hits: &[hivlp::Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

/// Default searches over a partitioned segment: recall@10 against exact search, and the
/// share of rows the last pass read, averaged.
fn check_default(data: &dyn Fn(u64, std::ops::Range<u64>) -> Vec<Pair>) {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path(), data, 32_768);
    let stats = db.stats().unwrap();
    assert_eq!(stats.store.partitioned_segments, 1);
    assert!(stats.store.partitions >= 64, "{}", stats.store.partitions);
    let exact = SearchParams {
        exact: true,
        ..SearchParams::default()
    };
    let (mut measured, mut probe) = (0.0, 0.0);
    for q in queries(data) {
        let truth = db.search(&q, &exact).unwrap();
        let (hits, timing) = db.search_with_timing(&q, &SearchParams::default()).unwrap();
        measured += recall(&ids(&hits), &ids(&truth));
        probe += if timing.exact { 1.0 } else { timing.probe };
    }
    // A query's hits do not depend on the batch it comes in (passes of other probe shares).
    let batch = db
        .search_batch(&queries(data), &SearchParams::default())
        .unwrap();
    for (q, hits) in queries(data).iter().zip(&batch) {
        assert_eq!(&db.search(q, &SearchParams::default()).unwrap(), hits);
    }
    let (measured, probe) = (measured / QUERIES as f64, probe / QUERIES as f64);
    eprintln!("default over partitions: recall {measured:.3}, rows read {probe:.3}");
    assert!(measured >= TARGET_RECALL, "recall {measured}");
}

#[test]
fn default_search_over_partitions_keeps_recall_on_clustered_data() {
    check_default(&clustered);
}

#[test]
fn default_search_over_partitions_keeps_recall_on_unclustered_data() {
    check_default(&unclustered);
}

#[test]
fn reading_every_partition_equals_the_flat_scan() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path(), &clustered, 32_768);
    // Deleted rows, and rows only in the memtable.
    let deleted: Vec<u64> = (0..ROWS).step_by(7).collect();
    db.delete(&deleted).unwrap();
    db.insert(items(clustered(2, 0..500), ROWS..ROWS + 500))
        .unwrap();
    assert_eq!(db.stats().unwrap().store.memtable_rows, 500);
    let predicate = Predicate::parse("shard >= 3").unwrap();
    for q in queries(&clustered) {
        for predicate in [None, Some(predicate.clone())] {
            let flat = SearchParams {
                candidates: Some(200),
                probe: Some(1.0),
                predicate: predicate.clone(),
                ..SearchParams::default()
            };
            // Just short of every row: every partition, read through the probe's row lists.
            let all = SearchParams {
                probe: Some(0.999_999),
                ..flat.clone()
            };
            let (want, got) = (db.search(&q, &flat).unwrap(), db.search(&q, &all).unwrap());
            assert_eq!(ids(&want), ids(&got));
            for hit in &got {
                assert!(hit.id >= ROWS || hit.id % 7 != 0, "deleted {}", hit.id);
            }
        }
    }
}

#[test]
fn a_segment_without_partitions_is_searched_flat() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path(), &clustered, usize::MAX);
    assert_eq!(db.stats().unwrap().store.partitions, 0);
    let q = &queries(&clustered)[0];
    let (hits, timing) = db.search_with_timing(q, &SearchParams::default()).unwrap();
    assert_eq!(hits.len(), 10);
    assert_eq!(timing.probe, 1.0);
    // A compaction with partitions enabled builds them for it.
    drop(db);
    let db = Database::open(dir.path().join("db"), options(32_768)).unwrap();
    db.compact().unwrap();
    assert!(db.stats().unwrap().store.partitions > 0);
}

#[test]
fn a_damaged_partition_file_is_a_corruption_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(database(dir.path(), &clustered, 32_768));
    let path = std::fs::read_dir(dir.path().join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".image.parts"))
        .expect("a partition file");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    match Database::open(dir.path().join("db"), options(32_768)) {
        Err(Error::Corruption(e)) => {
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(e.to_string().contains(name.as_ref()), "{e}");
        }
        other => panic!("expected a corruption error, got {:?}", other.err()),
    }
}

/// Invalid shares are refused.
#[test]
fn a_probe_outside_zero_to_one_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path(), &clustered, usize::MAX);
    let q = &queries(&clustered)[0];
    for probe in [0.0, -1.0, 1.5, f64::NAN] {
        let params = SearchParams {
            probe: Some(probe),
            ..SearchParams::default()
        };
        assert!(matches!(db.search(q, &params), Err(Error::InvalidInput(_))));
    }
}
