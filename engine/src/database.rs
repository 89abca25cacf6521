//! [`Database`]: the storage engine, the coarse derivation and (optionally) the encoders,
//! behind one handle.

use std::path::Path;
use std::sync::Arc;

use hivlp_storage::MetadataUpdate;
use hivlp_storage::{
    CompactionReport, MergeAll, MergePolicy, Metric, Modality, Properties, Rewrite, Row, Schema,
    SegmentStats, Store, StoreOptions, StoreStats, Tier, TierVectors, TieredMergePolicy,
    VerifyLevel, VerifyReport, View, l2_norm, l2_normalize,
};
use parking_lot::{Mutex, RwLock};

use crate::adaptive::Outcome;
use crate::compactor::{CompactionStats, Compactor};
use crate::error::{Error, InvalidInput, ModelError};
use crate::exif_metadata;
use crate::filter::MatchCache;
use crate::params::{
    Hit, Item, ModelChoice, NewDatabase, Options, Query, SearchParams, SearchTiming,
};
use crate::projection::{self, CoarseDerivation, CoarseMode, Projection};
use crate::scan::QueryVec;
use crate::search::{self, PreparedQuery};
use crate::{Embedding, Encoder, ImageInput, Result, Target};

/// Store property naming the model bundle whose embeddings the database holds.
const MODEL_PROPERTY: &str = "hivlp.model";
/// Most fine vectors a PCA refit at compaction reads.
const PCA_MAX_SAMPLES: usize = 16_384;
/// Coarse width of databases created for a `fine_only` model.
const DEFAULT_COARSE_DIM: usize = 64;

/// An embedded vector database of image–text items with coarse-to-fine search.
///
/// `Send + Sync`: any number of threads may search at once while one of them writes; a search
/// sees the database as it was when the search began.
///
/// ```
/// use hivlp::{Database, ElemType, Item, Embedding, Metric, Options, Query, Schema, SearchParams};
///
/// let dir = tempfile::tempdir()?;
/// let schema = Schema { fine_dim: 4, coarse_dim: 2, fine_type: ElemType::F32,
///                       coarse_type: ElemType::I8, metric: Metric::Cosine };
/// let db = Database::create(dir.path().join("db"), schema, Options::default())?;
/// let ids = db.insert(vec![
///     Item { caption: Some("red".into()),
///            image: Some(Embedding { fine: vec![1.0, 0.0, 0.0, 0.0], coarse: None }),
///            ..Item::default() },
///     Item { caption: Some("blue".into()),
///            image: Some(Embedding { fine: vec![0.0, 1.0, 0.0, 0.0], coarse: None }),
///            ..Item::default() },
/// ])?;
/// let hits = db.search(&Query::new(vec![0.9, 0.1, 0.0, 0.0]), &SearchParams { k: 1, ..Default::default() })?;
/// assert_eq!(hits[0].id, ids[0]);
/// assert_eq!(hits[0].caption.as_deref(), Some("red"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Database {
    /// Background compaction; `None` when off or read-only. Stopped before `store` closes.
    compactor: Option<Compactor>,
    store: Arc<Store>,
    pool: rayon::ThreadPool,
    /// How coarse vectors are derived, decoded from the properties of the latest view.
    coarse: RwLock<ModeCache>,
    /// Serialises writers with projection refits, so every row's coarse vector comes from the
    /// projection in force when it is stored.
    writer: Mutex<()>,
    encoder: Option<Encoder>,
    projection_fit_rows: usize,
    /// Segments' match bitmaps of recent search predicates.
    matches: MatchCache,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.store.path())
            .field("schema", self.store.schema())
            .field("coarse", &self.coarse.read().mode.name())
            .field("encoder", &self.encoder)
            .finish_non_exhaustive()
    }
}

/// A stored item, as [`Database::get`] returns it (vectors as stored: normalised, and
/// rounded to the schema's element types).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// External id.
    pub id: u64,
    pub caption: Option<String>,
    /// Where the item's image lives (as given on insert).
    pub uri: Option<String>,
    /// User bytes, returned as given.
    pub metadata: Vec<u8>,
    /// Image vectors (`coarse` is always `Some`), if the item has them.
    pub image: Option<Embedding>,
    /// Text vectors (`coarse` is always `Some`), if the item has them.
    pub text: Option<Embedding>,
}

/// An image–caption pair for [`Database::insert_pairs`], encoded by the database's model.
#[derive(Debug, Clone)]
pub struct Pair<'a> {
    /// External id; `None`: the database assigns one.
    pub id: Option<u64>,
    /// The image to encode.
    pub image: ImageInput<'a>,
    /// Also stored as the item's caption; `None`: an image-only item.
    pub caption: Option<&'a str>,
    /// Stored with the item and returned in hits (e.g. where the image file lives).
    pub uri: Option<String>,
    /// User bytes, returned in hits.
    pub metadata: Vec<u8>,
    /// Add the image's EXIF capture time, camera and GPS position to `metadata` as the fields
    /// of [`exif_metadata`](crate::exif_metadata), each unless `metadata` already has it;
    /// only when `metadata` is empty or a JSON object. Unreadable EXIF is skipped.
    pub exif: bool,
}

