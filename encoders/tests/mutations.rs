//! Mutated and truncated images (a seeded, deterministic mini-fuzz over every format): decoding
//! untrusted bytes returns a value or a typed error, never panics, hangs or blows up memory.

use std::io::Cursor;
use std::path::Path;

use hivlp_encoders::{Bundle, Encoder, ImageFailure, image_tensor};
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};

/// xorshift64*: a tiny deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let picture = DynamicImage::ImageRgba8(RgbaImage::from_fn(48, 32, |x, y| {
        Rgba([
            (x * 5) as u8,
            (y * 7) as u8,
            ((x + y) % 3 * 100) as u8,
            if x < 8 { 128 } else { 255 },
        ])
    }));
    let mut seeds = Vec::new();
    for format in [
        ImageFormat::Png,
        ImageFormat::Gif,
        ImageFormat::WebP,
        ImageFormat::Bmp,
    ] {
        let mut out = Cursor::new(Vec::new());
        picture.write_to(&mut out, format).unwrap();
        seeds.push((format!("{format:?}"), out.into_inner()));
    }
    let mut jpeg = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(picture.to_rgb8())
        .write_to(&mut jpeg, ImageFormat::Jpeg)
        .unwrap();
    seeds.push(("Jpeg".into(), jpeg.into_inner()));
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in ["image_square_rgba.png", "image_wide.jpg"] {
        seeds.push((name.into(), std::fs::read(fixtures.join(name)).unwrap()));
    }
    seeds
}

#[test]
fn mutated_images_never_panic() {
    let bundle = Bundle::open(&Encoder::default_bundle_dir()).unwrap();
    let spec = bundle.image();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut refused) = (0, 0);
    for (name, seed) in seeds() {
        assert!(
            image_tensor(&seed, spec, 1 << 20).is_ok(),
            "{name} seed decodes"
        );
        for round in 0..250 {
            let mut bytes = seed.clone();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            if round % 4 == 0 {
                bytes.truncate(rng.below(bytes.len()));
            }
            // Small enough that a mutated header claiming a huge image is refused cheaply.
            match image_tensor(&bytes, spec, 1 << 20) {
                Ok(x) => {
                    assert!(x.iter().all(|v| v.is_finite()), "{name} round {round}");
                    ok += 1;
                }
                Err(
                    ImageFailure::Corrupt(_)
                    | ImageFailure::Empty
                    | ImageFailure::UnknownFormat
                    | ImageFailure::Unsupported(_)
                    | ImageFailure::TooLarge { .. }
                    | ImageFailure::LimitExceeded(_),
                ) => refused += 1,
                Err(other) => panic!("{name} round {round}: unexpected {other}"),
            }
        }
    }
    eprintln!("{ok} mutated images decoded, {refused} refused");
    assert!(refused > 0 && ok > 0);
}
