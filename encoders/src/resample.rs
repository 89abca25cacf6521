//! Pillow-exact resizing of 8-bit RGB images.
//!
//! The default model is trained on images prepared with Pillow (`Image.resize` with `BILINEAR`),
//! so inference must resample bit for bit the same way or the embeddings drift: this is a port
//! of Pillow's `ImagingResample` (two separable passes, horizontal first, with 22-bit fixed-point
//! weights and an 8-bit intermediate image) and of its nearest-neighbour affine scaling. Only the
//! output window that survives the center crop is computed, which gives the same pixels as
//! resizing everything and cropping afterwards.

use std::ops::Range;

use crate::bundle::Interpolation;

/// An 8-bit RGB image, rows packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Rgb8 {
    fn row(&self, y: usize) -> &[u8] {
        &self.pixels[y * self.width * 3..(y + 1) * self.width * 3]
    }
}

/// Resizes `image` to `target_w`×`target_h` with Pillow's semantics and returns only the columns
/// `cols` and rows `rows` of the result.
pub(crate) fn resize_window(
    image: &Rgb8,
    (target_w, target_h): (usize, usize),
    cols: Range<usize>,
    rows: Range<usize>,
    interpolation: Interpolation,
) -> Rgb8 {
    debug_assert!(cols.end <= target_w && rows.end <= target_h);
    if (target_w, target_h) == (image.width, image.height) {
        return crop(image, cols, rows);
    }
    match interpolation {
        Interpolation::Nearest => nearest(image, (target_w, target_h), cols, rows),
        Interpolation::Triangle => convolve(image, (target_w, target_h), cols, rows, &TRIANGLE),
        Interpolation::CatmullRom => convolve(image, (target_w, target_h), cols, rows, &BICUBIC),
    }
}

fn crop(image: &Rgb8, cols: Range<usize>, rows: Range<usize>) -> Rgb8 {
    let mut pixels = Vec::with_capacity(cols.len() * rows.len() * 3);
    for y in rows.clone() {
        pixels.extend_from_slice(&image.row(y)[cols.start * 3..cols.end * 3]);
    }
    Rgb8 {
        width: cols.len(),
        height: rows.len(),
        pixels,
    }
}

struct Filter {
    kernel: fn(f64) -> f64,
    support: f64,
}

const TRIANGLE: Filter = Filter {
    kernel: |x| {
        let x = x.abs();
        if x < 1.0 { 1.0 - x } else { 0.0 }
    },
    support: 1.0,
};

const BICUBIC: Filter = Filter {
    kernel: |x| {
        const A: f64 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    },
    support: 2.0,
};

