//! How many coarse candidates a query re-ranks when the caller did not fix the number.
//!
//! A fixed M loses recall as the collection grows: the coarse score predicts the fine score
//! only up to an error, so the true neighbours of a query sit at coarse ranks that grow with
//! the number of rows, and beyond M they are lost. So after re-ranking the candidates of a
//! pass, the search looks at the coarse ranks of its best fine candidates: where the true
//! neighbours are spread over ranks far below M, few lie beyond it; where they crowd towards
//! M, many do. [`RankModel`] turns that into an estimated recall; too low, and the next pass
//! keeps as many candidates as the model says are needed, or, when that would cost about as
//! much as reading every fine vector, the exact scan runs instead.
//!
//! The model: the logarithm of a true neighbour's coarse rank is normally distributed (the
//! coarse score's error is a sum of many small ones, and ranks scale with the rows). Its mean
//! and spread are fitted by maximum likelihood on the best fine candidates' log ranks, which
//! are censored at M (a neighbour ranked beyond M is not among them), so a sample that
//! crowds towards M moves the fit beyond it. The estimated recall is the fitted probability
//! of a rank within M.
//!
//! Where a segment's rows are partitioned, a pass reads only the partitions nearest the
//! query, up to a share of the rows, and a true neighbour can also be missed because its
//! partition was not read. Each candidate carries the depth at which the probe reached its
//! partition; the same censored fit over those depths estimates the share of neighbours
//! beyond the probe, and the estimated recall is the product of the two. A query whose
//! probe falls short reads more partitions (all of them once that is half the rows).

use std::time::{Duration, Instant};

use hivlp_storage::{CorruptionError, Schema, Source};
use rayon::prelude::*;

use crate::params::SearchParams;
use crate::probe::{FLAT_PROBE, INITIAL_PROBE};
use crate::scan::Candidate;
use crate::search::{PreparedQuery, Scored, Shortlisted, fine_scores};

/// Recall@k the default search aims at (the expected fraction of the true top k returned).
pub const TARGET_RECALL: f64 = 0.99;

/// The search stops growing the candidate set once the estimated missed fraction is at most
/// this share of what [`TARGET_RECALL`] allows: the estimate is a model fitted on few ranks,
/// so the stopping rule keeps a margin below the target.
const STOP_MARGIN: f64 = 0.5;

/// A grown candidate set is at least this many times the previous one, so a query needs few
/// coarse passes whatever the model's first guess.
const MIN_GROWTH: f64 = 2.0;

/// A coarse pass of the default search keeps this many times the candidates it re-ranks at
/// first: the scan costs about the same (its threshold filter rejects nearly every row either
/// way), and a query that needs more candidates takes them from this reserve without another
/// pass over the coarse vectors.
pub(crate) const SCAN_RESERVE: usize = 4;

/// Coarse passes a query makes before it settles for the exact scan.
const MAX_PASSES: u32 = 4;

/// Re-ranking reads fine rows at random; per byte that costs about this many times a
/// sequential scan of the same bytes.
const RANDOM_READ_COST: f64 = 4.0;

/// The model is fitted on the coarse ranks of the best `max(k, MIN_FITTED)` fine candidates:
/// for a small k, the next best stand in for the true neighbours (they rank a little worse,
/// so the estimate errs low), since a spread cannot be fitted on one or two ranks.
const MIN_FITTED: usize = 10;

/// The spread of log ranks is not fitted below this: a handful of ranks that happen to agree
/// must not promise that no neighbour lies further out.
const MIN_SPREAD: f64 = 1.0;

/// What a query's coarse stage did, reported in [`SearchTiming`](crate::SearchTiming).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Candidates re-ranked by their fine vectors (0 when the fine scan ran).
    pub candidates: usize,
    /// Coarse passes run.
    pub passes: u32,
    /// Whether the flat scan of the fine vectors produced the hits (asked for, or chosen
    /// because the candidates needed would have cost as much).
    pub exact: bool,
    /// Share of each partitioned segment's rows the last coarse pass read (1: every row).
    pub probe: f64,
    /// Estimated recall@k of the hits against the exact search: 1 for an exact search.
    pub estimated_recall: f64,
}

