//! Helpers shared by the cross-crate tests in `tests/tests/`: deterministic random rows, an
//! owned image of everything a store returns (to compare a store against a model of what it
//! must hold), and directory utilities.
//!
//! Rows are a pure function of `(seed, id)`, so a process that only learns an id (e.g. from a
//! crashed child's stdout) can rebuild the exact row that was written.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use hivlp_storage::{
    ElemType, FieldValue, Metric, Modality, Row, Schema, Source, TierVectors, View,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A small schema with dimensions that are not multiples of the row alignment (so padding is
/// exercised) and the given element types.
pub fn small_schema(fine_type: ElemType, coarse_type: ElemType) -> Schema {
    Schema {
        fine_dim: 40,
        coarse_dim: 12,
        fine_type,
        coarse_type,
        metric: Metric::InnerProduct,
    }
}

/// The row with id `id` of the data set `seed`: image only, text only or both; caption, URI and
/// metadata of varying presence and length (including empty).
pub fn random_row(schema: &Schema, seed: u64, id: u64) -> Row {
    let mut rng = StdRng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let tier = |rng: &mut StdRng| TierVectors {
        coarse: (0..schema.coarse_dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect(),
        fine: (0..schema.fine_dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect(),
    };
    let (image, text) = match rng.random_range(0..4u8) {
        0 => (Some(tier(&mut rng)), None),
        1 => (None, Some(tier(&mut rng))),
        _ => (Some(tier(&mut rng)), Some(tier(&mut rng))),
    };
    let caption = rng.random_bool(0.9).then(|| {
        format!(
            "item {id}: {}",
            "ünïcode words ".repeat(rng.random_range(0..4))
        )
    });
    let uri = rng
        .random_bool(0.7)
        .then(|| format!("file:///images/{seed}/{id}.png"));
    let metadata = (0..rng.random_range(0..48usize))
        .map(|_| rng.random())
        .collect();
    Row {
        id,
        caption,
        uri,
        metadata,
        image,
        text,
    }
}

/// The caption and metadata an update with `tag` sets (crash tests): JSON whose field `tag`
/// is the tag, so a recovered row's field column can be checked against it.
pub fn updated_meta(tag: u32) -> (String, Vec<u8>) {
    (
        format!("updated {tag}"),
        format!(r#"{{"tag": {tag}}}"#).into_bytes(),
    )
}

/// The tag of metadata [`updated_meta`] made, `None` for any other metadata.
pub fn updated_tag(metadata: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(metadata).ok()?;
    text.strip_prefix(r#"{"tag": "#)?
        .strip_suffix('}')?
        .parse()
        .ok()
}

/// Whether `got` is row `id` of data set `seed` as written: exactly, or with the caption and
/// metadata of an update ([`updated_meta`]).
pub fn is_written_row(schema: &Schema, seed: u64, id: u64, got: &StoredRow) -> bool {
    let mut want = expected_row(schema, &random_row(schema, seed, id));
    if let Some(tag) = updated_tag(&got.metadata) {
        let (caption, metadata) = updated_meta(tag);
        want.caption = Some(caption);
        want.metadata = metadata;
    }
    *got == want
}

/// Every live row's `tag` field (read from its field column, or from the memtable) is the tag
/// its metadata holds: none for rows never updated.
pub fn check_tag_fields(view: &View) -> Result<(), String> {
    for source in view.sources() {
        let column = source
            .field("tag")
            .map_err(|e| format!("field column: {e}"))?;
        for row in (0..source.rows()).filter(|&r| !source.is_deleted(r)) {
            let want = updated_tag(source.meta(row).metadata).map(|t| FieldValue::Int(t.into()));
            let got = column.as_ref().and_then(|c| c.get(row));
            if got != want {
                return Err(format!(
                    "field tag of id {}: {got:?}, its metadata says {want:?}",
                    source.id(row)
                ));
            }
        }
    }
    Ok(())
}

/// Rows `ids` of data set `seed`.
pub fn random_rows(schema: &Schema, seed: u64, ids: std::ops::Range<u64>) -> Vec<Row> {
    ids.map(|id| random_row(schema, seed, id)).collect()
}

/// One tier of one stored row, as raw stored bytes (without row padding) plus the `I8` scale.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTier {
    pub coarse: Vec<u8>,
    pub coarse_scale: Option<f32>,
    pub fine: Vec<u8>,
    pub fine_scale: Option<f32>,
}

/// Everything a store returns for one live row.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub caption: Option<String>,
    pub uri: Option<String>,
    pub metadata: Vec<u8>,
    /// Indexed like [`Modality::ALL`]: image, text.
    pub vectors: [Option<StoredTier>; 2],
}

/// All live rows of a store by id.
pub type StoreImage = BTreeMap<u64, StoredRow>;

/// Reference encoding of `values` for `elem` (independent of storage's own encoder). `I8` has
/// no reference here: tests that use it compare against a store's earlier output instead.
fn encode_reference(elem: ElemType, values: &[f32]) -> (Vec<u8>, Option<f32>) {
    match elem {
        ElemType::F32 => (values.iter().flat_map(|v| v.to_le_bytes()).collect(), None),
        ElemType::F16 => (
            values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            None,
        ),
        ElemType::I8 => panic!("no reference encoding for I8; compare against a stored image"),
    }
}

/// What a store with `schema` must return for `row` (schemas with `F32`/`F16` tiers only).
pub fn expected_row(schema: &Schema, row: &Row) -> StoredRow {
    let tier = |v: &TierVectors| {
        let (coarse, coarse_scale) = encode_reference(schema.coarse_type, &v.coarse);
        let (fine, fine_scale) = encode_reference(schema.fine_type, &v.fine);
        StoredTier {
            coarse,
            coarse_scale,
            fine,
            fine_scale,
        }
    };
    StoredRow {
        caption: row.caption.clone(),
        uri: row.uri.clone(),
        metadata: row.metadata.clone(),
        vectors: Modality::ALL.map(|m| row.vectors(m).map(tier)),
    }
}

/// What a store must hold after inserting `rows` (and nothing else).
pub fn expected_image<'a>(schema: &Schema, rows: impl IntoIterator<Item = &'a Row>) -> StoreImage {
    rows.into_iter()
        .map(|r| (r.id, expected_row(schema, r)))
        .collect()
}

fn stored_tier(source: &Source, m: Modality, row: usize) -> Result<StoredTier, String> {
    let (coarse, fine) = (source.coarse(m), source.fine(m));
    if coarse.len() != source.rows() || fine.len() != source.rows() {
        return Err(format!(
            "{m:?} columns have {} / {} rows, the source {}",
            coarse.len(),
            fine.len(),
            source.rows()
        ));
    }
    Ok(StoredTier {
        coarse: coarse.row_bytes(row).to_vec(),
        coarse_scale: coarse.scales().map(|s| s[row]),
        fine: fine.row_bytes(row).to_vec(),
        fine_scale: fine.scales().map(|s| s[row]),
    })
}

/// Reads every live row of `view`, checking the invariants a reader relies on: each live id
/// appears once, `skip(m)` is exactly "deleted or without `m`", `locate` finds each live row.
pub fn read_view(view: &View) -> Result<StoreImage, String> {
    let mut image = StoreImage::new();
    for (si, source) in view.sources().iter().enumerate() {
        for row in 0..source.rows() {
            for m in Modality::ALL {
                let skip = source.is_deleted(row) || !source.has(m).get(row);
                if source.skip(m).get(row) != skip {
                    return Err(format!("source {si} row {row}: skip({m:?}) is wrong"));
                }
            }
            if source.is_deleted(row) {
                continue;
            }
            let id = source.id(row);
            if source.locate(id) != Some(row) {
                return Err(format!("source {si}: locate({id}) does not find row {row}"));
            }
            let meta = source.meta(row);
            let mut vectors = [None, None];
            for (slot, m) in vectors.iter_mut().zip(Modality::ALL) {
                if source.has(m).get(row) {
                    *slot = Some(stored_tier(source, m, row)?);
                }
            }
            let stored = StoredRow {
                caption: meta.caption.map(str::to_owned),
                uri: meta.uri.map(str::to_owned),
                metadata: meta.metadata.to_vec(),
                vectors,
            };
            if image.insert(id, stored).is_some() {
                return Err(format!("id {id} is live in two sources"));
            }
        }
    }
    if image.len() != view.len() {
        return Err(format!(
            "view.len() is {}, {} live rows found",
            view.len(),
            image.len()
        ));
    }
    Ok(image)
}

/// Describes how two images differ (the first few differences), `None` when equal.
pub fn diff_images(expected: &StoreImage, actual: &StoreImage) -> Option<String> {
    let mut out = Vec::new();
    for (id, e) in expected {
        match actual.get(id) {
            None => out.push(format!("id {id} missing")),
            Some(a) if a != e => out.push(format!("id {id} differs: expected {e:?}, got {a:?}")),
            Some(_) => {}
        }
    }
    for id in actual.keys().filter(|id| !expected.contains_key(id)) {
        out.push(format!("id {id} present but not expected"));
    }
    (!out.is_empty()).then(|| {
        let n = out.len();
        out.truncate(5);
        format!("{n} differences, first: {}", out.join("; "))
    })
}

/// Total bytes of the regular files under `dir` (apparent sizes).
pub fn dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Copies the regular files of `src` (recursively) into a new directory `dst`.
pub fn copy_dir(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            fs::copy(entry.path(), to)?;
        }
    }
    Ok(())
}
