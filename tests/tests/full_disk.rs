//! A real full disk: each test mounts a small tmpfs of its own (it must run as root, with
//! the right to mount; otherwise it prints why and passes without checking anything), fills
//! it, and checks that
//! - every write that runs out of space fails with the storage `IoError` (`ENOSPC`, with the
//!   operation and the file), never a panic or a corruption, and the handle refuses further
//!   writes;
//! - the database reopens (on the still-full disk) with exactly the acknowledged rows;
//! - once rows are deleted and compacted away the space comes back, and inserts work again.
//!
//! The disk fills during inserts, flushes and compactions of a writer that just goes on;
//! and, deterministically, a filler file takes the disk to almost full before a Sync insert,
//! before a flush and before a compaction.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hivlp_storage::{
    CommitError, CompactionError, Durability, ElemType, IoError, MergeAll, Row, Store,
    StoreOptions, VerifyLevel, verify,
};
use hivlp_tests::{StoreImage, diff_images, expected_image, random_rows, read_view, small_schema};

const SEED: u64 = 31;
/// Linux's "no space left on device".
const ENOSPC: i32 = 28;

/// A tmpfs mounted on a fresh temporary directory, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts `size` (e.g. `"16m"`), or says why it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
        let effective_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .ok_or("no Uid line in /proc/self/status")?;
        if effective_uid != "0" {
            return Err(format!("not root (effective uid {effective_uid})"));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (no CAP_SYS_ADMIN?): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Bytes free on the file system.
    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.path)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines().nth(1).unwrap().trim().parse().unwrap()
    }

    /// Fills the file system with a file `filler`, then gives back all but about `leave`
    /// bytes of free space.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let path = self.path.join("filler");
        let mut file = File::create(&path).unwrap();
        let chunk = vec![0xA5u8; 64 << 10];
        let mut len = 0u64;
        for size in [chunk.len(), 4096] {
            loop {
                match file.write(&chunk[..size]) {
                    Ok(n) => len += n as u64,
                    Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
                    Err(e) => panic!("filling: {e}"),
                }
            }
        }
        file.set_len(len.saturating_sub(leave)).unwrap();
        println!(
            "filler of {} bytes leaves {} free",
            len - leave,
            self.free()
        );
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        match Command::new("umount").arg(&self.path).status() {
            Ok(s) if s.success() => {}
            other => eprintln!("umount {}: {other:?}", self.path.display()),
        }
    }
}

/// The tmpfs for a test, or `None` after printing why the test checks nothing here.
fn tmpfs(size: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(size) {
        Ok(fs) => Some(fs),
        Err(why) => {
            println!("SKIPPED: needs a tmpfs of its own: {why}");
            None
        }
    }
}

fn options(memtable_rows: usize) -> StoreOptions {
    StoreOptions {
        durability: Durability::Sync,
        memtable_rows,
        ..StoreOptions::default()
    }
}

/// `e` is running out of space, reported with the operation and the file.
fn assert_enospc(what: &str, e: &IoError) {
    assert_eq!(
        e.source.raw_os_error(),
        Some(ENOSPC),
        "{what}: not ENOSPC: {e}"
    );
    assert!(e.file.is_some(), "{what}: no file named: {e}");
    println!("{what}: {e}");
}

fn commit_io(what: &str, e: CommitError) -> IoError {
    match e {
        CommitError::Io(io) => io,
        other => panic!("{what}: expected an I/O error, got {other} ({other:?})"),
    }
}

fn compaction_io(e: CompactionError) -> IoError {
    match e {
        CompactionError::Io(io) | CompactionError::Commit(CommitError::Io(io)) => io,
        other => panic!("compaction: expected an I/O error, got {other} ({other:?})"),
    }
}

/// After a failed write: the handle refuses further writes.
fn assert_refuses_writes(store: &Store, next_id: u64) {
    let schema = store.schema().clone();
    match store.insert(random_rows(&schema, SEED, next_id..next_id + 1)) {
        Err(CommitError::Poisoned(why)) => println!("next insert refused: {why}"),
        other => panic!("insert after a failed write: {other:?}"),
    }
}

/// Reopens `dir` and checks it holds `acked`, plus, all or nothing, `in_doubt` (a write that
/// failed may or may not have been committed, never in part).
fn reopen_intact(dir: &Path, acked: &StoreImage, in_doubt: &[Row]) -> Store {
    let report = verify(dir, VerifyLevel::Full).unwrap();
    assert!(
        report.is_ok(),
        "damage after a full disk: {:?}",
        report.problems
    );
    let store = Store::open(dir, options(1 << 20)).unwrap_or_else(|e| panic!("reopen: {e}"));
    let image = read_view(&store.view()).unwrap();
    let mut with_doubt = acked.clone();
    with_doubt.extend(expected_image(store.schema(), in_doubt));
    if diff_images(acked, &image).is_some() && diff_images(&with_doubt, &image).is_some() {
        panic!(
            "reopened database differs from the acknowledged writes: {}",
            diff_images(acked, &image).unwrap()
        );
    }
    store
}

