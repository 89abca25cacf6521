//! Loading: the ONNX Runtime library, execution providers, graphs that disagree with their
//! manifest, layouts, and sharing one encoder between threads.

use std::path::{Path, PathBuf};
use std::process::Command;

use hivlp_encoders::{
    Encoder, EncoderError, EncoderOptions, ImageInput, Layout, Provider, RuntimeError,
};

/// Default options, except that a `--features cuda` build without a usable GPU falls back to CPU.
fn options() -> EncoderOptions {
    EncoderOptions {
        cpu_fallback: true,
        ..Default::default()
    }
}

/// Set in the child process of [`missing_library_names_the_install_command`].
const CHILD: &str = "HIVLP_ENCODERS_TEST_CHILD";

#[test]
fn missing_library_names_the_install_command() {
    if std::env::var_os(CHILD).is_some() {
        let err = Encoder::load(&Encoder::default_bundle_dir(), options())
            .expect_err("no ONNX Runtime at ORT_DYLIB_PATH");
        let message = err.to_string();
        assert!(
            matches!(
                err,
                EncoderError::Runtime(RuntimeError::LibraryMissing { .. })
            ),
            "{err:?}"
        );
        assert!(message.contains("pip install onnxruntime"), "{message}");
        assert!(
            message.contains("/nonexistent/libonnxruntime.so"),
            "{message}"
        );
        return;
    }
    // ONNX Runtime loads once per process, so the check runs in a fresh one.
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "missing_library_names_the_install_command",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_refused() {
    let options = EncoderOptions {
        cuda: true,
        cpu_fallback: true,
        ..Default::default()
    };
    assert!(!EncoderOptions::default().cuda);
    assert!(matches!(
        Encoder::load(&Encoder::default_bundle_dir(), options),
        Err(EncoderError::CudaNotBuilt)
    ));
}

/// With the CPU build of ONNX Runtime (what `scripts/fetch-onnxruntime` installs by default) the
/// CUDA provider cannot register: an error unless fallback was asked for. On a machine with the
/// GPU build and a GPU, the encoder must really run on CUDA.
#[cfg(feature = "cuda")]
#[test]
fn cuda_provider_is_reported_truthfully() {
    let dir = Encoder::default_bundle_dir();
    let strict = EncoderOptions {
        cuda: true,
        ..Default::default()
    };
    match Encoder::load(&dir, strict) {
        Ok(encoder) => {
            eprintln!("running on CUDA");
            assert_eq!(encoder.provider(), Provider::Cuda);
            assert!(encoder.encode_texts(&["a red apple"]).is_ok());
        }
        Err(EncoderError::Cuda { message }) => {
            eprintln!("CUDA unavailable, as expected without a GPU runtime: {message}");
            let fallback = EncoderOptions {
                cuda: true,
                cpu_fallback: true,
                ..Default::default()
            };
            let encoder = Encoder::load(&dir, fallback).unwrap();
            assert_eq!(encoder.provider(), Provider::Cpu);
            assert_eq!(encoder.fallback_reason(), Some(message.as_str()));
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[test]
fn cpu_is_the_default_provider() {
    let options = EncoderOptions {
        cuda: false,
        ..Default::default()
    };
    let encoder = Encoder::load(&Encoder::default_bundle_dir(), options).unwrap();
    assert_eq!(encoder.provider(), Provider::Cpu);
    assert_eq!(encoder.fallback_reason(), None);
    assert_eq!(encoder.provider().to_string(), "cpu");
}

/// A copy of the default bundle in a temporary directory, its `model.toml` edited by `edit`
/// (bundles may only name files inside their own directory).
fn edited_bundle(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let default = Encoder::default_bundle_dir();
    let manifest = std::fs::read_to_string(default.join("model.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["image.onnx", "text.onnx", "tokenizer.json"] {
        std::fs::copy(default.join(name), dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("model.toml"), edit(manifest)).unwrap();
    dir
}

fn load(dir: &Path) -> Result<Encoder, EncoderError> {
    Encoder::load(dir, options())
}

#[test]
fn graph_that_disagrees_with_the_manifest_is_refused() {
    let dir = edited_bundle(|m| m.replace("input = \"pixel_values\"", "input = \"pixels\""));
    match load(dir.path()) {
        Err(EncoderError::Graph { key, message, .. }) => {
            assert_eq!(key, "image.input");
            assert!(
                message.contains("pixel_values"),
                "lists the real inputs: {message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let dir = edited_bundle(|m| m.replacen("output = \"embedding\"", "output = \"emb\"", 2));
    assert!(matches!(
        load(dir.path()),
        Err(EncoderError::Graph {
            key: "image.output",
            ..
        })
    ));
    let dir = edited_bundle(|m| m.replace("fine_dim = 256", "fine_dim = 128"));
    match load(dir.path()) {
        Err(EncoderError::Graph { key, message, .. }) => {
            assert_eq!(key, "image.output");
            assert!(message.contains("256"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn file_that_is_not_onnx_is_a_session_error() {
    let bundle = edited_bundle(|m| m.replace("\"image.onnx\"", "\"junk.onnx\""));
    std::fs::write(bundle.path().join("junk.onnx"), b"not a graph").unwrap();
    let junk = std::fs::canonicalize(bundle.path().join("junk.onnx")).unwrap();
    match load(bundle.path()) {
        Err(EncoderError::Session { file, .. }) => assert_eq!(file, junk),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bundle_info_and_layouts() {
    let encoder = load(&Encoder::default_bundle_dir()).unwrap();
    let info = encoder.info();
    assert_eq!(info.layout, Layout::Matryoshka);
    assert_eq!(info.content_hash.len(), 64);
    let matryoshka = &encoder.encode_texts(&["a red apple"]).unwrap()[0];
    assert_eq!(matryoshka.coarse.as_ref().map(Vec::len), info.coarse_dim);

    // The same graphs read as fine_only: same fine vector, no coarse one.
    let dir = edited_bundle(|m| {
        m.replace("layout = \"matryoshka\"", "layout = \"fine_only\"")
            .replace("coarse_dim = 64\n", "")
    });
    let fine_only = load(dir.path()).unwrap();
    assert_ne!(fine_only.info().content_hash, info.content_hash);
    let e = &fine_only.encode_texts(&["a red apple"]).unwrap()[0];
    assert_eq!(e.coarse, None);
    assert_eq!(e.fine, matryoshka.fine);

    // Inner product: vectors are passed through as the graph made them (this graph normalises
    // its output itself, so they stay unit length), but the coarse prefix is still normalised.
    let dir = edited_bundle(|m| m.replace("metric = \"cosine\"", "metric = \"inner_product\""));
    let ip = load(dir.path()).unwrap();
    let e = &ip.encode_texts(&["a red apple"]).unwrap()[0];
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm(e.coarse.as_ref().unwrap()) - 1.0).abs() < 1e-5);
    for (a, b) in e.fine.iter().zip(&matryoshka.fine) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn text_batch_cap_makes_captions_independent_of_their_neighbours() {
    let captions = [
        "a red apple",
        "",
        "a smiling yellow face with heart-shaped eyes and a wide open mouth",
        "bicycle",
    ];
    // The default bundle caps text batches at one caption per graph run.
    let default = load(&Encoder::default_bundle_dir()).unwrap();
    assert_eq!(default.bundle().text().max_batch_size, Some(1));
    let singles: Vec<_> = captions
        .iter()
        .map(|c| default.encode_texts(&[c]).unwrap().remove(0))
        .collect();
    assert_eq!(default.encode_texts(&captions).unwrap(), singles);

    // Without the cap the int8 graph sees one padded batch: close to, but not exactly, the
    // per-caption vectors (its activations are quantised with one scale per tensor).
    let uncapped = edited_bundle(|m| {
        m.lines()
            .filter(|line| !line.starts_with("max_batch_size"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let uncapped = load(uncapped.path()).unwrap();
    assert_eq!(uncapped.bundle().text().max_batch_size, None);
    let batched = uncapped.encode_texts(&captions).unwrap();
    for (single, batched) in singles.iter().zip(&batched) {
        let dot: f32 = single
            .fine
            .iter()
            .zip(&batched.fine)
            .map(|(a, b)| a * b)
            .sum();
        let diff = single
            .fine
            .iter()
            .zip(&batched.fine)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("batched vs single: max abs diff {diff:.2e}, cosine {dot:.5}");
        assert!(dot > 0.9, "{dot}");
    }
}

#[test]
fn one_encoder_serves_many_threads() {
    let encoder = load(&Encoder::default_bundle_dir()).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let paths: Vec<PathBuf> = ["image_square_rgba.png", "image_wide.png", "image_tall.png"]
        .iter()
        .map(|f| fixtures.join(f))
        .collect();
    let inputs: Vec<ImageInput<'_>> = paths.iter().map(|p| ImageInput::Path(p)).collect();
    let captions = ["a red apple", "a smiling face", "a wooden house"];
    let expected_images = encoder.encode_images(&inputs).unwrap();
    let expected_texts: Vec<_> = captions
        .iter()
        .map(|c| encoder.encode_texts(&[c]).unwrap().remove(0))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..3 {
                    assert_eq!(encoder.encode_images(&inputs).unwrap(), expected_images);
                    for (caption, expected) in captions.iter().zip(&expected_texts) {
                        assert_eq!(&encoder.encode_texts(&[caption]).unwrap()[0], expected);
                    }
                }
            });
        }
    });
}

#[test]
fn unknown_default_bundle_names_the_fix() {
    // What `default_bundle_dir()` returns when neither HIVLP_MODEL_DIR nor a host registration
    // names a bundle: no path of the build machine is guessed.
    let err = Encoder::load(Path::new(""), options()).expect_err("no bundle");
    assert!(matches!(err, EncoderError::NoDefaultBundle), "{err:?}");
    assert!(err.to_string().contains("HIVLP_MODEL_DIR"), "{err}");
}
