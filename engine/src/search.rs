//! The two-stage query over one [`View`]: coarse scan keeping M candidates, then exact fine
//! scores of those candidates and the top k. Exact mode is the same scan over the fine tier.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hivlp_storage::segment::vector_file_name;
use hivlp_storage::{CorruptionError, ElemType, Modality, Source, Tier, View, l2_normalize};
use rayon::prelude::*;
use simsimd::SpatialSimilarity;

use crate::adaptive::{self, Outcome, Pass, Policy};
use crate::error::Error;
use crate::filter::{self, MatchCache, Predicate};
use crate::params::{Filter, Hit, SearchParams, SearchTiming};
use crate::probe::Probe;
use crate::scan::{self, Candidate, Part, QueryVec};

/// Candidates re-ranked per parallel task.
const RERANK_CHUNK: usize = 32;

/// Queries scanned together in one pass of a batch.
const QUERY_TILE: usize = 32;

/// A validated query, normalised as the database's metric requires, in both tiers.
pub(crate) struct PreparedQuery {
    pub coarse: QueryVec,
    pub fine: QueryVec,
}

/// Hits per query, plus the time of each stage (for the whole batch). With `parallel`, on the
/// current rayon pool, else on the calling thread.
///
/// A predicate is evaluated first, to one more skip bitmap per source. When the rows it
/// matches are few (no more than are kept, or cheaper to re-rank than a coarse scan), they are
/// the candidate list themselves: ranked by their fine vectors, exact. Otherwise the scan
/// keeps only rows it matches ([`widened`] M of them).
///
/// With [`SearchParams::collapse`], a query left with fewer than `k` distinct hits from a full
/// candidate list is searched again with twice the candidates, until it has `k` or every live
/// row was a candidate.
pub(crate) fn search(
    view: &View,
    queries: &[PreparedQuery],
    params: &SearchParams,
    candidates: usize,
    matches: &MatchCache,
    parallel: bool,
) -> Result<Searched, Error> {
    let started = Instant::now();
    let predicate = params
        .predicate
        .as_ref()
        .map(|p| predicate_skips(p, view.sources(), params.target, matches, parallel))
        .transpose()?;
    let filtered = started.elapsed();
    // `k` and `candidates` are checked against `MAX_CANDIDATES`; no more rows than are live
    // can be kept, so buffers are never sized beyond the data.
    let mut keep = if params.exact && params.collapse.is_none() {
        params.k
    } else {
        candidates
    }
    .min(view.len());
    let all: Vec<&PreparedQuery> = queries.iter().collect();
    let round = |queries: &[&PreparedQuery], keep| {
        search_round(view, queries, params, predicate.as_ref(), keep, parallel)
    };
    let (ranked, mut outcomes, mut timing) = round(&all, keep)?;
    let mut hits = Vec::with_capacity(ranked.len());
    let mut short = Vec::new();
    for (index, r) in ranked.into_iter().enumerate() {
        if r.wants_more {
            short.push(index);
        }
        hits.push(r.hits);
    }
    while !short.is_empty() && keep < view.len() {
        keep = keep.saturating_mul(2).min(view.len());
        let again: Vec<&PreparedQuery> = short.iter().map(|&i| &queries[i]).collect();
        let (ranked, again_outcomes, [coarse, fine]) = round(&again, keep)?;
        timing = [timing[0] + coarse, timing[1] + fine];
        let mut still = Vec::new();
        for ((&index, r), outcome) in short.iter().zip(ranked).zip(again_outcomes) {
            if r.wants_more {
                still.push(index);
            }
            hits[index] = r.hits;
            outcomes[index] = outcome;
        }
        short = still;
    }
    let [coarse, fine] = timing;
    let timing = SearchTiming {
        filter: filtered,
        coarse,
        fine,
        ..SearchTiming::default()
    };
    Ok((hits, outcomes, timing))
}

/// Hits per query, what each query's coarse stage did, and where the whole batch spent its
/// time (the per-query fields of [`SearchTiming`] are left for the caller to fill in).
pub(crate) type Searched = (Vec<Vec<Hit>>, Vec<Outcome>, SearchTiming);

/// Per query, its fine-scored candidates and whether its candidate list was full (as many as
/// asked for: more rows might have been candidates), with what its coarse stage did.
pub(crate) type Shortlisted = (Vec<(Vec<Scored>, bool)>, Vec<Outcome>, [Duration; 2]);

