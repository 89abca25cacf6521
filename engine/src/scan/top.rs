//! Bounded top-M selection with a threshold filter: the scan compares each score against one
//! float and only the few rows that beat it are buffered, so no full score array exists.

use std::cmp::Ordering;

/// A scored row of one source of a view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub score: f32,
    pub source: u32,
    pub row: u32,
    /// How deep into a probe of its source's partitions (best first) this row's partition
    /// lies, as a share of what the probe read: in (0, 1], 0 for a source scanned flat.
    pub depth: f32,
}

impl Candidate {
    /// Best first: higher score, then lower (source, row). A total order, so the selected set
    /// does not depend on how the rows were split between threads.
    pub fn rank(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.source.cmp(&other.source))
            .then(self.row.cmp(&other.row))
    }
}

/// Keeps the best `m` candidates pushed into it.
///
/// Candidates at or above `threshold` are appended to a buffer; when the buffer holds `2m` the
/// best `m` are selected in linear time and the threshold rises to the worst of them.
#[derive(Debug, Clone)]
pub(crate) struct TopM {
    m: usize,
    buf: Vec<Candidate>,
    threshold: f32,
}

impl TopM {
    pub fn new(m: usize) -> Self {
        Self {
            m,
            buf: Vec::with_capacity(2 * m.max(1)),
            threshold: f32::NEG_INFINITY,
        }
    }

    /// Scores below this can never enter the result.
    #[inline(always)]
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Adds a candidate known to score at or above `threshold()`.
    #[inline]
    pub fn push(&mut self, candidate: Candidate) {
        self.buf.push(candidate);
        if self.buf.len() >= 2 * self.m.max(1) {
            self.prune();
        }
    }

    fn prune(&mut self) {
        if self.m == 0 {
            self.buf.clear();
            self.threshold = f32::INFINITY;
            return;
        }
        if self.buf.len() > self.m {
            self.buf.select_nth_unstable_by(self.m - 1, Candidate::rank);
            self.buf.truncate(self.m);
            self.threshold = self
                .buf
                .iter()
                .map(|c| c.score)
                .fold(f32::INFINITY, f32::min);
        }
    }

    /// Combines the results of two parts of a scan.
    pub fn merge(mut self, other: TopM) -> TopM {
        for c in other.buf {
            if c.score >= self.threshold {
                self.push(c);
            }
        }
        self
    }

    /// The best `m` candidates, best first.
    pub fn into_sorted(mut self) -> Vec<Candidate> {
        self.prune();
        self.buf.sort_unstable_by(Candidate::rank);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(score: f32, row: u32) -> Candidate {
        Candidate {
            depth: 0.0,
            score,
            source: 0,
            row,
        }
    }

    #[test]
    fn keeps_the_best_m_in_order_with_ties_by_row() {
        let mut top = TopM::new(3);
        for (row, score) in [1.0, 5.0, 3.0, 5.0, 0.5, 4.0, 2.0, 5.0]
            .into_iter()
            .enumerate()
        {
            if score >= top.threshold() {
                top.push(cand(score, row as u32));
            }
        }
        let rows: Vec<u32> = top.into_sorted().iter().map(|c| c.row).collect();
        assert_eq!(rows, vec![1, 3, 7]);
    }

    #[test]
    fn merge_equals_single_pass() {
        let scores: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 613) as f32).collect();
        let mut whole = TopM::new(10);
        let (mut a, mut b) = (TopM::new(10), TopM::new(10));
        for (row, &s) in scores.iter().enumerate() {
            let part = if row % 3 == 0 { &mut a } else { &mut b };
            for top in [&mut whole, part] {
                if s >= top.threshold() {
                    top.push(cand(s, row as u32));
                }
            }
        }
        assert_eq!(whole.into_sorted(), a.merge(b).into_sorted());
    }

    #[test]
    fn zero_m_keeps_nothing() {
        let mut top = TopM::new(0);
        top.push(cand(1.0, 0));
        assert!(top.into_sorted().is_empty());
    }
}