impl<'a> Pair<'a> {
    /// An image-only pair with no id, uri or metadata, its EXIF recorded (as the Python
    /// `insert` and the CLI `import` do by default); set the other fields with
    /// `Pair { caption: Some("…"), ..Pair::new(image) }`.
    pub fn new(image: ImageInput<'a>) -> Self {
        Self {
            id: None,
            image,
            caption: None,
            uri: None,
            metadata: Vec::new(),
            exif: true,
        }
    }
}

/// Counts and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Rows, segments, memtable, WAL and disk figures of the storage engine.
    pub store: StoreStats,
    /// How image and text coarse vectors are derived.
    pub coarse: [CoarseDerivation; 2],
    /// Dimensions, element types and metric.
    pub schema: Schema,
    /// `name vversion` of the model the handle encodes with, if any.
    pub model: Option<String>,
    /// What background compaction did.
    pub compaction: CompactionStats,
}

/// One figure of [`Stats::fields`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatValue {
    Count(u64),
    /// A lower-case name (`i8`, `cosine`, `pca`), a model tag or an error message.
    Name(String),
    /// What an open dropped from the end of the WAL.
    DroppedTail(hivlp_storage::DroppedWalTail),
    /// Not applicable (no model, nothing dropped).
    Absent,
}

impl Stats {
    /// Every figure under the name the bindings show it by (Python `stats()` keys, the CLI's
    /// `stats --json`), in display order: one list, so that the two cannot drift apart.
    pub fn fields(&self) -> Vec<(&'static str, StatValue)> {
        use StatValue::{Absent, Count, Name};
        let name = |value: &dyn std::fmt::Debug| Name(format!("{value:?}").to_ascii_lowercase());
        let (store, schema) = (&self.store, &self.schema);
        let count = |n: usize| Count(n as u64);
        vec![
            ("items", count(store.live_rows)),
            ("deleted", count(store.deleted_rows)),
            ("segments", count(store.segments)),
            ("segment_rows", count(store.segment_rows)),
            ("memtable_rows", count(store.memtable_rows)),
            ("partitioned_segments", count(store.partitioned_segments)),
            ("partitions", count(store.partitions)),
            (
                "partition_build_ms",
                Count(store.partition_build.as_millis() as u64),
            ),
            ("wal_bytes", Count(store.wal_bytes)),
            ("disk_bytes", Count(store.disk_bytes)),
            ("next_id", Count(store.next_id)),
            (
                "dropped_wal_tail",
                store
                    .dropped_wal_tail
                    .clone()
                    .map_or(Absent, StatValue::DroppedTail),
            ),
            ("fine_dim", count(schema.fine_dim)),
            ("coarse_dim", count(schema.coarse_dim)),
            ("fine_dtype", name(&schema.fine_type)),
            ("coarse_dtype", name(&schema.coarse_type)),
            ("metric", name(&schema.metric)),
            ("image_coarse", name(&self.coarse[0])),
            ("text_coarse", name(&self.coarse[1])),
            ("model", self.model.clone().map_or(Absent, Name)),
            ("auto_compaction", name(&self.compaction.state)),
            ("background_merges", Count(self.compaction.merges)),
            (
                "background_merge_error",
                self.compaction.last_error.clone().map_or(Absent, Name),
            ),
        ]
    }
}

/// The coarse mode of one version of the store's properties. The mode lives in the
/// properties, which each [`View`] carries with its rows, so a query is always projected with
/// the map of the rows it scans, in this process and in others, however a refit interleaves.
struct ModeCache {
    properties: Arc<Properties>,
    mode: Arc<CoarseMode>,
}

/// Rewrites every segment (compaction with a coarse rewrite must touch every row).
#[derive(Debug)]
struct RewriteAll;

impl MergePolicy for RewriteAll {
    fn plan(&self, segments: &[SegmentStats]) -> Vec<Vec<u64>> {
        if segments.is_empty() {
            Vec::new()
        } else {
            vec![segments.iter().map(|s| s.id).collect()]
        }
    }
}

fn store_options(opts: &Options) -> StoreOptions {
    StoreOptions {
        durability: opts.durability,
        read_only: opts.read_only,
        memtable_rows: opts.memtable_rows,
        partition_min_rows: opts.partition_min_rows,
        ..StoreOptions::default()
    }
}

fn check_options(opts: &Options) -> Result<()> {
    if opts.threads == Some(0) {
        return Err(InvalidInput::ZeroThreads.into());
    }
    Ok(())
}

fn load_encoder(opts: &Options) -> Result<Option<Encoder>> {
    let dir = match &opts.model {
        ModelChoice::None => return Ok(None),
        ModelChoice::Default => Encoder::default_bundle_dir(),
        ModelChoice::Path(p) => p.clone(),
    };
    Ok(Some(
        Encoder::load(&dir, opts.encoder.clone()).map_err(ModelError::Load)?,
    ))
}

/// `name`, version and content hash of a bundle, as recorded in the store.
fn model_tag(encoder: &Encoder) -> String {
    let info = encoder.info();
    format!("{} v{} ({})", info.name, info.version, info.content_hash)
}

