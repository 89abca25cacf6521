//! The writer's in-memory state: segments with their tombstones, the frozen and active
//! memtable batches, and the properties; what a view is built from.

use std::collections::HashMap;
use std::sync::Arc;

use super::{BATCH_MERGE_FAN_IN, SegSlot, Slot, Writer};
use crate::data::bitmap::Bitmap;
use crate::data::segment::Segment;
use crate::data::source::{Backing, MemBatch, Source, View};
use crate::schema::Schema;

impl SegSlot {
    pub(super) fn new(
        seg: Arc<Segment>,
        schema: &Arc<Schema>,
        deleted: Bitmap,
        del_gen: u64,
    ) -> SegSlot {
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
    pub(super) fn set_properties(&mut self, changes: Vec<(String, Vec<u8>)>) {
        if changes.is_empty() {
            return;
        }
        let mut props = (*self.properties).clone();
        props.extend(changes);
        self.properties = Arc::new(props);
    }

    pub(super) fn view(&self, schema: &Arc<Schema>) -> View {
        let sources = self
            .segments
            .iter()
            .map(|s| s.source.clone())
            .chain(self.imm.iter().cloned())
            .chain(self.mem.iter().cloned())
            .collect();
        View::new(schema.clone(), sources, self.properties.clone())
    }

    /// The source in `slot`.
    pub(super) fn source(&self, slot: Slot) -> &Source {
        match slot {
            Slot::Segment(i) => &self.segments[i].source,
            Slot::Imm(i) => &self.imm[i],
            Slot::Mem(i) => &self.mem[i],
        }
    }

    pub(super) fn find_live(&self, id: u64) -> Option<(Slot, usize)> {
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
    pub(super) fn apply_delete(&mut self, schema: &Arc<Schema>, ids: &[u64]) -> usize {
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
    pub(super) fn push_mem(&mut self, schema: &Arc<Schema>, source: Source) {
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
}
