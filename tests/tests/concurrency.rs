//! Concurrency guarantees of the storage layer:
//! - compaction while readers scan views and a writer inserts and deletes: every view is
//!   correct before, during and after; a view taken before compaction stays readable after
//!   the merged segments are retired; the disk space of dropped rows is reclaimed;
//! - a snapshot taken while a writer is busy opens as a database equal to the state after
//!   some prefix of the acknowledged writes that lies between the call and its return;
//! - one writer per database, in this process and across processes (`OpenError::Locked`),
//!   while read-only handles may open alongside.
//! - `verify` beside a writer that flushes and deletes in a loop reports no problem.

mod child;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use child::{child, child_says};
use hivlp_storage::{
    ElemType, MergeAll, Modality, OpenError, Rewrite, Row, Schema, Store, StoreOptions,
    VerifyLevel, verify,
};
use hivlp_tests::{
    StoreImage, diff_images, dir_bytes, expected_image, expected_row, random_row, random_rows,
    read_view, small_schema,
};

const SEED: u64 = 7;

/// Phase of the compaction test, as seen by readers.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

/// Row `id` with coarse vectors that are the f16-rounded prefix of its fine vectors, so that a
/// coarse rewrite during compaction (see [`prefix_rewrite`]) reproduces them bit for bit.
fn derived_row(schema: &Schema, id: u64) -> Row {
    let mut row = random_row(schema, SEED, id);
    for tier in [row.image.as_mut(), row.text.as_mut()]
        .into_iter()
        .flatten()
    {
        tier.coarse = tier.fine[..schema.coarse_dim]
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
    }
    row
}

fn derived_rows(schema: &Schema, ids: std::ops::Range<u64>) -> Vec<Row> {
    ids.map(|id| derived_row(schema, id)).collect()
}

/// What the writer thread has acknowledged so far.
#[derive(Default)]
struct Acked {
    inserted: Vec<u64>,
    deleted: HashSet<u64>,
}

