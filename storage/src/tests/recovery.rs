use super::*;
use crate::wal::wal_file_name;

fn wal_path(dir: &Path) -> std::path::PathBuf {
    let n = files(dir)
        .into_iter()
        .filter(|f| f.starts_with("wal-"))
        .max()
        .unwrap();
    dir.join(n)
}

#[test]
fn torn_wal_tail_is_dropped_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..3)).unwrap();
    let two = dump(&store.view());
    let len_two = store.stats().unwrap().wal_bytes;
    store.insert(rows(&s, 3..6)).unwrap();
    drop(store);
    let wal = wal_path(dir.path());
    let full = std::fs::read(&wal).unwrap();
    // Every cut inside the second record recovers exactly the first batch.
    for cut in [
        len_two + 1,
        len_two + 8,
        len_two + 50,
        full.len() as u64 - 1,
    ] {
        std::fs::write(&wal, &full[..cut as usize]).unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        assert_eq!(dump(&store.view()), two, "cut at {cut}");
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), len_two, "truncated");
        // Appending after recovery works and survives another reopen.
        store.insert(rows(&s, [50])).unwrap();
        drop(store);
        let store = Store::open(dir.path(), opts()).unwrap();
        assert_eq!(store.view().len(), 4);
        drop(store);
        std::fs::write(&wal, &full).unwrap();
    }
}

#[test]
fn damaged_wal_record_before_valid_ones_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..3)).unwrap();
    store.insert(rows(&s, 3..6)).unwrap();
    drop(store);
    let wal = wal_path(dir.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&wal, &bytes).unwrap();
    match Store::open(dir.path(), opts()) {
        Err(OpenError::Corruption(e)) => assert_eq!(e.file, wal),
        other => panic!("expected corruption, got {other:?}"),
    }
    let report = verify(dir.path(), VerifyLevel::Full).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].file, wal);
}

#[test]
fn interrupted_flush_leftovers_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..3)).unwrap();
    let expected = dump(&store.view());
    drop(store);
    // What a crash in the middle of a flush leaves behind: segment files and a newer WAL
    // and manifest that CURRENT does not name.
    for f in [
        "seg-000001.meta",
        "seg-000001.image.fine",
        "MANIFEST-000002",
        "CURRENT.tmp",
    ] {
        std::fs::write(dir.path().join(f), b"partial").unwrap();
    }
    std::fs::write(dir.path().join(wal_file_name(2)), b"").unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), expected);
    let left = files(dir.path());
    assert!(
        !left
            .iter()
            .any(|f| f.starts_with("seg-") || f == "MANIFEST-000002" || f == "CURRENT.tmp"),
        "{left:?}"
    );
    store.insert(rows(&s, [9])).unwrap();
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.view().len(), 4);
    let left = files(dir.path());
    assert_eq!(
        left.iter().filter(|f| f.starts_with("wal-")).count(),
        1,
        "{left:?}"
    );
    assert_eq!(
        left.iter().filter(|f| f.starts_with("MANIFEST-")).count(),
        1,
        "{left:?}"
    );
}

