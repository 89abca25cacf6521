//! Typed metadata fields through the store: memtable, flush, compaction, reopen.

use super::*;

fn field_of(view: &View, id: u64, name: &str) -> Option<String> {
    let (s, r) = view.locate(id)?;
    s.field(name).unwrap()?.get(r).map(|v| format!("{v:?}"))
}

#[test]
fn fields_answer_the_same_from_memtable_segments_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s = schema(ElemType::F16, ElemType::I8);
    let store = Store::create(&path, s.clone(), opts()).unwrap();
    store.insert(rows(&s, 1..40)).unwrap();
    let check = |view: &View| {
        assert_eq!(field_of(view, 7, "n").as_deref(), Some("Int(7)"));
        assert_eq!(field_of(view, 7, "x").as_deref(), Some("Float(7.5)"));
        assert_eq!(field_of(view, 8, "half").as_deref(), Some("Bool(true)"));
        assert_eq!(
            field_of(view, 7, "name").as_deref(),
            Some("Str(\"item 0\")")
        );
        assert_eq!(
            field_of(view, 7, "at").as_deref(),
            Some("Timestamp(1704672000000000)")
        );
        assert_eq!(
            field_of(view, 7, "tags").as_deref(),
            Some("Tags([\"t3\", \"all\"])")
        );
        assert_eq!(field_of(view, 6, "mixed").as_deref(), Some("Int(6)"));
        assert_eq!(field_of(view, 7, "mixed").as_deref(), Some("Str(\"m7\")"));
        assert_eq!(field_of(view, 8, "mixed"), None, "null has no value");
        assert_eq!(field_of(view, 7, "nested"), None, "objects have no value");
        assert_eq!(
            field_of(view, 10, "n"),
            None,
            "non-JSON metadata has no fields"
        );
        for src in view.sources() {
            assert!(src.field("absent").unwrap().is_none());
            assert_eq!(
                src.field_names(),
                ["at", "half", "mixed", "n", "name", "tags", "x"]
            );
            let mixed = src.field("mixed").unwrap().unwrap();
            assert_eq!(
                mixed.types().iter().collect::<Vec<_>>(),
                [FieldType::Int, FieldType::Str]
            );
            assert_eq!(mixed.rows(), src.rows());
            let tags = src.field("tags").unwrap().unwrap();
            if let Some(r) = src.locate(13) {
                let Some(FieldValue::Tags(t)) = tags.get(r) else {
                    panic!("tags of 13")
                };
                assert!(t.contains("t1") && t.contains("all") && !t.contains("t2"));
                assert_eq!(t.len(), 2);
            }
        }
        dump(view);
    };
    check(&store.view());
    store.flush().unwrap();
    store.insert(rows(&s, 40..60)).unwrap();
    store.flush().unwrap();
    assert!(store.view().sources().iter().all(|s| !s.is_memtable()));
    check(&store.view());
    store.delete(&[3, 4]).unwrap();
    store.compact(&MergeAll, None).unwrap();
    assert_eq!(store.view().sources().len(), 1);
    check(&store.view());
    let before = dump(&store.view());
    drop(store);
    let store = Store::open(&path, opts()).unwrap();
    check(&store.view());
    assert_eq!(dump(&store.view()), before);
}

#[test]
fn a_source_without_fields_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let store = Store::create(dir.path().join("db"), s.clone(), opts()).unwrap();
    store.insert(rows(&s, [5, 10, 15])).unwrap();
    store.flush().unwrap();
    store.insert(rows(&s, [20])).unwrap();
    for src in store.view().sources() {
        assert!(src.field_names().is_empty());
        assert!(src.field("n").unwrap().is_none());
    }
}

fn field_files(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| f.contains(".field"))
        .collect()
}

