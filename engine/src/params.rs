//! What callers pass in and get back: options, items, queries, search parameters, hits.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use hivlp_storage::{
    DEFAULT_PARTITION_MIN_ROWS, Durability, ElemType, Metric, Modality as Target, TieredMergePolicy,
};

use crate::error::InvalidInput;
use crate::filter::Predicate;
use crate::{Embedding, EncoderOptions};

/// Candidates (M) of the first coarse pass when [`SearchParams::candidates`] is `None`.
pub const DEFAULT_CANDIDATES: usize = 200;

/// Largest [`SearchParams::k`] and [`SearchParams::candidates`] a search accepts (2^24).
/// Values up to it are clamped to the live rows before anything is allocated; larger ones
/// are a typed error rather than an allocation the process cannot survive.
pub const MAX_CANDIDATES: usize = 1 << 24;

/// Which embedding model a database uses to encode text and images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModelChoice {
    /// No model: only vector inserts and vector queries.
    #[default]
    None,
    /// The bundle in `hivlp_encoders::Encoder::default_bundle_dir()`.
    Default,
    /// A bundle directory (holding `model.toml`).
    Path(PathBuf),
}

impl From<&str> for ModelChoice {
    /// `"default"`, `"none"`, or a bundle directory: the spelling both bindings accept.
    fn from(name: &str) -> Self {
        match name {
            "default" => ModelChoice::Default,
            "none" => ModelChoice::None,
            dir => ModelChoice::Path(dir.into()),
        }
    }
}

/// What [`Database::create_new`](crate::Database::create_new) creates: with a model, its
/// dimensions and metric; without one (`ModelChoice::None`), the given `dims` and `metric`.
/// Fine vectors are stored as `f32`, coarse vectors as `coarse_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewDatabase {
    pub coarse_type: ElemType,
    /// `(fine_dim, coarse_dim)`: required without a model, refused with one.
    pub dims: Option<(usize, usize)>,
    /// Only without a model (a model fixes its metric).
    pub metric: Metric,
}

impl Default for NewDatabase {
    fn default() -> Self {
        Self {
            coarse_type: ElemType::I8,
            dims: None,
            metric: Metric::Cosine,
        }
    }
}

/// How to open or create a [`Database`](crate::Database).
#[derive(Debug, Clone)]
pub struct Options {
    /// When a write is durable (see [`Durability`]).
    pub durability: Durability,
    /// Open without the writer lock; any number of read-only handles may coexist with one
    /// writer. Writes return [`Error::ReadOnly`](crate::Error::ReadOnly).
    pub read_only: bool,
    /// The memtable becomes an immutable segment once it holds this many rows.
    pub memtable_rows: usize,
    /// Search threads; `None`: one per core.
    pub threads: Option<usize>,
    pub model: ModelChoice,
    pub encoder: EncoderOptions,
    /// Open a database written with another model bundle anyway.
    pub allow_model_mismatch: bool,
    /// When coarse vectors are derived by projection (no coarse vectors supplied, no
    /// Matryoshka model): the projection is fitted by PCA once the database holds this many
    /// rows of a modality, on those rows (a random orthogonal projection is used before).
    pub projection_fit_rows: usize,
    /// Merge segments in a background thread of the writer handle (see
    /// [`Database::pause_compaction`](crate::Database::pause_compaction)); without it, only
    /// [`Database::compact`](crate::Database::compact) merges.
    pub auto_compaction: bool,
    /// Most bytes of segment files one background compaction reads, which bounds the extra
    /// disk it holds at once (its output is at most its input). Larger segments are not
    /// merged in the background.
    pub compaction_budget_bytes: u64,
    /// Segments with at least this many rows of a modality get its coarse vectors
    /// partitioned when a flush or a compaction writes them, so that the default search
    /// reads only the partitions nearest each query (see [`SearchParams::probe`]);
    /// `usize::MAX`, the default for now, keeps every segment flat (32_768 is the smallest
    /// size worth setting).
    pub partition_min_rows: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            read_only: false,
            memtable_rows: 50_000,
            threads: None,
            model: ModelChoice::None,
            encoder: EncoderOptions::default(),
            allow_model_mismatch: false,
            projection_fit_rows: 4096,
            auto_compaction: true,
            compaction_budget_bytes: TieredMergePolicy::default().max_merge_bytes,
            partition_min_rows: DEFAULT_PARTITION_MIN_ROWS,
        }
    }
}

/// One item to insert: vectors of either or both modalities plus what search results return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    /// External id, at most [`MAX_ID`](crate::MAX_ID); `None`: the database assigns the next
    /// free one.
    pub id: Option<u64>,
    pub caption: Option<String>,
    pub uri: Option<String>,
    pub metadata: Vec<u8>,
    pub image: Option<Embedding>,
    pub text: Option<Embedding>,
}

/// A query vector. `coarse: None` derives it from `fine` the way the database derives the
/// coarse vectors of its rows (Matryoshka prefix or the fitted projection).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub fine: Vec<f32>,
    pub coarse: Option<Vec<f32>>,
}

impl Query {
    pub fn new(fine: Vec<f32>) -> Self {
        Self { fine, coarse: None }
    }
}

impl From<Embedding> for Query {
    fn from(e: Embedding) -> Self {
        Self {
            fine: e.fine,
            coarse: e.coarse,
        }
    }
}

/// Restricts which ids a search may return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Only these ids.
    Allow(HashSet<u64>),
    /// Any id but these.
    Deny(HashSet<u64>),
}

impl Filter {
    pub fn allows(&self, id: u64) -> bool {
        match self {
            Filter::Allow(ids) => ids.contains(&id),
            Filter::Deny(ids) => !ids.contains(&id),
        }
    }
}

