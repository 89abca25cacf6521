//! Storage throughput: appends in both durability modes (one row per call and 256-row
//! batches) and compaction. Quick by design (small samples); figures and the command to
//! reproduce them are in `benches/README.md`, section "Storage".
//!
//! Rows carry both modalities at the default model's shape (fine 256-d f32, coarse 64-d f32)
//! plus a short caption, URI and metadata. Throughput is reported in rows/s; the bench prints
//! the input and WAL bytes per row to turn that into MB/s.

use std::cell::Cell;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hivlp_storage::{
    Durability, ElemType, MergeAll, Metric, Row, Schema, Store, StoreOptions, TierVectors,
};

const FINE_DIM: usize = 256;
const COARSE_DIM: usize = 64;

fn schema() -> Schema {
    Schema {
        fine_dim: FINE_DIM,
        coarse_dim: COARSE_DIM,
        fine_type: ElemType::F32,
        coarse_type: ElemType::F32,
        metric: Metric::InnerProduct,
    }
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift; the bench must not measure an RNG).
fn vector(dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn row(id: u64) -> Row {
    let tier = |salt: u64| TierVectors {
        coarse: vector(COARSE_DIM, id * 4 + salt),
        fine: vector(FINE_DIM, id * 4 + salt + 1),
    };
    Row {
        id,
        caption: Some(format!("a photo of item number {id}")),
        uri: Some(format!("images/{id:08}.jpg")),
        metadata: id.to_le_bytes().to_vec(),
        image: Some(tier(0)),
        text: Some(tier(2)),
    }
}

/// Bytes of vectors handed to `insert` per row (both modalities, both tiers, as f32).
const INPUT_VECTOR_BYTES: usize = 2 * (FINE_DIM + COARSE_DIM) * 4;

fn options(durability: Durability) -> StoreOptions {
    StoreOptions {
        durability,
        ..StoreOptions::default()
    }
}

fn report_row_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(
        dir.path().join("db"),
        schema(),
        options(Durability::Buffered),
    )
    .unwrap();
    let before = store.stats().unwrap().wal_bytes;
    store.insert((0..1000).map(row).collect()).unwrap();
    let wal_per_row = (store.stats().unwrap().wal_bytes - before) as f64 / 1000.0;
    println!(
        "row size: {INPUT_VECTOR_BYTES} bytes of input vectors, {wal_per_row:.0} bytes of WAL \
         (MB/s = rows/s × bytes / 1e6)"
    );
}

fn append(c: &mut Criterion) {
    report_row_sizes();
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (mode, durability) in [
        ("sync", Durability::Sync),
        ("buffered", Durability::Buffered),
    ] {
        for batch in [1u64, 256] {
            let dir = tempfile::tempdir().unwrap();
            let store =
                Store::create(dir.path().join("db"), schema(), options(durability)).unwrap();
            let next = Cell::new(0u64);
            group.throughput(Throughput::Elements(batch));
            group.bench_function(format!("{mode}/batch-{batch}"), |b| {
                b.iter_batched(
                    || {
                        let first = next.get();
                        next.set(first + batch);
                        (first..first + batch).map(row).collect::<Vec<_>>()
                    },
                    |rows| store.insert(rows).unwrap(),
                    BatchSize::SmallInput,
                );
            });
        }
    }
    group.finish();
}

/// Segments of `SEGMENT_ROWS` rows, every other row deleted: compaction reads all of them and
/// writes the live half into one segment.
const SEGMENTS: u64 = 8;
const SEGMENT_ROWS: u64 = 5_000;

fn compaction_input() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(
        dir.path().join("db"),
        schema(),
        options(Durability::Buffered),
    )
    .unwrap();
    for s in 0..SEGMENTS {
        let ids = s * SEGMENT_ROWS..(s + 1) * SEGMENT_ROWS;
        store.insert(ids.map(row).collect()).unwrap();
        store.flush().unwrap();
    }
    let doomed: Vec<u64> = (0..SEGMENTS * SEGMENT_ROWS)
        .filter(|id| id % 2 == 1)
        .collect();
    store.delete(&doomed).unwrap();
    store.flush().unwrap();
    (dir, store)
}

fn compaction(c: &mut Criterion) {
    let mut group = c.benchmark_group("compaction");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let (_dir, store) = compaction_input();
    let bytes = store.stats().unwrap().disk_bytes;
    println!(
        "compaction input: {SEGMENTS} segments × {SEGMENT_ROWS} rows, half deleted, {bytes} bytes \
         on disk"
    );
    drop(store);
    group.throughput(Throughput::Elements(SEGMENTS * SEGMENT_ROWS));
    group.bench_function("merge-all/40k-rows-half-deleted", |b| {
        b.iter_batched(
            compaction_input,
            |(dir, store)| {
                let report = store.compact(&MergeAll, None).unwrap();
                assert_eq!(report.segments_written, 1);
                (dir, store)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, append, compaction);
criterion_main!(benches);
