//! What readers see: a [`View`] is a list of [`Source`]s (immutable segments and frozen
//! memtable batches), each with the tombstones current when the view was taken.

use std::sync::Arc;

use crate::data::bitmap::Bitmap;
use crate::data::column::VectorColumn;
use crate::data::fields::OwnedFields;
use crate::data::segment::{RowMeta, Segment};
use crate::data::vectors::{OwnedColumn, padded_stride};
use crate::error::CorruptionError;
use crate::format::field_column::FieldColumn;
use crate::format::partitions::PartitionIndex;
use crate::schema::{ElemType, Modality, Properties, Row, Schema, Tier};

#[derive(Debug, Clone)]
struct OwnedMeta {
    caption: Option<String>,
    uri: Option<String>,
    metadata: Vec<u8>,
}

impl OwnedMeta {
    fn of(m: RowMeta<'_>) -> OwnedMeta {
        OwnedMeta {
            caption: m.caption.map(str::to_owned),
            uri: m.uri.map(str::to_owned),
            metadata: m.metadata.to_vec(),
        }
    }
}

/// Rows inserted by one `insert` call (or several, merged), encoded exactly as a segment
/// stores them. Immutable once built: readers share it through an `Arc`.
#[derive(Debug)]
pub(crate) struct MemBatch {
    ids: Vec<u64>,
    /// Rows by ascending id.
    order: Vec<u32>,
    metas: Vec<OwnedMeta>,
    has: [Bitmap; 2],
    /// Per modality: `[coarse, fine]`, `None` when no row of the batch has that modality.
    columns: [Option<[OwnedColumn; 2]>; 2],
    /// The metadata fields of the rows, extracted once when the batch is built.
    fields: OwnedFields,
}

impl MemBatch {
    /// Encodes validated rows.
    pub fn from_rows(schema: &Schema, rows: &[Row]) -> MemBatch {
        let n = rows.len();
        let mut has = [Bitmap::new(n), Bitmap::new(n)];
        let mut columns: [Option<[OwnedColumn; 2]>; 2] = [None, None];
        for m in Modality::ALL {
            if !rows.iter().any(|r| r.vectors(m).is_some()) {
                continue;
            }
            let mut coarse = OwnedColumn::zeroed(schema.coarse_type, schema.coarse_dim, n);
            let mut fine = OwnedColumn::zeroed(schema.fine_type, schema.fine_dim, n);
            for (i, r) in rows.iter().enumerate() {
                if let Some(v) = r.vectors(m) {
                    has[m.index()].set(i);
                    coarse.set_f32(i, &v.coarse);
                    fine.set_f32(i, &v.fine);
                }
            }
            columns[m.index()] = Some([coarse, fine]);
        }
        let metas = rows
            .iter()
            .map(|r| OwnedMeta {
                caption: r.caption.clone(),
                uri: r.uri.clone(),
                metadata: r.metadata.clone(),
            })
            .collect();
        Self::assemble(rows.iter().map(|r| r.id).collect(), metas, has, columns)
    }

    fn assemble(
        ids: Vec<u64>,
        metas: Vec<OwnedMeta>,
        has: [Bitmap; 2],
        columns: [Option<[OwnedColumn; 2]>; 2],
    ) -> MemBatch {
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_unstable_by_key(|&r| ids[r as usize]);
        let fields = OwnedFields::derive(ids.len(), metas.iter().map(|m| &m.metadata[..]));
        MemBatch {
            ids,
            order,
            metas,
            has,
            columns,
            fields,
        }
    }