/// What a predicate leaves of a view: per source the rows a scan skips (see
/// [`predicate_skips`]), and how many rows remain.
type Remaining = (Vec<Vec<u64>>, usize);

/// What one pass of [`search`] gave: per query its hits and what its coarse stage did, and the
/// time of the coarse and the fine stage.
type Round = (Vec<Ranked>, Vec<Outcome>, [Duration; 2]);

/// One pass of [`search`]: each query's best candidates (among the rows `predicate` leaves),
/// re-ranked. A complete list (a short allow-list, a selective predicate's rows, the exact
/// scan) is ranked as it is; otherwise the coarse candidates are `keep` when the caller fixed
/// M, or chosen per query by [`adaptive`].
fn search_round(
    view: &View,
    queries: &[&PreparedQuery],
    params: &SearchParams,
    predicate: Option<&Remaining>,
    keep: usize,
    parallel: bool,
) -> Result<Round, CorruptionError> {
    let started = Instant::now();
    let sources = view.sources();
    let target = params.target;
    let accept = |source: u32, row: usize| {
        params
            .filter
            .as_ref()
            .is_none_or(|f| f.allows(sources[source as usize].id(row)))
    };
    let scan_keep = match predicate {
        Some((_, matching)) if !params.exact => widened(keep, view.len(), *matching),
        _ => keep,
    };
    let complete = match (&params.filter, predicate) {
        // A short allow-list is its own candidate list: re-ranking all of it is exact, and no
        // slower than the scan it replaces while it reads no more bytes than that scan would.
        (Some(Filter::Allow(ids)), _)
            if ids.len() <= keep || rerank_reads_less(view, ids.len()) =>
        {
            let mut listed = allowed_rows(sources, target, ids.iter().copied());
            if let Some((skips, _)) = predicate {
                listed.retain(|c| !is_set(&skips[c.source as usize], c.row as usize));
            }
            Some(listed)
        }
        // So are the rows of a selective predicate.
        (_, Some((skips, matching))) if *matching <= keep || rerank_reads_less(view, *matching) => {
            Some(unskipped_rows(sources, skips, &accept))
        }
        _ => None,
    };
    let scan = |queries: &[&PreparedQuery], keep: usize, pass: Pass| -> Vec<Vec<Candidate>> {
        let (exact, probe) = match pass {
            Pass::Coarse(share) => (false, share),
            Pass::Exact => (true, 1.0),
        };
        let sparse = predicate
            .filter(|(_, matching)| matching * DENSE_RATIO < view.len())
            .map(|(skips, _)| skips);
        let parts: Vec<Part<'_>> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| Part {
                column: if exact {
                    s.fine(target)
                } else {
                    s.coarse(target)
                },
                skip: match sparse {
                    Some(skips) => &skips[i],
                    None => s.skip(target).words(),
                },
                listed: None,
            })
            .collect();
        let tier: Vec<&QueryVec> = queries
            .iter()
            .map(|q| if exact { &q.fine } else { &q.coarse })
            .collect();
        // A predicate most rows match is applied to the rows that would enter a top-M: the
        // scan's dense blocks stay dense. A sparser one skips its rows outright.
        let dense = predicate.filter(|(_, matching)| matching * DENSE_RATIO >= view.len());
        let accept_matching = |source: u32, row: usize| {
            dense.is_none_or(|(skips, _)| !is_set(&skips[source as usize], row))
                && accept(source, row)
        };
        let partitioned = probe < 1.0 && sources.iter().any(|s| s.partitions(target).is_some());
        if !partitioned {
            // Tiles of queries share each pass over the coarse data; a tile's top-M buffers
            // stay in cache while its rows stream through.
            return tier
                .chunks(QUERY_TILE)
                .flat_map(|tile| scan::top_m(&parts, tile, keep, &accept_matching, parallel))
                .collect();
        }
        // Each query reads its own partitions of each partitioned segment, flat sources whole.
        let probe_one = |query: &&QueryVec, parallel: bool| {
            let probes: Vec<Option<Probe<'_>>> = sources
                .iter()
                .map(|s| {
                    let index = s.partitions(target)?;
                    Some(Probe::plan(index, query.values(), probe))
                })
                .collect();
            let probed: Vec<Part<'_>> = parts
                .iter()
                .zip(&probes)
                .map(|(part, p)| Part {
                    listed: p.as_ref().map(|p| p.listed.as_slice()),
                    ..*part
                })
                .collect();
            let mut found = scan::top_m(&probed, &[*query], keep, &accept_matching, parallel);
            let mut found = found.swap_remove(0);
            for c in &mut found {
                if let Some(p) = &probes[c.source as usize] {
                    c.depth = p.relative_depth(c.row as usize);
                }
            }
            found
        };
        // A batch spreads its queries over the threads, a single query its partitions.
        if parallel && tier.len() > 1 {
            tier.par_iter().map(|q| probe_one(q, false)).collect()
        } else {
            tier.iter().map(|q| probe_one(q, parallel)).collect()
        }
    };
    let (scored, outcomes, timing) = match complete {
        Some(listed) => {
            let outcome = Outcome {
                candidates: listed.len(),
                passes: 0,
                exact: false,
                probe: 1.0,
                estimated_recall: 1.0,
            };
            let lists = vec![listed; queries.len()];
            score_lists(
                sources, target, queries, lists, keep, outcome, started, parallel,
            )?
        }
        None if params.exact => {
            let lists = scan(queries, keep, Pass::Exact);
            let outcome = Outcome::exact(0);
            score_lists(
                sources, target, queries, lists, keep, outcome, started, parallel,
            )?
        }
        None => {
            let partitioned = sources.iter().any(|s| s.partitions(target).is_some());
            let policy = Policy::new(view.schema(), view.len(), params, partitioned);
            adaptive::search(
                sources, queries, params, scan_keep, &policy, &scan, parallel,
            )?
        }
    };
    let started = Instant::now();
    let ranked = scored
        .into_iter()
        .map(|(scored, full)| best_hits(sources, target, scored, full, params))
        .collect();
    Ok((ranked, outcomes, [timing[0], timing[1] + started.elapsed()]))
}

