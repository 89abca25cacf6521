//! [`Store`]: a database directory opened for writing (one writer, advisory lock) or reading.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::data::bitmap::Bitmap;
use crate::data::segment::{Segment, read_tombstones};
use crate::data::source::{Backing, MemBatch, Source, View};
use crate::error::{
    CommitError, CompactionError, CorruptionError, ForkedError, InvalidInput, IoError, OpenError,
    SnapshotError, Tier,
};
use crate::format::codec::Encoder;
use crate::format::codec::VerifyLevel;
use crate::format::file_name::FileName;
use crate::format::manifest::{self, Manifest, manifest_file_name};
use crate::format::segment::{SegmentInfo, tombstone_file_name};
use crate::format::wal::{self, DroppedWalTail, KIND_INSERT, WalRecord, wal_file_name};
use crate::io::manifest::{read_current, sync_dir};
use crate::io::wal::{WalWriter, replay_logs};
use crate::merge::{MergePolicy, SegmentStats};
use crate::schema::{ElemType, Modality, Properties, Row, Schema};

mod segment_writer;

pub use segment_writer::{CoarseRewrite, Rewrite};
use segment_writer::{RowRef, write_segment, write_tombstones};

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
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            read_only: false,
            memtable_rows: 50_000,
            verify: VerifyLevel::Cheap,
            buffered_sync_interval: Duration::from_millis(100),
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

/// What a flush captured when it froze the memtable.
struct Frozen {
    /// The frozen batches with their tombstones at freeze time.
    imm: Vec<Source>,
    /// Id reserved for the new segment.
    segment_id: u64,
    /// Changed segment tombstones at freeze time, with the generation to write.
    tombstones: Vec<(Arc<Segment>, Arc<Bitmap>, u64)>,
    /// The WAL started at freeze time and its first sequence number.
    new_wal: u64,
    next_seq: u64,
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
    /// Holds the advisory lock while the store is open (writers only).
    _lock: Option<File>,
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

/// What a directory holds, for callers that open a database or create it if absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// A database (`CURRENT` exists): open it.
    Database,
    /// Nothing, or only hivlp files left by a create that never finished: create there.
    Empty,
    /// Files that are not hivlp's: not a database, and perhaps not meant to become one.
    Other,
}

/// Tells what `dir` holds (a missing or unreadable directory is [`Occupancy::Empty`]; creating
/// there reports the actual problem).
pub fn occupancy(dir: &Path) -> Occupancy {
    if dir.join(FileName::Current.to_string()).exists() {
        return Occupancy::Database;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Occupancy::Empty;
    };
    let ours = |name: &std::ffi::OsStr| name.to_str().and_then(FileName::parse).is_some();
    if entries.flatten().all(|e| ours(&e.file_name())) {
        Occupancy::Empty
    } else {
        Occupancy::Other
    }
}

fn take_lock(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| IoError::at(&path, "open", e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(IoError::at(&path, "lock", e).into()),
    }
}