#[test]
fn compaction_under_concurrent_reads_and_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let schema = small_schema(ElemType::F16, ElemType::F32);
    let options = StoreOptions {
        memtable_rows: 100_000,
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::create(&dir, schema.clone(), options).unwrap());
    // Eight segments of 3,000 rows; then every other row deleted.
    const SEGMENTS: u64 = 8;
    const PER_SEGMENT: u64 = 3_000;
    for s in 0..SEGMENTS {
        let ids = s * PER_SEGMENT..(s + 1) * PER_SEGMENT;
        for chunk in derived_rows(&schema, ids).chunks(1_000) {
            store.insert(chunk.to_vec()).unwrap();
        }
        store.flush().unwrap();
    }
    let total = SEGMENTS * PER_SEGMENT;
    let doomed: Vec<u64> = (0..total).filter(|id| id % 2 == 1).collect();
    store.delete(&doomed).unwrap();
    store.flush().unwrap();
    let base_rows: Vec<_> = (0..total)
        .filter(|id| id % 2 == 0)
        .map(|id| derived_row(&schema, id))
        .collect();
    let base = expected_image(&schema, &base_rows);
    // Rows the writer deletes while compaction runs; rows it inserts get ids from `total` on.
    let to_delete: Vec<u64> = (0..total).filter(|id| id % 10 == 4).collect();
    let old_view = store.view();
    let old_image = read_view(&old_view).unwrap();
    assert!(diff_images(&base, &old_image).is_none());
    let bytes_before = dir_bytes(&dir).unwrap();

    let phase = AtomicU8::new(BEFORE);
    let stop = AtomicBool::new(false);
    let stop_writer = AtomicBool::new(false);
    let acked = Mutex::new(Acked::default());
    let reads = Arc::new(Mutex::new([0usize; 3]));
    let report = thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    // What was acknowledged before the view must be in it.
                    let (inserted_before, deleted_before) = {
                        let a = acked.lock().unwrap();
                        (a.inserted.len(), a.deleted.clone())
                    };
                    let started_in = phase.load(Ordering::SeqCst);
                    let view = store.view();
                    let image = read_view(&view).unwrap();
                    let inserted: Vec<u64> = acked.lock().unwrap().inserted.clone();
                    for (id, row) in &base {
                        match image.get(id) {
                            Some(got) => assert_eq!(got, row, "base row {id} changed"),
                            None => assert!(
                                to_delete.contains(id),
                                "base row {id} vanished (phase {started_in})"
                            ),
                        }
                        if deleted_before.contains(id) {
                            assert!(!image.contains_key(id), "deleted row {id} is back");
                        }
                    }
                    for id in &inserted[..inserted_before] {
                        assert!(image.contains_key(id), "acknowledged row {id} missing");
                    }
                    for (id, got) in image.iter().filter(|(id, _)| !base.contains_key(id)) {
                        assert!(*id >= total, "row {id} should not exist");
                        let want = expected_row(&schema, &derived_row(&schema, *id));
                        assert_eq!(got, &want, "inserted row {id} differs");
                    }
                    reads.lock().unwrap()[usize::from(started_in)] += 1;
                }
            });
        }
        let writer = scope.spawn(|| {
            let mut next = total;
            let mut deletes = to_delete.iter();
            while !stop_writer.load(Ordering::SeqCst) {
                store
                    .insert(derived_rows(&schema, next..next + 10))
                    .unwrap();
                acked.lock().unwrap().inserted.extend(next..next + 10);
                next += 10;
                if let Some(&id) = deletes.next() {
                    assert_eq!(store.delete(&[id]).unwrap(), 1);
                    acked.lock().unwrap().deleted.insert(id);
                }
                thread::sleep(Duration::from_millis(2));
            }
        });
        // Readers and writer get going before compaction starts.
        while reads.lock().unwrap()[usize::from(BEFORE)] < 6 {
            thread::sleep(Duration::from_millis(5));
        }
        phase.store(DURING, Ordering::SeqCst);
        let started = Instant::now();
        // The rewrite hook recomputes coarse from fine (reproducing the stored bits), and on its
        // first row holds compaction until readers have checked a few views taken meanwhile.
        // (`CoarseRewrite` is `'static`, hence the moved clone.)
        let held = AtomicBool::new(false);
        let reads_seen = reads.clone();
        let rewrite = move |_: Modality, fine: &[f32], coarse: &mut [f32]| {
            if !held.swap(true, Ordering::SeqCst) {
                let deadline = Instant::now() + Duration::from_secs(20);
                while reads_seen.lock().unwrap()[usize::from(DURING)] < 6
                    && Instant::now() < deadline
                {
                    thread::sleep(Duration::from_millis(2));
                }
            }
            coarse.copy_from_slice(&fine[..coarse.len()]);
        };
        let rewrite = Rewrite {
            coarse: &rewrite,
            properties: Vec::new(),
        };
        let report = store.compact(&MergeAll, Some(&rewrite)).unwrap();
        let took = started.elapsed();
        phase.store(AFTER, Ordering::SeqCst);
        while reads.lock().unwrap()[usize::from(AFTER)] < 6 {
            thread::sleep(Duration::from_millis(5));
        }
        stop_writer.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        stop.store(true, Ordering::SeqCst);
        println!(
            "compaction of {total} rows took {:.0} ms",
            took.as_secs_f64() * 1e3
        );
        report
    });
    let reads = *reads.lock().unwrap();
    println!(
        "reads checked: {} before, {} during, {} after compaction; {report:?}",
        reads[0], reads[1], reads[2]
    );
    assert!(
        reads[usize::from(DURING)] > 0,
        "no read overlapped compaction"
    );
    // With a rewrite, the writer's memtable is flushed into one more segment first.
    assert!(report.segments_merged as u64 >= SEGMENTS, "{report:?}");
    assert_eq!(report.segments_written, 1);
    // Plus whatever the writer deleted before compaction picked its segments.
    assert!(report.rows_dropped >= doomed.len(), "{report:?}");

    // A view from before compaction still reads the retired segments.
    assert!(diff_images(&old_image, &read_view(&old_view).unwrap()).is_none());
    drop(old_view);

    // Final state: base minus the writer's deletes plus its inserts, here and after reopening.
    let acked = acked.into_inner().unwrap();
    let mut want: StoreImage = base.clone();
    for id in &acked.deleted {
        want.remove(id);
    }
    for &id in &acked.inserted {
        want.insert(id, expected_row(&schema, &derived_row(&schema, id)));
    }
    let now = read_view(&store.view()).unwrap();
    if let Some(diff) = diff_images(&want, &now) {
        panic!("after compaction: {diff}");
    }
    let bytes_after = dir_bytes(&dir).unwrap();
    println!(
        "disk: {bytes_before} bytes before compaction, {bytes_after} after \
         ({:.1}% reclaimed; the merged segments held {} bytes, the new one {})",
        100.0 * (bytes_before as f64 - bytes_after as f64) / bytes_before as f64,
        report.bytes_before,
        report.bytes_after
    );
    assert!(
        bytes_after < bytes_before * 3 / 4,
        "half the rows were dropped but the directory shrank only from {bytes_before} to \
         {bytes_after} bytes"
    );
    drop(store);
    let store = Store::open(&dir, StoreOptions::default()).unwrap();
    assert!(diff_images(&want, &read_view(&store.view()).unwrap()).is_none());
}

