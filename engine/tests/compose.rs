//! The compositions users ask for: `min_score`, weighted multi-part queries (negative parts
//! included) and near-duplicate collapse.

mod common;

use common::{FINE, create, items};
use hivlp::{ElemType, Embedding};
use hivlp::{Error, InvalidInput, Item, Query, QueryPart, SearchParams, Target};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn random_unit(rng: &mut StdRng) -> Vec<f32> {
    unit((0..FINE).map(|_| rng.random_range(-1.0..1.0)).collect())
}

/// `a + weight · b`, at unit length.
fn towards(a: &[f32], b: &[f32], weight: f32) -> Vec<f32> {
    unit(a.iter().zip(b).map(|(x, y)| x + weight * y).collect())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn image_item(id: u64, fine: Vec<f32>) -> Item {
    Item {
        id: Some(id),
        image: Some(Embedding { fine, coarse: None }),
        ..Item::default()
    }
}

fn invalid(result: hivlp::Result<impl std::fmt::Debug>) -> InvalidInput {
    match result {
        Err(Error::InvalidInput(e)) => e,
        other => panic!("expected an InvalidInput error, got {other:?}"),
    }
}

#[test]
fn min_score_returns_fewer_hits_rather_than_unrelated_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(items(0..2000, false)).unwrap();
    let q = Query::new(db.get(7).unwrap().unwrap().image.unwrap().fine);
    let exact = SearchParams {
        exact: true,
        ..SearchParams::default()
    };
    let all = db.search(&q, &exact).unwrap();
    assert_eq!(all.len(), 10);
    let threshold = all[4].score;
    for base in [exact, SearchParams::default()] {
        // The hits of the same search without min_score, cut where the score drops below it.
        let unfiltered = db.search(&q, &base).unwrap();
        let expected: Vec<_> = unfiltered
            .into_iter()
            .filter(|h| h.score >= threshold)
            .collect();
        let hits = db
            .search(
                &q,
                &SearchParams {
                    min_score: Some(threshold),
                    ..base.clone()
                },
            )
            .unwrap();
        assert_eq!(hits, expected);
        assert!(hits.len() <= 5);
        let none = SearchParams {
            min_score: Some(1.5),
            ..base
        };
        assert!(db.search(&q, &none).unwrap().is_empty());
    }
    let hits = db
        .search(
            &q,
            &SearchParams {
                exact: true,
                min_score: Some(threshold),
                ..SearchParams::default()
            },
        )
        .unwrap();
    assert_eq!(hits, all[..5]);
    for bad in [f32::NAN, f32::INFINITY] {
        let params = SearchParams {
            min_score: Some(bad),
            ..SearchParams::default()
        };
        assert!(matches!(
            invalid(db.search(&q, &params)),
            InvalidInput::MinScoreNotFinite(_)
        ));
    }
}

/// Background rows, then `bursts` photos near `q`, each inserted `copies` times with slight
/// noise. Burst `b` has ids `BURST_BASE + b * copies ..`.
const BURST_BASE: u64 = 100_000;

fn bursty_database(dir: &std::path::Path, bursts: u64, copies: u64) -> (hivlp::Database, Vec<f32>) {
    let db = create(dir, ElemType::I8);
    let mut rng = StdRng::seed_from_u64(11);
    let q = random_unit(&mut rng);
    let background: Vec<Item> = (0..2000)
        .map(|id| image_item(id, random_unit(&mut rng)))
        .collect();
    db.insert(background).unwrap();
    let mut burst_items = Vec::new();
    for b in 0..bursts {
        let photo = towards(&q, &random_unit(&mut rng), 0.8);
        for c in 0..copies {
            let copy = towards(&photo, &random_unit(&mut rng), 0.05);
            burst_items.push(image_item(BURST_BASE + b * copies + c, copy));
        }
    }
    db.insert(burst_items).unwrap();
    (db, q)
}

/// The greedy collapse of all rows ranked exactly: the ground truth.
fn collapsed_truth(db: &hivlp::Database, q: &Query, k: usize, threshold: f32) -> Vec<u64> {
    let everything = db
        .search(
            q,
            &SearchParams {
                exact: true,
                k: db.len().unwrap(),
                ..SearchParams::default()
            },
        )
        .unwrap();
    let mut kept: Vec<(u64, Vec<f32>)> = Vec::new();
    for hit in everything {
        let v = db.get(hit.id).unwrap().unwrap().image.unwrap().fine;
        if kept.iter().all(|(_, other)| cosine(&v, other) < threshold) {
            kept.push((hit.id, v));
        }
        if kept.len() == k {
            break;
        }
    }
    kept.into_iter().map(|(id, _)| id).collect()
}