impl Outcome {
    /// The outcome of an exact search (recall 1 by construction).
    pub fn exact(passes: u32) -> Self {
        Self {
            candidates: 0,
            passes,
            exact: true,
            probe: 1.0,
            estimated_recall: 1.0,
        }
    }
}

/// How much one coarse pass reads and keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stages {
    /// Candidates re-ranked by their fine vectors.
    pub candidates: usize,
    /// Share of each partitioned segment's rows read (best partitions first); 1: every row.
    pub probe: f64,
}

/// What a scan of [`search`] reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pass {
    /// The coarse vectors, of this share of each partitioned segment's rows.
    Coarse(f64),
    /// The fine vectors, every row.
    Exact,
}

/// What to do after a pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Next {
    /// The hits are good enough (or the caller fixed the stages): the estimated recall.
    Done(f64),
    /// Run a coarse pass of these stages.
    Grow(Stages),
    /// Run the exact fine scan.
    Exact,
}

/// Whether the stage sizes are the database's choice, and what the exact scan costs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// `SearchParams::candidates` was `None`.
    pub adaptive: bool,
    /// Some source of the view has partitions for the target; then the first pass reads
    /// `probe` of each partitioned segment, and the default search grows it as it grows M.
    pub partitioned: bool,
    /// `SearchParams::probe`: a share the caller fixed.
    pub probe: Option<f64>,
    /// Rows of the view.
    pub rows: usize,
    /// Bytes of one fine and one coarse row.
    pub fine_row: f64,
    pub coarse_row: f64,
}

impl Policy {
    pub fn new(schema: &Schema, rows: usize, params: &SearchParams, partitioned: bool) -> Self {
        let scale = if schema.coarse_type == hivlp_storage::ElemType::I8 {
            4
        } else {
            0
        };
        Self {
            adaptive: params.candidates.is_none(),
            partitioned,
            probe: params.probe,
            rows,
            fine_row: (schema.fine_dim * schema.fine_type.size()) as f64,
            coarse_row: (schema.coarse_dim * schema.coarse_type.size() + scale) as f64,
        }
    }

    /// The share of partitioned segments the first pass reads: the caller's, else a small
    /// share for the default search, else (a caller who fixed M) every row.
    pub fn first_probe(&self) -> f64 {
        match self.probe {
            _ if !self.partitioned => 1.0,
            Some(share) => share,
            None if self.adaptive => INITIAL_PROBE,
            None => 1.0,
        }
    }

    /// Whether the probe share is the database's to grow.
    fn adaptive_probe(&self) -> bool {
        self.adaptive && self.partitioned && self.probe.is_none()
    }

    /// Whether coarse passes that read `read` times the coarse vectors (the sum of their
    /// probe shares) and a re-rank of `candidates` rows read at least as many bytes (random
    /// reads weighted) as one flat scan of the fine vectors.
    fn exact_is_cheaper(&self, read: f64, candidates: usize) -> bool {
        let rows = self.rows as f64;
        let two_stage =
            read * rows * self.coarse_row + candidates as f64 * self.fine_row * RANDOM_READ_COST;
        two_stage >= rows * self.fine_row
    }