#[derive(Debug, Clone)]
enum Op {
    Insert(std::ops::Range<u64>),
    Delete(u64),
}

#[test]
fn snapshot_taken_mid_writes_equals_a_prefix_of_the_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let schema = small_schema(ElemType::F32, ElemType::F32);
    let options = StoreOptions {
        // Automatic flushes while the writer runs: the snapshot sees segments and memtable.
        memtable_rows: 64,
        ..StoreOptions::default()
    };
    let store = Store::create(&dir, schema.clone(), options).unwrap();
    let ops: Mutex<Vec<Op>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut windows = Vec::new();
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut next = 0u64;
            for k in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let n = 1 + k % 5;
                store
                    .insert(random_rows(&schema, SEED, next..next + n))
                    .unwrap();
                ops.lock().unwrap().push(Op::Insert(next..next + n));
                if k % 3 == 2 {
                    let id = next / 2;
                    if store.delete(&[id]).unwrap() == 1 {
                        ops.lock().unwrap().push(Op::Delete(id));
                    }
                }
                next += n;
            }
        });
        for i in 0..4 {
            thread::sleep(Duration::from_millis(40));
            let dest = tmp.path().join(format!("snapshot-{i}"));
            let before = ops.lock().unwrap().len();
            store.snapshot(&dest).unwrap();
            let after = ops.lock().unwrap().len();
            windows.push((dest, before, after));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let ops = ops.into_inner().unwrap();
    for (dest, before, after) in windows {
        let snap = Store::open(&dest, StoreOptions::default()).unwrap();
        let image = read_view(&snap.view()).unwrap();
        // The op that was applied just before the snapshot may not have been recorded yet.
        let mut model = StoreImage::new();
        let mut matched = None;
        for (k, op) in ops.iter().enumerate().take((after + 1).min(ops.len()) + 1) {
            if k >= before && diff_images(&model, &image).is_none() {
                matched = Some(k);
                break;
            }
            match op {
                Op::Insert(ids) => {
                    for id in ids.clone() {
                        model.insert(id, expected_row(&schema, &random_row(&schema, SEED, id)));
                    }
                }
                Op::Delete(id) => {
                    model.remove(id);
                }
            }
        }
        if matched.is_none() && ops.len() <= after + 1 && diff_images(&model, &image).is_none() {
            matched = Some(ops.len());
        }
        let k = matched.unwrap_or_else(|| {
            panic!(
                "snapshot {} ({} rows) equals no prefix of the writes between {before} and \
                 {after} acknowledged operations",
                dest.display(),
                image.len()
            )
        });
        let linked = std::fs::read_dir(&dest)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().metadata().unwrap().nlink() > 1)
            .count();
        println!(
            "snapshot {}: state after {k} operations (window {before}..={after}), {} rows, \
             {linked} hard-linked files",
            dest.display(),
            image.len()
        );
        // The snapshot is an independent, writable database.
        snap.insert(random_rows(&schema, SEED, 1 << 40..(1 << 40) + 1))
            .unwrap();
    }
}