/// Pillow's `PRECISION_BITS`: weights are fixed point with 22 fractional bits.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point weights of one pass: for output index `i`, source pixels
/// `first[i]..first[i] + len[i]` weighted by `weights[i * ksize..]`.
struct Coefficients {
    ksize: usize,
    first: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

impl Coefficients {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`, for the output indices `outputs`
    /// of a resize from `in_size` to `out_size`.
    fn new(in_size: usize, out_size: usize, outputs: Range<usize>, filter: &Filter) -> Self {
        // Pillow passes the box as C floats: in1 = (float)in_size.
        let in1 = f64::from(in_size as f32);
        let scale = in1 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let mut first = Vec::with_capacity(outputs.len());
        let mut len = Vec::with_capacity(outputs.len());
        let mut weights = vec![0i32; outputs.len() * ksize];
        let mut k = vec![0f64; ksize];
        for (slot, xx) in outputs.enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero, as does `as`.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let count = (xmax - xmin).max(0) as usize;
            let mut total = 0.0;
            for (x, w) in k.iter_mut().enumerate().take(count) {
                *w = (filter.kernel)(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
                total += *w;
            }
            let fixed = &mut weights[slot * ksize..(slot + 1) * ksize];
            for (out, w) in fixed.iter_mut().zip(&k).take(count) {
                let w = if total != 0.0 { w / total } else { *w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                *out = if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            first.push(xmin as usize);
            len.push(count);
        }
        Coefficients {
            ksize,
            first,
            len,
            weights,
        }
    }

    fn taps(&self, slot: usize) -> (usize, &[i32]) {
        let start = slot * self.ksize;
        (
            self.first[slot],
            &self.weights[start..start + self.len[slot]],
        )
    }
}

/// Pillow's `clip8`: drop the fraction, clamp to a byte.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// Weighted sum of `taps` over RGB pixels starting at `base`, `stride` bytes apart.
fn accumulate(src: &[u8], base: usize, stride: usize, weights: &[i32]) -> [u8; 3] {
    let mut acc = [ROUNDING; 3];
    for (i, &w) in weights.iter().enumerate() {
        let p = base + i * stride;
        for (c, a) in acc.iter_mut().enumerate() {
            *a = a.wrapping_add(i32::from(src[p + c]).wrapping_mul(w));
        }
    }
    acc.map(clip8)
}

fn convolve(
    image: &Rgb8,
    (target_w, target_h): (usize, usize),
    cols: Range<usize>,
    rows: Range<usize>,
    filter: &Filter,
) -> Rgb8 {
    // Horizontal pass (skipped, like Pillow, when the width does not change) over the source rows
    // the vertical pass reads.
    let vertical = (target_h != image.height)
        .then(|| Coefficients::new(image.height, target_h, rows.clone(), filter));
    let src_rows = match &vertical {
        Some(v) => {
            let lo = v.first.iter().copied().min().unwrap_or(0);
            let hi = (0..rows.len())
                .map(|i| v.first[i] + v.len[i])
                .max()
                .unwrap_or(lo);
            lo..hi
        }
        None => rows.clone(),
    };
    let horizontal = if target_w != image.width {
        let h = Coefficients::new(image.width, target_w, cols.clone(), filter);
        let mut pixels = Vec::with_capacity(cols.len() * src_rows.len() * 3);
        for y in src_rows.clone() {
            let line = image.row(y);
            for slot in 0..cols.len() {
                let (first, weights) = h.taps(slot);
                pixels.extend_from_slice(&accumulate(line, first * 3, 3, weights));
            }
        }
        Rgb8 {
            width: cols.len(),
            height: src_rows.len(),
            pixels,
        }
    } else {
        crop(image, cols.clone(), src_rows.clone())
    };
    let Some(vertical) = vertical else {
        return horizontal;
    };
    let width = horizontal.width;
    let mut pixels = Vec::with_capacity(width * rows.len() * 3);
    for slot in 0..rows.len() {
        let (first, weights) = vertical.taps(slot);
        let first = first - src_rows.start;
        for x in 0..width {
            pixels.extend_from_slice(&accumulate(
                &horizontal.pixels,
                (first * width + x) * 3,
                width * 3,
                weights,
            ));
        }
    }
    Rgb8 {
        width,
        height: rows.len(),
        pixels,
    }
}

/// Pillow's `ImagingScaleAffine` source indices: positions accumulate in double precision from
/// half a step, truncated.
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    let step = f64::from(in_size as f32) / out_size as f64;
    let mut pos = step * 0.5;
    let mut indices = Vec::with_capacity(out_size);
    for _ in 0..out_size {
        indices.push((pos as usize).min(in_size - 1));
        pos += step;
    }
    indices
}

fn nearest(
    image: &Rgb8,
    (target_w, target_h): (usize, usize),
    cols: Range<usize>,
    rows: Range<usize>,
) -> Rgb8 {
    let xs = nearest_indices(image.width, target_w);
    let ys = nearest_indices(image.height, target_h);
    let mut pixels = Vec::with_capacity(cols.len() * rows.len() * 3);
    for &y in &ys[rows.clone()] {
        let line = image.row(y);
        for &x in &xs[cols.clone()] {
            pixels.extend_from_slice(&line[x * 3..x * 3 + 3]);
        }
    }
    Rgb8 {
        width: cols.len(),
        height: rows.len(),
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: usize, height: usize) -> Rgb8 {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&[
                    (x * 255 / width.max(2).saturating_sub(1).max(1)) as u8,
                    (y * 255 / height.max(2).saturating_sub(1).max(1)) as u8,
                    ((x * 7 + y * 13) % 256) as u8,
                ]);
            }
        }
        Rgb8 {
            width,
            height,
            pixels,
        }
    }

    #[test]
    fn window_equals_crop_of_full_resize() {
        let image = gradient(37, 23);
        for interpolation in [
            Interpolation::Nearest,
            Interpolation::Triangle,
            Interpolation::CatmullRom,
        ] {
            for (tw, th) in [(16, 10), (30, 30), (37, 50), (80, 23)] {
                let full = resize_window(&image, (tw, th), 0..tw, 0..th, interpolation);
                let (cols, rows) = (tw / 4..tw - tw / 5, th / 3..th);
                let window =
                    resize_window(&image, (tw, th), cols.clone(), rows.clone(), interpolation);
                assert_eq!(
                    window,
                    crop(&full, cols, rows),
                    "{interpolation:?} {tw}x{th}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let image = Rgb8 {
            width: 50,
            height: 31,
            pixels: [200u8, 17, 99].repeat(50 * 31),
        };
        for interpolation in [Interpolation::Triangle, Interpolation::CatmullRom] {
            let out = resize_window(&image, (13, 8), 0..13, 0..8, interpolation);
            assert!(out.pixels.chunks(3).all(|p| p == [200, 17, 99]));
        }
    }

    #[test]
    fn triangle_downscale_matches_hand_computed_pillow_weights() {
        // Downscaling 4 -> 2 stretches the triangle to support 2; worked by hand from
        // Pillow's precompute_coeffs.
        let image = Rgb8 {
            width: 4,
            height: 1,
            pixels: vec![0, 0, 0, 100, 0, 0, 200, 0, 0, 255, 0, 0],
        };
        let out = resize_window(&image, (2, 1), 0..2, 0..1, Interpolation::Triangle);
        // Output 0: center 1.0, taps x = 0..3, w(x) = 1 - |x + 0.5 - 1| / 2 for x in 0..3 -> 0.75, 0.75, 0.25 (sum 1.75)
        // (0·0.75 + 100·0.75 + 200·0.25) / 1.75 = 71.43 -> 71.
        // Output 1: center 3.0, taps x=1..4 -> 0.25, 0.75, 0.75 (sum 1.75)
        // (100·0.25 + 200·0.75 + 255·0.75) / 1.75 = 209.29 -> 209.
        assert_eq!([out.pixels[0], out.pixels[3]], [71, 209]);
    }
}

#[cfg(test)]
mod pillow_parity {
    use super::*;
    use sha2::{Digest, Sha256};

    /// The LCG image of `tests/data/make_pillow_resize.py`.
    fn source(width: usize, height: usize) -> Rgb8 {
        let mut state: u64 = 12345;
        let pixels = (0..width * height * 3)
            .map(|_| {
                state = (state * 1_103_515_245 + 12_345) % (1 << 31);
                ((state >> 16) & 255) as u8
            })
            .collect();
        Rgb8 {
            width,
            height,
            pixels,
        }
    }

    #[test]
    fn bit_exact_with_pillow() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pillow_resize.json");
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let dim = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
        let image = source(dim(&fixture["width"]), dim(&fixture["height"]));
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 18);
        for case in cases {
            let interpolation = match case["interpolation"].as_str().unwrap() {
                "nearest" => Interpolation::Nearest,
                "triangle" => Interpolation::Triangle,
                "catmull_rom" => Interpolation::CatmullRom,
                other => panic!("unknown interpolation {other}"),
            };
            let (w, h) = (dim(&case["width"]), dim(&case["height"]));
            let out = resize_window(&image, (w, h), 0..w, 0..h, interpolation);
            let digest: String = Sha256::digest(&out.pixels)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                digest,
                case["sha256"].as_str().unwrap(),
                "{interpolation:?} to {w}x{h} differs from Pillow"
            );
        }
    }
}
