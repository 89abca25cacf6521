//! Encoder throughput: images/s and captions/s at batch 1 and 32, with the bundled
//! default model on the bundled demo data (128×128 clip-art PNGs and their captions).
//!
//! `cargo bench -p hivlp-benches --bench encoders`. Images are measured end to end (PNG decode,
//! Pillow-exact resize, normalisation, graph run); captions include tokenization.

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hivlp_encoders::{Encoder, EncoderOptions, ImageInput};

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo")
}

/// The first `n` demo images (encoded bytes, read once) and their captions.
fn demo(n: usize) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(demo_dir())
        .expect("data/demo")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    pngs.truncate(n);
    let images = pngs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let captions = pngs
        .iter()
        .map(|p| std::fs::read_to_string(p.with_extension("txt")).unwrap_or_default())
        .map(|c| c.lines().next().unwrap_or_default().to_string())
        .collect();
    (images, captions)
}

fn encoders(c: &mut Criterion) {
    // CPU unless built with `--features hivlp-encoders/cuda`; the provider names the groups.
    let encoder = Encoder::load(&Encoder::default_bundle_dir(), EncoderOptions::default())
        .expect("default bundle");
    let provider = encoder.provider();
    let (images, captions) = demo(32);
    for batch in [1usize, 32] {
        let inputs: Vec<ImageInput<'_>> = images[..batch]
            .iter()
            .map(|b| ImageInput::Bytes(b))
            .collect();
        let mut group = c.benchmark_group(format!("encoders/{provider}/images"));
        group.throughput(Throughput::Elements(batch as u64));
        group.sample_size(if batch == 1 { 100 } else { 20 });
        group.bench_function(format!("batch{batch}"), |b| {
            b.iter(|| encoder.encode_images(&inputs).unwrap())
        });
        group.finish();

        let texts: Vec<&str> = captions[..batch].iter().map(String::as_str).collect();
        let mut group = c.benchmark_group(format!("encoders/{provider}/texts"));
        group.throughput(Throughput::Elements(batch as u64));
        group.sample_size(if batch == 1 { 100 } else { 20 });
        group.bench_function(format!("batch{batch}"), |b| {
            b.iter(|| encoder.encode_texts(&texts).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, encoders);
criterion_main!(benches);
