//! Deterministic fault sweeps: each operation is run once to count its I/O calls, then once
//! per call and fault kind with that call failing. Every run must return an error carrying
//! the injected errno (or succeed, when the failed call was a best-effort clean-up), never
//! acknowledge a write that is not durable, and reopen to the reference.

use super::sweep::{Op, SNAPSHOT, check_recovery, is_injected};
use crate::io::{Dir, Fault, FaultyDir};

fn sweep(op: Op) {
    let (reference, counts) = op.reference();
    let mut swept = Vec::new();
    for fault in Fault::ALL {
        let points = counts.points(fault);
        for n in 0..points {
            let io = FaultyDir::new();
            let (store, _) = op.prepare(&io);
            io.fail(fault, n);
            let (store, result) = op.run(&io, store);
            let what = format!("{op:?} with {fault:?} at call {n} of {points}");
            assert!(io.fired(), "{what}: the fault did not fire");
            if let Err(e) = &result {
                assert!(is_injected(e), "{what}: unexpected error {e}");
                if op == Op::Snapshot {
                    let left = io.stat(std::path::Path::new(SNAPSHOT)).is_ok();
                    assert!(
                        !left,
                        "{what}: the failed snapshot left its directory behind"
                    );
                }
            }
            check_recovery(&io, op, store, result.is_ok(), &reference, &what);
        }
        swept.push((fault, points));
    }
    eprintln!("fault sweep of {op:?}: {swept:?}");
}

sweeps! {
    faults_in_a_sync_insert: Op::InsertOne,
    faults_in_a_batch_insert: Op::InsertBatch,
    faults_in_a_delete: Op::Delete,
    faults_in_a_flush: Op::Flush,
    faults_in_a_compaction: Op::Compact,
    faults_in_a_snapshot: Op::Snapshot,
    faults_in_an_open_with_recovery: Op::Open,
    faults_in_an_open_cutting_a_torn_wal_tail: Op::OpenTornTail,
    faults_in_an_open_after_an_interrupted_flush: Op::OpenInterruptedFlush,
    faults_in_a_rewrite_with_properties: Op::Rewrite,
    faults_in_a_metadata_update: Op::Update,
}
