//! Awkward and hostile inputs, each with its documented outcome and never a panic; image formats,
//! EXIF orientation, grayscale and alpha.

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use hivlp_encoders::{EncodeError, Encoder, EncoderOptions, ImageFailure, ImageInput};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// Default options, except that a `--features cuda` build without a usable GPU falls back to CPU.
fn options() -> EncoderOptions {
    EncoderOptions {
        cpu_fallback: true,
        ..Default::default()
    }
}

fn encoder() -> &'static Encoder {
    static ENCODER: OnceLock<Encoder> = OnceLock::new();
    ENCODER.get_or_init(|| Encoder::load(&Encoder::default_bundle_dir(), options()).unwrap())
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn tensor(bytes: &[u8]) -> Vec<f32> {
    encoder()
        .preprocess_image(ImageInput::Bytes(bytes))
        .unwrap()
}

fn image_failure(
    result: Result<Vec<hivlp_encoders::Embedding>, EncodeError>,
) -> (usize, ImageFailure) {
    match result {
        Err(EncodeError::Image { index, reason, .. }) => (index, reason),
        other => panic!("expected an image error, got {other:?}"),
    }
}

/// A 60×40 picture with distinct quadrants and few colours (so GIF is lossless).
fn quadrants() -> RgbImage {
    RgbImage::from_fn(60, 40, |x, y| match (x < 30, y < 20) {
        (true, true) => Rgb([220, 30, 30]),
        (false, true) => Rgb([30, 200, 40]),
        (true, false) => Rgb([20, 40, 210]),
        (false, false) => Rgb([240, 230, 20]),
    })
}

