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

/// Merges every segment into one (if there is more than one segment, or any deleted row).
/// What an explicit "compact now" wants, and what a [`CoarseRewrite`](crate::CoarseRewrite)
/// needs so that every row gets the new coarse vector.
#[derive(Debug, Clone, Copy, Default)]
pub struct MergeAll;

impl MergePolicy for MergeAll {
    fn plan(&self, segments: &[SegmentStats]) -> Vec<Vec<u64>> {
        if segments.len() > 1 || segments.iter().any(|s| s.deleted > 0) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u64, rows: usize, deleted: usize) -> SegmentStats {
        SegmentStats {
            id,
            rows,
            deleted,
            bytes: 0,
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
    }
}
