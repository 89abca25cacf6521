//! The `separate` layout and both metrics, on two tiny graphs with known weights
//! (`tests/data/make_tiny_graphs.py`): the vectors must be exactly the graphs' outputs, split and
//! normalised as `model.toml` says.

use std::path::{Path, PathBuf};

use hivlp_encoders::{Encoder, EncoderError, EncoderOptions, ImageInput, Layout, Metric};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A `separate` bundle over (copies of) the tiny graphs and the default bundle's tokenizer.
fn tiny_bundle(metric: &str, coarse_dim: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (from, name) in [
        (data("tiny_image.onnx"), "image.onnx"),
        (data("tiny_text.onnx"), "text.onnx"),
        (
            Encoder::default_bundle_dir().join("tokenizer.json"),
            "tokenizer.json",
        ),
    ] {
        std::fs::copy(from, dir.path().join(name)).unwrap();
    }
    let manifest = format!(
        r#"name = "tiny"
version = "1"
fine_dim = 8
coarse_dim = {coarse_dim}
layout = "separate"
metric = "{metric}"

[image]
onnx = "image.onnx"
input = "pixels"
coarse_output = "coarse"
fine_output = "fine"
size = 16
resize = "stretch"
interpolation = "nearest"
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]

[text]
onnx = "text.onnx"
tokenizer = "tokenizer.json"
input_ids = "ids"
attention_mask = "mask"
coarse_output = "coarse"
fine_output = "fine"
max_length = 16
"#
    );
    std::fs::write(dir.path().join("model.toml"), manifest).unwrap();
    dir
}

fn load(dir: &Path) -> Result<Encoder, EncoderError> {
    let options = EncoderOptions {
        cpu_fallback: true,
        ..Default::default()
    };
    Encoder::load(dir, options)
}

/// `x @ w` for a row vector and a row-major `rows × cols` matrix given as its formula.
fn times(x: &[f32], cols: usize, w: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    (0..cols)
        .map(|c| x.iter().enumerate().map(|(r, v)| v * w(r, c)).sum())
        .collect()
}

fn image_weights() -> (impl Fn(usize, usize) -> f32, impl Fn(usize, usize) -> f32) {
    (
        |r, c| (r * 8 + c) as f32 / 10.0 - 1.0,
        |r, c| (r * 4 + c) as f32 / 5.0 - 1.0,
    )
}

fn text_weights() -> (impl Fn(usize, usize) -> f32, impl Fn(usize, usize) -> f32) {
    (
        |r, c| (r * 8 + c) as f32 / 8.0 - 1.0,
        |r, c| (r * 4 + c) as f32 / 4.0 - 1.0,
    )
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

fn solid_png(rgb: [u8; 3]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(RgbImage::from_pixel(23, 17, Rgb(rgb)))
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[test]
fn separate_layout_with_inner_product_passes_outputs_through() {
    let dir = tiny_bundle("inner_product", 4);
    let encoder = load(dir.path()).unwrap();
    let info = encoder.info();
    assert_eq!(
        (info.layout, info.metric),
        (Layout::Separate, Metric::InnerProduct)
    );
    assert_eq!((info.fine_dim, info.coarse_dim), (8, Some(4)));

    let colours = [[255, 0, 0], [12, 200, 99]];
    let pngs: Vec<Vec<u8>> = colours.iter().map(|c| solid_png(*c)).collect();
    let inputs: Vec<ImageInput<'_>> = pngs.iter().map(|p| ImageInput::Bytes(p)).collect();
    let embeddings = encoder.encode_images(&inputs).unwrap();
    let (fine_w, coarse_w) = image_weights();
    for (colour, e) in colours.iter().zip(&embeddings) {
        let mean: Vec<f32> = colour.iter().map(|v| f32::from(*v) / 255.0).collect();
        assert_close(&e.fine, &times(&mean, 8, &fine_w), "image fine");
        assert_close(
            e.coarse.as_ref().unwrap(),
            &times(&mean, 4, &coarse_w),
            "image coarse",
        );
    }

    let captions = ["a red apple", ""];
    let embeddings = encoder.encode_texts(&captions).unwrap();
    let (fine_w, coarse_w) = text_weights();
    for (caption, e) in captions.iter().zip(&embeddings) {
        let ids = encoder.token_ids(caption).unwrap();
        let t = [ids.len() as f32, ids.iter().sum::<u32>() as f32 / 1000.0];
        assert_close(&e.fine, &times(&t, 8, &fine_w), caption);
        assert_close(
            e.coarse.as_ref().unwrap(),
            &times(&t, 4, &coarse_w),
            caption,
        );
    }
}

#[test]
fn separate_layout_with_cosine_normalises_both() {
    let dir = tiny_bundle("cosine", 4);
    let encoder = load(dir.path()).unwrap();
    let png = solid_png([12, 200, 99]);
    let e = &encoder.encode_images(&[ImageInput::Bytes(&png)]).unwrap()[0];
    let mean = [12.0 / 255.0, 200.0 / 255.0, 99.0 / 255.0];
    let (fine_w, coarse_w) = image_weights();
    assert_close(&e.fine, &normalised(times(&mean, 8, &fine_w)), "fine");
    assert_close(
        e.coarse.as_ref().unwrap(),
        &normalised(times(&mean, 4, &coarse_w)),
        "coarse",
    );
}

#[test]
fn coarse_width_must_match_the_graph() {
    let dir = tiny_bundle("cosine", 5);
    match load(dir.path()) {
        Err(EncoderError::Graph { key, message, .. }) => {
            assert_eq!(key, "image.coarse_output");
            assert!(message.contains('4') && message.contains('5'), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