#[test]
fn a_damaged_column_file_fails_only_the_field_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 1..30)).unwrap();
    store.flush().unwrap();
    drop(store);
    // Names in order: at, half, mixed, n, name, tags, x.
    let expected: Vec<String> = std::iter::once("seg-000001.fields".to_owned())
        .chain((0..7).map(|c| format!("seg-000001.field-{c:06}")))
        .collect();
    let mut listed = field_files(dir.path());
    listed.sort_by_key(|f| !f.ends_with(".fields"));
    assert_eq!(listed, expected);
    let damaged = dir.path().join("seg-000001.field-000003");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&damaged, &bytes).unwrap();
    // Opening reads no column file, even with full verification.
    let full = StoreOptions {
        verify: VerifyLevel::Full,
        ..opts()
    };
    let store = Store::open(dir.path(), full).unwrap();
    let view = store.view();
    let src = &view.sources()[0];
    assert!(src.field("x").unwrap().is_some());
    let e = src.field("n").unwrap_err();
    assert_eq!(e.file, damaged, "{e}");
    assert!(e.what.contains("crc32"), "{e}");
    assert_eq!(
        field_of(&view, 4, "name").as_deref(),
        Some("Str(\"item 4\")")
    );
    let report = verify(dir.path(), VerifyLevel::Cheap).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].file, damaged);
    // Compaction rewrites the columns from the metadata: the damage is gone with the segment.
    store.insert(rows(&s, 30..31)).unwrap();
    store.flush().unwrap();
    store.compact(&MergeAll, None).unwrap();
    dump(&store.view());
    drop(view);
    drop(store);
    assert!(verify(dir.path(), VerifyLevel::Full).unwrap().is_ok());
    // A missing column file is damage of that file for verify; a reader answers the field
    // from the metadata (a writer elsewhere may have compacted the segment away).
    let reader = Store::open(
        dir.path(),
        StoreOptions {
            read_only: true,
            ..opts()
        },
    )
    .unwrap();
    let names = field_files(dir.path());
    let missing = dir
        .path()
        .join(names.iter().find(|f| f.ends_with("field-000003")).unwrap());
    std::fs::remove_file(&missing).unwrap();
    let report = verify(dir.path(), VerifyLevel::Cheap).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].file, missing);
    assert_eq!(field_of(&reader.view(), 4, "n").as_deref(), Some("Int(4)"));
    dump(&reader.view());
}

/// A database whose segment predates field columns: no column files, and the manifest's
/// segment entry without the field-columns bit.
fn strip_field_columns(dir: &Path) {
    for f in field_files(dir) {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let io = crate::io::FsDir::shared();
    let (number, mut manifest) = crate::io::manifest::read_current(io.as_ref(), dir).unwrap();
    for info in &mut manifest.segments {
        info.modalities &= !crate::format::segment::FIELD_COLUMNS;
    }
    manifest.install(io.as_ref(), dir, number + 1).unwrap();
}

#[test]
fn segments_without_column_files_open_and_answer_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F16, ElemType::F16);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 1..25)).unwrap();
    store.flush().unwrap();
    store.delete(&[2]).unwrap();
    let before = dump(&store.view());
    drop(store);
    strip_field_columns(dir.path());
    assert!(field_files(dir.path()).is_empty());
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), before);
    assert_eq!(field_of(&store.view(), 7, "n").as_deref(), Some("Int(7)"));
    assert!(verify(dir.path(), VerifyLevel::Full).unwrap().is_ok());
    // A snapshot writes the columns the source lacked.
    let snap_dir = tempfile::tempdir().unwrap();
    let snap = snap_dir.path().join("snap");
    store.snapshot(&snap).unwrap();
    assert!(!field_files(&snap).is_empty());
    assert_eq!(dump(&Store::open(&snap, opts()).unwrap().view()), before);
    assert!(verify(&snap, VerifyLevel::Full).unwrap().is_ok());
    // Compaction writes them for its output.
    store.insert(rows(&s, 30..32)).unwrap();
    store.flush().unwrap();
    store.compact(&MergeAll, None).unwrap();
    assert!(!field_files(dir.path()).is_empty());
    let after = dump(&store.view());
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), after);
}

#[test]
fn a_segment_with_more_fields_than_columns_answers_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    let many = crate::format::segment::MAX_FIELD_COLUMNS + 10;
    let rows: Vec<Row> = (0..many as u64)
        .map(|id| Row {
            metadata: format!(r#"{{"k{id}": {id}, "common": "c"}}"#).into_bytes(),
            ..row(&s, id + 1)
        })
        .collect();
    store.insert(rows).unwrap();
    store.flush().unwrap();
    let view = store.view();
    let src = &view.sources()[0];
    assert_eq!(src.field_names().len(), many + 1);
    assert_eq!(
        field_files(dir.path()).len(),
        crate::format::segment::MAX_FIELD_COLUMNS + 1
    );
    assert_eq!(field_of(&view, 1, "common").as_deref(), Some("Str(\"c\")"));
    assert_eq!(
        field_of(&view, (many - 1) as u64 + 1, &format!("k{}", many - 1)).as_deref(),
        Some(format!("Int({})", many - 1).as_str())
    );
    dump(&view);
}

