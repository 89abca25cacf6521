//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::Path;

use hivlp::synthetic::Clustered;
use hivlp::{Database, Durability, ElemType, Embedding, Item, Metric, Options, Schema};

pub const FINE: usize = 128;
pub const COARSE: usize = 16;

pub fn schema(coarse_type: ElemType) -> Schema {
    Schema {
        fine_dim: FINE,
        coarse_dim: COARSE,
        fine_type: ElemType::F32,
        coarse_type,
        metric: Metric::Cosine,
    }
}

pub fn options() -> Options {
    Options {
        durability: Durability::Buffered,
        threads: Some(2),
        ..Options::default()
    }
}

pub fn generator() -> Clustered {
    Clustered::new(FINE, COARSE, 50, 1.0, 7)
}

/// Items `range` of the generator as image items; with `coarse`, the generator's coarse
/// vectors are supplied, else only fine vectors.
pub fn items(range: std::ops::Range<u64>, coarse: bool) -> Vec<Item> {
    generator()
        .pairs(0, range.clone())
        .into_iter()
        .zip(range)
        .map(|(p, id)| Item {
            id: Some(id),
            caption: Some(format!("item {id}")),
            image: Some(Embedding {
                fine: p.fine,
                coarse: coarse.then_some(p.coarse),
            }),
            ..Item::default()
        })
        .collect()
}

pub fn create(dir: &Path, coarse_type: ElemType) -> Database {
    Database::create(dir.join("db"), schema(coarse_type), options()).expect("create")
}