#[test]
fn a_sync_insert_on_an_almost_full_disk_fails_cleanly() {
    let Some(fs) = tmpfs("16m") else { return };
    let dir = fs.path.join("db");
    let schema = small_schema(ElemType::F32, ElemType::F32);
    let store = Store::create(&dir, schema.clone(), options(1 << 20)).unwrap();
    let rows = random_rows(&schema, SEED, 0..1_000);
    store.insert(rows[..500].to_vec()).unwrap();
    store.flush().unwrap();
    store.insert(rows[500..].to_vec()).unwrap();
    let acked = expected_image(&schema, &rows);
    let filler = fs.fill_leaving(8 << 10);
    // About 200 KB of WAL record into 8 KB.
    let batch = random_rows(&schema, SEED, 1_000..1_400);
    let e = store.insert(batch.clone()).unwrap_err();
    assert_enospc("Sync insert", &commit_io("Sync insert", e));
    assert_refuses_writes(&store, 2_000);
    drop(store);
    let store = reopen_intact(&dir, &acked, &[]);
    println!("reopened on the full disk: {} rows", store.view().len());
    drop(store);
    std::fs::remove_file(filler).unwrap();
    let store = reopen_intact(&dir, &acked, &[]);
    store.insert(batch.clone()).unwrap();
    drop(store);
    let mut all = acked;
    all.extend(expected_image(&schema, &batch));
    reopen_intact(&dir, &all, &[]);
}

#[test]
fn a_flush_on_an_almost_full_disk_fails_cleanly() {
    let Some(fs) = tmpfs("16m") else { return };
    let dir = fs.path.join("db");
    let schema = small_schema(ElemType::F32, ElemType::F32);
    let store = Store::create(&dir, schema.clone(), options(1 << 20)).unwrap();
    let rows = random_rows(&schema, SEED, 0..3_000);
    for chunk in rows.chunks(300) {
        store.insert(chunk.to_vec()).unwrap();
    }
    assert_eq!(store.delete(&[7, 8, 9]).unwrap(), 3);
    let mut acked = expected_image(&schema, &rows);
    for id in [7, 8, 9] {
        acked.remove(&id);
    }
    // The segment needs about as much as the WAL holds (~1.4 MB); 256 KB are left.
    let filler = fs.fill_leaving(256 << 10);
    let e = store.flush().unwrap_err();
    assert_enospc("flush", &commit_io("flush", e));
    assert_refuses_writes(&store, 5_000);
    drop(store);
    let free_before_reopen = fs.free();
    let store = reopen_intact(&dir, &acked, &[]);
    // The half-written segment was removed at reopen.
    println!(
        "reopened on the full disk: {} rows; free {free_before_reopen} -> {} bytes",
        store.view().len(),
        fs.free()
    );
    drop(store);
    std::fs::remove_file(filler).unwrap();
    let store = reopen_intact(&dir, &acked, &[]);
    store.flush().unwrap();
    drop(store);
    reopen_intact(&dir, &acked, &[]);
}

#[test]
fn a_compaction_on_an_almost_full_disk_fails_cleanly_and_space_comes_back_after_deletes() {
    let Some(fs) = tmpfs("16m") else { return };
    let dir = fs.path.join("db");
    let schema = small_schema(ElemType::F32, ElemType::F32);
    let store = Store::create(&dir, schema.clone(), options(1 << 20)).unwrap();
    let rows = random_rows(&schema, SEED, 0..5_000);
    for chunk in rows.chunks(500) {
        store.insert(chunk.to_vec()).unwrap();
        store.flush().unwrap();
    }
    let doomed: Vec<u64> = (0..5_000).filter(|id| id % 5 == 0).collect();
    store.delete(&doomed).unwrap();
    store.flush().unwrap();
    let mut acked = expected_image(&schema, &rows);
    for id in &doomed {
        acked.remove(id);
    }
    // The merged segment needs ~2 MB; 512 KB are left.
    let _filler = fs.fill_leaving(512 << 10);
    let free_full = fs.free();
    let e = store.compact(&MergeAll, None).unwrap_err();
    assert_enospc("compaction", &compaction_io(e));
    drop(store);
    let store = reopen_intact(&dir, &acked, &[]);
    let free_reopened = fs.free();
    println!("free: {free_full} bytes before the compaction, {free_reopened} after reopening");
    assert!(
        free_reopened + (64 << 10) >= free_full,
        "the failed compaction's output was not cleaned up: {free_full} -> {free_reopened}"
    );
    // Still full, but deletes (tombstones) fit, and a merge of what is left fits too.
    let more: Vec<u64> = acked.keys().copied().filter(|id| id % 10 != 1).collect();
    store.delete(&more).unwrap();
    for id in &more {
        acked.remove(id);
    }
    store.flush().unwrap();
    let report = store.compact(&MergeAll, None).unwrap();
    let free_compacted = fs.free();
    println!(
        "after deleting {} more rows and compacting: {free_compacted} bytes free ({report:?})",
        more.len()
    );
    assert!(
        free_compacted > free_reopened + (1 << 20),
        "space not reclaimed: {free_reopened} -> {free_compacted}"
    );
    let batch = random_rows(&schema, SEED, 10_000..11_000);
    store.insert(batch.clone()).unwrap();
    store.flush().unwrap();
    acked.extend(expected_image(&schema, &batch));
    drop(store);
    reopen_intact(&dir, &acked, &[]);
}

