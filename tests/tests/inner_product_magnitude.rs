//! Inner-product databases store vectors as given, and derive coarse vectors by projecting
//! them. A vector too long for that arithmetic must be refused at insert with a typed error;
//! before, such rows were accepted and then made the PCA refit produce infinite coarse values,
//! so every compaction (and every insert that triggered a refit) failed forever, and an `f16`
//! coarse tier silently stored infinities.
//!
//! Every accepted row's coarse vector stays finite and storable under any projection, so the
//! refit at compaction always finishes.

use hivlp::{
    CoarseDerivation, Database, ElemType, Embedding, Error, InvalidInput, Item, Metric, Options,
    Query, Schema, SearchParams, Tier,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FINE_DIM: usize = 16;
const ROWS: usize = 222;
/// The norm up to which every inner-product vector is accepted (`f32` coarse tier).
const MAX_NORM: f64 = 4_611_686_018_427_387_904.0; // 2^62

fn schema(coarse_type: ElemType) -> Schema {
    Schema {
        fine_dim: FINE_DIM,
        coarse_dim: 4,
        fine_type: ElemType::F32,
        coarse_type,
        metric: Metric::InnerProduct,
    }
}

/// A random direction scaled to about `norm` (values clamped to the finite `f32` range).
fn vector_of_norm(rng: &mut StdRng, norm: f64) -> Vec<f32> {
    let raw: Vec<f64> = (0..FINE_DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
    let len = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
    raw.iter()
        .map(|v| ((v / len * norm) as f32).clamp(-f32::MAX, f32::MAX))
        .collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
}

/// Inserts `ROWS` rows one by one with norms `norm_of(i)`, enough for the PCA fit at insert
/// (`projection_fit_rows`), then compacts (the refit). Rows with norm up to `accepted` must be
/// stored, rows above `refused` refused with `ItemNorm`; between, either.
fn insert_and_refit(
    coarse_type: ElemType,
    norm_of: impl Fn(usize) -> f64,
    accepted: f64,
    refused: f64,
) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        projection_fit_rows: 64,
        threads: Some(1),
        ..Options::default()
    };
    let db = Database::create(dir.path().join("db"), schema(coarse_type), opts).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut stored = Vec::new();
    for i in 0..ROWS {
        let fine = vector_of_norm(&mut rng, norm_of(i));
        let n = norm(&fine);
        let item = Item {
            image: Some(Embedding {
                fine: fine.clone(),
                coarse: None,
            }),
            ..Item::default()
        };
        match db.insert(vec![item]) {
            Ok(ids) => {
                assert!(n <= refused, "row {i} of norm {n:e} was accepted");
                stored.push((ids[0], fine));
            }
            Err(Error::InvalidInput(InvalidInput::ItemNorm {
                item: 0,
                tier: Tier::Fine,
                norm,
                max,
                ..
            })) => {
                assert!(n > accepted, "row {i} of norm {n:e} was refused");
                assert!(norm > max && max >= accepted, "{norm:e} > {max:e}");
            }
            Err(e) => panic!("row {i} of norm {n:e}: {e}"),
        }
        assert_eq!(
            db.len().unwrap(),
            stored.len(),
            "a refused insert stored nothing"
        );
    }
    assert!(stored.len() > 64, "the PCA fit at insert ran");
    assert_eq!(db.stats().unwrap().coarse[0], CoarseDerivation::Pca);

    db.compact().unwrap();
    for (id, _) in &stored {
        let coarse = db.get(*id).unwrap().unwrap().image.unwrap().coarse.unwrap();
        assert!(coarse.iter().all(|v| v.is_finite()), "id {id}: {coarse:?}");
    }
    // The longest accepted vector as a query: finite scores, and re-ranking every row is the
    // exact search.
    let (_, longest) = stored
        .iter()
        .max_by(|a, b| norm(&a.1).total_cmp(&norm(&b.1)))
        .unwrap();
    let query = Query::new(longest.clone());
    let all = SearchParams {
        k: 10,
        candidates: Some(ROWS),
        ..SearchParams::default()
    };
    let hits = db.search(&query, &all).unwrap();
    let exact = db
        .search(&query, &SearchParams { exact: true, ..all })
        .unwrap();
    assert_eq!(hits, exact);
    assert!(hits.iter().all(|h| h.score.is_finite()), "{hits:?}");
}

#[test]
fn huge_vectors_are_refused_and_the_refit_finishes() {
    // Norms from 1e3 to 1e39 (values up to f32::MAX).
    insert_and_refit(
        ElemType::F32,
        |i| 10f64.powi(3 + (i % 37) as i32),
        MAX_NORM,
        MAX_NORM,
    );
}

#[test]
fn an_f16_coarse_tier_bounds_the_fine_norm_by_its_range() {
    // Norms from 1 to about 1e6: an f16 coarse value holds at most 65504.
    insert_and_refit(
        ElemType::F16,
        |i| 10f64.powf((i % 37) as f64 / 6.0),
        32_768.0,
        f64::from(f32::from(half::f16::MAX)),
    );
}

#[test]
fn a_query_too_long_to_score_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(
        dir.path().join("db"),
        schema(ElemType::I8),
        Options::default(),
    )
    .unwrap();
    let mut query = vec![0.0; FINE_DIM];
    query[3] = 1e30;
    assert!(matches!(
        db.search(&Query::new(query), &SearchParams::default()),
        Err(Error::InvalidInput(InvalidInput::QueryNorm {
            tier: Tier::Fine,
            ..
        }))
    ));
}
