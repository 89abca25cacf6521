//! `scripts/export-openclip` end to end, only where a CLIP checkpoint is on disk (nothing is
//! downloaded): set `HIVLP_OPENCLIP_CHECKPOINT` (and `HIVLP_OPENCLIP_ARCH`, default ViT-B-32;
//! `HIVLP_PYTHON`, a Python with torch, open_clip_torch, onnx and tokenizers, default python3).
//! Otherwise the test reports that it skipped and passes.

use std::path::Path;
use std::process::Command;

use hivlp_encoders::{Encoder, EncoderOptions, ImageInput, Layout};

fn export(checkpoint: &str, out: &Path, extra: &[&str]) {
    let python = std::env::var("HIVLP_PYTHON").unwrap_or_else(|_| "python3".into());
    let arch = std::env::var("HIVLP_OPENCLIP_ARCH").unwrap_or_else(|_| "ViT-B-32".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/export-openclip");
    let status = Command::new(python)
        .arg(script)
        .args(["--arch", &arch, "--checkpoint", checkpoint, "--out"])
        .arg(out)
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "export-openclip failed");
}

#[test]
fn exported_bundles_load_and_encode() {
    let Ok(checkpoint) = std::env::var("HIVLP_OPENCLIP_CHECKPOINT") else {
        eprintln!("skipped: set HIVLP_OPENCLIP_CHECKPOINT to a local CLIP checkpoint to run");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image_wide.png");
    let captions = [
        "a red apple",
        "",
        "a photo of a bicycle leaning on a green wooden fence",
    ];
    for (name, extra, layout) in [
        ("fine_only", &[][..], Layout::FineOnly),
        ("separate", &["--coarse-dim", "64"][..], Layout::Separate),
    ] {
        let out = dir.path().join(name);
        export(&checkpoint, &out, extra);
        let options = EncoderOptions {
            cpu_fallback: true,
            ..Default::default()
        };
        let encoder = Encoder::load(&out, options).unwrap();
        assert_eq!(encoder.info().layout, layout);
        let texts = encoder.encode_texts(&captions).unwrap();
        let images = encoder.encode_images(&[ImageInput::Path(&image)]).unwrap();
        for e in texts.iter().chain(&images) {
            assert_eq!(e.fine.len(), encoder.info().fine_dim);
            assert_eq!(e.coarse.as_ref().map(Vec::len), encoder.info().coarse_dim);
        }
        // CLIP pools the end-of-text token under a causal mask: padding cannot change a caption.
        for (caption, batched) in captions.iter().zip(&texts) {
            let alone = &encoder.encode_texts(&[caption]).unwrap()[0];
            let diff = alone
                .fine
                .iter()
                .zip(&batched.fine)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-5, "{caption:?}: {diff}");
        }
    }
}