/// A writer that inserts (flushing automatically) and compacts until the disk is too full
/// for a compaction (which needs room for its output), reopens, then only inserts until
/// an insert or a flush runs out of space too, reopens again; then deletes and compacts.
#[test]
fn a_writer_that_fills_the_disk_stops_cleanly_and_recovers_after_deletes_and_compaction() {
    let Some(fs) = tmpfs("24m") else { return };
    let dir = fs.path.join("db");
    let schema = small_schema(ElemType::F32, ElemType::F32);
    let store = Store::create(&dir, schema.clone(), options(1_500)).unwrap();
    // Another program's file, removed once the disk is full: room for the deletes and for
    // the output of the compaction that follows (a tenth of the rows), which is written
    // before the segments it replaces are removed.
    let reserve = fs.path.join("reserve");
    std::fs::write(&reserve, vec![1u8; 4 << 20]).unwrap();
    let mut acked = StoreImage::new();
    let mut next = 0u64;
    let mut failures = Vec::new();
    let mut store = Some(store);
    for step in 0..10_000u64 {
        let s = store.as_ref().unwrap();
        let mut in_doubt = Vec::new();
        let failure = if step % 9 == 8 && failures.is_empty() {
            match s.compact(&MergeAll, None) {
                Ok(_) => continue,
                Err(e) => {
                    assert_enospc(&format!("step {step}: compaction"), &compaction_io(e));
                    "compaction"
                }
            }
        } else {
            let batch = random_rows(&schema, SEED, next..next + 200);
            next += 200;
            match s.insert(batch.clone()) {
                Ok(()) => {
                    acked.extend(expected_image(&schema, &batch));
                    continue;
                }
                // The flush an earlier insert triggered failed (that insert was committed):
                // the handle refuses writes and says why.
                Err(CommitError::Poisoned(why)) => {
                    assert!(why.contains("No space left on device"), "{why}");
                    println!("step {step}: insert refused after a failed flush: {why}");
                    "flush"
                }
                Err(e) => {
                    assert_enospc(&format!("step {step}: insert"), &commit_io("insert", e));
                    in_doubt = batch;
                    "insert"
                }
            }
        };
        failures.push(failure);
        drop(store.take());
        let reopened = reopen_intact(&dir, &acked, &in_doubt);
        // A failed insert's rows are not in `acked`; if reopen found them, they count.
        let image = read_view(&reopened.view()).unwrap();
        acked.extend(
            in_doubt
                .iter()
                .filter(|r| image.contains_key(&r.id))
                .map(|r| (r.id, hivlp_tests::expected_row(&schema, r))),
        );
        store = Some(reopened);
        if failures.len() == 2 {
            break;
        }
    }
    assert_eq!(failures.len(), 2, "the disk never filled up: {failures:?}");
    let store = store.unwrap();
    let rows_full = acked.len();
    // On a disk this full even a delete cannot be logged: it fails cleanly too.
    let doomed: Vec<u64> = acked.keys().copied().filter(|id| id % 10 != 0).collect();
    let e = store.delete(&doomed).unwrap_err();
    assert_enospc("delete on the full disk", &commit_io("delete", e));
    drop(store);
    let store = reopen_intact(&dir, &acked, &[]);
    // With some room, the deletes are logged...
    std::fs::remove_file(&reserve).unwrap();
    let free_full = fs.free();
    store
        .delete(&doomed)
        .unwrap_or_else(|e| panic!("deletes with 4 MiB free: {e}"));
    for id in &doomed {
        acked.remove(id);
    }
    // ...and compaction writes only what is left of the segments (the memtable stays in
    // the WAL), then frees the rest.
    store
        .compact(&MergeAll, None)
        .unwrap_or_else(|e| panic!("compaction after the deletes: {e}"));
    let free_after = fs.free();
    println!(
        "failures in order: {failures:?}; {rows_full} rows when full, {} left; free {free_full} \
         -> {free_after} bytes",
        acked.len()
    );
    assert!(free_after > free_full + (4 << 20), "space not reclaimed");
    let batch = random_rows(&schema, SEED, next..next + 2_000);
    for chunk in batch.chunks(200) {
        store.insert(chunk.to_vec()).unwrap();
    }
    store.flush().unwrap();
    acked.extend(expected_image(&schema, &batch));
    drop(store);
    reopen_intact(&dir, &acked, &[]);
}
