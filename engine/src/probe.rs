//! Which partitions of a partitioned segment a query's coarse stage reads: the partitions
//! whose centroids score best against the coarse query, until a share of the segment's rows
//! is covered. Each candidate remembers how deep into that order its partition lay (its
//! *depth*, a share of the rows), which is what [`adaptive`](crate::adaptive) fits to tell
//! whether the true neighbours may lie in partitions not read.

use std::cmp::Ordering;

use hivlp_storage::segment::{PartitionIndex, PartitionRows};

use crate::search::dot;

/// Share of each partitioned segment's rows the default search's first coarse pass reads:
/// small, and the search grows it where the depths say it fell short. At 1M rows, with the
/// partitions as row ranges, a 2% probe took 0.8 ms and a 10% one 1.9–3.0 ms against the flat
/// scan's 6–7 ms (`benches/results/partitions-contiguous.md`); a modality whose partitions
/// list scattered rows pays about twice that.
pub(crate) const INITIAL_PROBE: f64 = 1.0 / 64.0;

/// Partitions a probe reads at the least (or all there are): the depth of the best neighbours
/// into the probe is the evidence that it read far enough, and a probe of a few partitions has
/// none. The evidence is counted in partitions, not in rows: at 1M clustered rows in four
/// 250k-row segments of ~480 partitions, a floor of 8 made the default search widen every
/// probe to the whole segment (5.4 ms a query against 1.1 ms with 32, same recall 0.999;
/// `adaptive-recall` in `benches/README.md`).
pub(crate) const MIN_PROBED: usize = 32;

/// A probe that would read at least this share of a segment's rows reads all of them
/// instead: a flat scan streams the whole file in even tasks, with no centroids to rank.
pub(crate) const FLAT_PROBE: f64 = 0.5;

/// The partitions of one segment a query reads.
pub(crate) struct Probe<'a> {
    /// Rows of the probed partitions, best centroid first.
    pub listed: Vec<PartitionRows<'a>>,
    /// Per partition, the share of the segment's rows read once the probe has read it.
    depth: Vec<f32>,
    /// Share of the segment's rows the probe reads.
    read: f32,
    index: &'a PartitionIndex,
}

impl<'a> Probe<'a> {
    /// The best partitions of `index` for the coarse query `query`, enough to cover `share`
    /// of its rows (at least [`MIN_PROBED`] partitions).
    pub fn plan(index: &'a PartitionIndex, query: &[f32], share: f64) -> Self {
        let mut order: Vec<(f32, usize)> = (0..index.len())
            .map(|p| (dot(query, index.centroid(p)), p))
            .collect();
        let best_first = |a: &(f32, usize), b: &(f32, usize)| -> Ordering {
            b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
        };
        // Only the probed partitions need their order (a row of any other lies beyond the
        // probe, depth 1): sort about twice the expected count, and the rest only if the
        // probe reaches it. On one 10M-row segment, scoring its 19,595 centroids one scalar
        // sum at a time and sorting them all took most of a 2.3 ms pass; with this and
        // simsimd's dot the default search went from 7.0 to 3.6 ms.
        let expected = ((share * index.len() as f64).ceil() as usize).max(MIN_PROBED);
        let mut sorted = (2 * expected).min(order.len());
        if sorted < order.len() {
            order.select_nth_unstable_by(sorted, best_first);
            order[..sorted].sort_unstable_by(best_first);
        } else {
            order.sort_unstable_by(best_first);
        }
        let total = index.listed().max(1) as f64;
        let mut depth = vec![1.0f32; index.len()];
        let mut listed = Vec::new();
        let mut read = 0usize;
        let mut at = 0;
        while at < order.len() && ((read as f64) < share * total || listed.len() < MIN_PROBED) {
            if at == sorted {
                order[sorted..].sort_unstable_by(best_first);
                sorted = order.len();
            }
            let p = order[at].1;
            listed.push(index.rows_of(p));
            read += index.len_of(p);
            depth[p] = (read as f64 / total) as f32;
            at += 1;
        }
        Self {
            listed,
            depth,
            read: (read as f64 / total).max(f64::MIN_POSITIVE) as f32,
            index,
        }
    }

    /// How deep into the probe `row`'s partition lies, as a share of what the probe reads:
    /// 1 for its last partition (and beyond).
    pub fn relative_depth(&self, row: usize) -> f32 {
        self.index
            .partition_of(row)
            .map_or(1.0, |p| (self.depth[p] / self.read).min(1.0))
    }
}
