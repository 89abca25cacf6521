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
