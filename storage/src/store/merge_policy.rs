//! Which segments compaction merges: a small policy trait, in the spirit of tantivy's.

/// What a merge policy knows about one live segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentStats {
    pub id: u64,
    /// Rows, deleted ones included.
    pub rows: usize,
    /// Rows with tombstones.
    pub deleted: usize,
    /// Bytes of the segment's files.
    pub bytes: u64,
    /// A modality of the segment has enough rows for partitions
    /// ([`StoreOptions::partition_min_rows`](crate::StoreOptions::partition_min_rows)) but
    /// none: a rewrite builds them.
    pub unpartitioned: bool,
}

impl SegmentStats {
    /// Deleted rows over all rows (0 for an empty segment).
    pub fn deleted_ratio(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.deleted as f64 / self.rows as f64
        }
    }
}

/// Decides which segments to merge. Each returned group (segment ids) becomes one new
/// segment holding the group's live rows; a group of one segment rewrites it without its
/// deleted rows. Unknown or repeated ids are ignored.
pub trait MergePolicy: Send + Sync + std::fmt::Debug {
    fn plan(&self, segments: &[SegmentStats]) -> Vec<Vec<u64>>;
}

/// Merges every segment into one (if there is more than one segment, any deleted row, or a
/// segment that lacks the partitions it would get now).
/// What an explicit "compact now" wants, and what a [`CoarseRewrite`](crate::CoarseRewrite)
/// needs so that every row gets the new coarse vector.
#[derive(Debug, Clone, Copy, Default)]
pub struct MergeAll;

impl MergePolicy for MergeAll {
    fn plan(&self, segments: &[SegmentStats]) -> Vec<Vec<u64>> {
        if segments.len() > 1 || segments.iter().any(|s| s.deleted > 0 || s.unpartitioned) {
            vec![segments.iter().map(|s| s.id).collect()]
        } else {
            Vec::new()
        }
    }
}

/// Merge only when it pays: segments whose deleted ratio exceeds `max_deleted_ratio` are
/// rewritten, and when there are more than `max_segments` segments the smallest are merged
/// so that `max_segments` remain. Everything selected goes into one new segment.
#[derive(Debug, Clone, Copy)]
pub struct DefaultMergePolicy {
    pub max_segments: usize,
    pub max_deleted_ratio: f64,
}

impl Default for DefaultMergePolicy {
    fn default() -> Self {
        Self {
            max_segments: 8,
            max_deleted_ratio: 0.2,
        }
    }
}

impl MergePolicy for DefaultMergePolicy {
    fn plan(&self, segments: &[SegmentStats]) -> Vec<Vec<u64>> {
        let mut chosen: Vec<u64> = segments
            .iter()
            .filter(|s| s.deleted > 0 && s.deleted_ratio() > self.max_deleted_ratio)
            .map(|s| s.id)
            .collect();
        let remaining = segments.len() - chosen.len();
        let max = self.max_segments.max(1);
        if remaining > max {
            let mut by_size: Vec<&SegmentStats> = segments
                .iter()
                .filter(|s| !chosen.contains(&s.id))
                .collect();
            by_size.sort_by_key(|s| (s.rows - s.deleted, s.id));
            // Merging k segments into one leaves remaining - k + 1 of them.
            let k = remaining - max + 1;
            chosen.extend(by_size.iter().take(k).map(|s| s.id));
        }
        if chosen.is_empty() {
            Vec::new()
        } else {
            vec![chosen]
        }
    }
}

