//! [`Store`]: a database directory opened for writing (one writer, advisory lock) or reading.
//!
//! Split by job: this file holds the handle, its options and stats; `open` creates and
//! recovers, `write` validates and appends inserts, deletes and properties, `flush`,
//! `compaction` (with the policies in `merge_policy`) and `snapshot` write segments through
//! `segment_writer`, `cleanup` removes orphans, and `state` is the writer's in-memory state.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::data::segment::Segment;
use crate::data::source::{Source, View};
use crate::error::{CommitError, ForkedError};
use crate::format::codec::VerifyLevel;
use crate::format::manifest::Manifest;
use crate::format::wal::DroppedWalTail;
use crate::io::dir::{Dir, FsDir, LockGuard};
use crate::io::wal::WalWriter;
use crate::schema::{Modality, Properties, Schema};

mod cleanup;
mod compaction;
mod flush;
mod merge_policy;
mod open;
mod segment_writer;
mod snapshot;
mod state;
mod write;

pub use cleanup::{Occupancy, occupancy};
pub use merge_policy::{
    DefaultMergePolicy, MergeAll, MergePolicy, SegmentStats, TieredMergePolicy,
};
pub use segment_writer::{CoarseRewrite, Rewrite};

/// Largest caption, in bytes.
pub const MAX_CAPTION_BYTES: usize = 64 * 1024;
/// Largest URI, in bytes.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Largest user metadata blob, in bytes.
pub const MAX_METADATA_BYTES: usize = 1 << 20;
/// Largest property key, in bytes.
pub const MAX_PROPERTY_KEY_BYTES: usize = 1024;
/// Largest id an insert may choose (2⁶³ − 1): chosen ids fit an int64 (Arrow, pandas, SQL),
/// and ids from [`Store::allocate_ids`], which continue after the largest id ever used, can
/// never run out. Ids above it are only those `allocate_ids` handed out.
pub const MAX_ID: u64 = i64::MAX as u64;
/// The memtable is flushed when the WAL grows past this many bytes (deletes alone can grow it).
const WAL_FLUSH_BYTES: u64 = 256 << 20;
/// A run of this many memtable batches of the same size class is merged into one, so a view
/// holds O(log n) memtable sources while each row is copied O(log n) times.
const BATCH_MERGE_FAN_IN: usize = 8;

/// What [`Store::update`] changes in a row; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataUpdate {
    /// `Some(Some(c))` sets the caption, `Some(None)` removes it.
    pub caption: Option<Option<String>>,
    /// `Some(Some(u))` sets the URI, `Some(None)` removes it.
    pub uri: Option<Option<String>>,
    /// `Some(m)` replaces the metadata bytes (its fields follow from them).
    pub metadata: Option<Vec<u8>>,
}

/// When a write is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every write is fsynced before the call returns: it survives a process kill and a power
    /// loss.
    #[default]
    Sync,
    /// Group commit: each write reaches the OS before the call returns (so it survives
    /// `kill -9` of the process), and the WAL is fsynced by [`Store::sync`], [`Store::flush`],
    /// on drop, and by the first write after
    /// [`buffered_sync_interval`](StoreOptions::buffered_sync_interval) has passed since the
    /// last fsync. A power loss can lose writes since the last fsync.
    Buffered,
}

/// Partitions are opt-in for now (`usize::MAX`: none are built): at 1M rows the default
/// search over partitions had a 4.7× (clustered) and 1.7× (unclustered) faster median than the
/// flat one, but a p99 of 57 ms against 26 ms on clustered data, where some queries go on to
/// larger passes and the exact scan, and the build took 67–73 s against 31 s
/// (benches/README.md, runs C and D); segments stay flat until the tail is fixed. 32,768 is
/// the smallest size worth setting (below it a flat scan costs about what scoring centroids
/// and probing would; see [`StoreOptions::partition_min_rows`]).
pub const DEFAULT_PARTITION_MIN_ROWS: usize = usize::MAX;

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Open without the writer lock; every write returns [`CommitError::ReadOnly`]. The view
    /// is the state at open time (segments, plus the WAL replayed into memory, never
    /// modified). Any number of read-only handles may coexist with one writer.
    pub read_only: bool,
    /// The memtable is flushed to a new segment once it holds this many rows.
    pub memtable_rows: usize,
    /// How much of the vector files is checked on open.
    pub verify: VerifyLevel,
    /// See [`Durability::Buffered`].
    pub buffered_sync_interval: Duration,
    /// A segment written by a flush, a compaction or a snapshot with at least this many rows
    /// of a modality gets that modality's coarse vectors partitioned (k-means, about
    /// [`ROWS_PER_PARTITION`](crate::segment::ROWS_PER_PARTITION) rows each), so that a search can scan only the partitions
    /// nearest its query; smaller segments are scanned flat. `usize::MAX` turns it off.
    pub partition_min_rows: usize,
    /// The file system every file operation of the store goes through: [`FsDir`] for real
    /// use; tests pass a [`FaultyDir`](crate::io::FaultyDir) to fail or cut short any of them.
    /// Snapshots are written through it too.
    pub io: Arc<dyn Dir>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            read_only: false,
            memtable_rows: 50_000,
            verify: VerifyLevel::Cheap,
            buffered_sync_interval: Duration::from_millis(100),
            partition_min_rows: DEFAULT_PARTITION_MIN_ROWS,
            io: FsDir::shared(),
        }
    }
}