    /// The decision after pass number `passes` (of stages `stages`, all passes together
    /// reading `read` times the coarse vectors) kept `scored` candidates (coarse, fine score
    /// pairs, best coarse first) out of `eligible` rows (`scored.len() < eligible` unless
    /// every eligible row is a candidate); `depths` pairs each candidate of a partitioned
    /// source with its depth (see [`Candidate::depth`], here scaled to rows of the view so
    /// that a probe's last partition lies at `stages.probe` of them) and its fine score;
    /// `exhausted`
    /// says that the probed partitions held no more rows than were kept.
    #[allow(clippy::too_many_arguments)]
    pub fn next(
        &self,
        scored: &[(f32, f32)],
        depths: &[(f64, f32)],
        stages: Stages,
        exhausted: bool,
        k: usize,
        eligible: usize,
        passes: u32,
        read: f64,
    ) -> Next {
        if scored.len() >= eligible {
            return Next::Done(1.0);
        }
        let ranks: Vec<(f64, f32)> = scored
            .iter()
            .enumerate()
            .map(|(rank, &(_, fine))| ((rank + 1) as f64, fine))
            .collect();
        let coarse = RankModel::fit(&ranks, k, scored.len() as f64, eligible as f64);
        let coarse_recall = coarse.within(scored.len() as f64);
        let probed = stages.probe < 1.0;
        let rows = self.rows as f64;
        let probe = probed.then(|| RankModel::fit(depths, k, stages.probe * rows, rows));
        let probe_recall = probe.map_or(1.0, |m| m.within(stages.probe * rows));
        let recall = coarse_recall * probe_recall;
        if !self.adaptive {
            return Next::Done(recall);
        }
        // The misses of the two stages add up: with a probe to grow, each gets half of what
        // the target allows.
        let allowed_miss = (1.0 - TARGET_RECALL) * STOP_MARGIN;
        let grows_probe = probed && self.adaptive_probe();
        let stage_miss = if grows_probe {
            allowed_miss / 2.0
        } else {
            allowed_miss
        };
        // The model's word alone is not enough: a few log ranks can agree by chance. While
        // one of the best k still ranks in the lower half of the candidates (or of the rows
        // probed), the neighbours are likely to go on beyond them.
        let coarse_done =
            1.0 - coarse_recall <= stage_miss && coarse.deepest <= scored.len() as f64 / 4.0;
        let probe_done = !grows_probe
            || !depths.is_empty()
                && probe.is_some_and(|m| {
                    1.0 - probe_recall <= stage_miss && m.deepest <= stages.probe * rows / 4.0
                });
        if coarse_done && probe_done {
            return Next::Done(recall);
        }
        let mut next = stages;
        if !coarse_done {
            let grown = coarse
                .quantile(1.0 - stage_miss)
                .max(scored.len() as f64 * MIN_GROWTH);
            if !grown.is_finite() || grown >= eligible as f64 {
                return Next::Exact;
            }
            next.candidates = grown.ceil() as usize;
        }
        // More candidates than the probed partitions hold need more partitions.
        if grows_probe && (!probe_done || (exhausted && !coarse_done)) {
            let share = probe.map_or(f64::INFINITY, |m| m.quantile(1.0 - stage_miss) / rows);
            let share = share.max(stages.probe * MIN_GROWTH);
            next.probe = if share >= FLAT_PROBE { 1.0 } else { share };
        }
        let progress = next.candidates > stages.candidates || next.probe > stages.probe;
        if passes >= MAX_PASSES || !progress {
            // A probe out of passes reads every row once before the exact scan: a flat coarse
            // pass costs a fraction of it (at 1M rows, 7 ms against 270), and the flat
            // search's own test then decides.
            next.probe = 1.0;
            let flat = stages.probe < 1.0 && passes <= MAX_PASSES;
            return if flat && !self.exact_is_cheaper(read + 1.0, next.candidates) {
                Next::Grow(next)
            } else {
                Next::Exact
            };
        }
        if self.exact_is_cheaper(read + next.probe, next.candidates) {
            Next::Exact
        } else {
            Next::Grow(next)
        }
    }
}

/// A query of [`search`]: what its last coarse pass kept, how many of those are its
/// candidates, their fine scores, its passes.
struct Progress {
    /// The last pass's rows, best coarse first.
    scanned: Vec<Candidate>,
    /// Candidates asked for by the last pass (more than it kept: no more rows are eligible,
    /// or, in a probe, in the partitions read).
    asked: usize,
    /// The share of partitioned segments the last pass read.
    probe: f64,
    /// The first `candidates` of `scanned` are re-ranked (or about to be).
    candidates: usize,
    scored: Vec<Scored>,
    passes: u32,
    /// Sum of the probe shares of the passes so far.
    read: f64,
    next: Next,
}

