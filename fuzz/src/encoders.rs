//! Harnesses of hivlp-encoders' decoders of bytes from users: image files (every format the
//! encoder accepts) and bundle manifests (`model.toml`). Neither needs ONNX Runtime.
//!
//! `image_tensor` turns a decoder panic into `ImageFailure::Corrupt`, so a plain test cannot
//! see one; under cargo-fuzz, libFuzzer's panic hook aborts before the unwind is caught, so
//! the fuzzer still reports every panic (in the `image` crate or in the resampler) as a crash.

use std::path::{Component, Path};
use std::sync::OnceLock;

use hivlp_encoders::{
    Bundle, ChannelOrder, ImageSpec, Interpolation, Layout, OutputNames, ResizeMode, image_tensor,
};

/// The committed default bundle's manifest, whose `[image]` table the image harness starts
/// from.
pub const DEFAULT_MANIFEST: &str = include_str!("../../encoders/models/default/model.toml");

/// Most pixels the image harness decodes: every format's code paths are reachable well below
/// it, and a decoded image stays far under libFuzzer's RSS limit with AddressSanitizer.
pub const IMAGE_MAX_PIXELS: u64 = 4_000_000;

/// Side of the square used instead of the bundle's when the image selector asks for it: small
/// and odd, so that crops land on uneven offsets.
pub const SMALL_SIZE: u32 = 5;

/// A small real image that the bundle harness preprocesses with every accepted `[image]` table
/// whose size is at most [`SMALL_SIZE_LIMIT`].
const PROBE_PNG: &[u8] = include_bytes!("../../encoders/tests/fixtures/image_wide.png");
const SMALL_SIZE_LIMIT: u32 = 64;

fn default_image_spec() -> &'static ImageSpec {
    static SPEC: OnceLock<ImageSpec> = OnceLock::new();
    SPEC.get_or_init(|| {
        Bundle::parse(DEFAULT_MANIFEST, Path::new("default"))
            .expect("the default model.toml is valid")
            .image()
            .clone()
    })
}

/// The preprocessing an image input selects with its first byte: bit 0 stretch instead of
/// shorter-side resize, bits 1–2 the interpolation (mod 3), bit 3 BGR, bit 4 a
/// [`SMALL_SIZE`] square instead of the bundle's size.
pub fn image_spec(selector: u8) -> ImageSpec {
    let mut spec = default_image_spec().clone();
    if selector & 1 != 0 {
        spec.resize = ResizeMode::Stretch;
    }
    spec.interpolation = [
        Interpolation::Nearest,
        Interpolation::Triangle,
        Interpolation::CatmullRom,
    ][usize::from((selector >> 1) & 3) % 3];
    if selector & 8 != 0 {
        spec.channel_order = ChannelOrder::Bgr;
    }
    if selector & 16 != 0 {
        spec.size = SMALL_SIZE;
    }
    spec
}

/// Checks a preprocessed image against `spec`: the documented length, and every value within
/// the range that `(x / 255 - mean) / std` gives for `x` in `0..=255`.
fn check_tensor(tensor: &[f32], spec: &ImageSpec) {
    assert_eq!(
        tensor.len(),
        3 * (spec.size as usize).pow(2),
        "tensor length"
    );
    let plane = tensor.len() / 3;
    for (c, values) in tensor.chunks_exact(plane.max(1)).enumerate() {
        let rgb = match spec.channel_order {
            ChannelOrder::Rgb => c,
            ChannelOrder::Bgr => 2 - c,
        };
        let ends = [0.0f32, 1.0].map(|x| (x - spec.mean[rgb]) / spec.std[rgb]);
        let (lo, hi) = (ends[0].min(ends[1]), ends[0].max(ends[1]));
        for &v in values {
            assert!(v.is_finite(), "non-finite tensor value {v}");
            assert!(lo <= v && v <= hi, "tensor value {v} outside {lo}..={hi}");
        }
    }
}

/// Image decode and preprocessing: `[selector u8]` (see [`image_spec`]) then the image file.
pub fn image_decode(data: &[u8]) -> bool {
    let Some((&selector, bytes)) = data.split_first() else {
        return false;
    };
    let spec = image_spec(selector);
    match image_tensor(bytes, &spec, IMAGE_MAX_PIXELS) {
        Ok(tensor) => {
            check_tensor(&tensor, &spec);
            true
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
            false
        }
    }
}

/// `model.toml` parsing and validation; an accepted manifest must satisfy what the encoder
/// relies on, and (when its image size is small) preprocess a real image into a finite tensor.
pub fn bundle_manifest(data: &[u8]) -> bool {
    let Ok(source) = std::str::from_utf8(data) else {
        return false;
    };
    let bundle = match Bundle::parse(source, Path::new("bundle")) {
        Ok(bundle) => bundle,
        Err(e) => {
            std::hint::black_box(e.to_string());
            return false;
        }
    };
    let info = bundle.info();
    assert!((1..=1 << 16).contains(&info.fine_dim), "fine_dim");
    match (info.layout, info.coarse_dim) {
        (Layout::FineOnly, None) => {}
        (Layout::Matryoshka, Some(d)) => assert!((1..=info.fine_dim).contains(&d), "coarse_dim"),
        (Layout::Separate, Some(d)) => assert!((1..=1 << 16).contains(&d), "coarse_dim"),
        (layout, coarse) => panic!("layout {layout} with coarse_dim {coarse:?}"),
    }
    for outputs in [&bundle.image().outputs, &bundle.text().outputs] {
        match (info.layout, outputs) {
            (Layout::Separate, OutputNames::Separate { coarse, fine }) => {
                assert!(!coarse.is_empty() && !fine.is_empty(), "empty output name");
            }
            (Layout::Matryoshka | Layout::FineOnly, OutputNames::Single(name)) => {
                assert!(!name.is_empty(), "empty output name");
            }
            (layout, outputs) => panic!("layout {layout} with outputs {outputs:?}"),
        }
    }
    for file in [
        &bundle.image().onnx,
        &bundle.text().onnx,
        &bundle.text().tokenizer,
    ] {
        let mut parts = file.components();
        let inside = parts.next() == Some(Component::Normal("bundle".as_ref()))
            && parts.all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        assert!(inside, "{} leaves the bundle directory", file.display());
    }
    let image = bundle.image();
    assert!((1..=4096).contains(&image.size), "image.size");
    assert!(image.std.iter().all(|s| s.is_normal()), "image.std");
    assert!(image.mean.iter().all(|m| m.is_finite()), "image.mean");
    let text = bundle.text();
    assert!((2..=8192).contains(&text.max_length), "text.max_length");
    assert!(
        image.max_batch_size != Some(0) && text.max_batch_size != Some(0),
        "max_batch_size"
    );
    if image.size <= SMALL_SIZE_LIMIT {
        let tensor = image_tensor(PROBE_PNG, image, IMAGE_MAX_PIXELS)
            .expect("the probe image decodes with any accepted [image] table");
        check_tensor(&tensor, image);
    }
    true
}
