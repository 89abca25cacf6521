//! What the fault and power-loss sweeps share: the operations swept, the database each starts
//! from, and the check of a reopened database against the reference.
//!
//! The reference for an operation is a map of rows, id to every byte a reader sees
//! ([`Dump`]), plus the engine property a rewrite sets: taken before the operation and
//! after it ran without faults. A database recovered after a fault must hold one of the
//! two (an operation is atomic), the second if the operation was acknowledged.

use std::path::Path;
use std::sync::Arc;

use super::{Dump, dump, rows};
use crate::io::{CrashMode, Dir, FaultyDir};
use crate::*;

pub(super) const DB: &str = "/db";
pub(super) const SNAPSHOT: &str = "/snapshots/one";
/// Property a rewrite sets (with its coarse vectors).
const PROJECTION: &str = "projection";
/// The call of a flush (of [`setup`]'s database) before which
/// [`Op::OpenInterruptedFlush`] cuts the power: its segment files are written, its manifest
/// is not (the segment's field columns and directory included).
const FLUSH_CUT: u64 = 56;
/// Inserted after a failed operation, to see whether the handle still acknowledges writes.
const LATE_ID: u64 = 900;
/// Inserted on the handle reopened after the failure, before the power cut: a reopen must
/// leave the database fit to take durable writes.
const REOPENED_ID: u64 = 901;

pub(super) fn schema() -> Schema {
    super::schema(ElemType::F16, ElemType::I8)
}

pub(super) fn options(io: &Arc<FaultyDir>) -> StoreOptions {
    let io: Arc<dyn Dir> = io.clone();
    StoreOptions {
        memtable_rows: 10_000,
        verify: VerifyLevel::Full,
        io,
        ..StoreOptions::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// One row, `Durability::Sync`.
    InsertOne,
    InsertBatch,
    /// Rows in segments and in the memtable.
    Delete,
    Flush,
    /// Every segment merged into one, dropping deleted rows.
    Compact,
    /// Into a destination whose parent is missing.
    Snapshot,
    /// Of a database whose WAL holds inserts and deletes.
    Open,
    /// Of a database whose WAL ends in a torn record (cut off by the open).
    OpenTornTail,
    /// Of a database whose flush the power cut half-way: two WALs, orphan segment files.
    OpenInterruptedFlush,
    /// The storage half of a projection refit: coarse vectors recomputed with a property.
    Rewrite,
    /// A metadata and caption update of a row in a segment.
    Update,
}

/// A database state as readers see it.
pub(super) type State = (Dump, Option<Vec<u8>>);

fn state(store: &Store) -> State {
    (dump(&store.view()), store.property(PROJECTION))
}

fn rows_of(ids: impl IntoIterator<Item = u64>) -> Vec<Row> {
    rows(&schema(), ids)
}

fn halve_fine(_: Modality, fine: &[f32], coarse: &mut [f32]) {
    for (c, f) in coarse.iter_mut().zip(fine) {
        *c = f * 0.5;
    }
}

/// New metadata for [`Store::update`]: other values, and a field the rows did not have.
pub(super) fn updated_metadata(id: u64) -> Vec<u8> {
    format!(
        r#"{{"n": {}, "updated": true, "tags": ["new"]}}"#,
        id + 1000
    )
    .into_bytes()
}

/// Two segments (with tombstones), a memtable with a deleted row and an updated one (and an
/// updated segment row), and a WAL holding them.
pub(super) fn setup(io: &Arc<FaultyDir>) -> Store {
    let s = schema();
    let store = Store::create(DB, s.clone(), options(io)).unwrap();
    store.insert(rows(&s, 0..10)).unwrap();
    store.flush().unwrap();
    store.insert(rows(&s, 10..20)).unwrap();
    store.flush().unwrap();
    store.insert(rows(&s, 20..30)).unwrap();
    store.delete(&[3, 12, 25]).unwrap();
    for id in [15, 22] {
        let update = MetadataUpdate {
            metadata: Some(updated_metadata(id)),
            ..MetadataUpdate::default()
        };
        assert!(store.update(id, update).unwrap());
    }
    store
}

impl Op {
    /// The database the operation starts from: open, except for the opens.
    pub(super) fn prepare(self, io: &Arc<FaultyDir>) -> (Option<Store>, State) {
        let store = setup(io);
        let before = state(&store);
        match self {
            Op::Open => {}
            Op::OpenTornTail => {
                // The power cut during the insert's fsync keeps half of its record.
                io.crash_at(1, CrashMode::KeepHalfUnsynced);
                assert!(store.insert(rows(&schema(), [100])).is_err());
            }
            Op::OpenInterruptedFlush => {
                // Past the new WAL and the segment files, before the manifest.
                io.crash_at(FLUSH_CUT, CrashMode::KeepDirChanges);
                assert!(store.flush().is_err());
            }
            _ => return (Some(store), before),
        }
        drop(store);
        io.disarm();
        io.restart();
        if self == Op::OpenInterruptedFlush {
            let names: Vec<String> = io
                .list(Path::new(DB))
                .unwrap()
                .into_iter()
                .filter_map(|e| e.name.into_string().ok())
                .collect();
            let wals = names.iter().filter(|n| n.starts_with("wal-")).count();
            let segments = names.iter().filter(|n| n.starts_with("seg-000003")).count();
            let complete = names.iter().any(|n| n == "seg-000003.fields");
            assert!(
                wals == 2
                    && segments > 0
                    && complete
                    && !names.iter().any(|n| n == "MANIFEST-000004"),
                "not an interrupted flush: {names:?}"
            );
        }
        (None, before)
    }

    /// Runs the operation; the handle it leaves (for `Open`, the one it opened).
    pub(super) fn run(
        self,
        io: &Arc<FaultyDir>,
        store: Option<Store>,
    ) -> (Option<Store>, Result<(), Error>) {
        let s = schema();
        let Some(store) = store else {
            return match Store::open(DB, options(io)) {
                Ok(store) => (Some(store), Ok(())),
                Err(e) => (None, Err(e.into())),
            };
        };
        let result: Result<(), Error> = match self {
            Op::InsertOne => store.insert(rows(&s, [100])).map_err(Into::into),
            Op::InsertBatch => store.insert(rows(&s, 100..120)).map_err(Into::into),
            Op::Delete => store.delete(&[1, 11, 21]).map(drop).map_err(Into::into),
            Op::Flush => store.flush().map_err(Into::into),
            Op::Compact => store.compact(&MergeAll, None).map(drop).map_err(Into::into),
            Op::Snapshot => store.snapshot(Path::new(SNAPSHOT)).map_err(Into::into),
            Op::Rewrite => {
                let rewrite = Rewrite {
                    coarse: &halve_fine,
                    properties: vec![(PROJECTION.to_owned(), b"halved".to_vec())],
                };
                store
                    .compact(&MergeAll, Some(&rewrite))
                    .map(drop)
                    .map_err(Into::into)
            }
            Op::Update => {
                let update = MetadataUpdate {
                    caption: Some(Some("updated".into())),
                    metadata: Some(updated_metadata(5)),
                    ..MetadataUpdate::default()
                };
                store.update(5, update).map(drop).map_err(Into::into)
            }
            Op::Open | Op::OpenTornTail | Op::OpenInterruptedFlush => {
                unreachable!("handled above")
            }
        };
        (Some(store), result)
    }

    /// The state before and after the operation without faults, and its I/O calls.
    pub(super) fn reference(self) -> ([State; 2], io::CallCounts) {
        let io = FaultyDir::new();
        let (store, before) = self.prepare(&io);
        io.reset_counts();
        let (store, result) = self.run(&io, store);
        let counts = io.counts();
        result.unwrap();
        let after = state(&store.unwrap());
        ([before, after], counts)
    }
}

/// Whether `e` carries the errno a [`FaultyDir`] injected (`EIO`, `ENOSPC`), or is a handle
/// refusing writes after an earlier failure.
pub(super) fn is_injected(e: &Error) -> bool {
    if matches!(e, Error::Commit(CommitError::Poisoned(_))) {
        return true;
    }
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(io.raw_os_error(), Some(5 | 28));
        }
        source = s.source();
    }
    false
}

