//! Parity with the Python ONNX Runtime reference (`tests/fixtures/reference.json`, written by
//! `encoders/train/make_fixtures.py` from the committed default bundle): same preprocessing
//! (Pillow), same token ids, same embeddings.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hivlp_encoders::{Encoder, EncoderOptions, ImageInput};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Default options, except that a `--features cuda` build without a usable GPU falls back to CPU.
fn options() -> EncoderOptions {
    EncoderOptions {
        cpu_fallback: true,
        ..Default::default()
    }
}

/// fp32 image graph, PNG inputs: identical pixels, so only kernel-level float noise remains.
const IMAGE_TOLERANCE: f32 = 1e-4;
/// int8 text graph, one text per run as in the reference. The same ONNX Runtime version still
/// picks its int8 GEMM kernel by CPU: with AVX-512 VNNI (where the reference was written) the
/// products sum exactly, with plain AVX2 (`vpmaddubsw`) pairs of products saturate at `i16`, so
/// the vectors differ by up to 6.1e-2 per element (cosine 0.965, the empty caption) on an AVX2
/// EPYC, where Python's onnxruntime on the reference's token ids gives the same differences. A
/// pipeline bug (pooling, head, normalisation, token ids) moves them far more.
const TEXT_TOLERANCE: f32 = 1e-1;
const TEXT_MIN_COSINE: f32 = 0.95;
/// JPEG decoders differ (zune-jpeg here, libjpeg-turbo in Pillow) by ±1 on some pixels.
const JPEG_MIN_COSINE: f32 = 0.999;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn encoder() -> &'static Encoder {
    static ENCODER: OnceLock<Encoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        Encoder::load(&Encoder::default_bundle_dir(), options())
            .expect("the committed default bundle loads")
    })
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn fixtures_describe_the_committed_bundle() {
    let model = &reference()["model"];
    let dir = Encoder::default_bundle_dir();
    for (key, file) in [
        ("model_toml_sha256", "model.toml"),
        ("image_onnx_sha256", "image.onnx"),
        ("text_onnx_sha256", "text.onnx"),
        ("tokenizer_sha256", "tokenizer.json"),
    ] {
        assert_eq!(
            sha256_hex(&dir.join(file)),
            model[key].as_str().unwrap(),
            "{file} changed since reference.json was written: rerun encoders/train/make_fixtures.py"
        );
    }
    assert_eq!(encoder().info().name, model["name"].as_str().unwrap());
}

#[test]
fn image_preprocessing_matches_pillow() {
    for image in reference()["images"].as_array().unwrap() {
        let file = image["file"].as_str().unwrap();
        let path = fixtures().join(file);
        let x = encoder().preprocess_image(ImageInput::Path(&path)).unwrap();
        let stats = &image["pixel_values_stats"];
        let size = encoder().bundle().image().size as usize;
        let plane = size * size;
        let mean = x.iter().map(|v| f64::from(*v)).sum::<f64>() / x.len() as f64;
        let sum_abs = x.iter().map(|v| f64::from(v.abs())).sum::<f64>();
        let first_row_red: Vec<f32> = x[..8].to_vec();
        let center = size / 2 * size + size / 2;
        let center_rgb: Vec<f32> = (0..3).map(|c| x[c * plane + center]).collect();
        if file.ends_with(".png") {
            // Decoding PNG is lossless and the resampler is Pillow-exact: identical tensors.
            assert!(
                (mean - stats["mean"].as_f64().unwrap()).abs() < 1e-6,
                "{file}: mean {mean}"
            );
            assert!(
                (sum_abs - stats["sum_abs"].as_f64().unwrap()).abs() < 1e-2,
                "{file}: sum_abs {sum_abs}"
            );
            assert_eq!(first_row_red, floats(&stats["first_row_red_8"]), "{file}");
            assert_eq!(center_rgb, floats(&stats["center_rgb"]), "{file}");
        } else {
            assert!(
                (mean - stats["mean"].as_f64().unwrap()).abs() < 1e-2,
                "{file}: mean {mean}"
            );
        }
    }
}

#[test]
fn image_embeddings_match_python() {
    let images = reference()["images"].as_array().unwrap();
    let paths: Vec<PathBuf> = images
        .iter()
        .map(|i| fixtures().join(i["file"].as_str().unwrap()))
        .collect();
    let inputs: Vec<ImageInput<'_>> = paths.iter().map(|p| ImageInput::Path(p)).collect();
    // One batch for all: the image graph has no batch-dependent operators.
    let embeddings = encoder().encode_images(&inputs).unwrap();
    for (image, embedding) in images.iter().zip(&embeddings) {
        let file = image["file"].as_str().unwrap();
        let expected = floats(&image["embedding"]);
        let diff = max_abs_diff(&embedding.fine, &expected);
        let cos = cosine(&embedding.fine, &expected);
        eprintln!("{file}: max abs diff {diff:.2e}, cosine {cos:.7}");
        if file.ends_with(".png") {
            assert!(diff <= IMAGE_TOLERANCE, "{file}: max abs diff {diff}");
        } else {
            assert!(cos >= JPEG_MIN_COSINE, "{file}: cosine {cos}");
        }
        let coarse = embedding.coarse.as_ref().unwrap();
        let coarse_dim = encoder().info().coarse_dim.unwrap();
        let prefix_cos = cosine(coarse, &expected[..coarse_dim]);
        assert!(
            prefix_cos > 0.9999,
            "{file}: coarse is the prefix, renormalised"
        );
    }
}

#[test]
fn token_ids_match_python() {
    for text in reference()["texts"].as_array().unwrap() {
        let caption = text["text"].as_str().unwrap();
        let expected: Vec<u32> = text["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            encoder().token_ids(caption).unwrap(),
            expected,
            "{caption:?}"
        );
    }
    let padded = &reference()["text_batch"]["padded_input_ids"];
    let longest = padded[0].as_array().unwrap().len();
    let max_length = encoder().bundle().text().max_length;
    assert_eq!(
        longest, max_length,
        "the long caption is truncated to max_length"
    );
}

#[test]
fn text_embeddings_match_python() {
    for text in reference()["texts"].as_array().unwrap() {
        let caption = text["text"].as_str().unwrap();
        // One text per run, like the reference: the int8 graph quantises activations per
        // tensor, so a padded batch gives (slightly) different vectors.
        let embedding = &encoder().encode_texts(&[caption]).unwrap()[0];
        let expected = floats(&text["embedding"]);
        let diff = max_abs_diff(&embedding.fine, &expected);
        eprintln!(
            "{:?}: max abs diff {diff:.2e}, cosine {:.7}",
            caption.chars().take(24).collect::<String>(),
            cosine(&embedding.fine, &expected)
        );
        assert!(diff <= TEXT_TOLERANCE, "{caption:?}: max abs diff {diff}");
        let cos = cosine(&embedding.fine, &expected);
        assert!(cos >= TEXT_MIN_COSINE, "{caption:?}: cosine {cos}");
    }
}
