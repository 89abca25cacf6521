//! Bad input gets a typed error, never a panic, and changes nothing.

mod common;

use common::{COARSE, FINE, create, items, options, schema};
use hivlp::{
    Database, ElemType, Embedding, Error, InvalidInput, Item, MAX_CANDIDATES, MAX_ID, ModelError,
    Options, Query, SearchParams, Target, Tier, parse_target,
};

fn invalid(result: hivlp::Result<impl std::fmt::Debug>) -> InvalidInput {
    match result {
        Err(Error::InvalidInput(e)) => e,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn image(fine: Vec<f32>, coarse: Option<Vec<f32>>) -> Item {
    Item {
        image: Some(Embedding { fine, coarse }),
        ..Item::default()
    }
}

#[test]
fn bad_items_are_rejected_with_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(items(0..10, true)).unwrap();
    let good = || image(vec![1.0; FINE], Some(vec![1.0; COARSE]));
    let cases = [
        (
            image(vec![1.0; FINE + 1], Some(vec![1.0; COARSE])),
            "dimension",
        ),
        (
            image(vec![1.0; FINE], Some(vec![1.0; COARSE - 1])),
            "dimension",
        ),
        (image(vec![f32::NAN; FINE], Some(vec![1.0; COARSE])), "nan"),
        (image(vec![0.0; FINE], Some(vec![1.0; COARSE])), "zero"),
        (image(vec![1.0; FINE], None), "coarse required"),
        (Item::default(), "empty"),
    ];
    for (bad, what) in cases {
        let err = invalid(db.insert(vec![good(), bad]));
        match (what, &err) {
            ("dimension", InvalidInput::ItemDimension { item: 1, .. })
            | ("nan", InvalidInput::ItemNonFinite { item: 1, .. })
            | ("zero", InvalidInput::ItemZero { item: 1, .. })
            | ("coarse required", InvalidInput::CoarseRequired { item: 1, .. })
            | ("empty", InvalidInput::ItemEmpty { item: 1 }) => {}
            _ => panic!("{what}: unexpected {err:?}"),
        }
    }
    // Storage's validation (ids) comes through typed as well.
    let mut twice = items(100..101, true);
    twice.extend(items(100..101, true));
    assert!(matches!(invalid(db.insert(twice)), InvalidInput::Row(_)));
    assert!(matches!(
        invalid(db.insert(items(5..6, true))),
        InvalidInput::Row(_)
    ));
    assert_eq!(db.len().unwrap(), 10);
}

#[test]
fn bad_queries_and_parameters_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::F16);
    db.insert(items(0..10, true)).unwrap();
    let query = Query {
        fine: vec![1.0; FINE],
        coarse: Some(vec![1.0; COARSE]),
    };
    let params = SearchParams::default();
    let k0 = SearchParams {
        k: 0,
        ..SearchParams::default()
    };
    assert_eq!(invalid(db.search(&query, &k0)), InvalidInput::ZeroK);
    let few = SearchParams {
        k: 10,
        candidates: Some(5),
        ..SearchParams::default()
    };
    assert_eq!(
        invalid(db.search(&query, &few)),
        InvalidInput::CandidatesBelowK {
            candidates: 5,
            k: 10
        }
    );
    let short = Query {
        fine: vec![1.0; 3],
        ..query.clone()
    };
    assert_eq!(
        invalid(db.search(&short, &params)),
        InvalidInput::QueryDimension {
            tier: Tier::Fine,
            expected: FINE,
            got: 3
        }
    );
    let mut nan = query.clone();
    nan.fine[7] = f32::INFINITY;
    assert!(matches!(
        invalid(db.search(&nan, &params)),
        InvalidInput::QueryNonFinite {
            tier: Tier::Fine,
            index: 7,
            ..
        }
    ));
    let no_coarse = Query::new(vec![1.0; FINE]);
    assert_eq!(
        invalid(db.search(&no_coarse, &params)),
        InvalidInput::QueryCoarseRequired
    );
    // Exact search needs no coarse vector.
    let exact = SearchParams {
        exact: true,
        ..SearchParams::default()
    };
    assert_eq!(db.search(&no_coarse, &exact).unwrap().len(), 10);
    assert_eq!(
        invalid(db.search_batch(&[query.clone(), short], &params)),
        InvalidInput::QueryDimension {
            tier: Tier::Fine,
            expected: FINE,
            got: 3
        }
    );
    assert_eq!(
        parse_target("audio"),
        Err(InvalidInput::UnknownTarget("audio".into()))
    );
    assert_eq!(parse_target("Text"), Ok(Target::Text));
    assert!(matches!(
        db.search_text("a red apple", &params),
        Err(Error::Model(ModelError::NoModel))
    ));
}

#[test]
fn derived_coarse_databases_refuse_supplied_coarse_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::F32);
    db.insert(items(0..10, false)).unwrap();
    assert!(matches!(
        invalid(db.insert(items(10..11, true))),
        InvalidInput::CoarseNotExpected { item: 0, .. }
    ));
}

