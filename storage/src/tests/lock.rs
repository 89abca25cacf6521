use super::*;

#[test]
fn second_writer_in_process_is_locked_out_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let first = Store::create(dir.path(), s, opts()).unwrap();
    match Store::open(dir.path(), opts()) {
        Err(OpenError::Locked { path }) => {
            assert_eq!(path, dir.path().join("LOCK"));
            let msg = OpenError::Locked { path }.to_string();
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let ro = StoreOptions {
        read_only: true,
        ..opts()
    };
    assert!(Store::open(dir.path(), ro).is_ok());
    drop(first);
    assert!(Store::open(dir.path(), opts()).is_ok());
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<View>();
    check::<Source>();
}

/// Read-only opens racing a writer that flushes and compacts (replacing the manifest and
/// deleting files) still succeed and see a consistent state.
#[test]
fn read_only_opens_race_flushes_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    let path = dir.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        let ro = StoreOptions {
            read_only: true,
            ..opts()
        };
        let mut last = 0;
        for _ in 0..20 {
            let r = Store::open(&path, ro.clone()).unwrap();
            let n = dump(&r.view()).len();
            assert!(n >= last, "went back from {last} to {n} rows");
            last = n;
        }
    });
    for i in 0..20u64 {
        store.insert(rows(&s, i * 5..i * 5 + 5)).unwrap();
        store.flush().unwrap();
        if i % 4 == 3 {
            store.compact(&MergeAll, None).unwrap();
        }
    }
    reader.join().unwrap();
}
