use super::*;
use crate::segment::PartitionRows;

#[test]
fn compaction_drops_deleted_rows_and_reclaims_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    for chunk in 0..4u64 {
        store.insert(rows(&s, chunk * 50..chunk * 50 + 50)).unwrap();
        store.flush().unwrap();
    }
    let doomed: Vec<u64> = (0..200).filter(|i| i % 4 == 0).collect();
    store.delete(&doomed).unwrap();
    store.flush().unwrap();
    let expected = dump(&store.view());
    let old_view = store.view();
    let bytes_before = store.stats().unwrap().disk_bytes;
    let old_files: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| f.starts_with("seg-"))
        .collect();
    let report = store.compact(&MergeAll, None).unwrap();
    assert_eq!(report.segments_merged, 4);
    assert_eq!(report.segments_written, 1);
    assert_eq!(report.rows_written, 150);
    assert_eq!(report.rows_dropped, 50);
    assert_eq!(dump(&store.view()), expected);
    // The old view still reads the old, still-mapped files.
    assert_eq!(dump(&old_view), expected);
    assert!(
        old_files
            .iter()
            .all(|f| dir.path().join(f).exists() || f.contains(".del-"))
    );
    drop(old_view);
    let now = files(dir.path());
    assert!(old_files.iter().all(|f| !now.contains(f)), "{now:?}");
    assert!(store.stats().unwrap().disk_bytes < bytes_before);
    assert_eq!(store.stats().unwrap().segments, 1);
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), expected);
}

#[test]
fn deletes_during_compaction_are_carried_over() {
    deletes_during_compaction_are_carried_over_with(opts(), 100);
}

/// A partitioned compaction writes its rows in partition order: the rows deleted meanwhile
/// must be found at their new places.
#[test]
fn deletes_during_a_partitioned_compaction_are_carried_over() {
    let options = StoreOptions {
        partition_min_rows: 16,
        ..opts()
    };
    let (_dir, store) = deletes_during_compaction_are_carried_over_with(options, 600);
    let view = store.view();
    let merged = view.sources().iter().find(|s| s.rows() > 600).unwrap();
    let image = merged.partitions(Modality::Image).unwrap();
    assert!(image.len() > 1 && matches!(image.rows_of(1), PartitionRows::Range(_)));
    let text = merged.partitions(Modality::Text).unwrap();
    let scattered = matches!(text.rows_of(0), PartitionRows::Listed(_));
    assert!(scattered, "the other modality's rows are scattered");
}

fn deletes_during_compaction_are_carried_over_with(
    options: StoreOptions,
    chunk_rows: u64,
) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F16, ElemType::F32);
    let opts = || options.clone();
    let store = std::sync::Arc::new(Store::create(dir.path(), s.clone(), opts()).unwrap());
    for chunk in 0..3u64 {
        store
            .insert(rows(&s, chunk * chunk_rows..(chunk + 1) * chunk_rows))
            .unwrap();
        store.flush().unwrap();
    }
    store.delete(&[1, 2, 3]).unwrap();
    let writer = {
        let store = store.clone();
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..30u64 {
                store.delete(&[10 + i]).unwrap();
                store.insert(rows(&s, [100_000 + i])).unwrap();
            }
        })
    };
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                let v = store.view();
                let d = dump(&v);
                let before = 3 * chunk_rows as usize - 3;
                assert!(d.len() >= before - 30 && d.len() <= before + 30);
            }
        })
    };
    store.compact(&MergeAll, None).unwrap();
    writer.join().unwrap();
    reader.join().unwrap();
    let expected = dump(&store.view());
    assert_eq!(expected.len(), 3 * chunk_rows as usize - 3 - 30 + 30);
    assert!(!expected.contains_key(&10) && expected.contains_key(&100_029));
    assert!(expected.contains_key(&40) && !expected.contains_key(&39));
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), expected);
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), expected);
    (dir, store)
}

