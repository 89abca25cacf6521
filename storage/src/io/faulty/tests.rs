//! FaultyDir's own semantics.

use super::*;

fn write(io: &FaultyDir, path: &str, bytes: &[u8], sync: bool) -> Box<dyn DirFile> {
    let mut f = io.create_new(Path::new(path)).unwrap();
    f.append(bytes).unwrap();
    if sync {
        f.sync_data().unwrap();
    }
    f
}

#[test]
fn a_crash_keeps_only_what_was_synced() {
    let io = FaultyDir::new();
    io.create_dir(Path::new("/d")).unwrap();
    io.sync_dir(Path::new("/")).unwrap();
    write(&io, "/d/synced", b"abcd", true);
    io.sync_dir(Path::new("/d")).unwrap();
    let mut f = write(&io, "/d/unsynced-entry", b"xy", true);
    io.rename(Path::new("/d/synced"), Path::new("/d/renamed"))
        .unwrap();
    io.crash(CrashMode::DropUnsynced);
    assert!(f.append(b"z").is_err(), "a handle outlives the crash");
    assert!(io.read(Path::new("/d/renamed")).is_err(), "powered off");
    io.restart();
    assert_eq!(io.read(Path::new("/d/synced")).unwrap(), b"abcd");
    assert!(io.stat(Path::new("/d/unsynced-entry")).is_err());
    assert!(io.stat(Path::new("/d/renamed")).is_err());
}

#[test]
fn torn_and_reordered_crashes() {
    let io = FaultyDir::new();
    let mut f = write(&io, "/log", b"1234", true);
    f.append(b"5678").unwrap();
    write(&io, "/a", b"a", true);
    write(&io, "/b", b"b", true);
    io.sync_dir(Path::new("/")).unwrap();
    io.remove_file(Path::new("/a")).unwrap();
    io.rename(Path::new("/b"), Path::new("/c")).unwrap();
    io.crash(CrashMode::KeepHalfUnsynced);
    io.restart();
    assert_eq!(io.read(Path::new("/log")).unwrap(), b"123456");
    assert!(io.stat(Path::new("/a")).is_ok() && io.stat(Path::new("/b")).is_ok());
    io.remove_file(Path::new("/a")).unwrap();
    io.rename(Path::new("/b"), Path::new("/c")).unwrap();
    io.crash(CrashMode::KeepLastDirChange);
    io.restart();
    // Only the rename survived.
    assert!(io.stat(Path::new("/a")).is_ok() && io.stat(Path::new("/c")).is_ok());
    assert!(io.stat(Path::new("/b")).is_err());
}

#[test]
fn unlinked_files_stay_readable_and_locks_are_per_handle() {
    let io = FaultyDir::new();
    let (map, _) = {
        write(&io, "/f", b"bytes", true);
        io.map(Path::new("/f"), Access::Scan).unwrap()
    };
    io.remove_file(Path::new("/f")).unwrap();
    assert_eq!(&map[..], b"bytes");
    let lock = io.try_lock(Path::new("/LOCK")).unwrap();
    assert!(lock.is_some());
    assert!(io.try_lock(Path::new("/LOCK")).unwrap().is_none());
    drop(lock);
    let held = io.try_lock(Path::new("/LOCK")).unwrap();
    assert!(held.is_some());
    io.crash(CrashMode::DropUnsynced);
    io.restart();
    assert!(
        io.try_lock(Path::new("/LOCK")).unwrap().is_some(),
        "a crash frees locks"
    );
}

#[test]
fn faults_fire_once_on_the_chosen_call() {
    let io = FaultyDir::new();
    let mut f = write(&io, "/f", b"", false);
    io.fail(Fault::ShortWrite, 1);
    f.append(b"ab").unwrap();
    let e = f.append(b"cdef").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENOSPC));
    assert!(io.fired());
    f.append(b"g").unwrap();
    assert_eq!(io.read(Path::new("/f")).unwrap(), b"abcdg");
    io.fail(Fault::SyncFails, 0);
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(EIO));
    // The failed sync lost the unsynced bytes; the retry saves nothing.
    f.sync_all().unwrap();
    assert_eq!(io.read(Path::new("/f")).unwrap(), b"");
    assert_eq!(
        io.counts(),
        CallCounts {
            calls: 3,
            appends: 0,
            syncs: 2
        }
    );
}
