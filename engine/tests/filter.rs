//! Predicates: every operator on every field type, nulls and mixed types, in memtable and
//! segment rows, after compaction and reopen; filtered recall at several selectivities;
//! the typed errors of bad predicates.

mod common;

use std::collections::BTreeSet;

use common::{create, generator, options};
use hivlp::filter::{Predicate, PredicateError};
use hivlp::synthetic::{Clustered, recall};
use hivlp::{
    Database, Durability, ElemType, Embedding, Error, InvalidInput, Item, Metric, Options, Query,
    Schema, SearchParams,
};

const ROWS: u64 = 60;

/// Row `i`'s metadata: `n` an int (absent, null or a string on some rows: nulls and mixed
/// types), `x` a float, `b` a bool, `s` a string, `t` a timestamp, `tags` a list of strings.
fn metadata(i: u64) -> String {
    let n = match i % 10 {
        9 => None,
        8 => Some("null".to_owned()),
        7 => Some("\"seven\"".to_owned()),
        _ => Some(i.to_string()),
    };
    let mut fields = vec![
        format!("\"x\": {}.5", i),
        format!("\"b\": {}", i.is_multiple_of(3)),
        format!("\"s\": \"s{}\"", i % 4),
        format!("\"t\": \"2021-07-{:02}\"", 1 + i % 28),
    ];
    if let Some(n) = n {
        fields.push(format!("\"n\": {n}"));
    }
    if i % 10 != 9 {
        let mut tags = vec![if i.is_multiple_of(2) {
            "\"even\""
        } else {
            "\"odd\""
        }];
        if i.is_multiple_of(5) {
            tags.push("\"fives\"");
        }
        fields.push(format!("\"tags\": [{}]", tags.join(", ")));
    }
    format!("{{{}}}", fields.join(", "))
}

fn rows(range: std::ops::Range<u64>) -> Vec<Item> {
    generator()
        .pairs(0, range.clone())
        .into_iter()
        .zip(range)
        .map(|(p, id)| Item {
            id: Some(id),
            metadata: metadata(id).into_bytes(),
            image: Some(Embedding {
                fine: p.fine,
                coarse: Some(p.coarse),
            }),
            ..Item::default()
        })
        .collect()
}

fn query() -> Query {
    let pair = generator().pair(1, 0);
    Query {
        fine: pair.fine,
        coarse: Some(pair.coarse),
    }
}

/// Whether row `i` has an int `n`.
fn int_n(i: u64) -> bool {
    !matches!(i % 10, 7..=9)
}

