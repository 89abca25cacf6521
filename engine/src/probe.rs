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
        let scores = (0..index.len()).map(|p| dot(query, index.centroid(p)));
        let total = index.listed().max(1) as f64;
        let mut depth = vec![1.0f32; index.len()];
        let mut listed = Vec::new();
        let mut read = 0usize;
        for p in best_partitions(scores, |p| index.len_of(p), share, index.listed()) {
            listed.push(index.rows_of(p));
            read += index.len_of(p);
            depth[p] = (read as f64 / total) as f32;
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

/// The partitions a probe reads, best score first (the lower index of equals): the fewest
/// that hold at least `share` of the `listed` rows (`len_of(p)` each), and at least
/// [`MIN_PROBED`], or all.
///
/// Only the probed partitions need their order (a row of any other lies beyond the probe,
/// depth 1): it sorts about twice the count it expects, and the rest only if the probe reaches
/// them. On one 10M-row segment, scoring its 19,595 centroids one scalar sum at a time and
/// sorting them all took most of a 2.3 ms pass; with this and simsimd's dot the default search
/// went from 7.0 to 3.6 ms.
fn best_partitions(
    scores: impl Iterator<Item = f32>,
    len_of: impl Fn(usize) -> usize,
    share: f64,
    listed: usize,
) -> Vec<usize> {
    let best_first = |a: &(f32, usize), b: &(f32, usize)| -> Ordering {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
    };
    let mut order: Vec<(f32, usize)> = scores.zip(0..).collect();
    let rows = share * listed.max(1) as f64;
    let expected = (share * order.len() as f64).ceil() as usize;
    let mut sorted = (2 * expected.max(MIN_PROBED)).min(order.len());
    if sorted < order.len() {
        order.select_nth_unstable_by(sorted, best_first);
        order[..sorted].sort_unstable_by(best_first);
    } else {
        order.sort_unstable_by(best_first);
    }
    let mut chosen = Vec::new();
    let mut read = 0usize;
    for at in 0..order.len() {
        if (read as f64) >= rows && chosen.len() >= MIN_PROBED {
            break;
        }
        if at == sorted {
            order[sorted..].sort_unstable_by(best_first);
            sorted = order.len();
        }
        let p = order[at].1;
        chosen.push(p);
        read += len_of(p);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe's partitions as a full sort would give them.
    fn reference(scores: &[f32], lens: &[usize], rows: f64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let (mut chosen, mut read) = (Vec::new(), 0);
        for p in order {
            if read as f64 >= rows && chosen.len() >= MIN_PROBED {
                break;
            }
            chosen.push(p);
            read += lens[p];
        }
        chosen
    }

    #[test]
    fn the_partial_sort_picks_what_a_full_sort_would() {
        // Partition sizes from 1 to ~2,000 rows, so that the best twice-expected partitions
        // sometimes hold far fewer rows than asked and the rest must be sorted too; ties in
        // the scores test the order of equals.
        let n = 500;
        let mut x = 7u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        let scores: Vec<f32> = (0..n).map(|_| (next() % 300) as f32).collect();
        let lens: Vec<usize> = (0..n).map(|_| 1 + next() % 40 * (next() % 50)).collect();
        let total: usize = lens.iter().sum();
        for share in [0.0, 0.001, 1.0 / 64.0, 0.1, 0.3, 0.5, 0.99, 1.0] {
            let got = best_partitions(scores.iter().copied(), |p| lens[p], share, total);
            let want = reference(&scores, &lens, share * total as f64);
            assert!(want.len() >= MIN_PROBED);
            assert_eq!(got, want, "share {share}");
        }
        // Scores that order the largest partitions last: the probe must read past the
        // partially sorted prefix to cover a tenth of the rows.
        let by_size: Vec<f32> = lens.iter().map(|&l| -(l as f32)).collect();
        let got = best_partitions(by_size.iter().copied(), |p| lens[p], 0.1, total);
        assert!(got.len() > 2 * (n / 10), "{} partitions", got.len());
        assert_eq!(got, reference(&by_size, &lens, 0.1 * total as f64));
    }
}
