//! From image bytes to the image tower's input: decode (JPEG, PNG, WebP, GIF first frame, BMP),
//! apply the EXIF orientation, composite alpha onto the bundle's background, resize and crop as
//! `model.toml` says (Pillow-exact, see [`crate::resample`]), scale, normalise, lay out NCHW.

use std::io::Cursor;
use std::panic::AssertUnwindSafe;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use crate::bundle::{ChannelOrder, ImageSpec, ResizeMode};
use crate::error::ImageFailure;
use crate::resample::{Rgb8, resize_window};

/// The image tower's input for one encoded image (JPEG, PNG, WebP, GIF, BMP): float32 CHW,
/// `3 × size × size`, exactly what [`Encoder::encode_images`](crate::Encoder::encode_images)
/// feeds the graph. Needs no ONNX Runtime, so it can vet untrusted images cheaply.
///
/// ```
/// use hivlp_encoders::{Bundle, Encoder, ImageFailure, image_tensor, DEFAULT_MAX_PIXELS};
/// let bundle = Bundle::open(&Encoder::default_bundle_dir())?;
/// let png = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/image_tall.png"))?;
/// let x = image_tensor(&png, bundle.image(), DEFAULT_MAX_PIXELS)?;
/// assert_eq!(x.len(), 3 * (bundle.image().size as usize).pow(2));
/// assert!(matches!(image_tensor(&png[..40], bundle.image(), DEFAULT_MAX_PIXELS), Err(ImageFailure::Corrupt(_))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn image_tensor(
    bytes: &[u8],
    spec: &ImageSpec,
    max_pixels: u64,
) -> Result<Vec<f32>, ImageFailure> {
    let size = spec.size as usize;
    let mut out = vec![0f32; 3 * size * size];
    prepare_into(bytes, spec, max_pixels, &mut out)?;
    Ok(out)
}

/// [`image_tensor`] into a caller's slice of `3 × size × size` floats.
pub(crate) fn prepare_into(
    bytes: &[u8],
    spec: &ImageSpec,
    max_pixels: u64,
    out: &mut [f32],
) -> Result<(), ImageFailure> {
    // Decoders of untrusted bytes must not take the process down: a panic is a corrupt image.
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let image = decode(bytes, max_pixels, spec.background)?;
        write_tensor(&image, spec, out);
        Ok(())
    }))
    .unwrap_or_else(|_| {
        Err(ImageFailure::Corrupt(
            "the decoder failed on malformed data".into(),
        ))
    })
}

/// Decodes `bytes` into an upright RGB image with alpha composited onto `background`.
/// Images whose header announces more than `max_pixels` pixels are refused before any pixel
/// data is decoded.
fn decode(bytes: &[u8], max_pixels: u64, background: [u8; 3]) -> Result<Rgb8, ImageFailure> {
    if bytes.is_empty() {
        return Err(ImageFailure::Empty);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageFailure::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ImageFailure::UnknownFormat);
    }
    // Decoders may allocate a little beyond the output (row buffers, palettes); 8 bytes per pixel
    // covers 16-bit RGBA output.
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(limits);
    let format = reader.format();
    let mut decoder = reader.into_decoder().map_err(failure)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageFailure::Corrupt(format!(
            "header declares a {width}x{height} image"
        )));
    }
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageFailure::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    // The JPEG decoder fills in missing scan data silently; refuse truncated files instead of
    // encoding a half-grey picture.
    if format == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(ImageFailure::Corrupt(
            "JPEG data ends before its end-of-image marker".into(),
        ));
    }
    // A broken EXIF block should not make an otherwise fine image unusable.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(failure)?;
    image.apply_orientation(orientation);
    Ok(flatten(image, background))
}

