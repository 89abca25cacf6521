//! `Database::update`: metadata and caption replaced in place, vectors kept, durable.

mod common;

use common::*;
use hivlp::{ElemType, Error, InvalidInput, MetadataUpdate, Query, SearchParams};

#[test]
fn update_replaces_metadata_and_caption_and_keeps_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.insert(items(0..200, false)).unwrap();
    db.flush().unwrap();
    db.insert(items(200..220, false)).unwrap();
    let before = [5u64, 210].map(|id| db.get(id).unwrap().unwrap());
    for id in [5, 210] {
        let update = MetadataUpdate {
            caption: Some(Some(format!("renamed {id}"))),
            metadata: Some(format!(r#"{{"year": {id}}}"#).into_bytes()),
            ..MetadataUpdate::default()
        };
        assert!(db.update(id, update).unwrap());
    }
    let check = |db: &hivlp::Database| {
        for (id, old) in [5u64, 210].into_iter().zip(&before) {
            let now = db.get(id).unwrap().unwrap();
            assert_eq!(
                now.caption.as_deref(),
                Some(format!("renamed {id}").as_str())
            );
            assert_eq!(now.metadata, format!(r#"{{"year": {id}}}"#).into_bytes());
            assert_eq!(now.uri, old.uri);
            assert_eq!(now.image, old.image, "vectors kept");
            let query = Query::new(old.image.as_ref().unwrap().fine.clone());
            let params = SearchParams {
                k: 1,
                ..SearchParams::default()
            };
            let hit = &db.search(&query, &params).unwrap()[0];
            assert_eq!(hit.id, id);
            assert_eq!(hit.caption, now.caption);
            assert_eq!(hit.metadata, now.metadata);
        }
        assert_eq!(db.len().unwrap(), 220);
    };
    check(&db);
    db.close().unwrap();
    let db = hivlp::Database::open(dir.path().join("db"), options()).unwrap();
    check(&db);
    db.compact().unwrap();
    check(&db);
    let nothing = MetadataUpdate::default();
    assert!(!db.update(999, nothing.clone()).unwrap(), "missing id");
    db.delete(&[7]).unwrap();
    assert!(!db.update(7, nothing).unwrap(), "deleted id");
    let huge = MetadataUpdate {
        metadata: Some(vec![b' '; hivlp_storage::MAX_METADATA_BYTES + 1]),
        ..MetadataUpdate::default()
    };
    assert!(matches!(
        db.update(5, huge),
        Err(Error::InvalidInput(InvalidInput::Row(_)))
    ));
}