/// The fine scores of complete candidate lists, one per query (see [`search_round`]), each
/// with `outcome`; the coarse stage is what passed since `started`.
#[allow(clippy::too_many_arguments)]
fn score_lists(
    sources: &[Source],
    target: Modality,
    queries: &[&PreparedQuery],
    lists: Vec<Vec<Candidate>>,
    keep: usize,
    outcome: Outcome,
    started: Instant,
    parallel: bool,
) -> Result<Shortlisted, CorruptionError> {
    let coarse = started.elapsed();
    let score_one = |(query, list): (&&PreparedQuery, Vec<Candidate>)| {
        let full = list.len() == keep;
        Ok((
            fine_scores(sources, target, &query.fine, &list, parallel)?,
            full,
        ))
    };
    let scored = if parallel {
        queries
            .par_iter()
            .zip(lists)
            .map(score_one)
            .collect::<Result<_, CorruptionError>>()?
    } else {
        queries
            .iter()
            .zip(lists)
            .map(score_one)
            .collect::<Result<_, CorruptionError>>()?
    };
    let outcomes = vec![outcome; queries.len()];
    Ok((scored, outcomes, [coarse, started.elapsed() - coarse]))
}

/// A predicate matching at least one row in this many is tested on the rows entering a top-M
/// rather than skipping rows in the scan: skipping a row in three breaks the scan's blocks of
/// 64 live rows (scored in one tight loop) for little saving.
const DENSE_RATIO: usize = 4;

/// Most times M a predicate's scan keeps (see [`widened`]).
const MAX_WIDENING: usize = 4;

/// The candidates a scan restricted to `matching` of `live` rows keeps: M times `live /
/// matching`, at most [`MAX_WIDENING`] times, when the predicate is sparse enough for the
/// scan to skip rows (see [`DENSE_RATIO`]). Such a scan scores only the matching rows, so it
/// can afford the longer shortlist, which keeps its recall at that of the unfiltered search
/// (measured at 100k rows: with M alone, 0.91 against 0.94 unfiltered at 10%). A dense
/// predicate saves the scan nothing: it keeps M.
fn widened(keep: usize, live: usize, matching: usize) -> usize {
    if matching * DENSE_RATIO >= live {
        return keep;
    }
    let factor = (live / matching.max(1)).clamp(1, MAX_WIDENING);
    keep.saturating_mul(factor).min(matching)
}

