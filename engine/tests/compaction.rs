//! Background compaction: bounded segments and reclaimed deletes without `compact()`, writes
//! and searches during a merge, pause and resume, close during a merge, and turning it off.

mod common;

use std::time::{Duration, Instant};

use common::{create, items, options, schema};
use hivlp::{CompactionState, Database, ElemType, Options, Query, SearchParams, Stats};

/// Rows of each segment in the tests that need merges long enough to overlap with writes:
/// about 2.3 MiB of files, so eight of them make one merge of some 18 MiB.
const BIG_SEGMENT_ROWS: u64 = 4000;

/// Polls `stats()` until `done` holds. The deadline only keeps a broken build from hanging
/// the suite; nothing here depends on how fast the thread is.
fn wait_for(db: &Database, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = db.stats().unwrap();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "background compaction never got to: {what}; {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Inserts `count` segments of `rows` rows each, from id `first`; returns the next id.
fn add_segments(db: &Database, first: u64, count: u64, rows: u64) -> u64 {
    let mut id = first;
    for _ in 0..count {
        db.insert(items(id..id + rows, true)).unwrap();
        db.flush().unwrap();
        id += rows;
    }
    id
}

fn hit_ids(db: &Database, id: u64) -> Vec<u64> {
    let item = items(id..id + 1, true).remove(0).image.unwrap();
    let params = SearchParams {
        k: 1,
        exact: true,
        ..SearchParams::default()
    };
    let hits = db.search(&Query::from(item), &params).unwrap();
    hits.iter().map(|h| h.id).collect()
}

#[test]
fn many_small_flushes_keep_the_segment_count_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    add_segments(&db, 0, 100, 20);
    let stats = wait_for(&db, "fewer than 8 segments, merged", |s| {
        s.store.segments < 8 && s.compaction.merges > 0
    });
    println!(
        "100 flushes: {} segments after {} background merges",
        stats.store.segments, stats.compaction.merges
    );
    assert!(stats.compaction.merges >= 12, "{:?}", stats.compaction);
    assert_eq!(stats.compaction.last_error, None);
    assert_eq!(db.len().unwrap(), 2000);
    for id in [0, 777, 1999] {
        assert_eq!(hit_ids(&db, id), [id]);
    }
    drop(db);
    let db = Database::open(dir.path().join("db"), options()).unwrap();
    assert_eq!(db.len().unwrap(), 2000);
    assert!(hivlp::verify(&dir.path().join("db")).unwrap().is_ok());
}

#[test]
fn deletes_past_the_ratio_are_reclaimed_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    add_segments(&db, 0, 1, 1000);
    // A fifth deleted is at the ratio, not past it: nothing to do yet.
    db.delete(&(0..200).collect::<Vec<_>>()).unwrap();
    db.pause_compaction().unwrap();
    assert_eq!(db.stats().unwrap().store.deleted_rows, 200);
    db.resume_compaction().unwrap();
    db.delete(&(200..300).collect::<Vec<_>>()).unwrap();
    let stats = wait_for(&db, "no deleted row left", |s| {
        s.store.deleted_rows == 0 && s.compaction.merges > 0
    });
    println!(
        "30% deleted: reclaimed by {} background merge(s); {} live rows in {} segment(s)",
        stats.compaction.merges, stats.store.segment_rows, stats.store.segments
    );
    assert_eq!(
        (stats.store.segment_rows, stats.store.live_rows),
        (700, 700)
    );
    assert!(db.get(299).unwrap().is_none());
    assert!(db.get(300).unwrap().is_some());
}

#[test]
fn inserts_and_searches_proceed_during_a_background_merge() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::F32);
    let mut next = 0;
    let mut during = 0;
    for round in 0..10 {
        // Seven segments wait in their tier; the eighth fills it.
        db.pause_compaction().unwrap();
        next = add_segments(&db, next, 8, BIG_SEGMENT_ROWS);
        let merges = db.stats().unwrap().compaction.merges;
        db.resume_compaction().unwrap();
        let mut inserted = 0;
        loop {
            let before = db.stats().unwrap().compaction;
            if before.merges > merges && before.state != CompactionState::Merging {
                break;
            }
            db.insert(items(next..next + 1, true)).unwrap();
            assert_eq!(hit_ids(&db, next), [next]);
            next += 1;
            inserted += 1;
            let after = db.stats().unwrap().compaction;
            // Still the same merge before and after: the insert and the search ran inside it.
            if before.state == CompactionState::Merging
                && after.state == CompactionState::Merging
                && after.merges == before.merges
            {
                during += 1;
            }
        }
        println!("round {round}: {inserted} inserts and searches, {during} inside a merge so far");
        if during > 0 {
            break;
        }
    }
    assert!(
        during > 0,
        "no insert and search ran during a background merge"
    );
    assert_eq!(db.len().unwrap() as u64, next);
}

