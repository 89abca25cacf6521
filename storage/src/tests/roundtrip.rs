use super::*;

const TYPES: [ElemType; 3] = [ElemType::F32, ElemType::F16, ElemType::I8];

/// Write, read back from the memtable, flush, read back from the segment, reopen, read back:
/// identical bytes every time, for every element type combination, and values close to the
/// input (exact for F32).
#[test]
fn round_trip_is_bit_exact_for_all_element_types() {
    for fine_type in TYPES {
        for coarse_type in TYPES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let s = schema(fine_type, coarse_type);
            let store = Store::create(&path, s.clone(), opts()).unwrap();
            store.insert(rows(&s, 0..5)).unwrap();
            store.insert(rows(&s, 5..6)).unwrap();
            let before = dump(&store.view());
            assert_eq!(before.len(), 6);
            // Values survive the element type's conversion.
            let view = store.view();
            let (src, r) = view.locate(4).unwrap();
            let mut out = Vec::new();
            src.fine(Modality::Text).row_to_f32(r, &mut out);
            let want = row(&s, 4).text.unwrap().fine;
            for (a, b) in out.iter().zip(&want) {
                match fine_type {
                    ElemType::F32 => assert_eq!(a.to_bits(), b.to_bits()),
                    _ => assert!((a - b).abs() < 0.01, "{a} vs {b}"),
                }
            }
            store.flush().unwrap();
            assert_eq!(
                dump(&store.view()),
                before,
                "after flush {fine_type:?}/{coarse_type:?}"
            );
            assert!(store.view().sources().iter().all(|s| !s.is_memtable()));
            drop(store);
            let store = Store::open(&path, opts()).unwrap();
            assert_eq!(
                dump(&store.view()),
                before,
                "after reopen {fine_type:?}/{coarse_type:?}"
            );
            // And from the WAL alone (unflushed rows).
            store.insert(rows(&s, 10..13)).unwrap();
            let with_wal = dump(&store.view());
            drop(store);
            let store = Store::open(&path, opts()).unwrap();
            assert_eq!(dump(&store.view()), with_wal);
            let full = StoreOptions {
                verify: VerifyLevel::Full,
                read_only: true,
                ..opts()
            };
            assert_eq!(dump(&Store::open(&path, full).unwrap().view()), with_wal);
        }
    }
}

#[test]
fn columns_are_aligned_and_skip_masks_match() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F16, ElemType::I8);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, [1, 3, 5])).unwrap(); // odd ids: image only
    store.insert(rows(&s, [2, 4])).unwrap();
    store.flush().unwrap();
    store.insert(rows(&s, [7])).unwrap();
    let view = store.view();
    assert_eq!(view.sources().len(), 2);
    let seg = &view.sources()[0];
    for m in Modality::ALL {
        for (tier, col) in [(Tier::Coarse, seg.coarse(m)), (Tier::Fine, seg.fine(m))] {
            let (elem, dim) = s.tier(tier);
            assert_eq!(col.bytes().as_ptr() as usize % ROW_ALIGN, 0);
            assert_eq!(col.stride(), file_stride(tier, elem, dim));
            assert_eq!(col.len(), seg.rows());
        }
    }
    let text_rows: Vec<u64> = (0..seg.rows())
        .filter(|&r| !seg.skip(Modality::Text).get(r))
        .map(|r| seg.id(r))
        .collect();
    assert_eq!(text_rows, vec![2, 4]);
    // A memtable batch without any text vectors has an empty text column.
    let mem = &view.sources()[1];
    assert!(mem.is_memtable());
    assert_eq!(mem.fine(Modality::Text).len(), 0);
    assert!(mem.skip(Modality::Text).get(0));
    assert_eq!(mem.coarse(Modality::Image).len(), 1);
    assert_eq!(view.locate(5).map(|(s, r)| s.id(r)), Some(5));
    assert!(view.locate(6).is_none());
    assert_eq!(store.next_id(), 8);
}

#[test]
fn deletes_hide_rows_and_survive_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..10)).unwrap();
    store.flush().unwrap();
    store.insert(rows(&s, 10..20)).unwrap();
    assert_eq!(store.delete(&[1, 2, 2, 15, 99]).unwrap(), 3);
    assert_eq!(store.delete(&[1]).unwrap(), 0);
    assert_eq!(store.view().len(), 17);
    let expected = dump(&store.view());
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), expected);
    store.flush().unwrap();
    assert_eq!(dump(&store.view()), expected);
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.segments, stats.memtable_rows, stats.deleted_rows),
        (2, 0, 2)
    );
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), expected);
    // A deleted id may be inserted again.
    store.insert(rows(&s, [1])).unwrap();
    assert_eq!(store.view().len(), 18);
}

#[test]
fn views_are_isolated_from_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..4)).unwrap();
    let view = store.view();
    let before = dump(&view);
    store.insert(rows(&s, 4..8)).unwrap();
    store.delete(&[0]).unwrap();
    store.flush().unwrap();
    assert_eq!(dump(&view), before);
    assert_eq!(store.view().len(), 7);
}

#[test]
fn memtable_batches_stay_few_and_auto_flush_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F16);
    let o = StoreOptions {
        memtable_rows: 300,
        durability: Durability::Buffered,
        ..StoreOptions::default()
    };
    let store = Store::create(dir.path(), s.clone(), o.clone()).unwrap();
    for id in 0..299 {
        store.insert(rows(&s, [id])).unwrap();
        assert!(
            store.view().sources().len() <= 21,
            "{} sources",
            store.view().sources().len()
        );
    }
    let expected = dump(&store.view());
    assert_eq!(store.stats().unwrap().segments, 0);
    store.insert(rows(&s, [299])).unwrap();
    assert_eq!(store.stats().unwrap().segments, 1);
    assert_eq!(store.stats().unwrap().memtable_rows, 0);
    let mut all = dump(&store.view());
    all.remove(&299);
    assert_eq!(all, expected);
    store.set_property("projection", vec![1, 2, 3]).unwrap();
    drop(store);
    let store = Store::open(dir.path(), o).unwrap();
    assert_eq!(store.view().len(), 300);
    assert_eq!(store.property("projection"), Some(vec![1, 2, 3]));
    assert_eq!(store.property("other"), None);
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.property("projection"), Some(vec![1, 2, 3]));
    assert_eq!(store.next_id(), 300);
    assert_eq!(store.allocate_ids(5), 300..305);
    assert_eq!(store.next_id(), 305);
}
