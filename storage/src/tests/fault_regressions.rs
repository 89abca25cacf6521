//! Regression tests for the bugs the fault and power-loss sweeps found, one each, named after
//! the bug.

use std::path::Path;

use super::sweep::{DB, SNAPSHOT, options, schema, setup};
use super::{dump, rows};
use crate::io::{CrashMode, Fault, FaultyDir};
use crate::*;

/// `open` took any failure to stat `CURRENT` for its absence and reported `NotFound`, so a
/// caller that creates a database where none is found would have created one over it.
#[test]
fn an_io_error_on_current_is_not_a_missing_database() {
    let io = FaultyDir::new();
    drop(setup(&io));
    io.fail(Fault::Eio, 0);
    match Store::open(DB, options(&io)) {
        Err(OpenError::Io(e)) => assert!(e.file.is_some_and(|f| f.ends_with("CURRENT"))),
        other => panic!("expected an I/O error naming CURRENT, got {other:?}"),
    }
    let again = Store::create(DB, schema(), options(&io));
    assert!(matches!(again, Err(OpenError::AlreadyExists { .. })));
}

/// A snapshot took any failure to resolve a destination ancestor for its absence, so an I/O
/// error became `InvalidDestination` ("'..' after a folder that does not exist yet").
#[test]
fn an_io_error_resolving_a_snapshot_destination_is_an_io_error() {
    // The first calls of a snapshot resolve the database directory, then the destination
    // and its ancestors up to `/`.
    for n in 0..4 {
        let io = FaultyDir::new();
        let store = setup(&io);
        io.fail(Fault::Eio, n);
        match store.snapshot(Path::new(SNAPSHOT)) {
            Err(SnapshotError::Io(_)) => {}
            other => panic!("call {n}: expected an I/O error, got {other:?}"),
        }
    }
}

/// A snapshot into a destination whose parents it had to create synced only the
/// destination's parent: the parents' own entries were not durable, and a power cut after
/// the snapshot was acknowledged lost it whole.
#[test]
fn a_snapshot_into_new_parents_survives_a_power_cut() {
    let io = FaultyDir::new();
    let store = setup(&io);
    store.insert(rows(&schema(), [40])).unwrap();
    let expected = dump(&store.view());
    store.snapshot(Path::new(SNAPSHOT)).unwrap();
    io.crash(CrashMode::DropUnsynced);
    drop(store);
    io.restart();
    let copy = Store::open(SNAPSHOT, options(&io)).unwrap();
    assert_eq!(dump(&copy.view()), expected);
}

/// Open appended to the last WAL file without syncing the directory: when the flush that
/// created that file had failed to sync the directory, the writes acknowledged after the
/// reopen went to a file whose name a power cut could drop (found by the `store_ops` fuzz
/// target).
#[test]
fn a_reopened_wal_is_durably_named_before_it_takes_writes() {
    let io = FaultyDir::new();
    let store = setup(&io);
    // The flush's first sync is of the directory naming its new WAL.
    io.fail(Fault::SyncFails, 0);
    assert!(store.flush().is_err());
    drop(store);
    let store = Store::open(DB, options(&io)).unwrap();
    store.insert(rows(&schema(), [40])).unwrap();
    io.crash(CrashMode::DropUnsynced);
    drop(store);
    io.restart();
    let store = Store::open(DB, options(&io)).unwrap();
    assert!(
        store.view().locate(40).is_some(),
        "an acknowledged insert was lost"
    );
}