#[test]
fn collapse_counts_each_burst_once_and_still_returns_k_hits() {
    let dir = tempfile::tempdir().unwrap();
    // 80 copies per burst: the default 200 candidates hold under three bursts, so ten
    // distinct hits need the candidate list to grow.
    let (db, q) = bursty_database(dir.path(), 30, 80);
    let q = Query::new(q);
    let plain = db.search(&q, &SearchParams::default()).unwrap();
    let burst_of = |id: u64| (id - BURST_BASE) / 80;
    let plain_bursts: std::collections::HashSet<u64> =
        plain.iter().map(|h| burst_of(h.id)).collect();
    assert!(plain_bursts.len() <= 2, "{plain:?}");

    let threshold = 0.95;
    let truth = collapsed_truth(&db, &q, 10, threshold);
    assert_eq!(truth.len(), 10);
    for exact in [true, false] {
        let params = SearchParams {
            exact,
            collapse: Some(threshold),
            ..SearchParams::default()
        };
        let hits = db.search(&q, &params).unwrap();
        assert_eq!(hits.len(), 10, "exact {exact}: {hits:?}");
        let bursts: std::collections::HashSet<u64> = hits
            .iter()
            .inspect(|h| assert!(h.id >= BURST_BASE, "{h:?}"))
            .map(|h| burst_of(h.id))
            .collect();
        assert_eq!(bursts.len(), 10, "each burst counts once: {hits:?}");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        if exact {
            let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
            assert_eq!(ids, truth);
        }
        // The same through the batch path, for two queries at once.
        let batch = db.search_batch(&[q.clone(), q.clone()], &params).unwrap();
        assert_eq!(batch, vec![hits.clone(), hits]);
    }
}

#[test]
fn collapse_returns_fewer_when_fewer_distinct_rows_exist() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    let mut rng = StdRng::seed_from_u64(5);
    let photo = random_unit(&mut rng);
    let copies: Vec<Item> = (0..300)
        .map(|id| image_item(id, towards(&photo, &random_unit(&mut rng), 0.05)))
        .collect();
    db.insert(copies).unwrap();
    let params = SearchParams {
        collapse: Some(0.9),
        ..SearchParams::default()
    };
    let hits = db.search(&Query::new(photo), &params).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    for bad in [1.5, -1.01, f32::NAN] {
        let params = SearchParams {
            collapse: Some(bad),
            ..SearchParams::default()
        };
        let q = Query::new(random_unit(&mut rng));
        assert!(matches!(
            invalid(db.search(&q, &params)),
            InvalidInput::CollapseOutOfRange(_)
        ));
    }
}

/// Two orthogonal groups of rows: ids below 500 near `a`, the others near `b`.
fn two_groups(
    dir: &std::path::Path,
    coarse_type: ElemType,
) -> (hivlp::Database, Vec<f32>, Vec<f32>) {
    let db = create(dir, coarse_type);
    let mut rng = StdRng::seed_from_u64(3);
    let a = random_unit(&mut rng);
    let r = random_unit(&mut rng);
    // `b`: `r` without its component along `a`.
    let b = unit(
        r.iter()
            .zip(&a)
            .map(|(x, y)| x - cosine(&r, &a) * y)
            .collect(),
    );
    let rows: Vec<Item> = (0..1000)
        .map(|id| {
            let centre = if id < 500 { &a } else { &b };
            image_item(id, towards(centre, &random_unit(&mut rng), 0.4))
        })
        .collect();
    db.insert(rows).unwrap();
    (db, a, b)
}

#[test]
fn a_negative_part_moves_results_away_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let (db, a, b) = two_groups(dir.path(), ElemType::I8);
    let both = towards(&a, &b, 1.0);
    let params = SearchParams {
        k: 20,
        ..SearchParams::default()
    };
    let near_b = |hits: &[hivlp::Hit]| hits.iter().filter(|h| h.id >= 500).count();
    let plain = db.search(&Query::new(both.clone()), &params).unwrap();
    assert!(near_b(&plain) > 0 && near_b(&plain) < 20, "{plain:?}");
    let parts = [
        (QueryPart::Vector(Query::new(both.clone())), 1.0),
        (QueryPart::Vector(Query::new(b.clone())), -0.5),
    ];
    let away = db.search_parts(&parts, &params).unwrap();
    assert_eq!(near_b(&away), 0, "{away:?}");
    // And towards it with a positive weight.
    let parts = [
        (QueryPart::Vector(Query::new(both)), 1.0),
        (QueryPart::Vector(Query::new(b)), 0.5),
    ];
    let towards_b = db.search_parts(&parts, &params).unwrap();
    assert_eq!(near_b(&towards_b), 20, "{towards_b:?}");
}

