//! Flush: freeze the memtable (under the writer lock), write it as a segment (without), install
//! the manifest naming it (under the lock again).

use std::collections::HashMap;
use std::sync::Arc;

use super::segment_writer::{RowOrder, live_rows, write_segment, write_tombstones};
use super::{SegSlot, Store, WAL_FLUSH_BYTES, Writer, poison};
use crate::data::bitmap::Bitmap;
use crate::data::segment::Segment;
use crate::data::source::Source;
use crate::error::{CommitError, IoError, StorageError};
use crate::format::codec::VerifyLevel;
use crate::format::manifest::manifest_file_name;
use crate::format::segment::{SegmentInfo, tombstone_file_name};
use crate::format::wal::wal_file_name;
use crate::io::manifest::sync_dir;
use crate::io::wal::WalWriter;

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

impl Store {
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
        match written.and_then(|seg| Ok(self.install_flush(&mut w, frozen, seg)?)) {
            Ok(()) => {
                self.publish(&w);
                Ok(())
            }
            Err(e) => Err(poison(&mut w, e)),
        }
    }

    /// Flushes if the memtable or the WAL is over its threshold. The write that triggered
    /// it is already committed, so a failed flush is not reported here: it poisons the
    /// handle, and the next write reports why.
    pub(super) fn maybe_flush(&self, w: parking_lot::MutexGuard<'_, Writer>) {
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
        let new_wal = WalWriter::create(self.io(), &self.dir, old + 1, next_seq)?;
        // Acknowledged writes will live in the new file: its name must be durable first.
        sync_dir(self.io(), &self.dir)?;
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
    /// Returns the new segment and where each frozen live row went in it.
    fn write_frozen(
        &self,
        frozen: &Frozen,
    ) -> Result<Option<(Arc<Segment>, RowOrder)>, StorageError> {
        for (seg, deleted, gen_) in &frozen.tombstones {
            write_tombstones(self.io(), &self.dir, seg.id(), *gen_, deleted)?;
        }
        let rows = live_rows(&frozen.imm);
        if rows.is_empty() {
            return Ok(None);
        }
        let (info, order) = write_segment::<StorageError>(
            self.io(),
            &self.dir,
            frozen.segment_id,
            &self.schema,
            &rows,
            None,
            self.options.partition_min_rows,
        )?;
        let seg = Segment::open_in(
            &self.options.io,
            &self.dir,
            &info,
            &self.schema,
            VerifyLevel::Cheap,
        )?;
        Ok(Some((Arc::new(seg), order)))
    }

    /// Phase 3 of a flush, under the writer lock: install the manifest naming the new segment,
    /// tombstone generations and WAL; carry over deletes that happened meanwhile.
    fn install_flush(
        &self,
        w: &mut Writer,
        frozen: Frozen,
        segment: Option<(Arc<Segment>, RowOrder)>,
    ) -> Result<(), IoError> {
        let dir = &self.dir;
        let mut superseded = Vec::new();
        let mut new_slot = None;
        if let Some((seg, order)) = segment {
            // Rows of the frozen batches deleted since the freeze (the new WAL has them).
            let mut carried = Bitmap::new(seg.rows());
            let mut next_row = 0;
            for (then, now) in frozen.imm.iter().zip(&w.imm) {
                for r in (0..then.rows()).filter(|&r| !then.is_deleted(r)) {
                    if now.is_deleted(r) {
                        carried.set(order.segment_row(next_row));
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
        manifest.install(self.io(), dir, number)?;
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
            let _ = self.io().remove_file(&f);
        }
        Ok(())
    }
}