/// The default search's step after the first coarse pass, called from `search::search`: coarse
/// passes and re-ranks until each query's [`Policy`] is satisfied. The first pass re-ranks
/// `keep` candidates; a query whose estimated recall falls short re-ranks more (of what the
/// pass kept in reserve, else of a larger pass, reading more partitions where the rows are
/// partitioned), or gets the exact scan.
pub(crate) fn search(
    sources: &[Source],
    queries: &[&PreparedQuery],
    params: &SearchParams,
    keep: usize,
    policy: &Policy,
    scan: &(impl Fn(&[&PreparedQuery], usize, Pass) -> Vec<Vec<Candidate>> + Sync),
    parallel: bool,
) -> Result<Shortlisted, CorruptionError> {
    let target = params.target;
    let (mut coarse_time, mut fine_time) = (Duration::ZERO, Duration::ZERO);
    let reserve = if policy.adaptive { SCAN_RESERVE } else { 1 };
    let started = Instant::now();
    let asked = keep.saturating_mul(reserve).min(policy.rows);
    let probe = policy.first_probe();
    let mut progress: Vec<Progress> = scan(queries, asked, Pass::Coarse(probe))
        .into_iter()
        .map(|scanned| Progress {
            candidates: keep.min(scanned.len()),
            scanned,
            asked,
            probe,
            scored: Vec::new(),
            passes: 1,
            read: probe,
            next: Next::Grow(Stages {
                candidates: keep,
                probe,
            }),
        })
        .collect();
    coarse_time += started.elapsed();
    let rows = policy.rows as f64;
    loop {
        let started = Instant::now();
        // Re-rank what each growing query's candidates gained (passes of one probe are
        // nested: the best M of a total order are a prefix of the best M' > M) and decide
        // its next step.
        let step = |(query, p): (&&PreparedQuery, &mut Progress)| -> Result<(), CorruptionError> {
            if !matches!(p.next, Next::Grow(_)) {
                return Ok(());
            }
            let added = &p.scanned[p.scored.len()..p.candidates];
            let scored = fine_scores(sources, target, &query.fine, added, parallel)?;
            p.scored.extend(scored);
            let mut pairs: Vec<(f32, f32)> = p.scored.iter().map(|s| (s.coarse, s.fine)).collect();
            pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            // Only candidates of probed sources tell how far the probe had to go.
            let depths: Vec<(f64, f32)> = p
                .scored
                .iter()
                .filter(|s| s.depth > 0.0)
                .map(|s| ((f64::from(s.depth) * p.probe * rows).max(1.0), s.fine))
                .collect();
            let exhausted = p.scanned.len() < p.asked && p.candidates == p.scanned.len();
            let eligible = if exhausted && p.probe >= 1.0 {
                p.candidates
            } else {
                policy.rows
            };
            let stages = Stages {
                candidates: p.candidates,
                probe: p.probe,
            };
            p.next = policy.next(
                &pairs, &depths, stages, exhausted, params.k, eligible, p.passes, p.read,
            );
            // More candidates from the reserve need no new pass.
            if let Next::Grow(s) = p.next
                && s.probe <= p.probe
                && (s.candidates <= p.scanned.len() || p.scanned.len() < p.asked)
            {
                p.candidates = s.candidates.min(p.scanned.len());
            }
            Ok(())
        };
        if parallel {
            queries
                .par_iter()
                .zip(progress.par_iter_mut())
                .try_for_each(step)?;
        } else {
            queries.iter().zip(progress.iter_mut()).try_for_each(step)?;
        }
        fine_time += started.elapsed();
        let growing = |p: &Progress| matches!(p.next, Next::Grow(_));
        if !progress.iter().any(growing) {
            break;
        }
        // One pass per probe share for the queries whose reserve is used up (or whose probe
        // grows), at the largest size any of them asked for; each keeps the prefix it would
        // have scanned alone, so a query's hits do not depend on the batch it came in.
        let started = Instant::now();
        let grown = |p: &Progress| match p.next {
            Next::Grow(s)
                if s.probe > p.probe
                    || (s.candidates > p.candidates && p.scanned.len() >= p.asked) =>
            {
                Some(s)
            }
            _ => None,
        };
        let mut rescan: Vec<(usize, Stages)> = (0..queries.len())
            .filter_map(|q| grown(&progress[q]).map(|s| (q, s)))
            .collect();
        rescan.sort_by(|a, b| a.1.probe.total_cmp(&b.1.probe).then(a.0.cmp(&b.0)));
        for group in rescan.chunk_by(|a, b| a.1.probe == b.1.probe) {
            let probe = group[0].1.probe;
            let own_asked = |s: &Stages| s.candidates.saturating_mul(reserve).min(policy.rows);
            let asked = group
                .iter()
                .map(|(_, s)| own_asked(s))
                .max()
                .unwrap_or(keep);
            let chosen: Vec<&PreparedQuery> = group.iter().map(|&(q, _)| queries[q]).collect();
            for (&(q, stages), mut scanned) in
                group.iter().zip(scan(&chosen, asked, Pass::Coarse(probe)))
            {
                let asked = own_asked(&stages);
                scanned.truncate(asked);
                let p = &mut progress[q];
                let nested = scanned.len() >= p.scored.len()
                    && scanned
                        .iter()
                        .zip(&p.scanned[..p.scored.len()])
                        .all(|(a, b)| (a.source, a.row) == (b.source, b.row));
                if !nested {
                    p.scored.clear();
                }
                p.candidates = stages.candidates.min(scanned.len());
                p.scanned = scanned;
                p.passes += 1;
                p.asked = asked;
                p.probe = probe;
                p.read += probe;
            }
        }
        coarse_time += started.elapsed();
    }
    // Queries whose candidates would cost as much as the fine scan get the fine scan.
    let started = Instant::now();
    let exact: Vec<usize> = (0..queries.len())
        .filter(|&q| progress[q].next == Next::Exact)
        .collect();
    let chosen: Vec<&PreparedQuery> = exact.iter().map(|&q| queries[q]).collect();
    // A collapsing search needs more than k rows to find k distinct ones.
    let exact_keep = if params.collapse.is_some() {
        keep
    } else {
        params.k
    }
    .min(policy.rows);
    let mut exact_lists = if chosen.is_empty() {
        Vec::new()
    } else {
        scan(&chosen, exact_keep, Pass::Exact)
    }
    .into_iter();
    coarse_time += started.elapsed();
    let started = Instant::now();
    let mut scored = Vec::with_capacity(queries.len());
    let mut outcomes = Vec::with_capacity(queries.len());
    for (query, p) in queries.iter().zip(progress) {
        match p.next {
            Next::Done(estimated_recall) => {
                // Full: the pass found as many rows as it asked for, so more exist.
                let full = p.scanned.len() >= p.asked;
                scored.push((p.scored, full));
                outcomes.push(Outcome {
                    candidates: p.candidates,
                    passes: p.passes,
                    exact: false,
                    probe: p.probe,
                    estimated_recall,
                });
            }
            _ => {
                let list = exact_lists.next().unwrap_or_default();
                let full = list.len() == exact_keep;
                scored.push((
                    fine_scores(sources, target, &query.fine, &list, parallel)?,
                    full,
                ));
                outcomes.push(Outcome::exact(p.passes));
            }
        }
    }
    fine_time += started.elapsed();
    Ok((scored, outcomes, [coarse_time, fine_time]))
}