fn l2(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

// ---- bad inputs ----------------------------------------------------------------------------

#[test]
fn truncated_jpeg_is_a_corrupt_image_error() {
    let jpeg = fixture("image_wide.jpg");
    for keep in [jpeg.len() / 2, jpeg.len() - 2, 200, 3] {
        let (index, reason) =
            image_failure(encoder().encode_images(&[ImageInput::Bytes(&jpeg[..keep])]));
        assert_eq!(index, 0);
        assert!(
            matches!(reason, ImageFailure::Corrupt(_)),
            "kept {keep} bytes: {reason}"
        );
    }
}

#[test]
fn truncated_files_of_every_format_are_refused() {
    let picture = DynamicImage::ImageRgb8(quadrants());
    for format in [
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::WebP,
        ImageFormat::Bmp,
    ] {
        let bytes = encode(&picture, format);
        let cut = &bytes[..bytes.len() * 2 / 3];
        let (_, reason) = image_failure(encoder().encode_images(&[ImageInput::Bytes(cut)]));
        assert!(
            matches!(reason, ImageFailure::Corrupt(_)),
            "{format:?}: {reason}"
        );
    }
}

#[test]
fn zero_byte_file_is_an_empty_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let good = fixture("image_tall.png");
    let result = encoder().encode_images(&[ImageInput::Bytes(&good), ImageInput::Path(&empty)]);
    match result {
        Err(e @ EncodeError::Image { .. }) => {
            let message = e.to_string();
            let EncodeError::Image {
                index,
                path,
                reason,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(index, 1);
            assert_eq!(path.as_deref(), Some(empty.as_path()));
            assert!(matches!(reason, ImageFailure::Empty));
            assert!(
                message.contains("empty.png") && message.contains("#1"),
                "{message}"
            );
        }
        other => panic!("expected an image error, got {other:?}"),
    }
    let missing = dir.path().join("missing.jpg");
    let (_, reason) = image_failure(encoder().encode_images(&[ImageInput::Path(&missing)]));
    assert!(matches!(reason, ImageFailure::Read(_)));
}

/// A PNG whose IHDR declares `width`×`height` RGB pixels, followed by a tiny IDAT.
fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes: nowhere near 20000 rows.
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn decompression_bomb_is_refused_from_the_header() {
    let bomb = png_header_claiming(20_000, 20_000);
    let (index, reason) = image_failure(encoder().encode_images(&[ImageInput::Bytes(&bomb)]));
    assert_eq!(index, 0);
    match reason {
        ImageFailure::TooLarge {
            width,
            height,
            max_pixels,
        } => {
            assert_eq!((width, height), (20_000, 20_000));
            assert_eq!(max_pixels, hivlp_encoders::DEFAULT_MAX_PIXELS);
        }
        other => panic!("expected TooLarge, got {other}"),
    }
}

#[test]
fn pixel_limit_is_configurable() {
    let strict = Encoder::load(
        &Encoder::default_bundle_dir(),
        EncoderOptions {
            max_pixels: 128 * 100,
            ..options()
        },
    )
    .unwrap();
    let square = fixture("image_square_rgba.png"); // 128×128
    let wide = fixture("image_wide.png"); // 128×37
    assert!(strict.encode_images(&[ImageInput::Bytes(&wide)]).is_ok());
    let (index, reason) = image_failure(
        strict.encode_images(&[ImageInput::Bytes(&wide), ImageInput::Bytes(&square)]),
    );
    assert_eq!(index, 1);
    assert!(matches!(
        reason,
        ImageFailure::TooLarge {
            width: 128,
            height: 128,
            ..
        }
    ));
}

#[test]
fn garbage_and_corrupt_bytes_are_typed_errors() {
    let (_, reason) = image_failure(encoder().encode_images(&[ImageInput::Bytes(b"hello, world")]));
    assert!(matches!(reason, ImageFailure::UnknownFormat), "{reason}");
    let mut png = fixture("image_tall.png");
    let middle = png.len() / 2;
    png[middle..].iter_mut().for_each(|b| *b ^= 0x5a);
    let (_, reason) = image_failure(encoder().encode_images(&[ImageInput::Bytes(&png)]));
    assert!(matches!(reason, ImageFailure::Corrupt(_)), "{reason}");
    let (_, reason) =
        image_failure(encoder().encode_images(&[ImageInput::Bytes(&png_header_claiming(0, 10))]));
    assert!(matches!(reason, ImageFailure::Corrupt(_)), "{reason}");
}

#[test]
fn failing_index_is_global_across_batches() {
    let small_batches = Encoder::load(
        &Encoder::default_bundle_dir(),
        EncoderOptions {
            batch_size: 2,
            ..options()
        },
    )
    .unwrap();
    let good = fixture("image_tall.png");
    let mut inputs = vec![ImageInput::Bytes(&good); 5];
    inputs[3] = ImageInput::Bytes(b"");
    inputs[4] = ImageInput::Bytes(b"junk");
    let (index, reason) = image_failure(small_batches.encode_images(&inputs));
    assert_eq!(index, 3);
    assert!(matches!(reason, ImageFailure::Empty));
    // The same inputs, one batch: still the lowest failing index.
    let (index, _) = image_failure(encoder().encode_images(&inputs));
    assert_eq!(index, 3);
}

#[test]
fn long_text_is_truncated_not_refused() {
    let max_length = encoder().bundle().text().max_length;
    let long = "a red bicycle leans against a green fence near the old station ".repeat(30);
    assert_eq!(encoder().token_ids(&long).unwrap().len(), max_length);
    let longer = format!("{long} and many more words that fall past the limit");
    let embeddings = encoder().encode_texts(&[&long, &longer]).unwrap();
    assert_eq!(
        embeddings[0], embeddings[1],
        "the tail past max_length is ignored"
    );
    assert!((l2(&embeddings[0].fine) - 1.0).abs() < 1e-5);
}

#[test]
fn empty_text_gives_a_valid_embedding() {
    let ids = encoder().token_ids("").unwrap();
    assert_eq!(ids.len(), 2, "just [CLS] [SEP]");
    let e = &encoder().encode_texts(&[""]).unwrap()[0];
    let info = encoder().info();
    assert_eq!(e.fine.len(), info.fine_dim);
    assert!(e.fine.iter().all(|v| v.is_finite()));
    assert!((l2(&e.fine) - 1.0).abs() < 1e-5);
    let coarse = e.coarse.as_ref().unwrap();
    assert_eq!(coarse.len(), info.coarse_dim.unwrap());
    assert!((l2(coarse) - 1.0).abs() < 1e-5);
    assert!(encoder().encode_texts(&[]).unwrap().is_empty());
    assert!(encoder().encode_images(&[]).unwrap().is_empty());
}

// ---- formats -------------------------------------------------------------------------------

#[test]
fn lossless_formats_give_identical_tensors() {
    let picture = DynamicImage::ImageRgb8(quadrants());
    let png = encode(&picture, ImageFormat::Png);
    let reference = tensor(&png);
    for format in [ImageFormat::Bmp, ImageFormat::WebP, ImageFormat::Gif] {
        assert_eq!(tensor(&encode(&picture, format)), reference, "{format:?}");
    }
    // JPEG is lossy: close, not equal.
    let jpeg = tensor(&encode(&picture, ImageFormat::Jpeg));
    let mean_diff: f32 = jpeg
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / jpeg.len() as f32;
    assert!(mean_diff < 0.05, "{mean_diff}");
}

#[test]
fn animated_gif_uses_its_first_frame() {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame};
    let first = quadrants();
    let second = RgbImage::from_pixel(60, 40, Rgb([0, 0, 0]));
    let mut gif = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut gif);
        for frame in [&first, &second] {
            let rgba = DynamicImage::ImageRgb8(frame.clone()).into_rgba8();
            encoder
                .encode_frame(Frame::from_parts(
                    rgba,
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                ))
                .unwrap();
        }
    }
    let png = encode(&DynamicImage::ImageRgb8(first), ImageFormat::Png);
    assert_eq!(tensor(&gif), tensor(&png));
}

