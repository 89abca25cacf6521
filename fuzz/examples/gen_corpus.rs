//! Writes the seed corpus of every fuzz target: storage seeds from real databases built with the
//! storage API, image seeds from the `image` crate's encoders, manifest seeds from the default
//! bundle's `model.toml`:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus [-- <corpus dir>]`
//! (default `fuzz/corpus`). Rerun it after a file format change; `tests/corpus.rs` fails until
//! the seeds are valid again.

use std::fs;
use std::path::{Path, PathBuf};

use hivlp_fuzz::encoders::DEFAULT_MANIFEST;
use hivlp_fuzz::{FIXUP, SCHEMAS, STRICT, chunks, payloads, push_chunk, segment_files};
use hivlp_storage::{FOOTER_LEN, Row, Schema, Store, StoreOptions, TierVectors};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// A few varied rows: both modalities, one only, empty and non-empty metadata.
fn rows(schema: &Schema, ids: std::ops::Range<u64>) -> Vec<Row> {
    ids.map(|id| {
        let vector = |dim: usize, salt: u64| -> Vec<f32> {
            (0..dim)
                .map(|j| (((id * 31 + salt * 7 + j as u64) % 17) as f32 - 8.0) / 8.0)
                .collect()
        };
        let tier = |salt| TierVectors {
            coarse: vector(schema.coarse_dim, salt),
            fine: vector(schema.fine_dim, salt + 1),
        };
        Row {
            id,
            caption: (id % 3 != 0).then(|| format!("caption {id}")),
            uri: (id % 2 == 0).then(|| format!("file:///{id}.png")),
            metadata: vec![id as u8; (id % 5) as usize],
            image: (id % 4 != 1).then(|| tier(1)),
            text: (id % 4 != 2).then(|| tier(3)),
        }
    })
    .collect()
}

fn write_seed(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let out: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let scratch = std::env::temp_dir().join(format!("hivlp-gen-corpus-{}", std::process::id()));
    for (sel, schema) in SCHEMAS.iter().enumerate() {
        let db = scratch.join(format!("db-{sel}"));
        let _ = fs::remove_dir_all(&db);
        let store = Store::create(&db, schema.clone(), StoreOptions::default()).unwrap();
        // WAL seeds: the first log holds every kind of record, from sequence number 1.
        store.insert(rows(schema, 0..6)).unwrap();
        store.insert(rows(schema, 6..9)).unwrap();
        store.delete(&[2, 7]).unwrap();
        store
            .set_property("engine.projection", vec![1, 2, 3])
            .unwrap();
        let log = fs::read(db.join("wal-000001.log")).unwrap();
        let wal_dir = out.join("wal_decode");
        let header = |flags: u8| vec![flags, sel as u8];
        write_seed(
            &wal_dir,
            &format!("schema{sel}-raw"),
            &[header(STRICT), log.clone()].concat(),
        );
        let mut fixed = header(FIXUP | STRICT);
        for payload in payloads(&log) {
            push_chunk(&mut fixed, payload);
        }
        write_seed(&wal_dir, &format!("schema{sel}-fixup"), &fixed);
        // Torn tail: the last record cut in half.
        let torn = &log[..log.len() - 5];
        write_seed(
            &wal_dir,
            &format!("schema{sel}-torn"),
            &[header(STRICT), torn.to_vec()].concat(),
        );

        // Segment and manifest seeds: flush, then delete (tombstones), flush again.
        store.flush().unwrap();
        store.delete(&[0, 4]).unwrap();
        store.flush().unwrap();
        drop(store);
        let current = fs::read_to_string(db.join("CURRENT")).unwrap();
        let manifest = fs::read(db.join(current.trim_end())).unwrap();
        let body = &manifest[..manifest.len() - FOOTER_LEN];
        let manifest_dir = out.join("manifest_decode");
        write_seed(
            &manifest_dir,
            &format!("schema{sel}-raw"),
            &[header(0), manifest.clone()].concat(),
        );
        write_seed(
            &manifest_dir,
            &format!("schema{sel}-fixup"),
            &[header(FIXUP), body.to_vec()].concat(),
        );

        let segment_dir = out.join("segment_open");
        let seg_files: Vec<(String, Option<Vec<u8>>)> = fs::read_dir(&db)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("seg-"))
            .map(|n| (n.clone(), fs::read(db.join(&n)).ok()))
            .collect();
        // The flushed database has exactly one segment; rename its files to the harness's.
        let stem = seg_files[0].0.split('.').next().unwrap().to_owned();
        let find = |suffix: &str| -> Vec<u8> {
            seg_files
                .iter()
                .find(|(n, _)| n.starts_with(&format!("{stem}.")) && n.contains(suffix))
                .and_then(|(_, b)| b.clone())
                .unwrap_or_default()
        };
        let suffixes = [
            "meta",
            "image.coarse",
            "image.fine",
            "text.coarse",
            "text.fine",
            "del-",
        ];
        let rows_in_segment = 7u32; // ids 0..9 minus the two deleted before the first flush
        for fixup in [false, true] {
            let mut seed = header(if fixup { FIXUP | STRICT } else { STRICT });
            seed.extend_from_slice(&(rows_in_segment - 1).to_le_bytes());
            seed.push(3);
            for ((_, _), suffix) in segment_files().iter().zip(suffixes) {
                let bytes = find(suffix);
                let bytes = if fixup {
                    &bytes[..bytes.len() - FOOTER_LEN]
                } else {
                    &bytes[..]
                };
                push_chunk(&mut seed, bytes);
            }
            assert_eq!(chunks(&seed[7..]).len(), 6);
            let name = format!("schema{sel}-{}", if fixup { "fixup" } else { "raw" });
            write_seed(&segment_dir, &name, &seed);
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    image_seeds(&out.join("image_decode"));
    manifest_seeds(&out.join("bundle_manifest"));
    println!("seed corpus written to {}", out.display());
}

/// A small gradient with a diagonal edge, so resampling has something to do.
fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let edge = if x * height > y * width { 200 } else { 30 };
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, edge])
    })
}

