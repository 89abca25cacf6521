use super::*;

#[test]
fn snapshot_opens_with_the_state_at_the_snapshot_moment() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let store = Store::create(dir.path().join("db"), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..30)).unwrap();
    store.flush().unwrap();
    store.delete(&[1, 2]).unwrap();
    store.insert(rows(&s, 30..40)).unwrap();
    store.delete(&[35]).unwrap();
    store.set_property("p", b"v".to_vec()).unwrap();
    let expected = dump(&store.view());
    let snap = dir.path().join("snap");
    store.snapshot(&snap).unwrap();
    // Later writes do not leak into the snapshot.
    store.insert(rows(&s, 40..45)).unwrap();
    store.compact(&MergeAll, None).unwrap();
    assert!(matches!(
        store.snapshot(&snap),
        Err(SnapshotError::DestinationExists { .. })
    ));
    drop(store);
    let copy = Store::open(&snap, opts()).unwrap();
    assert_eq!(dump(&copy.view()), expected);
    assert_eq!(copy.property("p"), Some(b"v".to_vec()));
    assert!(copy.next_id() >= 40);
    assert!(verify(&snap, VerifyLevel::Full).unwrap().is_ok());
    // The copy is independent and writable.
    copy.insert(rows(&s, [100])).unwrap();
    copy.flush().unwrap();
    let orig = Store::open(dir.path().join("db"), opts()).unwrap();
    assert_eq!(orig.view().len(), 42);
}
