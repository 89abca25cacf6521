//! Replays the committed seed corpus (and any saved crash artifacts) through the fuzz
//! harnesses as a plain test, so `cargo test` catches a regression without cargo-fuzz, and a
//! file format change that leaves the seeds invalid (they must all be accepted) is noticed.

use std::fs;
use std::path::Path;

type Harness = fn(&[u8]) -> bool;

const TARGETS: [(&str, Harness); 6] = [
    ("wal_decode", hivlp_fuzz::wal_decode),
    ("manifest_decode", hivlp_fuzz::manifest_decode),
    ("segment_open", hivlp_fuzz::segment_open),
    ("store_ops", hivlp_fuzz::store_ops),
    ("image_decode", hivlp_fuzz::image_decode),
    ("bundle_manifest", hivlp_fuzz::bundle_manifest),
];

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn seeds_are_accepted_and_artifacts_do_not_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, harness) in TARGETS {
        let seeds = inputs(&root.join("corpus").join(target));
        assert!(!seeds.is_empty(), "no seed corpus for {target}");
        for (name, bytes) in &seeds {
            assert!(
                harness(bytes),
                "seed {name} is rejected: regenerate the corpus with \
                 `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus`"
            );
        }
        for (name, bytes) in inputs(&root.join("artifacts").join(target)) {
            println!("replaying {name}");
            harness(&bytes);
        }
        println!("{target}: {} seeds accepted", seeds.len());
    }
}

/// Every truncation and single-byte flip of every seed: the cheap, deterministic cousin of a
/// fuzz run.
#[test]
fn damaged_seeds_do_not_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, harness) in TARGETS {
        for (_, seed) in inputs(&root.join("corpus").join(target)) {
            let step = (seed.len() / 64).max(1);
            for at in (2..seed.len()).step_by(step) {
                harness(&seed[..at]);
                let mut flipped = seed.clone();
                flipped[at] ^= 0x5A;
                harness(&flipped);
            }
        }
    }
}
