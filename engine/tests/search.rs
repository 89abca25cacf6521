//! Search semantics: filters, targets, memtable and segments together, reopen, compaction.

mod common;

use std::collections::HashSet;

use common::{COARSE, FINE, create, generator, items, options};
use hivlp::{Database, ElemType, Embedding, Filter, Item, Query, SearchParams, Target};

fn query(i: u64) -> Query {
    let p = generator().pair(1, i);
    Query {
        fine: p.fine,
        coarse: Some(p.coarse),
    }
}

fn ids(hits: &[hivlp::Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

#[test]
fn filters_restrict_results() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(items(0..2000, true)).unwrap();
    let q = query(0);
    let all = db.search(&q, &SearchParams::default()).unwrap();
    let denied: HashSet<u64> = ids(&all[..3]).into_iter().collect();
    let deny = SearchParams {
        filter: Some(Filter::Deny(denied.clone())),
        ..SearchParams::default()
    };
    let hits = db.search(&q, &deny).unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| !denied.contains(&h.id)));
    assert_eq!(ids(&hits[..7]), ids(&all[3..]));
    // A short allow-list is scored exactly; a long one filters the scan.
    for allowed in [
        [5u64, 17, 999, 123_456]
            .into_iter()
            .collect::<HashSet<u64>>(),
        (0..2000).step_by(3).collect(),
    ] {
        let params = SearchParams {
            filter: Some(Filter::Allow(allowed.clone())),
            ..SearchParams::default()
        };
        let hits = db.search(&q, &params).unwrap();
        assert!(hits.iter().all(|h| allowed.contains(&h.id)));
        assert_eq!(
            hits.len(),
            allowed.iter().filter(|&&id| id < 2000).count().min(10)
        );
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
}

#[test]
fn an_allow_list_cheaper_to_rerank_than_a_scan_is_searched_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(items(0..2000, true)).unwrap();
    // 50 allowed rows, more than the 10 candidates kept: re-ranking all of them reads fewer
    // bytes than scanning 2,000 coarse rows, so the filtered search is exact (before, it fell
    // back to the scan and kept only the 10 best coarse matches among them).
    let allowed: HashSet<u64> = (0..2000).step_by(40).collect();
    for i in 0..20 {
        let q = query(i);
        let search = |exact| {
            let params = SearchParams {
                candidates: Some(10),
                exact,
                filter: Some(Filter::Allow(allowed.clone())),
                ..SearchParams::default()
            };
            db.search(&q, &params).unwrap()
        };
        assert_eq!(ids(&search(false)), ids(&search(true)), "query {i}");
    }
}

#[test]
fn targets_search_only_their_modality() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::F16);
    let g = generator();
    let both = (0..100u64)
        .map(|i| {
            let p = g.pair(0, i);
            let e = Embedding {
                fine: p.fine,
                coarse: Some(p.coarse),
            };
            Item {
                id: Some(i),
                image: (i % 2 == 0).then(|| e.clone()),
                text: (i % 3 == 0).then_some(e),
                ..Item::default()
            }
        })
        .filter(|item| item.image.is_some() || item.text.is_some())
        .collect();
    db.insert(both).unwrap();
    for (target, keep) in [(Target::Image, 2), (Target::Text, 3)] {
        let params = SearchParams {
            target,
            k: 100,
            ..SearchParams::default()
        };
        let hits = db.search(&query(0), &params).unwrap();
        assert_eq!(hits.len(), 100usize.div_ceil(keep));
        assert!(hits.iter().all(|h| h.id % keep as u64 == 0));
    }
}

#[test]
fn segments_memtable_reopen_and_compaction_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = create(dir.path(), ElemType::I8);
    db.insert(items(0..1500, true)).unwrap();
    db.flush().unwrap();
    db.insert(items(1500..3000, true)).unwrap(); // memtable
    db.delete(&[1, 2, 1600]).unwrap();
    let queries: Vec<Query> = (0..20).map(query).collect();
    let params = SearchParams {
        k: 20,
        ..SearchParams::default()
    };
    let before = db.search_batch(&queries, &params).unwrap();
    db.sync().unwrap();
    drop(db);
    let db = Database::open(&path, options()).unwrap();
    assert_eq!(db.len().unwrap(), 2997);
    assert_eq!(db.search_batch(&queries, &params).unwrap(), before);
    db.compact().unwrap();
    assert_eq!(db.stats().unwrap().store.segments, 1);
    assert_eq!(db.search_batch(&queries, &params).unwrap(), before);
    let record = db.get(1500).unwrap().unwrap();
    assert_eq!(record.caption.as_deref(), Some("item 1500"));
    assert_eq!(record.image.unwrap().fine.len(), FINE);
    assert!(db.get(1).unwrap().is_none());
    assert!(db.get(1600).unwrap().is_none());
}

#[test]
fn auto_ids_are_fresh_and_scores_are_cosines() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::F32);
    let mut first = items(0..5, true);
    first.iter_mut().for_each(|i| i.id = None);
    let ids_a = db.insert(first).unwrap();
    let mut second = items(5..10, true);
    second.iter_mut().for_each(|i| i.id = None);
    let ids_b = db.insert(second).unwrap();
    let all: HashSet<u64> = ids_a.iter().chain(&ids_b).copied().collect();
    assert_eq!(all.len(), 10);
    // Unnormalised input: stored normalised, so a scaled copy of a row scores 1.
    let p = generator().pair(0, 3);
    let scaled = Query {
        fine: p.fine.iter().map(|x| x * 7.0).collect(),
        coarse: Some(p.coarse.iter().map(|x| x * 3.0).collect()),
    };
    let hits = db.search(&scaled, &SearchParams::default()).unwrap();
    assert_eq!(hits[0].id, ids_a[3]);
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    assert_eq!(COARSE, p.coarse.len());
}

#[test]
fn i8_batch_equals_single_queries() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(items(0..1500, true)).unwrap();
    db.flush().unwrap();
    db.insert(items(1500..2100, true)).unwrap(); // memtable
    db.delete(&[3, 64, 65, 1700]).unwrap();
    // 33 queries: a full tile (the multi-query kernel) and a tile of one (per-query path).
    let queries: Vec<Query> = (0..33).map(query).collect();
    let params = SearchParams {
        k: 20,
        ..SearchParams::default()
    };
    let batch = db.search_batch(&queries, &params).unwrap();
    for (q, hits) in queries.iter().zip(&batch) {
        assert_eq!(&db.search(q, &params).unwrap(), hits);
    }
}