impl Store {
    /// Creates a new database at `path` (the directory may exist, but must not hold a
    /// database) and opens it for writing. A database exists once `CURRENT` does, which is
    /// written last: files of hivlp's naming found in a directory without it are leftovers
    /// of an interrupted create (or strays) and are removed first, so a create killed
    /// half-way can simply be run again.
    pub fn create(
        path: impl AsRef<Path>,
        schema: Schema,
        options: StoreOptions,
    ) -> Result<Store, OpenError> {
        let dir = path.as_ref();
        if dir.as_os_str().is_empty() {
            return Err(OpenError::EmptyPath);
        }
        manifest::check_schema(&schema).map_err(OpenError::InvalidSchema)?;
        if options.read_only {
            return Err(OpenError::InvalidSchema(
                "cannot create a database read-only".into(),
            ));
        }
        if dir.join("CURRENT").exists() {
            return Err(OpenError::AlreadyExists {
                path: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| IoError::at(dir, "create directory", e))?;
        let lock = take_lock(dir)?;
        if dir.join("CURRENT").exists() {
            return Err(OpenError::AlreadyExists {
                path: dir.to_path_buf(),
            });
        }
        let manifest = Manifest {
            schema,
            next_id: 0,
            next_segment_id: 1,
            log_number: 1,
            next_seq: 1,
            segments: Vec::new(),
            properties: BTreeMap::new(),
        };
        remove_files(dir, |name| !matches!(name, FileName::Lock))?;
        manifest.install(dir, 1)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Self::load(dir, options, Some(lock))
    }

    /// Opens an existing database: replays the WAL into the memtable (a torn final record is
    /// dropped, and cut off the file when writing), removes files no manifest references
    /// (writers only). A second writer gets [`OpenError::Locked`].
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store, OpenError> {
        let dir = path.as_ref();
        if dir.as_os_str().is_empty() {
            return Err(OpenError::EmptyPath);
        }
        if !dir.join("CURRENT").exists() {
            return Err(OpenError::NotFound {
                path: dir.to_path_buf(),
            });
        }
        if options.read_only {
            // A concurrent writer may install a new manifest and delete the files of the old
            // one between our reads. That shows as a changed CURRENT: then retry.
            let current = || std::fs::read(dir.join("CURRENT")).ok();
            let mut attempt = 0;
            loop {
                let before = current();
                match Self::load(dir, options.clone(), None) {
                    Err(OpenError::Io(_) | OpenError::Corruption(_))
                        if attempt < 5 && current() != before =>
                    {
                        attempt += 1;
                    }
                    r => return r,
                }
            }
        }
        let lock = take_lock(dir)?;
        Self::load(dir, options, Some(lock))
    }

    fn load(dir: &Path, options: StoreOptions, lock: Option<File>) -> Result<Store, OpenError> {
        let writable = lock.is_some();
        let (manifest_number, manifest) = read_current(dir)?;
        let schema = Arc::new(manifest.schema.clone());
        let mut segments = Vec::with_capacity(manifest.segments.len());
        for info in &manifest.segments {
            let seg = Segment::open(dir, info, &schema, options.verify)?;
            let deleted = if info.del_gen == 0 {
                Bitmap::new(seg.rows())
            } else {
                read_tombstones(
                    &dir.join(tombstone_file_name(info.id, info.del_gen)),
                    seg.rows(),
                )?
            };
            segments.push(SegSlot::new(Arc::new(seg), &schema, deleted, info.del_gen));
        }
        let mut w = Writer {
            wal: None,
            old_wals: Vec::new(),
            manifest_number,
            manifest: manifest.clone(),
            segments,
            imm: Vec::new(),
            mem: Vec::new(),
            properties: Arc::new(manifest.properties.clone()),
            poisoned: None,
        };
        let mut next_id = manifest.next_id;
        let replay = replay_logs(
            dir,
            &schema,
            manifest.log_number,
            manifest.next_seq,
            |file, record| w.replay(&schema, record, file, &mut next_id),
        )?;
        if writable {
            let wal = match replay.numbers.last() {
                Some(&n) => WalWriter::reopen(dir, n, replay.valid_len, replay.next_seq)?,
                None => {
                    let wal = WalWriter::create(dir, manifest.log_number, replay.next_seq)?;
                    sync_dir(dir)?;
                    wal
                }
            };
            w.old_wals = replay
                .numbers
                .iter()
                .copied()
                .filter(|&n| n != wal.number())
                .collect();
            w.wal = Some(wal);
            remove_orphans(dir, &w)?;
        }
        let view = w.view(&schema);
        Ok(Store {
            dir: dir.to_path_buf(),
            schema,
            options,
            _lock: lock,
            published: RwLock::new(view),
            writer: Mutex::new(w),
            next_id: AtomicU64::new(next_id),
            dropped_wal_tail: replay.dropped_tail,
            compaction: Mutex::new(()),
            flushing: Mutex::new(()),
            pid: std::process::id(),
        })
    }

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

    /// Inserts a batch of rows: all of them or none. Rows are validated first (dimensions,
    /// finite values, f16 range, sizes, ids unique in the batch, not live in the database and
    /// at most [`MAX_ID`] unless from [`allocate_ids`](Self::allocate_ids); see
    /// [`InvalidInput`]), then written as one WAL record, made durable per
    /// [`Durability`], then made visible. Vectors are stored as given (Cosine databases
    /// expect the caller to have normalised them).
    pub fn insert(&self, rows: Vec<Row>) -> Result<(), CommitError> {
        self.insert_with_properties(rows, Vec::new())
    }

    /// [`insert`](Self::insert), first setting engine properties the rows depend on (such as
    /// how their coarse vectors were derived). Nothing is written unless the rows are valid;
    /// the property records precede the insert record in the WAL, so a crash between them
    /// can leave the properties set without the rows, never the rows without them.
    pub fn insert_with_properties(
        &self,
        rows: Vec<Row>,
        properties: Vec<(String, Vec<u8>)>,
    ) -> Result<(), CommitError> {
        if self.options.read_only {
            return Err(CommitError::ReadOnly);
        }
        // `next_id` only grows, so an id below it now stays below it.
        validate_rows(&self.schema, &rows, self.next_id())?;
        let mut records = properties
            .iter()
            .map(|(key, value)| property_record(key, value))
            .collect::<Result<Vec<_>, _>>()?;
        let n = rows.len();
        let batch = Arc::new(MemBatch::from_rows(&self.schema, &rows));
        let source = Source::new(
            Backing::Batch(batch),
            self.schema.clone(),
            Arc::new(Bitmap::new(n)),
        );
        records.push(encode_insert(&source));
        wal::check_body_len(records.last().map_or(0, Vec::len))?;
        let max_id = rows.iter().map(|r| r.id).max().unwrap_or(0);
        drop(rows);
        let _no_compaction = (!properties.is_empty()).then(|| self.compaction.lock());
        let mut w = self.writer()?;
        for r in 0..n {
            let id = source.id(r);
            if w.find_live(id).is_some() {
                return Err(InvalidInput::IdExists { id, row: r }.into());
            }
        }
        self.append(&mut w, &records, self.options.durability)?;
        w.set_properties(properties);
        w.push_mem(&self.schema, source);
        self.next_id.fetch_max(max_id + 1, Ordering::SeqCst);
        self.publish(&w);
        self.maybe_flush(w);
        Ok(())
    }

    /// Deletes rows by id; ids not present are ignored. Returns how many rows were deleted.
    /// One WAL record, durable per [`Durability`]: more ids than one record can hold are
    /// refused whole ([`InvalidInput::BatchTooLarge`]), however many of them are live.
    pub fn delete(&self, ids: &[u64]) -> Result<usize, CommitError> {
        if self.options.read_only {
            return Err(CommitError::ReadOnly);
        }
        wal::check_body_len(wal::delete_body_len(ids.len()))?;
        let mut w = self.writer()?;
        let mut found: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| w.find_live(id).is_some())
            .collect();
        found.sort_unstable();
        found.dedup();
        if found.is_empty() {
            return Ok(0);
        }
        let record = wal::encode_delete(&found);
        self.append(&mut w, &[record], self.options.durability)?;
        let n = w.apply_delete(&self.schema, &found);
        self.publish(&w);
        self.maybe_flush(w);
        Ok(n)
    }

    /// The value of an engine property, as last set.
    pub fn property(&self, key: &str) -> Option<Vec<u8>> {
        self.view().properties().get(key).cloned()
    }

    /// Sets an engine property (kept in the manifest; opaque to storage). Always fsynced
    /// before returning, whatever the durability mode. Waits for a running compaction.
    pub fn set_property(&self, key: &str, value: Vec<u8>) -> Result<(), CommitError> {
        let record = property_record(key, &value)?;
        let _no_compaction = self.compaction.lock();
        let mut w = self.writer()?;
        self.append(&mut w, &[record], Durability::Sync)?;
        w.set_properties(vec![(key.to_owned(), value)]);
        self.publish(&w);
        Ok(())
    }

    /// Makes every acknowledged write durable (fsyncs the WAL). A no-op on read-only handles,
    /// which acknowledge no writes.
    pub fn sync(&self) -> Result<(), CommitError> {
        self.check_process()?;
        if self.options.read_only {
            return Ok(());
        }
        let mut w = self.writer()?;
        let result = w.wal.as_mut().map_or(Ok(()), WalWriter::sync);
        result.map_err(|e| poison(&mut w, e))
    }

    /// Writes the memtable to a new segment, persists tombstones and properties in a new
    /// manifest, and starts a new WAL. A no-op when nothing changed since the last flush.
    ///
    /// Writers are blocked only while the memtable is frozen and while the new manifest is
    /// installed, not while the segment is written; readers never.
    pub fn flush(&self) -> Result<(), CommitError> {
        self.flush_if(|_| true)
    }

    /// Flushes if `needed` says so once this thread's turn to flush has come (another flush
    /// may have emptied the memtable meanwhile).
    fn flush_if(&self, needed: impl Fn(&Writer) -> bool) -> Result<(), CommitError> {
        self.check_process()?;
        if self.options.read_only {
            return Err(CommitError::ReadOnly);
        }
        let _one_at_a_time = self.flushing.lock();
        let frozen = {
            let mut w = self.writer()?;
            if !needed(&w) {
                return Ok(());
            }
            match self.freeze(&mut w) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(poison(&mut w, e)),
            }
        };
        let written = self.write_frozen(&frozen);
        let mut w = self.writer()?;
        match written.and_then(|seg| self.install_flush(&mut w, frozen, seg)) {
            Ok(()) => {
                self.publish(&w);
                Ok(())
            }
            Err(e) => Err(poison(&mut w, e)),
        }
    }