/// Size-tiered merging with a tombstone trigger under a disk budget: what a writer runs in
/// the background, where a merge must pay for itself and must not fill the disk.
///
/// Segments fall into tiers by file size: tier `t` holds sizes in
/// `[floor·f^t, floor·f^(t+1))` with `f = segments_per_tier` (smaller ones count as
/// `floor_bytes`, so tiny flushes share the lowest tier). A tier that reaches
/// `segments_per_tier` segments has its smallest ones merged into one, which lands about a
/// tier higher, so each row is rewritten about once per tier (O(log n) times) and at most
/// `segments_per_tier - 1` segments wait in each tier. A segment whose deleted fraction
/// exceeds `max_deleted_ratio` is rewritten alone, without its deleted rows.
///
/// One plan never selects input segments whose files total more than `max_merge_bytes`:
/// a merge's output holds at most its input's rows, so that bounds the extra disk a
/// compaction holds at once. Segments above the budget are never merged again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TieredMergePolicy {
    /// How many segments of one tier are merged together (at least 2).
    pub segments_per_tier: usize,
    /// Segments smaller than this are sized as this.
    pub floor_bytes: u64,
    /// Deleted fraction above which a segment is rewritten.
    pub max_deleted_ratio: f64,
    /// Most file bytes of the input segments of one plan, all groups together.
    pub max_merge_bytes: u64,
}

impl Default for TieredMergePolicy {
    fn default() -> Self {
        Self {
            segments_per_tier: 8,
            floor_bytes: 2 << 20,
            max_deleted_ratio: 0.2,
            max_merge_bytes: 2 << 30,
        }
    }
}

impl TieredMergePolicy {
    fn tier(&self, bytes: u64) -> u32 {
        let fan_in = self.segments_per_tier.max(2) as u64;
        let mut tier = 0;
        let mut upper = self.floor_bytes.max(1).saturating_mul(fan_in);
        while bytes >= upper && upper < u64::MAX {
            tier += 1;
            upper = upper.saturating_mul(fan_in);
        }
        tier
    }
}