/// A query's fitted distribution of its true neighbours' log coarse ranks (see the module
/// docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RankModel {
    mean: f64,
    spread: f64,
    /// The largest rank among the best k fine candidates.
    deepest: f64,
}

impl RankModel {
    /// Fits the model on the ranks (at least 1) of the best `max(k, MIN_FITTED)` fine scores
    /// among `ranked`, `(rank, fine score)` pairs: coarse ranks, or depths of a probe in rows.
    /// Ranks are censored at `censor` (none beyond it was kept), and the mean is kept within
    /// `ceiling`, the rows there are.
    pub fn fit(ranked: &[(f64, f32)], k: usize, censor: f64, ceiling: f64) -> Self {
        let fitted = k.max(MIN_FITTED).min(ranked.len()).max(1);
        let mut by_fine: Vec<(f32, f64)> =
            ranked.iter().map(|&(rank, fine)| (fine, rank)).collect();
        if by_fine.is_empty() {
            by_fine.push((0.0, 1.0));
        }
        by_fine.select_nth_unstable_by(fitted - 1, |a, b| b.0.total_cmp(&a.0));
        by_fine[..fitted].sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let deepest = by_fine[..k.min(fitted)]
            .iter()
            .map(|&(_, rank)| rank)
            .fold(0.0, f64::max);
        let logs: Vec<f64> = by_fine[..fitted]
            .iter()
            .map(|&(_, rank)| rank.max(1.0).ln())
            .collect();
        let censor = censor.max(1.0).ln();
        let ceiling = ceiling.max(1.0).ln();
        // Log-likelihood of a normal truncated above at `censor`.
        let likelihood = |mean: f64, spread: f64| {
            let within = upper_tail((mean - censor) / spread).max(f64::MIN_POSITIVE);
            let squares: f64 = logs.iter().map(|x| ((x - mean) / spread).powi(2)).sum();
            -(logs.len() as f64) * (spread.ln() + within.ln()) - squares / 2.0
        };
        // A coarse grid over the plausible means and spreads, then a fine one around its best.
        let steps = |from: f64, to: f64, step: f64| {
            let n = ((to - from) / step).floor().max(0.0) as usize;
            (0..=n).map(move |i| from + i as f64 * step)
        };
        let best_of = |means: Vec<f64>, spreads: Vec<f64>| {
            let mut best = (f64::NEG_INFINITY, 0.0, MIN_SPREAD);
            for &mean in &means {
                for &spread in &spreads {
                    let l = likelihood(mean, spread);
                    if l > best.0 {
                        best = (l, mean, spread);
                    }
                }
            }
            best
        };
        let (_, mean, spread) = best_of(
            steps(0.0, ceiling, 0.25).collect(),
            steps(MIN_SPREAD, 4.0, 0.25).collect(),
        );
        let best = best_of(
            steps((mean - 0.25).max(0.0), (mean + 0.25).min(ceiling), 0.025).collect(),
            steps((spread - 0.25).max(MIN_SPREAD), spread + 0.25, 0.025).collect(),
        );
        Self {
            mean: best.1,
            spread: best.2,
            deepest,
        }
    }