    /// Appends WAL records (bodies starting with their kind byte), then makes them durable
    /// per `durability`: one fsync for all of them.
    fn append(
        &self,
        w: &mut Writer,
        records: &[Vec<u8>],
        durability: Durability,
    ) -> Result<(), CommitError> {
        let Some(wal) = w.wal.as_mut() else {
            return Err(CommitError::ReadOnly);
        };
        let result = records
            .iter()
            .try_for_each(|body| wal.append(body))
            .and_then(|()| match durability {
                Durability::Sync => wal.sync(),
                Durability::Buffered if wal.since_sync() >= self.options.buffered_sync_interval => {
                    wal.sync()
                }
                Durability::Buffered => Ok(()),
            });
        result.map_err(|e| poison(w, e))
    }

    /// Flushes if the memtable or the WAL is over its threshold. The write that triggered
    /// it is already committed, so a failed flush is not reported here: it poisons the
    /// handle, and the next write reports why.
    fn maybe_flush(&self, w: parking_lot::MutexGuard<'_, Writer>) {
        let over = |w: &Writer| {
            let mem_rows: usize = w.mem.iter().map(Source::live_rows).sum();
            let wal_len = w.wal.as_ref().map_or(0, WalWriter::len);
            mem_rows >= self.options.memtable_rows.max(1) || wal_len >= WAL_FLUSH_BYTES
        };
        if over(&w) {
            drop(w);
            let _ = self.flush_if(over);
        }
    }

    fn publish(&self, w: &Writer) {
        *self.published.write() = w.view(&self.schema);
    }

    /// Phase 1 of a flush, under the writer lock: start a new WAL (later writes go there)
    /// and freeze the memtable and the changed tombstones. `None` when there is nothing new.
    fn freeze(&self, w: &mut Writer) -> Result<Option<Frozen>, IoError> {
        let Some(wal) = w.wal.as_mut() else {
            return Ok(None);
        };
        let nothing_new = wal.len() == 0
            && w.mem.is_empty()
            && !w.segments.iter().any(|s| s.dirty)
            && w.manifest.next_id == self.next_id();
        if nothing_new {
            return Ok(None);
        }
        wal.sync()?;
        let (old, next_seq) = (wal.number(), wal.next_seq());
        let new_wal = WalWriter::create(&self.dir, old + 1, next_seq)?;
        // Acknowledged writes will live in the new file: its name must be durable first.
        sync_dir(&self.dir)?;
        w.wal = Some(new_wal);
        w.old_wals.push(old);
        w.imm = std::mem::take(&mut w.mem);
        let segment_id = w.manifest.next_segment_id;
        w.manifest.next_segment_id += 1;
        let tombstones = w
            .segments
            .iter()
            .filter(|s| s.dirty)
            .map(|s| (s.seg.clone(), s.source.deleted_arc().clone(), s.del_gen + 1))
            .collect();
        Ok(Some(Frozen {
            imm: w.imm.clone(),
            segment_id,
            tombstones,
            new_wal: old + 1,
            next_seq,
        }))
    }

    /// Phase 2 of a flush, without the lock: write the frozen rows and tombstones.
    fn write_frozen(&self, frozen: &Frozen) -> Result<Option<Arc<Segment>>, IoError> {
        for (seg, deleted, gen_) in &frozen.tombstones {
            write_tombstones(&self.dir, seg.id(), *gen_, deleted)?;
        }
        let rows = live_rows(&frozen.imm);
        if rows.is_empty() {
            return Ok(None);
        }
        let info = write_segment(&self.dir, frozen.segment_id, &self.schema, &rows, None).map_err(
            |e| match e {
                CompactionError::Io(io) => io,
                other => IoError::new("writing segment", std::io::Error::other(other.to_string())),
            },
        )?;
        let seg =
            Segment::open(&self.dir, &info, &self.schema, VerifyLevel::Cheap).map_err(|e| {
                IoError::new(
                    "reopening a new segment",
                    std::io::Error::other(e.to_string()),
                )
            })?;
        Ok(Some(Arc::new(seg)))
    }