#[test]
fn one_writer_per_database_in_process_and_across_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let path = dir.to_str().unwrap();
    let schema = small_schema(ElemType::F32, ElemType::F32);
    let writer = Store::create(&dir, schema.clone(), StoreOptions::default()).unwrap();
    writer.insert(random_rows(&schema, SEED, 0..3)).unwrap();

    // Same process: a second writer is refused, readers are welcome.
    match Store::open(&dir, StoreOptions::default()) {
        Err(OpenError::Locked { .. }) => {}
        other => panic!("second writer in the same process: {other:?}"),
    }
    let read_only = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    assert_eq!(
        Store::open(&dir, read_only.clone()).unwrap().view().len(),
        3
    );
    // Another process: refused too.
    assert_eq!(child_says(&["try-open", path]), "locked");
    drop(writer);
    assert_eq!(child_says(&["try-open", path]), "opened");

    // The other way round: a child holds the lock.
    let mut holder = child(&["hold-lock", path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "opened");
    match Store::open(&dir, StoreOptions::default()) {
        Err(e @ OpenError::Locked { .. }) => println!("while another process writes: {e}"),
        other => panic!("writer while another process holds the lock: {other:?}"),
    }
    assert_eq!(Store::open(&dir, read_only).unwrap().view().len(), 3);
    let mut stdin = holder.stdin.take().unwrap();
    stdin.flush().unwrap();
    drop(stdin);
    assert!(holder.wait().unwrap().success());
    // Released when the holder exits.
    let writer = Store::open(&dir, StoreOptions::default()).unwrap();
    assert_eq!(writer.view().len(), 3);
}

/// Each flush rotates the WAL, installs a new manifest and deletes the WAL, manifest and
/// tombstones it replaced. `verify` reads the manifest, then every segment (many here, so
/// that a flush often lands in between), then the WAL: it must still see one consistent
/// state, and call nothing damaged that a flush merely superseded.
#[test]
fn verify_beside_a_flushing_writer_reports_no_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let schema = small_schema(ElemType::F32, ElemType::I8);
    let store = Store::create(&dir, schema.clone(), StoreOptions::default()).unwrap();
    const SEGMENTS: u64 = 30;
    for id in 0..SEGMENTS {
        store
            .insert(random_rows(&schema, SEED, id..id + 1))
            .unwrap();
        store.flush().unwrap();
    }
    let done = AtomicBool::new(false);
    let (mut runs, mut failed) = (0, Vec::new());
    thread::scope(|s| {
        s.spawn(|| {
            for id in SEGMENTS..SEGMENTS + 150 {
                store
                    .insert(random_rows(&schema, SEED, id..id + 1))
                    .unwrap();
                store.delete(&[id - SEGMENTS]).unwrap();
                store.flush().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        while !done.load(Ordering::SeqCst) {
            runs += 1;
            match verify(&dir, VerifyLevel::Cheap) {
                Ok(report) if report.is_ok() => {}
                Ok(report) => failed.push(format!("{:?}", report.problems)),
                Err(e) => failed.push(e.to_string()),
            }
        }
    });
    assert!(
        failed.is_empty(),
        "{} of {runs} runs failed, first: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(verify(&dir, VerifyLevel::Full).unwrap().is_ok());
}
