use super::*;

#[test]
fn bad_input_is_rejected_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F16);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, [1])).unwrap();
    let wal_before = store.stats().unwrap().wal_bytes;
    let check = |batch: Vec<Row>, want: &dyn Fn(&InvalidInput) -> bool| match store.insert(batch) {
        Err(CommitError::InvalidInput(e)) => assert!(want(&e), "{e}"),
        other => panic!("expected invalid input, got {other:?}"),
    };
    check(vec![], &|e| matches!(e, InvalidInput::EmptyBatch));
    let mut r = row(&s, 2);
    r.image.as_mut().unwrap().fine.pop();
    check(vec![r], &|e| {
        matches!(
            e,
            InvalidInput::Dimension {
                tier: Tier::Fine,
                expected: 20,
                got: 19,
                ..
            }
        )
    });
    let mut r = row(&s, 2);
    r.text.as_mut().unwrap().coarse[3] = f32::NAN;
    check(rows(&s, [5]).into_iter().chain([r]).collect(), &|e| {
        matches!(
            e,
            InvalidInput::NonFinite {
                row: 1,
                index: 3,
                modality: Modality::Text,
                ..
            }
        )
    });
    let mut r = row(&s, 2);
    r.image.as_mut().unwrap().fine[0] = f32::INFINITY;
    check(vec![r], &|e| matches!(e, InvalidInput::NonFinite { .. }));
    let mut r = row(&s, 2);
    r.image.as_mut().unwrap().coarse[0] = 1e6; // beyond f16
    check(vec![r], &|e| matches!(e, InvalidInput::OutOfRange { .. }));
    check(rows(&s, [3, 4, 3]), &|e| {
        matches!(
            e,
            InvalidInput::DuplicateId {
                id: 3,
                first: 0,
                second: 2
            }
        )
    });
    check(rows(&s, [3, 1]), &|e| {
        matches!(e, InvalidInput::IdExists { id: 1, row: 1 })
    });
    check(rows(&s, [u64::MAX]), &|e| {
        matches!(e, InvalidInput::ReservedId { .. })
    });
    check(rows(&s, [5, MAX_ID + 1]), &|e| {
        matches!(
            e,
            InvalidInput::IdTooLarge {
                id,
                row: 1,
                max: MAX_ID
            } if *id == MAX_ID + 1
        )
    });
    let mut r = row(&s, 2);
    r.metadata = vec![0; MAX_METADATA_BYTES + 1];
    check(vec![r], &|e| {
        matches!(
            e,
            InvalidInput::TooLarge {
                field: "metadata",
                ..
            }
        )
    });
    let mut r = row(&s, 2);
    r.caption = Some("x".repeat(MAX_CAPTION_BYTES + 1));
    check(vec![r], &|e| {
        matches!(
            e,
            InvalidInput::TooLarge {
                field: "caption",
                ..
            }
        )
    });
    let mut r = row(&s, 2);
    (r.image, r.text) = (None, None);
    check(vec![r], &|e| matches!(e, InvalidInput::NoVectors { .. }));
    assert_eq!(store.stats().unwrap().wal_bytes, wal_before);
    assert_eq!(store.view().len(), 1);
    assert!(matches!(
        store.set_property(&"k".repeat(2000), vec![]),
        Err(CommitError::InvalidInput(
            InvalidInput::PropertyTooLarge { .. }
        ))
    ));
}

#[test]
fn bad_schemas_and_paths_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = schema(ElemType::F32, ElemType::F32);
    s.coarse_dim = 0;
    assert!(matches!(
        Store::create(dir.path(), s, opts()),
        Err(OpenError::InvalidSchema(_))
    ));
    assert!(matches!(
        Store::open(dir.path().join("nope"), opts()),
        Err(OpenError::NotFound { .. })
    ));
    let s = schema(ElemType::F32, ElemType::F32);
    // An empty path would be the working directory: refused before anything is created.
    assert!(matches!(
        Store::create("", s.clone(), opts()),
        Err(OpenError::EmptyPath)
    ));
    assert!(matches!(Store::open("", opts()), Err(OpenError::EmptyPath)));
    drop(Store::create(dir.path(), s.clone(), opts()).unwrap());
    assert!(matches!(
        Store::create(dir.path(), s, opts()),
        Err(OpenError::AlreadyExists { .. })
    ));
}

#[test]
fn read_only_handles_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let w = Store::create(dir.path(), s.clone(), opts()).unwrap();
    w.insert(rows(&s, 0..3)).unwrap();
    let ro = StoreOptions {
        read_only: true,
        ..opts()
    };
    let r = Store::open(dir.path(), ro).unwrap();
    assert_eq!(r.view().len(), 3);
    assert!(matches!(
        r.insert(rows(&s, [9])),
        Err(CommitError::ReadOnly)
    ));
    assert!(matches!(r.delete(&[0]), Err(CommitError::ReadOnly)));
    assert!(matches!(r.flush(), Err(CommitError::ReadOnly)));
    assert!(matches!(
        r.compact(&MergeAll, None),
        Err(CompactionError::ReadOnly)
    ));
    // The writer carries on while the reader is open.
    w.insert(rows(&s, [4])).unwrap();
    w.flush().unwrap();
    assert_eq!(r.view().len(), 3);
    r.close().unwrap();
    w.close().unwrap();
    assert!(Store::open(dir.path(), opts()).is_ok());
}

/// A chosen id near the top of the range used to leave `allocate_ids` nothing to hand out
/// ("id 18446744073709551615 is reserved" for every later automatic id).
#[test]
fn ids_above_max_id_come_only_from_allocate_ids() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F16);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    for too_large in [MAX_ID + 1, u64::MAX - 1] {
        assert!(matches!(
            store.insert(rows(&s, [too_large])),
            Err(CommitError::InvalidInput(InvalidInput::IdTooLarge { .. }))
        ));
    }
    store.insert(rows(&s, [MAX_ID])).unwrap();
    let fresh = store.allocate_ids(2);
    assert_eq!(fresh, MAX_ID + 1..MAX_ID + 3);
    store.insert(rows(&s, fresh)).unwrap();
    // An allocated id may be reused once its row is deleted; one never handed out may not.
    assert_eq!(store.delete(&[MAX_ID + 1]).unwrap(), 1);
    store.insert(rows(&s, [MAX_ID + 1])).unwrap();
    assert!(store.insert(rows(&s, [MAX_ID + 3])).is_err());
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.allocate_ids(1), MAX_ID + 3..MAX_ID + 4);
}

/// A delete of more ids than one WAL record holds is refused whole, before any id is looked up
/// (the ids here are zero pages that are never touched).
#[test]
fn delete_of_more_ids_than_one_record_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F16);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..3)).unwrap();
    let wal_before = store.stats().unwrap().wal_bytes;
    let ids = vec![0u64; crate::wal::MAX_RECORD_LEN / 8];
    match store.delete(&ids) {
        Err(CommitError::InvalidInput(InvalidInput::BatchTooLarge { len, max })) => {
            assert!(len > max, "{len} <= {max}")
        }
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert_eq!(store.view().len(), 3);
    assert_eq!(store.stats().unwrap().wal_bytes, wal_before);
    assert_eq!(store.delete(&ids[..2]).unwrap(), 1);
}
