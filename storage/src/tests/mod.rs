//! Store-level tests, split by concern. Helpers build small deterministic rows.

/// One test per swept operation, each calling the `sweep` function in scope (the fault and the
/// power-loss sweeps name the same operations).
macro_rules! sweeps {
    ($($name:ident: $op:expr,)*) => {$(
        #[test]
        fn $name() {
            sweep($op);
        }
    )*};
}

mod compaction;
mod create;
mod fault_regressions;
mod faults;
mod fields;
mod lock;
mod power_loss;
mod recovery;
mod roundtrip;
mod snapshot;
mod sweep;
mod validation;

use std::path::Path;

use crate::*;

pub(crate) fn schema(fine_type: ElemType, coarse_type: ElemType) -> Schema {
    Schema {
        fine_dim: 20,
        coarse_dim: 6,
        fine_type,
        coarse_type,
        metric: Metric::InnerProduct,
    }
}

/// A deterministic pseudo-random vector for `(id, salt)`.
pub(crate) fn vector(id: u64, salt: u64, dim: usize) -> Vec<f32> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Row `id`: image vectors always, text vectors for even ids, caption for ids divisible by 3.
pub(crate) fn row(s: &Schema, id: u64) -> Row {
    let tv = |salt| TierVectors {
        coarse: vector(id, salt, s.coarse_dim),
        fine: vector(id, salt + 1, s.fine_dim),
    };
    Row {
        id,
        caption: id.is_multiple_of(3).then(|| format!("caption {id}")),
        uri: Some(format!("file:///{id}.png")),
        metadata: row_metadata(id),
        image: Some(tv(10)),
        text: id.is_multiple_of(2).then(|| tv(20)),
    }
}

/// JSON metadata with a field of every type (and one whose type depends on the id) for
/// most rows; raw bytes, which have no fields, for ids divisible by 5.
pub(crate) fn row_metadata(id: u64) -> Vec<u8> {
    if id.is_multiple_of(5) {
        return id.to_le_bytes().to_vec();
    }
    let mixed = match id % 3 {
        0 => format!("{id}"),
        1 => format!("\"m{id}\""),
        _ => "null".into(),
    };
    format!(
        r#"{{"n": {id}, "half": {}, "x": {}.5, "name": "item {}", "at": "2024-01-{:02}", "tags": ["t{}", "all"], "mixed": {mixed}, "nested": {{"a": 1}}}}"#,
        id.is_multiple_of(2),
        id,
        id % 7,
        id % 28 + 1,
        id % 4,
    )
    .into_bytes()
}

/// Every field value of `row`, rendered, in name order; checked against the extraction rule
/// applied to the row's metadata (so every dump also checks the columns it reads).
pub(crate) fn row_fields(s: &Source, row: usize) -> Vec<(String, String)> {
    let got: Vec<(String, String)> = s
        .field_names()
        .into_iter()
        .filter_map(|name| {
            let column = s.field(name).unwrap().expect("a listed field has a column");
            column.get(row).map(|v| (name.to_owned(), format!("{v:?}")))
        })
        .collect();
    let want: Vec<(String, String)> = crate::format::field::extract_fields(s.meta(row).metadata)
        .into_iter()
        .map(|(name, v)| (name, format!("{v:?}")))
        .collect();
    assert_eq!(got, want, "fields of id {}", s.id(row));
    got
}

pub(crate) fn rows(s: &Schema, ids: impl IntoIterator<Item = u64>) -> Vec<Row> {
    ids.into_iter().map(|id| row(s, id)).collect()
}

pub(crate) fn opts() -> StoreOptions {
    StoreOptions {
        memtable_rows: 1000,
        ..StoreOptions::default()
    }
}

/// Everything a view holds, per live id: (caption, uri, metadata, per modality (coarse
/// bytes, coarse scale, fine bytes, fine scale)). Comparing two of these is bit-exact.
pub(crate) type Dump = std::collections::BTreeMap<
    u64,
    (
        Option<String>,
        Option<String>,
        Vec<u8>,
        Vec<Option<(Vec<u8>, f32, Vec<u8>, f32)>>,
        Vec<(String, String)>,
    ),
>;

pub(crate) fn dump(view: &View) -> Dump {
    let mut out = Dump::new();
    for s in view.sources() {
        for r in 0..s.rows() {
            if s.is_deleted(r) {
                continue;
            }
            let m = s.meta(r);
            let vecs = Modality::ALL
                .iter()
                .map(|&md| {
                    (!s.skip(md).get(r)).then(|| {
                        let (c, f) = (s.coarse(md), s.fine(md));
                        (
                            c.row_bytes(r).to_vec(),
                            c.scales().map_or(0.0, |x| x[r]),
                            f.row_bytes(r).to_vec(),
                            f.scales().map_or(0.0, |x| x[r]),
                        )
                    })
                })
                .collect();
            let prev = out.insert(
                s.id(r),
                (
                    m.caption.map(str::to_owned),
                    m.uri.map(str::to_owned),
                    m.metadata.to_vec(),
                    vecs,
                    row_fields(s, r),
                ),
            );
            assert!(prev.is_none(), "id {} live twice", s.id(r));
        }
    }
    assert_eq!(out.len(), view.len());
    out
}

pub(crate) fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}
