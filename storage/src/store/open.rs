//! Recovery: creating a database, opening one (manifest, segments, tombstones, WAL replay
//! into the memtable) and taking the writer lock.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};

use super::cleanup::{remove_files, remove_orphans};
use super::{SegSlot, Store, StoreOptions, Writer};
use crate::data::bitmap::Bitmap;
use crate::data::segment::{Segment, read_tombstones};
use crate::data::source::{Backing, MemBatch, Source};
use crate::error::{CorruptionError, IoError, OpenError};
use crate::format::file_name::FileName;
use crate::format::manifest::{self, Manifest};
use crate::format::segment::tombstone_file_name;
use crate::format::wal::WalRecord;
use crate::io::dir::{Dir, LockGuard};
use crate::io::manifest::{read_current, sync_dir};
use crate::io::wal::{WalWriter, replay_logs};
use crate::schema::Schema;

fn take_lock(io: &dyn Dir, dir: &Path) -> Result<LockGuard, OpenError> {
    let path = dir.join("LOCK");
    match io.try_lock(&path) {
        Ok(Some(guard)) => Ok(guard),
        Ok(None) => Err(OpenError::Locked { path }),
        Err(e) => Err(IoError::at(&path, "lock", e).into()),
    }
}

/// Whether `path` exists. Only "not found" is an answer: a database whose `CURRENT` cannot
/// be read now is not missing (create would clear its directory).
fn exists(io: &dyn Dir, path: &Path) -> Result<bool, IoError> {
    match io.stat(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IoError::at(path, "stat", e)),
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
        let io = options.io.as_ref();
        if exists(io, &dir.join("CURRENT"))? {
            return Err(OpenError::AlreadyExists {
                path: dir.to_path_buf(),
            });
        }
        io.create_dir_all(dir)
            .map_err(|e| IoError::at(dir, "create directory", e))?;
        let lock = take_lock(io, dir)?;
        if exists(io, &dir.join("CURRENT"))? {
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
        remove_files(io, dir, |name| !matches!(name, FileName::Lock))?;
        manifest.install(io, dir, 1)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(io, parent)?;
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
        let io = options.io.clone();
        if !exists(io.as_ref(), &dir.join("CURRENT"))? {
            return Err(OpenError::NotFound {
                path: dir.to_path_buf(),
            });
        }
        if options.read_only {
            // A concurrent writer may install a new manifest and delete the files of the old
            // one between our reads. That shows as a changed CURRENT: then retry.
            let current = || io.read(&dir.join("CURRENT")).ok();
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
        let lock = take_lock(io.as_ref(), dir)?;
        Self::load(dir, options, Some(lock))
    }

    fn load(
        dir: &Path,
        options: StoreOptions,
        lock: Option<LockGuard>,
    ) -> Result<Store, OpenError> {
        let writable = lock.is_some();
        let io = &options.io;
        let (manifest_number, manifest) = read_current(io.as_ref(), dir)?;
        let schema = Arc::new(manifest.schema.clone());
        let mut segments = Vec::with_capacity(manifest.segments.len());
        for info in &manifest.segments {
            let seg = Segment::open_in(io, dir, info, &schema, options.verify)?;
            let deleted = if info.del_gen == 0 {
                Bitmap::new(seg.rows())
            } else {
                read_tombstones(
                    io.as_ref(),
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
            io.as_ref(),
            dir,
            &schema,
            manifest.log_number,
            manifest.next_seq,
            |file, record| w.replay(&schema, record, file, &mut next_id),
        )?;
        if writable {
            let wal = match replay.numbers.last() {
                Some(&n) => {
                    WalWriter::reopen(io.as_ref(), dir, n, replay.valid_len, replay.next_seq)?
                }
                None => WalWriter::create(io.as_ref(), dir, manifest.log_number, replay.next_seq)?,
            };
            // Acknowledged writes go to this file, so its name must be durable: new here, or
            // made by a flush that may have failed before it synced the directory.
            sync_dir(io.as_ref(), dir)?;
            w.old_wals = replay
                .numbers
                .iter()
                .copied()
                .filter(|&n| n != wal.number())
                .collect();
            w.wal = Some(wal);
            remove_orphans(io.as_ref(), dir, &w)?;
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
}

impl Writer {
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
            WalRecord::Update(rows) => {
                // The old version may be gone already: a compaction after the update dropped
                // it from the segments without moving the WAL on. The record holds the whole
                // new row, so replay tombstones whatever version is live and inserts it.
                let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
                let mut seen = std::collections::HashSet::with_capacity(rows.len());
                if let Some(id) = ids.iter().find(|&&id| id == u64::MAX || !seen.insert(id)) {
                    return Err(CorruptionError::new(
                        file,
                        0,
                        format!("WAL updates id {id} twice in one record, or a reserved id"),
                    ));
                }
                self.apply_delete(schema, &ids);
                for &id in &ids {
                    *next_id = (*next_id).max(id.saturating_add(1));
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
            WalRecord::SetProperty { key, value } => {
                self.set_properties(vec![(key.to_owned(), value.to_vec())]);
            }
        }
        Ok(())
    }
}
