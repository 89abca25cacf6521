//! The two-stage query over one [`View`]: coarse scan keeping M candidates, then exact fine
//! scores of those candidates and the top k. Exact mode is the same scan over the fine tier.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hivlp_storage::segment::vector_file_name;
use hivlp_storage::{CorruptionError, ElemType, Modality, Source, Tier, View};
use rayon::prelude::*;

use crate::adaptive::{self, Outcome, Policy};
use crate::params::{Filter, Hit, SearchParams};
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

/// Hits per query, what each query's coarse stage did, and the time of the coarse and the fine
/// stage (for the whole batch).
pub(crate) type Searched = (Vec<Vec<Hit>>, Vec<Outcome>, [Duration; 2]);

/// Hits per query with what each query's coarse stage did, plus the time of each stage (for
/// the whole batch). With `parallel`, on the current rayon pool, else on the calling thread.
pub(crate) fn search(
    view: &View,
    queries: &[PreparedQuery],
    params: &SearchParams,
    candidates: usize,
    parallel: bool,
) -> Result<Searched, CorruptionError> {
    let started = Instant::now();
    let sources = view.sources();
    let target = params.target;
    // `k` and `candidates` are checked against `MAX_CANDIDATES`; no more rows than are live
    // can be kept, so buffers are never sized beyond the data.
    let keep = if params.exact { params.k } else { candidates }.min(view.len());
    let scan = |queries: &[&PreparedQuery], keep: usize, exact: bool| -> Vec<Vec<Candidate>> {
        let parts: Vec<Part<'_>> = sources
            .iter()
            .map(|s| Part {
                column: if exact {
                    s.fine(target)
                } else {
                    s.coarse(target)
                },
                skip: s.skip(target).words(),
            })
            .collect();
        let tier: Vec<&QueryVec> = queries
            .iter()
            .map(|q| if exact { &q.fine } else { &q.coarse })
            .collect();
        let accept = |source: u32, row: usize| {
            params
                .filter
                .as_ref()
                .is_none_or(|f| f.allows(sources[source as usize].id(row)))
        };
        // Tiles of queries share each pass over the coarse data; a tile's top-M buffers
        // stay in cache while its rows stream through.
        tier.chunks(QUERY_TILE)
            .flat_map(|tile| scan::top_m(&parts, tile, keep, &accept, parallel))
            .collect()
    };
    let shortlist = match &params.filter {
        // A short allow-list is its own candidate list: re-ranking all of it is exact, and no
        // slower than the scan it replaces while it reads no more bytes than that scan would.
        Some(Filter::Allow(ids)) if ids.len() <= keep || rerank_reads_less(view, ids.len()) => {
            let listed = allowed_rows(sources, target, ids.iter().copied());
            let outcome = Outcome {
                candidates: listed.len(),
                passes: 0,
                exact: false,
                estimated_recall: 1.0,
            };
            Shortlist::Complete(vec![listed; queries.len()], outcome)
        }
        _ if params.exact => {
            let all: Vec<&PreparedQuery> = queries.iter().collect();
            Shortlist::Complete(scan(&all, keep, true), Outcome::exact(0))
        }
        _ => Shortlist::Pass(keep),
    };
    let rerank_one = |(query, shortlist): (&PreparedQuery, Vec<Candidate>)| {
        rerank(sources, target, &query.fine, shortlist, params.k, parallel)
    };
    match shortlist {
        Shortlist::Complete(shortlist, outcome) => {
            let coarse = started.elapsed();
            let hits = if parallel {
                queries
                    .par_iter()
                    .zip(shortlist)
                    .map(rerank_one)
                    .collect::<Result<_, _>>()?
            } else {
                queries
                    .iter()
                    .zip(shortlist)
                    .map(rerank_one)
                    .collect::<Result<_, _>>()?
            };
            let outcomes = vec![outcome; queries.len()];
            Ok((hits, outcomes, [coarse, started.elapsed() - coarse]))
        }
        Shortlist::Pass(keep) => {
            let policy = Policy::new(view.schema(), view.len(), params.candidates.is_none());
            adaptive::search(sources, queries, params, keep, &policy, &scan, parallel)
        }
    }
}

/// The candidate lists of a search, or the size of the first coarse pass still to run.
enum Shortlist {
    /// Every row that can be a hit is listed (exact scan or short allow-list).
    Complete(Vec<Vec<Candidate>>, Outcome),
    Pass(usize),
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

/// Exact fine scores of the candidates (read in file order), best `k` first; ties broken by
/// the smaller id so results never depend on thread scheduling. A candidate whose score is not
/// finite fails the search (see [`damaged_row`]).
pub(crate) fn rerank(
    sources: &[Source],
    target: Modality,
    fine: &QueryVec,
    shortlist: Vec<Candidate>,
    k: usize,
    parallel: bool,
) -> Result<Vec<Hit>, CorruptionError> {
    let scored = fine_scores(sources, target, fine, &shortlist, parallel)?;
    Ok(best_hits(sources, scored, k))
}

/// A candidate with its fine score.
pub(crate) struct Scored {
    pub fine: f32,
    pub coarse: f32,
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
/// results never depend on thread scheduling.
pub(crate) fn best_hits(sources: &[Source], mut scored: Vec<Scored>, k: usize) -> Vec<Hit> {
    scored.sort_unstable_by(|a, b| b.fine.total_cmp(&a.fine).then(a.id.cmp(&b.id)));
    scored.truncate(k);
    scored
        .into_iter()
        .map(|s| {
            let meta = sources[s.source as usize].meta(s.row as usize);
            Hit {
                id: s.id,
                score: s.fine,
                caption: meta.caption.map(str::to_owned),
                uri: meta.uri.map(str::to_owned),
                metadata: meta.metadata.to_vec(),
            }
        })
        .collect()
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