/// Walks a JPEG's marker segments (skipping entropy-coded scan data, where 0xFF is always
/// followed by 0x00 or a restart marker) and reports whether an end-of-image marker is reached
/// before the data runs out.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const SOS: u8 = 0xda;
    const EOI: u8 = 0xd9;
    let mut pos = 2; // after SOI
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while bytes.get(pos) == Some(&0xff) && bytes.get(pos + 1) == Some(&0xff) {
            pos += 1;
        }
        let (Some(&0xff), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            return false;
        };
        pos += 2;
        match marker {
            EOI => return true,
            0x01 | 0xd0..=0xd7 => continue, // standalone markers
            _ => {}
        }
        let Some(len) = bytes
            .get(pos..pos + 2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
            return false;
        };
        pos += len;
        if marker == SOS {
            // Entropy-coded data runs to the next marker that is not a stuffed byte or RSTn.
            loop {
                match (bytes.get(pos), bytes.get(pos + 1)) {
                    (Some(&0xff), Some(&next)) if next == 0x00 || (0xd0..=0xd7).contains(&next) => {
                        pos += 2
                    }
                    (Some(&0xff), Some(_)) => break,
                    (Some(_), _) => pos += 1,
                    (None, _) => return false,
                }
            }
        }
    }
}

fn failure(error: ImageError) -> ImageFailure {
    match error {
        ImageError::Unsupported(e) => ImageFailure::Unsupported(e.to_string()),
        ImageError::Limits(e) => ImageFailure::LimitExceeded(e.to_string()),
        ImageError::IoError(e) => ImageFailure::Corrupt(e.to_string()),
        other => ImageFailure::Corrupt(other.to_string()),
    }
}

/// RGBA → RGB over an opaque background, with Pillow's `alpha_composite` integer arithmetic
/// (the training pipeline composites with Pillow).
fn flatten(image: DynamicImage, background: [u8; 3]) -> Rgb8 {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels = if image.color().has_alpha() {
        let rgba = image.into_rgba8();
        let mut rgb = Vec::with_capacity(width * height * 3);
        for p in rgba.as_raw().chunks_exact(4) {
            rgb.extend_from_slice(&composite_over_opaque([p[0], p[1], p[2]], p[3], background));
        }
        rgb
    } else {
        image.into_rgb8().into_raw()
    };
    Rgb8 {
        width,
        height,
        pixels,
    }
}