/// Counts and sizes, for monitoring and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    pub segments: usize,
    /// Rows in segments, deleted ones included.
    pub segment_rows: usize,
    /// Rows in the memtable (not yet flushed), deleted ones included.
    pub memtable_rows: usize,
    pub memtable_batches: usize,
    pub live_rows: usize,
    /// Rows with tombstones, not yet dropped by compaction.
    pub deleted_rows: usize,
    /// Bytes of the active WAL file(s).
    pub wal_bytes: u64,
    /// Bytes of all files in the database directory.
    pub disk_bytes: u64,
    /// See [`Store::next_id`].
    pub next_id: u64,
    /// What the open of this handle dropped from the end of the WAL: a torn record, or the
    /// `Buffered` writes after the last fsync that a power cut cut short.
    pub dropped_wal_tail: Option<DroppedWalTail>,
    /// Segments with partitioned coarse vectors (of either modality).
    pub partitioned_segments: usize,
    /// Partitions over all segments and modalities.
    pub partitions: usize,
    /// Time spent clustering those partitions when their segments were written.
    pub partition_build: Duration,
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments merged away.
    pub segments_merged: usize,
    /// Segments written.
    pub segments_written: usize,
    /// Live rows copied into the new segments.
    pub rows_written: usize,
    /// Deleted rows dropped.
    pub rows_dropped: usize,
    /// Bytes of the merged segments' files.
    pub bytes_before: u64,
    /// Bytes of the new segments' files.
    pub bytes_after: u64,
}

#[derive(Debug, Clone)]
struct SegSlot {
    seg: Arc<Segment>,
    source: Source,
    /// Tombstone generation recorded in the manifest.
    del_gen: u64,
    /// Tombstones changed since the manifest was written (the WAL holds the deletes).
    dirty: bool,
}

#[derive(Debug)]
struct Writer {
    /// `None` for read-only handles.
    wal: Option<WalWriter>,
    /// WAL files replayed on open besides the active one (deleted at the next flush).
    old_wals: Vec<u64>,
    manifest_number: u64,
    /// As last installed.
    manifest: Manifest,
    segments: Vec<SegSlot>,
    /// Memtable batches frozen by a flush in progress (still visible, being written out).
    imm: Vec<Source>,
    /// The active memtable: batches since the last freeze, oldest first.
    mem: Vec<Source>,
    properties: Arc<Properties>,
    poisoned: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Segment(usize),
    Imm(usize),
    Mem(usize),
}

/// An open hivlp database directory. `Send + Sync`: share it with an `Arc`; readers call
/// [`view`](Self::view), writes are serialised internally.
///
/// ```
/// use hivlp_storage::*;
/// let dir = tempfile::tempdir().unwrap();
/// let schema = Schema { fine_dim: 4, coarse_dim: 2, fine_type: ElemType::F32,
///                       coarse_type: ElemType::I8, metric: Metric::Cosine };
/// let store = Store::create(dir.path().join("db"), schema, StoreOptions::default()).unwrap();
/// store.insert(vec![Row {
///     id: 7,
///     caption: Some("a cat".into()),
///     image: Some(TierVectors { coarse: vec![0.6, 0.8], fine: vec![0.5, 0.5, 0.5, 0.5] }),
///     ..Row::default()
/// }]).unwrap();
/// let view = store.view();
/// let (source, row) = view.locate(7).unwrap();
/// assert_eq!(source.meta(row).caption, Some("a cat"));
/// drop(store);
/// let store = Store::open(dir.path().join("db"), StoreOptions::default()).unwrap();
/// assert_eq!(store.view().len(), 1);
/// ```
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    schema: Arc<Schema>,
    options: StoreOptions,
    /// Holds the advisory lock while the store is open (writers only); dropping it unlocks.
    _lock: Option<LockGuard>,
    published: RwLock<View>,
    writer: Mutex<Writer>,
    next_id: AtomicU64,
    /// See [`StoreStats::dropped_wal_tail`].
    dropped_wal_tail: Option<DroppedWalTail>,
    /// Serialises compactions, and property changes with them: a rewrite installs properties
    /// in its manifest, so no WAL record may set them meanwhile (replay would undo them).
    compaction: Mutex<()>,
    /// Serialises flushes (their middle phase runs without the writer lock).
    flushing: Mutex<()>,
    /// The process that opened the store: only it may use the handle (see [`ForkedError`]).
    pid: u32,
}

