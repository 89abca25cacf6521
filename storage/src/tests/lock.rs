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
