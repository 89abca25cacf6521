//! Compaction: plan with a [`MergePolicy`], merge without the writer lock, install the new
//! segments with the tombstones of rows deleted meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::merge_policy::{MergePolicy, SegmentStats};
use super::segment_writer::{
    CoarseRewrite, Rewrite, RowOrder, compaction_rewrite, live_rows, write_segment,
    write_tombstones,
};
use super::{CompactionReport, SegSlot, Store, Writer, poison};
use crate::data::bitmap::Bitmap;
use crate::data::segment::Segment;
use crate::data::source::Source;
use crate::error::{CommitError, CompactionError};
use crate::format::codec::VerifyLevel;
use crate::format::manifest::manifest_file_name;
use crate::format::segment::{SegmentInfo, tombstone_file_name};
use crate::io::dir::Dir;
use crate::io::manifest::sync_dir;
use crate::schema::{Modality, Tier};

impl Store {
    /// Merges segments chosen by `policy` into new segments without their deleted rows,
    /// then swaps the manifest. Inserts, deletes and readers continue meanwhile: the writer
    /// lock is held only to pick the segments and to install the result; the merged
    /// segments' files are deleted when the last [`View`](crate::View) using them is dropped.
    /// A compaction that fails before its manifest is installed changes nothing (its new files
    /// are removed); one whose manifest install fails poisons the handle.
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
                    bytes: file_bytes(self.io(), s.seg.files()),
                    unpartitioned: Modality::ALL.into_iter().any(|m| {
                        s.source.partitions(m).is_none()
                            && s.source.has(m).count_ones()
                                >= self.options.partition_min_rows.max(1)
                    }),
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
        if let Err(e) = merged.and_then(|()| Ok(sync_dir(self.io(), &self.dir)?)) {
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
        outputs: &mut Vec<Option<(Arc<Segment>, RowOrder)>>,
    ) -> Result<(), CompactionError> {
        for (i, group) in groups.iter().enumerate() {
            let sources: Vec<Source> = group.iter().map(|(_, s)| s.clone()).collect();
            let rows = live_rows(&sources);
            report.segments_merged += group.len();
            for (seg, s) in group {
                report.rows_dropped += s.deleted().count_ones();
                report.bytes_before += file_bytes(self.io(), seg.files());
            }
            if rows.is_empty() {
                outputs.push(None);
                continue;
            }
            let id = first_id + i as u64;
            let (info, order) = write_segment(
                self.io(),
                &self.dir,
                id,
                &self.schema,
                &rows,
                compaction_rewrite(rewrite),
                self.options.partition_min_rows,
            )?;
            let seg = Segment::open_in(
                &self.options.io,
                &self.dir,
                &info,
                &self.schema,
                VerifyLevel::Cheap,
            );
            let seg = match seg {
                Ok(seg) => Arc::new(seg),
                Err(e) => {
                    remove_segment_files(self.io(), &self.dir, &info);
                    return Err(e.into());
                }
            };
            report.rows_written += rows.len();
            report.segments_written += 1;
            report.bytes_after += file_bytes(self.io(), seg.files());
            outputs.push(Some((seg, order)));
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
        outputs: Vec<Option<(Arc<Segment>, RowOrder)>>,
        properties: &[(String, Vec<u8>)],
    ) -> Result<(), CompactionError> {
        let mut slots: Vec<Option<SegSlot>> = w.segments.iter().cloned().map(Some).collect();
        let mut retired = Vec::new();
        let mut superseded = Vec::new();
        let mut new_tombstones: Vec<PathBuf> = Vec::new();
        let mut placed = Vec::new();
        for (group, output) in groups.iter().zip(&outputs) {
            let mut carried = output.as_ref().map(|(s, _)| Bitmap::new(s.rows()));
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
                        c.set(
                            output
                                .as_ref()
                                .map_or(next_row, |(_, o)| o.segment_row(next_row)),
                        );
                    }
                    next_row += 1;
                }
                if slot.del_gen != 0 {
                    superseded.push(self.dir.join(tombstone_file_name(seg.id(), slot.del_gen)));
                }
                retired.push(slot.seg);
            }
            let (Some((seg, _)), Some(pos), Some(carried)) = (output, first_pos, carried) else {
                continue;
            };
            let mut del_gen = 0;
            if carried.count_ones() > 0 {
                if let Err(e) = write_tombstones(self.io(), &self.dir, seg.id(), 1, &carried) {
                    for f in &new_tombstones {
                        let _ = self.io().remove_file(f);
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
        if let Err(e) = manifest.install(self.io(), &self.dir, number) {
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
            let _ = self.io().remove_file(&f);
        }
        Ok(())
    }
}

/// Marks segments written by a compaction that will not be installed: their files go when
/// the last reference does.
fn discard(outputs: &[Option<(Arc<Segment>, RowOrder)>]) {
    for (seg, _) in outputs.iter().flatten() {
        seg.mark_obsolete();
    }
}

/// Removes the files of a segment that was written but never opened.
fn remove_segment_files(io: &dyn Dir, dir: &Path, info: &SegmentInfo) {
    let _ = io.remove_file(&dir.join(crate::format::segment::meta_file_name(info.id)));
    for m in Modality::ALL.into_iter().filter(|m| info.has_modality(*m)) {
        for tier in Tier::ALL {
            let _ = io
                .remove_file(&dir.join(crate::format::segment::vector_file_name(info.id, m, tier)));
        }
    }
}

fn file_bytes(io: &dyn Dir, files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| io.stat(f).ok())
        .map(|s| s.len)
        .sum()
}