impl Store {
    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The schema fixed at creation.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The options this handle was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The file system this handle works through.
    fn io(&self) -> &dyn Dir {
        self.options.io.as_ref()
    }

    /// Fails in any process but the one that opened the store: a child of `fork()` inherits
    /// the handle, but not its threads, and shares its file offsets and lock with the parent.
    /// Every write checks this before taking a lock (one held at the fork is never released).
    pub fn check_process(&self) -> Result<(), ForkedError> {
        let current = std::process::id();
        if current == self.pid {
            return Ok(());
        }
        Err(ForkedError {
            path: self.dir.clone(),
            opened_by: self.pid,
            current,
        })
    }

    /// A consistent snapshot for reading: an `Arc` clone, never blocked by writers or
    /// compaction for longer than a pointer swap.
    pub fn view(&self) -> View {
        self.published.read().clone()
    }

    /// Smallest id never used (nor handed out by [`allocate_ids`](Self::allocate_ids)).
    pub fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst)
    }

    /// Reserves `n` fresh ids for rows about to be inserted; they may exceed [`MAX_ID`].
    /// Reservations are not durable: after a restart, unused reserved ids may be handed out
    /// again.
    pub fn allocate_ids(&self, n: u64) -> Range<u64> {
        let bump = |id: u64| Some(id.saturating_add(n).min(u64::MAX - 1));
        let start = match self
            .next_id
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, bump)
        {
            Ok(v) | Err(v) => v,
        };
        start..bump(start).unwrap_or(start)
    }

    fn writer(&self) -> Result<parking_lot::MutexGuard<'_, Writer>, CommitError> {
        self.check_process()?;
        if self.options.read_only {
            return Err(CommitError::ReadOnly);
        }
        let w = self.writer.lock();
        if let Some(why) = &w.poisoned {
            return Err(CommitError::Poisoned(why.clone()));
        }
        Ok(w)
    }

    fn publish(&self, w: &Writer) {
        *self.published.write() = w.view(&self.schema);
    }

    /// Closes the handle, making every acknowledged write durable first and reporting a
    /// failure to do so (dropping the handle does the same but cannot report errors).
    pub fn close(self) -> Result<(), CommitError> {
        self.sync()
    }

    /// Counts and sizes; refused once the handle is poisoned (its in-memory state may no
    /// longer match the files: reopen the database).
    pub fn stats(&self) -> Result<StoreStats, CommitError> {
        self.check_process()?;
        let (wal_bytes, view) = {
            let w = self.writer.lock();
            if let Some(why) = &w.poisoned {
                return Err(CommitError::Poisoned(why.clone()));
            }
            (
                w.wal.as_ref().map_or(0, WalWriter::len),
                w.view(&self.schema),
            )
        };
        let mut s = StoreStats {
            segments: 0,
            segment_rows: 0,
            memtable_rows: 0,
            memtable_batches: 0,
            live_rows: view.len(),
            deleted_rows: 0,
            wal_bytes,
            disk_bytes: dir_bytes(self.io(), &self.dir),
            next_id: self.next_id(),
            dropped_wal_tail: self.dropped_wal_tail.clone(),
            partitioned_segments: 0,
            partitions: 0,
            partition_build: Duration::ZERO,
        };
        for src in view.sources() {
            if src.is_memtable() {
                s.memtable_batches += 1;
                s.memtable_rows += src.rows();
            } else {
                s.segments += 1;
                s.segment_rows += src.rows();
                let indexes: Vec<_> = Modality::ALL
                    .into_iter()
                    .filter_map(|m| src.partitions(m))
                    .collect();
                s.partitioned_segments += usize::from(!indexes.is_empty());
                s.partitions += indexes.iter().map(|i| i.len()).sum::<usize>();
                s.partition_build += indexes.iter().map(|i| i.build_time()).sum();
            }
            s.deleted_rows += src.deleted().count_ones();
        }
        Ok(s)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // A forked child's copy of the handle: the files are the parent's to sync.
        if self.check_process().is_err() {
            return;
        }
        if let Some(wal) = self.writer.get_mut().wal.as_mut() {
            // Best effort; Buffered callers who need to know call `close`, `sync` or `flush`.
            let _ = wal.sync();
        }
    }
}

fn poison(w: &mut Writer, e: impl Into<CommitError>) -> CommitError {
    let e = e.into();
    w.poisoned = Some(e.to_string());
    e
}

fn dir_bytes(io: &dyn Dir, dir: &Path) -> u64 {
    io.list(dir)
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e.is_file)
                .filter_map(|e| io.stat(&dir.join(&e.name)).ok())
                .map(|s| s.len)
                .sum()
        })
        .unwrap_or(0)
}
