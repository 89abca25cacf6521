//! Background compaction: a thread owned by a writer [`Database`](crate::Database) that runs
//! a [`TieredMergePolicy`] whenever writes changed the segments, so the segment count and the
//! deleted rows stay bounded without anyone calling `compact()`.
//!
//! It runs only storage merges, which hold the store's writer lock just to plan and to
//! install: inserts, deletes and searches go on while it merges. (Projection refits hold the
//! engine's writer lock for their whole rewrite, so they stay with the explicit `compact()`.)

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hivlp_storage::{CommitError, CompactionError, Store, TieredMergePolicy, View};
use parking_lot::{Condvar, Mutex};

/// How often the thread looks again without being woken: retries a merge that failed (say,
/// on a full disk) once the cause may have gone.
const RECHECK_INTERVAL: Duration = Duration::from_secs(10);

/// What background compaction is doing, for [`Stats`](crate::Stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionState {
    /// No thread: `auto_compaction` is off, or the handle is read-only.
    Off,
    /// Waiting for writes that give it something to merge.
    Idle,
    /// A merge is running.
    Merging,
    /// [`Database::pause_compaction`](crate::Database::pause_compaction) holds it.
    Paused,
    /// Gave up: the handle refuses writes (see `last_error`).
    Stopped,
}

/// Background compaction figures, part of [`Stats`](crate::Stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionStats {
    pub state: CompactionState,
    /// Background compactions that merged or rewrote segments since the handle was opened
    /// (counted once each has installed its segments, so it may briefly lag the segments).
    pub merges: u64,
    /// Why the last background compaction failed, if one did (it is retried later unless
    /// the handle refuses writes).
    pub last_error: Option<String>,
}

impl CompactionStats {
    pub(crate) const OFF: CompactionStats = CompactionStats {
        state: CompactionState::Off,
        merges: 0,
        last_error: None,
    };
}

#[derive(Debug, Default)]
struct State {
    /// Writes happened since the thread last looked.
    woken: bool,
    paused: bool,
    stopping: bool,
    stopped: bool,
    merging: bool,
    merges: u64,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signals every change of `state`, both ways: to the thread and to `pause`.
    changed: Condvar,
}

/// The handle on the thread; dropping it stops the thread, waiting for a running merge.
#[derive(Debug)]
pub(crate) struct Compactor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    pub(crate) fn start(store: Arc<Store>, policy: TieredMergePolicy) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("hivlp-compaction".into())
                .spawn(move || run(&store, &policy, &shared))?
        };
        // Not woken yet: a handle opened only to read or for a quick command (the CLI's)
        // does not start a merge that its close would wait for; writes or the recheck do.
        Ok(Compactor {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the thread that writes changed the database.
    pub(crate) fn wake(&self) {
        self.shared.state.lock().woken = true;
        self.shared.changed.notify_all();
    }

    /// Stops merges until [`resume`](Self::resume); returns once no merge is running.
    pub(crate) fn pause(&self) {
        let mut state = self.shared.state.lock();
        state.paused = true;
        self.shared.changed.notify_all();
        while state.merging {
            self.shared.changed.wait(&mut state);
        }
    }

    pub(crate) fn resume(&self) {
        let mut state = self.shared.state.lock();
        state.paused = false;
        state.woken = true;
        self.shared.changed.notify_all();
    }

    pub(crate) fn stats(&self) -> CompactionStats {
        let state = self.shared.state.lock();
        CompactionStats {
            state: if state.stopped {
                CompactionState::Stopped
            } else if state.merging {
                CompactionState::Merging
            } else if state.paused {
                CompactionState::Paused
            } else {
                CompactionState::Idle
            },
            merges: state.merges,
            last_error: state.last_error.clone(),
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.shared.state.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // `run` never panics on a storage error; a panic would already have been printed.
            let _ = thread.join();
        }
    }
}

/// The live segments and their deleted counts: when these have not changed since a plan
/// found nothing to do, planning again would find nothing either.
fn segments_signature(view: &View) -> Vec<(u64, usize)> {
    view.sources()
        .iter()
        .filter_map(|s| Some((s.segment()?.id(), s.deleted().count_ones())))
        .collect()
}

fn run(store: &Store, policy: &TieredMergePolicy, shared: &Shared) {
    let mut settled: Option<Vec<(u64, usize)>> = None;
    let mut state = shared.state.lock();
    loop {
        while !state.stopping && (state.paused || !state.woken) {
            let timed_out = shared
                .changed
                .wait_for(&mut state, RECHECK_INTERVAL)
                .timed_out();
            if timed_out && !state.paused {
                state.woken = true;
                settled = None;
            }
        }
        if state.stopping {
            return;
        }
        state.woken = false;
        let signature = segments_signature(&store.view());
        if settled.as_ref() == Some(&signature) {
            continue;
        }
        state.merging = true;
        let result = parking_lot::MutexGuard::unlocked(&mut state, || store.compact(policy, None));
        state.merging = false;
        shared.changed.notify_all();
        match result {
            Ok(report) if report.segments_merged > 0 => {
                state.merges += 1;
                // The merge may have completed a tier above: look again.
                state.woken = true;
            }
            Ok(_) => settled = Some(signature),
            Err(e) => {
                let refused = matches!(
                    e,
                    CompactionError::ReadOnly
                        | CompactionError::Commit(
                            CommitError::Poisoned(_) | CommitError::Forked(_)
                        )
                );
                state.last_error = Some(e.to_string());
                if refused {
                    state.stopped = true;
                    return;
                }
                settled = Some(signature);
            }
        }
    }
}