/// After an operation that returned `result` on `store`: tries one more write, then checks
/// that the database, reopened after a restart and again after a power cut, holds one of the
/// `reference` states — the second if the operation was acknowledged — plus the late write
/// exactly if it was acknowledged, and a write acknowledged by the first reopen survives the
/// power cut. `what` names the run in failures.
pub(super) fn check_recovery(
    io: &Arc<FaultyDir>,
    op: Op,
    store: Option<Store>,
    acknowledged: bool,
    reference: &[State; 2],
    what: &str,
) {
    io.disarm();
    let late = store.as_ref().map(|store| {
        // Never Ok unless durable: the power cut below tells.
        store.insert(rows(&schema(), [LATE_ID])).is_ok()
    });
    drop(store);
    for cut in [false, true] {
        if cut {
            io.crash(CrashMode::DropUnsynced);
            io.restart();
        }
        let store = Store::open(DB, options(io))
            .unwrap_or_else(|e| panic!("{what}: reopen (power cut: {cut}) failed: {e}"));
        let (mut rows, property) = state(&store);
        let late_there = rows.remove(&LATE_ID).is_some();
        let reopened_there = rows.remove(&REOPENED_ID).is_some();
        assert_eq!(
            reopened_there, cut,
            "{what}: the write acknowledged after the reopen, present after the power cut: {reopened_there}"
        );
        assert_eq!(
            late_there,
            late == Some(true),
            "{what}: late write acknowledged {late:?}, present after reopen (power cut: {cut}): {late_there}"
        );
        let holds = |r: &State| r.0 == rows && r.1 == property;
        if !(holds(&reference[1]) || !acknowledged && holds(&reference[0])) {
            panic!(
                "{what}: reopen (power cut: {cut}) holds {:?} live ids (property {property:?}), \
                 expected {:?} (acknowledged: {acknowledged}; before it: {:?})",
                rows.keys().collect::<Vec<_>>(),
                reference[1].0.keys().collect::<Vec<_>>(),
                reference[0].0.keys().collect::<Vec<_>>(),
            );
        }
        let io_dyn: Arc<dyn Dir> = io.clone();
        let report = verify_in(&io_dyn, Path::new(DB), VerifyLevel::Full).unwrap();
        assert!(
            report.is_ok(),
            "{what}: verify after reopen: {:?}",
            report.problems
        );
        if !cut {
            store.insert(rows_of([REOPENED_ID])).unwrap();
        }
        drop(store);
    }
    if op == Op::Snapshot {
        check_snapshot(io, acknowledged, &reference[0], what);
    }
}

/// A snapshot that was acknowledged or exists (has `CURRENT`) must open and hold the state
/// it was taken in.
fn check_snapshot(io: &Arc<FaultyDir>, acknowledged: bool, expected: &State, what: &str) {
    if !acknowledged && io.stat(&Path::new(SNAPSHOT).join("CURRENT")).is_err() {
        return;
    }
    let store = Store::open(SNAPSHOT, options(io)).unwrap_or_else(|e| {
        panic!("{what}: snapshot acknowledged or with CURRENT, but it does not open: {e}")
    });
    assert!(
        state(&store) == *expected,
        "{what}: snapshot does not hold the state it was taken in"
    );
}