#[test]
fn coarse_rewrite_recomputes_coarse_from_fine() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..10)).unwrap();
    store.flush().unwrap();
    store.insert(rows(&s, 10..20)).unwrap();
    store.set_property("map", b"old".to_vec()).unwrap();
    let before = store.view();
    let prefix = |_: Modality, fine: &[f32], coarse: &mut [f32]| {
        coarse.copy_from_slice(&fine[..coarse.len()]);
    };
    let rewrite = Rewrite {
        coarse: &prefix,
        properties: vec![("map".into(), b"new".to_vec())],
    };
    store.compact(&MergeAll, Some(&rewrite)).unwrap();
    // Rows and the property describing them change in one step: a view holds both old, the
    // next view both new, and so does a handle opened from the files.
    let rewritten = |view: &View| {
        let (mut c, mut f) = (Vec::new(), Vec::new());
        view.sources().iter().all(|src| {
            (0..src.rows()).all(|r| {
                src.coarse(Modality::Image).row_to_f32(r, &mut c);
                src.fine(Modality::Image).row_to_f32(r, &mut f);
                c == f[..6]
            })
        })
    };
    assert_eq!(before.properties().get("map"), Some(&b"old".to_vec()));
    assert!(!rewritten(&before));
    let view = store.view();
    assert_eq!(view.sources().len(), 1);
    assert_eq!(view.properties().get("map"), Some(&b"new".to_vec()));
    assert!(rewritten(&view));
    let reader = Store::open(
        dir.path(),
        StoreOptions {
            read_only: true,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(reader.property("map"), Some(b"new".to_vec()));
    assert!(rewritten(&reader.view()));
    drop((before, reader));
    let bad = |_: Modality, _: &[f32], coarse: &mut [f32]| coarse[0] = f32::NAN;
    store.insert(rows(&s, [30])).unwrap();
    let bad = Rewrite {
        coarse: &bad,
        properties: vec![("map".into(), b"bad".to_vec())],
    };
    assert!(matches!(
        store.compact(&MergeAll, Some(&bad)),
        Err(CompactionError::Rewrite(_))
    ));
    assert_eq!(store.property("map"), Some(b"new".to_vec()));
    assert_eq!(store.view().len(), 21);
    // No leftovers from the failed merge.
    let segs: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| f.ends_with(".meta"))
        .collect();
    assert_eq!(segs.len(), 2, "{segs:?}");
}

/// An f16 coarse tier cannot hold 1e6: the rewrite is refused rather than storing infinity.
#[test]
fn coarse_rewrite_beyond_the_f16_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F16);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..5)).unwrap();
    store.flush().unwrap();
    store.insert(rows(&s, 5..10)).unwrap();
    let huge = |_: Modality, _: &[f32], coarse: &mut [f32]| coarse[0] = 1e6;
    let huge = Rewrite {
        coarse: &huge,
        properties: Vec::new(),
    };
    assert!(matches!(
        store.compact(&MergeAll, Some(&huge)),
        Err(CompactionError::Rewrite(_))
    ));
    assert_eq!(store.view().len(), 10);
}

#[test]
fn default_policy_is_a_no_op_when_nothing_pays() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..10)).unwrap();
    store.flush().unwrap();
    let r = store.compact(&DefaultMergePolicy::default(), None).unwrap();
    assert_eq!(r, CompactionReport::default());
    store.delete(&(0..5).collect::<Vec<_>>()).unwrap();
    let r = store.compact(&DefaultMergePolicy::default(), None).unwrap();
    assert_eq!((r.segments_merged, r.rows_written), (1, 5));
}

