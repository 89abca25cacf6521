//! Criterion micro-benchmarks of search over 100k synthetic rows (fine 512-d, coarse 64-d):
//! one two-stage query per coarse element type, a batch, and the flat exact scan.
//! `cargo bench -p hivlp-benches --bench search`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hivlp::{ElemType, SearchParams};
use hivlp_benches::search::{build, queries};

const ROWS: u64 = 100_000;

fn search(c: &mut Criterion) {
    let queries = queries(100);
    let mut group = c.benchmark_group("search_100k");
    for elem in [ElemType::F32, ElemType::F16, ElemType::I8] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = build(&dir.path().join("db"), elem, ROWS, 2).expect("build");
        let name = format!("{elem:?}").to_lowercase();
        let params = SearchParams::default();
        let mut next = queries.iter().cycle();
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("query", &name), |b| {
            b.iter(|| black_box(db.search(next.next().expect("cycle"), &params)))
        });
        group.throughput(Throughput::Elements(queries.len() as u64));
        group.bench_function(BenchmarkId::new("batch100", &name), |b| {
            b.iter(|| black_box(db.search_batch(&queries, &params)))
        });
        if elem == ElemType::I8 {
            let exact = SearchParams {
                exact: true,
                ..SearchParams::default()
            };
            group.throughput(Throughput::Elements(1));
            group.bench_function("exact_f32_512", |b| {
                b.iter(|| black_box(db.search(next.next().expect("cycle"), &exact)))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = search
}
criterion_main!(benches);