#[test]
fn locks_read_only_and_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::F32);
    db.insert(items(0..3, true)).unwrap();
    db.flush().unwrap();
    let path = dir.path().join("db");
    assert!(matches!(
        Database::open(&path, options()),
        Err(Error::Locked { .. })
    ));
    let reader = Database::open(
        &path,
        Options {
            read_only: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(reader.len().unwrap(), 3);
    assert!(matches!(
        reader.insert(items(3..4, true)),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(
        Database::create(dir.path().join("db"), schema(ElemType::F32), options()),
        Err(Error::AlreadyExists { .. } | Error::Locked { .. })
    ));
    let zero_threads = Options {
        threads: Some(0),
        ..options()
    };
    assert!(matches!(
        Database::create(
            dir.path().join("other"),
            schema(ElemType::F32),
            zero_threads
        ),
        Err(Error::InvalidInput(InvalidInput::ZeroThreads))
    ));
    assert!(matches!(
        Database::open(dir.path().join("missing"), options()),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn absurd_k_and_candidates_are_rejected_and_large_ones_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(items(0..10, true)).unwrap();
    let query = Query {
        fine: vec![1.0; FINE],
        coarse: Some(vec![1.0; COARSE]),
    };
    let with = |k: usize, candidates: Option<usize>, exact: bool| SearchParams {
        k,
        candidates,
        exact,
        ..SearchParams::default()
    };
    for exact in [false, true] {
        for params in [
            with(1 << 62, None, exact),
            with(1 << 40, None, exact),
            with(usize::MAX, None, exact),
            with(10, Some(1 << 62), exact),
        ] {
            let expected = |e: &InvalidInput| {
                matches!(
                    e,
                    InvalidInput::KTooLarge {
                        max: MAX_CANDIDATES,
                        ..
                    } | InvalidInput::CandidatesTooLarge {
                        max: MAX_CANDIDATES,
                        ..
                    }
                )
            };
            assert!(expected(&invalid(db.search(&query, &params))));
            let batch = db.search_batch(std::slice::from_ref(&query), &params);
            assert!(expected(&invalid(batch)));
        }
        // Within the limit but beyond the rows: every row, nothing allocated for the rest.
        let big = with(MAX_CANDIDATES, Some(MAX_CANDIDATES), exact);
        assert_eq!(db.search(&query, &big).unwrap().len(), 10);
    }
}

#[test]
fn explicit_ids_above_the_limit_are_refused_and_automatic_ids_continue() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    let top = MAX_ID;
    assert_eq!(top, i64::MAX as u64);
    let with_id = |id: Option<u64>, n: u64| {
        let mut item = items(n..n + 1, true).remove(0);
        item.id = id;
        vec![item]
    };
    for too_large in [top + 1, u64::MAX - 1] {
        assert!(matches!(
            invalid(db.insert(with_id(Some(too_large), 0))),
            InvalidInput::Row(hivlp_storage::InvalidInput::IdTooLarge { id, row: 0, max: MAX_ID })
                if id == too_large
        ));
    }
    assert_eq!(db.insert(with_id(Some(top), 0)).unwrap(), [top]);
    assert_eq!(db.insert(with_id(None, 1)).unwrap(), [top + 1]);
    assert_eq!(db.insert(with_id(None, 2)).unwrap(), [top + 2]);
    drop(db);
    let db = Database::open(dir.path().join("db"), options()).unwrap();
    assert_eq!(db.insert(with_id(None, 3)).unwrap(), [top + 3]);
}

/// The one create-or-open both bindings use: dimensions only (and always) without a model,
/// creation over nothing or a killed create's leftovers, never over someone else's files.
#[test]
fn open_or_create_decides_like_a_user_expects() {
    use hivlp::{ModelChoice, NewDatabase};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let vectors_only = || Options {
        model: ModelChoice::from("none"),
        ..Options::default()
    };
    let no_dims = NewDatabase::default();
    assert!(matches!(
        Database::open_or_create(&path, &no_dims, vectors_only()),
        Err(hivlp::Error::InvalidInput(hivlp::InvalidInput::Dimensions(
            _
        )))
    ));
    assert!(!path.exists(), "a refused create leaves nothing");
    let new = NewDatabase {
        dims: Some((8, 4)),
        ..NewDatabase::default()
    };
    let db = Database::open_or_create(&path, &new, vectors_only()).unwrap();
    assert_eq!((db.schema().fine_dim, db.schema().coarse_dim), (8, 4));
    db.insert(vec![hivlp::Item {
        image: Some(hivlp::Embedding {
            fine: vec![1.0; 8],
            coarse: None,
        }),
        ..hivlp::Item::default()
    }])
    .unwrap();
    drop(db);
    let db = Database::open_or_create(&path, &no_dims, vectors_only()).unwrap();
    assert_eq!(db.len().unwrap(), 1);
    drop(db);
    let with_model = Options {
        model: ModelChoice::from("default"),
        ..Options::default()
    };
    assert!(matches!(
        Database::create_new(dir.path().join("m"), &new, with_model),
        Err(hivlp::Error::InvalidInput(hivlp::InvalidInput::Dimensions(
            _
        )))
    ));
    let foreign = dir.path().join("photos");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("holiday.jpg"), b"not ours").unwrap();
    assert!(matches!(
        Database::open_or_create(&foreign, &new, vectors_only()),
        Err(hivlp::Error::NotFound { .. })
    ));
}