impl MergePolicy for TieredMergePolicy {
    fn plan(&self, segments: &[SegmentStats]) -> Vec<Vec<u64>> {
        let mut budget = self.max_merge_bytes;
        let mut groups = Vec::new();
        let mut heavy: Vec<&SegmentStats> = segments
            .iter()
            .filter(|s| s.deleted > 0 && s.deleted_ratio() > self.max_deleted_ratio)
            .collect();
        // The most deleted first: they reclaim the most disk per byte rewritten.
        heavy.sort_by(|a, b| b.deleted_ratio().total_cmp(&a.deleted_ratio()));
        let mut taken = std::collections::HashSet::new();
        for s in heavy {
            if s.bytes <= budget {
                budget -= s.bytes;
                taken.insert(s.id);
                groups.push(vec![s.id]);
            }
        }
        let mut tiers = std::collections::BTreeMap::<u32, Vec<&SegmentStats>>::new();
        for s in segments.iter().filter(|s| !taken.contains(&s.id)) {
            tiers.entry(self.tier(s.bytes)).or_default().push(s);
        }
        let fan_in = self.segments_per_tier.max(2);
        for mut members in tiers.into_values().filter(|m| m.len() >= fan_in) {
            members.sort_by_key(|s| (s.bytes, s.id));
            let mut group = Vec::new();
            let mut bytes = 0;
            for s in members.into_iter().take(fan_in) {
                if bytes + s.bytes > budget {
                    break;
                }
                bytes += s.bytes;
                group.push(s.id);
            }
            if group.len() >= 2 {
                budget -= bytes;
                groups.push(group);
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u64, rows: usize, deleted: usize) -> SegmentStats {
        sized(id, rows, deleted, 0)
    }

    fn sized(id: u64, rows: usize, deleted: usize, bytes: u64) -> SegmentStats {
        SegmentStats {
            id,
            rows,
            deleted,
            bytes,
            unpartitioned: false,
        }
    }

    const MIB: u64 = 1 << 20;

    fn tiered(max_merge_bytes: u64) -> TieredMergePolicy {
        TieredMergePolicy {
            segments_per_tier: 4,
            floor_bytes: MIB,
            max_deleted_ratio: 0.2,
            max_merge_bytes,
        }
    }

    #[test]
    fn default_policy_merges_deleted_and_small() {
        let p = DefaultMergePolicy {
            max_segments: 3,
            max_deleted_ratio: 0.5,
        };
        assert!(p.plan(&[seg(1, 10, 0), seg(2, 10, 5)]).is_empty());
        assert_eq!(p.plan(&[seg(1, 10, 0), seg(2, 10, 6)]), vec![vec![2]]);
        let segs = [
            seg(1, 100, 0),
            seg(2, 5, 0),
            seg(3, 50, 0),
            seg(4, 7, 0),
            seg(5, 1, 0),
        ];
        assert_eq!(p.plan(&segs), vec![vec![5, 2, 4]]);
        assert!(MergeAll.plan(&[seg(1, 10, 0)]).is_empty());
        assert_eq!(MergeAll.plan(&[seg(1, 10, 1)]), vec![vec![1]]);
        let unpartitioned = SegmentStats {
            unpartitioned: true,
            ..seg(1, 10, 0)
        };
        assert_eq!(MergeAll.plan(&[unpartitioned]), vec![vec![1]]);
    }

    #[test]
    fn tiered_policy_waits_until_a_tier_is_full() {
        let p = tiered(u64::MAX);
        let small: Vec<_> = (1..=3).map(|id| sized(id, 10, 0, 1000)).collect();
        assert!(p.plan(&small).is_empty());
        let mut four = small.clone();
        four.push(sized(4, 10, 0, 10));
        // Sizes below the floor share tier 0; the smallest go first.
        assert_eq!(p.plan(&four), vec![vec![4, 1, 2, 3]]);
    }

    #[test]
    fn tiered_policy_merges_each_full_tier_separately() {
        let p = tiered(u64::MAX);
        let mut segs: Vec<_> = (1..=5).map(|id| sized(id, 10, 0, MIB / 2)).collect();
        // Tier 1 is [4 MiB, 16 MiB): three are not enough, four are.
        segs.extend((6..=8).map(|id| sized(id, 100, 0, 5 * MIB)));
        assert_eq!(p.plan(&segs), vec![vec![1, 2, 3, 4]]);
        segs.push(sized(9, 100, 0, 6 * MIB));
        assert_eq!(p.plan(&segs), vec![vec![1, 2, 3, 4], vec![6, 7, 8, 9]]);
        // Segments of different tiers never merge with each other.
        let mixed = [
            sized(1, 1, 0, MIB),
            sized(2, 1, 0, 5 * MIB),
            sized(3, 1, 0, 20 * MIB),
            sized(4, 1, 0, 100 * MIB),
        ];
        assert!(p.plan(&mixed).is_empty());
    }

    #[test]
    fn tiered_policy_rewrites_segments_past_the_deleted_ratio() {
        let p = tiered(u64::MAX);
        let segs = [
            sized(1, 100, 20, 5 * MIB),
            sized(2, 100, 21, 5 * MIB),
            sized(3, 100, 90, 5 * MIB),
        ];
        // At the ratio is not past it; the most deleted comes first.
        assert_eq!(p.plan(&segs), vec![vec![3], vec![2]]);
    }

    #[test]
    fn tiered_policy_stays_within_the_disk_budget() {
        // All the plan's inputs together, across groups, fit the budget.
        let mut segs: Vec<_> = (1..=4).map(|id| sized(id, 10, 0, 3 * MIB)).collect();
        segs.push(sized(5, 100, 50, 4 * MIB));
        let plan = |budget| tiered(budget).plan(&segs);
        assert_eq!(plan(16 * MIB), vec![vec![5], vec![1, 2, 3, 4]]);
        assert_eq!(plan(13 * MIB), vec![vec![5], vec![1, 2, 3]]);
        assert_eq!(plan(10 * MIB), vec![vec![5], vec![1, 2]]);
        assert_eq!(plan(6 * MIB), vec![vec![5]]);
        // A single segment never merges: a tier group needs two.
        assert!(plan(3 * MIB).is_empty());
        let heavy_too_big = [sized(1, 100, 50, 4 * MIB)];
        assert!(tiered(3 * MIB).plan(&heavy_too_big).is_empty());
    }
}