/// The first coarse mode of a new database: fixed by the model's layout, or decided by the
/// first insert when there is no model.
fn initial_mode(schema: &Schema, encoder: Option<&Encoder>) -> CoarseMode {
    match encoder.map(|e| e.info().layout) {
        None => CoarseMode::Undecided,
        Some(hivlp_encoders::Layout::Matryoshka) => CoarseMode::Prefix,
        Some(hivlp_encoders::Layout::Separate) => CoarseMode::Supplied,
        Some(_) => CoarseMode::random(schema.fine_dim, schema.coarse_dim),
    }
}

fn check_model_schema(encoder: &Encoder, schema: &Schema) -> Result<()> {
    let info = encoder.info();
    let mismatch = |what, model: String, schema: String| -> Result<()> {
        Err(ModelError::Schema {
            what,
            model,
            schema,
        }
        .into())
    };
    if info.fine_dim != schema.fine_dim {
        return mismatch(
            "fine dimension",
            info.fine_dim.to_string(),
            schema.fine_dim.to_string(),
        );
    }
    if let Some(c) = info.coarse_dim.filter(|&c| c != schema.coarse_dim) {
        return mismatch(
            "coarse dimension",
            c.to_string(),
            schema.coarse_dim.to_string(),
        );
    }
    if encoder.info().metric != schema.metric {
        return mismatch(
            "metric",
            format!("{:?}", encoder.info().metric),
            format!("{:?}", schema.metric),
        );
    }
    Ok(())
}

/// Checks one vector's length and values; `item: None` for a query.
pub(crate) fn check_vector(
    values: &[f32],
    expected: usize,
    tier: Tier,
    item: Option<(usize, Target)>,
) -> Result<()> {
    if values.len() != expected {
        return Err(match item {
            Some((item, target)) => InvalidInput::ItemDimension {
                item,
                target,
                tier,
                expected,
                got: values.len(),
            },
            None => InvalidInput::QueryDimension {
                tier,
                expected,
                got: values.len(),
            },
        }
        .into());
    }
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(match item {
            Some((item, target)) => InvalidInput::ItemNonFinite {
                item,
                target,
                tier,
                index,
                value,
            },
            None => InvalidInput::QueryNonFinite { tier, index, value },
        }
        .into());
    }
    Ok(())
}

/// A copy of `values`, unit length for cosine databases, with a norm of at most
/// [`projection::MAX_NORM`] otherwise.
pub(crate) fn normalized(
    values: &[f32],
    metric: Metric,
    tier: Tier,
    item: Option<(usize, Target)>,
) -> Result<Vec<f32>> {
    let mut v = values.to_vec();
    if metric == Metric::Cosine && !l2_normalize(&mut v) {
        return Err(match item {
            Some((item, target)) => InvalidInput::ItemZero { item, target, tier },
            None => InvalidInput::QueryZero { tier },
        }
        .into());
    }
    check_norm(&v, projection::MAX_NORM, tier, item)?;
    Ok(v)
}

/// Refuses a vector longer than `max`, whose scores or projections could overflow `f32`.
fn check_norm(values: &[f32], max: f64, tier: Tier, item: Option<(usize, Target)>) -> Result<()> {
    let norm = l2_norm(values);
    if norm <= max {
        return Ok(());
    }
    Err(match item {
        Some((item, target)) => InvalidInput::ItemNorm {
            item,
            target,
            tier,
            norm,
            max,
        },
        None => InvalidInput::QueryNorm { tier, norm, max },
    }
    .into())
}

impl Database {
    /// Creates a database at `path` (which must not hold one). With `opts.model`, the schema's
    /// dimensions and metric must match the bundle (or use [`create_with_model`](Self::create_with_model)).
    pub fn create(path: impl AsRef<Path>, schema: Schema, opts: Options) -> Result<Database> {
        check_options(&opts)?;
        let encoder = load_encoder(&opts)?;
        Self::create_inner(path.as_ref(), schema, opts, encoder)
    }

    /// Creates a database whose dimensions and metric come from the model in `opts.model`
    /// (fine vectors `f32`, coarse vectors `coarse_type`).
    pub fn create_with_model(
        path: impl AsRef<Path>,
        coarse_type: hivlp_storage::ElemType,
        opts: Options,
    ) -> Result<Database> {
        check_options(&opts)?;
        let encoder = load_encoder(&opts)?.ok_or(ModelError::NoModel)?;
        let info = encoder.info();
        let schema = Schema {
            fine_dim: info.fine_dim,
            coarse_dim: info
                .coarse_dim
                .unwrap_or(DEFAULT_COARSE_DIM.min(info.fine_dim)),
            fine_type: hivlp_storage::ElemType::F32,
            coarse_type,
            metric: encoder.info().metric,
        };
        Self::create_inner(path.as_ref(), schema, opts, Some(encoder))
    }