/// One thread writes (inserts and deletes of recent rows, which are often in a memtable
/// being flushed or a segment being merged) while another flushes and compacts; the result
/// matches a model of the writes, before and after reopening.
#[test]
fn writes_during_flushes_and_compactions_match_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let o = StoreOptions {
        memtable_rows: 40,
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = std::sync::Arc::new(Store::create(dir.path(), s.clone(), o.clone()).unwrap());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, done, s) = (store.clone(), done.clone(), s.clone());
        std::thread::spawn(move || {
            let mut live = std::collections::BTreeSet::new();
            let mut updated = std::collections::BTreeSet::new();
            for id in 0..600u64 {
                store.insert(rows(&s, [id])).unwrap();
                live.insert(id);
                if id % 3 == 0 && id >= 5 {
                    assert_eq!(store.delete(&[id - 5]).unwrap(), 1);
                    live.remove(&(id - 5));
                }
                // Rows in every place a flush or compaction may be moving them.
                if id % 4 == 1 && id >= 30 {
                    for target in [id - 1, id - 30] {
                        let update = MetadataUpdate {
                            metadata: Some(super::sweep::updated_metadata(target)),
                            ..MetadataUpdate::default()
                        };
                        assert_eq!(
                            store.update(target, update).unwrap(),
                            live.contains(&target)
                        );
                        if live.contains(&target) {
                            updated.insert(target);
                        }
                    }
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            updated.retain(|id| live.contains(id));
            (live, updated)
        })
    };
    let policy = DefaultMergePolicy {
        max_segments: 3,
        max_deleted_ratio: 0.1,
    };
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        store.flush().unwrap();
        store.compact(&policy, None).unwrap();
    }
    let (live, updated) = writer.join().unwrap();
    assert!(!updated.is_empty());
    let d = dump(&store.view());
    assert_eq!(
        d.keys().copied().collect::<std::collections::BTreeSet<_>>(),
        live
    );
    assert_eq!(d, rows_dump(&s, &live, &updated));
    drop(store);
    let store = Store::open(dir.path(), o).unwrap();
    assert_eq!(dump(&store.view()), d);
    assert!(verify(dir.path(), VerifyLevel::Full).unwrap().is_ok());
}

/// The dump a fresh store holding exactly `ids` gives, the `updated` ones with the metadata
/// of [`updated_metadata`](super::sweep::updated_metadata).
fn rows_dump(
    s: &Schema,
    ids: &std::collections::BTreeSet<u64>,
    updated: &std::collections::BTreeSet<u64>,
) -> Dump {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    let mut rows = rows(s, ids.iter().copied());
    for r in rows.iter_mut().filter(|r| updated.contains(&r.id)) {
        r.metadata = super::sweep::updated_metadata(r.id);
    }
    store.insert(rows).unwrap();
    dump(&store.view())
}

/// Issue 8.5: a compaction that fails after its merge (here: the tombstones of a row deleted
/// meanwhile cannot be written) leaves the handle exactly as it was, so stats, snapshots and
/// later compactions see every segment (before the fix the handle was left with none, and
/// a snapshot of it was an empty database).
#[test]
fn a_compaction_failing_at_install_leaves_the_handle_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let store = std::sync::Arc::new(Store::create(dir.path(), s.clone(), opts()).unwrap());
    for chunk in 0..2u64 {
        store.insert(rows(&s, chunk * 20..chunk * 20 + 20)).unwrap();
        store.flush().unwrap();
    }
    // The merged segment gets the next id; a directory in the way of its tombstone file
    // makes that write fail the way a full disk would.
    for id in 3..10 {
        std::fs::create_dir(dir.path().join(crate::segment::tombstone_file_name(id, 1))).unwrap();
    }
    let deleter = store.clone();
    let deleted = std::sync::atomic::AtomicBool::new(false);
    let delete_during_merge = move |_: Modality, fine: &[f32], coarse: &mut [f32]| {
        if !deleted.swap(true, std::sync::atomic::Ordering::SeqCst) {
            assert_eq!(deleter.delete(&[7]).unwrap(), 1);
        }
        coarse.copy_from_slice(&fine[..coarse.len()]);
    };
    let rewrite = Rewrite {
        coarse: &delete_during_merge,
        properties: Vec::new(),
    };
    let before = files(dir.path());
    assert!(store.compact(&MergeAll, Some(&rewrite)).is_err());
    drop(rewrite);
    drop(delete_during_merge);
    let stats = store.stats().unwrap();
    assert_eq!((stats.segments, stats.live_rows), (2, 39));
    assert_eq!(store.view().len(), 39);
    assert_eq!(
        files(dir.path()),
        before,
        "the failed merge left files behind"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let snap = elsewhere.path().join("snap");
    store.snapshot(&snap).unwrap();
    assert_eq!(Store::open(&snap, opts()).unwrap().view().len(), 39);
    // Once the disk "has room" again, the same compaction goes through.
    for id in 3..10 {
        std::fs::remove_dir(dir.path().join(crate::segment::tombstone_file_name(id, 1))).unwrap();
    }
    store.compact(&MergeAll, None).unwrap();
    assert_eq!(store.stats().unwrap().segments, 1);
    let expected = dump(&store.view());
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), expected);
}