/// Inserts an EXIF APP1 segment with the given orientation right after a JPEG's SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08"); // big-endian TIFF, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_honoured() {
    let stored = DynamicImage::ImageRgb8(quadrants());
    let jpeg = encode(&stored, ImageFormat::Jpeg);
    // What the JPEG decoder sees, turned upright by hand, as a lossless PNG.
    let decoded = image::load_from_memory(&jpeg).unwrap();
    for (orientation, upright) in [
        (1, decoded.clone()),
        (3, decoded.rotate180()),
        (6, decoded.rotate90()),
        (8, decoded.rotate270()),
        (2, decoded.fliph()),
    ] {
        let rotated = with_exif_orientation(&jpeg, orientation);
        let expected = tensor(&encode(&upright, ImageFormat::Png));
        assert_eq!(tensor(&rotated), expected, "orientation {orientation}");
    }
    assert_ne!(
        tensor(&with_exif_orientation(&jpeg, 6)),
        tensor(&jpeg),
        "the test picture is not rotation-invariant"
    );
}

#[test]
fn grayscale_matches_equivalent_rgb() {
    let gray =
        image::GrayImage::from_fn(50, 70, |x, y| image::Luma([((x * 5 + y * 3) % 256) as u8]));
    let rgb = RgbImage::from_fn(50, 70, |x, y| {
        let v = gray.get_pixel(x, y).0[0];
        Rgb([v, v, v])
    });
    let from_gray = tensor(&encode(
        &DynamicImage::ImageLuma8(gray.clone()),
        ImageFormat::Png,
    ));
    assert_eq!(
        from_gray,
        tensor(&encode(&DynamicImage::ImageRgb8(rgb), ImageFormat::Png))
    );
    let gray_alpha = DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_fn(50, 70, |x, y| {
        image::LumaA([gray.get_pixel(x, y).0[0], 255])
    }));
    assert_eq!(tensor(&encode(&gray_alpha, ImageFormat::Png)), from_gray);
    let sixteen = DynamicImage::ImageLuma8(gray).into_luma16();
    assert_eq!(
        tensor(&encode(
            &DynamicImage::ImageLuma16(sixteen),
            ImageFormat::Png
        )),
        from_gray
    );
}

#[test]
fn alpha_is_composited_on_the_background() {
    let background = encoder().bundle().image().background;
    assert_eq!(background, [255, 255, 255]);
    // Fully transparent (whatever the colour) is the background; opaque is the colour.
    let transparent = RgbaImage::from_pixel(40, 40, Rgba([10, 200, 30, 0]));
    let white = RgbImage::from_pixel(40, 40, Rgb(background));
    assert_eq!(
        tensor(&encode(
            &DynamicImage::ImageRgba8(transparent),
            ImageFormat::Png
        )),
        tensor(&encode(&DynamicImage::ImageRgb8(white), ImageFormat::Png))
    );
    let opaque = RgbaImage::from_fn(60, 40, |x, y| {
        let p = quadrants().get_pixel(x, y).0;
        Rgba([p[0], p[1], p[2], 255])
    });
    assert_eq!(
        tensor(&encode(&DynamicImage::ImageRgba8(opaque), ImageFormat::Png)),
        tensor(&encode(
            &DynamicImage::ImageRgb8(quadrants()),
            ImageFormat::Png
        ))
    );
    // Half-transparent black over white: 127 (Pillow's rounding), i.e. (127/255 - 0.5) / 0.5.
    let half = RgbaImage::from_pixel(96, 96, Rgba([0, 0, 0, 128]));
    let x = tensor(&encode(&DynamicImage::ImageRgba8(half), ImageFormat::Png));
    let expected = (127.0f32 / 255.0 - 0.5) / 0.5;
    assert!(x.iter().all(|v| *v == expected));
}

#[test]
fn batching_does_not_change_image_embeddings() {
    let files = ["image_square_rgba.png", "image_wide.png", "image_tall.png"];
    let bytes: Vec<Vec<u8>> = files.iter().map(|f| fixture(f)).collect();
    let inputs: Vec<ImageInput<'_>> = bytes.iter().map(|b| ImageInput::Bytes(b)).collect();
    let together = encoder().encode_images(&inputs).unwrap();
    for (input, batched) in inputs.iter().zip(&together) {
        let alone = &encoder()
            .encode_images(std::slice::from_ref(input))
            .unwrap()[0];
        let diff = alone
            .fine
            .iter()
            .zip(&batched.fine)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "{diff}");
    }
}