/// A predicate with the rows it must match.
type Case = (&'static str, fn(u64) -> bool);

fn cases() -> Vec<Case> {
    vec![
        ("n = 5", |i| i == 5),
        ("n != 5", |i| int_n(i) && i != 5),
        ("NOT n = 5", |i| int_n(i) && i != 5),
        ("n < 10", |i| int_n(i) && i < 10),
        ("n <= 10", |i| int_n(i) && i <= 10),
        ("n > 50", |i| int_n(i) && i > 50),
        ("n >= 50", |i| int_n(i) && i >= 50),
        ("n = 5.0", |i| i == 5),
        ("n < 4.5", |i| i < 5),
        ("n IN (1, 2, 3, 17)", |i| [1, 2, 3].contains(&i)),
        ("n NOT IN (1, 2, 3)", |i| {
            int_n(i) && ![1, 2, 3].contains(&i)
        }),
        ("n = 'seven'", |i| i % 10 == 7),
        ("n IS NULL", |i| matches!(i % 10, 8 | 9)),
        ("n IS NOT NULL", |i| !matches!(i % 10, 8 | 9)),
        ("n = 1 OR NOT n = 1", int_n),
        ("x > 10", |i| i >= 10),
        ("x = 10.5", |i| i == 10),
        ("x <= 3", |i| i < 3),
        ("x IN (1.5, 2.5)", |i| i == 1 || i == 2),
        ("b = true", |i| i.is_multiple_of(3)),
        ("b != true", |i| !i.is_multiple_of(3)),
        ("b = false", |i| !i.is_multiple_of(3)),
        ("s = 's1'", |i| i % 4 == 1),
        ("s < 's2'", |i| i % 4 < 2),
        ("s >= 's2'", |i| i % 4 >= 2),
        ("s IN ('s0', 's3')", |i| i.is_multiple_of(4) || i % 4 == 3),
        ("s NOT IN ('s0')", |i| !i.is_multiple_of(4)),
        ("s = 'it''s'", |_| false),
        ("t >= timestamp '2021-07-20'", |i| 1 + i % 28 >= 20),
        ("t < '2021-07-05'", |i| 1 + i % 28 < 5),
        ("t = '2021-07-03T00:00:00Z'", |i| 1 + i % 28 == 3),
        ("t IN ('2021-07-01', '2021-07-02')", |i| i % 28 < 2),
        ("'fives' IN tags", |i| i.is_multiple_of(5) && i % 10 != 9),
        ("tags CONTAINS 'even'", |i| i.is_multiple_of(2)),
        ("NOT 'even' IN tags", |i| i % 2 == 1 && i % 10 != 9),
        ("tags IS NULL", |i| i % 10 == 9),
        ("id < 5", |i| i < 5),
        ("id IN (3, 4, 100)", |i| i == 3 || i == 4),
        ("id NOT IN (3, 4)", |i| i != 3 && i != 4),
        ("n > 50 OR n IS NULL", |i| {
            (int_n(i) && i > 50) || matches!(i % 10, 8 | 9)
        }),
        ("n < 10 AND NOT b = true", |i| {
            int_n(i) && i < 10 && !i.is_multiple_of(3)
        }),
        ("(n < 5 OR n > 55) AND 'even' IN tags", |i| {
            int_n(i) && !(5..=55).contains(&i) && i.is_multiple_of(2)
        }),
        ("NOT (n < 30)", |i| int_n(i) && i >= 30),
        ("NOT (n < 30 AND b = true)", |i| {
            // UNKNOWN AND false is false, so NOT of it is true.
            (int_n(i) && i >= 30) || !i.is_multiple_of(3)
        }),
        ("true", |_| true),
        ("false", |_| false),
    ]
}

/// The ids `where_` selects, searched both exactly and two-stage with room for every row.
fn selected(db: &Database, where_: &str) -> BTreeSet<u64> {
    let predicate = Predicate::parse(where_).unwrap();
    let query = query();
    let mut found = Vec::new();
    for exact in [true, false] {
        let params = SearchParams {
            k: ROWS as usize * 2,
            exact,
            predicate: Some(predicate.clone()),
            ..SearchParams::default()
        };
        let hits = db.search(&query, &params).unwrap();
        found.push(hits.iter().map(|h| h.id).collect::<BTreeSet<u64>>());
    }
    assert_eq!(
        found[0], found[1],
        "exact and two-stage differ for {where_}"
    );
    found.remove(0)
}

/// Checks every case on a database holding rows `0..rows`.
fn check_all(db: &Database, rows: u64, stage: &str) {
    for (where_, expected) in cases() {
        let want: BTreeSet<u64> = (0..rows).filter(|&i| expected(i)).collect();
        assert_eq!(selected(db, where_), want, "{where_} ({stage})");
    }
}

#[test]
fn every_operator_on_every_type_in_memtable_segments_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(rows(0..ROWS / 2)).unwrap();
    check_all(&db, ROWS / 2, "memtable");
    db.flush().unwrap();
    db.insert(rows(ROWS / 2..ROWS)).unwrap();
    check_all(&db, ROWS, "a segment and the memtable");
    db.flush().unwrap();
    check_all(&db, ROWS, "two segments");
    db.compact().unwrap();
    check_all(&db, ROWS, "compacted");
    db.close().unwrap();
    let db = Database::open(dir.path().join("db"), options()).unwrap();
    check_all(&db, ROWS, "reopened");
}

#[test]
fn predicates_combine_with_id_lists_and_skip_deleted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(rows(0..ROWS)).unwrap();
    db.delete(&[2, 4]).unwrap();
    let query = query();
    let params = |filter| SearchParams {
        k: 100,
        filter,
        predicate: Some(Predicate::parse("n < 10").unwrap()),
        ..SearchParams::default()
    };
    let ids = |params: &SearchParams| -> BTreeSet<u64> {
        db.search(&query, params)
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect()
    };
    assert_eq!(ids(&params(None)), [0, 1, 3, 5, 6].into());
    // The segment's bitmap for the predicate is cached; deletes still apply.
    db.flush().unwrap();
    assert_eq!(ids(&params(None)), [0, 1, 3, 5, 6].into());
    db.delete(&[6]).unwrap();
    assert_eq!(ids(&params(None)), [0, 1, 3, 5].into());
    let allow = hivlp::Filter::Allow([1, 2, 3, 40].into());
    assert_eq!(ids(&params(Some(allow))), [1, 3].into());
    let deny = hivlp::Filter::Deny([0, 1].into());
    assert_eq!(ids(&params(Some(deny))), [3, 5].into());
}