    /// Decodes rows whose vectors are already encoded (WAL replay): `vectors(row, m)` yields
    /// `(coarse bytes, coarse scale, fine bytes, fine scale)` for rows that have modality `m`.
    pub fn from_encoded<'a>(
        schema: &Schema,
        rows: &[crate::format::wal::EncodedRow<'a>],
    ) -> MemBatch {
        let n = rows.len();
        let mut has = [Bitmap::new(n), Bitmap::new(n)];
        let mut columns: [Option<[OwnedColumn; 2]>; 2] = [None, None];
        for m in Modality::ALL {
            if !rows.iter().any(|r| r.vectors[m.index()].is_some()) {
                continue;
            }
            let mut coarse = OwnedColumn::zeroed(schema.coarse_type, schema.coarse_dim, n);
            let mut fine = OwnedColumn::zeroed(schema.fine_type, schema.fine_dim, n);
            for (i, r) in rows.iter().enumerate() {
                if let Some(v) = &r.vectors[m.index()] {
                    has[m.index()].set(i);
                    coarse.set_raw(i, v.coarse, v.coarse_scale);
                    fine.set_raw(i, v.fine, v.fine_scale);
                }
            }
            columns[m.index()] = Some([coarse, fine]);
        }
        let metas = rows
            .iter()
            .map(|r| OwnedMeta {
                caption: r.caption.map(str::to_owned),
                uri: r.uri.map(str::to_owned),
                metadata: r.metadata.to_vec(),
            })
            .collect();
        Self::assemble(rows.iter().map(|r| r.id).collect(), metas, has, columns)
    }

    /// Concatenates the live rows of several sources (memtable batches) into one batch.
    pub fn merge(schema: &Schema, parts: &[&Source]) -> MemBatch {
        let live: Vec<(&Source, usize)> = parts
            .iter()
            .flat_map(|s| {
                (0..s.rows())
                    .filter(|&r| !s.is_deleted(r))
                    .map(move |r| (*s, r))
            })
            .collect();
        let metas = live
            .iter()
            .map(|(s, r)| OwnedMeta::of(s.meta(*r)))
            .collect();
        Self::copy_rows(schema, &live, metas)
    }

    /// One row: `row` of `source` with its vectors as stored and `meta` instead of its own
    /// (a metadata update).
    pub fn replacing(schema: &Schema, source: &Source, row: usize, meta: RowMeta<'_>) -> MemBatch {
        Self::copy_rows(schema, &[(source, row)], vec![OwnedMeta::of(meta)])
    }

    /// A batch of the given rows' ids and vectors (bytes as stored), with `metas`.
    fn copy_rows(schema: &Schema, rows: &[(&Source, usize)], metas: Vec<OwnedMeta>) -> MemBatch {
        let n = rows.len();
        let mut has = [Bitmap::new(n), Bitmap::new(n)];
        let mut columns: [Option<[OwnedColumn; 2]>; 2] = [None, None];
        for m in Modality::ALL {
            if !rows.iter().any(|(s, r)| s.has(m).get(*r)) {
                continue;
            }
            let mut cols = [
                OwnedColumn::zeroed(schema.coarse_type, schema.coarse_dim, n),
                OwnedColumn::zeroed(schema.fine_type, schema.fine_dim, n),
            ];
            for (i, (s, r)) in rows.iter().enumerate() {
                if !s.has(m).get(*r) {
                    continue;
                }
                has[m.index()].set(i);
                for (tier, col) in cols.iter_mut().enumerate() {
                    let src = if tier == 0 { s.coarse(m) } else { s.fine(m) };
                    col.set_raw(i, src.row_bytes(*r), src.scales().map_or(0.0, |x| x[*r]));
                }
            }
            columns[m.index()] = Some(cols);
        }
        Self::assemble(
            rows.iter().map(|(s, r)| s.id(*r)).collect(),
            metas,
            has,
            columns,
        )
    }

