#!/usr/bin/env python3
"""Parity fixtures for the Rust encoders: encoders/tests/fixtures/.

Copies 3 demo PNGs, makes one JPEG from one of them (PIL, composited on white, quality 90), and
writes reference.json with the full 256-d onnxruntime outputs of the committed bundle and the
token ids produced by tokenizer.json (truncate to max_length, pad to the longest in the batch).
"""
import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import evaluate as E  # noqa: E402

LONG = ("A very long caption that keeps going well past the sixty-four token limit of the text tower: "
        "a red fox jumps over a lazy brown dog beside a small wooden house with a green door, two round "
        "windows, a chimney puffing grey smoke, a tall oak tree, a yellow sun, three white clouds, a blue "
        "bicycle leaning on the fence, and a cat sleeping on the doorstep while birds sing in the garden.")
CAPTIONS = ["a red apple", "", LONG, "Smiling face with heart-eyes 😍 — café, naïve résumé!"]


def sha256(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="encoders/models/default")
    ap.add_argument("--demo", default="data/demo")
    ap.add_argument("--out", default="encoders/tests/fixtures")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    demo = sorted(f for f in os.listdir(a.demo) if f.endswith(".png"))
    sizes = {f: Image.open(os.path.join(a.demo, f)).size for f in demo}
    # one openmoji (square, RGBA), one wide openclipart, one tall openclipart
    om = next(f for f in demo if f.startswith("om_"))
    wide = max((f for f in demo if f.startswith("oc_")), key=lambda f: sizes[f][0] / sizes[f][1])
    tall = max((f for f in demo if f.startswith("oc_")), key=lambda f: sizes[f][1] / sizes[f][0])
    picks = [("image_square_rgba.png", om), ("image_wide.png", wide), ("image_tall.png", tall)]
    for dst, src in picks:
        shutil.copy(os.path.join(a.demo, src), os.path.join(a.out, dst))
    rgba = Image.open(os.path.join(a.out, "image_wide.png")).convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    Image.alpha_composite(bg, rgba).convert("RGB").save(os.path.join(a.out, "image_wide.jpg"), quality=90)
    files = [d for d, _ in picks] + ["image_wide.jpg"]

    toml = open(os.path.join(a.bundle, "model.toml")).read()
    img_s = E.session(os.path.join(a.bundle, "image.onnx"))
    txt_s = E.session(os.path.join(a.bundle, "text.onnx"))
    images = []
    for f in files:
        p = os.path.join(a.out, f)
        rgb = C.load_rgb(p)
        x = C.to_tensor_input(rgb[None])
        emb = img_s.run(["embedding"], {"pixel_values": x})[0][0]
        im = Image.open(p)
        images.append({
            "file": f,
            "copied_from": dict(picks).get(f, "image_wide.png (composited on white, PIL JPEG quality 90)"),
            "sha256": sha256(p), "width": im.size[0], "height": im.size[1], "mode": im.mode,
            "pixel_values_stats": {"mean": float(x.mean()), "std": float(x.std()),
                                   "sum_abs": float(np.abs(x).sum()),
                                   "first_row_red_8": [float(v) for v in x[0, 0, 0, :8]],
                                   "center_rgb": [float(v) for v in x[0, :, C.IMAGE_SIZE // 2, C.IMAGE_SIZE // 2]]},
            "embedding": [float(v) for v in emb],
        })
    tok = C.make_tokenizer()
    texts = []
    # each caption on its own (batch of 1: no padding) ...
    for c in CAPTIONS:
        e = tok.encode(c)
        feed = {"input_ids": np.array([e.ids], np.int64), "attention_mask": np.array([e.attention_mask], np.int64),
                "token_type_ids": np.array([e.type_ids], np.int64)}
        emb = txt_s.run(["embedding"], feed)[0][0]
        texts.append({"text": c, "input_ids": e.ids, "attention_mask": e.attention_mask,
                      "token_type_ids": e.type_ids, "n_tokens": len(e.ids), "embedding": [float(v) for v in emb]})
    # ... and all four as one padded batch (padding must not change the embeddings)
    enc = tok.encode_batch(CAPTIONS)
    feed = {"input_ids": np.array([e.ids for e in enc], np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}
    batch_emb = txt_s.run(["embedding"], feed)[0]
    single = np.array([t["embedding"] for t in texts])
    ref = {
        "model": {"name": "hivlp-default", "model_toml_sha256": hashlib.sha256(toml.encode()).hexdigest(),
                  "image_onnx_sha256": sha256(os.path.join(a.bundle, "image.onnx")),
                  "text_onnx_sha256": sha256(os.path.join(a.bundle, "text.onnx")),
                  "tokenizer_sha256": sha256(os.path.join(a.bundle, "tokenizer.json"))},
        "generator": "encoders/train/make_fixtures.py", "onnxruntime": ort.__version__,
        "preprocessing": {
            "image": (f"PIL: Image.open -> convert('RGBA') -> alpha_composite onto RGBA{C.BACKGROUND + (255,)} -> "
                      f"convert('RGB') -> resize shorter side to {C.IMAGE_SIZE} with Image.BILINEAR (triangle filter, "
                      f"antialiased when downscaling), longer side = round(long*{C.IMAGE_SIZE}/short) -> center crop "
                      f"{C.IMAGE_SIZE}x{C.IMAGE_SIZE} at offset ((w-{C.IMAGE_SIZE})//2, (h-{C.IMAGE_SIZE})//2) -> /255 -> "
                      f"(x-{list(C.MEAN)})/{list(C.STD)} -> float32 NCHW [1,3,{C.IMAGE_SIZE},{C.IMAGE_SIZE}]"),
            "text": (f"tokenizers.Tokenizer.from_file(tokenizer.json) with enable_truncation(max_length={C.MAX_LENGTH}) "
                     "and enable_padding(pad_id=0, pad_token='[PAD]') i.e. pad to the longest in the batch "
                     "(the file's own 128 padding/truncation replaced); add_special_tokens=True ([CLS] ... [SEP]); "
                     "input_ids/attention_mask/token_type_ids as int64. Per-text embeddings below were computed "
                     "one text per batch (no padding)."),
        },
        "tolerance": {"embedding_cosine_min": 0.999,
                      "note": "image resize differences between PIL and other triangle-filter implementations "
                              "are expected to keep cosine >= 0.99; token ids must match exactly"},
        "images": images,
        "texts": texts,
        "text_batch": {"texts": CAPTIONS, "padded_input_ids": feed["input_ids"].tolist(),
                       "padded_attention_mask": feed["attention_mask"].tolist(),
                       "max_abs_diff_vs_single": float(np.abs(batch_emb - single).max()),
                       "min_cosine_vs_single": float((batch_emb * single).sum(1).min()),
                       "note": "text.onnx is dynamically int8-quantised: activation scales are computed per "
                               "batch, so padding/batch composition changes the output slightly; compare "
                               "single-text runs against texts[].embedding"},
    }
    json.dump(ref, open(os.path.join(a.out, "reference.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
    print("fixtures:", files, "tokens:", [t["n_tokens"] for t in texts],
          "batch-vs-single max diff", ref["text_batch"]["max_abs_diff_vs_single"])


if __name__ == "__main__":
    main()