#[test]
fn json_documents_mean_what_their_strings_mean() {
    let pairs = [
        (
            // An object's entries are read in key order.
            serde_json::json!({"year": {"$gte": 2020}, "tags": {"$contains": "beach"}}),
            "tags CONTAINS 'beach' AND year >= 2020",
        ),
        (serde_json::json!({"s": "s1"}), "s = 's1'"),
        (
            serde_json::json!({"$or": [{"n": {"$lt": 3}}, {"b": true}]}),
            "n < 3 OR b = true",
        ),
        (
            serde_json::json!({"n": {"$in": [1, 2], "$ne": 2}}),
            "n IN (1, 2) AND n != 2",
        ),
        (serde_json::json!({"n": {"$nin": [1.5]}}), "n NOT IN (1.5)"),
        (serde_json::json!({"n": {"$exists": false}}), "n IS NULL"),
        (serde_json::json!({"$not": {"id": 3}}), "NOT id = 3"),
        (
            serde_json::json!({"$and": [{"x": {"$lte": 1}}, {"x": {"$gt": 0}}]}),
            "x <= 1 AND x > 0",
        ),
    ];
    for (doc, text) in pairs {
        assert_eq!(
            Predicate::from_json(&doc).unwrap(),
            Predicate::parse(text).unwrap(),
            "{doc}"
        );
    }
    let bad = [
        (serde_json::json!({"n": {"$gt": null}}), "$.n.$gt"),
        (
            serde_json::json!({"n": {"$between": [1, 2]}}),
            "$.n.$between",
        ),
        (serde_json::json!({"$or": []}), "$.$or"),
        (serde_json::json!({"$or": [{"n": 1}, 3]}), "$.$or[1]"),
        (serde_json::json!({"n": {"$in": [1, [2]]}}), "$.n.$in[1]"),
        (
            serde_json::json!({"tags": {"$contains": 1}}),
            "$.tags.$contains",
        ),
        (serde_json::json!([1]), "$"),
    ];
    for (doc, at) in bad {
        match Predicate::from_json(&doc) {
            Err(PredicateError::Json { path, .. }) => assert_eq!(path, at, "{doc}"),
            other => panic!("{doc}: expected a Json error at {at}, got {other:?}"),
        }
    }
}

fn search_error(db: &Database, where_: &str) -> PredicateError {
    let params = SearchParams {
        predicate: Some(Predicate::parse(where_).unwrap()),
        ..SearchParams::default()
    };
    match db.search(&query(), &params) {
        Err(Error::InvalidInput(InvalidInput::Predicate(e))) => e,
        other => panic!("{where_}: expected a predicate error, got {other:?}"),
    }
}

