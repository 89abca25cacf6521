//! Power-loss sweep: each operation is run once per I/O call it makes, with the power cut
//! just before that call (and once after the last), dropping every byte not yet synced and
//! every directory change not yet made durable — and again for each other [`CrashMode`]:
//! torn writes, directory changes committed ahead of file bytes, or out of order. The database must reopen to the reference: the state before, or
//! the state after (required if the operation was acknowledged).

use super::sweep::{Op, check_recovery};
use crate::io::{CrashMode, FaultyDir};

fn sweep(op: Op) {
    let (reference, counts) = op.reference();
    for mode in CrashMode::ALL {
        for n in 0..=counts.calls {
            let io = FaultyDir::new();
            let (store, _) = op.prepare(&io);
            io.crash_at(n, mode);
            let (store, result) = op.run(&io, store);
            if !io.fired() {
                assert_eq!(
                    n, counts.calls,
                    "{op:?}: the crash at call {n} did not happen"
                );
                io.crash(mode);
            }
            drop(store);
            io.restart();
            let what = format!(
                "{op:?} with the power cut ({mode:?}) before call {n} of {}",
                counts.calls
            );
            check_recovery(&io, op, None, result.is_ok(), &reference, &what);
        }
    }
    eprintln!(
        "power-loss sweep of {op:?}: {} crash points, {} modes",
        counts.calls + 1,
        CrashMode::ALL.len()
    );
}

sweeps! {
    power_loss_in_a_sync_insert: Op::InsertOne,
    power_loss_in_a_batch_insert: Op::InsertBatch,
    power_loss_in_a_delete: Op::Delete,
    power_loss_in_a_flush: Op::Flush,
    power_loss_in_a_compaction: Op::Compact,
    power_loss_in_a_snapshot: Op::Snapshot,
    power_loss_in_an_open_with_recovery: Op::Open,
    power_loss_in_an_open_cutting_a_torn_wal_tail: Op::OpenTornTail,
    power_loss_in_an_open_after_an_interrupted_flush: Op::OpenInterruptedFlush,
    power_loss_in_a_rewrite_with_properties: Op::Rewrite,
    power_loss_in_a_metadata_update: Op::Update,
}