#[test]
fn every_damaged_segment_file_is_reported_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F16, ElemType::I8);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..40)).unwrap();
    store.delete(&[3, 4]).unwrap();
    store.flush().unwrap();
    drop(store);
    let names: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| f.starts_with("seg-") || f.starts_with("MANIFEST") || f == "CURRENT")
        .collect();
    assert!(names.len() >= 7, "{names:?}");
    for name in &names {
        let path = dir.path().join(name);
        let original = std::fs::read(&path).unwrap();
        let n = original.len();
        let offsets: Vec<usize> = (0..n).step_by((n / 60).max(1)).chain([n - 1]).collect();
        let mut mutations: Vec<Vec<u8>> = offsets
            .iter()
            .map(|&i| {
                let mut b = original.clone();
                b[i] ^= 0x5a;
                b
            })
            .collect();
        mutations.extend([0, 1, n / 2, n - 1].iter().map(|&k| original[..k].to_vec()));
        for bad in mutations {
            std::fs::write(&path, &bad).unwrap();
            if name.contains(".field-") {
                check_damaged_column(dir.path(), name);
                continue;
            }
            let report = verify(dir.path(), VerifyLevel::Full);
            let opened = Store::open(
                dir.path(),
                StoreOptions {
                    verify: VerifyLevel::Full,
                    ..opts()
                },
            );
            match (&report, &opened) {
                (Ok(r), Ok(_)) => assert!(
                    r.is_ok(),
                    "{name}: verify found {:?} but open succeeded",
                    r.problems
                ),
                (Ok(r), Err(_)) => assert!(!r.is_ok(), "{name}: open failed but verify is clean"),
                (Err(_), Err(_)) => {}
                (Err(e), Ok(_)) => panic!("{name}: verify failed ({e}) but open succeeded"),
            }
            if let Ok(r) = &report
                && let Some(p) = r.problems.first()
            {
                assert!(
                    p.file.ends_with(name) || name == "CURRENT",
                    "{name}: problem names {}",
                    p.file.display()
                );
            }
            drop(opened);
        }
        std::fs::write(&path, &original).unwrap();
    }
    assert!(verify(dir.path(), VerifyLevel::Full).unwrap().is_ok());
}

/// A damaged field column file: the database opens (columns are read on use), the field it
/// holds is a corruption error naming it, and verify reports it.
fn check_damaged_column(dir: &Path, name: &str) {
    let report = verify(dir, VerifyLevel::Cheap).unwrap();
    assert_eq!(report.problems.len(), 1, "{name}: {:?}", report.problems);
    assert!(report.problems[0].file.ends_with(name), "{name}");
    let store = Store::open(dir, opts()).unwrap();
    let view = store.view();
    let errors: Vec<CorruptionError> = view
        .sources()
        .iter()
        .flat_map(|s| s.field_names().into_iter().filter_map(|f| s.field(f).err()))
        .collect();
    assert_eq!(errors.len(), 1, "{name}: {errors:?}");
    assert!(errors[0].file.ends_with(name), "{name}");
}

/// A crash after a flush froze the memtable and started a new WAL, but before it installed
/// the new manifest: the old manifest, both WALs and the unreferenced segment files remain.
/// Recovery replays both WALs in order and removes the orphans.
#[test]
fn crash_between_wal_rotation_and_manifest_install_replays_both_logs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = schema(ElemType::F16, ElemType::I8);
    let store = Store::create(d, s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..10)).unwrap();
    store.delete(&[2]).unwrap();
    let saved: Vec<(String, Vec<u8>)> = ["CURRENT", "MANIFEST-000001", "wal-000001.log"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(d.join(f)).unwrap()))
        .collect();
    store.flush().unwrap();
    store.insert(rows(&s, 10..15)).unwrap();
    store.delete(&[3, 11]).unwrap();
    let expected = dump(&store.view());
    drop(store);
    for (f, bytes) in &saved {
        std::fs::write(d.join(f), bytes).unwrap();
    }
    std::fs::remove_file(d.join("MANIFEST-000002")).unwrap();
    let store = Store::open(d, opts()).unwrap();
    assert_eq!(dump(&store.view()), expected);
    assert_eq!(store.stats().unwrap().segments, 0);
    assert!(!files(d).iter().any(|f| f.starts_with("seg-")));
    store.flush().unwrap();
    drop(store);
    let left = files(d);
    assert_eq!(
        left.iter().filter(|f| f.starts_with("wal-")).count(),
        1,
        "{left:?}"
    );
    let store = Store::open(d, opts()).unwrap();
    assert_eq!(dump(&store.view()), expected);
}

/// `Buffered` mode that fsyncs only when told to, so a test decides where the durable point is.
fn buffered() -> StoreOptions {
    StoreOptions {
        durability: Durability::Buffered,
        buffered_sync_interval: std::time::Duration::from_secs(3600),
        ..opts()
    }
}