    /// Creates a database as `new` describes: the model's dimensions and metric when
    /// `opts.model` names one, else `new.dims` and `new.metric` (vectors only).
    pub fn create_new(
        path: impl AsRef<Path>,
        new: &NewDatabase,
        opts: Options,
    ) -> Result<Database> {
        match (&opts.model, new.dims) {
            (ModelChoice::None, None) => Err(InvalidInput::Dimensions(
                "a database without a model needs fine_dim and coarse_dim",
            )
            .into()),
            (ModelChoice::None, Some((fine_dim, coarse_dim))) => {
                let schema = Schema {
                    fine_dim,
                    coarse_dim,
                    fine_type: hivlp_storage::ElemType::F32,
                    coarse_type: new.coarse_type,
                    metric: new.metric,
                };
                Self::create(path, schema, opts)
            }
            (_, Some(_)) => Err(InvalidInput::Dimensions(
                "fine_dim and coarse_dim only apply without a model: a model fixes them",
            )
            .into()),
            (_, None) => Self::create_with_model(path, new.coarse_type, opts),
        }
    }

    /// Opens the database at `path`, or creates it as `new` describes when the folder is
    /// missing, empty, or holds only what a killed create left (see
    /// [`occupancy`](crate::occupancy)); a folder of other files is not turned into a
    /// database (opening it reports that none is there). Read-only handles never create.
    pub fn open_or_create(
        path: impl AsRef<Path>,
        new: &NewDatabase,
        opts: Options,
    ) -> Result<Database> {
        let path = path.as_ref();
        if opts.read_only || hivlp_storage::occupancy(path) != hivlp_storage::Occupancy::Empty {
            Self::open(path, opts)
        } else {
            Self::create_new(path, new, opts)
        }
    }

    fn create_inner(
        path: &Path,
        schema: Schema,
        opts: Options,
        encoder: Option<Encoder>,
    ) -> Result<Database> {
        if let Some(encoder) = &encoder {
            check_model_schema(encoder, &schema)?;
        }
        let mode = initial_mode(&schema, encoder.as_ref());
        let store = Store::create(path, schema, store_options(&opts))?;
        store.set_property(projection::PROPERTY, mode.encode())?;
        if let Some(encoder) = &encoder {
            store.set_property(MODEL_PROPERTY, model_tag(encoder).into_bytes())?;
        }
        Self::assemble(store, mode, encoder, &opts)
    }