#[test]
fn a_composed_query_is_the_normalised_weighted_sum_with_a_derived_coarse_vector() {
    let dir = tempfile::tempdir().unwrap();
    let (db, a, b) = two_groups(dir.path(), ElemType::F32);
    // Parts are normalised first: the scale of a vector part does not change its weight.
    let long_b: Vec<f32> = b.iter().map(|x| x * 7.0).collect();
    let parts = [
        (QueryPart::Vector(Query::new(a.clone())), 0.8),
        (QueryPart::Vector(Query::new(long_b)), -0.3),
    ];
    let composed = db.compose_query(&parts).unwrap();
    assert_eq!(composed.coarse, None);
    let expected = towards(&a, &b, -0.3 / 0.8);
    assert!(cosine(&composed.fine, &expected) > 0.99999);
    // The coarse vector the search derives for the query is the one a row with the same fine
    // vector gets: that row is the coarse stage's single best candidate (cosine 1).
    db.insert(vec![image_item(5000, composed.fine.clone())])
        .unwrap();
    let one = SearchParams {
        k: 1,
        candidates: Some(1),
        ..SearchParams::default()
    };
    let hits = db.search_parts(&parts, &one).unwrap();
    assert_eq!(hits[0].id, 5000);
    assert!((hits[0].score - 1.0).abs() < 1e-5, "{hits:?}");
    // After the projection is refitted (compaction), still the same map for both.
    db.compact().unwrap();
    assert_eq!(db.search_parts(&parts, &one).unwrap()[0].id, 5000);
}

#[test]
fn composed_queries_reject_bad_parts_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (db, a, _) = two_groups(dir.path(), ElemType::I8);
    let v = |fine: Vec<f32>| QueryPart::Vector(Query::new(fine));
    assert_eq!(invalid(db.compose_query(&[])), InvalidInput::NoQueryParts);
    assert_eq!(
        invalid(db.compose_query(&[(v(a.clone()), 1.0), (v(a.clone()), -1.0)])),
        InvalidInput::ComposedQueryZero
    );
    assert_eq!(
        invalid(db.compose_query(&[(v(a.clone()), 0.0)])),
        InvalidInput::ComposedQueryZero
    );
    assert!(matches!(
        invalid(db.compose_query(&[(v(a.clone()), f32::NAN)])),
        InvalidInput::PartWeightNotFinite { part: 0, .. }
    ));
    match invalid(db.compose_query(&[(v(a.clone()), 1.0), (v(vec![1.0; 3]), 1.0)])) {
        InvalidInput::QueryPart { part: 1, reason } => {
            assert!(matches!(
                *reason,
                InvalidInput::QueryDimension { got: 3, .. }
            ))
        }
        other => panic!("{other:?}"),
    }
    match invalid(db.compose_query(&[(v(vec![0.0; FINE]), 1.0), (v(a), 1.0)])) {
        InvalidInput::QueryPart { part: 0, reason } => {
            assert!(matches!(*reason, InvalidInput::QueryZero { .. }))
        }
        other => panic!("{other:?}"),
    }
    // Text and image parts need a model.
    assert!(matches!(
        db.compose_query(&[(QueryPart::Text("a dog"), 1.0)]),
        Err(Error::Model(hivlp::ModelError::NoModel))
    ));
}

#[test]
fn supplied_coarse_vectors_are_combined_like_the_fine_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::F32);
    db.insert(items(0..500, true)).unwrap();
    let record = |id| db.get(id).unwrap().unwrap().image.unwrap();
    let (x, y) = (record(1), record(2));
    let part = |e: &Embedding| QueryPart::Vector(Query::from(e.clone()));
    let composed = db
        .compose_query(&[(part(&x), 1.0), (part(&y), -0.5)])
        .unwrap();
    let coarse = composed.coarse.expect("a combined coarse vector");
    let (xc, yc) = (x.coarse.unwrap(), y.coarse.unwrap());
    assert!(cosine(&coarse, &towards(&xc, &yc, -0.5)) > 0.99999);
    let without = QueryPart::Vector(Query::new(y.fine));
    match invalid(db.compose_query(&[(part(&record(3)), 1.0), (without, 1.0)])) {
        InvalidInput::QueryPart { part: 1, reason } => {
            assert_eq!(*reason, InvalidInput::QueryCoarseRequired)
        }
        other => panic!("{other:?}"),
    }
    let hits = db
        .search(
            &Query {
                fine: composed.fine,
                coarse: Some(coarse),
            },
            &SearchParams {
                target: Target::Image,
                ..SearchParams::default()
            },
        )
        .unwrap();
    assert_eq!(hits[0].id, 1);
}

#[test]
fn collapse_compares_inner_product_vectors_at_unit_length() {
    let dir = tempfile::tempdir().unwrap();
    let schema = hivlp::Schema {
        metric: hivlp::Metric::InnerProduct,
        ..common::schema(ElemType::F32)
    };
    let db = hivlp::Database::create(dir.path().join("db"), schema, common::options()).unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let (x, y) = (random_unit(&mut rng), random_unit(&mut rng));
    // The same direction at three lengths, and another direction.
    let scaled = |v: &[f32], s: f32| v.iter().map(|a| a * s).collect::<Vec<f32>>();
    db.insert(vec![
        image_item(0, scaled(&x, 3.0)),
        image_item(1, scaled(&x, 2.0)),
        image_item(2, scaled(&x, 1.0)),
        image_item(3, scaled(&y, 1.0)),
    ])
    .unwrap();
    let params = SearchParams {
        exact: true,
        collapse: Some(0.99),
        ..SearchParams::default()
    };
    let hits = db
        .search(&Query::new(towards(&x, &y, 0.5)), &params)
        .unwrap();
    let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
    assert_eq!(ids, [0, 3]);
}