/// Per source, the rows a scan of `target` skips under the predicate (deleted, without a
/// vector of `target`, or not matching), as bitmap words; and how many rows remain.
fn predicate_skips(
    predicate: &Predicate,
    sources: &[Source],
    target: Modality,
    cache: &MatchCache,
    parallel: bool,
) -> Result<Remaining, Error> {
    let matches = filter::evaluate(predicate, sources, cache, parallel)?;
    let mut remaining = 0;
    let skips = sources
        .iter()
        .zip(matches)
        .map(|(source, matching)| {
            let skip = source.skip(target).words();
            matching
                .iter()
                .enumerate()
                .map(|(i, &m)| {
                    let live = m & !skip.get(i).copied().unwrap_or(0);
                    remaining += live.count_ones() as usize;
                    !live
                })
                .collect()
        })
        .collect();
    Ok((skips, remaining))
}

fn is_set(words: &[u64], i: usize) -> bool {
    words.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
}

/// Every row whose bit is clear in its source's `skips` (and that `accept` allows), in file
/// order.
fn unskipped_rows(
    sources: &[Source],
    skips: &[Vec<u64>],
    accept: &impl Fn(u32, usize) -> bool,
) -> Vec<Candidate> {
    let mut rows = Vec::new();
    for (s, (source, skip)) in sources.iter().zip(skips).enumerate() {
        for (w, &word) in skip.iter().enumerate() {
            let mut bits = !word;
            while bits != 0 {
                let row = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if row < source.rows() && accept(s as u32, row) {
                    rows.push(Candidate {
                        depth: 0.0,
                        score: 0.0,
                        source: s as u32,
                        row: row as u32,
                    });
                }
            }
        }
    }
    rows
}

/// Whether re-ranking `listed` rows by their fine vectors reads fewer bytes than a coarse scan
/// of the whole view: then a filtered query skips the scan (and is exact).
fn rerank_reads_less(view: &View, listed: usize) -> bool {
    let schema = view.schema();
    let fine_row = schema.fine_dim * schema.fine_type.size();
    let scale = if schema.coarse_type == ElemType::I8 {
        4
    } else {
        0
    };
    let coarse_row = schema.coarse_dim * schema.coarse_type.size() + scale;
    listed.saturating_mul(fine_row) <= view.len().saturating_mul(coarse_row)
}

/// Rows of the given ids that are live and have vectors of `target`.
fn allowed_rows(
    sources: &[Source],
    target: Modality,
    ids: impl Iterator<Item = u64>,
) -> Vec<Candidate> {
    let mut rows: Vec<Candidate> = ids
        .filter_map(|id| {
            sources.iter().enumerate().find_map(|(s, source)| {
                let row = source.locate(id)?;
                (!source.skip(target).get(row)).then_some(Candidate {
                    depth: 0.0,
                    score: 0.0,
                    source: s as u32,
                    row: row as u32,
                })
            })
        })
        .collect();
    rows.sort_unstable_by_key(|c| (c.source, c.row));
    rows
}

/// What re-ranking one query's candidates gave.
struct Ranked {
    hits: Vec<Hit>,
    /// Collapse left fewer than `k` hits although the candidate list was full: more
    /// candidates may hold more distinct hits.
    wants_more: bool,
}

/// A candidate with its fine score (and the coarse score that made it one).
pub(crate) struct Scored {
    pub fine: f32,
    pub coarse: f32,
    /// The candidate's [`Candidate::depth`].
    pub depth: f32,
    id: u64,
    source: u32,
    row: u32,
}

/// The fine scores of the candidates, read in file order. A candidate whose score is not
/// finite fails the search (see [`damaged_row`]).
pub(crate) fn fine_scores(
    sources: &[Source],
    target: Modality,
    fine: &QueryVec,
    shortlist: &[Candidate],
    parallel: bool,
) -> Result<Vec<Scored>, CorruptionError> {
    let mut shortlist = shortlist.to_vec();
    shortlist.sort_unstable_by_key(|c| (c.source, c.row));
    let score_chunk = |chunk: &[Candidate]| {
        let mut out = Vec::with_capacity(chunk.len());
        for group in chunk.chunk_by(|a, b| a.source == b.source) {
            let source = &sources[group[0].source as usize];
            let column = source.fine(target);
            let group: Vec<&Candidate> = group
                .iter()
                .filter(|c| (c.row as usize) < column.len())
                .collect();
            let rows: Vec<usize> = group.iter().map(|c| c.row as usize).collect();
            let scores = scan::score_rows(&column, fine, &rows);
            for (candidate, score) in group.into_iter().zip(scores) {
                let row = candidate.row as usize;
                if !score.is_finite() {
                    return Err(damaged_row(source, target, row, score));
                }
                out.push(Scored {
                    fine: score,
                    coarse: candidate.score,
                    depth: candidate.depth,
                    id: source.id(row),
                    source: candidate.source,
                    row: candidate.row,
                });
            }
        }
        Ok(out)
    };
    // In parallel chunks: the first touch of a fine row is a page fault, which both threads
    // can take at once.
    let chunks: Vec<Vec<Scored>> = if parallel {
        shortlist
            .par_chunks(RERANK_CHUNK)
            .map(score_chunk)
            .collect::<Result<_, _>>()?
    } else {
        shortlist
            .chunks(RERANK_CHUNK)
            .map(score_chunk)
            .collect::<Result<_, _>>()?
    };
    Ok(chunks.into_iter().flatten().collect())
}