    /// Opens an existing database (replaying its write-ahead log). With `opts.model`, the
    /// bundle must be the one the database was written with, unless
    /// `opts.allow_model_mismatch`.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Database> {
        check_options(&opts)?;
        let store = Store::open(path.as_ref(), store_options(&opts))?;
        let encoder = load_encoder(&opts)?;
        if let Some(encoder) = &encoder {
            check_model_schema(encoder, store.schema())?;
            let tag = model_tag(encoder);
            match store.property(MODEL_PROPERTY) {
                Some(stored) if stored != tag.as_bytes() && !opts.allow_model_mismatch => {
                    return Err(ModelError::Mismatch {
                        stored: String::from_utf8_lossy(&stored).into_owned(),
                        opened: tag,
                    }
                    .into());
                }
                None if !opts.read_only => store.set_property(MODEL_PROPERTY, tag.into_bytes())?,
                _ => {}
            }
        }
        let mode = decode_mode(&store.view(), encoder.as_ref(), store.path())?;
        Self::assemble(store, mode, encoder, &opts)
    }

    fn assemble(
        store: Store,
        mode: CoarseMode,
        encoder: Option<Encoder>,
        opts: &Options,
    ) -> Result<Database> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.unwrap_or(0))
            .thread_name(|i| format!("hivlp-search-{i}"))
            .build()
            .map_err(|e| {
                Error::Io(hivlp_storage::IoError::new(
                    "start search threads",
                    std::io::Error::other(e),
                ))
            })?;
        let coarse = RwLock::new(ModeCache {
            properties: store.view().properties().clone(),
            mode: Arc::new(mode),
        });
        let store = Arc::new(store);
        let compactor = if opts.auto_compaction && !opts.read_only {
            let policy = TieredMergePolicy {
                max_merge_bytes: opts.compaction_budget_bytes,
                ..TieredMergePolicy::default()
            };
            let started = Compactor::start(store.clone(), policy);
            Some(started.map_err(|e| {
                Error::Io(hivlp_storage::IoError::new(
                    "start the compaction thread",
                    e,
                ))
            })?)
        } else {
            None
        };
        Ok(Database {
            compactor,
            store,
            pool,
            coarse,
            writer: Mutex::new(()),
            encoder,
            projection_fit_rows: opts.projection_fit_rows.max(1),
            matches: MatchCache::default(),
        })
    }

    /// Dimensions, element types and metric, fixed at creation.
    pub fn schema(&self) -> &Schema {
        self.store.schema()
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// The encoder of the model given at open, if any.
    pub fn encoder(&self) -> Option<&Encoder> {
        self.encoder.as_ref()
    }

    /// Fails in a child of `fork()`: every method that touches the database, its threads or
    /// its encoder calls this first (see [`Error::Forked`]).
    pub fn check_process(&self) -> Result<()> {
        Ok(self.store.check_process()?)
    }

    pub(crate) fn require_encoder(&self) -> Result<&Encoder> {
        self.encoder
            .as_ref()
            .ok_or_else(|| ModelError::NoModel.into())
    }

    /// Inserts items (all or none) and returns their ids: the given ones, or fresh ones for
    /// items without. Fine vectors (and given coarse vectors) are normalised in cosine
    /// databases; a missing coarse vector is derived from the fine one.
    pub fn insert(&self, items: Vec<Item>) -> Result<Vec<u64>> {
        self.check_process()?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let _writer = self.writer.lock();
        let schema = self.store.schema().clone();
        let mut mode = self.coarse_mode(&self.store.view())?;
        let mut properties = Vec::new();
        if *mode == CoarseMode::Undecided {
            let supplied = items
                .iter()
                .flat_map(|i| [&i.image, &i.text])
                .flatten()
                .any(|e| e.coarse.is_some());
            mode = Arc::new(if supplied {
                CoarseMode::Supplied
            } else {
                CoarseMode::random(schema.fine_dim, schema.coarse_dim)
            });
            properties.push((projection::PROPERTY.to_owned(), mode.encode()));
        }
        let auto_ids = items.iter().filter(|i| i.id.is_none()).count() as u64;
        let mut fresh = self.store.allocate_ids(auto_ids);
        let mut rows = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let id = item.id.or_else(|| fresh.next()).unwrap_or(u64::MAX);
            if item.image.is_none() && item.text.is_none() {
                return Err(InvalidInput::ItemEmpty { item: index }.into());
            }
            let tier = |e: Option<Embedding>, target| {
                e.map(|e| self.tier_vectors(&schema, &mode, index, target, e))
                    .transpose()
            };
            rows.push(Row {
                id,
                image: tier(item.image, Target::Image)?,
                text: tier(item.text, Target::Text)?,
                caption: item.caption,
                uri: item.uri,
                metadata: item.metadata,
            });
        }
        let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
        self.store.insert_with_properties(rows, properties)?;
        self.wake_compactor();
        // The rows are committed, so the refit they may trigger is not part of this call's
        // outcome: a failed refit changes nothing (rows and projection switch together) and
        // is tried again by the next insert and by `compact`, which reports its errors.
        let _ = self.fit_projection_if_due();
        Ok(ids)
    }

    fn tier_vectors(
        &self,
        schema: &Schema,
        mode: &CoarseMode,
        item: usize,
        target: Target,
        e: Embedding,
    ) -> Result<TierVectors> {
        let at = Some((item, target));
        check_vector(&e.fine, schema.fine_dim, Tier::Fine, at)?;
        let fine = normalized(&e.fine, schema.metric, Tier::Fine, at)?;
        let coarse = match (e.coarse, mode) {
            (Some(_), CoarseMode::Projected(_)) => {
                return Err(InvalidInput::CoarseNotExpected {
                    item,
                    target,
                    mode: mode.name(),
                }
                .into());
            }
            (Some(c), _) => {
                check_vector(&c, schema.coarse_dim, Tier::Coarse, at)?;
                normalized(&c, schema.metric, Tier::Coarse, at)?
            }
            (None, mode) => {
                // Bounds this row's coarse vector under every later refit too.
                check_norm(
                    &fine,
                    mode.max_fine_norm(schema.coarse_type),
                    Tier::Fine,
                    at,
                )?;
                let mut c = vec![0.0; schema.coarse_dim];
                if !mode.derive(target, schema.metric, &fine, &mut c) {
                    return Err(InvalidInput::CoarseRequired { item, target }.into());
                }
                c
            }
        };
        Ok(TierVectors { coarse, fine })
    }

    /// Encodes image–caption pairs with the database's model (images and captions in
    /// batches) and inserts them. An image that cannot be decoded fails the whole call,
    /// naming its index; nothing is written then. Pairs with [`Pair::exif`] get their image's
    /// EXIF fields merged into their metadata.
    pub fn insert_pairs(&self, pairs: &[Pair<'_>]) -> Result<Vec<u64>> {
        self.check_process()?;
        let encoder = self.require_encoder()?;
        let images: Vec<ImageInput<'_>> = pairs.iter().map(|p| p.image).collect();
        let image_embeddings = encoder.encode_images(&images).map_err(ModelError::Encode)?;
        let captions: Vec<&str> = pairs.iter().filter_map(|p| p.caption).collect();
        let mut text_embeddings = encoder
            .encode_texts(&captions)
            .map_err(ModelError::Encode)?
            .into_iter();
        let items = pairs
            .iter()
            .zip(image_embeddings)
            .map(|(pair, image)| Item {
                id: pair.id,
                caption: pair.caption.map(str::to_owned),
                uri: pair.uri.clone(),
                metadata: if pair.exif {
                    exif_metadata::with_exif_fields(pair.image, pair.metadata.clone())
                } else {
                    pair.metadata.clone()
                },
                image: Some(image),
                text: pair.caption.and_then(|_| text_embeddings.next()),
            })
            .collect();
        self.insert(items)
    }

    /// Deletes rows by id (unknown ids are ignored); returns how many were deleted.
    pub fn delete(&self, ids: &[u64]) -> Result<usize> {
        self.check_process()?;
        let deleted = self.store.delete(ids)?;
        self.wake_compactor();
        Ok(deleted)
    }

    /// Replaces the caption, URI and/or metadata of the live item `id` (fields of
    /// [`MetadataUpdate`] left `None` are kept), without re-encoding anything: its id and
    /// vectors stay as stored, so a new caption does not change the text vector it was
    /// inserted with. Durable like an insert (one WAL record), and visible at once to
    /// [`get`](Self::get), search hits and metadata filters. Returns `false`, changing
    /// nothing, when no live item has `id` (never inserted, or deleted); sizes over the
    /// limits are an [`InvalidInput`] error.
    pub fn update(&self, id: u64, update: MetadataUpdate) -> Result<bool> {
        self.check_process()?;
        // A refit rewrites every stored coarse vector: the copy kept here must be of the
        // projection in force, like an insert's.
        let _writer = self.writer.lock();
        let updated = self.store.update(id, update)?;
        self.wake_compactor();
        Ok(updated)
    }

    /// Makes every acknowledged write durable (for [`Durability::Buffered`](crate::Durability::Buffered)).
    /// A failure poisons the handle: later writes fail until the database is reopened.
    pub fn sync(&self) -> Result<()> {
        self.check_process()?;
        Ok(self.store.sync()?)
    }

    /// Closes the database, making every acknowledged write durable first. Unlike dropping
    /// the handle, which does the same on a best-effort basis, reports a failure to do so
    /// (with [`Durability::Buffered`](crate::Durability::Buffered), writes since the last
    /// sync may then be lost). In a forked child, closes nothing the parent owns.
    ///
    /// A background merge that is running is waited for first (it reads at most
    /// [`Options::compaction_budget_bytes`]); none is left half-written.
    pub fn close(mut self) -> Result<()> {
        self.check_process()?;
        drop(self.compactor.take());
        // What `Store::close` does; the drop that follows has nothing left to sync.
        self.sync()
    }

    /// Writes the memtable to a new immutable segment.
    pub fn flush(&self) -> Result<()> {
        self.check_process()?;
        self.store.flush()?;
        self.wake_compactor();
        Ok(())
    }

    /// Stops background compaction until [`resume_compaction`](Self::resume_compaction),
    /// waiting for a running merge to finish (say, before copying the folder by hand or to
    /// keep the disk quiet). Explicit [`compact`](Self::compact) still works. A no-op
    /// without background compaction.
    pub fn pause_compaction(&self) -> Result<()> {
        self.check_process()?;
        if let Some(c) = &self.compactor {
            c.pause();
        }
        Ok(())
    }

    /// Lets background compaction run again after
    /// [`pause_compaction`](Self::pause_compaction).
    pub fn resume_compaction(&self) -> Result<()> {
        self.check_process()?;
        if let Some(c) = &self.compactor {
            c.resume();
        }
        Ok(())
    }

    fn wake_compactor(&self) {
        if let Some(c) = &self.compactor {
            c.wake();
        }
    }

    /// Merges every segment into one and drops deleted rows, whatever background compaction
    /// would choose (waiting for a background merge that is running). When coarse vectors
    /// come from a projection and enough rows exist, the PCA projection is refitted first and
    /// every row's coarse vector recomputed.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.check_process()?;
        let writer = self.writer.lock();
        if let Some(refit) = self.refit(PCA_MAX_SAMPLES, |_| true)? {
            return self.install_projection(refit);
        }
        // Without a refit, inserts may proceed while segments merge.
        drop(writer);
        Ok(self.store.compact(&MergeAll, None)?)
    }

    /// Copies a consistent state of the database into the new directory `dest`.
    pub fn snapshot(&self, dest: &Path) -> Result<()> {
        self.check_process()?;
        Ok(self.store.snapshot(dest)?)
    }

    /// Counts and sizes, and how coarse vectors are derived.
    pub fn stats(&self) -> Result<Stats> {
        self.check_process()?;
        let mode = self.coarse_mode(&self.store.view())?;
        Ok(Stats {
            store: self.store.stats()?,
            coarse: [
                mode.derivation(Modality::Image),
                mode.derivation(Modality::Text),
            ],
            schema: self.store.schema().clone(),
            model: self
                .encoder
                .as_ref()
                .map(|e| format!("{} v{}", e.info().name, e.info().version)),
            compaction: self
                .compactor
                .as_ref()
                .map_or(CompactionStats::OFF, Compactor::stats),
        })
    }

    /// Live (not deleted) items.
    pub fn len(&self) -> Result<usize> {
        self.check_process()?;
        Ok(self.store.view().len())
    }

    /// Whether no live item exists.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The ids of every live item, in storage order (segments oldest first, then the
    /// memtable), from one consistent view: what an export walks, a batch of [`get`](Self::get)s
    /// at a time.
    pub fn ids(&self) -> Result<Vec<u64>> {
        self.check_process()?;
        let view = self.store.view();
        Ok(view
            .sources()
            .iter()
            .flat_map(|source| {
                (0..source.rows())
                    .filter(|&row| !source.is_deleted(row))
                    .map(|row| source.id(row))
            })
            .collect())
    }

    /// The live item with this id.
    pub fn get(&self, id: u64) -> Result<Option<Record>> {
        self.check_process()?;
        let view = self.store.view();
        let Some((source, row)) = view.locate(id) else {
            return Ok(None);
        };
        let embedding = |m: Modality| {
            if !source.has(m).get(row) {
                return None;
            }
            let (mut fine, mut coarse) = (Vec::new(), Vec::new());
            source.fine(m).row_to_f32(row, &mut fine);
            source.coarse(m).row_to_f32(row, &mut coarse);
            Some(Embedding {
                fine,
                coarse: Some(coarse),
            })
        };
        let meta = source.meta(row);
        Ok(Some(Record {
            id,
            caption: meta.caption.map(str::to_owned),
            uri: meta.uri.map(str::to_owned),
            metadata: meta.metadata.to_vec(),
            image: embedding(Modality::Image),
            text: embedding(Modality::Text),
        }))
    }

    /// The `k` best items for a query vector: coarse scan keeping `candidates` rows, exact fine
    /// re-rank (or, with `exact`, a flat scan of the fine vectors).
    pub fn search(&self, query: &Query, params: &SearchParams) -> Result<Vec<Hit>> {
        Ok(self.search_with_timing(query, params)?.0)
    }

    /// [`search`](Self::search), also returning the time of each stage.
    pub fn search_with_timing(
        &self,
        query: &Query,
        params: &SearchParams,
    ) -> Result<(Vec<Hit>, SearchTiming)> {
        self.check_process()?;
        let candidates = params.checked_candidates()?;
        let view = self.store.view();
        let mode = self.coarse_mode(&view)?;
        let prepared = [self.prepare(query, params, &mode)?];
        let (mut hits, outcomes, timing) = self.run(|parallel| {
            search::search(
                &view,
                &prepared,
                params,
                candidates,
                &self.matches,
                parallel,
            )
        })?;
        let outcome = outcomes.first().copied().unwrap_or(Outcome::exact(0));
        let timing = SearchTiming {
            candidates: outcome.candidates,
            passes: outcome.passes,
            exact: outcome.exact,
            estimated_recall: outcome.estimated_recall,
            probe: outcome.probe,
            ..timing
        };
        Ok((hits.pop().unwrap_or_default(), timing))
    }

    /// Many queries in one pass: each block of coarse vectors is read once for the whole
    /// batch. Hits per query, in order.
    pub fn search_batch(&self, queries: &[Query], params: &SearchParams) -> Result<Vec<Vec<Hit>>> {
        self.check_process()?;
        let candidates = params.checked_candidates()?;
        let view = self.store.view();
        let mode = self.coarse_mode(&view)?;
        let prepared = queries
            .iter()
            .map(|q| self.prepare(q, params, &mode))
            .collect::<Result<Vec<_>>>()?;
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .run(|parallel| {
                search::search(
                    &view,
                    &prepared,
                    params,
                    candidates,
                    &self.matches,
                    parallel,
                )
            })?
            .0)
    }

    /// Runs a search on the search threads, or directly on the calling thread when there is
    /// only one (no hand-off to wait for).
    fn run<R: Send>(&self, search: impl FnOnce(bool) -> R + Send) -> R {
        if self.pool.current_num_threads() > 1 {
            self.pool.install(|| search(true))
        } else {
            search(false)
        }
    }

    /// Encodes `text` with the model and searches (`params.target: Image` for text→image).
    pub fn search_text(&self, text: &str, params: &SearchParams) -> Result<Vec<Hit>> {
        self.check_process()?;
        params.checked_candidates()?;
        let encoded = self.require_encoder()?.encode_texts(&[text]);
        self.search_encoded(encoded, params)
    }

    /// Encodes `image` with the model and searches (`params.target: Text` for image→text).
    pub fn search_image(&self, image: ImageInput<'_>, params: &SearchParams) -> Result<Vec<Hit>> {
        self.check_process()?;
        params.checked_candidates()?;
        let encoded = self.require_encoder()?.encode_images(&[image]);
        self.search_encoded(encoded, params)
    }

    /// Searches with the one embedding an encoder call returned.
    fn search_encoded(
        &self,
        encoded: std::result::Result<Vec<Embedding>, hivlp_encoders::EncodeError>,
        params: &SearchParams,
    ) -> Result<Vec<Hit>> {
        let query = encoded
            .map_err(ModelError::Encode)?
            .into_iter()
            .next()
            .map(Query::from)
            .unwrap_or_default();
        self.search(&query, params)
    }

    /// Whether queries must bring their own coarse vectors (the database stores supplied
    /// ones and derives none).
    pub(crate) fn coarse_supplied(&self) -> Result<bool> {
        Ok(*self.coarse_mode(&self.store.view())? == CoarseMode::Supplied)
    }

    /// The coarse mode that goes with `view`'s rows.
    fn coarse_mode(&self, view: &View) -> Result<Arc<CoarseMode>> {
        {
            let cache = self.coarse.read();
            if Arc::ptr_eq(&cache.properties, view.properties()) {
                return Ok(cache.mode.clone());
            }
        }
        let mode = Arc::new(decode_mode(view, self.encoder.as_ref(), self.store.path())?);
        *self.coarse.write() = ModeCache {
            properties: view.properties().clone(),
            mode: mode.clone(),
        };
        Ok(mode)
    }

    fn prepare(
        &self,
        query: &Query,
        params: &SearchParams,
        mode: &CoarseMode,
    ) -> Result<PreparedQuery> {
        let schema = self.store.schema();
        check_vector(&query.fine, schema.fine_dim, Tier::Fine, None)?;
        let fine = normalized(&query.fine, schema.metric, Tier::Fine, None)?;
        let coarse = match &query.coarse {
            Some(c) => {
                check_vector(c, schema.coarse_dim, Tier::Coarse, None)?;
                normalized(c, schema.metric, Tier::Coarse, None)?
            }
            None => {
                let mut c = vec![0.0; schema.coarse_dim];
                let derived = mode.derive(params.target, schema.metric, &fine, &mut c);
                // An exact search never reads coarse vectors; an empty database has none.
                if !derived && !params.exact && *mode != CoarseMode::Undecided {
                    return Err(InvalidInput::QueryCoarseRequired.into());
                }
                c
            }
        };
        Ok(PreparedQuery {
            coarse: QueryVec::new(&coarse),
            fine: QueryVec::new(&fine),
        })
    }

    /// After an insert: fits PCA for each modality still on its random projection once it
    /// has `projection_fit_rows` rows.
    fn fit_projection_if_due(&self) -> Result<()> {
        let due = |p: &Projection| !p.fitted;
        match self.refit(self.projection_fit_rows, due)? {
            Some(mode) => self.install_projection(mode).map(|_| ()),
            None => Ok(()),
        }
    }

    /// A new projection mode with PCA refitted (on up to `samples` rows) for each modality
    /// selected by `select` that has at least `projection_fit_rows` rows; `None` when
    /// nothing would change or coarse vectors are not projected.
    fn refit(
        &self,
        samples: usize,
        select: impl Fn(&Projection) -> bool,
    ) -> Result<Option<CoarseMode>> {
        if self.store.options().read_only {
            return Ok(None);
        }
        let view = self.store.view();
        let mode = self.coarse_mode(&view)?;
        let CoarseMode::Projected(current) = &*mode else {
            return Ok(None);
        };
        let schema = self.store.schema();
        let mut next = current.clone();
        let mut changed = false;
        for (m, p) in Modality::ALL.into_iter().zip(next.iter_mut()) {
            if select(p) && projection::rows_with(&view, m) >= self.projection_fit_rows {
                let sample =
                    projection::sample_fine(&view, m, samples.max(self.projection_fit_rows));
                *p = Projection {
                    fitted: true,
                    matrix: self.pool.install(|| {
                        projection::fit_pca(&sample, schema.fine_dim, schema.coarse_dim)
                    }),
                };
                changed = true;
            }
        }
        Ok(changed.then_some(CoarseMode::Projected(next)))
    }

    /// Rewrites every row's coarse vector with `mode` in a compaction that installs `mode`
    /// with the rewritten rows: readers switch to both at once, and a crash leaves either the
    /// old rows and mode or the new ones. Callers hold the writer lock.
    fn install_projection(&self, mode: CoarseMode) -> Result<CompactionReport> {
        let metric = self.store.schema().metric;
        let properties = vec![(projection::PROPERTY.to_owned(), mode.encode())];
        let derive = move |m: Modality, fine: &[f32], out: &mut [f32]| {
            mode.derive(m, metric, fine, out);
        };
        let rewrite = Rewrite {
            coarse: &derive,
            properties,
        };
        Ok(self.store.compact(&RewriteAll, Some(&rewrite))?)
    }
}