    pub fn rows(&self) -> usize {
        self.ids.len()
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Backing {
    Segment(Arc<Segment>),
    Batch(Arc<MemBatch>),
}

/// One immutable group of rows in a [`View`]: a segment (memory-mapped files) or a frozen
/// memtable batch, together with its tombstones at the time the view was taken.
///
/// Row indices run over `0..rows()` and include deleted rows; [`skip`](Self::skip) says which
/// rows a scan of one modality must ignore.
#[derive(Debug, Clone)]
pub struct Source {
    backing: Backing,
    schema: Arc<Schema>,
    deleted: Arc<Bitmap>,
    /// Per modality: deleted OR without vectors of that modality.
    skip: Arc<[Bitmap; 2]>,
}

impl Source {
    pub(crate) fn new(backing: Backing, schema: Arc<Schema>, deleted: Arc<Bitmap>) -> Source {
        let has = |m| match &backing {
            Backing::Segment(s) => s.has(m).clone(),
            Backing::Batch(b) => b.has[m.index()].clone(),
        };
        let skip = Arc::new(Modality::ALL.map(|m| has(m).not().or(&deleted)));
        Source {
            backing,
            schema,
            deleted,
            skip,
        }
    }

    pub(crate) fn backing(&self) -> &Backing {
        &self.backing
    }

    pub(crate) fn deleted_arc(&self) -> &Arc<Bitmap> {
        &self.deleted
    }

    /// The segment behind this source, `None` for a memtable batch.
    pub fn segment(&self) -> Option<&Arc<Segment>> {
        match &self.backing {
            Backing::Segment(s) => Some(s),
            Backing::Batch(_) => None,
        }
    }

    /// Whether this source is a (not yet flushed) memtable batch.
    pub fn is_memtable(&self) -> bool {
        matches!(self.backing, Backing::Batch(_))
    }

    /// Number of rows, deleted ones included.
    pub fn rows(&self) -> usize {
        match &self.backing {
            Backing::Segment(s) => s.rows(),
            Backing::Batch(b) => b.rows(),
        }
    }

    /// Number of rows not deleted.
    pub fn live_rows(&self) -> usize {
        self.rows() - self.deleted.count_ones()
    }

    fn empty_column(&self, tier: Tier) -> VectorColumn<'static> {
        let (elem, dim) = self.schema.tier(tier);
        let scales: Option<&'static [f32]> = (elem == ElemType::I8).then_some(&[]);
        VectorColumn::from_parts(elem, dim, padded_stride(elem, dim), &[], scales)
    }

    fn column(&self, m: Modality, tier: Tier) -> VectorColumn<'_> {
        let col = match &self.backing {
            Backing::Segment(s) => s.column(m, tier),
            Backing::Batch(b) => b.columns[m.index()]
                .as_ref()
                .map(|c| c[tier.index()].column()),
        };
        col.unwrap_or_else(|| self.empty_column(tier))
    }