#[test]
fn pause_stops_merges_and_resume_restarts_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.pause_compaction().unwrap();
    add_segments(&db, 0, 20, 10);
    let paused = db.stats().unwrap();
    assert_eq!(paused.compaction.state, CompactionState::Paused);
    assert_eq!((paused.store.segments, paused.compaction.merges), (20, 0));
    // Explicit compaction still works while paused.
    db.compact().unwrap();
    assert_eq!(db.stats().unwrap().store.segments, 1);
    add_segments(&db, 1000, 20, 10);
    assert_eq!(db.stats().unwrap().store.segments, 21);
    db.resume_compaction().unwrap();
    // The merge count moves just after the merged segments are installed.
    wait_for(&db, "fewer than 8 segments, merged", |s| {
        s.store.segments < 8 && s.compaction.merges > 0
    });
    assert_eq!(db.len().unwrap(), 400);
}

#[test]
fn closing_during_a_background_merge_returns_and_the_database_reopens_with_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = create(dir.path(), ElemType::F32);
    db.pause_compaction().unwrap();
    let rows = add_segments(&db, 0, 8, BIG_SEGMENT_ROWS);
    db.resume_compaction().unwrap();
    let stats = wait_for(&db, "a merge started", |s| {
        s.compaction.state == CompactionState::Merging || s.compaction.merges > 0
    });
    println!(
        "closing with the merge {}",
        if stats.compaction.merges == 0 {
            "running"
        } else {
            "already done"
        }
    );
    db.close().unwrap();
    let reopened = Options {
        auto_compaction: false,
        ..options()
    };
    let db = Database::open(&path, reopened).unwrap();
    assert_eq!(db.len().unwrap() as u64, rows);
    for id in [0, BIG_SEGMENT_ROWS * 3 + 5, rows - 1] {
        assert_eq!(hit_ids(&db, id), [id]);
    }
    assert!(hivlp::verify(&path).unwrap().is_ok());
}

#[test]
fn without_auto_compaction_nothing_merges() {
    let dir = tempfile::tempdir().unwrap();
    let off = Options {
        auto_compaction: false,
        ..options()
    };
    let db = Database::create(dir.path().join("db"), schema(ElemType::I8), off).unwrap();
    add_segments(&db, 0, 20, 10);
    db.delete(&(0..150).collect::<Vec<_>>()).unwrap();
    db.pause_compaction().unwrap();
    db.resume_compaction().unwrap();
    let stats = db.stats().unwrap();
    assert_eq!(stats.compaction.state, CompactionState::Off);
    assert_eq!((stats.store.segments, stats.store.deleted_rows), (20, 150));
    let fields = stats.fields();
    assert!(fields.contains(&("background_merges", hivlp::StatValue::Count(0))));
    assert!(fields.contains(&("auto_compaction", hivlp::StatValue::Name("off".into()))));
    db.compact().unwrap();
    assert_eq!(db.stats().unwrap().store.segments, 1);
}

#[test]
fn read_only_handles_start_no_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = create(dir.path(), ElemType::I8);
    db.pause_compaction().unwrap();
    add_segments(&db, 0, 10, 10);
    let reader = Options {
        read_only: true,
        ..options()
    };
    let reader = Database::open(dir.path().join("db"), reader).unwrap();
    assert_eq!(
        reader.stats().unwrap().compaction.state,
        CompactionState::Off
    );
    assert_eq!(reader.stats().unwrap().store.segments, 10);
}

/// The largest id among the segment files in `path`.
fn last_segment_id(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("seg-")?
                .strip_suffix(".meta")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap()
}

#[test]
fn a_failed_background_merge_is_recorded_and_retried_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = create(dir.path(), ElemType::I8);
    db.pause_compaction().unwrap();
    add_segments(&db, 0, 8, 10);
    // The merge writes the next segment id: a directory in the way of its file fails it the
    // way a full disk would.
    let obstacle = path.join(hivlp_storage::segment::meta_file_name(
        last_segment_id(&path) + 1,
    ));
    std::fs::create_dir(&obstacle).unwrap();
    db.resume_compaction().unwrap();
    let failed = wait_for(&db, "a recorded error", |s| {
        s.compaction.last_error.is_some()
    });
    println!("recorded: {:?}", failed.compaction.last_error);
    assert_eq!(failed.compaction.merges, 0);
    assert_ne!(failed.compaction.state, CompactionState::Stopped);
    assert_eq!(failed.store.segments, 8);
    let obstacle_name = obstacle.file_name().unwrap().to_str().unwrap().to_owned();
    let prefix = obstacle_name.strip_suffix(".meta").unwrap();
    let stray: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(prefix) && *name != obstacle_name)
        .collect();
    assert!(stray.is_empty(), "the failed merge left {stray:?}");
    db.insert(items(80..90, true)).unwrap();
    std::fs::remove_dir(&obstacle).unwrap();
    // The flush changes the segments, which wakes the thread to plan again.
    db.flush().unwrap();
    wait_for(&db, "a merge after the failure", |s| {
        s.compaction.merges > 0 && s.store.segments < 8
    });
    assert_eq!(db.len().unwrap(), 90);
    drop(db);
    assert!(hivlp::verify(&path).unwrap().is_ok());
    let db = Database::open(&path, options()).unwrap();
    assert_eq!(db.len().unwrap(), 90);
}