/// The coarse mode recorded in `view`'s properties (the initial one for a database that
/// recorded none yet).
fn decode_mode(view: &View, encoder: Option<&Encoder>, dir: &Path) -> Result<CoarseMode> {
    let schema = view.schema();
    match view.properties().get(projection::PROPERTY) {
        None => Ok(initial_mode(schema, encoder)),
        Some(b) if b.is_empty() => Ok(initial_mode(schema, encoder)),
        Some(b) => CoarseMode::decode(b, schema.fine_dim, schema.coarse_dim).ok_or_else(|| {
            // Properties come from the manifest or from WAL records replayed over it; which
            // one set this value is not tracked, so the error names the database directory.
            hivlp_storage::CorruptionError::new(
                dir,
                0,
                format!(
                    "engine property {} (in the manifest or the WAL) cannot be decoded",
                    projection::PROPERTY
                ),
            )
            .into()
        }),
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // A forked child has none of the encoder runtime's threads, and releasing it would wait
        // for them forever; the parent owns it, so this copy is left alone.
        // Nor has it the compaction thread, which cannot be joined there.
        let compactor = self.compactor.take();
        if self.check_process().is_err() {
            std::mem::forget(self.encoder.take());
            std::mem::forget(compactor);
        }
    }
}

/// Checks every file of the database at `path` (footers, checksums, manifest references).
pub fn verify(path: &Path) -> Result<VerifyReport> {
    Ok(hivlp_storage::verify(path, VerifyLevel::Full)?)
}