/// Tiny images in every format the encoder accepts, with varied shapes, colour types and
/// preprocessing selectors (see `hivlp_fuzz::encoders::image_spec`); each well under 4 KiB.
fn image_seeds(dir: &Path) {
    let rgb = DynamicImage::ImageRgb8(picture(12, 7));
    let tall = DynamicImage::ImageRgb8(picture(5, 13));
    let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(9, 9, |x, y| {
        Rgba([(x * 28) as u8, 90, (y * 28) as u8, ((x + y) * 14) as u8])
    }));
    let gray16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(6, 4, |x, y| {
        image::Luma([((x * 4 + y) * 2500) as u16])
    }));
    let seeds: [(&str, &DynamicImage, ImageFormat, u8); 10] = [
        ("png-rgb", &rgb, ImageFormat::Png, 0),
        ("png-rgba", &rgba, ImageFormat::Png, 0b1_0010),
        ("png-gray16", &gray16, ImageFormat::Png, 0b0_0101),
        ("jpeg-rgb", &rgb, ImageFormat::Jpeg, 0),
        ("jpeg-tall", &tall, ImageFormat::Jpeg, 0b1_1001),
        ("gif-rgba", &rgba, ImageFormat::Gif, 0b0_0010),
        ("gif-tall", &tall, ImageFormat::Gif, 0b1_0100),
        ("bmp-rgb", &rgb, ImageFormat::Bmp, 0b0_1000),
        ("bmp-rgba", &rgba, ImageFormat::Bmp, 0b1_0001),
        ("webp-rgba", &rgba, ImageFormat::WebP, 0b0_0100),
    ];
    for (name, picture, format, selector) in seeds {
        let mut bytes = std::io::Cursor::new(Vec::new());
        picture.write_to(&mut bytes, format).unwrap();
        let bytes = bytes.into_inner();
        assert!(bytes.len() < 4096, "{name} is {} bytes", bytes.len());
        write_seed(dir, name, &[vec![selector], bytes].concat());
    }
}

/// The default bundle's manifest and its other two layouts, plus optional keys left out.
fn manifest_seeds(dir: &Path) {
    write_seed(dir, "default", DEFAULT_MANIFEST.as_bytes());
    let separate = DEFAULT_MANIFEST
        .replace("layout = \"matryoshka\"", "layout = \"separate\"")
        .replace(
            "output = \"embedding\"",
            "coarse_output = \"coarse\"\nfine_output = \"fine\"",
        );
    write_seed(dir, "separate", separate.as_bytes());
    let fine_only = DEFAULT_MANIFEST
        .replace("layout = \"matryoshka\"", "layout = \"fine_only\"")
        .replace("coarse_dim = 64\n", "");
    write_seed(dir, "fine_only", fine_only.as_bytes());
    // Small size (the harness then preprocesses an image with it), BGR, every optional key
    // left out, comments stripped.
    let minimal: String = DEFAULT_MANIFEST
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && !["background", "token_type_ids", "max_batch_size"]
                    .iter()
                    .any(|k| l.starts_with(k))
        })
        .map(|l| match l {
            "size = 96" => "size = 7\n".to_owned(),
            "channel_order = \"rgb\"" => "channel_order = \"bgr\"\n".to_owned(),
            "interpolation = \"triangle\"" => "interpolation = \"catmull_rom\"\n".to_owned(),
            _ => format!("{l}\n"),
        })
        .collect();
    assert!(minimal.contains("size = 7") && minimal.contains("bgr"));
    write_seed(dir, "small-bgr-minimal", minimal.as_bytes());
}