/// The best `k` of the scored candidates as hits, best first; ties broken by the smaller id so
/// results never depend on thread scheduling. Hits below [`SearchParams::min_score`] and
/// near-duplicates of a better hit ([`SearchParams::collapse`]) are left out; `full` says
/// whether more candidates exist than were scored.
fn best_hits(
    sources: &[Source],
    target: Modality,
    mut scored: Vec<Scored>,
    full: bool,
    params: &SearchParams,
) -> Ranked {
    scored.sort_unstable_by(|a, b| b.fine.total_cmp(&a.fine).then(a.id.cmp(&b.id)));
    let mut kept: Vec<Scored> = Vec::with_capacity(params.k.min(scored.len()));
    // Unit-length fine vectors of the kept hits, when collapsing. A walked candidate's vector
    // is read from the mapped column the scores above were just computed from (those pages
    // are resident), so memory stays k vectors however many candidates the walk passes.
    let mut kept_units: Vec<Vec<f32>> = Vec::new();
    let mut unit = Vec::new();
    let (mut collapsed, mut below_min) = (false, false);
    for candidate in scored {
        if kept.len() == params.k {
            break;
        }
        if params.min_score.is_some_and(|min| candidate.fine < min) {
            below_min = true;
            break;
        }
        if let Some(threshold) = params.collapse {
            let column = sources[candidate.source as usize].fine(target);
            column.row_to_f32(candidate.row as usize, &mut unit);
            l2_normalize(&mut unit);
            if kept_units
                .iter()
                .any(|other| dot(&unit, other) >= threshold)
            {
                collapsed = true;
                continue;
            }
            kept_units.push(unit.clone());
        }
        kept.push(candidate);
    }
    let wants_more = collapsed && !below_min && full && kept.len() < params.k;
    let hits = kept
        .into_iter()
        .map(|c| {
            let meta = sources[c.source as usize].meta(c.row as usize);
            Hit {
                id: c.id,
                score: c.fine,
                caption: meta.caption.map(str::to_owned),
                uri: meta.uri.map(str::to_owned),
                metadata: meta.metadata.to_vec(),
            }
        })
        .collect();
    Ranked { hits, wants_more }
}

/// The dot product of two vectors (the cosine similarity of unit ones), through simsimd's
/// SIMD kernels.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    <f32 as SpatialSimilarity>::dot(a, b).map_or(0.0, |d| d as f32)
}

/// The error for a candidate whose fine score is `score`, not finite. Stored vectors are
/// finite and so are queries, with norms bounded so that no product of two overflows
/// ([`MAX_NORM`](crate::projection::MAX_NORM)); this means bytes damaged after the open's
/// cheap checks (a vector file's crc is verified only by `verify`). Ranking such a row would
/// put a NaN first; failing names the file to restore instead.
fn damaged_row(source: &Source, target: Modality, row: usize, score: f32) -> CorruptionError {
    let column = source.fine(target);
    let offset = column
        .non_finite_offset(row)
        .unwrap_or((row * column.stride()) as u64);
    let what = format!(
        "the fine {target:?} vector of id {} scores {score} against a finite query",
        source.id(row)
    );
    let file = match source.segment() {
        Some(segment) => {
            let name = vector_file_name(segment.id(), target, Tier::Fine);
            segment
                .files()
                .iter()
                .find(|f| f.file_name() == Some(name.as_ref()))
                .map_or_else(|| name.into(), PathBuf::clone)
        }
        // Not a file: rows inserted or replayed from the WAL, held in memory.
        None => PathBuf::from("memtable"),
    };
    CorruptionError::new(file, offset, what)
}