    /// Probability that a true neighbour's coarse rank is at most `m`.
    pub fn within(&self, m: f64) -> f64 {
        upper_tail((self.mean - m.max(1.0).ln()) / self.spread)
    }

    /// The coarse rank within which a true neighbour lies with probability `p` (< 1).
    pub fn quantile(&self, p: f64) -> f64 {
        // Bisection on the standard normal quantile: `upper_tail` is monotone.
        let (mut lo, mut hi) = (-10.0, 10.0);
        for _ in 0..60 {
            let z = (lo + hi) / 2.0;
            if upper_tail(z) > 1.0 - p {
                lo = z;
            } else {
                hi = z;
            }
        }
        (self.mean + hi * self.spread).exp()
    }
}

/// P(Z > z) for a standard normal Z, with relative error below 1.2e-7 everywhere (the
/// Chebyshev fit of `erfc` in Numerical Recipes), so tiny tail probabilities stay accurate.
fn upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -a * a - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_tail_matches_known_values() {
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.158_655_25),
            (3.0, 1.349_898e-3),
            (6.0, 9.865_876e-10),
            (-2.0, 0.977_249_87),
        ] {
            assert!(
                (upper_tail(z) - p).abs() <= 1e-6 * p,
                "{z}: {}",
                upper_tail(z)
            );
        }
    }

    /// Candidates whose fine score is their coarse score plus noise, coarse scores spaced
    /// like the top of a large sample: the more noise, the further down the coarse ranking
    /// the best fine scores are spread.
    fn scored(n: usize, noise: f32) -> Vec<(f32, f32)> {
        (0..n)
            .map(|i| {
                let coarse = 1.0 - (i as f32 + 1.0).ln() * 0.05;
                let wiggle = ((i * 7919) % 101) as f32 / 50.0 - 1.0;
                (coarse, coarse + noise * wiggle)
            })
            .collect()
    }

    const POLICY: Policy = Policy {
        adaptive: true,
        partitioned: false,
        probe: None,
        rows: 1_000_000,
        fine_row: 2048.0,
        coarse_row: 68.0,
    };

    /// The decision after a flat pass of `scored.len()` candidates.
    fn flat(policy: &Policy, scored: &[(f32, f32)], eligible: usize, passes: u32) -> Next {
        let stages = Stages {
            candidates: scored.len(),
            probe: 1.0,
        };
        let read = f64::from(passes);
        policy.next(scored, &[], stages, false, 10, eligible, passes, read)
    }

    #[test]
    fn a_precise_coarse_score_needs_no_more_candidates() {
        match flat(&POLICY, &scored(200, 0.001), 1_000_000, 1) {
            Next::Done(recall) => assert!(recall > 0.995, "{recall}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_noisy_coarse_score_grows_the_candidates_or_goes_exact() {
        match flat(&POLICY, &scored(200, 1.0), 1_000_000, 1) {
            Next::Grow(s) => assert!(s.candidates >= 400 && s.probe == 1.0, "{s:?}"),
            other => panic!("{other:?}"),
        }
        // Past the passes allowed, the exact scan.
        assert_eq!(flat(&POLICY, &scored(200, 1.0), 1_000_000, 4), Next::Exact);
        // A caller's fixed M is kept, and told its estimated recall.
        let fixed = Policy {
            adaptive: false,
            ..POLICY
        };
        match flat(&fixed, &scored(200, 1.0), 1_000_000, 1) {
            Next::Done(recall) => assert!(recall < 0.99, "{recall}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_row_a_candidate_is_exact() {
        assert_eq!(flat(&POLICY, &scored(150, 0.5), 150, 1), Next::Done(1.0));
    }

    #[test]
    fn neighbours_deep_in_the_probe_grow_the_probe() {
        let policy = Policy {
            partitioned: true,
            ..POLICY
        };
        let noisy = scored(200, 1.0);
        let scored = scored(200, 0.001);
        let stages = Stages {
            candidates: 200,
            probe: INITIAL_PROBE,
        };
        let rows = 1_000_000.0 * INITIAL_PROBE;
        // Every candidate from the first partition read: nothing to grow.
        let shallow: Vec<(f64, f32)> = scored.iter().map(|&(_, f)| (rows / 64.0, f)).collect();
        let next = policy.next(&scored, &shallow, stages, false, 10, 1_000_000, 1, 0.06);
        assert!(matches!(next, Next::Done(r) if r > 0.99), "{next:?}");
        // The best fine scores spread up to the end of the probe: read more partitions.
        let deep: Vec<(f64, f32)> = scored
            .iter()
            .enumerate()
            .map(|(i, &(_, f))| (rows * ((i % 10) as f64 + 1.0) / 10.0, f))
            .collect();
        match policy.next(&scored, &deep, stages, false, 10, 1_000_000, 1, 0.06) {
            Next::Grow(s) => assert!(s.probe >= 2.0 * INITIAL_PROBE, "{s:?}"),
            other => panic!("{other:?}"),
        }
        // Out of passes, a probe reads every row once; after that flat pass, the exact scan.
        let last = policy.next(
            &scored, &deep, stages, false, 10, 1_000_000, MAX_PASSES, 0.2,
        );
        assert!(matches!(last, Next::Grow(s) if s.probe == 1.0), "{last:?}");
        let flat = Stages {
            probe: 1.0,
            ..stages
        };
        let after = policy.next(&noisy, &[], flat, false, 10, 1_000_000, MAX_PASSES + 1, 1.2);
        assert_eq!(after, Next::Exact);
    }

    #[test]
    fn quantile_inverts_within() {
        let model = RankModel {
            mean: 3.0,
            spread: 1.2,
            deepest: 0.0,
        };
        let m = model.quantile(0.995);
        assert!((model.within(m) - 0.995).abs() < 1e-3);
    }
}