/// How to search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParams {
    /// Which vectors of the items are searched: a text query searching `Image` is
    /// text→image retrieval.
    pub target: Target,
    /// Hits to return: 1 to [`MAX_CANDIDATES`] (fewer when fewer rows match).
    pub k: usize,
    /// Rows kept by the coarse stage and re-ranked with fine vectors (M), `k` to
    /// [`MAX_CANDIDATES`]; `None`: chosen per query, starting at [`DEFAULT_CANDIDATES`] (or
    /// `k` if larger) and growing (or switching to the exact scan) until the estimated recall
    /// reaches [`TARGET_RECALL`](crate::TARGET_RECALL).
    pub candidates: Option<usize>,
    /// Share (0 to 1) of each partitioned segment's rows the coarse stage reads, the
    /// partitions whose centroids score best first; `1.0` reads every row (a flat scan).
    /// `None`: with `candidates` `None`, chosen per query together with M (starting at 1/64
    /// and growing until the estimated recall reaches the target); with a fixed
    /// `candidates`, every row. The memtable and segments too small to be partitioned are
    /// always read whole.
    pub probe: Option<f64>,
    /// Flat scan of the fine vectors instead: exact, slower (the ground truth).
    pub exact: bool,
    pub filter: Option<Filter>,
    /// Only rows this predicate matches (see [`filter`](crate::filter)); checked against the
    /// database's fields when the search runs. Combines with `filter` (both must allow a row).
    pub predicate: Option<Predicate>,
    /// Hits whose fine score is below this are dropped, so a query with few related items
    /// returns fewer than `k` hits rather than unrelated ones. Must be finite.
    pub min_score: Option<f32>,
    /// Near-duplicate collapse: walking the hits best first, a hit whose fine vector has a
    /// cosine similarity of at least this (-1 to 1, e.g. 0.95) with a hit already kept is
    /// dropped (in inner-product databases too: the vectors are compared at unit length). The candidate list grows (doubling M) until `k` hits are kept or every row
    /// was a candidate, so `k` distinct hits come back when they exist.
    pub collapse: Option<f32>,
}

impl Default for SearchParams {
    fn default() -> Self {
        Self {
            target: Target::Image,
            k: 10,
            candidates: None,
            probe: None,
            exact: false,
            filter: None,
            predicate: None,
            min_score: None,
            collapse: None,
        }
    }
}

impl SearchParams {
    /// The number of coarse candidates to re-rank, after checking `k` and `candidates`.
    pub(crate) fn checked_candidates(&self) -> Result<usize, InvalidInput> {
        if let Some(score) = self.min_score.filter(|s| !s.is_finite()) {
            return Err(InvalidInput::MinScoreNotFinite(score));
        }
        if let Some(threshold) = self.collapse.filter(|t| !(-1.0..=1.0).contains(t)) {
            return Err(InvalidInput::CollapseOutOfRange(threshold));
        }
        if let Some(share) = self.probe.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(InvalidInput::ProbeOutOfRange(share));
        }
        if self.k == 0 {
            return Err(InvalidInput::ZeroK);
        }
        if self.k > MAX_CANDIDATES {
            return Err(InvalidInput::KTooLarge {
                k: self.k,
                max: MAX_CANDIDATES,
            });
        }
        match self.candidates {
            Some(m) if m > MAX_CANDIDATES => Err(InvalidInput::CandidatesTooLarge {
                candidates: m,
                max: MAX_CANDIDATES,
            }),
            Some(m) if m < self.k => Err(InvalidInput::CandidatesBelowK {
                candidates: m,
                k: self.k,
            }),
            Some(m) => Ok(m),
            None => Ok(DEFAULT_CANDIDATES.max(self.k)),
        }
    }
}

/// Parses `"image"` / `"text"` (any case), for bindings and command lines.
pub fn parse_target(name: &str) -> Result<Target, InvalidInput> {
    Target::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| InvalidInput::UnknownTarget(name.to_owned()))
}

/// One search result (or a stored row, from [`Database::get`](crate::Database::get)).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: u64,
    /// Dot product of the fine vectors (cosine similarity in a cosine database); 0 from `get`.
    pub score: f32,
    pub caption: Option<String>,
    pub uri: Option<String>,
    pub metadata: Vec<u8>,
}

/// Where a search spent its time, and how sure its result is.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SearchTiming {
    /// Evaluating [`SearchParams::predicate`] to a bitmap per source (zero without one).
    pub filter: Duration,
    /// Scanning coarse vectors (for exact searches: the fine scan), all passes.
    pub coarse: Duration,
    /// Re-ranking the candidates with fine vectors and fetching hit metadata.
    pub fine: Duration,
    /// Candidates (M) re-ranked with fine vectors: with [`SearchParams::candidates`] `None`,
    /// chosen per query from the scores (see [`TARGET_RECALL`](crate::TARGET_RECALL)); 0
    /// when the flat fine scan produced the hits.
    pub candidates: usize,
    /// Coarse passes run: more than 1 when the first candidates were too few.
    pub passes: u32,
    /// Whether the flat fine scan produced the hits: asked for (`exact`), or chosen because
    /// the candidates needed for the target recall would have cost as much.
    pub exact: bool,
    /// Estimated recall@k of the hits against an exact search (1 for an exact one), from a
    /// model of how well the coarse scores predicted the fine ones. Below
    /// [`TARGET_RECALL`](crate::TARGET_RECALL) when a fixed `candidates` was too small.
    pub estimated_recall: f64,
    /// Share of each partitioned segment's rows the last coarse pass read (see
    /// [`SearchParams::probe`]); 1 when every row was read.
    pub probe: f64,
}
