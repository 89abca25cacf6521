//! Creating a database where something already lies: leftovers of a killed create, stray
//! files of another database, and files that only look like ours.

use super::*;

/// Issue 8.13: what a process killed during `create` leaves (no `CURRENT` yet) does not
/// block the next create, and none of it leaks into the new database.
#[test]
fn a_create_killed_half_way_can_be_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let path = dir.path().join("db");
    std::fs::create_dir(&path).unwrap();
    for f in ["LOCK", "MANIFEST-000001", "CURRENT.tmp", "wal-000001.log"] {
        std::fs::write(path.join(f), b"partial").unwrap();
    }
    assert!(matches!(
        Store::open(&path, opts()),
        Err(OpenError::NotFound { .. })
    ));
    assert_eq!(occupancy(&path), Occupancy::Empty);
    let store = Store::create(&path, s.clone(), opts()).unwrap();
    assert_eq!(store.view().len(), 0);
    store.insert(rows(&s, 0..5)).unwrap();
    drop(store);
    assert_eq!(occupancy(&path), Occupancy::Database);
    assert_eq!(Store::open(&path, opts()).unwrap().view().len(), 5);
    assert!(verify(&path, VerifyLevel::Full).unwrap().is_ok());
}

/// Another database's WAL dropped into a folder before `create` is not replayed into the
/// new database.
#[test]
fn stray_wal_files_in_a_new_folder_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let other = dir.path().join("other");
    let store = Store::create(&other, s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..7)).unwrap();
    drop(store);
    let path = dir.path().join("new");
    std::fs::create_dir(&path).unwrap();
    for f in files(&other).iter().filter(|f| f.starts_with("wal-")) {
        std::fs::copy(other.join(f), path.join(f)).unwrap();
        let renumbered = path.join(crate::wal::wal_file_name(2));
        std::fs::copy(other.join(f), renumbered).unwrap();
    }
    let store = Store::create(&path, s.clone(), opts()).unwrap();
    assert_eq!(store.view().len(), 0);
    drop(store);
    assert_eq!(Store::open(&path, opts()).unwrap().view().len(), 0);
}

/// Orphan clean-up removes only exact hivlp file names: a user's `seg-1.jpg`, a directory
/// named like a segment file, and an unrelated file stay; a real orphan goes.
#[test]
fn clean_up_touches_only_files_that_are_exactly_ours() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(ElemType::F32, ElemType::I8);
    let path = dir.path().join("db");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("notes.txt"), b"mine").unwrap();
    std::fs::write(path.join("seg-1.jpg"), b"mine").unwrap();
    std::fs::create_dir(path.join("seg-000099.meta")).unwrap();
    assert_eq!(occupancy(&path), Occupancy::Other);
    let store = Store::create(&path, s.clone(), opts()).unwrap();
    store.insert(rows(&s, 0..5)).unwrap();
    store.flush().unwrap();
    drop(store);
    std::fs::write(path.join("seg-000050.text.fine"), b"orphan").unwrap();
    let store = Store::open(&path, opts()).unwrap();
    assert_eq!(store.view().len(), 5);
    let left = files(&path);
    for kept in ["notes.txt", "seg-1.jpg", "seg-000099.meta"] {
        assert!(left.iter().any(|f| f == kept), "{kept} removed: {left:?}");
    }
    assert!(
        !left.iter().any(|f| f == "seg-000050.text.fine"),
        "{left:?}"
    );
}