#[test]
fn bad_predicates_are_typed_errors_naming_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(rows(0..ROWS)).unwrap();
    match search_error(&db, "n < 3 AND yeer = 2020") {
        PredicateError::UnknownField { field, at, known } => {
            assert_eq!((field.as_str(), at), ("yeer", Some(10)));
            assert!(known.contains(&"n".to_owned()), "{known:?}");
        }
        other => panic!("{other:?}"),
    }
    for (where_, at) in [
        ("n = true", 0),
        ("x = 'a'", 0),
        ("b > 1", 0),
        ("tags = 'even'", 0),
        ("s CONTAINS 'x'", 0),
        ("n < 3 OR id = 'a'", 9),
        (
            "t > timestamp '2021-01-01' AND s = timestamp '2021-01-01'",
            31,
        ),
        ("n IN (1, true)", 0),
    ] {
        match search_error(&db, where_) {
            PredicateError::TypeMismatch { at: got, .. } => assert_eq!(got, Some(at), "{where_}"),
            other => panic!("{where_}: {other:?}"),
        }
    }
    let message = search_error(&db, "x = 'a'").to_string();
    assert_eq!(
        message,
        "type mismatch for x at 0: 'a' is a string, x holds float values"
    );
    for (text, at, message) in [
        (
            "year >= AND x = 1",
            8,
            "expected a value after '>=', found 'AND'",
        ),
        (
            "n = 1 AND",
            9,
            "expected a field name after 'AND', found the end",
        ),
        ("(n = 1", 6, "expected ')' after '1', found the end"),
        ("n = 'abc", 4, "unterminated string"),
        ("n == 1 n", 7, "unexpected 'n' after a complete predicate"),
        ("n IN (1 2)", 8, "expected ',' or ')' after '1', found '2'"),
        (
            "n = NULL",
            4,
            "a comparison with NULL is never true; write IS NULL or IS NOT NULL",
        ),
        ("n IS 3", 5, "expected NULL after 'IS', found '3'"),
        (
            "t > timestamp 'July'",
            14,
            "'July' is not a timestamp (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS, or RFC 3339)",
        ),
        (
            "n = 99999999999999999999",
            4,
            "99999999999999999999 is outside the 64-bit integer range",
        ),
        ("n ~ 1", 2, "unexpected character '~'"),
        (
            "'x' = tags",
            4,
            "expected IN and a field (as in 'beach' IN tags) after ''x'', found '='",
        ),
    ] {
        match Predicate::parse(text) {
            Err(PredicateError::Syntax {
                at: got,
                message: m,
                text: t,
            }) => {
                assert_eq!((got, m.as_str(), t.as_str()), (at, message, text));
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn an_empty_database_matches_nothing_rather_than_failing() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    let params = SearchParams {
        predicate: Some(Predicate::parse("year > 3").unwrap()),
        ..SearchParams::default()
    };
    let hits = db.search(&query(), &params);
    assert_eq!(hits.unwrap(), Vec::new());
}

#[test]
fn printed_predicates_parse_back() {
    for (text, _) in cases() {
        let p = Predicate::parse(text).unwrap();
        assert_eq!(
            Predicate::parse(&p.to_string()).unwrap(),
            p,
            "{text} -> {p}"
        );
    }
    let nested =
        Predicate::parse("a = 1 AND (b = 2 AND c = 3) OR NOT (d = 4 OR e = 'x''y')").unwrap();
    assert_eq!(Predicate::parse(&nested.to_string()).unwrap(), nested);
    assert_eq!(
        Predicate::parse("\"my key\" = 1 AND \"id\" = 2")
            .unwrap()
            .to_string(),
        "\"my key\" = 1 AND \"id\" = 2"
    );
}

/// 100k rows of small vectors, `bucket = i % 1000` in the metadata: the predicates below
/// match 50%, 20%, 10%, 1%, 0.1% and a single row.
#[test]
fn filtered_search_keeps_recall_at_every_selectivity() {
    const N: u64 = 100_000;
    const FINE: usize = 64;
    const COARSE: usize = 32;
    let generator = Clustered::new(FINE, COARSE, 100, 1.0, 11);
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema {
        fine_dim: FINE,
        coarse_dim: COARSE,
        fine_type: ElemType::F32,
        coarse_type: ElemType::I8,
        metric: Metric::Cosine,
    };
    let opts = Options {
        durability: Durability::Buffered,
        memtable_rows: 40_000,
        threads: Some(2),
        ..Options::default()
    };
    let db = Database::create(dir.path().join("db"), schema, opts).unwrap();
    for start in (0..N).step_by(20_000) {
        let items = generator
            .pairs(0, start..start + 20_000)
            .into_iter()
            .zip(start..)
            .map(|(p, id)| Item {
                id: Some(id),
                metadata: format!("{{\"bucket\": {}}}", id % 1000).into_bytes(),
                image: Some(Embedding {
                    fine: p.fine,
                    coarse: Some(p.coarse),
                }),
                ..Item::default()
            })
            .collect();
        db.insert(items).unwrap();
    }
    let k = 10;
    for (where_, matching) in [
        // A scan testing rows entering its top M, a scan skipping rows (with a longer
        // shortlist), then the matching rows ranked exactly.
        ("bucket < 500", 50_000),
        ("bucket < 200", 20_000),
        ("bucket < 100", 10_000),
        ("bucket < 10", 1_000),
        ("bucket = 7", 100),
        ("id = 54321", 1),
    ] {
        let predicate = Predicate::parse(where_).unwrap();
        let mut total = 0.0;
        let queries = 20;
        for q in 0..queries {
            let pair = generator.pair(1, q);
            let query = Query {
                fine: pair.fine.clone(),
                coarse: Some(pair.coarse),
            };
            let params = |exact| SearchParams {
                k,
                exact,
                predicate: Some(predicate.clone()),
                ..SearchParams::default()
            };
            let truth: Vec<u64> = db
                .search(&query, &params(true))
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect();
            let found: Vec<u64> = db
                .search(&query, &params(false))
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect();
            assert_eq!(found.len(), k.min(matching), "{where_}");
            assert_eq!(truth.len(), k.min(matching), "{where_}");
            total += recall(&found, &truth);
            if q == 0 {
                // The exact filtered search is the brute force over the matching rows.
                let mut brute: Vec<(f32, u64)> = (0..N)
                    .filter(|id| {
                        if where_.starts_with("id") {
                            *id == 54321
                        } else {
                            matches_bucket(where_, id % 1000)
                        }
                    })
                    .map(|id| {
                        let row = generator.pair(0, id).fine;
                        (
                            row.iter().zip(&pair.fine).map(|(a, b)| a * b).sum::<f32>(),
                            id,
                        )
                    })
                    .collect();
                brute.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let brute: Vec<u64> = brute.iter().take(k).map(|b| b.1).collect();
                assert!(
                    recall(&truth, &brute) >= 0.9,
                    "{where_}: {truth:?} vs {brute:?}"
                );
            }
        }
        let mean = total / queries as f64;
        assert!(mean >= 0.99, "{where_}: recall@{k} {mean}");
    }
}

fn matches_bucket(where_: &str, bucket: u64) -> bool {
    match where_ {
        "bucket < 500" => bucket < 500,
        "bucket < 200" => bucket < 200,
        "bucket < 100" => bucket < 100,
        "bucket < 10" => bucket < 10,
        "bucket = 7" => bucket == 7,
        other => unreachable!("{other}"),
    }
}

#[test]
fn metadata_updates_are_visible_to_cached_predicates_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(rows(0..ROWS)).unwrap();
    db.flush().unwrap();
    // Caches the segment's bitmap.
    assert_eq!(selected(&db, "s = 'moved'"), BTreeSet::new());
    assert_eq!(selected(&db, "n = 3"), [3].into());
    let update = hivlp::MetadataUpdate {
        metadata: Some(br#"{"s": "moved", "n": 4}"#.to_vec()),
        ..hivlp::MetadataUpdate::default()
    };
    assert!(db.update(3, update).unwrap());
    assert_eq!(selected(&db, "s = 'moved'"), [3].into());
    assert_eq!(selected(&db, "n = 3"), BTreeSet::new());
    assert_eq!(selected(&db, "n = 4"), [3, 4].into());
    db.flush().unwrap();
    db.compact().unwrap();
    assert_eq!(selected(&db, "n = 4"), [3, 4].into());
}

#[test]
fn predicates_compose_with_min_score_and_collapse() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(rows(0..ROWS)).unwrap();
    let even = Predicate::parse("'even' IN tags").unwrap();
    let all = db
        .search(
            &query(),
            &SearchParams {
                k: ROWS as usize,
                predicate: Some(even.clone()),
                ..SearchParams::default()
            },
        )
        .unwrap();
    assert_eq!(all.len(), ROWS as usize / 2);
    assert!(all.iter().all(|h| h.id % 2 == 0));
    let floor = all[4].score;
    let above = db
        .search(
            &query(),
            &SearchParams {
                k: ROWS as usize,
                predicate: Some(even.clone()),
                min_score: Some(floor),
                ..SearchParams::default()
            },
        )
        .unwrap();
    assert_eq!(above, all[..5].to_vec());
    // Collapse searches again with more candidates; every round keeps to the predicate.
    let distinct = db
        .search(
            &query(),
            &SearchParams {
                k: 5,
                predicate: Some(even),
                collapse: Some(0.999),
                ..SearchParams::default()
            },
        )
        .unwrap();
    assert_eq!(distinct.len(), 5);
    assert!(distinct.iter().all(|h| h.id % 2 == 0));
}

#[test]
fn predicates_nested_beyond_the_limit_are_typed_errors_not_stack_overflows() {
    use hivlp::filter::{MAX_DEPTH, field};
    let deep = 100_000;
    let parens = format!("{}n = 1{}", "(".repeat(deep), ")".repeat(deep));
    let nots = format!("{}n = 1", "NOT ".repeat(deep));
    for text in [parens, nots] {
        match Predicate::parse(&text) {
            Err(PredicateError::Syntax { message, .. }) => {
                assert!(message.contains("nested more than"), "{message}")
            }
            other => panic!("expected a nesting error, got {:?}", other.map(|_| ())),
        }
    }
    // At the limit it parses.
    let ok = format!(
        "{}n = 1{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    Predicate::parse(&ok).unwrap();
    let mut doc = serde_json::json!({"n": 1});
    for _ in 0..=MAX_DEPTH {
        doc = serde_json::json!({ "$not": doc });
    }
    assert!(matches!(
        Predicate::from_json(&doc),
        Err(PredicateError::Json { .. })
    ));
    // A tree built in code is refused when searched.
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(rows(0..100)).unwrap();
    let mut built = field("n").eq(1);
    for _ in 0..(4 * MAX_DEPTH) {
        built = !built;
    }
    let params = SearchParams {
        predicate: Some(built),
        ..SearchParams::default()
    };
    assert!(matches!(
        db.search(&query(), &params),
        Err(Error::InvalidInput(InvalidInput::Predicate(
            PredicateError::TooDeep
        )))
    ));
}