/// Pillow's `ImagingAlphaComposite` for an opaque destination.
fn composite_over_opaque(src: [u8; 3], alpha: u8, dst: [u8; 3]) -> [u8; 3] {
    const PRECISION_BITS: u32 = 7;
    if alpha == 0 {
        return dst;
    }
    let a = u32::from(alpha);
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let shift_for_div255 = |v: u32| ((v >> 8) + v) >> 8;
    std::array::from_fn(|c| {
        let t = u32::from(src[c]) * coef1 + u32::from(dst[c]) * coef2;
        (shift_for_div255(t + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8
    })
}

/// The size the image is resized to before cropping, and the crop offset, as the training
/// pipeline computes them (Python's `round`, i.e. half to even).
fn geometry(
    width: usize,
    height: usize,
    size: usize,
    mode: ResizeMode,
) -> ((usize, usize), (usize, usize)) {
    match mode {
        ResizeMode::Stretch => ((size, size), (0, 0)),
        ResizeMode::ShorterSide => {
            let scaled = |long: usize, short: usize| {
                ((long * size) as f64 / short as f64)
                    .round_ties_even()
                    .max(size as f64) as usize
            };
            let (w, h) = if width <= height {
                (size, scaled(height, width))
            } else {
                (scaled(width, height), size)
            };
            ((w, h), ((w - size) / 2, (h - size) / 2))
        }
    }
}

/// Resizes, crops and normalises one decoded image into `out`, which holds `3 * size * size`
/// floats in CHW order.
fn write_tensor(image: &Rgb8, spec: &ImageSpec, out: &mut [f32]) {
    let size = spec.size as usize;
    let (target, (left, top)) = geometry(image.width, image.height, size, spec.resize);
    let square = resize_window(
        image,
        target,
        left..left + size,
        top..top + size,
        spec.interpolation,
    );
    let plane = size * size;
    debug_assert_eq!(out.len(), 3 * plane);
    debug_assert_eq!(square.pixels.len(), 3 * plane);
    for (i, p) in square.pixels.chunks_exact(3).enumerate() {
        for (source, ((&value, mean), std)) in p.iter().zip(spec.mean).zip(spec.std).enumerate() {
            let channel = match spec.channel_order {
                ChannelOrder::Rgb => source,
                ChannelOrder::Bgr => 2 - source,
            };
            // Same float32 operations as numpy: x / 255, then (x - mean) / std.
            out[channel * plane + i] = (f32::from(value) / 255.0 - mean) / std;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_composite_is_identity_and_transparent_is_background() {
        for v in 0..=255u8 {
            assert_eq!(
                composite_over_opaque([v, v, 255 - v], 255, [1, 2, 3]),
                [v, v, 255 - v]
            );
            assert_eq!(composite_over_opaque([v, v, v], 0, [1, 2, 3]), [1, 2, 3]);
        }
        // Half-transparent black over white: Pillow gives 127 (255 * (1 - 128/255) rounded).
        assert_eq!(
            composite_over_opaque([0, 0, 0], 128, [255, 255, 255]),
            [127, 127, 127]
        );
    }

    #[test]
    fn shorter_side_geometry_rounds_half_to_even() {
        assert_eq!(
            geometry(200, 100, 96, ResizeMode::ShorterSide),
            ((192, 96), (48, 0))
        );
        assert_eq!(
            geometry(96, 96, 96, ResizeMode::ShorterSide),
            ((96, 96), (0, 0))
        );
        // 3 * 96 / 2 = 144 exactly; 3 * 5 / 2 = 7.5 → 8 and 5 * 1 / 2 = 2.5 → 2 (half to even).
        assert_eq!(
            geometry(2, 3, 96, ResizeMode::ShorterSide),
            ((96, 144), (0, 24))
        );
        assert_eq!(geometry(2, 3, 5, ResizeMode::ShorterSide), ((5, 8), (0, 1)));
        assert_eq!(geometry(2, 5, 3, ResizeMode::ShorterSide), ((3, 8), (0, 2)));
        assert_eq!(geometry(2, 5, 1, ResizeMode::ShorterSide), ((1, 2), (0, 0)));
        assert_eq!(
            geometry(1000, 10, 96, ResizeMode::Stretch),
            ((96, 96), (0, 0))
        );
    }

    #[test]
    fn jpeg_completeness_walks_segments_and_scan_data() {
        // SOI, APP0 (len 4), SOS (len 2) + scan data with a stuffed 0xFF00 and an RST0, EOI.
        let complete = [
            0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0xff, 0xd9, 0xff, 0xda, 0x00, 0x02, 0x12, 0xff,
            0x00, 0x34, 0xff, 0xd0, 0x56, 0xff, 0xd9,
        ];
        assert!(jpeg_is_complete(&complete));
        let mut trailing = complete.to_vec();
        trailing.extend_from_slice(b"trailing bytes");
        assert!(jpeg_is_complete(&trailing), "data after EOI is tolerated");
        for cut in 2..complete.len() {
            assert!(!jpeg_is_complete(&complete[..cut]), "cut at {cut}");
        }
        // The 0xFFD9 inside APP0 (e.g. an EXIF thumbnail) is not the end of the image.
        assert!(!jpeg_is_complete(&complete[..12]));
    }

    #[test]
    fn empty_and_unknown_bytes_are_typed_errors() {
        assert!(matches!(decode(&[], 100, [0; 3]), Err(ImageFailure::Empty)));
        assert!(matches!(
            decode(b"definitely not an image", 100, [0; 3]),
            Err(ImageFailure::UnknownFormat)
        ));
    }
}