/// `Buffered` mode and a power cut: a page of the WAL written after the last fsync never
/// reached the disk, while later ones did. Open recovers the state at the last fsync, reports
/// what it dropped, and a writer cuts the dropped tail off.
#[test]
fn wal_page_lost_after_the_last_fsync_drops_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let options = buffered();
    let store = Store::create(dir.path(), s.clone(), options.clone()).unwrap();
    store.insert(rows(&s, 0..40)).unwrap();
    store.sync().unwrap();
    let durable = dump(&store.view());
    let synced = store.stats().unwrap().wal_bytes;
    // Four more batches of about 7 KiB each, not fsynced (until drop, which a power cut
    // would have prevented: the damage below stands for what it lost).
    for b in 1..5 {
        store.insert(rows(&s, 40 * b..40 * b + 40)).unwrap();
    }
    assert_eq!(store.stats().unwrap().dropped_wal_tail, None);
    drop(store);
    let wal = wal_path(dir.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    let page = (synced as usize).div_ceil(4096) * 4096;
    assert!(page + 4096 < bytes.len());
    bytes[page..page + 4096].fill(0);
    std::fs::write(&wal, &bytes).unwrap();
    let expected = DroppedWalTail {
        file: wal.clone(),
        offset: synced,
        bytes: bytes.len() as u64 - synced,
        records: 3,
    };
    let report = verify(dir.path(), VerifyLevel::Full).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.dropped_wal_tail.as_ref(), Some(&expected));
    let reader = Store::open(
        dir.path(),
        StoreOptions {
            read_only: true,
            ..options.clone()
        },
    )
    .unwrap();
    assert_eq!(dump(&reader.view()), durable);
    assert_eq!(
        reader.stats().unwrap().dropped_wal_tail.as_ref(),
        Some(&expected)
    );
    drop(reader);
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        bytes,
        "a reader changes nothing"
    );
    let store = Store::open(dir.path(), options.clone()).unwrap();
    assert_eq!(dump(&store.view()), durable);
    assert_eq!(store.stats().unwrap().dropped_wal_tail, Some(expected));
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), synced, "truncated");
    store.insert(rows(&s, 500..510)).unwrap();
    drop(store);
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(store.view().len(), 50);
    assert_eq!(store.stats().unwrap().dropped_wal_tail, None);
}

/// Damage in what a `Buffered` writer had fsynced is corruption, even with unsynced records
/// after it: a later record says it was durable.
#[test]
fn damage_before_the_last_fsync_is_corruption_in_buffered_mode() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let options = buffered();
    let store = Store::create(dir.path(), s.clone(), options.clone()).unwrap();
    store.insert(rows(&s, 0..3)).unwrap();
    store.insert(rows(&s, 3..6)).unwrap();
    store.sync().unwrap();
    store.insert(rows(&s, 6..9)).unwrap();
    drop(store);
    let wal = wal_path(dir.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[30] ^= 0xff;
    std::fs::write(&wal, &bytes).unwrap();
    match Store::open(dir.path(), options) {
        Err(OpenError::Corruption(e)) => assert_eq!((e.file, e.offset), (wal.clone(), 0)),
        other => panic!("expected corruption, got {other:?}"),
    }
    let report = verify(dir.path(), VerifyLevel::Full).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

#[test]
fn missing_vector_file_is_reported_under_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..3)).unwrap();
    store.flush().unwrap();
    drop(store);
    let seg = files(dir.path())
        .into_iter()
        .find(|f| f.starts_with("seg-") && f.contains("fine"))
        .expect("a fine vector file");
    let missing = dir.path().join(seg);
    std::fs::remove_file(&missing).unwrap();
    match Store::open(dir.path(), opts()) {
        Err(OpenError::Io(e)) => {
            assert_eq!(e.file.as_deref(), Some(missing.as_path()));
            assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an I/O error naming the file, got {other:?}"),
    }
    // verify names the missing file itself, not the segment's metadata file.
    let report = verify(dir.path(), VerifyLevel::Full).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].file, missing);
}
