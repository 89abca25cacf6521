//! A fine vector file is only checked cheaply on open (footer, descriptor, lengths; its crc
//! only by `verify`), so a flipped bit in a row can reach a search. The re-rank must never
//! rank a row whose fine score is not finite: such a search fails with a `CorruptionError`
//! naming the fine vector file and the damaged bytes, instead of returning the row first.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use hivlp::{
    Database, ElemType, Embedding, Error, Item, Metric, Options, Query, Schema, SearchParams,
    Target,
};
use hivlp_storage::{Store, StoreOptions, Tier, file_stride, segment::vector_file_name};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FINE_DIM: usize = 48;
const ROWS: u64 = 100;
const DAMAGED_ID: u64 = 37;

fn schema(fine_type: ElemType) -> Schema {
    Schema {
        fine_dim: FINE_DIM,
        coarse_dim: 8,
        fine_type,
        coarse_type: ElemType::I8,
        metric: Metric::Cosine,
    }
}

fn fine(id: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(id);
    (0..FINE_DIM).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// The segment file holding the fine image vectors of `id`, and the byte offset of a value of
/// its row that, overwritten with NaN, makes the row's fine vector NaN: the first element
/// (`F32`, `F16`) or the row's scale (`I8`, stored after all rows; see storage/FORMAT.md).
fn damage_target(dir: &Path, fine_type: ElemType, id: u64) -> (std::path::PathBuf, u64) {
    let opts = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    let store = Store::open(dir, opts).unwrap();
    let view = store.view();
    let (source, row) = view.locate(id).unwrap();
    let segment = source.segment().expect("flushed into a segment");
    let file = dir.join(vector_file_name(segment.id(), Target::Image, Tier::Fine));
    let stride = file_stride(Tier::Fine, fine_type, FINE_DIM) as u64;
    let offset = match fine_type {
        ElemType::I8 => source.rows() as u64 * stride + row as u64 * 4,
        _ => row as u64 * stride,
    };
    (file, offset)
}

#[test]
fn a_nan_fine_vector_fails_the_search_naming_the_file() {
    for fine_type in [ElemType::F32, ElemType::F16, ElemType::I8] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = Database::create(&path, schema(fine_type), Options::default()).unwrap();
        let items = (0..ROWS)
            .map(|id| Item {
                id: Some(id),
                image: Some(Embedding {
                    fine: fine(id),
                    coarse: None,
                }),
                ..Item::default()
            })
            .collect();
        db.insert(items).unwrap();
        db.flush().unwrap();
        drop(db);

        let (file, offset) = damage_target(&path, fine_type, DAMAGED_ID);
        let nan: &[u8] = match fine_type {
            ElemType::F16 => &half::f16::NAN.to_le_bytes(),
            _ => &f32::NAN.to_le_bytes(),
        };
        let f = OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(nan, offset).unwrap();
        drop(f);

        // The default (cheap) verification opens the damaged database.
        let db = Database::open(&path, Options::default()).unwrap();
        let query = Query::new(fine(DAMAGED_ID));
        let params = SearchParams {
            k: 5,
            candidates: Some(ROWS as usize),
            ..SearchParams::default()
        };
        match db.search(&query, &params) {
            Err(Error::Corruption(c)) => {
                assert_eq!(c.file, file, "{fine_type:?}: {c}");
                assert_eq!(c.offset, offset, "{fine_type:?}: {c}");
            }
            other => panic!("{fine_type:?}: expected a corruption error, got {other:?}"),
        }
        // The batch path shares the re-rank.
        let batch = db.search_batch(&[query.clone(), query.clone()], &params);
        assert!(matches!(batch, Err(Error::Corruption(_))), "{batch:?}");
        // Queries whose candidates do not include the damaged row still work.
        let elsewhere = SearchParams {
            filter: Some(hivlp::Filter::Allow([1, 2, 3].into())),
            ..params.clone()
        };
        let hits = db.search(&query, &elsewhere).unwrap();
        assert_eq!(hits.len(), 3);
        assert!(hits.iter().all(|h| h.score.is_finite()));
    }
}
