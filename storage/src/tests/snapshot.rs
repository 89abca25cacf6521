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

/// Issue 8.1: two snapshots racing into one new destination. Exactly one wins, the other is
/// told the destination exists, and the live database is untouched (before the fix both
/// "succeeded" and the loser's copy fallback truncated every live segment file).
#[test]
fn concurrent_snapshots_into_one_destination_never_touch_the_live_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let db = dir.path().join("db");
    let store = Store::create(&db, s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..50)).unwrap();
    store.flush().unwrap();
    let expected = dump(&store.view());
    let live_bytes = |db: &Path| -> Vec<(String, u64)> {
        files(db)
            .into_iter()
            .filter(|f| f.starts_with("seg-"))
            .map(|f| (f.clone(), std::fs::metadata(db.join(&f)).unwrap().len()))
            .collect()
    };
    let sizes = live_bytes(&db);
    for round in 0..20 {
        let dest = dir.path().join(format!("snap-{round}"));
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<_> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        store.snapshot(&dest)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(SnapshotError::DestinationExists { .. }))),
            "round {round}: {results:?}"
        );
        assert_eq!(live_bytes(&db), sizes, "round {round}: live files changed");
        assert_eq!(dump(&store.view()), expected);
        let copy = Store::open(&dest, opts()).unwrap();
        assert_eq!(dump(&copy.view()), expected);
    }
    assert!(verify(&db, VerifyLevel::Full).unwrap().is_ok());
}

/// Issue 8.2: an empty destination, the database directory itself and anything inside it are
/// refused before anything is created; a failed snapshot leaves nothing behind.
#[test]
fn snapshot_destinations_that_could_hit_the_database_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let db = dir.path().join("db");
    let store = Store::create(&db, s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..20)).unwrap();
    store.flush().unwrap();
    let listing = files(&db);
    let invalid = |dest: &Path| {
        let r = store.snapshot(dest);
        assert!(
            matches!(r, Err(SnapshotError::InvalidDestination { .. })),
            "{}: {r:?}",
            dest.display()
        );
    };
    invalid(Path::new(""));
    invalid(&db);
    invalid(&db.join("backup"));
    invalid(&db.join("a/b/c"));
    invalid(&dir.path().join("elsewhere/../db/backup"));
    invalid(&dir.path().join("missing/../backup"));
    assert_eq!(files(&db), listing);
    assert_eq!(files(dir.path()), ["db"]);
    // A destination below a regular file fails at creation and leaves nothing.
    std::fs::write(dir.path().join("plain"), b"x").unwrap();
    assert!(matches!(
        store.snapshot(&dir.path().join("plain/snap")),
        Err(SnapshotError::Io(_))
    ));
    assert!(matches!(
        store.snapshot(&dir.path().join("new/parent/plain/x")),
        Ok(())
    ));
    assert!(Store::open(dir.path().join("new/parent/plain/x"), opts()).is_ok());
    // Through `..` out of the database directory is fine.
    store.snapshot(&db.join("../sibling")).unwrap();
    assert_eq!(
        Store::open(dir.path().join("sibling"), opts())
            .unwrap()
            .view()
            .len(),
        20
    );
    assert_eq!(files(&db), listing);
}

/// Issue 8.9: a read-only handle snapshots the state it holds open, even after the writer
/// compacted the files of that state away.
#[test]
fn a_reader_snapshots_what_it_holds_after_the_writer_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F16, ElemType::I8);
    let db = dir.path().join("db");
    let writer = Store::create(&db, s.clone(), opts()).unwrap();
    for chunk in 0..3u64 {
        writer
            .insert(rows(&s, chunk * 10..chunk * 10 + 10))
            .unwrap();
        writer.flush().unwrap();
    }
    writer.delete(&[3, 4]).unwrap();
    let reader = Store::open(
        &db,
        StoreOptions {
            read_only: true,
            ..opts()
        },
    )
    .unwrap();
    let held = dump(&reader.view());
    writer.delete(&[5]).unwrap();
    writer.compact(&MergeAll, None).unwrap();
    assert!(!db.join(crate::segment::meta_file_name(1)).exists());
    let snap = dir.path().join("snap");
    reader.snapshot(&snap).unwrap();
    let copy = Store::open(&snap, opts()).unwrap();
    assert_eq!(dump(&copy.view()), held);
    assert!(verify(&snap, VerifyLevel::Full).unwrap().is_ok());
}