    /// Phase 3 of a flush, under the writer lock: install the manifest naming the new segment,
    /// tombstone generations and WAL; carry over deletes that happened meanwhile.
    fn install_flush(
        &self,
        w: &mut Writer,
        frozen: Frozen,
        segment: Option<Arc<Segment>>,
    ) -> Result<(), IoError> {
        let dir = &self.dir;
        let mut superseded = Vec::new();
        let mut new_slot = None;
        if let Some(seg) = segment {
            // Rows of the frozen batches deleted since the freeze (the new WAL has them).
            let mut carried = Bitmap::new(seg.rows());
            let mut next_row = 0;
            for (then, now) in frozen.imm.iter().zip(&w.imm) {
                for r in (0..then.rows()).filter(|&r| !then.is_deleted(r)) {
                    if now.is_deleted(r) {
                        carried.set(next_row);
                    }
                    next_row += 1;
                }
            }
            let dirty = carried.count_ones() > 0;
            let mut slot = SegSlot::new(seg, &self.schema, carried, 0);
            slot.dirty = dirty;
            new_slot = Some(slot);
        }
        let mut gens: HashMap<u64, u64> = HashMap::new();
        for (seg, _, gen_) in &frozen.tombstones {
            if w.segments.iter().any(|s| s.seg.id() == seg.id()) {
                gens.insert(seg.id(), *gen_);
            } else {
                // Compacted away meanwhile.
                superseded.push(dir.join(tombstone_file_name(seg.id(), *gen_)));
            }
        }
        let mut manifest = w.manifest.clone();
        manifest.segments = w
            .segments
            .iter()
            .map(|s| SegmentInfo {
                del_gen: gens.get(&s.seg.id()).copied().unwrap_or(s.del_gen),
                ..s.seg.info().clone()
            })
            .chain(new_slot.as_ref().map(|s| s.seg.info().clone()))
            .collect();
        manifest.next_id = self.next_id();
        manifest.log_number = frozen.new_wal;
        manifest.next_seq = frozen.next_seq;
        manifest.properties = (*w.properties).clone();
        let number = w.manifest_number + 1;
        manifest.install(dir, number)?;
        // The new state is durable; now retire what it replaced.
        superseded.push(dir.join(manifest_file_name(w.manifest_number)));
        superseded.extend(w.old_wals.drain(..).map(|n| dir.join(wal_file_name(n))));
        for slot in &mut w.segments {
            let Some(&g) = gens.get(&slot.seg.id()) else {
                continue;
            };
            if slot.del_gen != 0 {
                superseded.push(dir.join(tombstone_file_name(slot.seg.id(), slot.del_gen)));
            }
            slot.del_gen = g;
            // Still dirty if deleted into since the freeze.
            let at_freeze = frozen
                .tombstones
                .iter()
                .find(|(seg, _, _)| seg.id() == slot.seg.id())
                .map(|(_, d, _)| d);
            slot.dirty = !at_freeze.is_some_and(|d| Arc::ptr_eq(d, slot.source.deleted_arc()));
        }
        w.segments.extend(new_slot);
        w.imm.clear();
        w.manifest = manifest;
        w.manifest_number = number;
        for f in superseded {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }

    /// Merges segments chosen by `policy` into new segments without their deleted rows,
    /// then swaps the manifest. Inserts, deletes and readers continue meanwhile: the writer
    /// lock is held only to pick the segments and to install the result; the merged
    /// segments' files are deleted when the last [`View`] using them is dropped. A compaction
    /// that fails before its manifest is installed changes nothing (its new files are
    /// removed); one whose manifest install fails poisons the handle.
    ///
    /// With `rewrite`, the memtable is flushed first, every merged row's coarse vectors are
    /// recomputed from its fine vectors (use [`MergeAll`](crate::MergeAll) so that every row
    /// is rewritten), and the rewrite's properties are installed with the new rows.
    pub fn compact(
        &self,
        policy: &dyn MergePolicy,
        rewrite: Option<&Rewrite<'_>>,
    ) -> Result<CompactionReport, CompactionError> {
        self.check_process().map_err(CommitError::from)?;
        if self.options.read_only {
            return Err(CompactionError::ReadOnly);
        }
        let _one_at_a_time = self.compaction.lock();
        if rewrite.is_some() {
            self.flush()?;
        }
        // 1. Plan, under the writer lock.
        let (groups, first_id) = {
            let mut w = self.writer()?;
            let stats: Vec<SegmentStats> = w
                .segments
                .iter()
                .map(|s| SegmentStats {
                    id: s.seg.id(),
                    rows: s.seg.rows(),
                    deleted: s.source.deleted().count_ones(),
                    bytes: file_bytes(s.seg.files()),
                })
                .collect();
            let mut taken = std::collections::HashSet::new();
            let groups: Vec<Vec<(Arc<Segment>, Source)>> = policy
                .plan(&stats)
                .into_iter()
                .map(|g| {
                    g.into_iter()
                        .filter(|id| taken.insert(*id))
                        .filter_map(|id| {
                            w.segments
                                .iter()
                                .find(|s| s.seg.id() == id)
                                .map(|s| (s.seg.clone(), s.source.clone()))
                        })
                        .collect::<Vec<_>>()
                })
                .filter(|g| !g.is_empty())
                .collect();
            let first_id = w.manifest.next_segment_id;
            w.manifest.next_segment_id += groups.len() as u64;
            (groups, first_id)
        };
        let properties = rewrite.map_or(&[][..], |r| &r.properties[..]);
        if groups.is_empty() && properties.is_empty() {
            return Ok(CompactionReport::default());
        }
        // 2. Merge, without the lock.
        let mut report = CompactionReport::default();
        let mut outputs = Vec::new();
        let merged = self.merge(
            &groups,
            first_id,
            rewrite.map(|r| r.coarse),
            &mut report,
            &mut outputs,
        );
        if let Err(e) = merged.and_then(|()| Ok(sync_dir(&self.dir)?)) {
            discard(&outputs);
            return Err(e);
        }
        // 3. Install, under the writer lock.
        let mut w = match self.writer() {
            Ok(w) => w,
            Err(e) => {
                discard(&outputs);
                return Err(e.into());
            }
        };
        self.install_compaction(&mut w, &groups, outputs, properties)?;
        self.publish(&w);
        Ok(report)
    }

    /// Writes one new segment per group into `outputs` (`None` for a group with no live row).
    fn merge(
        &self,
        groups: &[Vec<(Arc<Segment>, Source)>],
        first_id: u64,
        rewrite: Option<&CoarseRewrite>,
        report: &mut CompactionReport,
        outputs: &mut Vec<Option<Arc<Segment>>>,
    ) -> Result<(), CompactionError> {
        for (i, group) in groups.iter().enumerate() {
            let sources: Vec<Source> = group.iter().map(|(_, s)| s.clone()).collect();
            let rows = live_rows(&sources);
            report.segments_merged += group.len();
            for (seg, s) in group {
                report.rows_dropped += s.deleted().count_ones();
                report.bytes_before += file_bytes(seg.files());
            }
            if rows.is_empty() {
                outputs.push(None);
                continue;
            }
            let info = write_segment(&self.dir, first_id + i as u64, &self.schema, &rows, rewrite)?;
            let seg = Segment::open(&self.dir, &info, &self.schema, VerifyLevel::Cheap);
            let seg = match seg {
                Ok(seg) => Arc::new(seg),
                Err(e) => {
                    remove_segment_files(&self.dir, &info);
                    return Err(IoError::new(
                        "reopening a merged segment",
                        std::io::Error::other(e.to_string()),
                    )
                    .into());
                }
            };
            report.rows_written += rows.len();
            report.segments_written += 1;
            report.bytes_after += file_bytes(seg.files());
            outputs.push(Some(seg));
        }
        Ok(())
    }

    /// Phase 3 of a compaction: the new segment list (with the tombstones of rows deleted
    /// while the merge ran) is built aside and `w` changes only once its manifest is
    /// installed, so a failure before that leaves the handle exactly as it was.
    fn install_compaction(
        &self,
        w: &mut Writer,
        groups: &[Vec<(Arc<Segment>, Source)>],
        outputs: Vec<Option<Arc<Segment>>>,
        properties: &[(String, Vec<u8>)],
    ) -> Result<(), CompactionError> {
        let mut slots: Vec<Option<SegSlot>> = w.segments.iter().cloned().map(Some).collect();
        let mut retired = Vec::new();
        let mut superseded = Vec::new();
        let mut new_tombstones = Vec::new();
        let mut placed = Vec::new();
        for (group, output) in groups.iter().zip(&outputs) {
            let mut carried = output.as_ref().map(|s| Bitmap::new(s.rows()));
            let mut next_row = 0usize;
            let mut first_pos = None;
            for (seg, input) in group {
                let pos = slots
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.seg.id() == seg.id()));
                let Some(slot) = pos.and_then(|p| slots[p].take()) else {
                    continue;
                };
                first_pos = first_pos.or(pos);
                // Rows deleted while the merge ran: carry their tombstones over.
                for r in (0..input.rows()).filter(|&r| !input.is_deleted(r)) {
                    if slot.source.is_deleted(r)
                        && let Some(c) = carried.as_mut()
                    {
                        c.set(next_row);
                    }
                    next_row += 1;
                }
                if slot.del_gen != 0 {
                    superseded.push(self.dir.join(tombstone_file_name(seg.id(), slot.del_gen)));
                }
                retired.push(slot.seg);
            }
            let (Some(seg), Some(pos), Some(carried)) = (output, first_pos, carried) else {
                continue;
            };
            let mut del_gen = 0;
            if carried.count_ones() > 0 {
                if let Err(e) = write_tombstones(&self.dir, seg.id(), 1, &carried) {
                    for f in &new_tombstones {
                        let _ = std::fs::remove_file(f);
                    }
                    discard(&outputs);
                    return Err(e.into());
                }
                new_tombstones.push(self.dir.join(tombstone_file_name(seg.id(), 1)));
                del_gen = 1;
            }
            placed.push((
                pos,
                SegSlot::new(seg.clone(), &self.schema, carried, del_gen),
            ));
        }
        for (pos, slot) in placed {
            slots[pos] = Some(slot);
        }
        let segments: Vec<SegSlot> = slots.into_iter().flatten().collect();
        let mut manifest = w.manifest.clone();
        manifest.segments = segments
            .iter()
            .map(|s| SegmentInfo {
                del_gen: s.del_gen,
                ..s.seg.info().clone()
            })
            .collect();
        manifest.properties = (*w.properties).clone();
        manifest.properties.extend(properties.iter().cloned());
        let number = w.manifest_number + 1;
        if let Err(e) = manifest.install(&self.dir, number) {
            // CURRENT may already name the new manifest: only a reopen can tell, so the
            // handle refuses further writes and every file stays where it is.
            return Err(CompactionError::Commit(poison(w, e)));
        }
        superseded.push(self.dir.join(manifest_file_name(w.manifest_number)));
        w.segments = segments;
        w.manifest = manifest;
        w.manifest_number = number;
        w.set_properties(properties.to_vec());
        for seg in retired {
            seg.mark_obsolete();
        }
        for f in superseded {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }

    /// Writes a consistent copy of the database as it is at this moment into `dest`, a new
    /// directory (missing parents are created) that must not exist and must not lie inside
    /// the database directory. The copy is built from what this handle holds open: segment
    /// files are hard-linked when the link is to the very file this handle maps (copied from
    /// the mapping otherwise, e.g. after a writer compacted it away or across file systems),
    /// tombstones are written from memory, and the memtable becomes a segment of the copy.
    /// Nothing is left behind on failure. Readers are never blocked; writers only while the
    /// state is captured.
    pub fn snapshot(&self, dest: &Path) -> Result<(), SnapshotError> {
        self.check_process().map_err(CommitError::from)?;
        let target = SnapshotTarget::resolve(&self.dir, dest)?;
        let (view, mut manifest) = {
            let w = self.writer.lock();
            if let Some(why) = &w.poisoned {
                return Err(CommitError::Poisoned(why.clone()).into());
            }
            let mut m = w.manifest.clone();
            m.next_id = self.next_id();
            m.properties = (*w.properties).clone();
            (w.view(&self.schema), m)
        };
        target.create()?;
        let result = self.write_snapshot(&target.path, &view, &mut manifest);
        if result.is_err() {
            target.remove();
        }
        result
    }

    fn write_snapshot(
        &self,
        dest: &Path,
        view: &View,
        manifest: &mut Manifest,
    ) -> Result<(), SnapshotError> {
        let mut segments = Vec::new();
        let mut mem_rows = Vec::new();
        for s in view.sources() {
            let Some(seg) = s.segment() else {
                mem_rows.extend(live_rows(std::slice::from_ref(s)));
                continue;
            };
            for (path, identity, bytes) in seg.mapped_files() {
                let Some(name) = path.file_name() else {
                    continue;
                };
                link_or_copy(path, identity, bytes, &dest.join(name))?;
            }
            let mut info = seg.info().clone();
            info.del_gen = 0;
            if s.deleted().count_ones() > 0 {
                write_tombstones(dest, info.id, 1, s.deleted())?;
                info.del_gen = 1;
            }
            segments.push(info);
        }
        if !mem_rows.is_empty() {
            let id = manifest.next_segment_id;
            manifest.next_segment_id += 1;
            let info =
                write_segment(dest, id, &self.schema, &mem_rows, None).map_err(|e| match e {
                    CompactionError::Io(io) => io,
                    other => {
                        IoError::new("writing segment", std::io::Error::other(other.to_string()))
                    }
                })?;
            segments.push(info);
        }
        manifest.segments = segments;
        manifest.log_number = 1;
        manifest.next_seq = 1;
        manifest.install(dest, 1)?;
        Ok(())
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
            disk_bytes: dir_bytes(&self.dir),
            next_id: self.next_id(),
            dropped_wal_tail: self.dropped_wal_tail.clone(),
        };
        for src in view.sources() {
            if src.is_memtable() {
                s.memtable_batches += 1;
                s.memtable_rows += src.rows();
            } else {
                s.segments += 1;
                s.segment_rows += src.rows();
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

/// Every live row of `sources`, in order.
fn live_rows(sources: &[Source]) -> Vec<RowRef<'_>> {
    sources
        .iter()
        .flat_map(|s| {
            (0..s.rows())
                .filter(|&r| !s.is_deleted(r))
                .map(move |row| RowRef { source: s, row })
        })
        .collect()
}

/// Marks segments written by a compaction that will not be installed: their files go when
/// the last reference does.
fn discard(outputs: &[Option<Arc<Segment>>]) {
    for seg in outputs.iter().flatten() {
        seg.mark_obsolete();
    }
}

/// Removes the files of a segment that was written but never opened.
fn remove_segment_files(dir: &Path, info: &SegmentInfo) {
    let _ = std::fs::remove_file(dir.join(crate::format::segment::meta_file_name(info.id)));
    for m in Modality::ALL.into_iter().filter(|m| info.has_modality(*m)) {
        for fine in [false, true] {
            let _ = std::fs::remove_file(
                dir.join(crate::format::segment::vector_file_name(info.id, m, fine)),
            );
        }
    }
}

fn poison(w: &mut Writer, e: IoError) -> CommitError {
    w.poisoned = Some(e.to_string());
    CommitError::Io(e)
}

impl SegSlot {
    fn new(seg: Arc<Segment>, schema: &Arc<Schema>, deleted: Bitmap, del_gen: u64) -> SegSlot {
        SegSlot {
            source: Source::new(
                Backing::Segment(seg.clone()),
                schema.clone(),
                Arc::new(deleted),
            ),
            seg,
            del_gen,
            dirty: false,
        }
    }
}

impl Writer {
    /// Replaces the properties map (readers keep the one their view holds).
    fn set_properties(&mut self, changes: Vec<(String, Vec<u8>)>) {
        if changes.is_empty() {
            return;
        }
        let mut props = (*self.properties).clone();
        props.extend(changes);
        self.properties = Arc::new(props);
    }

    fn view(&self, schema: &Arc<Schema>) -> View {
        let sources = self
            .segments
            .iter()
            .map(|s| s.source.clone())
            .chain(self.imm.iter().cloned())
            .chain(self.mem.iter().cloned())
            .collect();
        View::new(schema.clone(), sources, self.properties.clone())
    }

    fn find_live(&self, id: u64) -> Option<(Slot, usize)> {
        let newest_first = |list: &[Source], slot: fn(usize) -> Slot| {
            list.iter()
                .enumerate()
                .rev()
                .find_map(|(i, s)| s.locate(id).map(|r| (slot(i), r)))
        };
        newest_first(&self.mem, Slot::Mem)
            .or_else(|| newest_first(&self.imm, Slot::Imm))
            .or_else(|| {
                self.segments
                    .iter()
                    .enumerate()
                    .find_map(|(i, s)| s.source.locate(id).map(|r| (Slot::Segment(i), r)))
            })
    }

    /// Tombstones the live rows of `ids`; returns how many there were.
    fn apply_delete(&mut self, schema: &Arc<Schema>, ids: &[u64]) -> usize {
        let mut by_slot: HashMap<Slot, Vec<usize>> = HashMap::new();
        for &id in ids {
            if let Some((slot, r)) = self.find_live(id) {
                by_slot.entry(slot).or_default().push(r);
            }
        }
        let mut n = 0;
        for (slot, rows) in by_slot {
            let source = match slot {
                Slot::Segment(i) => {
                    self.segments[i].dirty = true;
                    &mut self.segments[i].source
                }
                Slot::Imm(i) => &mut self.imm[i],
                Slot::Mem(i) => &mut self.mem[i],
            };
            let mut deleted = (**source.deleted_arc()).clone();
            for r in rows {
                n += usize::from(!deleted.set(r));
            }
            *source = Source::new(source.backing().clone(), schema.clone(), Arc::new(deleted));
        }
        n
    }

    /// Adds a batch to the memtable, merging the trailing run of same-size-class batches.
    fn push_mem(&mut self, schema: &Arc<Schema>, source: Source) {
        self.mem.push(source);
        let class = |s: &Source| s.rows().max(1).ilog(BATCH_MERGE_FAN_IN);
        loop {
            let Some(last) = self.mem.last() else { return };
            let c = class(last);
            let run = self.mem.iter().rev().take_while(|s| class(s) == c).count();
            if run < BATCH_MERGE_FAN_IN {
                return;
            }
            let start = self.mem.len() - run;
            let parts: Vec<&Source> = self.mem[start..].iter().collect();
            let merged = MemBatch::merge(schema, &parts);
            let rows = merged.rows();
            self.mem.truncate(start);
            if rows > 0 {
                self.mem.push(Source::new(
                    Backing::Batch(Arc::new(merged)),
                    schema.clone(),
                    Arc::new(Bitmap::new(rows)),
                ));
            }
        }
    }

    fn replay(
        &mut self,
        schema: &Arc<Schema>,
        record: WalRecord<'_>,
        file: &Path,
        next_id: &mut u64,
    ) -> Result<(), CorruptionError> {
        match record {
            WalRecord::Insert(rows) => {
                let mut seen = std::collections::HashSet::with_capacity(rows.len());
                for r in &rows {
                    if r.id == u64::MAX || !seen.insert(r.id) || self.find_live(r.id).is_some() {
                        return Err(CorruptionError::new(
                            file,
                            0,
                            format!("WAL inserts id {} twice or a reserved id", r.id),
                        ));
                    }
                    *next_id = (*next_id).max(r.id.saturating_add(1));
                }
                let batch = MemBatch::from_encoded(schema, &rows);
                let n = batch.rows();
                self.push_mem(
                    schema,
                    Source::new(
                        Backing::Batch(Arc::new(batch)),
                        schema.clone(),
                        Arc::new(Bitmap::new(n)),
                    ),
                );
            }
            WalRecord::Delete(ids) => {
                self.apply_delete(schema, &ids);
            }
            WalRecord::SetProperty { key, value } => {
                self.set_properties(vec![(key.to_owned(), value.to_vec())]);
            }
        }
        Ok(())
    }
}

/// The WAL record setting one property, if its sizes are within limits.
fn property_record(key: &str, value: &[u8]) -> Result<Vec<u8>, InvalidInput> {
    if key.len() > MAX_PROPERTY_KEY_BYTES {
        return Err(InvalidInput::PropertyTooLarge {
            len: key.len(),
            max: MAX_PROPERTY_KEY_BYTES,
        });
    }
    let record = wal::encode_set_property(key, value);
    wal::check_body_len(record.len())?;
    Ok(record)
}

/// Payload body (after sequence number and kind) of an insert of all rows of `batch`.
pub(crate) fn encode_insert(batch: &Source) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(KIND_INSERT);
    e.u32(batch.rows() as u32);
    for r in 0..batch.rows() {
        e.u64(batch.id(r));
        let m = batch.meta(r);
        e.opt_str(m.caption);
        e.opt_str(m.uri);
        e.bytes(m.metadata);
        let mask = Modality::ALL
            .iter()
            .enumerate()
            .filter(|(_, m)| batch.has(**m).get(r))
            .fold(0u8, |acc, (i, _)| acc | (1 << i));
        e.u8(mask);
        for m in Modality::ALL {
            if !batch.has(m).get(r) {
                continue;
            }
            for col in [batch.coarse(m), batch.fine(m)] {
                if let Some(s) = col.scales() {
                    e.u32(s[r].to_bits());
                }
                e.buf.extend_from_slice(col.row_bytes(r));
            }
        }
    }
    e.buf
}

/// Checks a batch for [`Store::insert`]; `next_id`: ids below it were used or handed out.
fn validate_rows(schema: &Schema, rows: &[Row], next_id: u64) -> Result<(), InvalidInput> {
    if rows.is_empty() {
        return Err(InvalidInput::EmptyBatch);
    }
    let mut seen: HashMap<u64, usize> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let id = r.id;
        if id == u64::MAX {
            return Err(InvalidInput::ReservedId { id, row: i });
        }
        // Chosen ids near the top of the range would leave no room for automatic ones.
        if id > MAX_ID && id >= next_id {
            return Err(InvalidInput::IdTooLarge {
                id,
                row: i,
                max: MAX_ID,
            });
        }
        if let Some(first) = seen.insert(id, i) {
            return Err(InvalidInput::DuplicateId {
                id,
                first,
                second: i,
            });
        }
        let sizes = [
            (
                "caption",
                r.caption.as_ref().map_or(0, String::len),
                MAX_CAPTION_BYTES,
            ),
            ("uri", r.uri.as_ref().map_or(0, String::len), MAX_URI_BYTES),
            ("metadata", r.metadata.len(), MAX_METADATA_BYTES),
        ];
        for (field, len, max) in sizes {
            if len > max {
                return Err(InvalidInput::TooLarge {
                    row: i,
                    id,
                    field,
                    len,
                    max,
                });
            }
        }
        if r.image.is_none() && r.text.is_none() {
            return Err(InvalidInput::NoVectors { row: i, id });
        }
        for m in Modality::ALL {
            let Some(v) = r.vectors(m) else { continue };
            let tiers = [
                (
                    Tier::Coarse,
                    &v.coarse,
                    schema.coarse_dim,
                    schema.coarse_type,
                ),
                (Tier::Fine, &v.fine, schema.fine_dim, schema.fine_type),
            ];
            for (tier, values, dim, elem) in tiers {
                if values.len() != dim {
                    return Err(InvalidInput::Dimension {
                        row: i,
                        id,
                        modality: m,
                        tier,
                        expected: dim,
                        got: values.len(),
                    });
                }
                for (index, &value) in values.iter().enumerate() {
                    if !value.is_finite() {
                        return Err(InvalidInput::NonFinite {
                            row: i,
                            id,
                            modality: m,
                            tier,
                            index,
                            value,
                        });
                    }
                    if elem == ElemType::F16 && value.abs() > f32::from(half::f16::MAX) {
                        return Err(InvalidInput::OutOfRange {
                            row: i,
                            id,
                            modality: m,
                            tier,
                            index,
                            value,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Removes files of ours that the current manifest does not reference: leftovers of an
/// interrupted flush, compaction or create. Only exact hivlp file names are touched.
fn remove_orphans(dir: &Path, w: &Writer) -> Result<(), IoError> {
    let manifest = &w.manifest;
    let wanted = |id: u64| manifest.segments.iter().find(|s| s.id == id);
    remove_files(dir, |name| match name {
        FileName::Current | FileName::Lock => false,
        FileName::CurrentTmp => true,
        FileName::Manifest(n) => n != w.manifest_number,
        FileName::Wal(n) => n < manifest.log_number,
        FileName::SegmentMeta(id) | FileName::SegmentVectors { id, .. } => wanted(id).is_none(),
        FileName::Tombstones { id, generation } => {
            wanted(id).is_none_or(|info| info.del_gen != generation)
        }
    })
}

/// Removes the regular files of `dir` whose name is one of hivlp's and that `doomed` picks,
/// then makes the removals durable. Anything else (other names, directories) is left alone.
fn remove_files(dir: &Path, doomed: impl Fn(FileName) -> bool) -> Result<(), IoError> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(|e| IoError::at(dir, "list", e))? {
        let entry = entry.map_err(|e| IoError::at(dir, "list", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().and_then(FileName::parse) else {
            continue;
        };
        if !doomed(name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        std::fs::remove_file(&path).map_err(|e| IoError::at(&path, "remove", e))?;
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Puts the segment file this handle maps as `bytes` at `to`, in a directory the snapshot
/// created: a hard link when `from` is still that very file, else a fresh copy of the bytes.
/// Never writes through an existing name, so it cannot truncate a live file.
fn link_or_copy(from: &Path, identity: (u64, u64), bytes: &[u8], to: &Path) -> Result<(), IoError> {
    if std::fs::hard_link(from, to).is_ok() {
        let linked = std::fs::symlink_metadata(to).map_err(|e| IoError::at(to, "stat", e))?;
        if crate::data::segment::identity(&linked) == identity {
            return Ok(());
        }
        // `from` names another file now: the link is not ours to keep.
        std::fs::remove_file(to).map_err(|e| IoError::at(to, "remove", e))?;
    }
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| IoError::at(to, "create", e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| IoError::at(to, "copy to", e))
}

/// Where a snapshot goes: checked before anything is created, then created exclusively.
struct SnapshotTarget {
    /// The destination with its existing ancestors canonicalised.
    path: PathBuf,
    /// Ancestors of `path` that do not exist yet, outermost first.
    missing_parents: Vec<PathBuf>,
}

impl SnapshotTarget {
    /// Refuses an empty destination, one inside (or equal to) the database directory, and one
    /// whose not-yet-existing part climbs with `..` (it could lead anywhere).
    fn resolve(db_dir: &Path, dest: &Path) -> Result<SnapshotTarget, SnapshotError> {
        let invalid = |reason: &str| SnapshotError::InvalidDestination {
            path: dest.to_path_buf(),
            reason: reason.to_owned(),
        };
        if dest.as_os_str().is_empty() {
            return Err(invalid("the path is empty"));
        }
        let db = std::fs::canonicalize(db_dir).map_err(|e| IoError::at(db_dir, "resolve", e))?;
        // The deepest ancestor that exists, canonicalised, then the missing names as given
        // (they name nothing yet, so no link can redirect them).
        let mut existing = dest;
        let mut missing = Vec::new();
        let mut path = loop {
            if let Ok(base) = std::fs::canonicalize(existing) {
                break base;
            }
            let Some(name) = existing.file_name() else {
                return Err(invalid("'..' after a folder that does not exist yet"));
            };
            missing.push(name);
            existing = match existing.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
        };
        let mut missing_parents = Vec::new();
        for name in missing.iter().rev() {
            path.push(name);
            missing_parents.push(path.clone());
        }
        if path.starts_with(&db) {
            return Err(invalid("it lies inside the database directory"));
        }
        if missing_parents.pop().is_none() {
            return Err(SnapshotError::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        Ok(SnapshotTarget {
            path,
            missing_parents,
        })
    }

    /// Creates the missing parents, then the destination itself exclusively: of two
    /// snapshots racing for one destination, one gets `DestinationExists`.
    fn create(&self) -> Result<(), SnapshotError> {
        let mut created = Vec::new();
        let result = self
            .missing_parents
            .iter()
            .try_for_each(|p| match std::fs::create_dir(p) {
                Ok(()) => {
                    created.push(p);
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(IoError::at(p, "create directory", e).into()),
            })
            .and_then(|()| match std::fs::create_dir(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(SnapshotError::DestinationExists {
                        path: self.path.clone(),
                    })
                }
                Err(e) => Err(IoError::at(&self.path, "create directory", e).into()),
            });
        if result.is_err() {
            for p in created.iter().rev() {
                let _ = std::fs::remove_dir(p);
            }
            return result;
        }
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        sync_dir(parent).inspect_err(|_| self.remove())?;
        Ok(())
    }

    /// Removes what [`create`](Self::create) made (after a failed snapshot).
    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.path);
        for p in self.missing_parents.iter().rev() {
            if std::fs::remove_dir(p).is_err() {
                break;
            }
        }
    }
}

fn file_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