/// Every byte of a row's vectors, as [`Dump`] holds them.
fn vectors_of(view: &View, id: u64) -> impl PartialEq + std::fmt::Debug + use<> {
    dump(view).remove(&id).unwrap().3
}

#[test]
fn updates_replace_metadata_keep_vectors_and_survive_flush_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F16, ElemType::I8);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 1..20)).unwrap();
    store.flush().unwrap();
    store.insert(rows(&s, 20..30)).unwrap();
    let vectors: Vec<_> = [3, 21].map(|id| vectors_of(&store.view(), id)).into();
    // A segment row and a memtable row; caption removed, set, kept.
    let set = |id: u64, caption: Option<Option<String>>, metadata: &str| {
        let update = MetadataUpdate {
            caption,
            metadata: Some(metadata.as_bytes().to_vec()),
            ..MetadataUpdate::default()
        };
        assert!(store.update(id, update).unwrap());
    };
    set(3, Some(None), r#"{"n": -3, "fresh": "yes"}"#);
    set(21, Some(Some("new caption".into())), r#"{"n": -21}"#);
    set(21, None, r#"{"n": -22}"#);
    let check = |view: &View| {
        assert_eq!(field_of(view, 3, "n").as_deref(), Some("Int(-3)"));
        assert_eq!(field_of(view, 3, "fresh").as_deref(), Some("Str(\"yes\")"));
        assert_eq!(field_of(view, 3, "tags"), None);
        assert_eq!(field_of(view, 21, "n").as_deref(), Some("Int(-22)"));
        let (src, r) = view.locate(3).unwrap();
        assert_eq!(src.meta(r).caption, None);
        assert_eq!(src.meta(r).uri, Some("file:///3.png"));
        let (src, r) = view.locate(21).unwrap();
        assert_eq!(src.meta(r).caption, Some("new caption"));
        assert_eq!(vectors_of(view, 3), vectors[0]);
        assert_eq!(vectors_of(view, 21), vectors[1]);
        assert_eq!(view.len(), 29);
    };
    check(&store.view());
    let before = dump(&store.view());
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), before, "after WAL replay");
    check(&store.view());
    store.flush().unwrap();
    check(&store.view());
    store.compact(&MergeAll, None).unwrap();
    check(&store.view());
    assert_eq!(
        store.stats().unwrap().deleted_rows,
        0,
        "old versions dropped"
    );
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&store.view()), before, "after compaction and reopen");
    assert!(verify(dir.path(), VerifyLevel::Full).unwrap().is_ok());
}

#[test]
fn updating_a_missing_or_deleted_id_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::F32);
    let store = Store::create(dir.path(), s.clone(), opts()).unwrap();
    store.insert(rows(&s, 1..5)).unwrap();
    store.delete(&[2]).unwrap();
    let wal = store.stats().unwrap().wal_bytes;
    let update = || MetadataUpdate {
        metadata: Some(b"{}".to_vec()),
        ..MetadataUpdate::default()
    };
    assert!(!store.update(2, update()).unwrap());
    assert!(!store.update(77, update()).unwrap());
    assert!(
        store.update(1, MetadataUpdate::default()).unwrap(),
        "a live id, nothing to do"
    );
    assert_eq!(store.stats().unwrap().wal_bytes, wal);
    let too_large = MetadataUpdate {
        metadata: Some(vec![b' '; MAX_METADATA_BYTES + 1]),
        ..MetadataUpdate::default()
    };
    assert!(matches!(
        store.update(1, too_large),
        Err(CommitError::InvalidInput(InvalidInput::TooLarge {
            field: "metadata",
            id: 1,
            ..
        }))
    ));
    // Deleting an updated row deletes it (the old version stays deleted).
    assert!(store.update(3, update()).unwrap());
    assert_eq!(store.delete(&[3]).unwrap(), 1);
    assert!(store.view().locate(3).is_none());
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(store.view().locate(3).is_none());
    assert_eq!(store.view().len(), 2);
    let reader = Store::open(
        dir.path(),
        StoreOptions {
            read_only: true,
            ..opts()
        },
    )
    .unwrap();
    assert!(matches!(
        reader.update(1, update()),
        Err(CommitError::ReadOnly)
    ));
}
