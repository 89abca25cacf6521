//! The model-bound API with the bundled `hivlp-default` model (ONNX Runtime from
//! `scripts/fetch-onnxruntime`) on a few pairs of the demo set in `data/demo`.

use std::path::{Path, PathBuf};

use hivlp::{
    CoarseDerivation, Database, ElemType, Error, ImageInput, ModelChoice, ModelError, Options,
    Pair, SearchParams, Target,
};

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo")
}

/// The first `n` demo images (sorted by name) with their captions.
fn demo_pairs(n: usize) -> Vec<(PathBuf, String)> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(demo_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    images.sort();
    images
        .into_iter()
        .take(n)
        .map(|p| {
            let caption = std::fs::read_to_string(p.with_extension("txt")).unwrap();
            (p, caption.lines().next().unwrap_or_default().to_owned())
        })
        .collect()
}

fn model_options() -> Options {
    Options {
        model: ModelChoice::Default,
        threads: Some(2),
        ..Options::default()
    }
}

#[test]
fn pairs_are_encoded_and_found_by_text_and_image() {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Database::create_with_model(dir.path().join("db"), ElemType::I8, model_options()).unwrap();
    assert_eq!(db.stats().unwrap().coarse, [CoarseDerivation::Prefix; 2]);
    let demo = demo_pairs(40);
    let pairs: Vec<Pair<'_>> = demo
        .iter()
        .enumerate()
        .map(|(i, (path, caption))| Pair {
            id: None,
            image: ImageInput::Path(path),
            // Every fifth item is image-only.
            caption: (i % 5 != 0).then_some(caption.as_str()),
            uri: Some(path.display().to_string()),
            metadata: Vec::new(),
            exif: false,
        })
        .collect();
    let ids = db.insert_pairs(&pairs).unwrap();
    assert_eq!(ids.len(), 40);
    assert_eq!(db.len().unwrap(), 40);

    // An image finds itself first; a caption finds its own text vector first.
    let image = SearchParams::default();
    let hits = db
        .search_image(ImageInput::Path(&demo[3].0), &image)
        .unwrap();
    assert_eq!(hits[0].id, ids[3]);
    assert!((hits[0].score - 1.0).abs() < 1e-3, "{}", hits[0].score);
    let text = SearchParams {
        target: Target::Text,
        ..SearchParams::default()
    };
    let hits = db.search_text(&demo[7].1, &text).unwrap();
    assert_eq!(hits[0].id, ids[7]);
    assert_eq!(hits.len(), 10);
    // Image-only items have no text vectors to find.
    let all_text = SearchParams {
        target: Target::Text,
        k: 40,
        ..SearchParams::default()
    };
    let hits = db.search_text("a flag", &all_text).unwrap();
    assert_eq!(hits.len(), 32);
    // Text → image retrieval returns hits with their metadata.
    let hits = db.search_text(&demo[7].1, &image).unwrap();
    assert!(hits.iter().all(|h| h.uri.is_some()));

    // One bad image fails the call, naming it, and writes nothing.
    let bad = [
        Pair {
            id: None,
            image: ImageInput::Path(&demo[0].0),
            caption: None,
            uri: None,
            metadata: Vec::new(),
            exif: false,
        },
        Pair {
            id: None,
            image: ImageInput::Bytes(b"not an image"),
            caption: Some("broken"),
            uri: None,
            metadata: Vec::new(),
            exif: false,
        },
    ];
    let err = db.insert_pairs(&bad).unwrap_err();
    assert!(
        matches!(err, Error::Model(ModelError::Encode(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("#1"), "{err}");
    assert_eq!(db.len().unwrap(), 40);
}

/// Cross-modal retrieval on a small fixture of distinct demo pairs: each caption finds its own
/// image first (text → image) and each image its own caption (image → text).
#[test]
fn captions_find_their_images_and_images_their_captions() {
    let names = [
        "oc_analog_clock_clock",
        "oc_bluewhale_animal_fish",
        "oc_christmas_tree_holiday_religholiday",
        "oc_formula_one_car_transport",
        "oc_hamburger_protein_food_menu",
        "oc_saturn_the_planet_saturn",
        "oc_rubber_duck_toy",
        "om_flag_brunei_bn_flag",
        "om_rhinoceros_animal_rhino_horn",
        "om_trombone_brass_instrument_jazz",
    ];
    let fixture: Vec<(PathBuf, String)> = names
        .iter()
        .map(|name| {
            let image = demo_dir().join(format!("{name}.png"));
            let caption = std::fs::read_to_string(image.with_extension("txt")).unwrap();
            (image, caption.trim().to_owned())
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let db =
        Database::create_with_model(dir.path().join("db"), ElemType::I8, model_options()).unwrap();
    let pairs: Vec<Pair<'_>> = fixture
        .iter()
        .map(|(image, caption)| Pair {
            id: None,
            image: ImageInput::Path(image),
            caption: Some(caption),
            uri: None,
            metadata: Vec::new(),
            exif: false,
        })
        .collect();
    let ids = db.insert_pairs(&pairs).unwrap();

    let images = SearchParams {
        target: Target::Image,
        k: 1,
        ..SearchParams::default()
    };
    let captions = SearchParams {
        target: Target::Text,
        ..images.clone()
    };
    for ((image, caption), id) in fixture.iter().zip(&ids) {
        let by_text = db.search_text(caption, &images).unwrap();
        assert_eq!(by_text[0].id, *id, "text → image for {caption:?}");
        let by_image = db.search_image(ImageInput::Path(image), &captions).unwrap();
        assert_eq!(by_image[0].id, *id, "image → text for {}", image.display());
        assert_eq!(by_image[0].caption.as_deref(), Some(caption.as_str()));
    }
}

#[test]
fn another_model_bundle_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(Database::create_with_model(&path, ElemType::F16, model_options()).unwrap());

    // The same graphs under another version: a different bundle hash.
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    let default = hivlp::Encoder::default_bundle_dir();
    for entry in std::fs::read_dir(&default).unwrap().flatten() {
        std::fs::copy(entry.path(), bundle.join(entry.file_name())).unwrap();
    }
    let manifest = std::fs::read_to_string(bundle.join("model.toml")).unwrap();
    std::fs::write(
        bundle.join("model.toml"),
        manifest.replacen("version = \"", "version = \"other-", 1),
    )
    .unwrap();
    let other = Options {
        model: ModelChoice::Path(bundle),
        ..model_options()
    };
    assert!(matches!(
        Database::open(&path, other.clone()),
        Err(Error::Model(ModelError::Mismatch { .. }))
    ));
    let allowed = Options {
        allow_model_mismatch: true,
        ..other
    };
    assert!(Database::open(&path, allowed).is_ok());
    // Without a model, the database opens for vector search.
    assert!(Database::open(&path, Options::default()).is_ok());
}