    /// Coarse vectors of modality `m`: `rows()` rows, or none at all (`len() == 0`) when no
    /// row of this source has vectors of `m` (then every row is in [`skip(m)`](Self::skip)).
    /// Rows without vectors of `m` hold zeros.
    pub fn coarse(&self, m: Modality) -> VectorColumn<'_> {
        self.column(m, Tier::Coarse)
    }

    /// Fine vectors of modality `m`; same shape rules as [`coarse`](Self::coarse).
    pub fn fine(&self, m: Modality) -> VectorColumn<'_> {
        self.column(m, Tier::Fine)
    }

    /// The partitions of modality `m`'s coarse vectors: `None` for a memtable batch and a
    /// segment scanned flat.
    pub fn partitions(&self, m: Modality) -> Option<&PartitionIndex> {
        self.segment().and_then(|s| s.partitions(m))
    }

    /// Rows a scan of modality `m` must ignore: deleted, or without vectors of `m`.
    pub fn skip(&self, m: Modality) -> &Bitmap {
        &self.skip[m.index()]
    }

    /// Deleted rows (tombstones).
    pub fn deleted(&self) -> &Bitmap {
        &self.deleted
    }

    /// Whether `row` has a tombstone.
    pub fn is_deleted(&self, row: usize) -> bool {
        self.deleted.get(row)
    }

    /// Rows that have vectors of modality `m` (deleted or not).
    pub fn has(&self, m: Modality) -> &Bitmap {
        match &self.backing {
            Backing::Segment(s) => s.has(m),
            Backing::Batch(b) => &b.has[m.index()],
        }
    }

    /// External id of `row`. Panics if `row >= rows()`, like slice indexing.
    pub fn id(&self, row: usize) -> u64 {
        match &self.backing {
            Backing::Segment(s) => s.id_at(row),
            Backing::Batch(b) => b.ids[row],
        }
    }

    /// Caption, URI and metadata of `row`. Panics if `row >= rows()`.
    pub fn meta(&self, row: usize) -> RowMeta<'_> {
        match &self.backing {
            Backing::Segment(s) => s.meta(row),
            Backing::Batch(b) => {
                let m = &b.metas[row];
                RowMeta {
                    caption: m.caption.as_deref(),
                    uri: m.uri.as_deref(),
                    metadata: &m.metadata,
                }
            }
        }
    }

    /// The named top-level metadata field over this source's rows (see
    /// [`FieldType`](crate::FieldType) for the extraction rule); `None` when no row of it has
    /// the field. A segment reads only that field's column file, mapped and checked on first
    /// use: a damaged one is a [`CorruptionError`] naming it. Deleted rows keep their values;
    /// callers combine the column with [`skip`](Self::skip).
    pub fn field(&self, name: &str) -> Result<Option<FieldColumn<'_>>, CorruptionError> {
        match &self.backing {
            Backing::Segment(s) => s.field(name),
            Backing::Batch(b) => Ok(b.fields.column(name)),
        }
    }

    /// Names of the fields some row of this source has (deleted rows included), sorted: what
    /// an "unknown field" error can list.
    pub fn field_names(&self) -> Vec<&str> {
        match &self.backing {
            Backing::Segment(s) => s.field_names(),
            Backing::Batch(b) => b.fields.names().collect(),
        }
    }

    /// Row of `id` in this source, whether deleted or not.
    pub fn locate_any(&self, id: u64) -> Option<usize> {
        match &self.backing {
            Backing::Segment(s) => s.locate(id),
            Backing::Batch(b) => b
                .order
                .binary_search_by_key(&id, |&r| b.ids[r as usize])
                .ok()
                .map(|p| b.order[p] as usize),
        }
    }

    /// Row of `id` in this source if it is live (not deleted).
    pub fn locate(&self, id: u64) -> Option<usize> {
        self.locate_any(id).filter(|&r| !self.is_deleted(r))
    }
}

/// A consistent, immutable snapshot of the database for readers: cheap to take
/// ([`Store::view`](crate::Store::view)), cheap to clone, and unaffected by later inserts,
/// deletes, flushes and compactions (the segments it maps stay on disk until it is dropped).
#[derive(Debug, Clone)]
pub struct View {
    inner: Arc<ViewInner>,
}

#[derive(Debug)]
struct ViewInner {
    schema: Arc<Schema>,
    sources: Vec<Source>,
    properties: Arc<Properties>,
    live: usize,
}

impl View {
    pub(crate) fn new(
        schema: Arc<Schema>,
        sources: Vec<Source>,
        properties: Arc<Properties>,
    ) -> View {
        let live = sources.iter().map(Source::live_rows).sum();
        View {
            inner: Arc::new(ViewInner {
                schema,
                sources,
                properties,
                live,
            }),
        }
    }

    /// The engine properties that go with these rows (set by
    /// [`Store::set_property`](crate::Store::set_property) or installed by a
    /// [`Rewrite`](crate::Rewrite) together with the rows they describe). The `Arc` is shared
    /// by every view until the properties change, so its address tells whether they did.
    pub fn properties(&self) -> &Arc<Properties> {
        &self.inner.properties
    }

    /// The database's schema.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// Segments first (oldest first), then memtable batches (oldest first).
    pub fn sources(&self) -> &[Source] {
        &self.inner.sources
    }

    /// Live (not deleted) rows.
    pub fn len(&self) -> usize {
        self.inner.live
    }

    /// Whether no row is live.
    pub fn is_empty(&self) -> bool {
        self.inner.live == 0
    }

    /// The source and row holding live id `id`.
    pub fn locate(&self, id: u64) -> Option<(&Source, usize)> {
        self.inner
            .sources
            .iter()
            .find_map(|s| s.locate(id).map(|r| (s, r)))
    }
}
